"""The openai SDK through the gateway to a strict local Gemini API: converted both ways."""

import json

import openai
import pytest

from tests.e2e.conftest import CLIENT_KEY, tool_calls_of
from tests.harness import Gateway, Upstream

GEMINI_KEY = "AIza-test-gemini-key-0123456789"
IMG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
HELLO = [{"role": "user", "content": "hello there"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {  # JSON Schema as agents send it; Gemini rejects several of these keywords
        "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": False,
        "properties": {"city": {"type": "string", "examples": ["Paris"]},
                       "unit": {"$ref": "#/$defs/unit"},
                       "days": {"type": "integer", "exclusiveMinimum": 0}},
        "required": ["city"], "$defs": {"unit": {"type": "string", "enum": ["c", "f"]}}}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"tz": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}}}


@pytest.fixture(scope="module")
def gemini_upstream():
    u = Upstream("gemini_api", "--api-key", GEMINI_KEY, "--models", "gemini-2.5-flash,gemini-3-pro-preview")
    yield u
    u.stop()


@pytest.fixture(scope="module")
def gw(gemini_upstream, tmp_path_factory):
    cfg = {
        "server": {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 5}},
        "providers": [
            {"id": "gem", "type": "gemini", "base_url": gemini_upstream.base, "api_key": GEMINI_KEY},
            {"id": "gembad", "type": "gemini", "base_url": gemini_upstream.base, "api_key": "AIza-wrong-key-000",
             "models": ["bad-key-model"]},
        ],
        "routing": {"aliases": {"flash": "gem/gemini-2.5-flash"}},
    }
    g = Gateway(cfg, tmp_path_factory.mktemp("gem") / "proxy.yaml")
    yield g
    g.stop()


@pytest.fixture
def client(gw):
    return openai.OpenAI(base_url=gw.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def last_sent(upstream):
    return [r for r in upstream.received() if ":generateContent" in r["path"] or ":streamGenerate" in r["path"]][-1]


def test_text(client, gemini_upstream):
    r = client.chat.completions.create(model="flash", messages=[{"role": "system", "content": "Be brief."}, *HELLO])
    assert r.choices[0].message.content == "Echo: hello there" and r.model == "flash"
    assert r.choices[0].finish_reason == "stop" and r.usage.prompt_tokens > 0
    sent = last_sent(gemini_upstream)
    assert sent["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent["headers"]["x-goog-api-key"] == GEMINI_KEY and CLIENT_KEY not in json.dumps(sent)
    assert sent["body"]["systemInstruction"] == {"parts": [{"text": "Be brief."}]}


def test_stream_with_usage(client, gemini_upstream):
    chunks = list(client.chat.completions.create(
        model="gemini-2.5-flash", messages=HELLO, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hello there"
    assert {c.model for c in chunks} == {"gemini-2.5-flash"}
    assert chunks[-1].usage.total_tokens > 0
    assert last_sent(gemini_upstream)["query"] in ("alt=sse", {"alt": "sse"}) or "alt=sse" in json.dumps(
        last_sent(gemini_upstream))


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-3-pro-preview"])
@pytest.mark.parametrize("stream", [False, True])
def test_tool_round_trip_keeps_thought_signatures(client, model, stream):
    """Call tools, then send the results back: Gemini 3 rejects the second turn unless each
    functionCall comes back with its thoughtSignature (pitfall 1)."""
    msgs = [{"role": "user", "content": "weather and time?"}]
    r = client.chat.completions.create(model=model, messages=msgs, tools=[WEATHER, TIME], stream=stream)
    tool_calls = tool_calls_of(r, stream)
    assert [json.loads(t["function"]["arguments"]) for t in tool_calls] == [
        {"tool": "get_weather", "n": 0}, {"tool": "get_time", "n": 1}]
    msgs += [{"role": "assistant", "content": None, "tool_calls": tool_calls}]
    msgs += [{"role": "tool", "tool_call_id": t["id"], "content": f"{t['function']['name']} ok"} for t in tool_calls]
    r2 = client.chat.completions.create(model=model, messages=msgs, tools=[WEATHER, TIME])
    text = r2.choices[0].message.content
    assert text.startswith("Tool results: ") and "get_weather ok" in text and "get_time ok" in text


def test_image_as_data_url(client):
    r = client.chat.completions.create(model="flash", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{IMG}"}}]}])
    assert r.choices[0].message.content == "Echo: what is this [1 image(s)]"


def test_remote_image_url_is_a_clear_400(client, gemini_upstream):
    gemini_upstream.clear()
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="flash", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert "data:" in e.value.message
    assert gemini_upstream.received() == []


def test_json_schema_output(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
              "required": ["city", "temp"], "additionalProperties": False}
    r = client.chat.completions.create(model="flash", messages=HELLO, response_format={
        "type": "json_schema", "json_schema": {"name": "weather", "schema": schema, "strict": True}})
    data = json.loads(r.choices[0].message.content)
    assert set(data) == {"city", "temp"} and isinstance(data["temp"], (int, float))


def test_reasoning_comes_back_as_reasoning_content(client):
    r = client.chat.completions.create(model="flash", messages=HELLO, reasoning_effort="low")
    assert r.choices[0].message.content == "Echo: hello there"
    assert r.model_extra.get("reasoning_content") or r.choices[0].message.model_extra.get("reasoning_content")
    assert r.usage.completion_tokens_details.reasoning_tokens > 0


@pytest.mark.parametrize("model, finish", [("fault-max-tokens", "length"), ("fault-safety", "content_filter")])
def test_finish_reasons_are_not_normal_stops(client, model, finish):
    r = client.chat.completions.create(model=f"gem/{model}", messages=HELLO)
    assert r.choices[0].finish_reason == finish
    chunks = list(client.chat.completions.create(model=f"gem/{model}", messages=HELLO, stream=True))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == finish


def test_errors_in_openai_shape(client):
    with pytest.raises(openai.InternalServerError) as e:  # Gemini says 400 API_KEY_INVALID: the provider's key
        client.chat.completions.create(model="bad-key-model", messages=HELLO)
    assert e.value.status_code == 502 and e.value.body["code"] == "provider_auth_failed"
    assert "API key not valid" in e.value.message
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="gem/fault-429", messages=HELLO)
    assert e.value.response.headers["retry-after"] == "7"
    with pytest.raises(openai.APIError) as e:
        list(client.chat.completions.create(model="gem/fault-cut", messages=HELLO, stream=True))
    assert e.value.body["code"] == "upstream_disconnected"
