"""Shared state in Redis (`server.state: redis://...`), on top of the local SQLite backend.

Only a limited account's slot reservation (below) waits for Redis. Each process keeps mirrors
in memory (the pool's cooldowns, the other processes' in-flight counts, the reasoning memory)
that one background task keeps current from a pub/sub channel, and writes go out coalesced, in one pipeline per
event-loop turn. Cooldowns are also kept in a Redis hash, read whole on (re)connect.
In-flight counts are a lease: each process publishes its counts on every change and every
HEARTBEAT seconds; a process not heard from for LEASE seconds (crashed) holds nothing. Those
counts are a pub/sub hop old, so an account with `max_concurrency` is also reserved atomically
(`confirm`: one Lua call, the only round trip a request may wait for, and only for such
accounts): slots in a sorted set scored by lease expiry, renewed by the heartbeat.

Redis unreachable: requests go on with this process's state (and its SQLite file), the outage
is logged once, the connection is retried with backoff, and on return this process's cooldown
changes are written and the others' read. Locks and fenced values fall back to the SQLite file
meanwhile (single-flight among this host's processes only).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from converters import canonical as cn
from llmgate.request_path.wire import ReasoningMemory
from llmgate.state import Key, Lease
from llmgate.state.local import LocalState

if TYPE_CHECKING:
    from llmgate.request_path.pool import Cooling, PoolState

log = logging.getLogger("llmgate.state")

PREFIX = "llmgate:"
CHANNEL = PREFIX + "events"
COOLDOWNS = PREFIX + "cooldowns"
HEARTBEAT = 2.0  # seconds between in-flight announcements (at most a quarter of the lease)
# At most one in-flight announcement per this many seconds: a pipeline and its pub/sub echo per
# request start and end cost ~0.7 ms of latency at one connection; least-busy orders by counts
# this old (max_concurrency does not: it reserves through Redis, bench/cores.py)
ANNOUNCE_EVERY = 0.05
LEASE = 10.0  # a process silent this long holds no in-flight slots
BACKOFF = (0.2, 10.0)  # reconnect delay: first, most
MAX_REASONING = 1 << 20  # bytes: larger thinking blocks stay in the process that saw them
MAX_OUTBOX = 1000
MAX_FAILURES = 1000  # a cooldown's failure count read from Redis (the backoff tops out long before)
MAX_REASON = 1000  # characters of a cooldown's reason read from Redis

LOCK = ("if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return redis.call('INCR', KEYS[2]) end "
        "return 0")
UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
RESERVE = ("local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "
           "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) "
           "if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then "
           "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3]) "
           "redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end return 0")
RENEW = ("local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "
         "for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i]) end "
         "redis.call('PEXPIRE', KEYS[1], ARGV[1]) return 1")
PUT_FENCED = ("local f = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0') or 0 "  # garbage: replaceable
              "if tonumber(ARGV[2]) >= f then redis.call('HSET', KEYS[1], 'value', ARGV[1], 'fence', ARGV[2]) "
              "return 1 end return 0")


def where(url: str) -> str:
    """The URL without its password, for logs."""
    u = urlsplit(url)
    return f"{u.scheme}://{u.hostname or ''}{f':{u.port}' if u.port else ''}{u.path}"


def _blocks_out(blocks: list[cn.Block]) -> list[dict[str, Any]]:
    return [{"r": b.data} if isinstance(b, cn.RedactedThinking) else
            {"t": b.text, "s": b.signature, "e": b.encrypted_content} for b in blocks
            if isinstance(b, (cn.Thinking, cn.RedactedThinking))]


def _blocks_in(raw: list[dict[str, Any]]) -> list[cn.Block]:
    return [cn.RedactedThinking(d["r"]) if "r" in d else cn.Thinking(d["t"], d.get("s"), d.get("e")) for d in raw]


def _slots_key(key: tuple[str, str]) -> str:
    return PREFIX + "slots:" + json.dumps(key)


def _cooldown_key(raw: Any) -> Key:
    p, a, model = raw
    if not all(isinstance(x, str) for x in raw):
        raise ValueError("a cooldown's key is three strings")
    return p, a, model


def cooling_of(value: Any) -> Cooling:
    """A cooldown another process wrote ([until, failures, reason]); ValueError for any other
    value: what Redis holds is input (a failure count of 10**10 made the next backoff 2 ** 10**10)."""
    from llmgate.request_path.pool import Cooling

    until, failures, reason = value
    if not (isinstance(until, (int, float)) and not isinstance(until, bool) and math.isfinite(until)
            and type(failures) is int and 0 <= failures <= MAX_FAILURES and isinstance(reason, str)):
        raise ValueError("not a cooldown")
    return Cooling(float(until), failures, reason[:MAX_REASON])


def _coolings(raw: dict[Any, Any]) -> dict[Key, Cooling]:
    """The cooldowns hash, each field that is not a cooldown left out (one bad field is no outage)."""
    out = {}
    for field, value in raw.items():
        try:
            out[_cooldown_key(json.loads(field))] = cooling_of(json.loads(value))
        except (ValueError, TypeError):
            log.debug("state: ignored a malformed cooldown in %s", COOLDOWNS)
    return out


class SharedReasoningMemory(ReasoningMemory):
    """The reasoning memory, told to the other processes as it learns."""

    def __init__(self, publish: Callable[[str, list[cn.Block]], None], size: int = 2000):
        super().__init__(size)
        self._publish = publish

    def remember(self, blocks: list[cn.Block]) -> None:
        super().remember(blocks)
        call = next((b for b in blocks if isinstance(b, cn.ToolCall)), None)
        kept = self._blocks.get(call.id) if call is not None else None
        if call is not None and kept:
            self._publish(call.id, kept)

    def learn(self, call_id: str, blocks: list[cn.Block]) -> None:
        self._blocks[call_id] = blocks
        self._blocks.move_to_end(call_id)
        while len(self._blocks) > self._size:
            self._blocks.popitem(last=False)


class RedisState:
    def __init__(self, local: LocalState, url: str, ticks: Callable[[], float] = time.monotonic,
                 lease: float = LEASE):
        self.local, self.url, self.path, self.ticks, self.lease = local, url, local.path, ticks, lease
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.up, self._outage, self._delay = False, False, BACKOFF[0]
        self._redis = aioredis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0,
                                              retry=Retry(NoBackoff(), 0))
        self._pool: PoolState | None = None
        self._mine: dict[tuple[str, str], int] = {}
        self._remote: dict[str, tuple[float, dict[tuple[str, str], int]]] = {}  # process -> (heard, counts)
        self._dirty: set[Key] = set()
        self._announce = False
        self._announced = -ANNOUNCE_EVERY  # ticks() of the last in-flight announcement
        self._announce_timer: asyncio.TimerHandle | None = None
        self._slots: dict[tuple[str, str], list[str]] = {}  # reserved slot ids per account
        self._freed: list[tuple[str, str]] = []  # (slot key, id) to give back
        self._renew = False
        self._seq = 0
        self._outbox: list[str] = []  # reasoning messages
        self._memory: SharedReasoningMemory | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._start()

    # --- lifecycle -----------------------------------------------------------------------------

    def _start(self) -> None:
        """Run the connection task, once a request or start-up gives us the event loop."""
        if self._task is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # opened from a worker thread (a config reload): the next request starts it
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._run())

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()
        else:
            self._start()

    def connected(self) -> bool | None:
        return self.up

    def stop_sharing(self) -> None:
        """Replaced by another backend: stop announcing (callable from any thread)."""
        if self._task is not None:
            self._task.get_loop().call_soon_threadsafe(self._task.cancel)

    def close(self) -> None:
        self.stop_sharing()
        self.local.close()

    async def _run(self) -> None:
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - whatever broke the session, requests go on without it
                if not self._outage:
                    self._outage = True
                    log.warning("state: Redis at %s unreachable (%s): serving with this process's state, "
                                "retrying", where(self.url), type(e).__name__)
            self.up = False
            await asyncio.sleep(self._delay)
            self._delay = min(self._delay * 2, BACKOFF[1])

    async def _session(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(CHANNEL)
            await self._catch_up()
            self.up, self._delay = True, BACKOFF[0]
            log.info("state: Redis at %s %s", where(self.url), "back: sharing state again" if self._outage
                     else "connected: sharing state")
            self._outage = False
            tasks = [asyncio.ensure_future(self._listen(pubsub)), asyncio.ensure_future(self._flush())]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    t.result()
            finally:
                for t in tasks:
                    t.cancel()
        finally:
            await pubsub.aclose()

    async def _catch_up(self) -> None:
        """After (re)connecting: our cooldown changes out, everyone's in, and a hello so the
        others announce their in-flight counts."""
        await self._send()
        raw = await self._redis.hgetall(COOLDOWNS)
        if self._pool is not None:
            self._merge(_coolings(raw))
        await self._redis.publish(CHANNEL, json.dumps({"k": "hello", "from": self.id}))

    def _merge(self, shared: dict[Key, Cooling]) -> None:
        """Redis's cooldowns and ours, the later of each; ours that Redis lacks (it restarted
        empty, or we learnt them while it was away) go out with the next send."""
        assert self._pool is not None
        mine = self._pool.cooldowns
        for key, c in shared.items():
            if key not in mine or c.until >= mine[key].until:
                mine[key] = c
        self._dirty |= {k for k, c in mine.items() if k not in shared or shared[k].until < c.until}
        if self._dirty:
            self._poke()

    # --- the two loops of a session ------------------------------------------------------------

    async def _listen(self, pubsub: Any) -> None:
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=HEARTBEAT)
            if msg is None:
                continue
            try:
                self._receive(json.loads(msg["data"]))
            except (ValueError, KeyError, TypeError, AttributeError):
                log.debug("state: ignored a malformed message on %s", CHANNEL)

    def _receive(self, m: dict[str, Any]) -> None:
        sender = m.get("from")
        if sender == self.id:
            return
        kind = m["k"]
        if kind == "c" and self._pool is not None:
            key = _cooldown_key(m["key"])
            if m["v"] is None:
                self._pool.cooldowns.pop(key, None)
            else:
                self._pool.cooldowns[key] = cooling_of(m["v"])
        elif kind == "i" and isinstance(sender, str):
            now = self.ticks()
            self._remote = {k: v for k, v in self._remote.items() if now - v[0] <= self.lease}  # the departed go
            self._remote[sender] = (now, {(p, a): int(n) for p, a, n in m["n"]})
        elif kind == "hello":
            self._announce = True
            self._poke()
        elif kind == "r" and self._memory is not None:
            self._memory.learn(m["id"], _blocks_in(m["b"]))

    async def _flush(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), min(HEARTBEAT, self.lease / 4))
            except TimeoutError:
                self._announce = self._renew = True  # the heartbeat: our leases go on
            self._wake.clear()
            await self._send()

    async def _send(self) -> None:
        """Everything that changed since the last send, in one pipeline."""
        dirty, self._dirty = self._dirty, set()
        outbox, self._outbox = self._outbox, []
        announce, self._announce = self._announce, False
        freed, self._freed = self._freed, []
        renew, self._renew = self._renew, False
        if not (dirty or outbox or announce or freed):
            return
        pipe = self._redis.pipeline(transaction=False)
        for slots, slot in freed:
            pipe.zrem(slots, slot)
        for account, ids in self._slots.items() if renew else ():
            if ids:
                pipe.eval(RENEW, 1, _slots_key(account), int(self.lease * 1000), *ids)
        for key in dirty:
            c = self._pool.cooldowns.get(key) if self._pool is not None else None
            value = [c.until, c.failures, c.reason] if c is not None else None
            field = json.dumps(key)
            if value is None:
                pipe.hdel(COOLDOWNS, field)
            else:
                pipe.hset(COOLDOWNS, field, json.dumps(value))
            pipe.publish(CHANNEL, json.dumps({"k": "c", "key": key, "v": value, "from": self.id}))
        if announce:
            self._announced = self.ticks()
            counts = [[p, a, n] for (p, a), n in self._mine.items() if n]
            pipe.publish(CHANNEL, json.dumps({"k": "i", "n": counts, "from": self.id}))
        for m in outbox:
            pipe.publish(CHANNEL, m)
        try:
            await pipe.execute()
        except BaseException:
            self._dirty |= dirty  # written on reconnect (the reasoning messages are not kept)
            self._freed += freed
            self._announce = True
            raise

    # --- pool.PoolState: local memory only ---------------------------------------------------

    def load(self) -> dict[Key, Cooling]:
        return self.local.load()

    def attach(self, pool: PoolState) -> None:
        self._pool = pool

    def refresh(self) -> None:
        self._start()  # the mirror is kept current by the connection task

    def save(self, key: Key, c: Cooling) -> None:
        self.local.save(key, c)
        self._dirty.add(key)
        self._poke()

    def delete(self, key: Key) -> None:
        self.local.delete(key)
        self._dirty.add(key)
        self._poke()

    def held(self, key: tuple[str, str], n: int) -> None:
        self._mine[key] = n
        if not n:
            del self._mine[key]
        ids = self._slots.get(key)
        while ids and len(ids) > n:  # a reserved slot given back (unreserved ones have no id)
            self._freed.append((_slots_key(key), ids.pop()))
            self._poke()
        self._announce = True
        self._announce_soon()

    def _announce_soon(self) -> None:
        """Poke the sender now, or when ANNOUNCE_EVERY has passed since the last announcement."""
        if self._announce_timer is not None:
            return
        wait = self._announced + ANNOUNCE_EVERY - self.ticks()
        if wait <= 0 or self._wake is None:
            self._poke()
            return
        self._announce_timer = asyncio.get_running_loop().call_later(wait, self._announce_due)

    def _announce_due(self) -> None:
        self._announce_timer = None
        if self._wake is not None:  # never restarts a backend stopped meanwhile
            self._wake.set()

    async def confirm(self, key: tuple[str, str], limit: int | None) -> bool:
        """Reserve the slot just taken against every process's: False if the account is at
        `limit` elsewhere. Without a limit, or with Redis away, the local check stands."""
        if limit is None or not self.up:
            return True
        self._seq += 1
        slot = f"{self.id}:{self._seq}"
        try:
            if not await self._redis.eval(RESERVE, 1, _slots_key(key), limit, int(self.lease * 1000), slot):
                return False
        except (RedisError, OSError):
            return True
        if self._mine.get(key, 0) > len(self._slots.get(key, ())):  # still held (not given back meanwhile)
            self._slots.setdefault(key, []).append(slot)
        else:
            self._freed.append((_slots_key(key), slot))
            self._poke()
        return True

    def others(self, provider: str, account: str | None) -> int:
        if not self.up or not self._remote:
            return 0
        now, total = self.ticks(), 0
        for heard, counts in list(self._remote.values()):
            if now - heard <= self.lease:
                total += sum(n for (p, a), n in counts.items() if p == provider and (account is None or a == account))
        return total

    def reasoning(self, memory: ReasoningMemory) -> ReasoningMemory:
        if self._memory is None:
            self._memory = SharedReasoningMemory(self._tell_reasoning, memory._size)
            self._memory._blocks.update(memory._blocks)
        return self._memory

    def _tell_reasoning(self, call_id: str, blocks: list[cn.Block]) -> None:
        m = json.dumps({"k": "r", "id": call_id, "b": _blocks_out(blocks), "from": self.id})
        if self.up and len(m) <= MAX_REASONING and len(self._outbox) < MAX_OUTBOX:
            self._outbox.append(m)
            self._poke()

    # --- locks with fencing, fenced values: Redis, else this host's file -----------------------

    async def acquire(self, name: str, ttl: float, wait: float = 0.0) -> Lease | None:
        if not self.up:
            return await self.local.acquire(name, ttl, wait)
        owner = f"{self.id}-{secrets.token_hex(8)}"
        deadline = self.ticks() + wait
        try:
            while True:
                fence = await self._redis.eval(LOCK, 2, PREFIX + "lock:" + name, PREFIX + "fence:" + name,
                                               owner, max(1, int(ttl * 1000)))
                if fence:
                    return Lease(name, owner, int(fence))
                if self.ticks() >= deadline:
                    return None
                await asyncio.sleep(0.05)
        except (RedisError, OSError):
            return await self.local.acquire(name, ttl, max(0.0, deadline - self.ticks()))

    async def release(self, lease: Lease) -> None:
        if not lease.owner.startswith(self.id):
            await self.local.release(lease)
            return
        try:
            await self._redis.eval(UNLOCK, 1, PREFIX + "lock:" + lease.name, lease.owner)
        except (RedisError, OSError):
            pass  # the lock lapses at its TTL

    async def put_fenced(self, name: str, value: bytes, fence: int) -> bool:
        if self.up:
            try:
                return bool(await self._redis.eval(PUT_FENCED, 1, PREFIX + "value:" + name, value, fence))
            except (RedisError, OSError):
                pass
        return await self.local.put_fenced(name, value, fence)

    async def get_fenced(self, name: str) -> tuple[bytes, int] | None:
        if self.up:
            try:
                value, fence = await self._redis.hmget(PREFIX + "value:" + name, "value", "fence")
                return (value, int(fence)) if isinstance(value, bytes) and fence is not None else None
            except (RedisError, OSError):
                pass
        return await self.local.get_fenced(name)
