"""Account pools from the outside, for what needs real processes: several strict doubles serve
the same model, the gateway fails over before the first byte (429, 5xx, no connection, no answer
in time) for plain and streamed answers, never retries once a stream has begun, frees concurrency
slots when streams end, spreads requests round-robin, keeps cooldowns across restarts and lets the
operator end them, and /health shows a cooling member. Which member a request tries, backoffs,
probes, limits, fallbacks and the final errors are unit-tested with an injected clock
(tests/unit/test_failover_engine.py, test_pool_order.py).

Which double served what is read from each one's GET /__requests log; a double is made to fail
for a while with its POST /__fault override (tests/upstreams/openai_compat.py), or a pool member
names a scenario model of its own through an alias ("a/fault-500")."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import openai
import pytest

from tests.e2e.conftest import CLIENT_KEY, UPSTREAM_KEY, closed_port, reset_cooldowns
from tests.harness import Gateway, Upstream

GEMINI_KEY = "AIza-test-gemini-key-0123456789"
ADMIN_KEY = "adm-secret-0123"
HELLO = [{"role": "user", "content": "hello"}]
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
SERVER = {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 10}}


# ----------------------------------------------------------------- doubles and helpers


@pytest.fixture(scope="module")
def ups():
    started = []
    try:
        for _ in "abc":
            started.append(Upstream("openai_compat", "--api-key", UPSTREAM_KEY, "--models", "m,backup-model"))
        started.append(Upstream("gemini_api", "--api-key", GEMINI_KEY, "--models", "gemini-2.5-flash"))
        a, b, c, gem = started
        yield SimpleNamespace(a=a, b=b, c=c, gem=gem, all=started)
    finally:
        for u in started:
            u.stop()


def oa(pid: str, up: Upstream, models: list[str], **extra) -> dict:
    return {"id": pid, "type": "openai", "base_url": up.base + "/v1", "api_key": UPSTREAM_KEY, "models": models,
            **extra}


def gem_entry(up: Upstream) -> dict:
    return {"id": "gem", "type": "gemini", "base_url": up.base, "api_key": GEMINI_KEY,
            "models": ["gemini-2.5-flash"]}


def calls(up: Upstream) -> int:
    """Generation requests the double received (not its log or fault controls)."""
    return len(generations(up))


def generations(up: Upstream) -> list[dict]:
    return [r for r in up.received()
            if r["path"] == "/v1/chat/completions" or r["path"].rsplit(":", 1)[-1] in ("generateContent", "streamGenerateContent")]


def counts(u: SimpleNamespace) -> tuple[int, int, int]:
    return calls(u.a), calls(u.b), calls(u.c)


def arm(up: Upstream, scenario: str, **kw) -> None:
    httpx.post(up.base + "/__fault", json={"scenario": scenario, **kw}).raise_for_status()


def fresh(gw: Gateway, u: SimpleNamespace) -> None:
    """No cooldowns, no armed faults, empty logs: each test meets the pool as configured."""
    for pid in gw.provider_ids:
        reset_cooldowns(gw.base, pid)
    for up in u.all:
        if up is not u.gem:
            httpx.delete(up.base + "/__fault").raise_for_status()
        up.clear()


def start(cfg: dict, path) -> Gateway:
    g = Gateway(cfg, path)
    g.provider_ids = [p["id"] for p in cfg["providers"]]
    return g


def sdk(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def ask(client: openai.OpenAI, model: str, stream: bool = False, **kw) -> tuple[str, float]:
    """The answer text and the seconds until its first content arrived."""
    t0 = time.monotonic()
    if not stream:
        r = client.chat.completions.create(model=model, messages=HELLO, **kw)
        return r.choices[0].message.content, time.monotonic() - t0
    text, first = "", None
    for chunk in client.chat.completions.create(model=model, messages=HELLO, stream=True, **kw):
        if chunk.choices and chunk.choices[0].delta.content:
            first = first if first is not None else time.monotonic() - t0
            text += chunk.choices[0].delta.content
    return text, first


# ----------------------------------------------------------------- fill-first pools: failover and cooldowns


@pytest.fixture(scope="module")
def ff(ups, tmp_path_factory):
    """Fill-first: a pool's members in config order, so the failing one is always asked first."""
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    cfg = {
        "server": SERVER,
        "providers": [
            oa("a", ups.a, ["m"]),
            oa("b", ups.b, ["m"]),
            gem_entry(ups.gem),
            {"id": "dead", "type": "openai", "base_url": dead, "api_key": UPSTREAM_KEY, "models": ["gone"]},
            oa("slow", ups.a, [], timeouts={"connect": 3, "read": 1}),
            oa("lim", ups.a, [], max_concurrency=1),
        ],
        "routing": {
            "strategy": "fill-first",
            "aliases": {
                "cross": ["gem/fault-429", "a/m"],
                "gem503": ["gem/fault-503", "a/m"],
                "a502": ["a/fault-502-html", "b/m"],
                "deadfirst": ["dead/m", "b/m"],
                "hangfirst": ["slow/fault-hang", "b/m"],
                "cutfirst": ["a/fault-cut", "b/m"],
                "limsolo": ["lim/m"],
            },
        },
    }
    g = start(cfg, tmp_path_factory.mktemp("ff") / "proxy.yaml")
    yield g
    g.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_429_fails_over_and_the_member_cools(ff, ups, stream):
    fresh(ff, ups)
    client = sdk(ff)
    arm(ups.a, "fault-429", count=1, retry_after=60)  # a's next answer only
    text, first = ask(client, "m", stream)
    assert text == "Echo: hello"
    assert (calls(ups.a), calls(ups.b)) == (1, 1)
    if stream:
        assert first < 2, f"first token after {first:.2f} s"
    for _ in range(3):  # a is first in the pool, but cooling: b serves
        assert ask(client, "m", stream)[0] == "Echo: hello"
    assert (calls(ups.a), calls(ups.b)) == (1, 4)
    health = httpx.get(ff.base + "/health").json()["models"]["m"]
    assert (health["configured"], health["routable"]) == (2, 1), health
    assert [(c["provider"], c["model"]) for c in health["cooling"]] == [("a", "m")], health


def test_gemini_retry_info_in_cross_type_pool(ff, ups):
    fresh(ff, ups)
    client = sdk(ff)
    assert ask(client, "cross")[0] == "Echo: hello"  # gem/fault-429 (RetryInfo 7s) -> a
    assert [r["path"] for r in generations(ups.gem)] == ["/v1beta/models/fault-429:generateContent"]
    text, first = ask(client, "cross", stream=True)  # gem cooling for its RetryInfo: not asked
    assert text == "Echo: hello" and first < 2
    assert (calls(ups.gem), calls(ups.a)) == (1, 2)


@pytest.mark.parametrize("alias, first, second, stream", [("gem503", "gem", "a", False), ("a502", "a", "b", True)])
def test_5xx_fails_over_to_next_member(ff, ups, alias, first, second, stream):
    fresh(ff, ups)
    text, first_token = ask(sdk(ff), alias, stream)
    assert text == "Echo: hello" and first_token < 2
    assert calls(getattr(ups, first)) == 1 and calls(getattr(ups, second)) == 1


def test_unreachable_member_fails_over(ff, ups):
    fresh(ff, ups)
    text, first = ask(sdk(ff), "deadfirst", stream=True)
    assert text == "Echo: hello" and first < 2
    assert calls(ups.b) == 1


def test_hang_past_read_timeout_fails_over_in_bounded_time(ff, ups):
    fresh(ff, ups)
    t0 = time.monotonic()
    text, _ = ask(sdk(ff), "hangfirst", stream=True)
    took = time.monotonic() - t0
    assert text == "Echo: hello"
    assert 0.9 < took < 3, f"{took:.2f} s with timeouts.read 1"
    assert [r["body"]["model"] for r in generations(ups.a)] == ["fault-hang"] and calls(ups.b) == 1


def test_cut_mid_stream_is_an_error_event_not_a_retry(ff, ups):
    fresh(ff, ups)
    got = ""
    with pytest.raises(openai.APIError) as e:
        for chunk in sdk(ff).chat.completions.create(model="cutfirst", messages=HELLO, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                got += chunk.choices[0].delta.content
    assert got == "Echo: he"  # what the member sent before it died
    assert e.value.body["code"] == "upstream_disconnected" and "'a'" in e.value.message, e.value.body
    assert calls(ups.a) == 1 and calls(ups.b) == 0  # no silent retry after the first byte


def test_cut_before_first_byte_fails_over(ff, ups):
    fresh(ff, ups)
    assert ask(sdk(ff), "cutfirst")[0] == "Echo: hello"  # non-stream fault-cut aborts before any byte
    assert (calls(ups.a), calls(ups.b)) == (1, 1)


# ----------------------------------------------------------------- strategies and affinity


@pytest.fixture(scope="module")
def rr(ups, tmp_path_factory):
    cfg = {"server": SERVER, "providers": [oa("a", ups.a, ["m"]), oa("b", ups.b, ["m"]), oa("c", ups.c, ["m"])]}
    g = start(cfg, tmp_path_factory.mktemp("rr") / "proxy.yaml")
    yield g
    g.stop()


def blast(gw: Gateway, model: str, n: int, concurrency: int = 16) -> None:
    async def run() -> None:
        sem = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=gw.base, headers=AUTH, timeout=20,
                                     limits=httpx.Limits(max_connections=concurrency)) as http:
            async def one() -> None:
                async with sem:
                    r = await http.post("/v1/chat/completions", json={"model": model, "messages": HELLO})
                    assert r.status_code == 200, r.text

            await asyncio.gather(*(one() for _ in range(n)))

    asyncio.run(run())


def test_round_robin_is_fair(rr, ups):
    fresh(rr, ups)
    blast(rr, "m", 300)
    assert counts(ups) == (100, 100, 100), counts(ups)
    assert (Path(rr.config_path).parent / "llmgate-state.sqlite").exists()  # the default state file


# ----------------------------------------------------------------- state across restarts, admin


def test_cooldowns_survive_restart_and_admin_reset_ends_them(ups, tmp_path):
    state = tmp_path / "state" / "cooldowns.sqlite"
    cfg = {"server": {**SERVER, "state_file": str(state), "admin_keys": [ADMIN_KEY]},
           "providers": [oa("a", ups.a, ["m"]), oa("b", ups.b, ["m"])],
           "routing": {"strategy": "fill-first"}}
    path = tmp_path / "proxy.yaml"
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    g = start(cfg, path)
    try:
        for pid in ("a", "b"):
            httpx.post(g.base + "/admin/reset", json={"provider": pid}, headers=admin).raise_for_status()
        for up in ups.all:
            up.clear()
        arm(ups.a, "fault-429", count=1, retry_after=600)
        assert ask(sdk(g), "m")[0] == "Echo: hello"
        assert (calls(ups.a), calls(ups.b)) == (1, 1)
        g.stop()
        g = start(cfg, path)
        assert state.exists() and not (tmp_path / "llmgate-state.sqlite").exists()
        for _ in range(2):
            assert ask(sdk(g), "m")[0] == "Echo: hello"
        assert (calls(ups.a), calls(ups.b)) == (1, 3)  # a, first in the pool, still cooling
        url = g.base + "/admin/reset"
        for headers in ({}, AUTH, {"Authorization": "Bearer wrong"}):
            r = httpx.post(url, json={"provider": "a"}, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", r.text
        r = httpx.post(url, json={"provider": "nope"}, headers={"x-api-key": ADMIN_KEY})
        assert r.status_code == 404 and r.json()["error"]["param"] == "provider", r.text
        r = httpx.post(url, json={"provider": "a"}, headers=admin)
        assert r.status_code == 200 and r.json()["cooldowns_ended"] >= 1, r.text
        assert ask(sdk(g), "m")[0] == "Echo: hello"
        assert (calls(ups.a), calls(ups.b)) == (2, 3)
    finally:
        g.stop()


def test_concurrency_slot_freed_after_a_cut_stream(ff, ups):
    fresh(ff, ups)
    client = sdk(ff)
    arm(ups.a, "fault-cut", count=1)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="limsolo", messages=HELLO, stream=True):
            pass
    time.sleep(0.2)
    assert ask(client, "limsolo")[0] == "Echo: hello"  # lim's one slot is free again
    early = client.chat.completions.create(model="limsolo", messages=HELLO, stream=True)
    next(iter(early))
    early.close()  # the client leaves mid-stream
    time.sleep(0.3)
    assert ask(client, "limsolo")[0] == "Echo: hello"
    assert calls(ups.a) == 4
