"""Account pools from the outside: several strict doubles serve the same model, the gateway picks
members by strategy or session affinity, fails over before the first byte (429, 5xx, no
connection, no answer in time), keeps failed members cooling (Retry-After, RetryInfo, backoff)
across restarts, falls back to other models, and never retries once a stream has begun.

Which double served what is read from each one's GET /__requests log; a double is made to fail
for a while with its POST /__fault override (tests/upstreams/openai_compat.py), or a pool member
names a scenario model of its own through an alias ("a/fault-500")."""

from __future__ import annotations

import asyncio
import time
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


def post(gw: Gateway, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(gw.base + "/v1/chat/completions", json=body, headers={**AUTH, **(headers or {})}, timeout=20)


def assert_error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code, err
    return err["message"]


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
            oa("c", ups.c, ["backup-model"]),
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
                "a500": ["a/fault-500", "b/m"],
                "a502": ["a/fault-502-html", "b/m"],
                "deadfirst": ["dead/m", "b/m"],
                "deadfirst2": ["dead/other", "b/m"],
                "hangfirst": ["slow/fault-hang", "b/m"],
                "cutfirst": ["a/fault-cut", "b/m"],
                "all429": ["a/fault-429", "b/fault-429"],
                "solo": ["a/m"],
                "flaky": ["a/fault-500", "c/fault-500"],
                "limited": ["lim/m", "b/m"],
                "limsolo": ["lim/m"],
            },
            "models": {"flaky": {"fallbacks": ["backup-model"]}},
        },
    }
    g = start(cfg, tmp_path_factory.mktemp("ff") / "proxy.yaml")
    yield g
    g.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_429_fails_over_and_member_recovers_after_retry_after(ff, ups, stream):
    fresh(ff, ups)
    client = sdk(ff)
    arm(ups.a, "fault-429", count=1, retry_after=2)  # a's next answer only
    t0 = time.monotonic()
    text, first = ask(client, "m", stream)
    assert text == "Echo: hello"
    assert (calls(ups.a), calls(ups.b)) == (1, 1)
    if stream:
        assert first < 2, f"first token after {first:.2f} s"
    for _ in range(5):  # a is first in the pool, but cooling: b serves
        assert ask(client, "m", stream)[0] == "Echo: hello"
    assert time.monotonic() - t0 < 1.8, "too slow to show the cooldown"
    assert (calls(ups.a), calls(ups.b)) == (1, 6)
    time.sleep(max(0.0, t0 + 2.4 - time.monotonic()))  # Retry-After has passed: a is asked again, and answers
    assert ask(client, "m", stream)[0] == "Echo: hello"
    assert (calls(ups.a), calls(ups.b)) == (2, 6)


def test_gemini_retry_info_in_cross_type_pool(ff, ups):
    fresh(ff, ups)
    client = sdk(ff)
    assert ask(client, "cross")[0] == "Echo: hello"  # gem/fault-429 (RetryInfo 7s) -> a
    assert [r["path"] for r in generations(ups.gem)] == ["/v1beta/models/fault-429:generateContent"]
    assert calls(ups.a) == 1
    time.sleep(1.5)  # past a 1 s backoff: only the 7 s RetryInfo keeps gem out now
    text, first = ask(client, "cross", stream=True)
    assert text == "Echo: hello" and first < 2
    assert (calls(ups.gem), calls(ups.a)) == (1, 2)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("alias, first, second", [("gem503", "gem", "a"), ("a500", "a", "b"), ("a502", "a", "b")])
def test_5xx_fails_over_to_next_member(ff, ups, alias, first, second, stream):
    fresh(ff, ups)
    text, first_token = ask(sdk(ff), alias, stream)
    assert text == "Echo: hello" and first_token < 2
    assert calls(getattr(ups, first)) == 1 and calls(getattr(ups, second)) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_unreachable_member_fails_over(ff, ups, stream):
    fresh(ff, ups)
    text, first = ask(sdk(ff), "deadfirst", stream)
    assert text == "Echo: hello" and first < 2
    assert calls(ups.b) == 1


def test_unreachable_host_cools_the_whole_entry(ff, ups):
    fresh(ff, ups)
    before = sum("failed over: dead/" in line for line in ff.lines)
    assert ask(sdk(ff), "deadfirst")[0] == "Echo: hello"
    assert ask(sdk(ff), "deadfirst2")[0] == "Echo: hello"  # another model of the same entry
    assert ask(sdk(ff), "deadfirst")[0] == "Echo: hello"
    time.sleep(0.2)
    tried = [line for line in ff.lines if "failed over: dead/" in line][before:]
    assert len(tried) == 1 and "dead/m: 502" in tried[0], tried
    assert calls(ups.b) == 3


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_hang_past_read_timeout_fails_over_in_bounded_time(ff, ups, stream):
    fresh(ff, ups)
    t0 = time.monotonic()
    text, _ = ask(sdk(ff), "hangfirst", stream)
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


def test_exponential_backoff_then_probe(ff, ups):
    fresh(ff, ups)
    client = sdk(ff)
    ask(client, "a500")  # a fails: cools 1 s
    ask(client, "a500")
    assert (calls(ups.a), calls(ups.b)) == (1, 2)
    time.sleep(1.3)
    ask(client, "a500")  # the probe: a fails again, cools 2 s
    t1 = time.monotonic()
    assert (calls(ups.a), calls(ups.b)) == (2, 3)
    time.sleep(1.0)
    ask(client, "a500")
    assert (calls(ups.a), calls(ups.b)) == (2, 4), "a asked again before its 2 s backoff ended"
    time.sleep(max(0.0, t1 + 2.4 - time.monotonic()))
    ask(client, "a500")
    assert (calls(ups.a), calls(ups.b)) == (3, 5)


def test_last_resort_after_backoff_but_never_before_a_rate_limit_ends(ff, ups):
    fresh(ff, ups)
    client = sdk(ff)
    arm(ups.a, "fault-500", count=1)
    with pytest.raises(openai.InternalServerError) as e:  # a one-member pool: the member's own error
        ask(client, "solo")
    assert "The server had an error" in e.value.message
    assert ask(client, "solo")[0] == "Echo: hello"  # backing off, but nobody else can serve: tried anyway
    assert calls(ups.a) == 2

    arm(ups.a, "fault-429", count=1, retry_after=30)
    r = post(ff, {"model": "solo", "messages": HELLO})
    assert_error(r, 429, "rate_limit_exceeded")
    assert r.headers["retry-after"] == "30"
    for stream in (False, True):
        r = post(ff, {"model": "solo", "messages": HELLO, "stream": stream})
        message = assert_error(r, 429, "pool_exhausted")
        assert 28 <= int(r.headers["retry-after"]) <= 30 and "a/m" in message
    assert calls(ups.a) == 3  # the rate-limited member was not asked
    reset_cooldowns(ff.base, "a")  # the operator ends it early
    assert ask(client, "solo")[0] == "Echo: hello"
    assert calls(ups.a) == 4


def test_every_member_cooling_is_429_pool_exhausted(ff, ups):
    fresh(ff, ups)
    r = post(ff, {"model": "all429", "messages": HELLO})
    message = assert_error(r, 429, "pool_exhausted")
    assert r.headers["retry-after"] == "7"
    assert "a/fault-429" in message and "b/fault-429" in message, message
    assert (calls(ups.a), calls(ups.b)) == (1, 1)
    for stream in (False, True):
        r = post(ff, {"model": "all429", "messages": HELLO, "stream": stream})
        message = assert_error(r, 429, "pool_exhausted")
        assert 1 <= int(r.headers["retry-after"]) <= 7
        assert "a/fault-429" in message and "b/fault-429" in message and "cooling" in message, message
    assert (calls(ups.a), calls(ups.b)) == (1, 1)


def test_fallback_model_answers_when_the_pool_fails(ff, ups):
    fresh(ff, ups)
    client = sdk(ff)
    assert ask(client, "flaky")[0] == "Echo: hello"
    assert [r["body"]["model"] for r in generations(ups.c)] == ["fault-500", "backup-model"]
    assert calls(ups.a) == 1
    text, _ = ask(client, "flaky", stream=True)  # both members cooling: straight to the fallback
    assert text == "Echo: hello"
    assert [r["body"]["model"] for r in generations(ups.c)] == ["fault-500", "backup-model", "backup-model"]
    assert calls(ups.a) == 1


def test_max_concurrency_per_account(ff, ups):
    fresh(ff, ups)
    client = sdk(ff)
    arm(ups.a, "fault-slow-stream", count=1)
    long = [{"role": "user", "content": "x" * 20}]  # "Echo: " + 20 characters: 7 chunks, 0.3 s apart
    stream = client.chat.completions.create(model="limited", messages=long, stream=True)
    chunks = iter(stream)
    next(chunks)
    try:
        assert calls(ups.a) == 1
        assert ask(client, "limited")[0] == "Echo: hello"  # lim holds its one slot: b serves
        r = post(ff, {"model": "limsolo", "messages": HELLO})
        assert r.status_code in (429, 503) and r.json()["error"]["code"] == "pool_exhausted", r.text
        assert "concurrency" in r.json()["error"]["message"]
        assert (calls(ups.a), calls(ups.b)) == (1, 1)
    finally:
        rest = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert rest.endswith("x" * 20)
    time.sleep(0.2)  # the slot is free once the stream has been sent
    assert ask(client, "limited")[0] == "Echo: hello"
    assert (calls(ups.a), calls(ups.b)) == (2, 1)


# ----------------------------------------------------------------- attempt limits


@pytest.fixture(scope="module")
def limits(ups, tmp_path_factory):
    slow = {"connect": 3, "read": 1}
    cfg = {
        "server": SERVER,
        "providers": [oa(f"p{i}", ups.a, ["fault-500"]) for i in range(1, 5)]
        + [oa(f"h{i}", ups.a, ["fault-hang"], timeouts=slow) for i in range(1, 4)],
        "routing": {"strategy": "fill-first", "max_attempts": 2, "deadline": 0.5},
    }
    g = start(cfg, tmp_path_factory.mktemp("limits") / "proxy.yaml")
    yield g
    g.stop()


def test_max_attempts_bounds_upstream_attempts(limits, ups):
    fresh(limits, ups)
    r = post(limits, {"model": "fault-500", "messages": HELLO})
    message = assert_error(r, 500, "pool_exhausted")
    assert calls(ups.a) == 2
    assert "p1/fault-500: 500" in message and "p2/fault-500: 500" in message, message
    assert "p3/" not in message and "p4/" not in message


def test_deadline_bounds_attempts(limits, ups):
    fresh(limits, ups)
    t0 = time.monotonic()
    r = post(limits, {"model": "fault-hang", "messages": HELLO})
    assert_error(r, 504, "upstream_timeout")  # one attempt made: that member's own error
    assert time.monotonic() - t0 < 2.5
    assert calls(ups.a) == 1


# ----------------------------------------------------------------- strategies and affinity


@pytest.fixture(scope="module")
def rr(ups, tmp_path_factory):
    three = ["a/m", "b/m", "c/m"]
    cfg = {
        "server": SERVER,
        "providers": [oa("a", ups.a, ["m"], weight=3), oa("b", ups.b, ["m"]), oa("c", ups.c, ["m"])],
        "routing": {
            "aliases": {"heavy": ["a/m", "b/m"], "lb": three, "sticky": three, "pck": three},
            "models": {
                "heavy": {"strategy": "weighted"},
                "lb": {"strategy": "least-busy"},
                "sticky": {"affinity": "header:X-Session"},
                "pck": {"affinity": "prompt_cache_key"},
            },
        },
    }
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
    blast(rr, "m", 1000)
    assert sorted(counts(ups)) == [333, 333, 334], counts(ups)


def test_weighted(rr, ups):
    fresh(rr, ups)
    blast(rr, "heavy", 400)
    a, b, c = counts(ups)
    assert a + b == 400 and c == 0
    assert 260 <= a <= 340, (a, b)  # weights 3:1 -> 300 expected; sd ~ 8.7


def test_least_busy_prefers_idle_members(rr, ups):
    fresh(rr, ups)
    client = sdk(rr)
    arm(ups.a, "fault-slow-stream", count=1)
    chunks = iter(client.chat.completions.create(
        model="lb", messages=[{"role": "user", "content": "x" * 20}], stream=True))
    next(chunks)
    try:
        assert counts(ups) == (1, 0, 0)  # all idle: config order
        for _ in range(4):
            assert ask(client, "lb")[0] == "Echo: hello"
        assert calls(ups.a) == 1 and calls(ups.b) + calls(ups.c) == 4
    finally:
        for _ in chunks:
            pass
    time.sleep(0.2)
    ask(client, "lb")
    assert calls(ups.a) == 2  # idle again: first in config order


def served_by(u: SimpleNamespace, before: tuple[int, int, int]) -> str:
    after = counts(u)
    diff = [x - y for x, y in zip(after, before)]
    assert sum(diff) == 1, diff
    return "abc"[diff.index(1)]


def test_header_affinity(rr, ups):
    fresh(rr, ups)
    client = sdk(rr)

    def member(session: str) -> str:
        before = counts(ups)
        assert ask(client, "sticky", extra_headers={"X-Session": session})[0] == "Echo: hello"
        return served_by(ups, before)

    home = member("s1")
    assert {member("s1") for _ in range(9)} == {home}
    assert {member(f"session-{i}") for i in range(30)} == {"a", "b", "c"}  # different sessions spread
    # the home member rate-limited: the session moves to one other member, and comes back afterwards
    arm(getattr(ups, home), "fault-429", count=1, retry_after=1)
    before = counts(ups)
    assert ask(client, "sticky", extra_headers={"X-Session": "s1"})[0] == "Echo: hello"
    t0 = time.monotonic()
    moved = [x - y for x, y in zip(counts(ups), before)]
    assert sum(moved) == 2 and moved["abc".index(home)] == 1, moved  # home's 429, then another member
    away = next(m for i, m in enumerate("abc") if moved[i] and m != home)
    assert {member("s1") for _ in range(3)} == {away}
    time.sleep(max(0.0, t0 + 1.4 - time.monotonic()))
    assert member("s1") == home


def test_prompt_cache_key_affinity(rr, ups):
    fresh(rr, ups)
    client = sdk(rr)

    def member(key: str) -> str:
        before = counts(ups)
        ask(client, "pck", extra_body={"prompt_cache_key": key})
        return served_by(ups, before)

    assert len({member("conversation-1") for _ in range(8)}) == 1
    assert {member(f"conversation-{i}") for i in range(30)} == {"a", "b", "c"}


# ----------------------------------------------------------------- state across restarts, admin


def test_cooldowns_survive_restart_and_admin_reset_ends_them(ups, tmp_path):
    state = tmp_path / "state" / "cooldowns.sqlite"
    cfg = {"server": {**SERVER, "state_file": str(state)},
           "providers": [oa("a", ups.a, ["m"]), oa("b", ups.b, ["m"])],
           "routing": {"strategy": "fill-first"}}
    path = tmp_path / "proxy.yaml"
    g = start(cfg, path)
    try:
        fresh(g, ups)
        arm(ups.a, "fault-429", count=1, retry_after=6)
        assert ask(sdk(g), "m")[0] == "Echo: hello"
        t0 = time.monotonic()
        assert (calls(ups.a), calls(ups.b)) == (1, 1)
        g.stop()
        g = start(cfg, path)
        assert state.exists() and not (tmp_path / "llmgate-state.sqlite").exists()
        for _ in range(3):
            assert ask(sdk(g), "m")[0] == "Echo: hello"
        assert time.monotonic() - t0 < 5.5, "restart too slow to show the cooldown"
        assert (calls(ups.a), calls(ups.b)) == (1, 4)  # a, first in the pool, still cooling
        time.sleep(max(0.0, t0 + 6.4 - time.monotonic()))
        assert ask(sdk(g), "m")[0] == "Echo: hello"
        assert (calls(ups.a), calls(ups.b)) == (2, 4)

        arm(ups.a, "fault-429", count=1, retry_after=600)
        ask(sdk(g), "m")
        assert (calls(ups.a), calls(ups.b)) == (3, 5)
        g.stop()
        g = start(cfg, path)
        ask(sdk(g), "m")
        assert (calls(ups.a), calls(ups.b)) == (3, 6)
        r = httpx.post(g.base + "/admin/reset", json={"provider": "a"})
        assert r.status_code == 200 and r.json()["cooldowns_ended"] >= 1, r.text
        ask(sdk(g), "m")
        assert (calls(ups.a), calls(ups.b)) == (4, 6)
    finally:
        g.stop()


def test_admin_reset_needs_admin_key_when_configured(ups, tmp_path):
    cfg = {"server": {**SERVER, "admin_keys": [ADMIN_KEY]}, "providers": [oa("a", ups.a, ["m"])]}
    g = start(cfg, tmp_path / "proxy.yaml")
    try:
        assert (tmp_path / "llmgate-state.sqlite").exists()  # the default state file: beside proxy.yaml
        url = g.base + "/admin/reset"
        for headers in ({}, AUTH, {"Authorization": "Bearer wrong"}):
            r = httpx.post(url, json={"provider": "a"}, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", r.text
        r = httpx.post(url, json={"provider": "a"}, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 200 and r.json()["provider"] == "a", r.text
        r = httpx.post(url, json={"provider": "nope"}, headers={"x-api-key": ADMIN_KEY})
        assert r.status_code == 404 and r.json()["error"]["param"] == "provider", r.text
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
