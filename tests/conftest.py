"""Shared fixtures.

`tmpfs`: a real small filesystem for full-disk and read-only cases, mounted for one test. The tests run as root
in CI (mounting needs it). Not root: skipped with the reason. Root but the mount fails: the test fails, since
the cases it guards would silently go untested.

`trained_setup`, `trained_checkpoint`, `plain_export`: one tiny distillation run (a drawn set, a made-up
teacher store, 3 iterations of small students) and its fp32 export, made once per test session for the export
and gallery tests.

Every test gets its own PERSON_CONFIG_DIR (where audit keys live), so no test writes into the home directory and
no two tests share a key.

`small_set`, `small_records`: the drawn set of 10 identities x 2 images (3 held out) the store tests write
stores for; read only.
"""
import os
import subprocess

import pytest

from person.cli import train as main_cmd
from person.data.records import load_records
from person.demo.synthetic import write_dataset
from person.export.exporter import export_checkpoint
from person.export.options import ExportOptions
from tests.train.distill_fixtures import make_setup

@pytest.fixture(autouse=True)
def _config_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PERSON_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))


# Small students that still have every part (GDC head, text stem), at 64x32 and 24 characters.
TRAINED_STUDENTS = ["--backbone", "backbone.mf3.ANet2_w050", "--tbackbone", "tbackbone.char.L1", "--text_width",
                    "32", "--image_size", "64x32", "--max_seq_length", "24", "--p", "4", "--k", "2", "--num_workers",
                    "0", "--warmup_iters", "5", "--max_iters", "60", "--eval_every", "0", "--save_every", "60"]


def train_tiny(setup, log_dir, *extra):
    """The last checkpoint of a tiny run on `setup` (make_setup's (json, store, broken))."""
    return main_cmd.main(["--embedding_path", str(setup[1]), "--log_dir", str(log_dir), "--run_name", "r",
                          *TRAINED_STUDENTS, *extra]).last_checkpoint


@pytest.fixture(scope="session")
def small_set(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"), 10, 2, seed=0, workers=1)


@pytest.fixture(scope="session")
def small_records(small_set):
    return load_records(small_set, eval_ids=3)


@pytest.fixture(scope="session")
def trained_setup(tmp_path_factory):
    return make_setup(tmp_path_factory.mktemp("trained"), ids=16)


@pytest.fixture(scope="session")
def trained_checkpoint(trained_setup, tmp_path_factory):
    return train_tiny(trained_setup, tmp_path_factory.mktemp("logs"))


@pytest.fixture(scope="session")
def plain_export(trained_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("plain_export") / "export"
    export_checkpoint(trained_checkpoint, out, ExportOptions())
    return out


@pytest.fixture
def tmpfs(tmp_path):
    """(mount, remount): `mount(size_kib, readonly=False)` -> a fresh tmpfs folder under the test's temp folder;
    `remount(folder, options)` (e.g. "ro", "rw", "size=1024k"); all unmounted when the test ends."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs these tests as root)")
    mounted = []

    def mount(size_kib, readonly=False):
        folder = tmp_path / f"tmpfs{len(mounted)}"
        folder.mkdir()
        options = f"size={size_kib}k" + (",ro" if readonly else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                              text=True)
        assert done.returncode == 0, f"root, yet mount -t tmpfs failed: {done.stderr}"  # a failure, not a skip
        mounted.append(folder)
        return folder

    def remount(folder, options):
        done = subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    try:
        yield mount, remount
    finally:
        for folder in reversed(mounted):
            subprocess.run(["umount", "-l", str(folder)], check=True)
