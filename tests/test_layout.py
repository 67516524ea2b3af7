"""The library reads as the pipeline: each stage imports only the stages before it, no module holds two
ideas' worth of lines, and no command edits sys.path (they import the installed `person` package). Commands are
thin: each person/cli module is parsing plus a library call within a line budget, imports no other command, has
an installed entry point, and the user's top-level scripts are shims over them; tests import commands as modules
and never sleep to win a race."""
import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PERSON = ROOT / "person"
# Stage order (ARCHITECTURE.md, "The import rule"): a module may import its own stage and the ones to its left.
ORDER = {"options": 0, "errors": 0, "files": 0, "distributed": 0, "vectors": 0, "stopping": 0, "data": 1, "teacher": 2, "models": 3,
         "eval": 4, "train": 5, "export": 6, "runtime": 6, "gallery": 7, "web": 8, "demo": 9, "cli": 10}
MAX_LINES = 500
# The user's scripts (each a shim over person/cli) and the benches, which are commands too.
SHIMS = sorted([*ROOT.glob("*.py"), *(ROOT / "tools").glob("*.py"), *(ROOT / "search").glob("*.py")])
CLI = sorted(p for p in (PERSON / "cli").glob("*.py") if p.name != "__init__.py")
COMMANDS = sorted([*SHIMS, *CLI, *(ROOT / "bench").glob("*.py")])
CLI_MAX_LINES = 100   # parsing, one library call, and printing what it returned
SHIM_MAX_LINES = 10   # a docstring, one import, the __main__ guard
# Names a test would import a top-level script by (through sys.path) instead of its person.cli module.
SCRIPT_MODULES = {p.stem for p in ROOT.glob("*.py")} | {"tools", "search", "bench"}
TESTS = sorted((ROOT / "tests").rglob("*.py"))


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


def imported_modules(path: Path) -> set[str]:
    """Every module name the file imports (absolute imports, any depth)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def commands_imported(path: Path) -> set[str]:
    """The person.cli modules the file imports."""
    return {".".join(m.split(".")[:3]) for m in imported_modules(path) if m.startswith("person.cli.")}


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_command_imports_another_command(path):
    allowed = {f"person.cli.{path.stem}"} if path in CLI else set()
    if path in SHIMS:  # a shim imports the one command it starts
        allowed = set(sorted(commands_imported(path))[:1])
    others = sorted(commands_imported(path) - allowed)
    assert not others, f"{path.relative_to(ROOT)} imports the command(s) {others}: move what they share into person/"


@pytest.mark.parametrize("path", CLI, ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_are_within_their_line_budget(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= CLI_MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (budget {CLI_MAX_LINES}): move " \
                                   f"what is not argument parsing into the library"


@pytest.mark.parametrize("path", SHIMS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_user_s_scripts_are_shims_over_person_cli(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= SHIM_MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines: a script is a shim over person/cli"
    assert len(commands_imported(path)) == 1 and imported_modules(path) <= \
        {m for c in commands_imported(path) for m in (c, f"{c}.run")}, f"{path.relative_to(ROOT)}: import only run"


def test_every_command_has_an_entry_point():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    targets = {target.split(":")[0] for target in scripts.values()}
    assert targets == {f"person.cli.{p.stem}" for p in CLI}
    assert all(target.endswith(":run") for target in scripts.values())


@pytest.mark.parametrize("path", TESTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_tests_import_commands_as_modules_and_never_sleep(path):
    modules = imported_modules(path)
    scripts = sorted(m for m in modules if m.split(".")[0] in SCRIPT_MODULES)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    assert not scripts, f"{shown} imports {scripts} through sys.path: import person.cli.<command>"
    sleeps = [node.lineno for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "sleep"]
    assert not sleeps, f"{shown} sleeps (lines {sleeps}): give the code a hook to wait on instead"


def test_the_command_checks_see_a_command_import_and_a_sleep(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("import person.cli.serve\nfrom person.cli import train as t\nimport time\n\n"
                   "def f():\n    from person.cli.demo import run\n    time.sleep(1)\n")
    assert commands_imported(bad) == {"person.cli.serve", "person.cli.train", "person.cli.demo"}
    with pytest.raises(AssertionError, match=r"sleeps \(lines \[7\]\)"):
        test_tests_import_commands_as_modules_and_never_sleep(bad)
