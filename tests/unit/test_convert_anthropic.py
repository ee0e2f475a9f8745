"""Anthropic Messages <-> canonical: golden payloads (shaped after Anthropic's public docs and
Claude Code's real requests), checked against the anthropic and openai SDKs' own types."""

import copy
import json
import random

import anthropic
import httpx2
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionChunk
from pydantic import TypeAdapter

from converters import anthropic as an
from converters import call_ids, gemini, openai_chat
from converters import canonical as cn
from converters.pipeline import Converting

IMG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
SIG = ("EqQBCkYIBxgCKkBZ3qJ9J0l1mH1cOq4v8w0gYkY0tBfNn9xj1t8QpMxKkTu7Ol5x0ePZ2ZEXpY0rJ6bF0KjT8eF"
       "Z1q8xEgwL3a4d5nQmT2yV7hQaDKf6h0Nw4b2Q1yJ5ViIwK9b8m3f2L0bX6")
EPHEMERAL = {"type": "ephemeral"}

BASH_SCHEMA = {
    "type": "object",
    "properties": {
        "command": {"type": "string", "description": "The command to execute"},
        "timeout": {"type": "number", "description": "Optional timeout in milliseconds (max 600000)"},
        "description": {"type": "string",
                        "description": "Clear, concise description of what this command does in 5-10 words."},
        "run_in_background": {"type": "boolean", "description": "Set to true to run this command in the background."},
    },
    "required": ["command"],
    "additionalProperties": False,
    "$schema": "http://json-schema.org/draft-07/schema#",
}
READ_SCHEMA = {
    "type": "object",
    "properties": {
        "file_path": {"type": "string", "description": "The absolute path to the file to read"},
        "offset": {"type": "number", "description": "The line number to start reading from."},
        "limit": {"type": "number", "description": "The number of lines to read."},
    },
    "required": ["file_path"],
    "additionalProperties": False,
    "$schema": "http://json-schema.org/draft-07/schema#",
}
TODO_SCHEMA = {
    "type": "object",
    "properties": {"todos": {"type": "array", "description": "The updated todo list", "items": {
        "type": "object",
        "properties": {
            "content": {"type": "string", "minLength": 1},
            "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]},
            "activeForm": {"type": "string", "minLength": 1},
        },
        "required": ["content", "status", "activeForm"],
        "additionalProperties": False,
    }}},
    "required": ["todos"],
    "additionalProperties": False,
    "$schema": "http://json-schema.org/draft-07/schema#",
}
EDIT_SCHEMA = {
    "type": "object",
    "properties": {
        "file_path": {"type": "string", "description": "The absolute path to the file to modify"},
        "old_string": {"type": "string", "description": "The text to replace"},
        "new_string": {"type": "string", "description": "The text to replace it with"},
        "replace_all": {"type": "boolean", "default": False, "description": "Replace all occurrences"},
        "edits": {"anyOf": [{"type": "null"}, {"type": "array", "items": {"$ref": "#/definitions/edit"}}]},
    },
    "definitions": {"edit": {"type": "object", "properties": {"old": {"type": "string"},
                                                              "new": {"type": "string"}}}},
    "required": ["file_path", "old_string", "new_string"],
    "additionalProperties": False,
    "$schema": "http://json-schema.org/draft-07/schema#",
}

CLAUDE_CODE_REQUEST = {
    "model": "claude-sonnet-4-5-20250929",
    "max_tokens": 32000,
    "system": [
        {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
         "cache_control": EPHEMERAL},
        {"type": "text", "text": "\nYou are an interactive CLI tool that helps users with software engineering "
                                 "tasks. Use the instructions below and the tools available to you to assist "
                                 "the user.\n\n# Tone and style\nBe concise.", "cache_control": EPHEMERAL},
    ],
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>\nAs you answer the user's questions, you can use the "
                                     "following context: ...\n</system-reminder>"},
            {"type": "text", "text": "The test in tests/test_math.py fails; fix it. Here is the diagram."},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMG}},
        ]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should read the test and run it.", "signature": SIG},
            {"type": "text", "text": "I'll look at the test and run it."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "Read",
             "input": {"file_path": "/repo/tests/test_math.py"}},
            {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "Bash",
             "input": {"command": "python -m pytest -q tests/test_math.py", "description": "Run the failing test"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
             "content": "     1\tfrom calc import add\n     2\t\n     3\tdef test_add():\n     4\t    assert add(2, 2) == 5\n"},
            {"type": "tool_result", "tool_use_id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "is_error": True,
             "content": [{"type": "text", "text": "Exit code 1\nFAILED tests/test_math.py::test_add - assert 4 == 5"}]},
        ]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_01CgvTJvUZ1fBcpz3wQ1Vuwh", "name": "Read",
             "input": {"file_path": "/repo/docs/expected.png"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01CgvTJvUZ1fBcpz3wQ1Vuwh", "content": [
                {"type": "text", "text": "Image file read."},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMG}},
            ]},
            {"type": "text", "text": "Keep the existing code style.", "cache_control": EPHEMERAL},
        ]},
    ],
    "tools": [
        {"name": "Bash", "description": "Executes a given bash command in a persistent shell session with optional "
                                        "timeout, ensuring proper handling and security measures.",
         "input_schema": BASH_SCHEMA},
        {"name": "Read", "description": "Reads a file from the local filesystem.", "input_schema": READ_SCHEMA},
        {"name": "Edit", "description": "Performs exact string replacements in files.", "input_schema": EDIT_SCHEMA},
        {"name": "TodoWrite", "description": "Use this tool to create and manage a structured task list.",
         "input_schema": TODO_SCHEMA, "cache_control": EPHEMERAL},
    ],
    "metadata": {"user_id": "user_4f2c_account_9b1e_session_0d6a7c3e"},
    "thinking": {"type": "enabled", "budget_tokens": 10000},
    "temperature": 1,
    "stream": True,
}


def normalized_request(body: dict) -> dict:
    """String shorthands expanded, so equivalent Anthropic requests compare equal."""
    body = copy.deepcopy(body)
    if isinstance(body.get("system"), str):
        body["system"] = [{"type": "text", "text": body["system"]}]
    for m in body["messages"]:
        if isinstance(m["content"], str):
            m["content"] = [{"type": "text", "text": m["content"]}]
        for b in m["content"]:
            if b["type"] == "tool_result" and isinstance(b.get("content"), str):
                b["content"] = [{"type": "text", "text": b["content"]}]
            if b["type"] == "tool_result" and not b.get("is_error", True):
                del b["is_error"]
    return body


def test_claude_code_request_round_trip():
    req = an.decode_request(CLAUDE_CODE_REQUEST)
    assert req.stream and req.max_tokens == 32000 and req.user.startswith("user_4f2c")
    assert req.reasoning == cn.Reasoning(budget_tokens=10000, include_thoughts=True)
    assert [t.cache_control for t in req.system] == [EPHEMERAL, EPHEMERAL]
    assert req.tools[3].cache_control == EPHEMERAL and req.tools[0].parameters == BASH_SCHEMA
    user, assistant, results, _, last = req.messages
    assert isinstance(user.content[2], cn.Image) and user.content[2].media_type == "image/png"
    thinking, _, read, bash = assistant.content
    assert thinking == cn.Thinking("I should read the test and run it.", SIG)
    assert (bash.id, bash.name, json.loads(bash.arguments)["description"]) == (
        "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "Bash", "Run the failing test")
    assert read.arguments == '{"file_path":"/repo/tests/test_math.py"}'  # compact JSON
    ok, failed = results.content
    assert (ok.is_error, ok.name, failed.is_error, failed.name) == (False, "Read", True, "Bash")
    assert isinstance(last.content[0].content[1], cn.Image) and last.content[1].cache_control == EPHEMERAL

    body = an.encode_request(req)
    assert normalized_request(body) == normalized_request(CLAUDE_CODE_REQUEST)
    assert req.dropped == []


def test_claude_code_request_to_gemini_smoke():
    req = an.decode_request(CLAUDE_CODE_REQUEST)
    body = gemini.encode_request(req)
    assert body["systemInstruction"]["parts"][0]["text"].startswith("You are Claude Code")
    roles = [c["role"] for c in body["contents"]]
    assert roles == ["user", "model", "user", "model", "user"]
    responses = [p["functionResponse"] for c in body["contents"] for p in c["parts"] if "functionResponse" in p]
    assert [r["name"] for r in responses] == ["Read", "Bash", "Read"]  # named from the tool_use blocks
    assert "error" in responses[1]["response"]
    assert {"inlineData": {"mimeType": "image/png", "data": IMG}} in body["contents"][4]["parts"]
    decls = json.dumps(body["tools"])
    assert "$schema" not in decls and "$ref" not in decls and "additionalProperties" not in decls
    assert body["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 10000}


def test_openai_request_to_anthropic():
    req = openai_chat.decode_request({
        "model": "claude-x", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris and the time?"},
            {"role": "assistant", "reasoning_content": "unsigned thoughts", "content": None, "tool_calls": [
                {"id": "functions.get_weather:0", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_ok", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_ok", "content": "12:00"},
            {"role": "user", "content": "And tomorrow?"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}},
                  {"type": "function", "function": {"name": "get_time"}}],
        "tool_choice": "required", "parallel_tool_calls": False, "stop": "END", "temperature": 1.6,
        "seed": 3, "response_format": {"type": "json_schema", "json_schema": {
            "name": "w", "schema": {"type": "object", "properties": {"t": {"type": "number"}}}}},
    })
    body = an.encode_request(req)
    user, assistant, results = body["messages"]
    assert assistant["role"] == "assistant"
    assert [b["type"] for b in assistant["content"]] == ["tool_use", "tool_use"]  # unsigned thinking dropped
    weather_id = assistant["content"][0]["id"]
    assert weather_id != "functions.get_weather:0" and all(c.isalnum() or c in "_-" for c in weather_id)
    assert weather_id == an.safe_tool_id("functions.get_weather:0")  # stable across requests
    assert assistant["content"][1]["id"] == "call_ok"
    # tool results first, then the merged user texts and image
    assert results["role"] == "user"
    assert [b["type"] for b in results["content"]] == ["tool_result", "tool_result", "text", "image"]
    assert results["content"][0] == {"type": "tool_result", "tool_use_id": weather_id, "content": "18C"}
    assert results["content"][3]["source"] == {"type": "url", "url": "https://x.test/a.png"}
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["tools"][1] == {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
    assert body["stop_sequences"] == ["END"] and body["temperature"] == 1.0 and body["max_tokens"] == 4096
    assert body["system"][0] == {"type": "text", "text": "Be brief."}
    assert "JSON Schema" in body["system"][1]["text"] and '"t":{"type":"number"}' in body["system"][1]["text"]
    assert "seed" in req.dropped and "seed" not in body


@pytest.mark.parametrize("effort, max_tokens, thinking, out_max", [
    ("low", None, {"type": "enabled", "budget_tokens": 1024}, 4096),
    ("medium", None, {"type": "enabled", "budget_tokens": 8192}, 8192 + 4096),
    ("high", 30000, {"type": "enabled", "budget_tokens": 24576}, 30000),
    ("high", 1000, {"type": "enabled", "budget_tokens": 24576}, 25576),
    ("minimal", 500, None, 500),
])
def test_reasoning_effort_to_thinking_budget(effort, max_tokens, thinking, out_max):
    req = cn.Request("claude-x", [cn.Message("user", [cn.Text("hi")])], max_tokens=max_tokens,
                     reasoning=cn.Reasoning(effort=effort), temperature=0.3, top_k=5)
    body = an.encode_request(req)
    assert body.get("thinking") == thinking and body["max_tokens"] == out_max
    if thinking:  # Anthropic refuses these with thinking on
        assert "temperature" not in body and "top_k" not in body
        assert {"temperature", "top_k"} <= set(req.dropped)
    else:
        assert (body["temperature"], body["top_k"]) == (0.3, 5)


def test_thinking_left_off_where_anthropic_would_refuse_it():
    msgs = [cn.Message("user", [cn.Text("go")]),
            cn.Message("assistant", [cn.ToolCall("call_1", "f", "{}")]),
            cn.Message("user", [cn.ToolResult("call_1", [cn.Text("ok")])])]
    body = an.encode_request(cn.Request("c", msgs, reasoning=cn.Reasoning(effort="high")))
    assert "thinking" not in body  # the tool loop's assistant turn has no signed thinking
    msgs[1].content.insert(0, cn.Thinking("t", "sig"))
    assert an.encode_request(cn.Request("c", msgs, reasoning=cn.Reasoning(effort="high")))["thinking"]
    forced = cn.Request("c", msgs, tools=[cn.Tool("f")], tool_choice=cn.ToolChoice("tool", "f"),
                        reasoning=cn.Reasoning(budget_tokens=2000))
    body = an.encode_request(forced)
    assert "thinking" not in body and body["tool_choice"] == {"type": "tool", "name": "f"}


def test_encode_request_turn_rules():
    with pytest.raises(cn.ConversionError) as e:
        an.encode_request(cn.Request("c", [cn.Message("assistant", [cn.Text("Hello! How can I help?")]),
                                           cn.Message("user", [cn.Text("hi")])]))
    assert e.value.param == "messages.0.role"
    body = an.encode_request(cn.Request("c", [
        cn.Message("user", [cn.Text("a")]), cn.Message("user", [cn.Text("b")]),
        cn.Message("assistant", [cn.Thinking("unsigned"), cn.Text("")]),  # nothing left: skipped
        cn.Message("assistant", [cn.Text("The answer is ")]),  # prefill: trailing space removed
    ]))
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                              {"type": "text", "text": "b"}]},
                                {"role": "assistant", "content": [{"type": "text", "text": "The answer is"}]}]
    with pytest.raises(cn.ConversionError):
        an.encode_request(cn.Request("c", [cn.Message("user", [cn.Text("")])]))


@pytest.mark.parametrize("patch, param", [
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": "100"}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {
        "type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]}]}, "messages.0.content.0.type"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
        {"type": "search_result", "source": "s", "title": "t", "content": []}]}]}]},
     "messages.0.content.0.content.0.type"),
    ({"tools": [{"type": 7, "name": "web_search"}]}, "tools.0.type"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
    ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
    ({"system": [{"type": "image", "source": {}}]}, "system.0"),
])
def test_requests_that_cannot_be_decoded(patch, param):
    data = {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **patch}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(cn.ConversionError) as e:
        an.decode_request(data)
    assert e.value.param == param and str(e.value)


def test_decode_request_small_things():
    req = an.decode_request({
        "model": "claude-x", "max_tokens": 50, "system": "sys", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
                                              {"type": "text", "text": "hello"}]},
            {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/i.png"}}]}],
        "tool_choice": {"type": "none"}, "stop_sequences": ["\n\nHuman:"], "top_k": 40, "top_p": 0.9,
        "thinking": {"type": "disabled"}, "service_tier": "auto",
        "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
    })
    assert req.system == [cn.Text("sys")] and req.reasoning is None and req.tool_choice == cn.ToolChoice("none")
    assert req.messages[1].content[0] == cn.RedactedThinking("EmwKAhgBEgy3va3pzix/LafPsn4a")
    assert req.messages[2].content[0] == cn.Image(url="https://x/i.png")
    assert (req.top_k, req.top_p, req.stop) == (40, 0.9, ["\n\nHuman:"])
    assert req.response_format == cn.ResponseFormat("json_schema", {"type": "object"})
    assert req.dropped == ["service_tier"]
    adaptive = an.decode_request({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                                  "thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}})
    assert adaptive.reasoning == cn.Reasoning(effort="high")


def test_gateway_call_ids_carry_gemini_signatures_back():
    gid = call_ids.new_call_id("CiQB0e2Kb3+zX5c/Lq9n2w==")
    req = an.decode_request({"model": "gemini-3-pro-preview", "max_tokens": 10, "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": gid, "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": gid, "content": "done"}]}]})
    part = gemini.encode_request(req)["contents"][1]["parts"][0]
    assert part["thoughtSignature"] == "CiQB0e2Kb3+zX5c/Lq9n2w=="


# --- responses ---------------------------------------------------------------

ANTHROPIC_MESSAGE = {
    "id": "msg_01Aq9w938a90dw8q", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": "The user wants the weather; I'll call the tool.", "signature": SIG},
        {"type": "text", "text": "I'll check the current weather in San Francisco for you."},
        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
         "input": {"location": "San Francisco, CA", "unit": "celsius"}},
    ],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 472, "output_tokens": 91, "cache_creation_input_tokens": 120,
              "cache_read_input_tokens": 2048},
}


def test_anthropic_response_round_trip():
    Message.model_validate(ANTHROPIC_MESSAGE)  # the fixture is real-shaped
    r = an.decode_response(ANTHROPIC_MESSAGE)
    assert r.finish == "tool_calls" and r.id == "msg_01Aq9w938a90dw8q"
    assert r.usage == cn.Usage(input_tokens=472 + 2048 + 120, output_tokens=91, cached_tokens=2048,
                               cache_write_tokens=120)
    thinking, text, call = r.content
    assert thinking.signature == SIG and call.arguments == '{"location":"San Francisco, CA","unit":"celsius"}'
    out = an.encode_response(r, "alias")
    m = Message.model_validate(out)
    assert m.model == "alias"
    assert {**out, "model": ANTHROPIC_MESSAGE["model"]} == ANTHROPIC_MESSAGE

    # and to an OpenAI client
    chat = openai_chat.encode_response(r, "alias")
    assert chat["usage"]["prompt_tokens"] == 2640 and chat["usage"]["prompt_tokens_details"]["cached_tokens"] == 2048


def test_gemini_response_to_anthropic_client():
    body = {"candidates": [{"content": {"role": "model", "parts": [
        {"text": "Thinking it over.", "thought": True, "thoughtSignature": "CiQB0e2K"},
        {"text": "Calling."},
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "AAAA"}]},
        "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 3,
                          "cachedContentTokenCount": 4}, "responseId": "abc123"}
    out = an.encode_response(gemini.decode_response(body), "claude-alias")
    m = Message.model_validate(out)
    assert m.id == "msg_abc123" and m.stop_reason == "tool_use"
    assert [b.type for b in m.content] == ["thinking", "text", "tool_use"]
    assert m.content[0].signature == "CiQB0e2K" and m.content[2].input == {"city": "Paris"}
    assert call_ids.signature_of(m.content[2].id) == "AAAA"
    assert (m.usage.input_tokens, m.usage.cache_read_input_tokens, m.usage.output_tokens) == (6, 4, 8)


@pytest.mark.parametrize("reason, finish", [
    ("end_turn", "stop"), ("max_tokens", "length"), ("stop_sequence", "stop_sequence"), ("tool_use", "tool_calls"),
    ("refusal", "content_filter"), ("pause_turn", "stop"), ("model_context_window_exceeded", "length")])
def test_stop_reasons_round_trip(reason, finish):
    body = {**ANTHROPIC_MESSAGE, "stop_reason": reason,
            "content": ANTHROPIC_MESSAGE["content"] if reason == "tool_use" else [{"type": "text", "text": "x"}]}
    r = an.decode_response(body)
    assert r.finish == finish
    assert an.encode_response(r, "m")["stop_reason"] == reason


def test_finish_mapping_from_other_upstreams():
    r = cn.Response("chatcmpl-1", "m", [cn.ToolCall("call_1", "f", "{bad")], "stop")
    out = an.encode_response(r, "m")
    assert out["stop_reason"] == "tool_use" and out["content"][0]["input"] == {}  # some upstreams say "stop"
    assert an.encode_response(cn.Response("x", "m", [cn.Text("no")], "content_filter"), "m")["stop_reason"] == "refusal"
    assert an.encode_response(cn.Response("x", "m", [cn.Text("")], "length"), "m")["content"] == []


def test_errors():
    assert an.error_body(429, "slow down") == {"type": "error", "error": {"type": "rate_limit_error",
                                                                          "message": "slow down"}}
    assert [an.error_body(s, "m")["error"]["type"] for s in (400, 401, 403, 404, 413, 500, 502, 503, 529)] == [
        "invalid_request_error", "authentication_error", "permission_error", "not_found_error",
        "invalid_request_error", "api_error", "api_error", "overloaded_error", "overloaded_error"]
    raw = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}'
    assert an.decode_error(529, raw) == ("Overloaded", "overloaded_error")
    assert an.decode_error(502, b"<html>Bad Gateway</html>") == ("<html>Bad Gateway</html>", None)
    r = an.decode_response(json.loads(raw))
    assert r.finish == "error" and r.finish_detail == "Overloaded"


# --- streams: canonical -> Anthropic SSE ---------------------------------------

EVENT = TypeAdapter(RawMessageStreamEvent)


def parse_sse(data: bytes) -> list[tuple[str, dict]]:
    out = []
    for raw in data.decode().split("\n\n"):
        if not raw:
            continue
        name_line, data_line = raw.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        payload = json.loads(data_line[6:])
        assert payload["type"] == name_line[7:]
        out.append((name_line[7:], payload))
    return out


def check_well_formed(data: bytes) -> list[dict]:
    """Every event valid for the SDK; one message_start first; blocks one at a time, indexes 0..n-1."""
    events = [p for _, p in parse_sse(data)]
    for p in events:
        if p["type"] != "error":
            EVENT.validate_python(p)
    assert events[0]["type"] in ("message_start", "error")
    assert [p["type"] for p in events].count("message_start") <= 1
    open_block, kinds, next_index = None, {}, 0
    for p in events:
        if p["type"] == "content_block_start":
            assert open_block is None and p["index"] == next_index
            open_block, next_index = p["index"], next_index + 1
            kinds[p["index"]] = p["content_block"]["type"]
        elif p["type"] == "content_block_delta":
            assert p["index"] == open_block
            allowed = {"text": {"text_delta"}, "thinking": {"thinking_delta", "signature_delta"},
                       "tool_use": {"input_json_delta"}}[kinds[p["index"]]]
            assert p["delta"]["type"] in allowed  # never a thinking delta in a text block
        elif p["type"] == "content_block_stop":
            assert p["index"] == open_block
            open_block = None
        elif p["type"] in ("message_delta", "message_stop", "error"):
            assert open_block is None or p["type"] == "error"
    if events[-1]["type"] != "error":
        assert [p["type"] for p in events[-2:]] == ["message_delta", "message_stop"]
    return events


def sdk_final(data: bytes) -> Message:
    """The anthropic SDK's own stream reader and accumulator, fed our bytes over a mock transport."""
    def handler(request):
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=data)

    client = anthropic.Anthropic(api_key="k", base_url="http://gateway.test", max_retries=0,
                                 http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    with client.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as s:
        return s.get_final_message()


def test_hand_written_events_to_anthropic_stream():
    events = [
        cn.MessageStart("resp-1", "upstream-model"),
        cn.BlockStart(0, cn.Thinking("")), cn.ThinkingDelta(0, "Let me "), cn.SignatureDelta(0, "early"),
        cn.ThinkingDelta(0, "think."), cn.SignatureDelta(0, SIG), cn.BlockStop(0),  # one signature, the last
        cn.BlockStart(1, cn.Text("")), cn.TextDelta(1, "Checking "), cn.TextDelta(1, "both."), cn.BlockStop(1),
        cn.BlockStart(2, cn.ToolCall("call_a", "get_weather", "")),
        cn.ArgumentsDelta(2, '{"ci'), cn.ArgumentsDelta(2, 'ty": "Par'), cn.ArgumentsDelta(2, 'is"}'),
        cn.BlockStop(2),
        cn.BlockStart(3, cn.ToolCall("call_b", "get_time", "")),
        cn.ArgumentsDelta(3, '{"tz":'), cn.ArgumentsDelta(3, ' "CET"}'), cn.BlockStop(3),
        cn.UsageUpdate(cn.Usage(input_tokens=120, output_tokens=40, cached_tokens=100, reasoning_tokens=12)),
        cn.Finish("tool_calls"),
    ]
    enc = an.StreamEncoder("claude-alias")
    data = b"".join(enc.encode([e]) for e in events)  # one event per call, as a live stream delivers them
    wire = check_well_formed(data)
    assert wire[0]["message"]["id"] == "msg_resp-1" and wire[0]["message"]["model"] == "claude-alias"
    thinking = [p for p in wire if p.get("index") == 0]
    assert [p["delta"]["type"] for p in thinking[1:-1]] == ["thinking_delta", "thinking_delta", "signature_delta"]
    assert wire[-2]["usage"] == {"input_tokens": 20, "output_tokens": 40, "cache_creation_input_tokens": 0,
                                 "cache_read_input_tokens": 100, "output_tokens_details": {"thinking_tokens": 12}}
    m = sdk_final(data)
    assert m.model == "claude-alias" and m.stop_reason == "tool_use" and m.stop_sequence is None
    assert [b.type for b in m.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert (m.content[0].thinking, m.content[0].signature) == ("Let me think.", SIG)
    assert m.content[1].text == "Checking both."
    assert [(b.id, b.name, b.input) for b in m.content[2:]] == [
        ("call_a", "get_weather", {"city": "Paris"}), ("call_b", "get_time", {"tz": "CET"})]
    assert (m.usage.input_tokens, m.usage.output_tokens, m.usage.cache_read_input_tokens) == (20, 40, 100)


def test_interleaved_and_sloppy_events_still_make_a_valid_stream():
    """Two tool calls whose argument fragments interleave, a delta without a start,
    an empty text block, a thinking delta aimed at a text block."""
    events = [
        cn.BlockStart(0, cn.ToolCall("call_a", "a", "")), cn.BlockStart(1, cn.ToolCall("call_b", "b", "")),
        cn.ArgumentsDelta(0, '{"x":'), cn.ArgumentsDelta(1, '{"y":'), cn.ArgumentsDelta(1, "2}"),
        cn.ArgumentsDelta(0, "1}"), cn.BlockStop(1), cn.BlockStop(0),
        cn.BlockStart(2, cn.Text("")), cn.BlockStop(2),  # empty: never sent
        cn.TextDelta(3, "tail"), cn.ThinkingDelta(3, "misrouted"),
        cn.MessageStart("late", "m"),  # too late: ignored
        cn.Finish("stop"),
    ]
    data = an.StreamEncoder("m").encode(events)
    wire = check_well_formed(data)
    assert [p["content_block"]["type"] for p in wire if p["type"] == "content_block_start"] == [
        "tool_use", "tool_use", "text"]
    m = sdk_final(data)
    assert [(b.type, getattr(b, "input", None) or getattr(b, "text", None)) for b in m.content] == [
        ("tool_use", {"x": 1}), ("tool_use", {"y": 2}), ("text", "tail")]
    assert m.stop_reason == "tool_use"  # "stop" after tool calls is a tool_use stop for Anthropic clients


GEMINI_STREAM = b"".join(b"data: " + json.dumps(b).encode() + b"\r\n\r\n" for b in (
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hmm", "thought": True}]}}],
     "responseId": "r1", "modelVersion": "gemini-2.5-flash"},
    {"candidates": [{"content": {"role": "model", "parts": [
        {"text": ", the weather.", "thought": True, "thoughtSignature": "CiQB0e2Kb3+zX5c/Lq9n2w=="}]}}]},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}}]},
    {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "AAAA"}]}}]},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP"}],
     "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 4, "thoughtsTokenCount": 2}},
))


def convert(decoder, encoder, data: bytes, cuts=()) -> bytes:
    t = Converting(decoder, encoder)
    out, last = b"", 0
    for c in list(cuts) + [len(data)]:
        out += t.feed(data[last:c])
        last = c
    return out + t.finish()


def test_gemini_stream_to_anthropic_client():
    data = convert(gemini.StreamDecoder(), an.StreamEncoder("claude-alias"), GEMINI_STREAM)
    check_well_formed(data)
    m = sdk_final(data)
    assert m.id == "msg_r1" and m.stop_reason == "tool_use"
    assert [b.type for b in m.content] == ["thinking", "text", "tool_use"]  # no empty text block at the end
    assert (m.content[0].thinking, m.content[0].signature) == ("Hmm, the weather.", "CiQB0e2Kb3+zX5c/Lq9n2w==")
    assert m.content[1].text == "Hello" and m.content[2].input == {"city": "Paris"}
    assert call_ids.signature_of(m.content[2].id) == "AAAA"
    assert (m.usage.input_tokens, m.usage.output_tokens) == (7, 6)


def test_truncated_upstream_ends_anthropic_stream_with_error():
    cut = GEMINI_STREAM[: GEMINI_STREAM.index(b'"finishReason"') - 60]
    data = convert(gemini.StreamDecoder(), an.StreamEncoder("m"), cut)
    events = check_well_formed(data)
    assert events[-1] == {"type": "error", "error": {"type": "api_error", "message": events[-1]["error"]["message"]}}
    assert "ended before" in events[-1]["error"]["message"]
    with pytest.raises(anthropic.APIStatusError) as e:
        sdk_final(data)
    assert "ended before" in str(e.value)


def test_stream_error_event_shapes():
    enc = an.StreamEncoder("m")
    out = enc.encode([cn.MessageStart("x", "m"), cn.StreamError("Overloaded", "upstream_error", 503),
                      cn.TextDelta(0, "after")])
    assert parse_sse(out) == [("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                    "message": "Overloaded"}})]
    out = an.StreamEncoder("m").encode([cn.TextDelta(0, "a"), cn.Finish("error", "MALFORMED_FUNCTION_CALL")])
    kinds = [k for k, _ in parse_sse(out)]
    assert kinds[0] == "message_start" and kinds[-1] == "error" and "message_delta" not in kinds


# --- streams: Anthropic SSE -> canonical ---------------------------------------

def anthropic_sse(*events) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


ANTHROPIC_STREAM = anthropic_sse(
    {"type": "message_start", "message": {
        "id": "msg_01ABCdef", "type": "message", "role": "assistant", "content": [],
        "model": "claude-sonnet-4-5-20250929", "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 472, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2048,
                  "output_tokens": 2}}},
    {"type": "ping"},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta",
                                                          "thinking": "The user wants the weather in Paris."}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": " I'll use the tool."}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": SIG}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Okay, let's check"}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": " the weather for Paris:"}},
    {"type": "content_block_stop", "index": 1},
    {"type": "ping"},
    {"type": "content_block_start", "index": 2, "content_block": {
        "type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"location\":"}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": " \"Paris, Fr"}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "ance\", \"unit\""}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ": \"celsius\"}"}},
    {"type": "content_block_stop", "index": 2},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 89}},
    {"type": "message_stop"},
)


def decode_all(data: bytes, cuts=()) -> list[cn.Event]:
    d = an.StreamDecoder()
    out, last = [], 0
    for c in list(cuts) + [len(data)]:
        out += d.feed(data[last:c])
        last = c
    return out + d.finish()


def test_anthropic_stream_decodes():
    events = decode_all(ANTHROPIC_STREAM)
    assert events[0] == cn.MessageStart("msg_01ABCdef", "claude-sonnet-4-5-20250929", events[0].created)
    assert events[1] == cn.UsageUpdate(cn.Usage(input_tokens=2520, output_tokens=2, cached_tokens=2048))
    assert cn.SignatureDelta(0, SIG) in events
    assert [e.json for e in events if isinstance(e, cn.ArgumentsDelta)] == [
        '{"location":', ' "Paris, Fr', 'ance", "unit"', ': "celsius"}']  # the empty fragment is skipped
    assert events[-2:] == [cn.UsageUpdate(cn.Usage(input_tokens=2520, output_tokens=89, cached_tokens=2048)),
                           cn.Finish("tool_calls")]


def openai_chunks(out: bytes) -> list[ChatCompletionChunk]:
    events = [e for e in out.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    return [ChatCompletionChunk.model_validate(json.loads(e.removeprefix("data: "))) for e in events[:-1]]


def test_anthropic_stream_to_openai_client():
    chunks = openai_chunks(convert(an.StreamDecoder(), openai_chat.StreamEncoder("alias", True), ANTHROPIC_STREAM))
    assert {c.id for c in chunks} == {"chatcmpl-msg_01ABCdef"} and {c.model for c in chunks} == {"alias"}
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas) == "Okay, let's check the weather for Paris:"
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == \
        "The user wants the weather in Paris. I'll use the tool."
    calls = [tc for d in deltas for tc in d.tool_calls or ()]
    assert (calls[0].id, calls[0].function.name) == ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather")
    assert json.loads("".join(tc.function.arguments for tc in calls)) == {"location": "Paris, France",
                                                                          "unit": "celsius"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    u = chunks[-1].usage
    assert (u.prompt_tokens, u.completion_tokens, u.prompt_tokens_details.cached_tokens) == (2520, 89, 2048)


def test_anthropic_stream_to_anthropic_client():
    data = convert(an.StreamDecoder(), an.StreamEncoder("alias"), ANTHROPIC_STREAM)
    wire = check_well_formed(data)
    assert wire[0]["message"]["usage"] == {"input_tokens": 472, "output_tokens": 0,
                                           "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2048}
    m = sdk_final(data)
    expected = sdk_final(ANTHROPIC_STREAM)  # what the SDK makes of the upstream's own stream
    assert m.content == expected.content and m.stop_reason == expected.stop_reason == "tool_use"
    assert m.id == expected.id and m.model == "alias"
    assert (m.usage.input_tokens, m.usage.output_tokens, m.usage.cache_read_input_tokens) == (472, 89, 2048)


def normalized_events(events: list[cn.Event]) -> list:
    return [cn.MessageStart(e.id, e.model) if isinstance(e, cn.MessageStart) else e for e in events]


def test_any_chunking_gives_the_same_events():
    data = ANTHROPIC_STREAM.replace(b"\n", b"\r\n")
    whole = normalized_events(decode_all(data))
    assert whole == normalized_events(decode_all(ANTHROPIC_STREAM))
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 40)))
        assert normalized_events(decode_all(data, cuts)) == whole
    assert normalized_events(decode_all(data, range(1, len(data)))) == whole  # one byte at a time


def test_truncated_anthropic_stream():
    for marker in (b"event: message_stop", b"event: message_delta", b'"partial_json": " \\"Paris'):
        events = decode_all(ANTHROPIC_STREAM[: ANTHROPIC_STREAM.index(marker)])
        assert isinstance(events[-1], cn.StreamError) and events[-1].code == "stream_truncated"
        assert not any(isinstance(e, cn.Finish) for e in events)
        started = {e.index for e in events if isinstance(e, cn.BlockStart)}
        assert started == {e.index for e in events if isinstance(e, cn.BlockStop)}  # open blocks closed
    out = convert(an.StreamDecoder(), openai_chat.StreamEncoder("a", False),
                  ANTHROPIC_STREAM[: ANTHROPIC_STREAM.index(b"event: message_stop")])
    assert json.loads(out.decode().strip().split("\n\n")[-1][6:])["error"]["code"] == "stream_truncated"


def test_anthropic_error_event_mid_stream():
    data = ANTHROPIC_STREAM[: ANTHROPIC_STREAM.index(b"event: content_block_start")] + anthropic_sse(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    events = decode_all(data)
    assert events[-1] == cn.StreamError("Overloaded", "overloaded_error", 529)
    out = convert(an.StreamDecoder(), an.StreamEncoder("m"), data)
    assert parse_sse(out)[-1] == ("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                       "message": "Overloaded"}})


def test_server_tool_blocks_are_skipped_and_indexes_stay_contiguous():
    data = anthropic_sse(
        {"type": "message_start", "message": {"id": "msg_1", "model": "c", "usage": {"input_tokens": 5}}},
        {"type": "content_block_start", "index": 0, "content_block": {
            "type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": "Found"}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "citations_delta", "citation": {}}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "pause_turn"}, "usage": {"output_tokens": 3}},
        {"type": "message_stop"},
    )
    events = decode_all(data)
    assert [e for e in events if not isinstance(e, (cn.MessageStart, cn.UsageUpdate))] == [
        cn.BlockStart(0, cn.Text("")), cn.TextDelta(0, "Found"), cn.BlockStop(0), cn.Finish("stop", "pause_turn")]
    m = sdk_final(convert(an.StreamDecoder(), an.StreamEncoder("c"), data))
    assert m.stop_reason == "pause_turn" and m.content[0].text == "Found"


@pytest.mark.parametrize("bad", [
    {"type": "content_block_delta", "index": 0, "delta": "x"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "wrong block type"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": 5}},
    {"type": "content_block_delta", "index": [0], "delta": {}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "dup index"}},
    {"type": "content_block_start", "index": 1, "content_block": "x"},
    {"type": "content_block_stop", "index": 7},
    {"type": "message_start", "message": "again"},
    {"type": "message_delta", "delta": [], "usage": "x"},
    {"type": "error", "error": "boom"},
])
def test_malformed_events_on_an_open_block(bad):
    prefix = ANTHROPIC_STREAM[: ANTHROPIC_STREAM.index(b"event: content_block_delta")]
    events = decode_all(prefix + anthropic_sse(bad) + anthropic_sse(*[
        {"type": "content_block_stop", "index": 0}, {"type": "message_stop"}]))
    assert isinstance(events[-1], (cn.Finish, cn.StreamError))
    assert not any(isinstance(e, (cn.TextDelta, cn.ThinkingDelta)) for e in events)
    check_well_formed(an.StreamEncoder("m").encode(events))


# --- hypothesis: arbitrary JSON raises only ConversionError ---------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8) | st.sampled_from(["text", "image", "tool_use", "tool_result", "thinking", "user",
                                             "assistant", "enabled", "auto", "tool", "base64", "url"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "text", "role", "content", "source", "id", "name", "input", "tool_use_id",
                         "is_error", "thinking", "signature", "data", "media_type", "url", "cache_control",
                         "budget_tokens", "model", "max_tokens", "messages", "system", "tools", "tool_choice",
                         "usage", "stop_reason", "input_schema", "metadata", "user_id"]) | st.text(max_size=5),
        children, max_size=5),
    max_leaves=25,
)


def paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, prefix + (i,))


GOLDEN_PATHS = list(paths(CLAUDE_CODE_REQUEST))[1:]
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_and_encode(data):
    try:
        req = an.decode_request(data)
    except cn.ConversionError:
        return
    try:
        an.encode_request(req)
    except cn.ConversionError:
        pass


@FAST
@given(st.dictionaries(st.text(max_size=12), JSON, max_size=8) | st.fixed_dictionaries(
    {"model": st.just("m"), "max_tokens": JSON, "messages": JSON}, optional={"system": JSON, "tools": JSON,
                                                                           "tool_choice": JSON, "thinking": JSON}))
def test_decode_request_raises_only_conversion_errors(data):
    _decode_and_encode(data)


@FAST
@given(st.sampled_from(GOLDEN_PATHS), JSON)
def test_mutated_golden_request_raises_only_conversion_errors(path, value):
    data = copy.deepcopy(CLAUDE_CODE_REQUEST)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    _decode_and_encode(data)


@FAST
@given(JSON | st.fixed_dictionaries({}, optional={"content": JSON, "usage": JSON, "stop_reason": JSON,
                                                  "id": JSON, "model": JSON, "type": JSON, "error": JSON}))
def test_decode_response_never_raises(body):
    r = an.decode_response(body)
    Message.model_validate(an.encode_response(r, "m"))


STREAM_EVENT = st.fixed_dictionaries(
    {"type": st.sampled_from(["message_start", "content_block_start", "content_block_delta", "content_block_stop",
                              "message_delta", "message_stop", "ping", "error"])},
    optional={"index": st.integers(-1, 3) | JSON, "message": JSON, "content_block": JSON, "delta": JSON,
              "usage": JSON, "error": JSON})


@FAST
@given(st.booleans(), st.lists(STREAM_EVENT | JSON, max_size=10))
def test_stream_decoder_survives_garbage_events(prefixed, payloads):
    data = b"".join(b"event: x\ndata: " + json.dumps(p).encode() + b"\n\n" for p in payloads)
    prefix = ANTHROPIC_STREAM[: ANTHROPIC_STREAM.index(b"event: content_block_delta")]  # a thinking block open
    events = decode_all((prefix if prefixed else b"") + data)
    assert isinstance(events[-1], (cn.StreamError, cn.Finish))
    check_well_formed(an.StreamEncoder("m").encode(events))
