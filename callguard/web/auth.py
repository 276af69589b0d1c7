"""Login for the pages (dashboard, lists): who may log in, the server-side sessions, CSRF, throttling.

* **Who**: the web token (``web.token``, any name or none) or a configured user (``web.users``, scrypt
  hashes from ``callguard passwd NAME``). The hash runs on a thread: ~50 ms of scrypt must not hold the
  event loop that answers FastAGI screens. An unknown name costs a hash too, so the time taken does not
  tell which names exist.
* **Sessions** live in this process's memory, keyed by a random id (``secrets.token_urlsafe``, 256 bits):
  nothing to steal from the store or a backup, and a restart logs everyone out (one process, DESIGN.md).
  The table is bounded (the oldest session goes first) and a session ends after ``IDLE_S`` unused or
  ``MAX_AGE_S`` in all. The cookie is ``HttpOnly``, ``SameSite=Strict``, and ``Secure`` on https.
* **CSRF**: every session has its own token, sent in a hidden field of every form and checked on every
  POST (``hmac.compare_digest``); the login form uses a double-submit cookie, as there is no session yet.
* **Throttle**: after ``MAX_FAILURES`` failed logins from one address within ``FAIL_WINDOW_S`` that address
  waits out the window (429).

Nothing secret is logged: no password, token, session id or CSRF token; the name tried is logged as given.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from callguard import passwords
from callguard.config import WebUser

SESSION_COOKIE = "callguard_session"
LOGIN_COOKIE = "callguard_login_csrf"
IDLE_S = 8 * 3600.0
MAX_AGE_S = 7 * 86400.0
MAX_SESSIONS = 10_000
MAX_FAILURES = 10
FAIL_WINDOW_S = 300.0
MAX_TRACKED_PEERS = 10_000
TOKEN_USER = "token"
# What an unknown name is checked against, so it costs the same as a known one.
_DUMMY_HASH = passwords.hash_password(secrets.token_urlsafe(16))


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same(given: str, expected: str) -> bool:
    """Constant-time equality of two strings; an empty ``expected`` never matches."""
    return bool(expected) and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


@dataclass
class Session:
    id: str
    user: str
    csrf: str
    created: float
    seen: float
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) shown once on the next page

    def say(self, kind: str, text: str) -> None:
        self.flash.append((kind, text))
        del self.flash[:-5]

    def take_flash(self) -> list[tuple[str, str]]:
        out, self.flash = self.flash, []
        return out


class Sessions:
    """The server-side session table: id → Session, oldest first, bounded."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, idle_s: float = IDLE_S,
                 max_age_s: float = MAX_AGE_S, limit: int = MAX_SESSIONS) -> None:
        self._clock = clock
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self.limit = limit
        self._table: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def create(self, user: str) -> Session:
        now = self._clock()
        session = Session(new_token(), user, new_token(), now, now)
        self._table[session.id] = session
        while len(self._table) > self.limit:
            self._table.popitem(last=False)
        return session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self._table.get(sid)
        if session is None:
            return None
        now = self._clock()
        if now - session.seen > self.idle_s or now - session.created > self.max_age_s:
            del self._table[sid]
            return None
        session.seen = now
        self._table.move_to_end(sid)
        return session

    def drop(self, sid: str | None) -> None:
        if sid:
            self._table.pop(sid, None)


class FailureLimiter:
    """Failed logins per peer address within a sliding window; bounded in peers tracked."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, limit: int = MAX_FAILURES,
                 window_s: float = FAIL_WINDOW_S) -> None:
        self._clock = clock
        self.limit = limit
        self.window_s = window_s
        self._fails: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, peer: str) -> deque[float]:
        q = self._fails.get(peer)
        if q is None:
            return deque()
        cutoff = self._clock() - self.window_s
        while q and q[0] < cutoff:
            q.popleft()
        if not q:
            del self._fails[peer]
        return q

    def blocked(self, peer: str) -> bool:
        return len(self._recent(peer)) >= self.limit

    def failed(self, peer: str) -> None:
        q = self._fails.setdefault(peer, deque())
        q.append(self._clock())
        self._fails.move_to_end(peer)
        while len(self._fails) > MAX_TRACKED_PEERS:
            self._fails.popitem(last=False)

    def succeeded(self, peer: str) -> None:
        self._fails.pop(peer, None)


class Authenticator:
    """Checks a name and password against ``web.users``, or the password alone against ``web.token``."""

    def __init__(self, token: str, users: Sequence[WebUser]) -> None:
        self._token = token
        self._users = {u.name.casefold(): u for u in users}

    @property
    def configured(self) -> bool:
        return bool(self._token or self._users)

    async def check(self, name: str, password: str) -> str | None:
        """The user's name as configured (``"token"`` for the web token), or None."""
        name = name.strip()
        if not password:
            return None
        user = self._users.get(name.casefold()) if name else None
        if user is not None:
            ok = await asyncio.to_thread(passwords.verify, password, user.password_hash)
            return user.name if ok else None
        if self._token and same(password, self._token):
            return TOKEN_USER  # whatever name was typed: the token is nobody's name
        if name:
            await asyncio.to_thread(passwords.verify, password, _DUMMY_HASH)  # same cost as a known name
        return None
