"""Models named by dotted path: `backbone.mf3.ANet2` is the class `ANet2` in `person/models/backbone/mf3.py`.

A name is resolved in this order: `backbone.X.Y` / `tbackbone.X.Y` relative to `person.models`,
then any importable `module.Class` (so a user can plug in a model of their own without editing this
package). `@register` marks the project's own models: they are what `available()` lists, what an error
for a wrong name suggests, and what the test suite loops over, so a new model file is tested with no
new test code (the timm habit).
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from collections.abc import Collection
from pathlib import Path

from torch import nn

from person.errors import PersonError

_PROJECT = "person"
_ROOT = "person.models"  # where short names (`backbone.mf3.ANet2`) live
_MODEL_PACKAGES = ("backbone", "tbackbone")  # short names start with one of these
_REGISTERED: set[str] = set()  # fully qualified class names


class UnknownModelError(PersonError, ValueError):
    """A model name that does not resolve to an nn.Module class; the message lists the available names."""


def register(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: list `cls` among the project's models (it is also resolvable without this)."""
    _REGISTERED.add(f"{cls.__module__}.{cls.__qualname__}")
    return cls


def _short(qualified: str) -> str:
    return qualified.removeprefix(_ROOT + ".")


def available(package: str) -> list[str]:
    """Short names (`backbone.mf3.ANet2`) of every registered model in `package` (e.g. `person.models.backbone`).

    Imports every module of the package first, so registration does not depend on what was imported before.
    """
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{package}.{info.name}")
    return sorted(_short(q) for q in _REGISTERED if q.startswith(package + "."))


def _qualify(name: str) -> str:
    """`backbone.mf3.ANet2` -> `person.models.backbone.mf3.ANet2`; other names are taken as they are."""
    return f"{_ROOT}.{name}" if name.split(".", 1)[0] in _MODEL_PACKAGES else name


def _binds(source: str, name: str) -> bool | None:
    """Whether module source binds `name` at top level (class, def, assignment, import); None when it cannot
    tell (a star import or a module __getattr__ may provide any name)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name == name:
                return True
            if node.name == "__getattr__":
                return None
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    return None
                if (alias.asname or alias.name.split(".")[0]) == name:
                    return True
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(n, ast.Name) and n.id == name for tg in targets for n in ast.walk(tg)):
                return True
        elif isinstance(node, (ast.If, ast.Try, ast.With)):  # conditional definitions: cannot tell cheaply
            return None
    return False


def _defined_without_running(module_name: str, class_name: str) -> bool | None:
    """Read a module's source (without executing it) to see whether it defines `class_name`: a name typed
    by mistake (`this.Foo`) must not run the module's top-level code. None when the source cannot tell."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None if spec is not None else False
    try:
        source = Path(spec.origin).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return _binds(source, class_name)


def resolve(name: str, package: str, kind: str, trusted: Collection[str] | None = None) -> type[nn.Module]:
    """The nn.Module class `name` refers to; `kind` ("image backbone") only words the error messages.

    The project's models resolve always. A name outside the project imports a module, so runs its code:
    `trusted=None` (a name the user typed) allows any module, a collection only those modules (and their
    submodules) -- a name read from a checkpoint resolves only where the command line vouched for it.
    """
    def fail(reason: str) -> UnknownModelError:
        return UnknownModelError(f"unknown {kind} {name!r}: {reason}. Available: {', '.join(available(package))} "
                                 f"(or any importable module.Class path to an nn.Module of your own)")

    if not isinstance(name, str) or "." not in name.strip("."):
        matches = [a for a in available(package) if a.endswith(f".{name}")]
        raise fail("expected a dotted path" + (f" such as {' or '.join(matches)}" if matches else ""))
    module_name, _, class_name = _qualify(name).rpartition(".")
    inside = module_name == _PROJECT or module_name.startswith(_PROJECT + ".")
    if not inside and trusted is not None and not any(module_name == m or module_name.startswith(m + ".")
                                                      for m in trusted):
        raise UnknownModelError(
            f"{kind} {name!r} comes from the module {module_name!r}, outside the project: a name read from a file "
            f"is imported only when the command line names its module (pass --import-module "
            f"{module_name.split('.')[0]}, or the same --backbone / --tbackbone to main.py)")
    if not inside and _defined_without_running(module_name, class_name) is False:
        raise fail(f"module {module_name!r} has no {class_name!r}" if importlib.util.find_spec(module_name)
                   else f"no module {module_name!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        # Only a missing module *named by the user* is a wrong name; a module that exists but fails on
        # one of its own imports is a real error and keeps its traceback.
        if e.name is None or not (module_name == e.name or module_name.startswith(e.name + ".")):
            raise
        raise fail(f"no module {module_name!r}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise fail(f"module {module_name!r} has no {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise fail(f"{module_name}.{class_name} is not an nn.Module class")
    qualified = f"{cls.__module__}.{cls.__qualname__}"
    # Inside the project only registered models of the asked kind count (not a layer, not a text model).
    if qualified.startswith(_PROJECT + ".") and not (qualified in _REGISTERED and qualified.startswith(package + ".")):
        raise fail(f"{_short(qualified)} is not a registered {kind}")
    return cls
