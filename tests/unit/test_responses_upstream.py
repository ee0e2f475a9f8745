"""Tests for the OpenAI Responses API test double (tests/upstreams/responses_api.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from tests.upstreams.responses_api import SCENARIO_MODELS, make_app
from tests.upstreams.serving import ServerThread

KEY = "sk-test-0123456789"
MODELS = ["gpt-5", "gpt-5-mini", "gpt-4.1", "o4-mini"]
USER = {"role": "user", "content": "hello world"}
REPO = Path(__file__).resolve().parents[2]
EVENT = pydantic.TypeAdapter(ResponseStreamEvent)
STRICT_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "name": "get_weather", "parameters": STRICT_PARAMS},  # strict by default
    {"type": "function", "name": "get-time", "parameters": {"type": "object"}, "strict": False},
]
LONG_TEXT = " ".join(f"w{i}" for i in range(30))  # "Echo: " + this = 31 words


@pytest.fixture(scope="module")
def base_url():
    with ServerThread(make_app(KEY, MODELS)) as url:
        yield url


@pytest.fixture
def http(base_url):
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=5) as client:
        yield client


@pytest.fixture
def sdk(base_url):
    with openai.OpenAI(api_key=KEY, base_url=f"{base_url}/v1", max_retries=0, timeout=5) as client:
        yield client


def create(http: httpx.Client, **body) -> httpx.Response:
    body.setdefault("model", "gpt-4.1")
    body.setdefault("input", [USER])
    return http.post("/v1/responses", json=body)


def ok(response: httpx.Response) -> dict:
    """A 200 whose body is a valid Response."""
    assert response.status_code == 200, response.text
    Response.model_validate(response.json())
    return response.json()


def parse_sse(raw: str) -> list[dict]:
    """Events of an SSE body; checks the framing, numbering and every event's shape."""
    events = []
    for block in raw.split("\n\n"):
        if not block:
            continue
        name_line, data_line = block.split("\n")
        name = name_line.removeprefix("event: ")
        event = json.loads(data_line.removeprefix("data: "))
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        assert event["type"] == name
        EVENT.validate_python(event)
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert raw.endswith("\n\n") or not raw
    return events


def stream(http: httpx.Client, **body) -> list[dict]:
    response = create(http, stream=True, **body)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "text/event-stream"
    assert "[DONE]" not in response.text
    return parse_sse(response.text)


def types_of(events: list[dict]) -> list[str]:
    return [e["type"].removeprefix("response.") for e in events]


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


# ----------------------------------------------------------------- SDK, happy paths


def test_sdk_create_echoes_last_user_text(sdk):
    response = sdk.responses.create(
        model="gpt-4.1",
        instructions="be brief",
        input=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "hello "}, {"type": "input_text", "text": "world"}]},
        ],
    )
    assert response.id.startswith("resp_")
    assert (response.object, response.status, response.model) == ("response", "completed", "gpt-4.1")
    assert response.output_text == "Echo: hello world"
    [message] = response.output
    assert message.type == "message" and message.id.startswith("msg_")
    assert (message.role, message.status, message.content[0].annotations) == ("assistant", "completed", [])
    assert response.instructions == "be brief"
    assert (response.tool_choice, response.tools, response.parallel_tool_calls) == ("auto", [], True)
    assert response.text.format.type == "text"
    # 8 + 5 + 2 + 11 characters -> 26 // 4 + 1; "Echo: hello world" has 3 words
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (7, 3, 10)
    assert (usage.input_tokens_details.cached_tokens, usage.output_tokens_details.reasoning_tokens) == (0, 0)


def test_sdk_stream_accumulates_final_response(sdk):
    with sdk.responses.stream(model="gpt-4.1", input="hello world") as events:
        seen = list(events)
        final = events.get_final_response()
    assert [e.type for e in seen] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", *["response.output_text.delta"] * 5, "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed",
    ]
    assert [e.delta for e in seen if e.type == "response.output_text.delta"] == ["Echo", ": he", "llo ", "worl", "d"]
    assert [e.sequence_number for e in seen] == list(range(len(seen)))
    assert final.output_text == "Echo: hello world"
    assert final.status == "completed"
    assert final.usage.output_tokens == 3
    assert seen[0].response.status == "in_progress" and seen[0].response.output == []


def test_sdk_function_tool_round_trip(sdk):
    turn = [{"role": "user", "content": "weather?"}]
    with sdk.responses.stream(model="gpt-4.1", input=turn, tools=TOOLS, store=False) as events:
        deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
        final = events.get_final_response()
    calls = final.output
    assert [(c.type, c.name, c.status) for c in calls] == [
        ("function_call", "get_weather", "completed"), ("function_call", "get-time", "completed")]
    assert [json.loads(c.arguments) for c in calls] == [{"tool": "get_weather", "n": 0}, {"tool": "get-time", "n": 1}]
    assert all(c.call_id.startswith("call_") and c.id.startswith("fc_") for c in calls)
    assert calls[0].call_id != calls[1].call_id
    assert "".join(deltas) == calls[0].arguments + calls[1].arguments
    assert max(len(d) for d in deltas) == 5
    assert final.usage.output_tokens == 10
    assert final.tools[0].strict is True and final.tools[1].strict is False

    history = [*turn, *(c.model_dump(exclude_none=True) for c in calls),
               {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"},
               {"type": "function_call_output", "call_id": calls[1].call_id,
                "output": [{"type": "input_text", "text": "noon"}]}]
    answer = sdk.responses.create(model="gpt-4.1", input=history, tools=TOOLS, store=False)
    assert answer.output_text == "Tool results: sunny; noon"
    assert [item.type for item in answer.output] == ["message"]


def test_sdk_reasoning_with_encrypted_content_round_trip(sdk):
    turn = [{"role": "user", "content": "hi"}]
    first = sdk.responses.create(
        model="gpt-5", input=turn, reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"], store=False,
    )
    reasoning, message = first.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert [s.text for s in reasoning.summary] == ["Thinking about: hi"]
    assert reasoning.encrypted_content.startswith("gAAAAAB")
    assert message.content[0].text == "Echo: hi"
    assert first.usage.output_tokens_details.reasoning_tokens == 4
    assert first.usage.output_tokens == 4 + 2
    assert (first.reasoning.effort, first.reasoning.summary) == ("low", "auto")

    # what Codex sends back: the item without its id, with the blob
    replay = {"type": "reasoning", "summary": [s.model_dump() for s in reasoning.summary],
              "encrypted_content": reasoning.encrypted_content}
    second = sdk.responses.create(
        model="gpt-5", input=[*turn, replay, message.model_dump(exclude_none=True),
                              {"role": "user", "content": "again"}],
        store=False,
    )
    assert second.output_text == "Echo: again"
    # default effort medium, no summary asked, no blob asked: an empty reasoning item
    assert second.output[0].model_dump(exclude_none=True) == {"id": second.output[0].id, "type": "reasoning", "summary": []}
    assert second.usage.output_tokens_details.reasoning_tokens == 8
    assert second.reasoning.effort == "medium"

    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="gpt-5", input=[*turn, {**replay, "encrypted_content": "gAAAAABforged=="}])
    assert caught.value.code == "invalid_encrypted_content"
    assert caught.value.body["message"] == "The encrypted content gAAA...ed== could not be verified."


def test_sdk_reasoning_summary_stream(sdk):
    with sdk.responses.stream(
        model="o4-mini", input="hi", reasoning={"effort": "high", "summary": "detailed"},
    ) as events:
        seen = list(events)
        final = events.get_final_response()
    assert [e.type.removeprefix("response.") for e in seen[:9]] == [
        "created", "in_progress", "output_item.added", "reasoning_summary_part.added",
        "reasoning_summary_text.delta", "reasoning_summary_text.delta", "reasoning_summary_text.delta",
        "reasoning_summary_text.delta", "reasoning_summary_text.delta",
    ]
    summary_text = "".join(e.delta for e in seen if e.type == "response.reasoning_summary_text.delta")
    assert summary_text == "Thinking about: hi"
    assert final.output[0].summary[0].text == "Thinking about: hi"
    assert final.output[0].encrypted_content is None
    assert final.output_text == "Echo: hi"
    assert final.usage.output_tokens_details.reasoning_tokens == 16


class Weather(pydantic.BaseModel):
    city: str
    degrees: int
    tags: list[str]
    sunny: bool


def test_sdk_json_schema_parse(sdk):
    parsed = sdk.responses.parse(model="gpt-4.1", input="weather in Oslo", text_format=Weather)
    assert parsed.output_parsed == Weather(city="Echo: weather in Oslo", degrees=1,
                                           tags=["Echo: weather in Oslo"], sunny=True)
    assert parsed.text.format.type == "json_schema" and parsed.text.format.strict is True


def test_json_object_and_json_schema_refs(http):
    body = ok(create(http, input="answer in JSON", text={"format": {"type": "json_object"}}))
    assert json.loads(body["output"][0]["content"][0]["text"]) == {"echo": "Echo: answer in JSON"}
    schema = {"type": "object", "properties": {"p": {"$ref": "#/$defs/point"}, "kind": {"enum": ["a", "b"]},
                                               "n": {"type": ["number", "null"]}},
              "$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"}}}}}
    fmt = {"type": "json_schema", "name": "shape", "schema": schema}
    body = ok(create(http, text={"format": fmt}))
    assert json.loads(body["output"][0]["content"][0]["text"]) == {"p": {"x": 1}, "kind": "a", "n": 1.5}
    assert body["text"]["format"]["strict"] is False


def test_max_output_tokens_incomplete(http, sdk):
    body = ok(create(http, input=LONG_TEXT, max_output_tokens=16))
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    [message] = body["output"]
    assert message["status"] == "incomplete"
    assert message["content"][0]["text"] == "Echo: " + " ".join(f"w{i}" for i in range(15))
    assert body["usage"]["output_tokens"] == 16

    # gpt-5 reasons (medium: 8 tokens) inside the same budget
    events = stream(http, model="gpt-5", input=LONG_TEXT, max_output_tokens=20)
    final = events[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["output"][1]["content"][0]["text"] == "Echo: w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10"
    assert final["response"]["usage"]["output_tokens"] == 20

    # the SDK helper accumulates only on response.completed: an incomplete stream has no final response
    with sdk.responses.stream(model="gpt-4.1", input=LONG_TEXT, max_output_tokens=16) as s:
        last = list(s)[-1]
        with pytest.raises(RuntimeError, match="response.completed"):
            s.get_final_response()
    assert (last.type, last.response.status) == ("response.incomplete", "incomplete")
    assert last.response.output[0].content[0].text.endswith(" w14")

    whole = ok(create(http, input="short", max_output_tokens=16))
    assert (whole["status"], whole["incomplete_details"]) == ("completed", None)


# ----------------------------------------------------------------- raw streams


def test_stream_event_order_for_calls_after_reasoning(http):
    events = stream(http, model="gpt-5", tools=TOOLS[1:], reasoning={"effort": "minimal"},
                    include=["reasoning.encrypted_content"])
    assert types_of(events) == [
        "created", "in_progress", "output_item.added", "output_item.done",
        "output_item.added", *["function_call_arguments.delta"] * 5, "function_call_arguments.done",
        "output_item.done", "completed",
    ]
    added, done = events[2]["item"], events[3]["item"]
    assert "encrypted_content" not in added and done["encrypted_content"].startswith("gAAAAAB")
    assert events[4]["item"]["arguments"] == "" and events[4]["item"]["status"] == "in_progress"
    assert events[-1]["response"]["output"] == [done, events[-2]["item"]]
    assert {e["output_index"] for e in events[4:-1]} == {1}


def test_stream_message_events_share_ids(http):
    events = stream(http, input="hi")
    item_id = events[2]["item"]["id"]
    assert {e["item_id"] for e in events[3:-2]} == {item_id}
    assert events[2]["item"]["content"] == [] and events[2]["item"]["status"] == "in_progress"
    assert events[-3]["part"] == {"type": "output_text", "text": "Echo: hi", "annotations": [], "logprobs": []}
    assert events[-1]["response"]["usage"]["output_tokens"] == 2
    assert events[0]["response"]["usage"] is None


# ----------------------------------------------------------------- conversation state


def test_previous_response_id_needs_store(http):
    stored = ok(create(http, tools=TOOLS[1:]))  # store defaults to true
    assert stored["store"] is True
    call = stored["output"][0]
    follow = ok(create(http, previous_response_id=stored["id"],
                       input=[{"type": "function_call_output", "call_id": call["call_id"], "output": "done"}]))
    assert follow["output"][0]["content"][0]["text"] == "Tool results: done"
    assert follow["previous_response_id"] == stored["id"]

    unstored = ok(create(http, store=False))
    error = error_of(create(http, previous_response_id=unstored["id"]), 400)
    assert error["message"] == f"Previous response with id '{unstored['id']}' not found."
    assert (error["param"], error["code"]) == ("previous_response_id", "previous_response_not_found")


def test_reasoning_item_by_id_only_if_stored(http):
    stored = ok(create(http, model="gpt-5"))
    item = stored["output"][0]
    assert item["type"] == "reasoning" and "encrypted_content" not in item
    ok(create(http, model="gpt-5", input=[USER, item, stored["output"][1], USER]))

    unstored = ok(create(http, model="gpt-5", store=False))["output"][0]
    error = error_of(create(http, model="gpt-5", input=[USER, unstored]), 400)
    assert error["message"] == (
        f"Item with id '{unstored['id']}' not found. Items are not persisted when `store` is set to false."
        " Try again with `store` set to true, or remove this item from your input.")


def test_forged_encrypted_content(http):
    forged = {"type": "reasoning", "summary": [], "encrypted_content": "gAAAAABnot-ours-1234"}
    error = error_of(create(http, model="gpt-5", input=[USER, forged]), 400)
    assert error["message"] == "The encrypted content gAAA...1234 could not be verified."
    assert (error["param"], error["code"]) == (None, "invalid_encrypted_content")
    error = error_of(create(http, model="gpt-5", input=[USER, {**forged, "id": "rs_abc"}]), 400)
    assert error["message"] == "The encrypted content for item rs_abc could not be verified."


def test_call_without_output_then_user_message_is_accepted(http):
    call = {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}
    assert ok(create(http, input=[USER, call, USER]))["output"][0]["content"][0]["text"] == "Echo: hello world"


# ----------------------------------------------------------------- validation


def function(name: str, parameters: dict, **extra) -> dict:
    return {"type": "function", "name": name, "parameters": parameters, **extra}


@pytest.mark.parametrize(
    ("body", "message", "param", "code"),
    [
        ({"foo": 1}, "Unknown parameter: 'foo'.", "foo", "unknown_parameter"),
        ({"messages": [USER]}, "Unknown parameter: 'messages'.", "messages", "unknown_parameter"),
        ({"reasoning": {"effort": "low", "budget": 5}, "model": "gpt-5"},
         "Unknown parameter: 'reasoning.budget'.", "reasoning.budget", "unknown_parameter"),
        ({"input": [{**USER, "name": "bob"}]}, "Unknown parameter: 'input[0].name'.", "input[0].name",
         "unknown_parameter"),
        ({"input": [USER, {"type": "function_call_output", "call_id": "call_9", "output": "x"}]},
         "No tool call found for function call output with call_id call_9.", "input", None),
        ({"input": [{"type": "function_call_output", "call_id": "call_9", "output": "x"},
                    {"type": "function_call", "call_id": "call_9", "name": "f", "arguments": "{}"}]},
         "No tool call found for function call output with call_id call_9.", "input", None),
        ({"tools": [function("f", {"type": "object", "properties": {"a": {"type": "string"}}})]},
         "Invalid schema for function 'f': In context=(), 'additionalProperties' is required to be"
         " supplied and to be false.", "tools[0].parameters", "invalid_function_parameters"),
        ({"tools": [TOOLS[1], function("g", {**STRICT_PARAMS, "required": []}, strict=True)]},
         "Invalid schema for function 'g': In context=(), 'required' is required to be supplied and to be"
         " an array including every key in properties. Missing 'city'.", "tools[1].parameters",
         "invalid_function_parameters"),
        ({"tools": [function("h", {**STRICT_PARAMS, "properties": {"city": {"type": "object"}}})]},
         "Invalid schema for function 'h': In context=('properties', 'city'), 'additionalProperties' is"
         " required to be supplied and to be false.", "tools[0].parameters", "invalid_function_parameters"),
        ({"tools": [{"type": "function", "name": "bad name", "parameters": None, "strict": False}]},
         "Invalid 'tools[0].name': string does not match pattern. Expected a string that matches the"
         " pattern '^[a-zA-Z0-9_-]+$'.", "tools[0].name", "invalid_value"),
        ({"tools": [{"type": "rocket"}]}, None, "tools[0].type", "invalid_value"),
        ({"tools": [{"type": "custom"}]}, "Missing required parameter: 'tools[0].name'.", "tools[0].name",
         "missing_required_parameter"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "name": "nope"}},
         "Tool choice 'nope' not found in 'tools' parameter.", "tool_choice", None),
        ({"tool_choice": "sometimes"}, None, "tool_choice", "invalid_value"),
        ({"model": "gpt-5", "temperature": 0.5},
         "Unsupported parameter: 'temperature' is not supported with this model.", "temperature", None),
        ({"model": "o4-mini", "top_p": 0.5},
         "Unsupported parameter: 'top_p' is not supported with this model.", "top_p", None),
        ({"temperature": 2.5}, None, "temperature", "decimal_above_max_value"),
        ({"reasoning": {"effort": "low"}},
         "Unsupported parameter: 'reasoning.effort' is not supported with this model.", "reasoning.effort", None),
        ({"model": "gpt-5", "reasoning": {"effort": "extreme"}}, None, "reasoning.effort", "invalid_value"),
        ({"model": "gpt-5", "reasoning": {"summary": "verbose"}}, None, "reasoning.summary", "invalid_value"),
        ({"text": {"verbosity": "low"}},
         "Unsupported value: 'low' is not supported with the 'gpt-4.1' model. Supported values are: 'medium'.",
         "text.verbosity", "unsupported_value"),
        ({"text": {"format": {"type": "xml"}}}, None, "text.format.type", "invalid_value"),
        ({"text": {"format": {"type": "json_schema", "schema": {}}}},
         "Missing required parameter: 'text.format.name'.", "text.format.name", "missing_required_parameter"),
        ({"text": {"format": {"type": "json_schema", "name": "x", "strict": True,
                              "schema": {"type": "object", "properties": {}}}}},
         "Invalid schema for response_format 'x': In context=(), 'additionalProperties' is required to be"
         " supplied and to be false.", "text.format.schema", "invalid_json_schema"),
        ({"text": {"format": {"type": "json_object"}}},
         "Response input messages must contain the word 'json' in some form to use 'text.format' of type"
         " 'json_object'.", "input", None),
        ({"max_output_tokens": 5}, "Invalid 'max_output_tokens': integer below minimum value. Expected a"
         " value >= 16, but got 5 instead.", "max_output_tokens", "integer_below_min_value"),
        ({"include": ["reasoning.summary"]}, None, "include[0]", "invalid_value"),
        ({"input": None}, None, "input", "invalid_type"),
        ({"input": 5}, None, "input", "invalid_type"),
        ({"input": [{"type": "mystery"}]}, None, "input[0].type", "invalid_value"),
        ({"input": [{"content": "x"}]}, "Missing required parameter: 'input[0].type'.", "input[0].type",
         "missing_required_parameter"),
        ({"input": [{"role": "robot", "content": "x"}]}, None, "input[0].role", "invalid_value"),
        ({"input": [{"role": "assistant", "content": [{"type": "input_text", "text": "x"}]}]},
         "Invalid value: 'input_text'. Supported values are: 'output_text', 'refusal'.",
         "input[0].content[0].type", "invalid_value"),
        ({"input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]},
         None, "input[0].content[0].type", "invalid_value"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "detail": "auto"}]}]},
         "Missing required parameter: 'input[0].content[0].image_url'.", "input[0].content[0].image_url",
         "missing_required_parameter"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:,", "detail": "max"}]}]},
         None, "input[0].content[0].detail", "invalid_value"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]},
         None, "input[0].arguments", "invalid_type"),
        ({"input": [{"type": "reasoning", "summary": [{"type": "text", "text": "x"}], "encrypted_content": "e"}]},
         None, "input[0].summary[0].type", "invalid_value"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "Missing required parameter: 'input[0].id'.",
         "input[0].id", "missing_required_parameter"),
        ({"metadata": {"k": 1}}, None, "metadata.k", "invalid_type"),
        ({"store": "yes"}, None, "store", "invalid_type"),
        ({"truncation": "middle"}, None, "truncation", "invalid_value"),
    ],
)
def test_validation_rejects(http, body, message, param, code):
    error = error_of(create(http, **body), 400)
    if message is not None:
        assert error["message"] == message
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)


def test_validation_accepts_codex_style_request(http):
    shell = {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}},
                                              "workdir": {"type": "string"}}, "required": ["command"]}
    body = ok(create(
        http, model="gpt-5", instructions="You are Codex.", store=False, stream=False,
        input=[{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "env"}]},
               {"type": "message", "role": "user", "content": [
                   {"type": "input_text", "text": "look"},
                   {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "high"}]}],
        tools=[function("shell", shell, strict=False, description="Runs a command"),
               {"type": "web_search"}, {"type": "custom", "name": "apply_patch", "description": "patch"}],
        tool_choice="auto", parallel_tool_calls=False, reasoning={"effort": "high", "summary": "auto"},
        include=["reasoning.encrypted_content"], prompt_cache_key="thread-1", text={"verbosity": "low"},
        service_tier="auto", metadata={"a": "b"}, user="u", safety_identifier="s", truncation="auto",
        background=False, max_output_tokens=4096, previous_response_id=None,
    ))
    assert [item["type"] for item in body["output"]] == ["reasoning", "function_call"]
    assert body["output"][1]["name"] == "shell"
    assert [t["type"] for t in body["tools"]] == ["function", "web_search", "custom"]
    assert (body["service_tier"], body["store"], body["text"]["verbosity"]) == ("default", False, "low")
    assert body["parallel_tool_calls"] is False


def test_tool_choice_variants(http):
    assert ok(create(http, tools=TOOLS, tool_choice="none"))["output"][0]["type"] == "message"
    chosen = ok(create(http, tools=TOOLS, tool_choice={"type": "function", "name": "get-time"}))["output"]
    assert [c["name"] for c in chosen] == ["get-time"]
    assert [c["name"] for c in ok(create(http, tools=TOOLS, parallel_tool_calls=False))["output"]] == ["get_weather"]
    # the last item is not a user message: no call
    assert ok(create(http, tools=TOOLS, input=[USER, {"role": "assistant", "content": "hm"}]))["output"][0]["type"] == "message"


def test_auth_and_unknown_model(http, base_url):
    body = {"model": "gpt-4.1", "input": "x"}
    anonymous = error_of(httpx.post(f"{base_url}/v1/responses", json=body), 401)
    assert anonymous["message"].startswith("You didn't provide an API key")
    wrong = error_of(http.post("/v1/responses", json=body, headers={"Authorization": "Bearer sk-wrong-key"}), 401)
    assert wrong["code"] == "invalid_api_key"
    error = error_of(create(http, model="gpt-9"), 404)
    assert error["message"] == "The model `gpt-9` does not exist or you do not have access to it."
    assert error["code"] == "model_not_found"
    assert error_of(http.post("/v1/responses", json={"input": "x"}), 400)["param"] == "model"


def test_body_must_be_json_and_unknown_route(http):
    broken = http.post("/v1/responses", content=b"{nope", headers={"Content-Type": "application/json"})
    assert "could not parse the JSON body" in error_of(broken, 400)["message"]
    error = error_of(http.get("/v1/responses"), 404)
    assert error["message"] == "Invalid URL (GET /v1/responses)"


def test_models_list(http):
    listing = http.get("/v1/models").json()
    assert [m["id"] for m in listing["data"]] == MODELS + SCENARIO_MODELS
    assert SCENARIO_MODELS == ["fault-429", "fault-500", "fault-failed", "fault-cut", "fault-hang",
                               "fault-empty", "fault-slow-stream"]


def test_no_api_key_configured_means_no_auth():
    with ServerThread(make_app(None, ["m1"])) as url:
        response = httpx.post(f"{url}/v1/responses", json={"model": "m1", "input": "hi"})
    assert ok(response)["output"][0]["content"][0]["text"] == "Echo: hi"


def test_request_log(http, base_url):
    assert http.delete("/__requests").status_code == 200
    http.post("/v1/responses?trace=1", json={"model": "gpt-4.1", "input": "hi"}, headers={"X-Custom": "A"})
    log = httpx.get(f"{base_url}/__requests").json()
    assert len(log) == 1
    entry = log[0]
    assert (entry["method"], entry["path"], entry["query"]) == ("POST", "/v1/responses", "trace=1")
    assert entry["headers"]["x-custom"] == "A"
    assert entry["headers"]["authorization"] == f"Bearer {KEY}"
    assert entry["body"] == {"model": "gpt-4.1", "input": "hi"}
    assert httpx.delete(f"{base_url}/__requests").json() == {"cleared": 1}
    assert http.get("/__requests").json() == []


# ----------------------------------------------------------------- scenarios


def test_fault_429_and_500(http, sdk):
    limited = create(http, model="fault-429")
    assert limited.headers["Retry-After"] == "7"
    error = error_of(limited, 429)
    assert error["code"] == "rate_limit_exceeded"
    assert "Please try again in 7s." in error["message"]
    with pytest.raises(openai.RateLimitError):
        sdk.responses.create(model="fault-429", input="x")
    error = error_of(create(http, model="fault-500"), 500)
    assert error["type"] == "server_error"


def test_scenarios_validate_first(http):
    assert error_of(create(http, model="fault-500", bogus=1), 400)["code"] == "unknown_parameter"
    response = http.post("/v1/responses", json={"model": "fault-hang", "input": "x"},
                         headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401


def test_fault_failed(http, sdk):
    events = stream(http, model="fault-failed")
    assert types_of(events) == ["created", "in_progress", "output_item.added", "content_part.added",
                                "output_text.delta", "output_text.delta", "failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "server_error" and failed["error"]["message"]
    assert failed["id"] == events[0]["response"]["id"]
    seen = [e.type for e in sdk.responses.create(model="fault-failed", input="x", stream=True)]
    assert seen[-1] == "response.failed"
    body = ok(create(http, model="fault-failed"))
    assert (body["status"], body["error"]["code"]) == ("failed", "server_error")


def test_fault_cut(http):
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        with http.stream("POST", "/v1/responses",
                         json={"model": "fault-cut", "input": [USER], "stream": True}) as response:
            assert response.status_code == 200
            for piece in response.iter_bytes():
                received += piece
    events = parse_sse(received.decode())
    assert types_of(events)[-2:] == ["output_text.delta", "output_text.delta"]
    assert "completed" not in types_of(events)
    with pytest.raises(httpx.RemoteProtocolError):
        create(http, model="fault-cut")


def test_fault_hang_sends_no_headers(http):
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1/responses", json={"model": "fault-hang", "input": "x"}, timeout=0.3)
    assert time.monotonic() - started < 2


def test_fault_empty_is_200_with_no_body(http, sdk):
    for stream_flag, content_type in ((False, "application/json"), (True, "text/event-stream")):
        response = create(http, model="fault-empty", stream=stream_flag)
        assert response.status_code == 200
        assert response.content == b""
        assert response.headers["Content-Type"].startswith(content_type)
    # what a client sees: a stream that ends with no event at all
    assert list(sdk.responses.create(model="fault-empty", input="x", stream=True)) == []


def test_fault_slow_stream_arrives_incrementally(http):
    arrivals = []
    body = {"model": "fault-slow-stream", "input": "hi", "stream": True}
    with http.stream("POST", "/v1/responses", json=body) as response:
        for line in response.iter_lines():
            if line == "event: response.output_text.delta":
                arrivals.append(time.monotonic())
    assert len(arrivals) == 2  # "Echo", ": hi"
    assert arrivals[1] - arrivals[0] > 0.2


# ----------------------------------------------------------------- command line


def test_cli_prints_ready_and_serves():
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.upstreams.responses_api", "--port", "0", "--models", "a,b"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        word, port = process.stdout.readline().split()
        assert word == "READY"
        ids = [m["id"] for m in httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"]]
        assert ids == ["a", "b", *SCENARIO_MODELS]
    finally:
        process.terminate()
        rest, _ = process.communicate(timeout=5)
    assert rest == ""
    assert process.returncode == 0
