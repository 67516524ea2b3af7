"""Verify, show and prune a gallery's audit log: one HMAC-chained line for each search, image view, erasure and
sign-in the web app answered, fsynced before the answer.

    python search/audit.py --gallery G verify
    person-audit --gallery G show [--user U] [--since 2026-05-01 | 7d] [--action search] [--json]
    person-audit --gallery G prune --older-than 180

The log is G/audit/audit-NNNNNN.jsonl. Its key is outside the gallery: --key-dir, else $PERSON_CONFIG_DIR/audit/,
else ~/.config/person/audit/, as <gallery id>.key beside <gallery id>.tail.json (the last line's hash); back both
up. verify exits 1 naming the first line edited, removed, reordered or cut off the end, or a key not the log's.
prune removes whole files older than DAYS and records that it did.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from person.gallery.audit import AuditError, AuditLog, describe, entries, login_name, parse_since, verify
from person.options import number, run_command


def since(text: str) -> Any:
    try:
        return parse_since(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    key = argparse.ArgumentParser(add_help=False)  # --key-dir before or after the subcommand
    key.add_argument("--key-dir", type=Path, default=argparse.SUPPRESS,
                     help="the folder of the audit keys (default $PERSON_CONFIG_DIR/audit or ~/.config/person/audit)")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__, parents=[key],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gallery", type=Path, required=True, help="the gallery folder")
    commands = p.add_subparsers(dest="command", required=True)
    commands.add_parser("verify", parents=[key], help="check every line; exit 1 naming the first bad one")
    show = commands.add_parser("show", parents=[key], help="print the trail, oldest first")
    show.add_argument("--user", help="only this user's lines")
    show.add_argument("--since", type=since, help="only lines at or after: an ISO date or time (UTC), or 30m, 12h, 7d")
    show.add_argument("--action", help="only this action (search, image, thumb, erase, login, ...)")
    show.add_argument("--json", action="store_true", help="the lines as JSON, one a line")
    prune = commands.add_parser("prune", parents=[key], help="remove whole files older than DAYS (recorded)")
    prune.add_argument("--older-than", type=number(float, at_least=0), required=True, metavar="DAYS")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Any:
    args = parse_args(argv)
    key_dir = getattr(args, "key_dir", None)
    if args.command == "verify":
        report = verify(args.gallery, key_dir)
        if not report.ok:
            raise AuditError(report.summary())
        print(report.summary())
        return report
    if args.command == "prune":
        removed = AuditLog(args.gallery, key_dir).prune(args.older_than, user=login_name(), client="cli")
        print(f"removed {len(removed)} files older than {args.older_than:g} days: {' '.join(removed)}" if removed
              else f"no file older than {args.older_than:g} days (the file being written is never removed)")
        return removed
    shown = list(entries(args.gallery, key_dir, user=args.user, since=args.since, action=args.action))
    for entry in shown:
        if entry.problem:
            sys.stderr.write(f"{entry.file} line {entry.line}: {entry.problem}\n")
        if entry.event is not None:
            print(json.dumps(entry.event, ensure_ascii=False) if args.json else
                  ("! " if entry.problem else "") + describe(entry.event))
    return shown


def run() -> None:
    """`person-audit`, and search/audit.py."""
    run_command(main)
