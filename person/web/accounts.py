"""A gallery's accounts: users (a role and a salted scrypt hash of their password) and their API tokens (the SHA-256
of each), in one file beside the gallery, G/users.json, mode 0600.

    accounts = Accounts(Path("gallery/"))
    accounts.add_user("ann", "a long passphrase", "admin")      # search/users.py --gallery gallery/ add ann
    token, secret = accounts.new_token("ann", days=30)           # the secret is shown once, never stored
    accounts.check_password("ann", "a long passphrase")          # -> User, or None
    accounts.check_token(secret)                                 # -> (User, ""), or (None, why not)

The server re-reads the file when its stat changes, so a user added by the command can sign in to a running server.
Each change is a read-modify-write under a lock file, written atomically (a temp file made 0600 before anything is
written to it, fsync, rename). A file whose mode lets anyone else read or write it is refused, as ssh refuses a
private key: its hashes would be open to offline guessing. The file also holds the key that signs session cookies
(person.web.sessions), so every worker process of a server shares the sessions with no state of its own.
Each user carries a generation, raised by a new password: the sessions signed for the old one end. A new account's
first generation is random, so the sessions of a removed account of that name never pass for the new one's.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from person import files
from person.errors import PersonError
from person.gallery.manifest import MANIFEST

USERS_FILE = "users.json"
LOCK_FILE = ".users.lock"
FORMAT = "person-users"
ROLES = ("viewer", "admin")  # viewers search; admins also erase
# OWASP's scrypt floor in its lower-memory form (N=2^15, r=8, p=3 costs as much CPU as N=2^17, p=1 in 32 MiB
# instead of 128): ~0.25 s a hash on one core. Recorded with each hash, so stronger settings later still verify old.
SCRYPT = {"n": 2 ** 15, "r": 8, "p": 3, "dklen": 32}
SCRYPT_MAXMEM = 1 << 28
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
TOKEN_PREFIX = "pst"  # pst_<id>_<secret>: a scanner can spot a leaked one; the id names it in lists and revocation
NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
DAY = 86400.0


class AccountsError(PersonError):
    """The users file cannot be used, or a change to it is refused: the message names the fix."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    generation: int  # raised by a new password; a session cookie carries the one it was signed for
    created: float


@dataclass(frozen=True)
class Token:
    id: str
    user: str
    created: float
    expires: float | None  # epoch seconds; None: until revoked


def hash_password(password: str, params: dict[str, int] = SCRYPT) -> dict[str, Any]:
    """A salted scrypt hash of `password`, with the parameters that made it."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, maxmem=SCRYPT_MAXMEM, **params)
    return {"scheme": "scrypt", **params, "salt": salt.hex(), "hash": digest.hex()}


def password_matches(password: str, record: dict[str, Any]) -> bool:
    params = {k: int(record[k]) for k in ("n", "r", "p", "dklen")}
    digest = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(record["salt"]), maxmem=SCRYPT_MAXMEM,
                            **params)
    return hmac.compare_digest(digest.hex(), record["hash"])


# Verified when the name is unknown, so a wrong name costs what a wrong password does and timing names no account.
_DUMMY = hash_password(secrets.token_urlsafe(16))


def new_generation() -> int:
    """A new account's first generation: 62 random bits, so no earlier account of the same name had it (a new
    password adds 1: as likely to collide as guessing the number)."""
    return secrets.randbits(62) + 1


def check_new_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountsError(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters, this one {len(password)}")
    return password


def token_id(text: str) -> str:
    """The id in a token (pst_<id>_<secret>), in pst_<id>, or the id itself."""
    parts = text.strip().split("_", 2)
    return parts[1] if len(parts) >= 2 and parts[0] == TOKEN_PREFIX else text.strip()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_mode(path: Path, mode: int) -> None:
    if mode & 0o077:
        raise AccountsError(f"{path} has mode {stat.S_IMODE(mode):04o}: other users could read its password hashes "
                            f"and token hashes, or change them; make it the owner's only: chmod 600 {path}")


class Accounts:
    """The users file of the gallery in `folder`; safe to read from many threads."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / USERS_FILE
        self._lock = threading.Lock()
        self._seen: tuple[int, ...] | None = None
        self._data: dict[str, Any] = self._empty()

    # ------------------------------------------------------------------ reading
    @staticmethod
    def _empty() -> dict[str, Any]:
        return {"format": FORMAT, "version": 1, "session_key": secrets.token_hex(32), "users": {}, "tokens": {}}

    def _read_file(self) -> dict[str, Any] | None:
        """The file's content, checked; None when there is none."""
        try:
            with open(self.path, "rb") as f:
                _check_mode(self.path, os.fstat(f.fileno()).st_mode)  # the mode of what is read, not of a name
                raw = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise AccountsError(f"{self.path} cannot be read ({e.strerror}); check its owner and permissions") from None
        try:
            data = json.loads(raw)
            assert data["format"] == FORMAT and isinstance(data["session_key"], str)
            for name, u in data["users"].items():
                assert NAME.fullmatch(name) and u["role"] in ROLES and isinstance(u["generation"], int)
            for t in data["tokens"].values():
                assert t["user"] in data["users"] and isinstance(t["sha256"], str)
        except (ValueError, KeyError, TypeError, AttributeError, AssertionError):
            raise AccountsError(f"{self.path} is not a users file search/users.py wrote (damaged or edited); restore "
                                f"it, or move it aside and add the accounts again") from None
        return data

    def data(self) -> dict[str, Any]:
        """The accounts as the file holds them now: re-read when its stat (inode, mtime, size, mode) changed, so a
        replaced file or a loosened mode is seen on the next request. AccountsError when it cannot be used."""
        try:
            st = os.stat(self.path)
            seen: tuple[int, ...] | None = (st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode)
        except FileNotFoundError:
            seen = None
        except OSError as e:
            raise AccountsError(f"{self.path} cannot be read ({e.strerror})") from None
        with self._lock:
            if seen != self._seen:
                self._data = (self._read_file() if seen is not None else None) or self._empty()
                self._seen = seen
            return self._data

    def has_accounts(self) -> bool:
        return bool(self.data()["users"])

    def session_key(self) -> bytes:
        return bytes.fromhex(self.data()["session_key"])

    def users(self) -> list[User]:
        return [User(name, u["role"], u["generation"], u["created"]) for name, u in sorted(self.data()["users"].items())]

    def tokens(self) -> list[Token]:
        return [Token(tid, t["user"], t["created"], t["expires"])
                for tid, t in sorted(self.data()["tokens"].items(), key=lambda kv: (kv[1]["user"], kv[1]["created"]))]

    def user(self, name: str) -> User | None:
        u = self.data()["users"].get(name)
        return None if u is None else User(name, u["role"], u["generation"], u["created"])

    def check_password(self, name: str, password: str) -> User | None:
        """The user when `password` is theirs, else None (an unknown name costs a hash too)."""
        record = self.data()["users"].get(name)
        matches = password_matches(password[:MAX_PASSWORD], record["password"] if record else _DUMMY)
        return self.user(name) if record and matches else None

    def check_token(self, token: str, now: float | None = None) -> tuple[User | None, str]:
        """(the token's user, "") for a live token, else (None, why not): one SHA-256 and a lookup."""
        found = self.data()["tokens"].get(token_id(token)) if token.startswith(TOKEN_PREFIX + "_") else None
        if found is None or not hmac.compare_digest(found["sha256"], _sha256(token)):
            return None, "the API token is not one this gallery issued, or it was revoked"
        if found["expires"] is not None and (time.time() if now is None else now) >= found["expires"]:
            return None, f"the API token {token_id(token)} expired; ask for a new one (search/users.py token NAME)"
        return self.user(found["user"]), ""

    # ------------------------------------------------------------------ changes (search/users.py)
    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[str, Any]]:
        """The file's content to change, written back atomically (0600) when the block ends without error; under an
        exclusive lock, so two commands at once do not lose each other's change."""
        if not (self.path.parent / MANIFEST).is_file():
            raise AccountsError(f"{self.path.parent} is not a gallery (no {MANIFEST}); give the folder "
                                f"search/enroll.py --gallery made")
        with open(self.path.parent / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read_file() or self._empty()
            yield data
            with files.atomic_file(self.path, "w", encoding="utf-8", permissions=0o600) as f:  # 0600 from its creation
                os.fchmod(f.fileno(), 0o600)  # and whatever the umask
                f.write(json.dumps(data, indent=2) + "\n")

    def _known(self, data: dict[str, Any], name: str) -> dict[str, Any]:
        if name not in data["users"]:
            raise AccountsError(f"no user {name!r} in {self.path}; search/users.py --gallery "
                                f"{self.path.parent} list shows them")
        return data["users"][name]

    def add_user(self, name: str, password: str, role: str = "viewer", now: float | None = None) -> User:
        if not NAME.fullmatch(name):
            raise AccountsError(f"a user name is 1 to 64 letters, digits and . _ @ -, not {name!r}")
        if role not in ROLES:
            raise AccountsError(f"a role is one of {', '.join(ROLES)}, not {role!r}")
        # A random generation, not 1: a cookie signed for an earlier account of this name (removed, then added
        # again, perhaps with another role) names a generation this one never has, so it does not come back.
        record = {"role": role, "password": hash_password(check_new_password(password)),
                  "generation": new_generation(), "created": time.time() if now is None else now}
        with self._changing() as data:
            if name in data["users"]:
                raise AccountsError(f"{name!r} already has an account; search/users.py --gallery {self.path.parent} "
                                    f"password {name} gives it a new password")
            data["users"][name] = record
        return User(name, role, record["generation"], record["created"])

    def set_password(self, name: str, password: str) -> User:
        """A new password; the sessions signed in with the old one end (a new generation)."""
        hashed = hash_password(check_new_password(password))
        with self._changing() as data:
            record = self._known(data, name)
            record["password"], record["generation"] = hashed, record["generation"] + 1
        return User(name, record["role"], record["generation"], record["created"])

    def remove_user(self, name: str) -> list[str]:
        """Remove a user and their tokens (their sessions end with them); the ids of the tokens removed."""
        with self._changing() as data:
            self._known(data, name)
            del data["users"][name]
            gone = [tid for tid, t in data["tokens"].items() if t["user"] == name]
            for tid in gone:
                del data["tokens"][tid]
        return gone

    def new_token(self, name: str, days: float | None = None, now: float | None = None) -> tuple[Token, str]:
        """A new API token of `name`, valid `days` (None: until revoked): (the token, its secret, to show once)."""
        now = time.time() if now is None else now
        tid = secrets.token_hex(4)
        secret = f"{TOKEN_PREFIX}_{tid}_{secrets.token_urlsafe(32)}"
        token = Token(tid, name, now, None if days is None else now + days * DAY)
        with self._changing() as data:
            self._known(data, name)
            data["tokens"][tid] = {"user": name, "sha256": _sha256(secret), "created": now, "expires": token.expires}
        return token, secret

    def _token(self, data: dict[str, Any], text: str) -> dict[str, Any]:
        tid = token_id(text)
        if tid not in data["tokens"]:
            raise AccountsError(f"no token {tid!r} in {self.path}; search/users.py --gallery {self.path.parent} list "
                                f"shows them")
        return data["tokens"][tid]

    def revoke_token(self, text: str) -> Token:
        with self._changing() as data:
            t = self._token(data, text)
            del data["tokens"][token_id(text)]
        return Token(token_id(text), t["user"], t["created"], t["expires"])

    def set_token_expiry(self, text: str, days: float | None, now: float | None = None) -> Token:
        """The token now expires `days` from `now` (None: never)."""
        expires = None if days is None else (time.time() if now is None else now) + days * DAY
        with self._changing() as data:
            t = self._token(data, text)
            t["expires"] = expires
        return Token(token_id(text), t["user"], t["created"], expires)
