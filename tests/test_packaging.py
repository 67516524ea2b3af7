"""The project as a package: a built wheel carries the page's files, the demo teacher's weights and a `person-*`
entry point for every command, so an installed copy (not only this checkout) serves its page and runs its demo."""
import importlib
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_package_data_and_the_entry_points(tmp_path):
    source = tmp_path / "source"  # a copy: setuptools builds in the source tree, and a test writes nowhere else
    source.mkdir()
    for part in ("pyproject.toml", "README.md", "person"):
        copy = shutil.copytree if (ROOT / part).is_dir() else shutil.copy
        copy(ROOT / part, source / part, **({"ignore": shutil.ignore_patterns("__pycache__")} if part == "person"
                                            else {}))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    [wheel] = tmp_path.glob("person-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        listed = z.read(entry_points).decode()
    for folder in ("person/web/static", "person/demo/teacher/demo_teacher"):
        shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).iterdir() if p.is_file()}
        assert shipped and shipped <= names, f"{folder}: {sorted(shipped - names)} missing from the wheel"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in scripts.items():
        assert f"{name} = {target}" in listed
    assert not any(n.startswith(("tests/", "bench/", "tools/", "search/")) for n in names)


def test_every_entry_point_starts_and_prints_its_help(capsys):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in scripts.items():
        module = importlib.import_module(target.split(":")[0])
        assert callable(getattr(module, target.split(":")[1]))
        try:
            module.main(["--help"])
        except SystemExit as stop:
            assert stop.code == 0, name
        assert "usage:" in capsys.readouterr().out, name
