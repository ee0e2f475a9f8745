"""The openai SDK through the gateway to strict local Anthropic and OpenAI-Responses upstreams."""

import json

import openai
import pytest

from tests.e2e.conftest import CLIENT_KEY, tool_calls_of
from tests.harness import Gateway, Upstream

ANTHROPIC_KEY = "sk-ant-test-key-0123456789"
RESPONSES_KEY = "sk-resp-test-key-0123456789"
HELLO = [{"role": "user", "content": "hello there"}]
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
        "additionalProperties": False}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {}, "additionalProperties": False}}},
]


@pytest.fixture(scope="module")
def anthropic_up():
    u = Upstream("anthropic_api", "--api-key", ANTHROPIC_KEY)
    yield u
    u.stop()


@pytest.fixture(scope="module")
def responses_up():
    u = Upstream("responses_api", "--api-key", RESPONSES_KEY)
    yield u
    u.stop()


@pytest.fixture(scope="module")
def client(anthropic_up, responses_up, tmp_path_factory):
    cfg = {
        "server": {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 5}},
        "providers": [
            {"id": "claude", "type": "anthropic", "base_url": anthropic_up.base, "api_key": ANTHROPIC_KEY},
            {"id": "resp", "type": "openai-responses", "base_url": responses_up.base + "/v1",
             "api_key": RESPONSES_KEY},
        ],
    }
    g = Gateway(cfg, tmp_path_factory.mktemp("conv") / "proxy.yaml")
    yield openai.OpenAI(base_url=g.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)
    g.stop()


MODELS = ["claude/claude-sonnet-4-5", "resp/gpt-4.1"]


@pytest.mark.parametrize("model", MODELS)
def test_text(client, model):
    r = client.chat.completions.create(model=model, messages=[{"role": "system", "content": "Be brief."}, *HELLO])
    assert r.choices[0].message.content == "Echo: hello there"
    assert r.model == model and r.choices[0].finish_reason == "stop" and r.usage.total_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_stream_with_usage(client, model):
    chunks = list(client.chat.completions.create(model=model, messages=HELLO, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hello there"
    assert {c.model for c in chunks} == {model} and chunks[-1].usage.total_tokens > 0


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_tool_round_trip(client, model, stream):
    msgs = [{"role": "user", "content": "weather and time?"}]
    r = client.chat.completions.create(model=model, messages=msgs, tools=TOOLS, stream=stream)
    tool_calls = tool_calls_of(r, stream)
    assert [json.loads(t["function"]["arguments"]) for t in tool_calls] == [
        {"tool": "get_weather", "n": 0}, {"tool": "get_time", "n": 1}]
    msgs += [{"role": "assistant", "content": None, "tool_calls": tool_calls}]
    msgs += [{"role": "tool", "tool_call_id": t["id"], "content": f"{t['function']['name']} ok"} for t in tool_calls]
    text = client.chat.completions.create(model=model, messages=msgs, tools=TOOLS).choices[0].message.content
    assert text.startswith("Tool results: ") and "get_weather ok" in text and "get_time ok" in text


@pytest.mark.parametrize("model", MODELS)
def test_upstream_429_keeps_retry_after(client, model):
    provider = model.split("/")[0]
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model=f"{provider}/fault-429", messages=HELLO)
    assert e.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize("model", ["claude/fault-stream-error", "resp/fault-failed"])
def test_error_inside_the_stream_reaches_the_client(client, model):
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model=model, messages=HELLO, stream=True))


def test_empty_200_from_responses_upstream_is_an_error(client):
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="resp/fault-empty", messages=HELLO)
    assert e.value.status_code == 502


def anthropic_requests(up):
    return [r for r in up.received() if r["path"] == "/v1/messages"]


@pytest.mark.parametrize("stream", [False, True])
def test_signed_thinking_survives_an_openai_client_tool_loop(client, anthropic_up, stream):
    """Anthropic refuses a thinking tool loop whose assistant turn lost its signed thinking;
    an OpenAI client cannot carry it, so the gateway keeps it and puts it back (pitfall 1)."""
    msgs = [{"role": "user", "content": "weather?"}]
    r = client.chat.completions.create(model="claude/claude-sonnet-4-5", messages=msgs, tools=TOOLS[:1],
                                       reasoning_effort="low", stream=stream)
    if stream:
        calls, reasoning = {}, ""
        for chunk in r:
            d = chunk.choices[0].delta if chunk.choices else None
            reasoning += (getattr(d, "reasoning_content", None) or "") if d else ""
            for tc in (d.tool_calls or ()) if d else ():
                c = calls.setdefault(tc.index, {"id": tc.id, "name": tc.function.name, "args": ""})
                c["args"] += tc.function.arguments or ""
        tool_calls = [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["args"]}}
                      for c in calls.values()]
    else:
        reasoning = r.choices[0].message.model_extra["reasoning_content"]
        tool_calls = [t.model_dump() for t in r.choices[0].message.tool_calls]
    assert reasoning.startswith("Thinking about")
    msgs += [{"role": "assistant", "content": None, "tool_calls": tool_calls},
             {"role": "tool", "tool_call_id": tool_calls[0]["id"], "content": "sunny"}]
    text = client.chat.completions.create(model="claude/claude-sonnet-4-5", messages=msgs, tools=TOOLS[:1],
                                          reasoning_effort="low").choices[0].message.content
    assert text == "Tool results: sunny"
    sent = anthropic_requests(anthropic_up)[-1]["body"]
    assert sent["thinking"]["type"] == "enabled"  # thinking stayed on for the tool loop
    first = sent["messages"][1]["content"][0]
    assert first["type"] == "thinking" and first["signature"]  # and the double checked the signature
