"""Streams that answer 200 and then fail at their first event fail over before anything reaches
the client: Anthropic's in-stream overloaded_error, a Gemini RESOURCE_EXHAUSTED error chunk. The
client gets the next member's stream; when every member fails that way it gets a plain error
response with the right status in its own API format; an error after content still ends the
stream with an error event, with no second attempt.

Strict doubles (tests/upstreams/anthropic_api.py fault-stream-overloaded, gemini_api.py
fault-stream-429) name the failing member's scenario through an alias. Which classification a
first event gets, per wire format, and the hold before it are unit-tested
(tests/unit/test_stream_start.py)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from mitmproxy import io

from tests.e2e.conftest import CLIENT_KEY, UPSTREAM_KEY
from tests.harness import Gateway, Upstream
from tests.upstreams import code_assist, serving

GEMINI_KEY = "AIza-test-gemini-key-0123456789"
ADMIN_KEY = "adm-secret-0123"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def claude():
    u = Upstream("anthropic_api", "--api-key", UPSTREAM_KEY)
    yield u
    u.stop()


@pytest.fixture(scope="module")
def gem():
    u = Upstream("gemini_api", "--api-key", GEMINI_KEY, "--models", "gemini-2.5-flash")
    yield u
    u.stop()


@pytest.fixture(scope="module")
def oai():
    u = Upstream("openai_compat", "--api-key", UPSTREAM_KEY, "--models", "m")
    yield u
    u.stop()


@pytest.fixture(scope="module")
def gcli(tmp_path_factory):
    """A Code Assist host and a Gemini CLI login on it: (host, credentials file)."""
    with serving.ServerThread(code_assist.make_app()) as host:
        creds = tmp_path_factory.mktemp("gcli") / "oauth_creds.json"
        creds.write_text(json.dumps(httpx.post(host + "/__seed", json={}).raise_for_status().json()))
        yield host, creds


def config(claude: Upstream, gem: Upstream, gcli: tuple[str, Path], oai: Upstream) -> dict:
    def ant(pid: str) -> dict:
        return {"id": pid, "type": "anthropic", "base_url": claude.base, "api_key": UPSTREAM_KEY,
                "models": ["claude-sonnet-4-5"]}

    def gemini(pid: str) -> dict:
        return {"id": pid, "type": "gemini", "base_url": gem.base, "api_key": GEMINI_KEY,
                "models": ["gemini-2.5-flash"]}

    cfg = {
        "server": {"api_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY], "timeouts": {"connect": 3, "read": 10}},
        "providers": [ant("c1"), ant("c2"), ant("c3"), gemini("g1"), gemini("g2"),
                      {"id": "gcli", "type": "gemini-cli", "base_url": gcli[0], "token_url": gcli[0] + "/token",
                       "credentials": str(gcli[1])},
                      {"id": "o1", "type": "openai", "base_url": oai.base + "/v1", "api_key": UPSTREAM_KEY,
                       "models": ["m"], "timeouts": {"connect": 3, "read": 1}},
                      {"id": "o2", "type": "openai", "base_url": oai.base + "/v1", "api_key": UPSTREAM_KEY,
                       "models": ["m"]}],
        "routing": {
            "strategy": "fill-first",  # the failing member is always asked first
            "aliases": {
                "claude-pool": ["c1/fault-stream-overloaded", "c2/claude-sonnet-4-5"],
                "claude-down": ["c1/fault-stream-overloaded", "c3/fault-stream-overloaded"],
                "claude-solo": ["c3/fault-stream-overloaded"],
                "claude-late": ["c2/fault-stream-error", "c3/claude-sonnet-4-5"],
                "gem-pool": ["g1/fault-stream-429", "g2/gemini-2.5-flash"],
                "ca-pool": ["gcli/gemini-2.5-flash", "g2/gemini-2.5-flash"],
                "or-pool": ["o1/fault-processing-error", "o2/m"],
                "or-slow": ["o1/fault-processing-slow", "o2/m"],
            },
        },
    }
    return cfg


@pytest.fixture(scope="module")
def gw(claude, gem, gcli, oai, tmp_path_factory):
    g = Gateway(config(claude, gem, gcli, oai), tmp_path_factory.mktemp("gw") / "proxy.yaml")
    yield g
    g.stop()


def fresh(gw: Gateway, *ups: Upstream) -> None:
    for pid in ("c1", "c2", "c3", "g1", "g2", "gcli", "o1", "o2"):
        httpx.post(gw.base + "/admin/reset", json={"provider": pid}, headers=admin()).raise_for_status()
    for u in ups:
        u.clear()


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


def models_asked(up: Upstream) -> list[str]:
    """The upstream models the double was asked to generate with, in order."""
    out = []
    for r in up.received():
        if r["path"] in ("/v1/messages", "/v1/chat/completions"):
            out.append(r["body"]["model"])
        elif ":streamGenerateContent" in r["path"] or ":generateContent" in r["path"]:
            out.append(r["path"].rsplit("/", 1)[-1].split(":")[0])
    return out


def seconds_until(iso: str) -> float:
    return (datetime.fromisoformat(iso) - datetime.now(UTC)).total_seconds()


def anthropic_sdk(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.base, api_key=CLIENT_KEY, max_retries=0, timeout=20)


def logged(gw: Gateway, model: str, since: float) -> dict:
    """The request log's row for the newest request of `model` since `since`."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = httpx.get(gw.base + "/admin/requests?limit=20", headers=admin()).json()["requests"]
        row = next((r for r in rows if r["model"] == model and r["ts"] >= since - 1), None)
        if row is not None:
            return row
        time.sleep(0.1)
    raise AssertionError(f"no request log row for {model}")


def test_anthropic_overloaded_first_event_fails_over_to_the_next_members_stream(gw, claude):
    fresh(gw, claude)
    t0 = time.time()
    with anthropic_sdk(gw).messages.stream(model="claude-pool", max_tokens=64, messages=HELLO) as s:
        events = [e.type for e in s]
        final = s.get_final_message()
    assert final.content[0].text == "Echo: hello" and final.stop_reason == "end_turn"
    assert final.model == "claude-pool"
    assert events[0] == "message_start" and "error" not in events
    assert models_asked(claude) == ["fault-stream-overloaded", "claude-sonnet-4-5"]
    row = logged(gw, "claude-pool", t0)
    assert (row["attempts"], row["status"], row["provider"]) == (2, 200, "c2"), row
    cooling = httpx.get(gw.base + "/health").json()["models"]["claude-pool"]["cooling"]
    assert [(c["provider"], c["model"]) for c in cooling] == [("c1", "fault-stream-overloaded")], cooling
    assert cooling[0]["reason"].startswith("529"), cooling


def test_openai_client_through_gemini_pool_resource_exhausted_chunk_cools_for_its_retry_delay(gw, gem):
    fresh(gw, gem)
    client = openai.OpenAI(base_url=gw.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)
    chunks = list(client.chat.completions.create(model="gem-pool", messages=HELLO, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: hello" and chunks[-1].model == "gem-pool"
    assert models_asked(gem) == ["fault-stream-429", "gemini-2.5-flash"]
    cooling = httpx.get(gw.base + "/health").json()["models"]["gem-pool"]["cooling"]
    assert [(c["provider"], c["model"]) for c in cooling] == [("g1", "fault-stream-429")], cooling
    left = seconds_until(cooling[0]["until"])
    assert 4 <= left <= 8, f"cooling {left} s; the chunk's RetryInfo said 7 s"
    # cooling: the next request goes straight to g2, and gets its stream
    list(client.chat.completions.create(model="gem-pool", messages=HELLO, stream=True))
    assert models_asked(gem) == ["fault-stream-429", "gemini-2.5-flash", "gemini-2.5-flash"]


def test_every_member_failing_in_stream_is_an_error_response_with_its_status(gw, claude):
    fresh(gw, claude)
    with pytest.raises(anthropic.APIStatusError) as e:
        with anthropic_sdk(gw).messages.stream(model="claude-down", max_tokens=64, messages=HELLO) as s:
            list(s)
    r = e.value.response
    assert r.status_code == 529 and r.headers["content-type"].startswith("application/json"), r.text
    body = r.json()
    assert body["type"] == "error" and "c1/fault-stream-overloaded" in body["error"]["message"], body
    assert "c3/fault-stream-overloaded" in body["error"]["message"], body
    assert models_asked(claude) == ["fault-stream-overloaded", "fault-stream-overloaded"]


def test_a_pool_of_one_answers_the_members_own_error(gw, claude):
    fresh(gw, claude)
    with pytest.raises(anthropic.APIStatusError) as e:
        with anthropic_sdk(gw).messages.stream(model="claude-solo", max_tokens=64, messages=HELLO) as s:
            list(s)
    assert e.value.status_code == 529
    assert e.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    # and an OpenAI client asking the same gets it in its own format, same status
    fresh(gw, claude)
    client = openai.OpenAI(base_url=gw.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)
    with pytest.raises(openai.APIStatusError) as oe:
        list(client.chat.completions.create(model="claude-solo", messages=HELLO, stream=True))
    assert oe.value.status_code == 529 and oe.value.body["message"] == "Overloaded", oe.value.body


def test_an_error_after_content_still_ends_the_stream_with_an_error_event(gw, claude):
    fresh(gw, claude)
    text = ""
    with pytest.raises(anthropic.APIStatusError) as e:
        with anthropic_sdk(gw).messages.stream(model="claude-late", max_tokens=64, messages=HELLO) as s:
            for ev in s:
                if ev.type == "content_block_delta":
                    text += ev.delta.text
    assert text and "Echo: hello".startswith(text)  # what the member sent before its error
    assert e.value.body["error"]["type"] == "overloaded_error", e.value.body
    assert models_asked(claude) == ["fault-stream-error"]  # no second attempt once content went out


def test_code_assist_quota_error_as_first_event_cools_the_account_and_fails_over(gw, gcli, gem):
    host, creds = gcli
    fresh(gw, gem)
    httpx.post(host + "/__scenario", json={"mode": "quota_stream", "times": 1}).raise_for_status()
    client = openai.OpenAI(base_url=gw.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)
    chunks = list(client.chat.completions.create(model="ca-pool", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hello"
    assert httpx.get(host + "/__state").json()["stream_calls"] >= 1
    assert models_asked(gem) == ["gemini-2.5-flash"]
    cooling = httpx.get(gw.base + "/health").json()["models"]["ca-pool"]["cooling"]
    assert [(c["provider"], c["account"]) for c in cooling] == [("gcli", str(creds))], cooling
    assert cooling[0]["reason"].startswith("quota exhausted"), cooling
    assert 10800 < seconds_until(cooling[0]["until"]) <= 10921  # the quotaResetDelay 3h2m1s


def test_the_failed_attempt_has_its_provider_flow(claude, gem, gcli, oai, tmp_path):
    """Saved flows (-w): the client's flow, the failed attempt's provider flow (200 and the error
    event it sent, marked failed over with 529 and its cooldown) and the attempt that served."""
    flows = tmp_path / "out.flows"
    g = Gateway(config(claude, gem, gcli, oai), tmp_path / "proxy.yaml", "-w", str(flows))
    try:
        with anthropic_sdk(g).messages.stream(model="claude-pool", max_tokens=64, messages=HELLO) as s:
            assert s.get_final_message().content[0].text == "Echo: hello"
    finally:
        g.stop()
    up = [f for f in io.FlowReader(flows.open("rb")).stream() if "llmgate.upstream_of" in f.metadata]
    assert [f.metadata["llmgate"]["provider"] for f in up] == ["c1", "c2"]
    failed, served = up
    assert failed.response.status_code == 200 and b"overloaded_error" in failed.response.content
    assert failed.metadata["llmgate"]["failed_over"]["status"] == 529
    assert failed.metadata["llmgate"]["failed_over"]["cooling_s"] is not None
    assert "failed_over" not in served.metadata["llmgate"] and b"message_stop" in served.response.content


def openai_sdk(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def test_keepalive_comments_then_an_error_chunk_fail_over(gw, oai):
    """OpenRouter's ": OPENROUTER PROCESSING" comments are no start; its error chunk after them is."""
    fresh(gw, oai)
    chunks = list(openai_sdk(gw).chat.completions.create(model="or-pool", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hello"
    assert models_asked(oai) == ["fault-processing-error", "m"]
    cooling = httpx.get(gw.base + "/health").json()["models"]["or-pool"]["cooling"]
    assert [(c["provider"], c["reason"][:4]) for c in cooling] == [("o1", "502:")], cooling


def test_keepalives_alone_are_not_held_past_the_read_timeout(gw, oai):
    """Comments for 1.5 s from a member whose timeouts.read is 1 s: after 1 s they go on to the
    client and the stream is served by that member, whole (no failover, no 504)."""
    fresh(gw, oai)
    body = {"model": "or-slow", "messages": HELLO, "stream": True}
    with httpx.stream("POST", gw.base + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=20) as r:
        assert r.status_code == 200
        raw = b"".join(r.iter_raw())
    assert raw.startswith(b": OPENROUTER PROCESSING\n\n"), raw[:200]
    assert raw.rstrip().endswith(b"data: [DONE]"), raw[-300:]
    chunks = [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Echo: hello"
    assert models_asked(oai) == ["fault-processing-slow"]


def test_kiro_quota_exception_as_first_frame_is_a_429_response(tmp_path):
    """Kiro's in-stream ServiceQuotaExceededException (an AWS exception frame, the only one) is the
    429 quota_exhausted the same answer with an HTTP status is: an error response, not a 200."""
    kiro = Upstream("kiro_api")
    try:
        creds = httpx.post(f"{kiro.base}/__seed", json={"auth": "social"}).json()
        creds.pop("_client", None)
        (tmp_path / "kiro-auth-token.json").write_text(json.dumps(creds))
        cfg = {"server": {"api_keys": [CLIENT_KEY]},
               "providers": [{"id": "kiro", "type": "kiro", "base_url": kiro.base,
                              "token_url": kiro.base + "/refreshToken",
                              "credentials": str(tmp_path / "kiro-auth-token.json")}]}
        g = Gateway(cfg, tmp_path / "proxy.yaml")
        try:
            httpx.post(f"{kiro.base}/__scenario", json={"mode": "quota_stream", "times": 1}).raise_for_status()
            with pytest.raises(openai.RateLimitError) as e:
                list(openai_sdk(g).chat.completions.create(model="claude-sonnet-4-5", messages=HELLO, stream=True))
            assert e.value.body["code"] == "quota_exhausted", e.value.body
            assert "MONTHLY_REQUEST_COUNT" in e.value.body["message"], e.value.body
        finally:
            g.stop()
    finally:
        kiro.stop()
