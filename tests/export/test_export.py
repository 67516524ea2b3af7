"""export_model.py and person.runtime on tiny trained students: the files and the card, the parity gate, the NPU
target's static shapes and op check, fp16 / int8 variants, the torch-free runtime, the export's own report,
and every bad input as a one-line error that leaves OUTDIR as it was."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from person.cli import evaluate as evaluation_model
from person.cli import export as export_model
from person.data.datasets import normalize_batch
from person.data.images import ImageTransform, load_pixels, normalize_pixels
from person.data.text import encode_batch, lookup_chars
from person.export import onnx_files
from person.export.exporter import ExportError, export_checkpoint
from person.export.inputs import probe_texts
from person.export.options import ExportOptions
from person.export.targets import OpCheckError, Target, check_ops
from person.models.checkpoint import load_checkpoint, students_from_checkpoint
from person.runtime import ExportDirError, ExportedModels
from tests.conftest import train_tiny

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["a man in a red coat", "穿红色外套的女孩", "🧥🎒", "x", "a very long query " * 9, ""]


@pytest.fixture(scope="module")
def setup(trained_setup):
    return trained_setup


@pytest.fixture(scope="module")
def checkpoint(trained_checkpoint):
    return trained_checkpoint


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "generic"
    result = export_model.main([str(checkpoint), str(out), "--fp16", "--int8", "--calibration", "16"])
    return out, result


def torch_students(checkpoint):
    _, students = students_from_checkpoint(load_checkpoint(checkpoint))
    return students


# ---------------------------------------------------------------- the files and the card

def test_the_export_dir_holds_the_graphs_the_table_the_variants_and_the_card(exported, checkpoint):
    out, result = exported
    assert sorted(p.name for p in out.iterdir()) == [
        "input_embeddings.npy", "model.json", "model_image.fp16.onnx", "model_image.int8.onnx", "model_image.onnx",
        "model_text.fp16.onnx", "model_text.int8.onnx", "model_text.onnx"]
    card = json.loads((out / "model.json").read_text())
    table = np.load(out / "input_embeddings.npy", allow_pickle=False)
    assert table.dtype == np.float32 and table.shape == (4 * 256, 32) == tuple(card["text"]["table"]["shape"])
    np.testing.assert_array_equal(table, torch_students(checkpoint).text.byte_table().numpy())
    assert card["image"]["inputs"] == [{"name": "image", "dtype": "float32", "shape": ["batch", 3, 64, 32]}]
    assert card["image"]["outputs"] == [{"name": "embedding", "dtype": "float32", "shape": ["batch", 16]}]
    assert [i["name"] for i in card["text"]["inputs"]] == ["chars", "mask"]
    assert card["text"]["inputs"][0]["shape"] == ["batch", "length", 32]
    assert card["image"]["normalize"] == {"formula": "(pixel / 255 - mean) / std, per channel",
                                          "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    assert card["text"]["max_seq_length"] == 24 and card["normalized"] is True and card["feature_dim"] == 16
    state = load_checkpoint(checkpoint)
    assert card["space"]["kind"] == "siglip" and card["space"]["dim"] == 16
    assert card["space"]["store_fingerprint"] == state["dataset"]["fingerprint"]
    assert card["checkpoint"]["iteration"] == 60 and len(card["checkpoint"]["sha256"]) == 64
    assert set(card["files"]) == {p.name for p in out.iterdir()} - {"model.json"}
    assert card["image"]["variants"] == {"fp16": "model_image.fp16.onnx", "int8": "model_image.int8.onnx"}


def test_batchnorm_is_folded_and_the_lookup_stays_outside_the_text_graph(exported):
    out, _ = exported
    image = onnx.load(str(out / "model_image.onnx")).graph
    assert "BatchNormalization" not in {n.op_type for n in image.node}
    text = onnx.load(str(out / "model_text.onnx")).graph
    table = np.load(out / "input_embeddings.npy")
    assert not any(onnx.numpy_helper.to_array(t).shape == table.shape for t in text.initializer)
    chars_consumers = {n.op_type for n in text.node if "chars" in n.input}
    assert chars_consumers and not chars_consumers & {"Gather", "GatherElements", "GatherND"}


def test_the_command_prints_op_tables_and_parity(exported, capsys, checkpoint, tmp_path):
    export_model.main([str(checkpoint), str(tmp_path / "e")])
    out = capsys.readouterr().out
    assert "model_image.onnx: onnxsim;" in out and "model_text.onnx: onnxsim;" in out
    assert "  Conv " in out and "  total " in out
    assert "PASS image fp32:" in out and "PASS text fp32:" in out


# ---------------------------------------------------------------- parity and the runtime

def test_fp32_parity_passed_and_variants_were_measured(exported):
    _, result = exported
    by = {(p.graph, p.variant): p for p in result.parity}
    assert set(by) == {(g, v) for g in ("image", "text") for v in ("fp32", "fp16", "int8")}
    assert by["image", "fp32"].min_cosine >= 0.99999 and by["text", "fp32"].min_cosine >= 0.99999
    probes = probe_texts(24)
    assert {len(p) for p in probes} >= set(range(1, 25)) | {31}  # every length the graph takes, and truncation
    assert by["text", "fp32"].rows > len(probes)  # ... plus held-out captions
    assert by["image", "int8"].min_cosine > 0.9 and by["text", "fp16"].min_cosine > 0.99


def test_the_runtime_embeds_texts_as_the_torch_student_does(exported, checkpoint):
    out, _ = exported
    models = ExportedModels(out)
    got = models.embed_texts(TEXTS)
    chars, mask = encode_batch(TEXTS, 24)
    with torch.no_grad():
        want = torch_students(checkpoint)(chars=torch.from_numpy(chars), mask=torch.from_numpy(mask))["text"].numpy()
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_the_runtime_embeds_images_as_the_torch_student_does(exported, checkpoint, setup):
    out, _ = exported
    json_path = setup[0]
    paths = sorted((json_path.parent).rglob("*.jpg"))[:5]
    models = ExportedModels(out)
    got = models.embed_images(paths)
    transform = ImageTransform((64, 32), "stretch", (0.5, 0.5, 0.5))
    pixels = torch.from_numpy(np.stack([transform(load_pixels(p, (64, 32))) for p in paths]))
    with torch.no_grad():
        want = torch_students(checkpoint)(images=normalize_batch(pixels))["image"].numpy()
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_the_runtime_normalises_pixels_as_the_trainer_does():
    pixels = np.random.default_rng(0).integers(0, 256, (3, 3, 8, 4), dtype=np.uint8)
    mean, std = (0.48, 0.45, 0.40), (0.26, 0.26, 0.27)
    np.testing.assert_allclose(normalize_pixels(pixels, mean, std),
                               normalize_batch(torch.from_numpy(pixels), mean, std).numpy(), atol=1e-6)


def test_the_lookup_is_the_sum_of_four_table_rows():
    table = np.arange(1024 * 2, dtype=np.float32).reshape(1024, 2)
    chars, _ = encode_batch(["é"], 4)  # UTF-8 0xC3 0xA9
    np.testing.assert_array_equal(lookup_chars(table, chars)[0, 0],
                                  table[0xC3] + table[256 + 0xA9] + table[512] + table[768])


def test_the_runtime_imports_without_torch(exported):
    out, _ = exported
    code = ("import sys; sys.modules['torch'] = None\n"
            "from person.runtime import ExportedModels\n"
            f"m = ExportedModels({str(out)!r})\n"
            "e = m.embed_texts(['a man in a red coat', '穿红色外套的女孩'])\n"
            "assert 'torch' not in [k for k, v in sys.modules.items() if v is not None]\n"
            "print(e.shape)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(2, 16)"


def test_the_runtime_refuses_a_damaged_or_partial_export(exported, tmp_path):
    out, _ = exported
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in out.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    table = np.load(copy / "input_embeddings.npy")
    np.save(copy / "input_embeddings.npy", table * 2)
    with pytest.raises(ExportDirError, match="input_embeddings.npy: its size or sha256 differs from the card's"):
        ExportedModels(copy)
    (copy / "input_embeddings.npy").write_bytes((out / "input_embeddings.npy").read_bytes())
    (copy / "model_image.int8.onnx").unlink()
    with pytest.raises(ExportDirError, match="model_image.int8.onnx: missing"):
        ExportedModels(copy, verify=True)
    with pytest.raises(ExportDirError, match="no model.json"):
        ExportedModels(tmp_path)


def test_a_card_that_lacks_a_part_or_names_files_outside_its_directory_is_refused(exported, tmp_path):
    out, _ = exported
    card = json.loads((out / "model.json").read_text())
    image = card["image"]
    cases = [
        ({**card, "image": {k: v for k, v in image.items() if k != "normalize"}}, "the card lacks image.normalize"),
        ({**card, "image": {**image, "file": "../elsewhere/model_image.onnx"}}, "names files outside its directory"),
        ({**card, "image": {**image, "variants": {"int8": "/etc/passwd"}}}, "names files outside its directory"),
        ({**card, "files": ["model_image.onnx"]}, "files should map names to files"),
        ({k: v for k, v in card.items() if k not in ("image", "text")}, "lacks an image or text model"),
    ]
    for changed, message in cases:
        folder = tmp_path / "copy"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(out, folder)
        (folder / "model.json").write_text(json.dumps(changed))
        with pytest.raises(ExportDirError, match=re.escape(message)):
            ExportedModels(folder, verify=False)


def test_an_export_killed_between_its_renames_gets_its_previous_export_back(checkpoint, tmp_path):
    out = tmp_path / "out"
    export_checkpoint(checkpoint, out, ExportOptions())
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    os.replace(out, tmp_path / f".out.{dead}.old")        # the kill: OUTDIR moved aside, the new one not in yet
    (tmp_path / f".out.{dead}.tmp").mkdir()
    (tmp_path / ".out.2024.backup").mkdir()                # the user's, not an export's temp
    with pytest.raises(ExportError, match=r"already holds files .*: pass --overwrite"):
        export_checkpoint(checkpoint, out, ExportOptions())  # the previous export is back, so not overwritten
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.2024.backup", "out"]
    assert ExportedModels(out).embed_texts(TEXTS[:2]).shape == (2, 16)


# ---------------------------------------------------------------- the export's own report

def test_the_export_scores_as_its_checkpoint(exported, checkpoint, tmp_path):
    out, _ = exported
    ckpt = evaluation_model.main([str(checkpoint), "--top-k", "0", "--num-workers", "0"])
    fp32 = evaluation_model.main([str(out), "--top-k", "0", "--json", str(tmp_path / "e.json")])
    assert fp32["case"] == ckpt["case"] == "student" and fp32["variant"] == "fp32"
    for key in ("eer", "rank1", "mAP"):
        assert abs(fp32[key] - ckpt[key]) <= 0.0005, key
    for case in ckpt["cases"]:
        assert abs(fp32["cases"][case]["eer"] - ckpt["cases"][case]["eer"]) <= 0.0005
    int8 = evaluation_model.main([str(out), "--variant", "int8", "--top-k", "0"])
    assert int8["variant"] == "int8" and int8["case"] == "student"
    # Quantisation moves scores a little, not the verdict: same pairs scored, EER and Rank-1 close to fp32's.
    assert int8["cases"].keys() == fp32["cases"].keys()
    assert abs(int8["eer"] - fp32["eer"]) <= 0.05 and abs(int8["rank1"] - fp32["rank1"]) <= 0.1


# ---------------------------------------------------------------- the NPU target

def test_npu_graphs_have_static_shapes_pass_the_op_check_and_run(checkpoint, tmp_path):
    out = tmp_path / "npu"
    # 5 calibration rows for a batch-2 graph: the last calibration batch is short and must be padded to 2
    result = export_checkpoint(checkpoint, out, ExportOptions(target="npu", batch=2, seq_len=16, int8=True,
                                                              calibration=5))
    card = json.loads((out / "model.json").read_text())
    assert card["target"] == "npu" and card["opset"] == 13 and card["static_shapes"] is True
    assert card["image"]["inputs"][0]["shape"] == [2, 3, 64, 32]
    assert card["text"]["inputs"][0]["shape"] == [2, 16, 32] and card["text"]["sequence_length"] == 16
    for name in ("model_image.onnx", "model_text.onnx"):
        ops = {n.op_type for n in onnx.load(str(out / name)).graph.node}
        assert not ops & {"Shape", "Gather", "LayerNormalization", "ReduceL2", "Range", "Expand"}, ops
    assert all(p.min_cosine >= 0.99999 for p in result.parity if p.variant == "fp32")
    models = ExportedModels(out)  # static batch 2 and length 16: 5 texts run in three padded batches
    assert models.embed_texts(TEXTS[:5]).shape == (5, 16)


def test_an_op_outside_the_target_is_named_with_its_node_and_module(exported):
    out, _ = exported
    text = onnx.load(str(out / "model_text.onnx"))
    no_softmax = Target("strict", static=False, default_opset=17, min_opset=17, max_opset=17,
                        ops=frozenset({n.op_type for n in text.graph.node} - {"Softmax"}), why="a test list")
    with pytest.raises(OpCheckError, match=r"model_text.onnx has 1 node\(s\) --target strict does not take: Softmax "
                                           r"\(node /blocks.0/attn/Softmax, module blocks.0.attn\)"):
        check_ops(text, no_softmax, "model_text.onnx")


# ---------------------------------------------------------------- bad input

def test_a_text_only_checkpoint_exports_what_is_there(setup, tmp_path):
    ckpt = train_tiny(setup, tmp_path / "logs", "--train", "text", "--dist_rel_weight", "0")
    result = export_checkpoint(ckpt, tmp_path / "out", ExportOptions())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["input_embeddings.npy", "model.json",
                                                                   "model_text.onnx"]
    assert result.notes == ["the checkpoint has only the text student: exported that one"]


def test_an_existing_outdir_is_refused_and_a_failed_export_leaves_it_as_it_was(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match=r"already holds files \(keep.txt\): pass --overwrite"):
        export_checkpoint(checkpoint, out, ExportOptions())
    monkeypatch.setattr("person.export.exporter.compare", lambda g, v, got, want: (_ for _ in ()).throw(
        RuntimeError("killed mid-export")))
    with pytest.raises(RuntimeError, match="killed mid-export"):
        export_checkpoint(checkpoint, out, ExportOptions(overwrite=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and os.listdir(out) == ["keep.txt"]


def test_the_parity_gate_refuses_a_graph_that_disagrees_with_pytorch(checkpoint, tmp_path, monkeypatch):
    from person.export import exporter
    real = exporter.compare

    def drifted(graph, variant, got, want):
        if graph == "text" and variant == "fp32":
            got = got + np.random.default_rng(0).normal(0, 1, got.shape).astype(got.dtype)
        return real(graph, variant, got, want)
    monkeypatch.setattr(exporter, "compare", drifted)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=r"parity gate: text fp32: \d+ rows, cosine min -?0\.\d+ .*the export is refused\. Try --no-simplify"):
        export_checkpoint(checkpoint, out, ExportOptions())
    assert os.listdir(tmp_path) == []  # nothing half-written, no temp folder left


def test_a_failing_simplifier_leaves_the_graph_unsimplified_and_says_so(checkpoint, tmp_path, monkeypatch):
    def broken(model):
        raise RuntimeError("no shape for node 7")
    import onnxsim
    monkeypatch.setattr(onnxsim, "simplify", broken)
    result = export_checkpoint(checkpoint, tmp_path / "out", ExportOptions())
    assert "model_image.onnx: not simplified: onnxsim failed (RuntimeError: no shape for node 7); exported " \
           "unsimplified" in result.notes
    assert all(r.simplified.startswith("not simplified") for r in result.graphs)


@pytest.mark.parametrize("argv, message", [
    (["--calibration", "100000", "--int8"], "--calibration 100000: the training split has 28 readable images; pass --calibration 28 or fewer"),
    (["--target", "npu", "--seq-len", "99"], "--seq-len 99 exceeds the text student's max_seq_length 24"),
    (["--target", "npu", "--opset", "17"], "--opset 17 is outside what --target npu takes (13..16)"),
])
def test_bad_export_options_are_one_line_errors(checkpoint, tmp_path, argv, message):
    done = subprocess.run([sys.executable, "export_model.py", str(checkpoint), str(tmp_path / "o"), *argv],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert message in done.stderr and not (tmp_path / "o").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_unknown_target_and_not_a_checkpoint(tmp_path):
    done = subprocess.run([sys.executable, "export_model.py", "x.pt", str(tmp_path / "o"), "--target", "tpu"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "invalid choice: 'tpu'" in done.stderr
    (tmp_path / "junk.pt").write_text("junk")
    done = subprocess.run([sys.executable, "export_model.py", str(tmp_path / "junk.pt"), str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1 and "is not a readable checkpoint" in done.stderr and "Traceback" not in done.stderr


def test_an_unwritable_outdir_is_one_line(checkpoint, tmpfs):
    mount, _ = tmpfs
    ro = mount(64, readonly=True)
    done = subprocess.run([sys.executable, "export_model.py", str(checkpoint), str(ro / "o")], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "Read-only file system" in done.stderr


def test_onnx_files_names_the_module_of_a_node():
    assert onnx_files.module_of("/student/blocks.0/attn/Softmax") == "student.blocks.0.attn"
    assert onnx_files.module_of("/Add") == ""
