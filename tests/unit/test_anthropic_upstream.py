"""Tests for the Anthropic Messages API test double (tests/upstreams/anthropic_api.py)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.upstreams.anthropic_api import REDACTED_TRIGGER, SCENARIO_MODELS, make_app
from tests.upstreams.serving import ServerThread

KEY = "sk-ant-test-0123456789"
MODELS = ["claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"]
MODEL = "claude-haiku-4-5"  # the SDK warns that claude-sonnet-4-5 is deprecated
USER = {"role": "user", "content": "hello world"}
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
REPO = Path(__file__).resolve().parents[2]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n0000").decode()
THINKING = {"type": "enabled", "budget_tokens": 1024}
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TIME = {"name": "get_time", "input_schema": {"type": "object"}}
TOOL_ID = re.compile(r"^toolu_[A-Za-z0-9]{24}$")
THINKING_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"


@pytest.fixture(scope="module")
def base_url():
    with ServerThread(make_app(KEY, MODELS)) as url:
        yield url


@pytest.fixture(scope="module")
def http(base_url):
    with httpx.Client(base_url=base_url, headers=HEADERS, timeout=5) as client:
        yield client


@pytest.fixture(scope="module")
def raw(base_url):
    """No credentials, no anthropic-version."""
    with httpx.Client(base_url=base_url, timeout=5) as client:
        yield client


@pytest.fixture(scope="module")
def sdk(base_url):
    with anthropic.Anthropic(base_url=base_url, api_key=KEY, max_retries=0, timeout=5) as client:
        yield client


def create(http: httpx.Client, path: str = "/v1/messages", **body) -> httpx.Response:
    body.setdefault("model", MODEL)
    body.setdefault("max_tokens", 100)
    body.setdefault("messages", [USER])
    return http.post(path, json=body)


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"type", "error"} and payload["type"] == "error"
    assert set(payload["error"]) == {"type", "message"}
    return payload["error"]


def invalid_message(response: httpx.Response) -> str:
    error = error_of(response, 400)
    assert error["type"] == "invalid_request_error"
    return error["message"]


def sse_events(text: str) -> list[tuple[str, dict]]:
    """(event name, data) pairs; every event must be exactly "event: ..\\ndata: ..\\n\\n"."""
    assert text.endswith("\n\n")
    events = []
    for block in text[:-2].split("\n\n"):
        name_line, data_line = block.split("\n")
        name, data = name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        events.append((name, data))
    return events


def issued_turn(http: httpx.Client, **extra) -> dict:
    """A thinking + tool_use answer, as JSON."""
    response = create(http, max_tokens=2000, thinking=THINKING, tools=[WEATHER], **extra)
    assert response.status_code == 200, response.text
    return response.json()


def follow_up(first: dict, assistant_content: list) -> list[dict]:
    result = {"type": "tool_result", "tool_use_id": first["content"][-1]["id"], "content": "sunny"}
    return [USER, {"role": "assistant", "content": assistant_content},
            {"role": "user", "content": [result]}]


# ----------------------------------------------------------------- SDK


def test_sdk_create_echoes_last_user_text(sdk):
    response = sdk.messages.create(
        model=MODEL, max_tokens=100, system="be brief",
        messages=[{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"}, USER],
    )
    assert [(b.type, b.text) for b in response.content] == [("text", "Echo: hello world")]
    assert re.fullmatch(r"msg_01[A-Za-z0-9]{22}", response.id)
    assert (response.model, response.role, response.type) == (MODEL, "assistant", "message")
    assert (response.stop_reason, response.stop_sequence) == ("end_turn", None)
    # "be brief" + "first" + "ok" + "hello world" = 26 characters -> 26 // 4 + 1
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens) == (7, 3)
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (0, 0)
    assert response._request_id.startswith("req_")


def test_sdk_stream_accumulates_final_message(sdk):
    with sdk.messages.stream(model=MODEL, max_tokens=100, messages=[USER]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert pieces == ["Echo", ": he", "llo ", "worl", "d"]
    assert [(b.type, b.text) for b in final.content] == [("text", "Echo: hello world")]
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == ("end_turn", 3, 3)


def test_sdk_tool_use_round_trip_with_thinking(sdk):
    first = sdk.messages.create(
        model=MODEL, max_tokens=2000, thinking=THINKING, tools=[WEATHER, TIME],
        messages=[{"role": "user", "content": "weather and time?"}],
    )
    thinking, *calls = first.content
    assert (thinking.type, thinking.thinking) == ("thinking", "Thinking about: weather and time?")
    base64.b64decode(thinking.signature, validate=True)
    assert [(c.type, c.name, c.input) for c in calls] == [
        ("tool_use", "get_weather", {"tool": "get_weather", "n": 0}),
        ("tool_use", "get_time", {"tool": "get_time", "n": 1}),
    ]
    assert all(TOOL_ID.match(c.id) for c in calls)
    assert first.stop_reason == "tool_use"

    def answer(assistant_content):
        results = [
            {"type": "tool_result", "tool_use_id": calls[0].id, "content": "sunny"},
            {"type": "tool_result", "tool_use_id": calls[1].id, "content": [{"type": "text", "text": "noon"}]},
        ]
        return sdk.messages.create(
            model=MODEL, max_tokens=2000, thinking=THINKING, tools=[WEATHER, TIME],
            messages=[{"role": "user", "content": "weather and time?"},
                      {"role": "assistant", "content": assistant_content},
                      {"role": "user", "content": results}],
        )

    final = answer(first.content)  # the SDK's own blocks, sent back as they came
    assert final.content[-1].text == "Tool results: sunny; noon"
    assert final.stop_reason == "end_turn"

    altered = {"type": "thinking", "thinking": thinking.thinking, "signature": "A" + thinking.signature[1:]}
    with pytest.raises(anthropic.BadRequestError) as caught:
        answer([altered, *calls])
    assert caught.value.status_code == 400
    assert caught.value.body["error"] == {
        "type": "invalid_request_error",
        "message": "messages.1.content.0: Invalid `signature` in `thinking` block",
    }
    edited = {"type": "thinking", "thinking": "something else", "signature": thinking.signature}
    with pytest.raises(anthropic.BadRequestError, match="Invalid `signature` in `thinking` block"):
        answer([edited, *calls])
    with pytest.raises(anthropic.BadRequestError) as caught:
        answer(calls)  # thinking dropped
    assert caught.value.body["error"]["message"] == (
        "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`. When"
        " `thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding"
        " the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking"
        " blocks from previous turns. To avoid this requirement, disable `thinking`. Please consult our"
        f" documentation at {THINKING_DOCS}"
    )


def test_sdk_stream_with_thinking_and_tool_use(sdk):
    request = dict(model=MODEL, max_tokens=2000, thinking=THINKING, tools=[WEATHER],
                   messages=[{"role": "user", "content": "weather?"}])
    with sdk.messages.stream(**request) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert kinds[:2] == ["message_start", "content_block_start"]  # the SDK drops ping
    thinking, call = final.content
    assert thinking.thinking == "Thinking about: weather?"
    assert thinking.signature  # arrived in a signature_delta
    assert (call.name, call.input) == ("get_weather", {"tool": "get_weather", "n": 0})
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == 3 + 5  # thinking words + one tool_use

    result = {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}
    request["messages"] += [{"role": "assistant", "content": final.content}, {"role": "user", "content": [result]}]
    again = sdk.messages.create(**request)
    assert again.content[-1].text == "Tool results: sunny"


def test_sdk_count_tokens_matches_create_and_lists_models(sdk):
    body = dict(model=MODEL, system="be brief", messages=[USER], tools=[WEATHER])
    counted = sdk.messages.count_tokens(**body)
    created = sdk.messages.create(max_tokens=100, **body)
    assert counted.input_tokens == created.usage.input_tokens > 3  # the tool counts too
    ids = [m.id for m in sdk.models.list(limit=3)]  # follows has_more / last_id
    assert ids == MODELS + SCENARIO_MODELS
    model = sdk.models.retrieve("claude-sonnet-4-5")
    assert (model.type, model.display_name) == ("model", "Claude Sonnet 4.5")
    with pytest.raises(anthropic.NotFoundError):
        sdk.models.retrieve("claude-9")


def test_sdk_auth_token_and_wrong_key(base_url):
    with anthropic.Anthropic(base_url=base_url, auth_token=KEY, max_retries=0) as client:
        assert client.messages.create(model=MODEL, max_tokens=10, messages=[USER]).content
    with anthropic.Anthropic(base_url=base_url, api_key="wrong", max_retries=0) as client:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            client.messages.create(model=MODEL, max_tokens=10, messages=[USER])
    assert caught.value.body == {
        "type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}
    }


# ----------------------------------------------------------------- auth and routes


def test_auth_headers(raw):
    body = {"model": MODEL, "max_tokens": 10, "messages": [USER]}
    version = {"anthropic-version": "2023-06-01"}
    assert raw.post("/v1/messages", json=body, headers={**version, "x-api-key": KEY}).status_code == 200
    bearer = {**version, "Authorization": f"Bearer {KEY}"}
    assert raw.post("/v1/messages", json=body, headers=bearer).status_code == 200
    for headers in (version, {**version, "x-api-key": "nope"}, {**version, "Authorization": "Bearer nope"}):
        error = error_of(raw.post("/v1/messages", json=body, headers=headers), 401)
        assert error == {"type": "authentication_error", "message": "invalid x-api-key"}
    no_version = raw.get("/v1/models", headers={"x-api-key": KEY})
    assert invalid_message(no_version) == "anthropic-version: header is required"


def test_no_api_key_configured_means_no_auth():
    with ServerThread(make_app(None, ["claude-haiku-4-5"])) as url:
        body = {"model": MODEL, "max_tokens": 10, "messages": [USER]}
        response = httpx.post(f"{url}/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 200
    assert response.json()["content"] == [{"type": "text", "text": "Echo: hello world"}]


def test_not_found(http):
    assert error_of(create(http, model="claude-9"), 404) == {"type": "not_found_error", "message": "model: claude-9"}
    counted = http.post("/v1/messages/count_tokens", json={"model": "claude-9", "messages": [USER]})
    assert error_of(counted, 404)["message"] == "model: claude-9"
    for response in (http.post("/v1/chat/completions", json={}), http.get("/v1/messages")):
        assert error_of(response, 404) == {"type": "not_found_error", "message": "Not Found"}


def test_models_pages(http):
    page = http.get("/v1/models?limit=2").json()
    assert [m["id"] for m in page["data"]] == MODELS[:2]
    assert (page["has_more"], page["first_id"], page["last_id"]) == (True, MODELS[0], MODELS[1])
    assert page["data"][0] == {
        "type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5",
        "created_at": "2025-09-29T00:00:00Z",
    }
    rest = http.get(f"/v1/models?after_id={MODELS[1]}&limit=100").json()
    assert [m["id"] for m in rest["data"]] == MODELS[2:] + SCENARIO_MODELS
    assert rest["has_more"] is False
    before = http.get(f"/v1/models?before_id={MODELS[2]}&limit=1").json()
    assert ([m["id"] for m in before["data"]], before["has_more"]) == ([MODELS[1]], True)
    assert invalid_message(http.get("/v1/models?limit=0")) == "limit: Input should be greater than or equal to 1"


# ----------------------------------------------------------------- validation


def blocks(*content: dict, role: str = "user") -> list[dict]:
    return [{"role": role, "content": list(content)}]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": None}, "messages: Input should be a valid list"),
        ({"max_tokens": None}, "max_tokens: Input should be a valid integer"),
        ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        ({"max_tokens": 40000, "model": "claude-opus-4-1"},
         "max_tokens: 40000 > 32000, which is the maximum allowed number of output tokens for claude-opus-4-1"),
        ({"stream_options": {}}, "stream_options: Extra inputs are not permitted"),
        ({"temperature": 1.5}, "temperature: Input should be less than or equal to 1"),
        ({"temperature": 0.5, "top_p": 0.9},
         "`temperature` and `top_p` cannot both be specified for this model. Please use only one."),
        ({"top_k": -1}, "top_k: Input should be greater than or equal to 0"),
        ({"stop_sequences": "END"}, "stop_sequences: Input should be a valid list"),
        ({"metadata": {"user_id": "u", "session": "s"}}, "metadata.session: Extra inputs are not permitted"),
        ({"system": [{"type": "text", "text": ""}]}, "system: text content blocks must be non-empty"),
        ({"system": [{"type": "image", "text": "x"}]}, "system.0.type: Input should be 'text'"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "messages.0.role: Input should be 'user' or 'assistant'"),
        ({"messages": [{"content": "x"}]}, "messages.0.role: Field required"),
        ({"messages": [{"role": "user", "content": "x", "name": "bob"}]},
         "messages.0.name: Extra inputs are not permitted"),
        ({"messages": [{"role": "system", "content": "be brief"}, USER]},
         'Unexpected role "system". The Messages API accepts a top-level `system` parameter, not "system" as'
         ' an input message role.'),
        ({"messages": [{"role": "user", "content": []}]},
         "messages.0: all messages must have non-empty content except for the optional final assistant message"),
        ({"messages": blocks({"type": "text", "text": ""})}, "messages: text content blocks must be non-empty"),
        ({"messages": blocks({"type": "text"})}, "messages.0.content.0.text.text: Field required"),
        ({"messages": blocks({"type": "text", "text": "a", "extra": 1})},
         "messages.0.content.0.text.extra: Extra inputs are not permitted"),
        ({"messages": blocks({"type": "image_url", "image_url": {"url": "x"}})},
         "messages.0.content.0: Input tag 'image_url' found using 'type' does not match any of the expected"
         " tags: 'text', 'image', 'document', 'tool_use', 'tool_result', 'thinking', 'redacted_thinking'"),
        ({"messages": blocks({"text": "a"})}, "messages.0.content.0: Unable to extract tag using discriminator 'type'"),
        ({"messages": blocks({"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": PNG}})},
         "messages.0.content.0.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png',"
         " 'image/gif' or 'image/webp'"),
        ({"messages": blocks({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "%%"}})},
         "messages.0.content.0.image.source.base64.data: Invalid base64 data"),
        ({"messages": blocks({"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG}})},
         "messages.0.content.0.image.source.base64: The image was specified using the image/jpeg media type,"
         " but the image appears to be a image/png image"),
        ({"messages": blocks({"type": "text", "text": "a", "cache_control": {"type": "persistent"}})},
         "messages.0.content.0.text.cache_control.type: Input should be 'ephemeral'"),
        ({"messages": blocks({"type": "text", "text": "a", "cache_control": {"type": "ephemeral", "ttl": "1d"}})},
         "messages.0.content.0.text.cache_control.ttl: Input should be '5m' or '1h'"),
        ({"tools": [{**WEATHER, "name": "get weather"}]},
         "tools.0.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'"),
        ({"tools": [{"name": "f"}]}, "tools.0.custom.input_schema: Field required"),
        ({"tools": [{"name": "f", "input_schema": {"type": "array"}}]},
         "tools.0.custom.input_schema.type: Input should be 'object'"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]},
         "tools.0: Input tag 'function' found using 'type' does not match any of the expected tags: 'custom',"
         " 'bash_20250124', 'code_execution_20250825', 'memory_20250818', 'text_editor_20250728',"
         " 'web_fetch_20250910', 'web_search_20250305'"),
        ({"tools": [WEATHER, WEATHER]}, "tools: Tool names must be unique."),
        ({"tool_choice": {"type": "auto"}}, "tool_choice may only be specified while providing tools."),
        ({"tools": [WEATHER], "tool_choice": {"type": "required"}},
         "tool_choice: Input tag 'required' found using 'type' does not match any of the expected tags:"
         " 'auto', 'any', 'tool', 'none'"),
        ({"tools": [WEATHER], "tool_choice": {"type": "tool"}}, "tool_choice.tool.name: Field required"),
        ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}},
         "tool_choice.tool.name: Tool 'nope' not found in `tools`"),
        ({"thinking": {"type": "enabled"}}, "thinking.enabled.budget_tokens: Field required"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1000}},
         "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"),
        ({"thinking": {"type": "on"}},
         "thinking: Input tag 'on' found using 'type' does not match any of the expected tags: 'enabled',"
         " 'disabled', 'adaptive'"),
        ({"service_tier": "priority"}, "service_tier: Input should be 'auto' or 'standard_only'"),
    ],
)
def test_validation(http, body, message):
    assert invalid_message(create(http, **body)) == message


@pytest.mark.parametrize("missing", ["model", "messages", "max_tokens"])
def test_required_fields(http, missing):
    body = {"model": MODEL, "max_tokens": 10, "messages": [USER]}
    del body[missing]
    assert invalid_message(http.post("/v1/messages", json=body)) == f"{missing}: Field required"


def test_body_must_be_a_json_object(http):
    assert invalid_message(http.post("/v1/messages", content=b"{nope")).startswith("There was an issue")
    assert invalid_message(http.post("/v1/messages", json=[USER])) == (
        "Input should be a valid dictionary or object to extract fields from"
    )


SCOPED = {"type": "ephemeral", "scope": "global"}  # what Claude Code marks its system prompt with


@pytest.mark.parametrize(
    "body, beta, refused",
    [
        ({"system": [{"type": "text", "text": "s"}, {"type": "text", "text": "t", "cache_control": SCOPED}]},
         "prompt-caching-scope-2026-01-05", "system.1.cache_control.ephemeral.scope: Extra inputs are not permitted"),
        ({"messages": blocks({"type": "text", "text": "a", "cache_control": SCOPED})}, "prompt-caching-scope-2026-01-05",
         "messages.0.content.0.text.cache_control.ephemeral.scope: Extra inputs are not permitted"),
        ({"tools": [{**WEATHER, "cache_control": SCOPED}]}, "prompt-caching-scope-2026-01-05",
         "tools.0.custom.cache_control.ephemeral.scope: Extra inputs are not permitted"),
        ({"diagnostics": {"previous_message_id": None}}, "cache-diagnosis-2026-04-07",
         "diagnostics: Extra inputs are not permitted"),
    ],
)
def test_beta_fields_need_their_beta(http, body, beta, refused):
    """Claude Code's cache_control scope and diagnostics: refused without the beta that unlocks them."""
    assert invalid_message(create(http, **body)) == refused
    others = "claude-code-20250219,interleaved-thinking-2025-05-14"
    assert invalid_message(http.post("/v1/messages", headers={"anthropic-beta": others},
                                     json={"model": MODEL, "max_tokens": 10, "messages": [USER], **body})) == refused
    ok = http.post("/v1/messages", headers={"anthropic-beta": f"{others},{beta}"},
                   json={"model": MODEL, "max_tokens": 10, "messages": [USER], **body})
    assert ok.status_code == 200, ok.text
    counted = http.post("/v1/messages/count_tokens", headers={"anthropic-beta": beta},
                        json={"model": MODEL, "messages": [USER], **body})
    assert counted.status_code == 200, counted.text


def test_only_the_global_scope_is_unlocked(http):
    body = {"model": MODEL, "max_tokens": 10, "messages": [USER],
            "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "scope": "session"}}]}
    r = http.post("/v1/messages", headers={"anthropic-beta": "prompt-caching-scope-2026-01-05"}, json=body)
    assert invalid_message(r) == "system.0.cache_control.ephemeral.scope: Extra inputs are not permitted"


def tool_use(id: str = "toolu_01", name: str = "get_weather") -> dict:
    return {"type": "tool_use", "id": id, "name": name, "input": {}}


def tool_result(id: str = "toolu_01") -> dict:
    return {"type": "tool_result", "tool_use_id": id, "content": "ok"}


TEXT = {"type": "text", "text": "go on"}


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([{"role": "assistant", "content": "hi"}, USER], 'messages: first message must use the "user" role'),
        ([USER, USER],
         'messages: roles must alternate between "user" and "assistant", but found multiple "user" roles in a row'),
        ([USER, {"role": "assistant", "content": [tool_use("toolu 1")]}],
         "messages.1.content.0.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'"),
        ([USER, {"role": "assistant", "content": [tool_use() | {"input": "{}"}]}],
         "messages.1.content.0.tool_use.input: Input should be a valid dictionary"),
        ([USER, {"role": "assistant", "content": "ok"}, {"role": "user", "content": [tool_result("toolu_9")]}],
         "messages.2.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_9. Each `tool_result`"
         " block must have a corresponding `tool_use` block in the previous message."),
        ([USER, {"role": "assistant", "content": [tool_use("toolu_01"), tool_use("toolu_02")]},
          {"role": "user", "content": [tool_result("toolu_01")]}],
         "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_02. Each"
         " `tool_use` block must have a corresponding `tool_result` block in the next message."),
        ([USER, {"role": "assistant", "content": [tool_use()]}, {"role": "user", "content": [TEXT, tool_result()]}],
         "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_01. Each"
         " `tool_use` block must have a corresponding `tool_result` block in the next message."),
        ([USER, {"role": "assistant", "content": [tool_use()]}],
         "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_01. Each"
         " `tool_use` block must have a corresponding `tool_result` block in the next message."),
        ([{"role": "user", "content": [tool_use()]}],
         "messages.0.content.0.type: `tool_use` blocks are only allowed in `assistant` messages"),
        ([USER, {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"}]}],
         "messages.1.content.0.thinking.signature: Field required"),
        ([USER, {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "c2ln"}]}],
         "messages.1.content.0: Invalid `signature` in `thinking` block"),
        ([USER, {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "c2ln"}]}],
         "messages.1.content.0: Invalid `data` in `redacted_thinking` block"),
        ([USER, {"role": "assistant", "content": "Sure "}],
         "messages: final assistant content cannot end with trailing whitespace"),
    ],
)
def test_conversation_rules(http, messages, message):
    assert invalid_message(create(http, messages=messages, tools=[WEATHER])) == message


def test_tool_results_first_then_text_is_fine(http):
    messages = [USER, {"role": "assistant", "content": [tool_use()]},
                {"role": "user", "content": [tool_result(), TEXT]}]
    response = create(http, messages=messages)
    assert response.json()["content"] == [{"type": "text", "text": "Echo: go on"}]


CONSIDER = f" Please consult our documentation at {THINKING_DOCS}#important-considerations-when-using-extended-thinking"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"max_tokens": 1024},
         "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at"
         f" {THINKING_DOCS}#max-tokens-and-context-window-size"),
        ({"temperature": 0.5}, "`temperature` may only be set to 1 when thinking is enabled." + CONSIDER),
        ({"top_k": 5}, "`top_k` must be unset when thinking is enabled." + CONSIDER),
        ({"top_p": 0.5}, "`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled." + CONSIDER),
        ({"tools": [WEATHER], "tool_choice": {"type": "any"}}, "Thinking may not be enabled when tool_choice forces tool use."),
        ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "get_weather"}},
         "Thinking may not be enabled when tool_choice forces tool use."),
    ],
)
def test_thinking_rules(http, body, message):
    body = {"max_tokens": 2000, "thinking": THINKING, **body}
    assert invalid_message(create(http, **body)) == message


def test_thinking_modes(http):
    assert create(http, max_tokens=2000, thinking=THINKING, temperature=1).status_code == 200
    assert create(http, max_tokens=2000, thinking=THINKING, top_p=0.95).status_code == 200
    adaptive = create(http, thinking={"type": "adaptive"}).json()["content"]
    assert [b["type"] for b in adaptive] == ["thinking", "text"]
    disabled = create(http, thinking={"type": "disabled"}, temperature=0).json()["content"]
    assert disabled == [{"type": "text", "text": "Echo: hello world"}]
    # without thinking, a tool_use turn needs no thinking block in front
    history = follow_up({"content": [tool_use()]}, [tool_use()])
    assert create(http, messages=history).status_code == 200


def test_thinking_signatures_of_earlier_turns_are_checked(http):
    first = issued_turn(http)
    history = follow_up(first, first["content"])
    second = create(http, max_tokens=2000, thinking=THINKING, tools=[WEATHER], messages=history).json()
    longer = [*history, {"role": "assistant", "content": second["content"]}, {"role": "user", "content": "more"}]
    assert create(http, max_tokens=2000, thinking=THINKING, messages=longer).status_code == 200
    forged = {**first["content"][0], "signature": base64.b64encode(b"forged").decode()}
    longer[1] = {"role": "assistant", "content": [forged, first["content"][1]]}
    assert invalid_message(create(http, messages=longer)) == "messages.1.content.0: Invalid `signature` in `thinking` block"


def test_redacted_thinking_trigger(http):
    messages = [{"role": "user", "content": f"weather? {REDACTED_TRIGGER}"}]
    first = issued_turn(http, messages=messages)
    redacted, call = first["content"]
    assert redacted["type"] == "redacted_thinking" and set(redacted) == {"type", "data"}
    history = [messages[0], {"role": "assistant", "content": first["content"]},
               {"role": "user", "content": [tool_result(call["id"])]}]
    assert create(http, max_tokens=2000, thinking=THINKING, messages=history).status_code == 200


# ----------------------------------------------------------------- answers


def test_tool_choice_shapes_the_calls(http):
    tools = [WEATHER, TIME]
    both = create(http, tools=tools).json()
    assert [b["name"] for b in both["content"]] == ["get_weather", "get_time"]
    assert both["content"][1]["input"] == {"tool": "get_time", "n": 1}
    only = create(http, tools=tools, tool_choice={"type": "tool", "name": "get_time"}).json()
    assert [(b["name"], b["input"]) for b in only["content"]] == [("get_time", {"tool": "get_time", "n": 0})]
    first = create(http, tools=tools, tool_choice={"type": "auto", "disable_parallel_tool_use": True}).json()
    assert [b["name"] for b in first["content"]] == ["get_weather"]
    none = create(http, tools=tools, tool_choice={"type": "none"}).json()
    assert (none["content"], none["stop_reason"]) == ([{"type": "text", "text": "Echo: hello world"}], "end_turn")
    server_only = create(http, tools=[{"type": "web_search_20250305", "name": "web_search"}]).json()
    assert server_only["content"][0]["type"] == "text"


def test_images_are_counted(http):
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    url = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    response = create(http, messages=blocks({"type": "text", "text": "look"}, image, url)).json()
    assert response["content"][0]["text"] == "Echo: look [2 image(s)]"


def test_max_tokens_and_stop_sequences_cut_the_answer(http):
    cut = create(http, max_tokens=2, messages=[{"role": "user", "content": "a b c d"}]).json()
    assert (cut["content"][0]["text"], cut["stop_reason"], cut["usage"]["output_tokens"]) == ("Echo: a", "max_tokens", 2)
    stopped = create(http, stop_sequences=["wor", "xyz"]).json()
    assert (stopped["content"][0]["text"], stopped["stop_reason"], stopped["stop_sequence"]) == (
        "Echo: hello ", "stop_sequence", "wor")


def test_prompt_caching(http):
    system = [{"type": "text", "text": "x" * 400, "cache_control": {"type": "ephemeral"}}]
    first = create(http, model="claude-opus-4-1", system=system).json()["usage"]
    assert first["cache_creation_input_tokens"] == 100 and first["cache_read_input_tokens"] == 0
    assert first["cache_creation"] == {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 0}
    assert first["input_tokens"] == 3  # "hello world" + 1
    again = create(http, model="claude-opus-4-1", system=system,
                   messages=[{"role": "user", "content": "something else entirely"}]).json()["usage"]
    assert (again["cache_creation_input_tokens"], again["cache_read_input_tokens"]) == (0, 100)
    other_model = create(http, model="claude-sonnet-4-5", system=system).json()["usage"]
    assert other_model["cache_creation_input_tokens"] == 100
    # a later breakpoint reads the cached prefix and writes only the rest
    longer = blocks({"type": "text", "text": "y" * 40, "cache_control": {"type": "ephemeral", "ttl": "1h"}})
    grown = create(http, model="claude-opus-4-1", system=system, messages=longer).json()["usage"]
    assert (grown["cache_read_input_tokens"], grown["cache_creation_input_tokens"]) == (100, 10)
    assert grown["cache_creation"]["ephemeral_1h_input_tokens"] == 10
    plain = create(http, model="claude-opus-4-1").json()["usage"]
    assert (plain["cache_creation_input_tokens"], plain["cache_read_input_tokens"]) == (0, 0)


def test_at_most_four_cache_breakpoints(http):
    marked = {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}
    tools = [{**WEATHER, "cache_control": {"type": "ephemeral"}}]
    system = [marked, marked]
    assert create(http, tools=tools, system=system, messages=blocks(marked)).status_code == 200
    response = create(http, tools=tools, system=system, messages=blocks(marked, marked))
    assert invalid_message(response) == "A maximum of 4 blocks with cache_control may be provided. Found 5."


def test_count_tokens(http):
    url = "/v1/messages/count_tokens"
    assert http.post(url, json={"model": MODEL, "messages": [USER]}).json() == {"input_tokens": 3}
    assert invalid_message(create(http, url)) == "max_tokens: Extra inputs are not permitted"
    bad_order = {"model": MODEL, "messages": [{"role": "assistant", "content": "x"}]}
    assert invalid_message(http.post(url, json=bad_order)) == 'messages: first message must use the "user" role'
    assert http.post(url, json={"model": "fault-500", "messages": [USER]}).json() == {"input_tokens": 3}


# ----------------------------------------------------------------- stream wire format


def test_stream_wire_format(http):
    response = create(http, stream=True, max_tokens=2000, thinking=THINKING, tools=[WEATHER])
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert (start["content"], start["stop_reason"], start["usage"]["output_tokens"]) == ([], None, 1)
    counted = http.post("/v1/messages/count_tokens", json={"model": MODEL, "messages": [USER], "tools": [WEATHER]})
    assert start["usage"]["input_tokens"] == counted.json()["input_tokens"]
    by_index: dict[int, list[dict]] = {}
    for name, data in events:
        if name.startswith("content_block"):
            by_index.setdefault(data["index"], []).append(data)
    thinking, call = by_index[0], by_index[1]
    assert thinking[0]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert [d["delta"]["type"] for d in thinking[1:-1]] == ["thinking_delta"] * 4 + ["signature_delta"]
    assert "".join(d["delta"].get("thinking", "") for d in thinking[1:-1]) == "Thinking about: hello world"
    assert call[0]["content_block"]["input"] == {} and TOOL_ID.match(call[0]["content_block"]["id"])
    fragments = [d["delta"]["partial_json"] for d in call[1:-1]]
    assert fragments[0] == "" and all(len(f) == 5 for f in fragments[1:-1])
    assert json.loads("".join(fragments)) == {"tool": "get_weather", "n": 0}
    assert call[-1] == {"type": "content_block_stop", "index": 1}
    assert events[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert set(events[-2][1]["usage"]) == {"output_tokens"}


def test_stream_text_pieces(http):
    events = sse_events(create(http, stream=True).text)
    deltas = [d["delta"] for name, d in events if name == "content_block_delta"]
    assert deltas == [{"type": "text_delta", "text": t} for t in ("Echo", ": he", "llo ", "worl", "d")]
    assert events[2][1]["content_block"] == {"type": "text", "text": ""}


# ----------------------------------------------------------------- request log


def test_request_log(http, raw):
    assert http.delete("/__requests").status_code == 200
    http.post("/v1/messages?beta=true", json={"model": MODEL, "max_tokens": 5, "messages": [USER]},
              headers={"anthropic-beta": "interleaved-thinking-2025-05-14"})
    log = raw.get("/__requests").json()  # no auth needed
    assert len(log) == 1
    entry = log[0]
    assert (entry["method"], entry["path"], entry["query"]) == ("POST", "/v1/messages", "beta=true")
    assert entry["headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert entry["headers"]["x-api-key"] == KEY
    assert entry["body"] == {"model": MODEL, "max_tokens": 5, "messages": [USER]}
    assert raw.delete("/__requests").json() == {"cleared": 1}
    assert http.get("/__requests").json() == []


# ----------------------------------------------------------------- scenarios


def test_fault_errors(http, sdk):
    overloaded = error_of(create(http, model="fault-overloaded"), 529)
    assert overloaded == {"type": "overloaded_error", "message": "Overloaded"}
    limited = create(http, model="fault-429")
    assert error_of(limited, 429)["type"] == "rate_limit_error"
    assert limited.headers["retry-after"] == "7"
    assert limited.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", limited.headers["anthropic-ratelimit-tokens-reset"])
    assert error_of(create(http, model="fault-500"), 500)["type"] == "api_error"
    with pytest.raises(anthropic.OverloadedError):
        sdk.messages.create(model="fault-overloaded", max_tokens=10, messages=[USER])
    with pytest.raises(anthropic.RateLimitError):
        sdk.messages.create(model="fault-429", max_tokens=10, messages=[USER])


def test_scenarios_still_validate(http, raw):
    assert create(http, model="fault-500", bogus=1).status_code == 400
    body = {"model": "fault-hang", "max_tokens": 5, "messages": [USER]}
    response = raw.post("/v1/messages", json=body, headers={"x-api-key": "nope", "anthropic-version": "2023-06-01"})
    assert response.status_code == 401


def test_fault_stream_error(http, sdk):
    events = sse_events(create(http, model="fault-stream-error", stream=True).text)
    assert [n for n, _ in events] == [
        "message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta", "error"]
    assert events[-1][1] == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(anthropic.APIStatusError) as caught:
        with sdk.messages.stream(model="fault-stream-error", max_tokens=10, messages=[USER]) as stream:
            list(stream.text_stream)
    assert caught.value.body["error"]["type"] == "overloaded_error"
    assert error_of(create(http, model="fault-stream-error"), 529)["type"] == "overloaded_error"


def test_fault_hang_sends_no_headers(http):
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1/messages", json={"model": "fault-hang", "max_tokens": 5, "messages": [USER]}, timeout=0.3)
    assert time.monotonic() - started < 2


def test_fault_cut_aborts_after_two_deltas(http):
    received = b""
    body = {"model": "fault-cut", "max_tokens": 5, "messages": [USER], "stream": True}
    with pytest.raises(httpx.RemoteProtocolError):
        with http.stream("POST", "/v1/messages", json=body) as response:
            assert response.status_code == 200
            for piece in response.iter_bytes():
                received += piece
    events = sse_events(received.decode())
    texts = [d["delta"]["text"] for n, d in events if n == "content_block_delta"]
    assert texts == ["Echo", ": he"]
    assert events[-1][0] == "content_block_delta"
    with pytest.raises(httpx.RemoteProtocolError):
        create(http, model="fault-cut")


def test_fault_slow_stream_arrives_incrementally(http):
    arrivals = []
    body = {"model": "fault-slow-stream", "max_tokens": 5, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}
    with http.stream("POST", "/v1/messages", json=body) as response:
        for line in response.iter_lines():
            if line == "event: content_block_delta":
                arrivals.append(time.monotonic())
    assert len(arrivals) == 2  # "Echo", ": hi"
    assert arrivals[1] - arrivals[0] > 0.2


# ----------------------------------------------------------------- command line


def test_cli_prints_ready_and_serves():
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.upstreams.anthropic_api", "--port", "0", "--models", "a,b",
         "--api-key", "k1"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        word, port = process.stdout.readline().split()
        assert word == "READY"
        listing = httpx.get(f"http://127.0.0.1:{port}/v1/models",
                            headers={"x-api-key": "k1", "anthropic-version": "2023-06-01"}).json()
        assert [m["id"] for m in listing["data"]][:2] == ["a", "b"]
    finally:
        process.terminate()
        rest, _ = process.communicate(timeout=5)
    assert rest == ""
    assert process.returncode == 0
