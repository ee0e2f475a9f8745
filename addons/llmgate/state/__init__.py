"""State that gateway processes share, behind one interface with two backends.

`LocalState` (local.py, the default): a SQLite file. Processes on one host that use the same
file (`server.state_file`) see each other's cooldowns, locks and fenced values; everything
else stays in each process. `RedisState` (redis_backend.py, `server.state: redis://...`) adds
Redis on top of the same file: cooldowns, in-flight counts (so `max_concurrency` holds across
processes and hosts), reasoning memory, locks and fenced values are shared by every process
that names the same Redis. If Redis is unreachable it serves with the local part and catches
up when Redis is back.

The request path reads only local memory (no round trip per request, except Redis's atomic
reservation of a slot on an account with `max_concurrency`): the pool's dicts are
mirrors that the backend keeps current (SQLite: `PRAGMA data_version`, a few microseconds,
checked at most once per millisecond; Redis: pushed over pub/sub). Writes are rare
(a cooldown starts or ends) or coalesced (in-flight counts).

What is not shared, by design: round-robin cursors (each process spreads its own share evenly,
and the load balancer spreads the processes, so the sum is even; a shared cursor would cost a
round trip per request for nothing), session affinity (rendezvous hashing: every process
computes the same member from the session key and the shared cooldowns, no state to share),
and the model discovery cache (each process asks each provider's model list itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from llmgate.request_path.pool import Cooling, PoolState
    from llmgate.request_path.wire import ReasoningMemory

Key = tuple[str, str, str]  # (provider id, account, model), as in pool.py


@dataclass(frozen=True, slots=True)
class Lease:
    """A held lock. `fence` grows with every grant of the lock's name, so a writer that lost
    its lease (paused past the TTL) presents an older fence than the one holding it now, and
    `put_fenced` refuses its write."""
    name: str
    owner: str
    fence: int


class SharedState(Protocol):
    path: Any  # the SQLite file

    # --- used by pool.PoolState, synchronous and cheap (local memory only) ----
    def load(self) -> dict[Key, Cooling]: ...
    def attach(self, pool: PoolState) -> None: ...
    def save(self, key: Key, c: Cooling) -> None: ...
    def delete(self, key: Key) -> None: ...
    def refresh(self) -> None: ...
    def held(self, key: tuple[str, str], n: int) -> None: ...
    def others(self, provider: str, account: str | None) -> int: ...

    async def confirm(self, key: tuple[str, str], limit: int | None) -> bool:
        """The in-flight slot just taken (`held`) holds across processes: False if the account
        is at `limit` counting every process's slots (then give the slot back)."""
        ...

    def reasoning(self, memory: ReasoningMemory) -> ReasoningMemory:
        """The reasoning memory to use from now on (given the current one)."""
        ...

    # --- single-flight across processes (credentials refresh) ----------------
    async def acquire(self, name: str, ttl: float, wait: float = 0.0) -> Lease | None:
        """The lock `name` for `ttl` seconds (then it lapses: a crashed holder cannot keep it);
        None if another holds it for longer than `wait` seconds."""
        ...

    async def release(self, lease: Lease) -> None: ...

    async def put_fenced(self, name: str, value: bytes, fence: int) -> bool:
        """Store `value` unless a write with a newer fence was stored already (False then)."""
        ...

    async def get_fenced(self, name: str) -> tuple[bytes, int] | None: ...

    def connected(self) -> bool | None:
        """Redis reachable now (None: no Redis configured)."""
        ...

    def stop_sharing(self) -> None:
        """Another backend replaces this one: stop telling other processes about this one's state."""
        ...

    def close(self) -> None: ...


def open_state(path: str, url: str | None) -> SharedState:
    """The state backend: this SQLite file, plus Redis at `url` when given."""
    from llmgate.state.local import LocalState

    local = LocalState(path)
    if url is None:
        return local
    from llmgate.state.redis_backend import RedisState

    return RedisState(local, url)
