"""Several gateway processes behind the real HAProxy (tests/services.py), sharing state through
a real redis-server, or (no Redis) through one SQLite state file: what one process learns about
an account, the next request meets on another. HAProxy alternates requests between processes
(round-robin, a new connection per request) and names the one that answered in X-LB-Server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from tests.e2e.conftest import CLIENT_KEY, UPSTREAM_KEY, reset_cooldowns
from tests.harness import Gateway, Upstream
from tests.services import haproxy

ANTHROPIC_KEY = "sk-ant-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
HELLO = [{"role": "user", "content": "hello"}]
WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture(scope="module")
def ups():
    started = []
    try:
        for _ in "ab":
            started.append(Upstream("openai_compat", "--api-key", UPSTREAM_KEY, "--models", "m"))
        started.append(Upstream("anthropic_api", "--api-key", ANTHROPIC_KEY))
        yield SimpleNamespace(a=started[0], b=started[1], claude=started[2])
    finally:
        for u in started:
            u.stop()


def config(ups: SimpleNamespace, **server) -> dict:
    def oa(pid: str, up: Upstream, models: tuple[str, ...] = ("m",), **extra) -> dict:
        return {"id": pid, "type": "openai", "base_url": up.base + "/v1", "api_key": UPSTREAM_KEY,
                "models": list(models), **extra}

    return {
        "server": {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 10}, **server},
        "providers": [oa("a", ups.a), oa("b", ups.b), oa("lim", ups.a, ("fault-slow-stream",), max_concurrency=1),
                      {"id": "claude", "type": "anthropic", "base_url": ups.claude.base, "api_key": ANTHROPIC_KEY}],
        "routing": {"strategy": "fill-first", "affinity": "header:x-session",
                    "aliases": {"slow": ["lim/fault-slow-stream", "b/fault-slow-stream"]}},
    }


class Fleet:
    """n gateways behind HAProxy; `state_file(i)` says where each keeps its SQLite state."""

    def __init__(self, ups: SimpleNamespace, folder: Path, n: int, state_file, **server):
        self.gws: list[Gateway] = []
        for i in range(n):
            (folder / f"gw{i}").mkdir()
            cfg = config(ups, state_file=str(state_file(i)), **server)
            self.gws.append(Gateway(cfg, folder / f"gw{i}" / "proxy.yaml"))
        self._lb = haproxy([g.port for g in self.gws])
        self.lb = self._lb.__enter__()

    def post(self, path: str, body: dict, **headers: str) -> httpx.Response:
        return httpx.post(self.lb.base + path, json=body, headers={**AUTH, **headers}, timeout=30)

    def chat(self, model: str = "m", **headers: str) -> httpx.Response:
        r = self.post("/v1/chat/completions", {"model": model, "messages": HELLO}, **headers)
        assert r.status_code == 200, r.text
        return r

    def stop(self) -> None:
        self._lb.__exit__(None, None, None)
        for g in self.gws:
            g.stop()


@pytest.fixture(scope="module")
def fleet(ups, redis, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fleet")
    f = Fleet(ups, folder, 2, lambda i: folder / f"gw{i}" / "state.sqlite", state=redis.url)
    for g in f.gws:
        g.wait_for("state: Redis at .* connected")
    yield f
    f.stop()


@pytest.fixture
def clean(ups, fleet):
    for up in (ups.a, ups.b):
        httpx.delete(up.base + "/__fault").raise_for_status()
        up.clear()
    for g in fleet.gws:  # the operator's reset, shared too
        for pid in ("a", "b", "lim"):
            reset_cooldowns(g.base, pid)
        wait_idle(g, "lim")  # an earlier test's stream may still hold lim's one slot


def wait_idle(g: Gateway, provider: str, within: float = 15.0) -> None:
    """Until the process has no request in flight on `provider` (its /metrics gauge)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        lines = httpx.get(g.base + "/metrics", headers=AUTH).text.splitlines()
        busy = [ln for ln in lines if ln.startswith("llmgate_in_flight{") and f'provider="{provider}"' in ln
                and float(ln.rsplit(" ", 1)[1]) > 0]
        if not busy:
            return
        time.sleep(0.1)
    raise AssertionError(f"{provider} still has requests in flight on {g.base} after {within:g} s")


def generations(up: Upstream) -> int:
    return sum(r["path"] == "/v1/chat/completions" for r in up.received())


def arm_429(up: Upstream) -> None:
    httpx.post(up.base + "/__fault", json={"scenario": "fault-429", "count": 1, "retry_after": 30}).raise_for_status()


def cooled_for_all(fleet: Fleet, ups: SimpleNamespace) -> None:
    ups.a.clear(), ups.b.clear()
    arm_429(ups.a)  # a answers the next request with 429 (Retry-After: 30), then normally again
    servers = {fleet.chat().headers["x-lb-server"] for _ in range(4)}
    assert servers == {"gw0", "gw1"}  # both processes served
    # one 429 on one process: every later request, on either process, went to b
    assert (generations(ups.a), generations(ups.b)) == (1, 4)


def test_a_429_on_one_process_cools_the_account_for_all(fleet, ups, clean):
    cooled_for_all(fleet, ups)


def test_affinity_holds_across_processes(fleet, ups, clean):
    def served(session: str) -> tuple[set[str], tuple[int, int]]:
        ups.a.clear(), ups.b.clear()
        lbs = {fleet.chat(**{"x-session": session}).headers["x-lb-server"] for _ in range(6)}
        return lbs, (generations(ups.a), generations(ups.b))

    seen = {}
    for session in ("s1", "s2", "s3", "s4", "s5", "s6"):
        lbs, counts = served(session)
        assert lbs == {"gw0", "gw1"} and counts in ((6, 0), (0, 6)), (session, counts)
        seen[session] = counts
    assert len(set(seen.values())) == 2  # sessions spread over both members (rendezvous hashing)

    # s1's member answers one 429: the session moves to the other member on both processes
    home, other = (ups.a, ups.b) if seen["s1"] == (6, 0) else (ups.b, ups.a)
    arm_429(home)
    lbs, _ = served("s1")
    assert lbs == {"gw0", "gw1"} and (generations(home), generations(other)) == (1, 6)


def test_max_concurrency_holds_across_processes(fleet, ups, clean):
    async def run() -> tuple[str, str]:
        async with httpx.AsyncClient(base_url=fleet.lb.base, headers=AUTH, timeout=30) as first:
            body = {"model": "slow", "messages": HELLO, "stream": True}
            async with first.stream("POST", "/v1/chat/completions", json=body) as held:
                assert held.status_code == 200
                async for _ in held.aiter_bytes():  # lim's only slot is taken (on this process)
                    break
                async with httpx.AsyncClient(base_url=fleet.lb.base, headers=AUTH, timeout=30) as second:
                    r = await second.post("/v1/chat/completions", json={**body, "stream": False})
                    assert r.status_code == 200, r.text
                return held.headers["x-lb-server"], r.headers["x-lb-server"]

    one, other = asyncio.run(run())
    assert one != other  # the second request met another process
    assert (generations(ups.a), generations(ups.b)) == (1, 1)  # which knew lim was at its limit


def test_max_concurrency_holds_for_simultaneous_requests(fleet, ups, clean):
    """Requests arriving together on both processes: the slot is reserved atomically (Redis),
    not only checked against the other process's announced counts."""
    async def run() -> list[int]:
        async with httpx.AsyncClient(base_url=fleet.lb.base, headers=AUTH, timeout=30,
                                     limits=httpx.Limits(max_keepalive_connections=0)) as http:
            body = {"model": "slow", "messages": HELLO, "stream": True}
            rs = await asyncio.gather(*(http.post("/v1/chat/completions", json=body) for _ in range(8)))
        return [r.status_code for r in rs]

    assert asyncio.run(run()) == [200] * 8
    assert (generations(ups.a), generations(ups.b)) == (1, 7)


def test_thinking_tool_loop_continues_on_another_process(fleet, ups, clean):
    """Anthropic refuses a thinking tool loop whose assistant turn lost its signed thinking; an
    OpenAI chat client cannot carry it, so the process that saw it must share it."""
    msgs = [{"role": "user", "content": "weather?"}]
    body = {"model": "claude/claude-sonnet-4-5", "tools": WEATHER, "reasoning_effort": "low"}
    r1 = fleet.post("/v1/chat/completions", {**body, "messages": msgs})
    assert r1.status_code == 200, r1.text
    calls = r1.json()["choices"][0]["message"]["tool_calls"]
    msgs += [{"role": "assistant", "content": None, "tool_calls": calls},
             {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"}]
    r2 = fleet.post("/v1/chat/completions", {**body, "messages": msgs})
    assert r2.status_code == 200, r2.text
    assert r1.headers["x-lb-server"] != r2.headers["x-lb-server"]
    assert r2.json()["choices"][0]["message"]["content"] == "Tool results: sunny"
    sent = [r for r in ups.claude.received() if r["path"] == "/v1/messages"][-1]["body"]
    assert sent["thinking"]["type"] == "enabled"
    first = sent["messages"][1]["content"][0]
    assert first["type"] == "thinking" and first["signature"]  # restored; the double checked it


def test_a_redis_restart_during_traffic_causes_no_5xx(fleet, ups, redis, clean):
    async def run() -> tuple[list[int], int]:
        statuses: list[int] = []
        async with httpx.AsyncClient(base_url=fleet.lb.base, headers=AUTH, timeout=30,
                                     limits=httpx.Limits(max_keepalive_connections=0)) as http:
            async def one() -> None:
                r = await http.post("/v1/chat/completions", json={"model": "m", "messages": HELLO})
                statuses.append(r.status_code)

            async def traffic(until: asyncio.Event) -> None:
                while not until.is_set():
                    await asyncio.gather(*(one() for _ in range(4)))

            done = asyncio.Event()
            running = asyncio.create_task(traffic(done))
            await asyncio.to_thread(redis.stop)
            before = len(statuses)
            await asyncio.to_thread(shared_state_up, fleet, 0.0)  # traffic goes on while Redis is away
            during = len(statuses) - before
            await asyncio.to_thread(redis.start)
            await asyncio.sleep(0.5)
            done.set()
            await running
        return statuses, during

    statuses, during = asyncio.run(run())
    assert during > 0 and statuses == [200] * len(statuses), sorted(set(statuses))
    for g in fleet.gws:
        g.wait_for("state: Redis at .* back: sharing state again")
        assert sum("unreachable" in line for line in g.lines) == 1  # logged once, not per retry
    shared_state_up(fleet, 1.0)
    cooled_for_all(fleet, ups)  # and sharing works again


def shared_state_up(fleet: Fleet, value: float) -> None:
    """Wait (bounded) until every process's /metrics says llmgate_shared_state_up is value."""
    deadline = time.monotonic() + 20
    for g in fleet.gws:
        while f"llmgate_shared_state_up {value}" not in httpx.get(g.base + "/metrics").text:
            assert time.monotonic() < deadline, f"{g.base}: llmgate_shared_state_up never {value}"
            time.sleep(0.05)


def test_without_redis_processes_sharing_a_state_file_see_each_others_cooldowns(ups, tmp_path):
    for up in (ups.a, ups.b):
        up.clear()
    f = Fleet(ups, tmp_path, 2, lambda i: tmp_path / "shared-state.sqlite")
    try:
        cooled_for_all(f, ups)
    finally:
        f.stop()


def test_each_process_keeps_its_own_state_file_apart(ups, tmp_path):
    """The control: with a state file each and no Redis, the other process does not know."""
    for up in (ups.a, ups.b):
        up.clear()
    f = Fleet(ups, tmp_path, 2, lambda i: tmp_path / f"state-{i}.sqlite")
    try:
        arm_429(ups.a)
        for _ in range(4):
            f.chat()
        assert generations(ups.a) == 3  # the 429, then both requests of the process that never heard
    finally:
        f.stop()

