"""Typed options in one place: a dataclass is the single source of names, types, defaults and help.

Commands build their argparse parser from the dataclass (each field gets its underscore name, as the
user writes `--feature_dim`, and a dashed alias `--feature-dim`), and the resolved dataclass is saved
with every checkpoint, so evaluation and export re-read exactly the training settings.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
import signal
import sys
import traceback
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from person import files, stopping
from person.errors import PersonError
from person.stopping import Stopped

T = TypeVar("T")


def option(default: Any, help: str, choices: Sequence[Any] | None = None, flag: str | None = None, *,
           at_least: float | None = None, at_most: float | None = None, above: float | None = None) -> Any:
    """A dataclass field with its command-line help, optional choices / extra flag spelling, and the range a
    number must lie in (`at_least` / `at_most` inclusive, `above` exclusive); `check_values` enforces it."""
    bounds = {"at_least": at_least, "at_most": at_most, "above": above}
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "flag": flag,
                                                        **{k: v for k, v in bounds.items() if v is not None}})


class OptionError(PersonError, ValueError):
    """An option value no run can use; the message names the option, the value and the range."""


def _range_text(meta: Mapping[str, Any]) -> str:
    signs = {"at_least": ">=", "above": ">", "at_most": "<="}
    return " and ".join(f"{sign} {meta[key]:g}" for key, sign in signs.items() if key in meta)


def _range_problem(value: Any, meta: Mapping[str, Any]) -> str | None:
    """What is wrong with a number against an option's declared range ("a finite number, got nan",
    ">= 0, got -1"), or None when it is fine or not a number."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"a finite number, got {value}"
    low, high, above = meta.get("at_least"), meta.get("at_most"), meta.get("above")
    if (low is not None and value < low) or (high is not None and value > high) or \
            (above is not None and value <= above):
        return f"{_range_text(meta)}, got {value}"
    return None


def check_value(name: str, value: Any, meta: Mapping[str, Any]) -> None:
    """Refuse a number that is not finite or lies outside the option's declared range."""
    problem = _range_problem(value, meta)
    if problem:
        raise OptionError(f"--{name} must be {problem}")


def check_values(opts: Any) -> None:
    """Every numeric option of a dataclass instance finite and inside its declared range."""
    for f in dataclasses.fields(opts):
        check_value(f.name, getattr(opts, f.name), f.metadata)


def number(type_: Callable[[str], float], **bounds: float) -> Callable[[str], float]:
    """An argparse `type=` for a plain argument: parses with `type_` and checks the range as `option` does."""
    def parse(text: str) -> float:
        value = type_(text)
        problem = _range_problem(value, bounds)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value
    return parse


def _base_type(tp: Any) -> tuple[type, bool]:
    """(type, optional) for annotations like `int`, `str | None`."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def add_options(parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = ()) -> None:
    """Add one argument per dataclass field of `cls` (bools become --x / --no-x)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.metadata:
            continue
        tp, _ = _base_type(hints[f.name])
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        if f.metadata.get("flag"):
            names.append(f.metadata["flag"])
        kwargs: dict[str, Any] = {"dest": f.name, "default": f.default, "help": f.metadata["help"]}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is list:  # `--unlabeled A B C`
            kwargs.update(nargs="+", type=typing.get_args(tp)[0])
        else:
            kwargs["type"] = tp
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
        if f.default is not None and tp is not bool:
            kwargs["help"] += f" (default: {f.default})"
        group.add_argument(*names, **kwargs)


def from_namespace(cls: type[T], ns: argparse.Namespace, **overrides: Any) -> T:
    """The dataclass from parsed arguments, every number checked against its range."""
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)}
    values.update(overrides)
    opts = cls(**values)
    check_values(opts)
    return opts


def to_dict(opts: Any) -> dict[str, Any]:
    return dataclasses.asdict(opts)


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Rebuild saved options; fields added since the save take their defaults, unknown ones are an error."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"saved options have fields this version does not know: {', '.join(unknown)}")
    return cls(**values)


def given_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The dests the user wrote on the command line (not left at their defaults).

    Needs a parser made with `allow_abbrev=False`, so every flag appears in argv as one of its spellings.
    """
    if parser.allow_abbrev:
        raise ValueError("given_options needs a parser made with allow_abbrev=False")
    written = {token.split("=", 1)[0] for token in argv if token.startswith("-")}
    return {a.dest for a in parser._actions if written & set(a.option_strings)}


DEBUG_ENV = "PERSON_DEBUG"  # set to 1: any error or stop shows its full traceback (for a bug report)

# An OSError of these kinds is about the disk or a path the user chose, not a bug: one line, and the fix.


def _error_line(e: BaseException) -> str | None:
    """The one line a command ends bad input with (a missing file, a malformed value, a full disk, a path over
    the system's limits), or None for an error that is a bug and keeps its traceback."""
    if isinstance(e, OSError) and e.errno in files.OS_FIXES and e.strerror:  # from the system: name the path and fix
        where = "" if e.filename is None else f"{os.fsdecode(e.filename)}: "
        fix = files.OS_FIXES[e.errno]
        return f"{where}{e.strerror}" + (f"; {fix}" if fix else "")
    if isinstance(e, (FileNotFoundError, ValueError, PersonError)):
        return str(e)
    return None


def _command_line(again: Sequence[str] | None) -> str:
    """How the user runs this command again with `again` (None: the arguments of this run), torchrun included."""
    argv0 = sys.argv[0]
    program = f"python {shlex.quote(argv0)}" if argv0.endswith(".py") else Path(argv0).name
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        program = f"torchrun --nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', '1')} " + \
                  ("" if argv0.endswith(".py") else "--no-python ") + shlex.quote(argv0)
    return " ".join([program, *map(shlex.quote, sys.argv[1:] if again is None else again)])


def _stop_line(stop: Stopped) -> str:
    """`stopped by SIGINT`, and after a clean stop what it kept and the command that continues."""
    line = f"stopped by {signal.Signals(stop.signum).name}"
    return line if not stop.what else f"{line} {stop.what}; continue with: {_command_line(stop.again)}"


def run_command(main: Callable[[], Any], prog: str | None = None) -> None:
    """Run a command's `main()`; bad input (a missing file, a malformed value or record, an unreadable image
    in strict mode, a full disk, a path too long) ends it with its message, which names the thing and the fix,
    instead of a traceback. SIGINT and SIGTERM ask it to stop (person.stopping): it ends with one line and the
    status 130 or 143. PERSON_DEBUG=1 shows the full traceback of any of these. `prog` defaults to the name it
    was started by (`main.py`, `person-train`), as argparse's does."""
    prog = prog or Path(sys.argv[0]).name
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    with stopping.listening(prog):
        try:
            main()
        except KeyboardInterrupt as e:  # a Stopped, or Python's own when nothing listened yet
            stop = e if isinstance(e, Stopped) else Stopped(signal.SIGINT)
            stopping.ending(stop.signum)
            if debug:
                traceback.print_exc()
            if not stop.what or os.environ.get("RANK", "0") == "0":  # ranks that agreed to stop: rank 0 says it
                sys.stderr.write(f"{prog}: {_stop_line(stop)}\n")  # one write: ranks share the terminal
            sys.exit(stop.status)
        except Exception as e:
            line = None if debug else _error_line(e)
            if line is None:
                raise
            sys.exit(f"{prog}: error: {line}")
