"""OpenAI Responses API <-> canonical: golden conversions checked against the openai SDK's own types."""

import json
import random

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import OpenAI, omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseCreateParams, ResponseStreamEvent
from pydantic import TypeAdapter

from converters import call_ids, gemini, responses
from converters import canonical as cn
from converters.pipeline import Converting

IMG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
SIG = "CiQB0e2Kb3+zX5c/Lq9n2w=="
ENC = "gAAAAABo6x1Zr8k3VNQfN0x1pQyH2uD3tQ1m6QH8Z0YkD2v9w0c9p2mYk1tWbW3VQ=="
EVENT = TypeAdapter(ResponseStreamEvent)
CREATE = TypeAdapter(ResponseCreateParams)

SHELL_SCHEMA = {
    "type": "object",
    "properties": {
        "command": {"type": "array", "items": {"type": "string"}, "description": "The command to execute"},
        "workdir": {"type": "string", "description": "The working directory to execute the command in"},
        "timeout_ms": {"type": "number", "description": "The timeout for the command in milliseconds"},
        "with_escalated_permissions": {"type": "boolean"},
        "justification": {"type": "string"},
    },
    "required": ["command"],
    "additionalProperties": False,
}
PLAN_SCHEMA = {
    "type": "object",
    "properties": {
        "explanation": {"type": "string"},
        "plan": {"type": "array", "description": "The list of steps", "items": {
            "type": "object",
            "properties": {"step": {"type": "string"},
                           "status": {"type": "string", "description": "One of: pending, in_progress, completed"}},
            "required": ["step", "status"], "additionalProperties": False}},
    },
    "required": ["plan"],
    "additionalProperties": False,
}

# What Codex CLI sends (store: false, the whole conversation in input, encrypted reasoning replayed)
CODEX_REQUEST = {
    "model": "gpt-5-codex",
    "instructions": "You are Codex, based on GPT-5. You are running as a coding agent in the Codex CLI.",
    "input": [
        {"type": "message", "role": "developer", "content": [
            {"type": "input_text",
             "text": "<permissions instructions>Sandbox: workspace-write.</permissions instructions>"}]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "<environment_context>\n  <cwd>/work/app</cwd>\n</environment_context>"}]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Run the tests and fix the failure. Screenshot:"},
            {"type": "input_image", "image_url": f"data:image/png;base64,{IMG}", "detail": "auto"}]},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "**Running tests**\n\nFirst pytest."}],
         "encrypted_content": ENC},
        {"type": "function_call", "name": "shell", "call_id": "call_Xq1mN2",
         "arguments": "{\"command\":[\"bash\",\"-lc\",\"pytest -q\"],\"workdir\":\"/work/app\"}"},
        {"type": "function_call_output", "call_id": "call_Xq1mN2",
         "output": "{\"output\":\"F.\\n1 failed, 1 passed\",\"metadata\":{\"exit_code\":1,\"duration_seconds\":0.4}}"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "One test fails."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go on"}]},
    ],
    "tools": [
        {"type": "function", "name": "shell", "description": "Runs a shell command and returns its output.",
         "strict": False, "parameters": SHELL_SCHEMA},
        {"type": "function", "name": "update_plan", "description": "Updates the task plan.", "strict": False,
         "parameters": PLAN_SCHEMA},
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "reasoning": {"effort": "high", "summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "0199a7c2-5c1e-7d43-9d55-3f8a1c0e2b11",
    "text": {"verbosity": "low"},
}


def sdk_check(body: dict) -> None:
    """Validate a request body with the SDK's ResponseCreateParams.

    The SDK's param types require `id` (and `status`) on replayed assistant messages and reasoning
    items; with store: false those ids name nothing stored, so Codex (and encode_request) leave
    them out and the API accepts that. They are filled in here and only here."""
    items = []
    for item in body.get("input") or ():
        if item.get("type") == "reasoning":
            item = {"id": "rs_0", **item}
        elif item.get("type") == "message" and item.get("role") == "assistant":
            item = {"id": "msg_0", "status": "completed", **item}
        items.append(item)
    CREATE.validate_python({**body, "input": items})


def test_codex_request_fixture_is_sdk_shaped():
    sdk_check(CODEX_REQUEST)


def test_codex_request_to_canonical():
    req = responses.decode_request(CODEX_REQUEST)
    assert req.model == "gpt-5-codex" and req.stream and req.include_usage
    assert [t.text for t in req.system] == [CODEX_REQUEST["instructions"],
                                             CODEX_REQUEST["input"][0]["content"][0]["text"]]
    assert [m.role for m in req.messages] == ["user", "assistant", "user", "assistant", "user"]
    user, calling, result, answer, more = req.messages
    assert len(user.content) == 3 and user.content[2] == cn.Image("image/png", IMG)
    thinking, call = calling.content
    assert thinking == cn.Thinking("**Running tests**\n\nFirst pytest.", encrypted_content=ENC)
    assert (call.id, call.name, json.loads(call.arguments)["workdir"]) == ("call_Xq1mN2", "shell", "/work/app")
    assert result.content == [cn.ToolResult("call_Xq1mN2", [cn.Text(CODEX_REQUEST["input"][5]["output"])],
                                            name="shell")]  # named from its call
    assert answer.content == [cn.Text("One test fails.")] and more.content == [cn.Text("go on")]
    assert [t.name for t in req.tools] == ["shell", "update_plan"] and req.tools[0].strict is False
    assert req.tools[0].parameters == SHELL_SCHEMA
    assert req.tool_choice == cn.ToolChoice("auto") and req.parallel_tool_calls is False
    assert req.reasoning == cn.Reasoning(effort="high", include_thoughts=True)
    assert {"store", "include", "prompt_cache_key", "text.verbosity"} <= set(req.dropped)


def test_codex_request_round_trip():
    req = responses.decode_request(CODEX_REQUEST)
    body = responses.encode_request(req)
    sdk_check(body)  # the SDK's own request type accepts it
    assert body["store"] is False and body["stream"] is True
    assert body["include"] == ["reasoning.encrypted_content"]
    assert body["instructions"] == CODEX_REQUEST["instructions"]
    assert body["tools"] == CODEX_REQUEST["tools"]
    assert body["reasoning"] == {"effort": "high", "summary": "auto"}
    reasoning = [i for i in body["input"] if i["type"] == "reasoning"]
    assert reasoning == [{"type": "reasoning", "encrypted_content": ENC,
                          "summary": [{"type": "summary_text", "text": "**Running tests**\n\nFirst pytest."}]}]
    again = responses.decode_request(body)
    for name in ("model", "messages", "system", "tools", "tool_choice", "parallel_tool_calls", "max_tokens",
                 "temperature", "top_p", "response_format", "reasoning", "stream"):
        assert getattr(again, name) == getattr(req, name), name
    # item order is kept
    kinds = [(i["type"], i.get("role")) for i in body["input"]]
    assert kinds == [("message", "developer"), ("message", "user"), ("reasoning", None), ("function_call", None),
                     ("function_call_output", None), ("message", "assistant"), ("message", "user")]


def test_codex_request_to_gemini():
    req = responses.decode_request(CODEX_REQUEST)
    body = gemini.encode_request(req)
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user", "model", "user"]
    assert body["contents"][0]["parts"][2] == {"inlineData": {"mimeType": "image/png", "data": IMG}}
    model_parts = body["contents"][1]["parts"]
    assert model_parts[0]["functionCall"]["name"] == "shell"  # the OpenAI reasoning is not replayed to Gemini
    assert body["contents"][2]["parts"][0]["functionResponse"]["name"] == "shell"
    assert body["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 24576}
    assert [d["name"] for d in body["tools"][0]["functionDeclarations"]] == ["shell", "update_plan"]


def test_string_input_and_other_request_fields():
    req = responses.decode_request({
        "model": "m", "input": "hi", "instructions": "be brief", "max_output_tokens": 300, "temperature": 0.5,
        "top_p": 1, "tool_choice": {"type": "function", "name": "f"}, "metadata": {"a": "b"}, "user": "u1",
        "truncation": "auto",
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}},
        "reasoning": {"effort": "low"},
    })
    assert req.messages == [cn.Message("user", [cn.Text("hi")])] and req.system == [cn.Text("be brief")]
    assert (req.max_tokens, req.temperature, req.top_p) == (300, 0.5, 1)
    assert req.tool_choice == cn.ToolChoice("tool", "f")
    assert req.response_format == cn.ResponseFormat("json_schema", {"type": "object"}, "w", True)
    assert req.reasoning == cn.Reasoning(effort="low", include_thoughts=False)
    assert req.dropped == ["metadata", "truncation", "user"] and req.user == "u1"
    body = responses.encode_request(req)
    assert body["text"] == {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"},
                                       "strict": True}}
    assert body["tool_choice"] == {"type": "function", "name": "f"} and body["max_output_tokens"] == 300
    sdk_check(body)


def test_tool_output_parts_and_remote_images():
    req = responses.decode_request({"model": "m", "input": [
        {"role": "user", "content": [{"type": "input_image", "image_url": "https://example.com/cat.png"}]},
        {"type": "function_call", "call_id": "c1", "name": "screenshot", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": [
            {"type": "input_text", "text": "here"},
            {"type": "input_image", "image_url": f"data:image/jpeg;base64,{IMG}"}]},
    ]})
    assert req.messages[0].content == [cn.Image(url="https://example.com/cat.png")]
    assert req.messages[2].content == [cn.ToolResult("c1", [cn.Text("here"), cn.Image("image/jpeg", IMG)],
                                                     name="screenshot")]
    out = responses.encode_request(req)["input"][2]
    assert out == {"type": "function_call_output", "call_id": "c1", "output": [
        {"type": "input_text", "text": "here"},
        {"type": "input_image", "image_url": f"data:image/jpeg;base64,{IMG}", "detail": "auto"}]}


def test_gemini_signatures_survive_a_responses_client():
    """Thinking signatures from Gemini/Anthropic ride in encrypted_content and come back out of it."""
    r = cn.Response("r9", "g", [cn.Thinking("hm", signature=SIG), cn.RedactedThinking("opaque"),
                                cn.Text("ok")], "stop")
    out = responses.encode_response(r, "alias")
    rs, red, _ = out["output"]
    assert rs["encrypted_content"] == responses.SIG_PREFIX + SIG
    req = responses.decode_request({"model": "m", "input": [rs, red, {"role": "user", "content": "next"}]})
    assert req.messages[0].content == [cn.Thinking("hm", signature=SIG), cn.RedactedThinking("opaque")]
    # ... but never reach an OpenAI upstream, which could not verify them
    assert [i["type"] for i in responses.encode_request(req)["input"]] == ["message"]


@pytest.mark.parametrize("body, param", [
    ({"model": "m", "input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"model": "m", "input": "x", "conversation": "conv_1"}, "conversation"),
    ({"model": "m", "input": "x", "tools": [{"name": "untyped"}]}, "tools.0.type"),
    ({"model": "m", "input": "x", "tools": [{"type": "namespace", "name": "ns", "tools": [{"type": "web_search"}]}]},
     "tools.0.tools.0.type"),
    ({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input.0.type"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input.0.content.0.image_url"),
    ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input.0.role"),
    ({"model": "m"}, "input"),
    ({"input": "x"}, "model"),
    ({"model": "m", "input": "x", "stream": "yes"}, "stream"),
    ({"model": "m", "input": "x", "tool_choice": {"type": "nonsense"}}, "tool_choice"),
])
def test_unsupported_requests_are_400s(body, param):
    with pytest.raises(cn.ConversionError) as e:
        responses.decode_request(body)
    assert e.value.param == param and str(e.value)


def test_previous_response_id_message():
    with pytest.raises(cn.ConversionError, match="send the full conversation in input"):
        responses.decode_request({"model": "m", "input": "x", "previous_response_id": "resp_1"})


def test_error_body():
    assert responses.error_body(400, "bad", param="tools.0.type") == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "tools.0.type", "code": None}}
    assert responses.error_body(429, "slow")["error"]["code"] == "rate_limit_exceeded"
    assert responses.error_body(502, "down")["error"]["type"] == "upstream_error"
    assert responses.error_body(500, "oops")["error"] == {"message": "oops", "type": "server_error", "param": None,
                                                          "code": None}


# --- non-streamed responses ----------------------------------------------------

GEMINI_RESPONSE = {
    "candidates": [{"content": {"role": "model", "parts": [
        {"text": "Let me think.", "thought": True},
        {"text": "Calling tools."},
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG},
        {"functionCall": {"name": "get_time", "args": {}}},
    ]}, "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 3,
                      "cachedContentTokenCount": 4, "totalTokenCount": 18},
    "modelVersion": "gemini-2.5-flash", "responseId": "abc123",
}


def test_response_with_reasoning_text_and_tool_calls():
    out = responses.encode_response(gemini.decode_response(GEMINI_RESPONSE), "alias")
    r = Response.model_validate(out)
    assert r.id == "resp_abc123" and r.model == "alias" and r.status == "completed" and r.object == "response"
    rs, msg, c1, c2 = r.output
    assert rs.type == "reasoning" and rs.summary[0].text == "Let me think." and rs.id.startswith("rs_")
    assert msg.type == "message" and msg.content[0].text == "Calling tools." and msg.id.startswith("msg_")
    assert r.output_text == "Calling tools."
    assert (c1.type, c1.name, json.loads(c1.arguments), c1.status) == ("function_call", "get_weather",
                                                                        {"city": "Paris"}, "completed")
    assert c1.id.startswith("fc_") and call_ids.signature_of(c1.call_id) == SIG
    assert c2.name == "get_time" and len({i.id for i in r.output}) == 4
    u = r.usage
    assert (u.input_tokens, u.output_tokens, u.total_tokens) == (10, 8, 18)
    assert u.input_tokens_details.cached_tokens == 4 and u.output_tokens_details.reasoning_tokens == 3
    back = responses.decode_response(out)
    assert back.finish == "tool_calls" and back.usage == cn.Usage(10, 8, 4, 3)
    assert [type(b).__name__ for b in back.content] == ["Thinking", "Text", "ToolCall", "ToolCall"]


def test_max_tokens_response_is_incomplete():
    r = cn.Response("x", "m", [cn.Text("partial")], "length", cn.Usage(5, 7))
    out = Response.model_validate(responses.encode_response(r, "alias"))
    assert out.status == "incomplete" and out.incomplete_details.reason == "max_output_tokens"
    assert out.output[0].status == "incomplete" and out.output_text == "partial"
    back = responses.decode_response(out.model_dump())
    assert (back.finish, back.finish_detail) == ("length", "max_output_tokens")


def test_content_filter_response_is_incomplete():
    out = Response.model_validate(responses.encode_response(cn.Response("x", "m", [], "content_filter"), "a"))
    assert out.status == "incomplete" and out.incomplete_details.reason == "content_filter"


def test_empty_answer_is_still_a_message():
    """Pitfall 5: never an empty 200 body, never an empty output."""
    for content in ([], [cn.Thinking("only thought")]):
        out = Response.model_validate(responses.encode_response(cn.Response("x", "m", content, "stop"), "a"))
        assert out.status == "completed" and out.output[-1].type == "message"
        assert out.output[-1].content[0].text == "" and out.output_text == ""
        assert out.usage.output_tokens_details.reasoning_tokens == 0


def test_upstream_error_finish_is_failed():
    r = cn.Response("x", "m", [cn.Text("a")], "error", finish_detail="MALFORMED_FUNCTION_CALL")
    out = Response.model_validate(responses.encode_response(r, "a"))
    assert out.status == "failed" and "MALFORMED_FUNCTION_CALL" in out.error.message


# --- streams -------------------------------------------------------------------

def gemini_sse(*bodies):
    return b"".join(b"data: " + json.dumps(b).encode() + b"\r\n\r\n" for b in bodies)


GEMINI_STREAM = gemini_sse(
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hmm, ", "thought": True}]}}],
     "responseId": "r1", "modelVersion": "gemini-2.5-flash"},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "weather.", "thought": True,
                                                             "thoughtSignature": SIG}]}}]},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}}]},
    {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG}]}}]},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP"}],
     "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 4, "thoughtsTokenCount": 2,
                       "cachedContentTokenCount": 3}},
)


def run(decoder, encoder, data: bytes, cuts=()) -> bytes:
    t = Converting(decoder, encoder)
    out, last = b"", 0
    for c in list(cuts) + [len(data)]:
        out += t.feed(data[last:c])
        last = c
    return out + t.finish()


def parse_events(out: bytes) -> list[dict]:
    """Every SSE event, checked: `event:` names the data's type, the SDK's union validates it."""
    events = []
    for raw in out.decode().split("\n\n"):
        if not raw:
            continue
        head, data = raw.split("\n")
        body = json.loads(data.removeprefix("data: "))
        assert head == f"event: {body['type']}"
        EVENT.validate_python(body)
        events.append(body)
    return events


def check_well_formed(events: list[dict]) -> dict:
    """The structural rules of a Responses stream; returns the final response."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    terminal = {"response.completed", "response.incomplete", "response.failed"}
    assert events[-1]["type"] in terminal and not any(e["type"] in terminal for e in events[:-1])
    assert len({e["response"]["id"] for e in events if "response" in e}) == 1
    added: dict[int, dict] = {}
    done: dict[int, dict] = {}
    for e in events:
        if e["type"] == "response.output_item.added":
            assert e["output_index"] == len(added) and e["output_index"] not in added
            added[e["output_index"]] = e["item"]
        elif e["type"] == "response.output_item.done":
            assert e["item"]["id"] == added[e["output_index"]]["id"] and e["output_index"] not in done
            done[e["output_index"]] = e["item"]
        elif "output_index" in e:  # every content event names an open item, by index and id
            assert e["output_index"] in added and e["output_index"] not in done
            assert e["item_id"] == added[e["output_index"]]["id"]
            if "content_index" in e:
                assert e["content_index"] == 0 and added[e["output_index"]]["type"] == "message"
            if "summary_index" in e:
                assert added[e["output_index"]]["type"] == "reasoning"
    final = events[-1]["response"]
    if events[-1]["type"] != "response.failed":
        assert done.keys() == added.keys()
        assert final["output"] == [done[i] for i in sorted(done)]
    return final


def sdk_final_response(events: list[dict]):
    """The openai SDK's own stream accumulator (what client.responses.stream() uses)."""
    state = ResponseStreamState(input_tools=omit, text_format=omit)
    final = None
    for e in events:
        for out in state.handle_event(EVENT.validate_python(e)):
            if out.type == "response.completed":
                final = out.response
    return final


def test_gemini_stream_to_responses_events():
    events = parse_events(run(gemini.StreamDecoder(), responses.StreamEncoder("alias"), GEMINI_STREAM))
    final = check_well_formed(events)
    assert events[-1]["type"] == "response.completed" and final["status"] == "completed"
    assert final["model"] == "alias" and final["id"] == "resp_r1"
    types = [e["type"] for e in events]
    assert types == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta", "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]
    rs, msg, call = final["output"]
    assert rs["summary"] == [{"type": "summary_text", "text": "Hmm, weather."}]
    assert rs["encrypted_content"] == responses.SIG_PREFIX + SIG  # the thought signature, for the next turn
    assert msg["content"][0]["text"] == "Hello"
    assert (call["name"], json.loads(call["arguments"])) == ("get_weather", {"city": "Paris"})
    assert call_ids.signature_of(call["call_id"]) == SIG
    assert final["usage"] == {"input_tokens": 7, "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0},
                              "output_tokens": 6,
                              "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 13}
    Response.model_validate(final)

    sdk = sdk_final_response(events)
    assert sdk is not None and sdk.output_text == "Hello" and sdk.usage.output_tokens_details.reasoning_tokens == 2
    assert [o.type for o in sdk.output] == ["reasoning", "message", "function_call"]


def test_openai_sdk_client_reads_the_stream_and_the_response():
    """The reference client end to end, over an in-memory transport."""
    stream_bytes = run(gemini.StreamDecoder(), responses.StreamEncoder("alias"), GEMINI_STREAM)
    plain = json.dumps(responses.encode_response(gemini.decode_response(GEMINI_RESPONSE), "alias")).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content).get("stream"):
            return httpx.Response(200, content=stream_bytes, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, content=plain, headers={"content-type": "application/json"})

    client = OpenAI(api_key="sk-test", base_url="http://gw.test/v1",
                    http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    with client.responses.stream(model="alias", input="weather?") as s:
        deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
        final = s.get_final_response()
    assert "".join(deltas) == "Hello" == final.output_text
    assert final.output[2].name == "get_weather" and final.usage.total_tokens == 13
    r = client.responses.create(model="alias", input="weather?")
    assert r.output_text == "Calling tools." and r.usage.output_tokens_details.reasoning_tokens == 3


def encode(events: list[cn.Event], model: str = "alias") -> list[dict]:
    return parse_events(responses.StreamEncoder(model).encode(events))


HAND_WRITTEN = [
    cn.MessageStart("h1", "up", 1700000000),
    cn.BlockStart(0, cn.Text("")), cn.TextDelta(0, "I'll run "), cn.TextDelta(0, "two tools."), cn.BlockStop(0),
    cn.BlockStart(1, cn.ToolCall("call_a", "shell", "")),
    cn.ArgumentsDelta(1, "{\"command\":"), cn.ArgumentsDelta(1, "[\"ls\"]}"), cn.BlockStop(1),
    cn.BlockStart(2, cn.ToolCall("call_b", "update_plan", "")),
    cn.ArgumentsDelta(2, "{\"plan\":[]}"), cn.BlockStop(2),
    cn.UsageUpdate(cn.Usage(100, 20, 50, 0)),
    cn.Finish("tool_calls"),
]


def test_hand_written_stream():
    events = encode(HAND_WRITTEN)
    final = check_well_formed(events)
    assert final["created_at"] == 1700000000 and final["status"] == "completed"
    assert [(o["type"], o.get("call_id")) for o in final["output"]] == [
        ("message", None), ("function_call", "call_a"), ("function_call", "call_b")]
    assert json.loads(final["output"][1]["arguments"]) == {"command": ["ls"]}
    args_done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [e["arguments"] for e in args_done] == ["{\"command\":[\"ls\"]}", "{\"plan\":[]}"]
    assert final["usage"]["input_tokens_details"]["cached_tokens"] == 50
    assert sdk_final_response(events).output[2].name == "update_plan"


def test_max_tokens_stream_is_incomplete():
    events = encode([cn.MessageStart("m", "x"), cn.BlockStart(0, cn.Text("")), cn.TextDelta(0, "par"),
                     cn.UsageUpdate(cn.Usage(3, 9, 0, 4)), cn.Finish("length")])
    final = check_well_formed(events)  # the still-open block is closed before the end
    assert events[-1]["type"] == "response.incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["status"] == "incomplete" and final["output"][0]["content"][0]["text"] == "par"
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] == 4


def test_empty_stream_still_answers():
    events = encode([cn.MessageStart("e", "x"), cn.UsageUpdate(cn.Usage(3, 0)), cn.Finish("stop")])
    final = check_well_formed(events)
    assert [o["type"] for o in final["output"]] == ["message"] and final["output"][0]["content"][0]["text"] == ""
    assert sdk_final_response(events).output_text == ""


@pytest.mark.parametrize("err, code", [
    (cn.StreamError("The upstream stream ended early.", "stream_truncated"), "server_error"),
    (cn.StreamError("Quota exhausted, try again in 7s.", "rate_limit_exceeded", 429), "rate_limit_exceeded"),
    (cn.StreamError("Too long.", "context_length_exceeded", 400), "context_length_exceeded"),
])
def test_stream_error_is_response_failed_and_last(err, code):
    enc = responses.StreamEncoder("alias")
    out = enc.encode([cn.MessageStart("f", "x"), cn.BlockStart(0, cn.Text("")), cn.TextDelta(0, "par"), err])
    out += enc.encode([cn.TextDelta(0, "more"), cn.Finish("stop")])  # nothing after the failure
    raw = [json.loads(r.split("\n")[1][6:]) for r in out.decode().split("\n\n") if r]
    events = parse_events(out) if code != "context_length_exceeded" else raw
    check_well_formed(events)
    failed = events[-1]
    assert failed["type"] == "response.failed" and failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": code, "message": err.message}
    assert failed["response"]["output"][0]["status"] == "incomplete"


def test_error_before_anything_still_starts_the_response():
    events = encode([cn.StreamError("boom", "upstream_error")])
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.failed"]


def test_finish_error_is_failed():
    events = encode([cn.MessageStart("f", "x"), cn.Finish("error", "MALFORMED_FUNCTION_CALL")])
    assert events[-1]["type"] == "response.failed"
    assert "MALFORMED_FUNCTION_CALL" in events[-1]["response"]["error"]["message"]


# --- Responses upstream -> canonical ---------------------------------------------

def blocks_of(events: list[cn.Event]) -> list:
    """Canonical blocks rebuilt from stream events."""
    blocks: dict[int, cn.Block] = {}
    for e in events:
        if isinstance(e, cn.BlockStart):
            b = e.block
            blocks[e.index] = (cn.ToolCall(b.id, b.name, "", b.signature) if isinstance(b, cn.ToolCall)
                               else cn.Thinking("", b.signature, b.encrypted_content) if isinstance(b, cn.Thinking)
                               else cn.Text(""))
        elif isinstance(e, (cn.TextDelta, cn.ThinkingDelta)):
            blocks[e.index].text += e.text
        elif isinstance(e, cn.ArgumentsDelta):
            blocks[e.index].arguments += e.json
        elif isinstance(e, cn.SignatureDelta):
            blocks[e.index].signature = (blocks[e.index].signature or "") + e.signature
        elif isinstance(e, cn.BlockStop) and e.encrypted_content:
            blocks[e.index].encrypted_content = e.encrypted_content
    return [blocks[i] for i in sorted(blocks)]


def decode_all(data: bytes, cuts=()) -> list[cn.Event]:
    d = responses.StreamDecoder()
    out, last = [], 0
    for c in list(cuts) + [len(data)]:
        out += d.feed(data[last:c])
        last = c
    return out + d.finish()


def test_encoder_output_decodes_to_the_same_blocks():
    for source in (HAND_WRITTEN, decode_all_gemini()):
        wire = responses.StreamEncoder("alias").encode(source)
        back = decode_all(wire)
        # an empty text block (Gemini's closing {"text": ""} part) says nothing and becomes no item
        want = [b for b in blocks_of(source) if not (isinstance(b, cn.Text) and not b.text)]
        got = blocks_of(back)
        # the only difference: a thinking signature comes back in its wrapped, client-side form
        for w, g in zip(want, got, strict=False):
            if isinstance(w, cn.Thinking) and w.signature:
                assert g.encrypted_content == responses.SIG_PREFIX + w.signature
                g.encrypted_content, g.signature = None, w.signature
        assert got == want
        assert [type(e) for e in back][-2:] == [cn.UsageUpdate, cn.Finish]
        assert back[-1] == [e for e in source if isinstance(e, cn.Finish)][0]
        assert back[-2] == [e for e in source if isinstance(e, cn.UsageUpdate)][-1]


def decode_all_gemini() -> list[cn.Event]:
    d = gemini.StreamDecoder()
    return d.feed(GEMINI_STREAM) + d.finish()


def sse(*bodies) -> bytes:
    return b"".join(f"event: {b['type']}\ndata: {json.dumps(b)}\n\n".encode() for b in bodies)


def _resp(status, output=(), usage=None, **kw):
    return responses.response_object("resp_u1", "gpt-5", 1700000000, status, list(output), usage, **kw)


# a real-shaped OpenAI stream: reasoning with two summary parts, encrypted_content only on done
OPENAI_STREAM = sse(
    {"type": "response.created", "sequence_number": 0, "response": _resp("in_progress")},
    {"type": "response.in_progress", "sequence_number": 1, "response": _resp("in_progress")},
    {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
     "item": {"id": "rs_1", "type": "reasoning", "summary": []}},
    {"type": "response.reasoning_summary_part.added", "sequence_number": 3, "item_id": "rs_1", "output_index": 0,
     "summary_index": 0, "part": {"type": "summary_text", "text": ""}},
    {"type": "response.reasoning_summary_text.delta", "sequence_number": 4, "item_id": "rs_1", "output_index": 0,
     "summary_index": 0, "delta": "**Plan**"},
    {"type": "response.reasoning_summary_part.added", "sequence_number": 5, "item_id": "rs_1", "output_index": 0,
     "summary_index": 1, "part": {"type": "summary_text", "text": ""}},
    {"type": "response.reasoning_summary_text.delta", "sequence_number": 6, "item_id": "rs_1", "output_index": 0,
     "summary_index": 1, "delta": "Check files."},
    {"type": "response.output_item.done", "sequence_number": 7, "output_index": 0,
     "item": {"id": "rs_1", "type": "reasoning", "encrypted_content": ENC, "summary": [
         {"type": "summary_text", "text": "**Plan**"}, {"type": "summary_text", "text": "Check files."}]}},
    {"type": "response.output_item.added", "sequence_number": 8, "output_index": 1,
     "item": {"id": "fc_1", "type": "function_call", "status": "in_progress", "arguments": "", "call_id": "call_z",
              "name": "shell"}},
    {"type": "response.function_call_arguments.delta", "sequence_number": 9, "item_id": "fc_1", "output_index": 1,
     "delta": "{\"command\":[\"ls\"]}"},
    {"type": "response.function_call_arguments.done", "sequence_number": 10, "item_id": "fc_1", "output_index": 1,
     "arguments": "{\"command\":[\"ls\"]}"},
    {"type": "response.output_item.done", "sequence_number": 11, "output_index": 1,
     "item": {"id": "fc_1", "type": "function_call", "status": "completed", "arguments": "{\"command\":[\"ls\"]}",
              "call_id": "call_z", "name": "shell"}},
    {"type": "response.output_item.added", "sequence_number": 12, "output_index": 2,  # sent whole, no deltas
     "item": {"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}},
    {"type": "response.output_item.done", "sequence_number": 13, "output_index": 2,
     "item": {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
              "content": [{"type": "output_text", "text": "Listing.", "annotations": []}]}},
    {"type": "response.completed", "sequence_number": 14, "response": _resp(
        "completed", usage=cn.Usage(40, 30, 10, 12))},
)


def test_openai_stream_fixture_is_sdk_shaped():
    for raw in OPENAI_STREAM.decode().split("\n\n"):
        if raw:
            EVENT.validate_python(json.loads(raw.split("\n")[1][6:]))


def test_openai_upstream_stream_to_canonical():
    events = decode_all(OPENAI_STREAM)
    assert events[0] == cn.MessageStart("resp_u1", "gpt-5", 1700000000)
    assert blocks_of(events) == [
        cn.Thinking("**Plan**\n\nCheck files.", encrypted_content=ENC),
        cn.ToolCall("call_z", "shell", "{\"command\":[\"ls\"]}"),
        cn.Text("Listing."),
    ]
    assert events[-2:] == [cn.UsageUpdate(cn.Usage(40, 30, 10, 12)), cn.Finish("tool_calls")]
    # and on to a Responses client: the encrypted reasoning reaches Codex untouched
    final = encode(events)[-1]["response"]
    assert final["output"][0]["encrypted_content"] == ENC
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] == 12


def test_any_chunking_gives_the_same_events():
    whole = decode_all(OPENAI_STREAM)
    wire = responses.StreamEncoder("alias").encode(decode_all_gemini())
    whole2 = decode_all(wire)
    rng = random.Random(7)
    for data, want in ((OPENAI_STREAM, whole), (wire, whole2)):
        for _ in range(150):
            cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 40)))
            got = decode_all(data, cuts)
            assert got[1:] == want[1:]  # MessageStart is identical too, but for a fallback timestamp
            assert got[0].id == want[0].id


def test_truncated_upstream_stream_is_stream_truncated():
    cut = OPENAI_STREAM[: OPENAI_STREAM.index(b"event: response.completed")]
    events = decode_all(cut)
    assert events[-1] == cn.StreamError(events[-1].message, "stream_truncated")
    # mid-item: the open block is closed first
    mid = OPENAI_STREAM[: OPENAI_STREAM.index(b"event: response.function_call_arguments.done")]
    events = decode_all(mid)
    assert isinstance(events[-2], cn.BlockStop) and events[-1].code == "stream_truncated"
    # and the client sees a failed response, not a silent stop
    out = encode(events)
    assert out[-1]["type"] == "response.failed" and out[-1]["response"]["error"]["code"] == "server_error"


def test_upstream_failed_and_error_events():
    failed = sse({"type": "response.created", "sequence_number": 0, "response": _resp("in_progress")},
                 {"type": "response.failed", "sequence_number": 1, "response": _resp(
                     "failed", error={"code": "rate_limit_exceeded", "message": "try again in 2s"})})
    assert decode_all(failed)[-1] == cn.StreamError("try again in 2s", "rate_limit_exceeded", 429)
    err = sse({"type": "error", "sequence_number": 0, "code": "server_error", "message": "oops", "param": None})
    assert decode_all(err) == [cn.StreamError("oops", "server_error", 502)]


def test_upstream_incomplete():
    data = sse({"type": "response.created", "sequence_number": 0, "response": _resp("in_progress")},
               {"type": "response.incomplete", "sequence_number": 1, "response": _resp(
                   "incomplete", incomplete={"reason": "max_output_tokens"}, usage=cn.Usage(1, 2))})
    assert decode_all(data)[-1] == cn.Finish("length", "max_output_tokens")


# --- robustness ------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
KEYS = ["model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "max_output_tokens",
        "temperature", "top_p", "text", "reasoning", "stream", "store", "metadata", "user", "include",
        "previous_response_id", "background"]
ITEM_KEYS = ["type", "role", "content", "call_id", "name", "arguments", "output", "summary", "encrypted_content",
             "text", "image_url", "id", "parameters", "strict", "format", "effort"]
ITEM_TYPES = st.sampled_from(["message", "function_call", "function_call_output", "reasoning", "input_text",
                              "input_image", "output_text", "function", "summary_text", "json_schema", "user",
                              "assistant", "developer", "web_search", "item_reference"])
ITEM = st.dictionaries(st.sampled_from(ITEM_KEYS), JSON | ITEM_TYPES | st.lists(
    st.dictionaries(st.sampled_from(ITEM_KEYS), JSON | ITEM_TYPES, max_size=4), max_size=3), max_size=6)
REQUEST = st.dictionaries(st.sampled_from(KEYS), JSON | ITEM | st.lists(ITEM, max_size=4), max_size=8)


def _paths(node, path=()):
    yield path
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in children:
        yield from _paths(v, path + (k,))


def _mutated(path, value, delete):
    """CODEX_REQUEST with the node at `path` replaced by arbitrary JSON (or deleted): every field's
    validation gets exercised, deep inside a request that is otherwise valid."""
    data = json.loads(json.dumps(CODEX_REQUEST))
    if not path:
        return value
    node = data
    for k in path[:-1]:
        node = node[k]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


MUTATED = st.builds(_mutated, st.sampled_from(list(_paths(CODEX_REQUEST))), JSON, st.booleans())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(JSON, REQUEST, MUTATED))
def test_arbitrary_json_raises_only_conversion_errors(data):
    try:
        req = responses.decode_request(data)
    except cn.ConversionError as e:
        assert str(e)
        return
    responses.encode_request(req)  # whatever decodes, encodes


RESPONSE_KEYS = ["id", "status", "output", "usage", "incomplete_details", "error", "created_at", "model"]
EVENT_KEYS = ["type", "response", "item", "output_index", "delta", "summary_index", "code", "message"]
EVENT_TYPES = st.sampled_from(["response.created", "response.output_item.added", "response.output_item.done",
                               "response.output_text.delta", "response.function_call_arguments.delta",
                               "response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
                               "response.completed", "response.incomplete", "response.failed", "error"])
UPSTREAM_RESPONSE = st.dictionaries(st.sampled_from(RESPONSE_KEYS), JSON | ITEM_TYPES | st.lists(ITEM, max_size=3),
                                    max_size=6)
UPSTREAM_EVENT = st.dictionaries(st.sampled_from(EVENT_KEYS), JSON | EVENT_TYPES | ITEM | UPSTREAM_RESPONSE |
                                 st.integers(0, 3), max_size=6)


@settings(max_examples=60, deadline=None)
@given(st.one_of(JSON, UPSTREAM_RESPONSE))
def test_decode_response_never_raises(body):
    r = responses.decode_response(body)
    Response.model_validate(responses.encode_response(r, "a"))  # and whatever it is, the client gets a Response


@settings(max_examples=60, deadline=None)
@given(st.lists(UPSTREAM_EVENT | JSON, max_size=8), st.randoms(use_true_random=False))
def test_stream_decoder_and_encoder_never_raise(bodies, rng):
    data = b"".join(b"data: " + json.dumps(b).encode() + b"\n\n" for b in bodies)
    cuts = sorted(rng.sample(range(1, len(data)), min(5, len(data) - 1))) if len(data) > 1 else []
    wire = run(responses.StreamDecoder(), responses.StreamEncoder("a"), data, cuts)
    check_well_formed(parse_events(wire))  # always a complete, SDK-valid stream for the client


# --- custom (freeform) tools: Codex's apply_patch ------------------------------

PATCH = "*** Begin Patch\n*** Add File: a.txt\n+hi \"there\"\n*** End Patch\n"
APPLY_PATCH = {"type": "custom", "name": "apply_patch", "description": "Edit files with a patch.",
               "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch hunk+ end_patch"}}


def test_custom_tool_request_becomes_a_function_taking_input():
    body = {"model": "m", "tools": [APPLY_PATCH], "tool_choice": {"type": "custom", "name": "apply_patch"},
            "input": [{"role": "user", "content": "add a file"},
                      {"type": "custom_tool_call", "call_id": "call_1", "name": "apply_patch", "input": PATCH},
                      {"type": "custom_tool_call_output", "call_id": "call_1", "output": "Done!"}]}
    sdk_check(body)
    req = responses.decode_request(body)
    assert req.freeform_tools == ["apply_patch"]
    (tool,) = req.tools
    assert tool.parameters["required"] == ["input"]
    assert "start: begin_patch hunk+ end_patch" in tool.parameters["properties"]["input"]["description"]
    assert req.tool_choice == cn.ToolChoice("tool", "apply_patch")
    call = req.messages[1].content[0]
    assert isinstance(call, cn.ToolCall) and json.loads(call.arguments) == {"input": PATCH}
    result = req.messages[2].content[0]
    assert isinstance(result, cn.ToolResult) and result.name == "apply_patch" and result.content[0].text == "Done!"
    # and on to Gemini, as a plain function declaration
    decl = gemini.encode_request(req)["tools"][0]["functionDeclarations"][0]
    assert decl["name"] == "apply_patch"


def test_custom_tool_call_response_and_stream_carry_the_raw_input():
    args = json.dumps({"input": PATCH})
    r = cn.Response("r1", "up", [cn.ToolCall("call_9", "apply_patch", args), cn.ToolCall("call_8", "shell", "{}")],
                    "tool_calls")
    body = responses.encode_response(r, "alias", ["apply_patch"])
    Response.model_validate(body)
    custom, plain = body["output"]
    assert custom == {"id": custom["id"], "type": "custom_tool_call", "call_id": "call_9", "name": "apply_patch",
                      "input": PATCH, "status": "completed"}
    assert plain["type"] == "function_call"

    stream = [cn.MessageStart("s1", "up", 1700000000), cn.BlockStart(0, cn.ToolCall("call_9", "apply_patch", "")),
              cn.ArgumentsDelta(0, args[:10]), cn.ArgumentsDelta(0, args[10:]), cn.BlockStop(0),
              cn.Finish("tool_calls")]
    events = parse_events(responses.StreamEncoder("alias", ["apply_patch"]).encode(stream))
    final = check_well_formed(events)
    kinds = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" not in kinds
    (delta,) = [e for e in events if e["type"] == "response.custom_tool_call_input.delta"]
    assert delta["delta"] == PATCH
    assert final["output"][0]["type"] == "custom_tool_call" and final["output"][0]["input"] == PATCH
    sdk = sdk_final_response(events)
    assert sdk.output[0].type == "custom_tool_call" and sdk.output[0].input == PATCH
