"""Canonical -> OpenAI chat (requests for OpenAI-compatible upstreams) and their answers back.

The encoded requests are checked with the strict OpenAI double's own validator: what the
gateway sends is what api.openai.com accepts."""

import json
import random

import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from converters import anthropic, openai_chat
from converters import canonical as cn
from converters.pipeline import Converting
from tests.upstreams.openai_compat import ApiError, validate_chat_request

IMG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="

CLAUDE_CODE_REQUEST = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 4096,
    "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
    "tools": [{"name": "Bash", "description": "Run a command",
               "input_schema": {"type": "object", "properties": {"command": {"type": "string"}},
                                "required": ["command"], "additionalProperties": False}}],
    "messages": [
        {"role": "user", "content": "list files"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should run ls.", "signature": "c2lnbmF0dXJl"},
            {"type": "text", "text": "Running ls."},
            {"type": "tool_use", "id": "toolu_01A", "name": "Bash", "input": {"command": "ls"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A", "content": [
                {"type": "text", "text": "a.txt"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMG}}]},
            {"type": "text", "text": "and now?"}]},
    ],
    "thinking": {"type": "enabled", "budget_tokens": 2048},
    "stream": True,
}


def test_anthropic_request_to_openai_upstream_is_valid_openai():
    req = anthropic.decode_request(CLAUDE_CODE_REQUEST)
    req.model = "gpt-4o-mini"
    body = openai_chat.encode_request(req)
    validate_chat_request(body, ["gpt-4o-mini"])  # raises ApiError if OpenAI would refuse it
    msgs = body["messages"]
    assert msgs[0] == {"role": "system", "content": "You are Claude Code."}
    assert msgs[2]["tool_calls"][0] == {"id": "toolu_01A", "type": "function",
                                        "function": {"name": "Bash", "arguments": '{"command":"ls"}'}}
    assert msgs[3] == {"role": "tool", "tool_call_id": "toolu_01A", "content": "a.txt"}
    assert msgs[4]["role"] == "user" and msgs[4]["content"][0]["type"] == "image_url"  # the result's image
    assert msgs[4]["content"][-1] == {"type": "text", "text": "and now?"}
    assert body["stream_options"] == {"include_usage": True} and body["reasoning_effort"] == "medium"


def test_strict_double_really_refuses_a_bad_body():
    with pytest.raises(ApiError):
        validate_chat_request({"model": "gpt-4o-mini", "messages": [{"role": "tool", "content": "x"}]},
                              ["gpt-4o-mini"])


def test_round_trip_openai_request():
    data = {"model": "m", "messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{IMG}"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "done"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}],
        "tool_choice": "required", "temperature": 0.5, "max_tokens": 10, "stop": ["x"],
        "response_format": {"type": "json_object"}}
    again = openai_chat.encode_request(openai_chat.decode_request(data))
    validate_chat_request(again, ["m"])
    assert again["messages"] == data["messages"][:1] + [data["messages"][1]] + data["messages"][2:]
    assert {k: again[k] for k in ("tools", "tool_choice", "temperature", "max_tokens", "stop", "response_format")} \
        == {k: data[k] for k in ("tools", "tool_choice", "temperature", "max_tokens", "stop", "response_format")}


COMPLETION = {
    "id": "chatcmpl-9", "object": "chat.completion", "created": 1700000000, "model": "qwen3-2024",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Checking.", "reasoning_content": "Think first.",
        "tool_calls": [{"id": "call_7", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\":\"ls\"}"}}]}}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29,
              "prompt_tokens_details": {"cached_tokens": 5}, "completion_tokens_details": {"reasoning_tokens": 3}},
}


def test_openai_completion_to_anthropic_message():
    r = openai_chat.decode_response(COMPLETION)
    assert [type(b) for b in r.content] == [cn.Thinking, cn.Text, cn.ToolCall]
    assert r.finish == "tool_calls" and (r.usage.cached_tokens, r.usage.reasoning_tokens) == (5, 3)
    msg = Message.model_validate(anthropic.encode_response(r, "claude-sonnet-4-5"))
    assert msg.stop_reason == "tool_use" and msg.model == "claude-sonnet-4-5"
    assert [b.type for b in msg.content] == ["thinking", "text", "tool_use"]
    assert msg.content[2].input == {"command": "ls"}


@pytest.mark.parametrize("reason, finish", [("stop", "stop"), ("length", "length"),
                                            ("content_filter", "content_filter"), (None, "stop")])
def test_finish_reasons(reason, finish):
    body = {"choices": [{"message": {"content": "x"}, "finish_reason": reason}]}
    assert openai_chat.decode_response(body).finish == finish


def test_decode_response_is_lenient():
    for body in ({}, {"choices": "x"}, {"choices": [{"message": {"tool_calls": [1, {"function": "x"}]}}]}):
        openai_chat.decode_response(body)


def chunk(delta, finish=None, **extra):
    body = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "up",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


STREAM = b"".join([
    chunk({"role": "assistant", "content": ""}),
    chunk({"reasoning_content": "Think"}), chunk({"reasoning_content": "ing."}),
    chunk({"content": "Hel"}), chunk({"content": "lo"}),
    chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                           "function": {"name": "Bash", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"comm"}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": "and\":\"ls\"}"}}]}),
    chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                           "function": {"name": "Read", "arguments": "{}"}}]}),
    chunk({}, "tool_calls"),
    b'data: {"id":"chatcmpl-s","object":"chat.completion.chunk","created":1,"model":"up","choices":[],'
    b'"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}\n\n',
    b"data: [DONE]\n\n",
])

EVENTS = TypeAdapter(RawMessageStreamEvent)


def to_anthropic(data: bytes, cuts=()) -> list[dict]:
    t = Converting(openai_chat.StreamDecoder(), anthropic.StreamEncoder("claude-x"))
    out, last = b"", 0
    for c in list(cuts) + [len(data)]:
        out += t.feed(data[last:c])
        last = c
    out += t.finish()
    events = []
    for raw in out.decode().split("\n\n"):
        if raw:
            name, data_line = raw.split("\n", 1)
            ev = json.loads(data_line.removeprefix("data: "))
            assert name == f"event: {ev['type']}"
            if ev["type"] != "error":  # error events are not in the SDK's event union
                EVENTS.validate_python(ev)
            events.append(ev)
    return events


def test_openai_stream_to_anthropic_events():
    events = to_anthropic(STREAM)
    types = [e["type"] for e in events]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    assert starts == ["thinking", "text", "tool_use", "tool_use"]
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    args = "".join(e["delta"].get("partial_json", "") for e in events if e["type"] == "content_block_delta"
                   and e["index"] == 2)
    assert text == "Hello" and json.loads(args) == {"command": "ls"}
    delta = events[-2]
    assert delta["delta"]["stop_reason"] == "tool_use" and delta["usage"]["output_tokens"] == 7


def test_any_chunking_same_events():
    whole = to_anthropic(STREAM)
    rng = random.Random(3)
    for _ in range(100):
        cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(1, 25)))
        assert to_anthropic(STREAM, cuts) == whole


def test_truncated_stream_is_an_error_not_a_stop():
    cut = STREAM[: STREAM.index(b'"finish_reason": "tool_calls"') - 40]
    cut = cut[: cut.rindex(b"\n\n") + 2]
    events = to_anthropic(cut)
    assert events[-1]["type"] == "error" and not any(e["type"] == "message_stop" for e in events)


def test_finish_without_done_is_complete():
    data = STREAM.replace(b"data: [DONE]\n\n", b"")
    assert to_anthropic(data)[-1]["type"] == "message_stop"
