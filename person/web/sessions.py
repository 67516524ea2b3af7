"""Session cookies and the sign-in rate limit.

A session is a signed cookie, not a row on the server: `name.generation.expiry` and an HMAC-SHA256 over them with
the key in the users file (person.web.accounts), so every worker process reads the sessions of every other and a
restart keeps them. The expiry inside the signed value is checked (a cookie kept past its Max-Age is refused), and
so is the user's generation: a removed user or a new password ends the sessions signed before.

The sign-in rate limit is a sliding window per client address, in the process (with --workers N, per worker).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

SESSION_COOKIE = "person_session"
SESSION_SECONDS = 12 * 3600   # a working day; then the page asks for the password again
LOGIN_ATTEMPTS = 10           # sign-in attempts a client address may make ...
LOGIN_WINDOW = 300.0          # ... in this many seconds
MAX_CLIENTS = 10_000          # addresses the limiter remembers: the least recently seen are forgotten first


def _mac(key: bytes, payload: bytes) -> str:
    digest = hmac.new(key, b"person-session\0" + payload, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def sign_session(key: bytes, user: str, generation: int, expires: float) -> str:
    """The cookie's value for `user` (at `generation`) until `expires` (epoch seconds)."""
    payload = base64.urlsafe_b64encode(f"{user}\0{generation}\0{int(expires)}".encode()).decode("ascii").rstrip("=")
    return f"{payload}.{_mac(key, payload.encode('ascii'))}"


def read_session(key: bytes, value: str, now: float) -> tuple[str, int] | None:
    """(user, generation) of a cookie signed with `key` and not expired at `now`; None otherwise."""
    payload, _, mac = value.partition(".")
    if not (mac and mac.isascii() and payload.isascii() and hmac.compare_digest(mac, _mac(key, payload.encode()))):
        return None
    try:
        user, generation, expires = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode().split("\0")
        if now >= int(expires):
            return None
        return user, int(generation)
    except (ValueError, binascii.Error, UnicodeError):
        return None


class LoginLimiter:
    """At most `attempts` sign-in attempts per client address in any `window` seconds; safe from many threads."""

    def __init__(self, attempts: int = LOGIN_ATTEMPTS, window: float = LOGIN_WINDOW,
                 clock: Callable[[], float] = time.time) -> None:
        self.attempts, self.window, self.clock = attempts, window, clock
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def attempt(self, client: str) -> int | None:
        """Count an attempt from `client`: None when it may go ahead, else the seconds until one may (the attempt
        refused is not counted, so waiting that long is enough)."""
        now = self.clock()
        with self._lock:
            times = self._seen.pop(client, None) or deque()
            while times and times[0] <= now - self.window:
                times.popleft()
            self._seen[client] = times  # most recently seen last
            if len(self._seen) > MAX_CLIENTS:
                self._seen.popitem(last=False)
            if len(times) >= self.attempts:
                return max(1, math.ceil(times[0] + self.window - now))
            times.append(now)
            return None
