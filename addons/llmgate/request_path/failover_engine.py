"""Which pool member a request tries next: pure policy, no I/O, no clock of its own.

The caller gives the members in the order this request tries them (the model's pool, then its
fallback models' pools), a way to ask whether one may take a request now, a clock (epoch
seconds) and the limits; it reports each failed attempt back. The engine answers with the next
attempt, or None and then `error()`: the member's own error (a pool of one) or `pool_exhausted`
(llmgate/failover.exhausted), 429 with Retry-After when only rate limits kept the members out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from converters.first_event import FirstEvent, StreamStartError
from llmgate.errors import GatewayError
from llmgate.request_path.failover import exhausted, fails_over, is_rate_limit
from llmgate.request_path.pool import Cooling, PoolState
from llmgate.request_path.routing import Route

# True: the member may take a request now; else the cooldown keeping it out (None: it is busy
# at its concurrency limit, or the cooldown is unknown)
MemberState = Callable[[Route], "Cooling | None | bool"]


def member_state(pool: PoolState, route: Route, accounts: list[str] | None) -> Cooling | None | bool:
    """True if some account of this member may take a request now; else the cooldown that keeps
    it out (None: busy at its concurrency limit). accounts: the usable accounts of a subscription
    entry; None for an API-key entry (one account, "")."""
    p = route.provider
    if accounts is not None and not accounts:
        return True  # let the attempt say which logins are missing
    names = [""] if accounts is None else accounts
    if any(pool.available(p.id, name, route.model, p.max_concurrency) for name in names):
        return True
    return min((c for n in names if (c := pool.cooling(p.id, n, route.model))), key=lambda c: c.until,
               default=None)


@dataclass(frozen=True, slots=True)
class Attempt:
    route: Route
    probe: bool  # the last resort: a member backing off after errors, tried early


class Failover:
    def __init__(self, model: str, order: list[Route], state: MemberState, clock: Callable[[], float],
                 max_attempts: int, deadline: float):
        """deadline: seconds from now, on `clock`, after which no new attempt starts."""
        self.model = model
        self._candidates = list(order)
        self._state = state
        self._clock = clock
        self._max_attempts = max_attempts
        self._deadline = clock() + deadline
        self._probe: Route | None = None
        self.failures: list[tuple[Route, str, GatewayError]] = []
        self.cooling: list[tuple[Route, Cooling | None]] = []

    def next(self) -> Attempt | None:
        """The next member to try; None when none is left (or the limits are reached)."""
        while self._candidates:
            route = self._candidates.pop(0)
            if len(self.failures) >= self._max_attempts or self._clock() > self._deadline:
                return None
            if route is self._probe:
                return Attempt(route, True)
            state = self._state(route)
            if state is True:
                return Attempt(route, False)
            self.cooling.append((route, state or None))
            if not self._candidates and not self.failures and self._probe is None:
                self._pick_probe()
        return None

    def _pick_probe(self) -> None:
        """Nobody else to ask: the member whose backoff (not a rate limit) ends first, early."""
        soft = sorted((c.until, i) for i, (_, c) in enumerate(self.cooling) if c is not None and not is_rate_limit(c))
        if soft:
            self._probe = probe = self.cooling[soft[0][1]][0]
            self.cooling = [(r, c) for r, c in self.cooling if r is not probe]
            self._candidates.append(probe)

    def failed(self, attempt: Attempt, account: str, e: GatewayError) -> bool:
        """Record a failed attempt. False: the error would fail everywhere, answer it as it is."""
        if not fails_over(e):
            return False
        self.failures.append((attempt.route, account, e))
        return True

    def error(self) -> GatewayError:
        """What the client gets when nothing served the request."""
        return exhausted(self.model, self.failures, self.cooling, self._clock())


HOLD_LIMIT = 64 << 10  # bytes held before the first event; an error event is far smaller


class StreamStart:
    """Whether a streamed answer may reach the client yet: it is held until its first real event
    (converters/first_event), so an error sent inside a 200 fails over like an HTTP error. Pure:
    the caller reads and feeds; the clock is injected (seconds).

    Keepalives (comments, pings) do not count as a start, and are not held without end: past
    `limit` bytes or `wait` seconds without a real event, the stream goes on as it is (the
    upstream is alive; an error later is the relay's to report, as for any event after the first)."""

    def __init__(self, first: FirstEvent, clock: Callable[[], float], wait: float, limit: int = HOLD_LIMIT):
        self._first = first
        self._clock = clock
        self._deadline = clock() + wait
        self._limit = limit
        self._held: list[bytes] = []
        self._size = 0

    @property
    def held(self) -> bytes:
        """What was read so far: the client gets it first, byte for byte."""
        return b"".join(self._held)

    def remaining(self) -> float:
        """Seconds to keep waiting for the first event."""
        return max(0.0, self._deadline - self._clock())

    def feed(self, chunk: bytes) -> StreamStartError | bool:
        """True: let the stream through (held bytes first); False: read on; or the error it began with."""
        self._held.append(chunk)
        self._size += len(chunk)
        verdict = self._first.feed(chunk)
        if verdict is not None:
            return verdict
        return self._size > self._limit or self.remaining() <= 0
