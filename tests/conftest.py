"""Shared fixtures. `tmpfs`: a real small filesystem for full-disk and read-only cases, mounted for one test.

The tests run as root in CI (mounting needs it). Not root: skipped with the reason. Root but the mount fails:
the test fails, since the cases it guards would silently go untested.
"""
import os
import subprocess

import pytest


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
