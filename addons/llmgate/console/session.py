"""Console sessions: a random id in an HttpOnly, SameSite=Strict cookie, held in memory.

The admin key never goes into the cookie: it is checked once at login, and the session keeps
only a digest of it, so a session ends when its key leaves server.admin_keys. Each session has
its own CSRF token, which the console's pages send back in a header with every write.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE = "llmgate_ui"
CSRF_HEADER = "x-csrf-token"
TTL = 12 * 3600.0  # seconds a session lives, from login
MAX_SESSIONS = 1000  # the oldest goes when a new one would exceed this


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(slots=True)
class Session:
    sid: str
    csrf: str
    key_digest: str | None  # None: opened without a key (no admin_keys configured, loopback)
    expires: float


@dataclass
class Sessions:
    clock: Callable[[], float] = time.time
    _by_id: dict[str, Session] = field(default_factory=dict)

    def open(self, key: str | None) -> Session:
        while len(self._by_id) >= MAX_SESSIONS:
            self._by_id.pop(next(iter(self._by_id)))  # dicts keep insertion order: the oldest
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), digest(key) if key else None,
                    self.clock() + TTL)
        self._by_id[s.sid] = s
        return s

    def get(self, sid: str | None, admin_keys: list[str]) -> Session | None:
        """The live session with this id, if its key (or its being keyless) still holds."""
        s = self._by_id.get(sid or "")
        if s is None:
            return None
        allowed = {digest(k) for k in admin_keys}
        still = s.key_digest in allowed if s.key_digest else not admin_keys
        if self.clock() >= s.expires or not still:
            del self._by_id[s.sid]
            return None
        return s

    def close(self, sid: str) -> None:
        self._by_id.pop(sid, None)


def key_matches(key: str, admin_keys: list[str]) -> bool:
    return any(hmac.compare_digest(key.encode(), k.encode()) for k in admin_keys)


def csrf_ok(s: Session, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(sent.encode(), s.csrf.encode())


def cookie(s: Session | None, tls: bool) -> str:
    """Set-Cookie for this session (None: clear it). Path=/ui: the admin API never sees it."""
    value, age = (s.sid, int(TTL)) if s else ("", 0)
    return f"{COOKIE}={value}; Path=/ui; Max-Age={age}; HttpOnly; SameSite=Strict" + ("; Secure" if tls else "")


@dataclass
class LoginThrottle:
    """At most `limit` failed logins per client address per `window` seconds: guessing admin keys
    through the form stays slow. Bounded: the oldest address is forgotten past `max_clients`."""

    clock: Callable[[], float] = time.monotonic
    limit: int = 10
    window: float = 60.0
    max_clients: int = 1000
    _failures: dict[str, list[float]] = field(default_factory=dict)

    def blocked(self, client: str) -> bool:
        now = self.clock()
        recent = [t for t in self._failures.get(client, ()) if now - t < self.window]
        if recent:
            self._failures[client] = recent
        else:
            self._failures.pop(client, None)
        return len(recent) >= self.limit

    def failed(self, client: str) -> None:
        if client not in self._failures and len(self._failures) >= self.max_clients:
            self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(client, []).append(self.clock())
