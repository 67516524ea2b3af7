"""The accounts of a gallery's search server: who may sign in to the page, and API tokens for scripts.

    python search/users.py --gallery gallery/ add ann --role admin     # asks for the password twice
    echo "$PASSWORD" | person-users --gallery gallery/ add bob         # not a terminal: one line of stdin
    TOKEN=$(python search/users.py --gallery gallery/ token bob --expires 90)   # printed once, never stored
    python search/users.py --gallery gallery/ list                     # users and tokens, never a secret
    python search/users.py --gallery gallery/ revoke TOKEN_ID          # or expire TOKEN_ID --days 30 | --never
    python search/users.py --gallery gallery/ password ann             # a new password: ann's sessions end
    python search/users.py --gallery gallery/ remove bob               # bob's tokens go too, his sessions end

Kept in GALLERY/users.json (mode 0600: passwords as salted scrypt hashes, tokens as their SHA-256); a running
server (search/app.py) sees a change from its next request. Once there is one account, every request to the
server signs in. Roles: viewers search; admins also erase.
"""
from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path

from person.options import number, run_command
from person.web.accounts import ROLES, Accounts, AccountsError


def read_password(name: str) -> str:
    """Asked twice at a terminal (not echoed), else one line of stdin."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"password for {name}: ")
    if getpass.getpass("the same again: ") != first:
        raise AccountsError("the two passwords differ; nothing changed")
    return first


def when(ts: float | None) -> str:
    return "never" if ts is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gallery", type=Path, required=True, help="the gallery folder (search/enroll.py --gallery)")
    do = p.add_subparsers(dest="action", required=True)
    add = do.add_parser("add", help="a new user (asks for the password)")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="viewer", help="viewers search; admins also erase")
    do.add_parser("password", help="a new password for a user (their sessions end)").add_argument("name")
    do.add_parser("remove", help="remove a user and their tokens").add_argument("name")
    token = do.add_parser("token", help="print a new API token of a user, once")
    token.add_argument("name")
    token.add_argument("--expires", type=number(float, above=0), default=None, metavar="DAYS",
                       help="valid this many days (default: until revoked)")
    do.add_parser("revoke", help="revoke a token (its id, from list)").add_argument("token")
    expire = do.add_parser("expire", help="set when a token expires")
    expire.add_argument("token")
    until = expire.add_mutually_exclusive_group(required=True)
    until.add_argument("--days", type=number(float, above=0), help="from now")
    until.add_argument("--never", action="store_true", help="until revoked")
    do.add_parser("list", help="users and tokens (no secrets)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> object:
    args = parse_args(argv)
    accounts = Accounts(args.gallery)
    if args.action == "add":
        done = accounts.add_user(args.name, read_password(args.name), args.role)
        print(f"added {done.name} ({done.role}) to {accounts.path}")
    elif args.action == "password":
        done = accounts.set_password(args.name, read_password(args.name))
        print(f"new password for {done.name}; their sessions signed in before have ended")
    elif args.action == "remove":
        done = accounts.remove_user(args.name)
        print(f"removed {args.name} and {len(done)} token(s); their sessions have ended")
    elif args.action == "token":
        made, done = accounts.new_token(args.name, args.expires)
        print(done)  # alone on stdout, for $(...)
        print(f"token {made.id} of {made.user}, expires {when(made.expires)}: "
              f"shown this once, keep it secret (send it as Authorization: Bearer TOKEN)", file=sys.stderr)
    elif args.action in ("revoke", "expire"):
        done = accounts.revoke_token(args.token) if args.action == "revoke" else \
            accounts.set_token_expiry(args.token, None if args.never else args.days)
        print(f"token {done.id} of {done.user}: " + ("revoked" if args.action == "revoke" else
                                                     f"expires {when(done.expires)}"))
    else:
        done = accounts.users(), accounts.tokens()
        print(f"users ({len(done[0])}):" + "".join(f"\n  {u.name}  {u.role}  since {when(u.created)}" for u in done[0]))
        print(f"tokens ({len(done[1])}):" + "".join(
            f"\n  {t.id}  {t.user}  made {when(t.created)}  expires {when(t.expires)}"
            + ("  (expired)" if t.expires is not None and t.expires <= time.time() else "") for t in done[1]))
    return done


def run() -> None:
    """`person-users`, and the script at the top of the repository."""
    run_command(main)
