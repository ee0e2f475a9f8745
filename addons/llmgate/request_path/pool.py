"""Account pools: which member serves a request, who is cooling down, and for how long.

A model's pool is every (provider entry, upstream model) serving it (llmgate/routing.members);
a subscription entry's accounts are members too, one level down. Per request the members are
ordered by the strategy (round-robin, least-busy, fill-first, weighted), or by session affinity
(rendezvous hashing on a header or prompt_cache_key, so a conversation stays on one account
and its prompt cache while that account is usable), and those cooling down or at their
concurrency limit are left out.

Cooldowns are kept per (provider, account, model); model "" means every model of the account
(a spent quota is shared by its models), account "" the whole entry (a host that does not
answer). They end at the time the upstream gave (Retry-After, RetryInfo, quotaResetDelay) or,
without one, after an exponential backoff (1 s doubling, at most 5 min). When one ends the
member is simply tried again (the probe); a success clears its failure count. Cooldowns survive
restarts, and are shared between processes, through llmgate/state/.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from llmgate.request_path.routing import Route

BACKOFF_BASE = 1.0
BACKOFF_MAX = 300.0

Key = tuple[str, str, str]  # (provider id, account, model); "" = any


@dataclass(slots=True)
class Cooling:
    until: float  # epoch seconds
    failures: int
    reason: str


class PoolState:
    def __init__(self, store: Any = None, clock: Callable[[], float] = time.time):
        self.store = store  # a llmgate.state backend (shared with other processes), or None
        self.clock = clock  # epoch seconds (tests pass their own)
        self.cooldowns: dict[Key, Cooling] = dict(store.load()) if store is not None else {}
        self.inflight: dict[tuple[str, str], int] = {}
        self._cursor: dict[str, int] = {}

    # --- cooldowns ---------------------------------------------------------

    def cooling(self, provider: str, account: str, model: str, now: float | None = None) -> Cooling | None:
        """The cooldown that keeps this member out now, if any (the one ending last)."""
        if self.store is not None:
            self.store.refresh()  # other processes' cooldowns
        now = self.clock() if now is None else now
        found = None
        for key in ((provider, account, model), (provider, account, ""), (provider, "", ""), (provider, "", model)):
            c = self.cooldowns.get(key)
            if c is not None and c.until > now and (found is None or c.until > found.until):
                found = c
        return found

    def cool(self, provider: str, account: str, model: str, seconds: float | None, reason: str) -> Cooling:
        key = (provider, account, model)
        old = self.cooldowns.get(key)
        failures = (old.failures if old else 0) + 1
        if seconds is None:
            seconds = min(BACKOFF_BASE * 2 ** min(failures - 1, 32), BACKOFF_MAX)  # a count from a shared store too
        c = self.cooldowns[key] = Cooling(self.clock() + seconds, failures, reason)
        if self.store is not None:
            self.store.save(key, c)
        return c

    def success(self, provider: str, account: str, model: str) -> None:
        """A member answered: its (ended) cooldowns and failure counts go."""
        for key in ((provider, account, model), (provider, account, ""), (provider, "", ""), (provider, "", model)):
            if key in self.cooldowns and self.cooldowns[key].until <= self.clock():
                del self.cooldowns[key]
                if self.store is not None:
                    self.store.delete(key)

    def reset(self, provider: str, account: str | None = None) -> int:
        """Operator reset: forget the provider's (or one account's) cooldowns. Returns how many."""
        keys = [k for k in self.cooldowns if k[0] == provider and (account is None or k[1] == account)]
        for k in keys:
            del self.cooldowns[k]
            if self.store is not None:
                self.store.delete(k)
        return len(keys)

    # --- in flight -----------------------------------------------------------

    def acquire(self, provider: str, account: str) -> tuple[str, str]:
        key = (provider, account)
        self.inflight[key] = self.inflight.get(key, 0) + 1
        if self.store is not None:
            self.store.held(key, self.inflight[key])
        return key

    def release(self, key: tuple[str, str] | None) -> None:
        if key is not None and self.inflight.get(key, 0) > 0:
            self.inflight[key] -= 1
            if self.store is not None:
                self.store.held(key, self.inflight[key])

    async def confirm(self, key: tuple[str, str] | None, limit: int | None) -> bool:
        """The slot `acquire` took holds across processes too (shared state): False if other
        processes' requests already fill the account's limit (give the slot back then)."""
        return key is None or self.store is None or await self.store.confirm(key, limit)

    def busy(self, provider: str, account: str | None = None) -> int:
        """Requests in flight, in this process and (shared state) the others."""
        others = self.store.others(provider, account) if self.store is not None else 0
        if account is not None:
            return self.inflight.get((provider, account), 0) + others
        return sum(n for (p, _), n in self.inflight.items() if p == provider) + others

    def available(self, provider: str, account: str, model: str, limit: int | None) -> bool:
        if self.cooling(provider, account, model) is not None:
            return False
        return limit is None or self.busy(provider, account) < limit

    # --- ordering --------------------------------------------------------------

    def order(self, pool: str, routes: list[Route], strategy: str, affinity: str | None) -> Iterator[Route]:
        """The members in the order this request tries them (cooling ones are filtered later,
        per account, by the caller)."""
        if len(routes) <= 1:
            yield from routes
            return
        if affinity:
            def score(r: Route) -> bytes:
                return hashlib.blake2b(f"{affinity}|{r.provider.id}|{r.model}".encode(), digest_size=8).digest()
            yield from sorted(routes, key=score, reverse=True)
            return
        if strategy == "fill-first":
            yield from routes
        elif strategy == "least-busy":
            yield from sorted(routes, key=lambda r: self.busy(r.provider.id))  # stable: config order on ties
        elif strategy == "weighted":
            rest = list(routes)
            while rest:
                pick = random.choices(range(len(rest)), weights=[r.provider.weight for r in rest])[0]
                yield rest.pop(pick)
        else:  # round-robin
            start = self._cursor.get(pool, 0) % len(routes)
            self._cursor[pool] = start + 1
            yield from routes[start:] + routes[:start]
