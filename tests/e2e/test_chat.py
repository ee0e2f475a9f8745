"""The openai SDK through a real mitmdump + gateway process to a strict local upstream."""

import json
import time
from datetime import datetime

import openai
import pytest

from tests.e2e.conftest import CLIENT_KEY, UPSTREAM_KEY, reset_cooldowns

HELLO = [{"role": "user", "content": "hello there"}]
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]


def last_upstream_request(upstream):
    reqs = [r for r in upstream.received() if r["path"] == "/v1/chat/completions"]
    assert reqs, "nothing reached the upstream"
    return reqs[-1]


def test_non_stream(client, upstream):
    r = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert r.choices[0].message.content == "Echo: hello there"
    assert r.model == "gpt-4o-mini"  # the upstream said gpt-4o-mini-2024-08-06
    assert r.usage.completion_tokens == 3 and r.usage.prompt_tokens > 0
    sent = last_upstream_request(upstream)
    assert sent["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert CLIENT_KEY not in json.dumps(sent)  # the client's key never goes upstream
    assert sent["body"] == {"model": "gpt-4o-mini", "messages": HELLO}


@pytest.mark.parametrize(
    "model, kwargs, upstream_model, title",
    [
        ("coder", {}, "qwen3-coder-30b", None),  # alias
        ("mini", {}, "gpt-4o-mini", None),  # alias to a plain name
        ("fixed/gpt-4o-mini", {}, "gpt-4o-mini", "e2e"),  # provider prefix
        ("gpt-4o-mini", {"extra_headers": {"Model-Provider": "fixed"}}, "gpt-4o-mini", "e2e"),
        ("fixed-only", {}, None, "e2e"),  # only `fixed` lists it (the upstream does not know it)
    ],
)
def test_routing(client, upstream, model, kwargs, upstream_model, title):
    try:
        r = client.chat.completions.create(model=model, messages=HELLO, **kwargs)
        assert r.model == model
    except openai.NotFoundError as e:  # the strict upstream does not serve `fixed-only`
        assert upstream_model is None and "fixed-only" in e.message
    sent = last_upstream_request(upstream)
    assert sent["body"]["model"] == (upstream_model or model)
    assert sent["headers"].get("x-title") == title


def test_forced_provider_route(gateway, upstream):
    c = openai.OpenAI(base_url=gateway.base + "/fixed/v1", api_key=CLIENT_KEY, max_retries=0)
    r = c.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert r.model == "gpt-4o-mini"
    assert last_upstream_request(upstream)["headers"].get("x-title") == "e2e"
    assert sorted(m.id for m in c.models.list()) == ["fixed-only", "gpt-4o-mini"]


def test_stream_with_usage(client):
    stream = client.chat.completions.create(
        model="coder", messages=HELLO, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert {c.model for c in chunks} == {"coder"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: hello there"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3


def test_stream_parallel_tool_calls(client):
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "weather and time?"}], tools=TOOLS, stream=True)
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        for tc in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
            c = calls.setdefault(tc.index, {"id": None, "name": "", "args": ""})
            c["id"] = tc.id or c["id"]
            c["name"] += tc.function.name or "" if tc.function else ""
            c["args"] += tc.function.arguments or "" if tc.function else ""
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert finish == "tool_calls"
    assert [(c["id"], c["name"], json.loads(c["args"])) for c in calls.values()] == [
        ("call_0_get_weather", "get_weather", {"tool": "get_weather", "n": 0}),
        ("call_1_get_time", "get_time", {"tool": "get_time", "n": 1}),
    ]


def test_tool_result_turn(client):
    r = client.chat.completions.create(model="gpt-4o-mini", tools=TOOLS, messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_0_get_weather", "type": "function",
             "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_0_get_weather", "content": "sunny"},
    ])
    assert r.choices[0].message.content == "Tool results: sunny"


def test_stream_is_not_buffered(client):
    """Chunks arrive as the upstream sends them (0.3 s apart), not all at the end."""
    arrivals = []
    start = time.monotonic()
    for chunk in client.chat.completions.create(model="fault-slow-stream", messages=HELLO, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - start)
    assert len(arrivals) >= 4
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert min(gaps) > 0.15, gaps  # each chunk came on its own


def test_sse_split_at_arbitrary_bytes_with_crlf_and_comments(client):
    chunks = list(client.chat.completions.create(model="sse-torture", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hello there"
    assert {c.model for c in chunks} == {"sse-torture"}


@pytest.mark.parametrize("model, code", [("fault-cut", "upstream_disconnected"), ("fault-no-finish", "stream_truncated")])
def test_truncated_stream_ends_with_error(client, model, code):
    got = []
    with pytest.raises(openai.APIError) as e:
        for chunk in client.chat.completions.create(model=model, messages=HELLO, stream=True):
            got.append(chunk)
    assert e.value.body["code"] == code
    assert got, "the part that did arrive was passed on"


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert len(ids) == len(set(ids))
    for expected in ("gpt-4o-mini", "qwen3-coder-30b", "fixed-only", "coder", "mini", "dead-model"):
        assert expected in ids


def test_health(gateway):
    import httpx

    r = httpx.get(gateway.base + "/health")  # no key needed
    assert r.status_code == 200
    body = r.json()
    states = {p["id"]: p["state"] for p in body["providers"]}
    assert states["up"] == "ok" and states["fixed"] == "ok"
    assert body["status"] == "ok"
    # gpt-4o-mini is served by two entries (one discovers it, one lists it)
    assert body["models"]["gpt-4o-mini"] == {"configured": 2, "routable": 2, "cooling": []}


def test_health_shows_cooling_members_and_when_they_return(gateway, client):
    import httpx

    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="fault-429", messages=[{"role": "user", "content": "hi"}])
    try:
        pool = httpx.get(gateway.base + "/health").json()["models"]["fault-429"]
        assert pool["configured"] == 1 and pool["routable"] == 0
        (c,) = pool["cooling"]
        assert c["provider"] == "up" and c["model"] == "fault-429" and c["reason"].startswith("429")
        returns = datetime.fromisoformat(c["until"]).timestamp() - time.time()
        assert 4 < returns <= 7.5  # the upstream's Retry-After: 7
    finally:
        reset_cooldowns(gateway.base, "up")
    assert httpx.get(gateway.base + "/health").json()["models"]["fault-429"]["routable"] == 1


def test_many_concurrent_streams(gateway):
    """50 streams at once through one gateway: each gets its own, complete answer."""
    import asyncio

    async def one(c, i):
        text, model = "", set()
        async for chunk in await c.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"number {i}"}], stream=True):
            model.add(chunk.model)
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
        return text, model

    async def main():
        async with openai.AsyncOpenAI(base_url=gateway.base + "/v1", api_key=CLIENT_KEY, max_retries=0) as c:
            return await asyncio.gather(*(one(c, i) for i in range(50)))

    results = asyncio.run(main())
    assert [r[0] for r in results] == [f"Echo: number {i}" for i in range(50)]
    assert all(r[1] == {"gpt-4o-mini"} for r in results)
