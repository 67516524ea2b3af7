"""The library reads as the pipeline: each stage imports only the stages before it, no module holds two
ideas' worth of lines, and no command edits sys.path (they import the installed `person` package)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PERSON = ROOT / "person"
# Stage order (ARCHITECTURE.md, "The import rule"): a module may import its own stage and the ones to its left.
ORDER = {"options": 0, "errors": 0, "files": 0, "distributed": 0, "vectors": 0, "data": 1, "teacher": 2, "models": 3,
         "eval": 4, "train": 5, "export": 6, "runtime": 6, "gallery": 7, "web": 8, "demo": 9, "cli": 10}
MAX_LINES = 500
COMMANDS = sorted([*ROOT.glob("*.py"), *(ROOT / "tools").glob("*.py"), *(ROOT / "search").glob("*.py"),
                   *(ROOT / "bench").glob("*.py")])


def stage(module: str) -> str:
    return module.split(".")[1]


def person_imports(path: Path) -> set[str]:
    """Every `person.*` module the file imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "person" else [f"person.{a.name}" for a in node.names]
            found |= {n for n in names if n.startswith("person.")}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("person.")}
    return found


MODULES = sorted(p for p in PERSON.rglob("*.py") if p.parent != PERSON or p.name != "__init__.py")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_down_the_pipeline(path):
    own = stage("person." + ".".join(path.relative_to(PERSON).with_suffix("").parts))
    assert own in ORDER, f"{path}: a new stage? add it to ORDER (and ARCHITECTURE.md) first"
    upward = sorted(m for m in person_imports(path) if ORDER[stage(m)] > ORDER[own])
    assert not upward, f"{path.relative_to(ROOT)} ({own}) imports a later stage: {upward}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_hold_one_idea(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it along its seams"


def test_commands_import_the_installed_package():
    edits = [p.relative_to(ROOT).as_posix() for p in COMMANDS if "sys.path" in p.read_text(encoding="utf-8")]
    assert not edits, f"commands editing sys.path: {edits}; `pip install -e .` makes `person` importable"


def test_the_layer_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from person.train.trainer import Trainer\nfrom person import eval\n")
    assert person_imports(bad) == {"person.train.trainer", "person.eval"}
