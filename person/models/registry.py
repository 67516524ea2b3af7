"""Models named by dotted path: `backbone.mf3.ANet2` is the class `ANet2` in `person/models/backbone/mf3.py`.

A name is resolved in this order: `backbone.X.Y` / `tbackbone.X.Y` relative to `person.models`,
then any importable `module.Class` (so a user can plug in a model of their own without editing this
package). `@register` marks the project's own models: they are what `available()` lists, what an error
for a wrong name suggests, and what the test suite loops over, so a new model file is tested with no
new test code (the timm habit).
"""
from __future__ import annotations

import importlib
import pkgutil

from torch import nn

_PROJECT = "person"
_ROOT = "person.models"  # where short names (`backbone.mf3.ANet2`) live
_MODEL_PACKAGES = ("backbone", "tbackbone")  # short names start with one of these
_REGISTERED: set[str] = set()  # fully qualified class names


class UnknownModelError(ValueError):
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


def resolve(name: str, package: str, kind: str) -> type[nn.Module]:
    """The nn.Module class `name` refers to; `kind` ("image backbone") only words the error messages."""
    def fail(reason: str) -> UnknownModelError:
        return UnknownModelError(f"unknown {kind} {name!r}: {reason}. Available: {', '.join(available(package))} "
                                 f"(or any importable module.Class path to an nn.Module of your own)")

    if not isinstance(name, str) or "." not in name.strip("."):
        matches = [a for a in available(package) if a.endswith(f".{name}")]
        raise fail("expected a dotted path" + (f" such as {' or '.join(matches)}" if matches else ""))
    module_name, _, class_name = _qualify(name).rpartition(".")
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
