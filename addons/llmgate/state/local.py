"""The embedded state backend: one SQLite file (WAL). Cooldowns survive restarts and are seen by
every process using the same file; locks and fenced values serve single-flight work across
those processes. In-flight counts stay in each process (`others` is 0)."""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from llmgate.state import Key, Lease

if TYPE_CHECKING:
    from llmgate.request_path.pool import Cooling, PoolState
    from llmgate.request_path.wire import ReasoningMemory

SCHEMA = """
CREATE TABLE IF NOT EXISTS cooldowns (
    provider TEXT NOT NULL, account TEXT NOT NULL, model TEXT NOT NULL,
    until REAL NOT NULL, failures INTEGER NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (provider, account, model));
CREATE TABLE IF NOT EXISTS locks (name TEXT PRIMARY KEY, owner TEXT NOT NULL, until REAL NOT NULL,
    fence INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS fenced (name TEXT PRIMARY KEY, value BLOB NOT NULL, fence INTEGER NOT NULL);
"""
KEEP_FAILURES = 3600.0  # failure counts of cooldowns that ended this recently still drive the backoff
REFRESH_EVERY = 0.001  # seconds between looks at the file for other processes' writes
LOCK_POLL = 0.05


class LocalState:
    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time,
                 ticks: Callable[[], float] = time.monotonic):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.clock, self.ticks = clock, ticks
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        # locks and fenced values: their own connection, used in worker threads, so a lock
        # waiting for another process's write never holds up the event loop's connection
        self._side_lock = threading.Lock()
        self._side = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._pool: PoolState | None = None
        self._version = self._data_version()
        self._looked = ticks()

    def _data_version(self) -> int:
        with self._lock:
            return self._db.execute("PRAGMA data_version").fetchone()[0]

    # --- cooldowns (pool.PoolState) ----------------------------------------------------------

    def load(self) -> dict[Key, Cooling]:
        from llmgate.request_path.pool import Cooling  # the value type; pool imports nothing from here

        with self._lock:
            rows = self._db.execute(
                "SELECT provider, account, model, until, failures, reason FROM cooldowns WHERE until > ?",
                (self.clock() - KEEP_FAILURES,)).fetchall()
        return {(p, a, m): Cooling(until, failures, reason) for p, a, m, until, failures, reason in rows}

    def attach(self, pool: PoolState) -> None:
        """Keep this pool's cooldowns current with what other processes write to the file."""
        self._pool = pool

    def refresh(self) -> None:
        """Another process wrote to the file since we last looked: read the cooldowns again.
        `PRAGMA data_version` only changes for other connections' commits, so our own writes
        cost no re-read."""
        now = self.ticks()
        if self._pool is None or now - self._looked < REFRESH_EVERY:
            return
        self._looked = now
        version = self._data_version()
        if version != self._version:
            self._version = version
            self.replace(self._pool, self.load())

    @staticmethod
    def replace(pool: PoolState, cooldowns: dict[Key, Cooling]) -> None:
        pool.cooldowns.clear()
        pool.cooldowns.update(cooldowns)

    def save(self, key: Key, c: Cooling) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO cooldowns VALUES (?, ?, ?, ?, ?, ?)",
                             (*key, c.until, c.failures, c.reason))

    def delete(self, key: Key) -> None:
        with self._lock:
            self._db.execute("DELETE FROM cooldowns WHERE provider = ? AND account = ? AND model = ?", key)

    # --- in flight: per process here ------------------------------------------------------------

    def held(self, key: tuple[str, str], n: int) -> None:
        pass

    def others(self, provider: str, account: str | None) -> int:
        return 0

    async def confirm(self, key: tuple[str, str], limit: int | None) -> bool:
        return True  # the process's own count is the whole count

    def reasoning(self, memory: ReasoningMemory) -> ReasoningMemory:
        return memory

    # --- locks with fencing, fenced values ---------------------------------------------------

    async def acquire(self, name: str, ttl: float, wait: float = 0.0) -> Lease | None:
        owner = f"{os.getpid()}-{secrets.token_hex(8)}"
        deadline = self.ticks() + wait
        while True:
            fence = await asyncio.to_thread(self._try_lock, name, owner, ttl)
            if fence is not None:
                return Lease(name, owner, fence)
            if self.ticks() >= deadline:
                return None
            await asyncio.sleep(LOCK_POLL)

    def _try_lock(self, name: str, owner: str, ttl: float) -> int | None:
        now = self.clock()
        with self._side_lock:
            self._side.execute("BEGIN IMMEDIATE")
            try:
                row = self._side.execute("SELECT until, fence FROM locks WHERE name = ?", (name,)).fetchone()
                if row is not None and row[0] > now:
                    return None
                fence = (row[1] if row else 0) + 1
                self._side.execute("INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?)",
                                   (name, owner, now + ttl, fence))
                return fence
            finally:
                self._side.execute("COMMIT")

    async def release(self, lease: Lease) -> None:
        def run() -> None:
            with self._side_lock:  # only our own grant: a lapsed lease may have been granted again
                self._side.execute("UPDATE locks SET until = 0 WHERE name = ? AND owner = ?", (lease.name, lease.owner))
        await asyncio.to_thread(run)

    async def put_fenced(self, name: str, value: bytes, fence: int) -> bool:
        def run() -> bool:
            with self._side_lock:
                cur = self._side.execute(
                    "INSERT INTO fenced VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value, "
                    "fence = excluded.fence WHERE excluded.fence >= fenced.fence", (name, value, fence))
                return cur.rowcount > 0
        return await asyncio.to_thread(run)

    async def get_fenced(self, name: str) -> tuple[bytes, int] | None:
        def run() -> tuple[bytes, int] | None:
            with self._side_lock:
                row = self._side.execute("SELECT value, fence FROM fenced WHERE name = ?", (name,)).fetchone()
            return (bytes(row[0]), row[1]) if row else None
        return await asyncio.to_thread(run)

    def connected(self) -> bool | None:
        return None

    def stop_sharing(self) -> None:
        pass

    def close(self) -> None:
        with self._lock:
            self._db.close()
        with self._side_lock:
            self._side.close()
