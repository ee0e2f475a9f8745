"""The shared-state backends (llmgate/state): the SQLite file shared by processes of one host,
and Redis (a real redis-server on loopback, tests/services.py) shared by all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from converters import canonical as cn
from llmgate.request_path.pool import PoolState
from llmgate.state import open_state
from llmgate.state.local import LocalState
from llmgate.state.redis_backend import LEASE, RedisState


class Ticks:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def attached(state) -> PoolState:
    pool = PoolState(state)
    state.attach(pool)
    return pool


# --- the SQLite file ---------------------------------------------------------------------------

def test_processes_sharing_a_file_see_each_others_cooldowns(tmp_path):
    ticks = Ticks()
    a, b = (attached(LocalState(tmp_path / "s.sqlite", ticks=ticks)) for _ in range(2))
    a.cool("p", "acct", "", 60, "429: slow down")
    assert b.cooling("p", "acct", "m") is None  # looked less than a millisecond ago
    ticks.t += 0.002
    c = b.cooling("p", "acct", "m")
    assert c is not None and c.reason == "429: slow down" and c.failures == 1
    a.reset("p")
    ticks.t += 0.002
    assert b.cooling("p", "acct", "m") is None


def test_a_process_own_writes_cost_no_reread(tmp_path, monkeypatch):
    ticks = Ticks()
    state = LocalState(tmp_path / "s.sqlite", ticks=ticks)
    pool = attached(state)
    loads = []
    monkeypatch.setattr(state, "load", lambda: loads.append(1) or {})
    pool.cool("p", "", "m", 5, "500: boom")
    ticks.t += 1
    assert pool.cooling("p", "", "m") is not None and loads == []


def test_lock_lapses_at_its_ttl_and_fences_the_late_holder(tmp_path):
    clock = Ticks()
    a = LocalState(tmp_path / "s.sqlite", clock=clock)
    b = LocalState(tmp_path / "s.sqlite", clock=clock)

    async def run():
        first = await a.acquire("refresh:qwen", ttl=10)
        assert first is not None and await b.acquire("refresh:qwen", ttl=10) is None
        clock.t += 11  # the holder stalled past its lease
        second = await b.acquire("refresh:qwen", ttl=10)
        assert second is not None and second.fence > first.fence
        assert await b.put_fenced("token:qwen", b"new", second.fence)
        assert not await a.put_fenced("token:qwen", b"old", first.fence)  # the stale write is refused
        assert await a.get_fenced("token:qwen") == (b"new", second.fence)
        await a.release(first)  # not its lock any more: nothing happens
        assert await a.acquire("refresh:qwen", ttl=10) is None
        await b.release(second)
        assert await a.acquire("refresh:qwen", ttl=10) is not None

    asyncio.run(run())


def test_without_redis_in_flight_counts_are_per_process(tmp_path):
    state = open_state(str(tmp_path / "s.sqlite"), None)
    a, b = attached(state), attached(LocalState(tmp_path / "s.sqlite"))
    a.acquire("p", "")
    assert a.busy("p", "") == 1 and b.busy("p", "") == 0


# --- Redis ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def redis():
    from tests.services import redis_server

    with redis_server() as r:
        yield r


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Pub/sub delivery is asynchronous: wait (bounded) for the other process to hear."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.005)


def two(tmp_path, url: str, ticks: Callable[[], float] | None = None) -> tuple[RedisState, RedisState]:
    made = [RedisState(LocalState(tmp_path / f"{n}.sqlite"), url, ticks=ticks or time.monotonic) for n in "ab"]
    return made[0], made[1]


def test_redis_shares_cooldowns_in_flight_counts_and_reasoning(tmp_path, redis):
    async def run():
        sa, sb = two(tmp_path, redis.url)
        a, b = attached(sa), attached(sb)
        await until(lambda: sa.up and sb.up, "connected")
        a.cool("p", "acct", "", 30, "429: quota")
        await until(lambda: b.cooling("p", "acct", "m") is not None, "cooldown shared")
        a.success("p", "acct", "")  # not ended yet: stays
        a.reset("p", "acct")
        await until(lambda: b.cooling("p", "acct", "m") is None, "reset shared")

        key = a.acquire("p", "acct")
        await until(lambda: b.busy("p", "acct") == 1 and b.busy("p") == 1, "slot seen")
        assert not b.available("p", "acct", "m", limit=1) and b.available("p", "acct", "m", limit=2)
        a.release(key)
        await until(lambda: b.busy("p", "acct") == 0, "slot given back")

        ma, mb = sa.reasoning(cn_memory()), sb.reasoning(cn_memory())
        signed = cn.Thinking("deep", "sig-1")
        ma.remember([signed, cn.ToolCall("toolu_9", "f", "{}")])
        req = cn.Request("m", [cn.Message("assistant", [cn.Thinking("deep"), cn.ToolCall("toolu_9", "f", "{}")])])
        await until(lambda: "toolu_9" in mb._blocks, "reasoning shared")
        mb.restore(req)
        assert req.messages[0].content[0] == signed
        sa.close(), sb.close()

    asyncio.run(run())


def cn_memory():
    from llmgate.request_path.wire import ReasoningMemory

    return ReasoningMemory()


def test_a_silent_process_holds_no_slots_after_its_lease(tmp_path, redis):
    ticks = Ticks()

    async def run():
        sa, sb = two(tmp_path, redis.url, ticks)
        a, b = attached(sa), attached(sb)
        await until(lambda: sa.up and sb.up, "connected")
        a.acquire("p", "")
        await until(lambda: b.busy("p", "") == 1, "slot seen")
        sa.close()  # as if it crashed: no release, no more heartbeats
        ticks.t += LEASE + 1
        assert b.busy("p", "") == 0
        sb.close()

    asyncio.run(run())


def test_redis_lock_with_fencing(tmp_path, redis):
    async def run():
        sa, sb = two(tmp_path, redis.url)
        await until(lambda: sa.up and sb.up, "connected")
        first = await sa.acquire("refresh:x", ttl=0.2)
        assert first is not None and await sb.acquire("refresh:x", ttl=5) is None
        second = await sb.acquire("refresh:x", ttl=5, wait=3)  # the first lapses after 0.2 s
        assert second is not None and second.fence > first.fence
        assert await sb.put_fenced("token:x", b"new", second.fence)
        assert not await sa.put_fenced("token:x", b"old", first.fence)
        assert await sa.get_fenced("token:x") == (b"new", second.fence)
        await sa.release(first)
        assert await sa.acquire("refresh:x", ttl=5) is None  # still the second holder's
        await sb.release(second)
        assert await sa.acquire("refresh:x", ttl=5) is not None
        sa.close(), sb.close()

    asyncio.run(run())


def test_redis_restart_keeps_serving_and_catches_up(tmp_path, redis, caplog):
    async def run():
        sa, sb = two(tmp_path, redis.url)
        a, b = attached(sa), attached(sb)
        await until(lambda: sa.up and sb.up, "connected")
        a.cool("p", "early", "", 60, "429: before the restart")
        await until(lambda: b.cooling("p", "early", "m") is not None, "shared before")
        redis.stop()
        await until(lambda: not sa.up and not sb.up, "outage noticed")
        a.cool("p", "acct", "m", 60, "429: while Redis was away")  # kept locally, sent on return
        assert a.cooling("p", "acct", "m") is not None and b.cooling("p", "acct", "m") is None
        assert (await sa.acquire("lock", ttl=5)) is not None  # the file's lock meanwhile
        redis.start()
        await until(lambda: b.cooling("p", "acct", "m") is not None, "caught up after the restart")
        # Redis came back empty: the processes wrote back what they knew, a newcomer reads it
        sc = RedisState(LocalState(tmp_path / "c.sqlite"), redis.url)
        c = attached(sc)
        await until(lambda: c.cooling("p", "early", "m") is not None and c.cooling("p", "acct", "m") is not None,
                    "the newcomer reads both")
        sa.close(), sb.close(), sc.close()

    asyncio.run(run())
    assert caplog.text.count("unreachable") == 2  # once per process, not once per retry


def test_malformed_messages_on_the_channel_are_ignored(tmp_path, redis):
    import redis.asyncio as aioredis

    from llmgate.state.redis_backend import CHANNEL

    async def run():
        sa, sb = two(tmp_path, redis.url)
        a, b = attached(sa), attached(sb)
        await until(lambda: sa.up and sb.up, "connected")
        other = aioredis.Redis.from_url(redis.url)
        for junk in (b"not json", b'{"k": "c"}', b'{"k": "i", "n": [[1]], "from": "x"}', b"[]"):
            await other.publish(CHANNEL, junk)
        await other.aclose()
        a.cool("p", "acct", "m", 30, "429: after the junk")
        await until(lambda: b.cooling("p", "acct", "m") is not None, "still sharing")
        assert sa.up and sb.up
        sa.close(), sb.close()

    asyncio.run(run())


def test_shared_reasoning_memory_stays_bounded_and_tells_what_it_learns():
    from llmgate.state.redis_backend import SharedReasoningMemory, _blocks_in, _blocks_out

    told: list[tuple[str, list]] = []
    mem = SharedReasoningMemory(lambda call_id, blocks: told.append((call_id, blocks)), size=2)
    mem.remember([cn.Thinking("t", "sig"), cn.ToolCall("toolu_1", "f", "{}")])
    mem.remember([cn.Thinking("unsigned"), cn.ToolCall("toolu_2", "f", "{}")])  # nothing to keep
    assert [c for c, _ in told] == ["toolu_1"]
    blocks = [cn.Thinking("x", None, "enc"), cn.RedactedThinking("r")]
    assert _blocks_in(_blocks_out(blocks)) == blocks  # what goes over the channel comes back equal
    for i in range(3):
        mem.learn(f"toolu_o{i}", blocks)
    assert list(mem._blocks) == ["toolu_o1", "toolu_o2"]


def test_max_concurrency_is_reserved_atomically_across_processes(tmp_path, redis):
    async def confirmed(pool: PoolState, limit: int) -> bool:
        key = pool.acquire("p", "acct")
        if await pool.confirm(key, limit):
            return True
        pool.release(key)
        return False

    async def eventually(pool: PoolState, limit: int, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not await confirmed(pool, limit):
            assert loop.time() < deadline, f"never happened: {what}"
            await asyncio.sleep(0.01)

    async def run():
        sa, sb = (RedisState(LocalState(tmp_path / f"{n}.sqlite"), redis.url, lease=0.5) for n in "ab")
        a, b = attached(sa), attached(sb)
        await until(lambda: sa.up and sb.up, "connected")
        assert await confirmed(a, 1)
        assert not await confirmed(b, 1)  # at once: no announcement needed
        assert await confirmed(b, 2) and not await confirmed(a, 2)
        a.release(("p", "acct"))
        await eventually(a, 2, "a's slot given back and taken again")
        await asyncio.sleep(1.2)  # longer than the lease: the heartbeat renews what is held
        assert not await confirmed(b, 2)
        sa.close()  # as if it crashed: a's slot lapses with its lease
        await eventually(b, 2, "a crashed process's slot lapses")
        sb.close()

    asyncio.run(run())


def test_without_redis_the_local_limit_stands(tmp_path):
    async def run():
        state = RedisState(LocalState(tmp_path / "s.sqlite"), "redis://127.0.0.1:1/0")
        pool = attached(state)
        assert await pool.confirm(pool.acquire("p", ""), 1) and await LocalState(tmp_path / "t.sqlite").confirm(
            ("p", ""), 1)
        state.close()

    asyncio.run(run())


def test_in_flight_announcements_are_coalesced_but_arrive(tmp_path, redis):
    """A request start and end each changed the count: one pipeline and pub/sub echo per change
    cost ~0.7 ms of latency per request at one connection. At most one announcement goes out per
    ANNOUNCE_EVERY, and the last count always arrives; a cooldown is not held back."""
    import json

    import redis.asyncio as aioredis

    from llmgate.state.redis_backend import ANNOUNCE_EVERY, CHANNEL

    async def run():
        sa, sb = two(tmp_path, redis.url)
        a, b = attached(sa), attached(sb)
        await until(lambda: sa.up and sb.up, "connected")
        listener = aioredis.from_url(redis.url).pubsub()
        await listener.subscribe(CHANNEL)
        heard: list[dict] = []

        async def listen() -> None:
            async for m in listener.listen():
                if m["type"] == "message":
                    heard.append(json.loads(m["data"]))
        task = asyncio.create_task(listen())
        await asyncio.sleep(0.1)
        start = time.monotonic()
        for _ in range(200):  # requests starting and ending, one event-loop turn apart
            key = a.acquire("p", "acct")
            await asyncio.sleep(0)
            a.release(key)
            await asyncio.sleep(0.001)
        key = a.acquire("p", "acct")  # one left in flight
        took = time.monotonic() - start
        await until(lambda: b.busy("p", "acct") == 1, "the last count")
        a.cool("p", "acct", "", 30, "429: quota")
        await until(lambda: b.cooling("p", "acct", "m") is not None, "cooldown shared")
        cooled = time.monotonic()
        announced = [m for m in heard if m.get("k") == "i" and m.get("from") == sa.id]
        assert len(announced) <= took / ANNOUNCE_EVERY + 3, (len(announced), took)
        assert cooled - start - took < ANNOUNCE_EVERY + 1.0  # not queued behind the announcements
        a.release(key)
        task.cancel()
        await listener.aclose()
        sa.close(), sb.close()

    asyncio.run(run())
