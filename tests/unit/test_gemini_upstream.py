"""Tests for the Gemini API test double (tests/upstreams/gemini_api.py)."""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pydantic
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from tests.upstreams import openai_compat
from tests.upstreams.gemini_api import (
    EMBEDDING_MODELS,
    SCENARIO_MODELS,
    embedding_values,
    make_app,
)
from tests.upstreams.serving import ServerThread

KEY = "AIza-test-0123456789"
MODELS = ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-pro-preview", "gemini-2.0-flash"]
USER = {"role": "user", "parts": [{"text": "hello world"}]}
REPO = Path(__file__).resolve().parents[2]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n0000").decode()


@pytest.fixture(scope="module")
def base_url():
    with ServerThread(make_app(KEY, MODELS)) as url:
        yield url


@pytest.fixture
def http(base_url):
    with httpx.Client(base_url=base_url, headers={"x-goog-api-key": KEY}, timeout=5) as client:
        yield client


@pytest.fixture
def sdk(base_url):
    options = types.HttpOptions(base_url=base_url, timeout=5000)
    return genai.Client(api_key=KEY, http_options=options)


def generate(http: httpx.Client, model: str = "gemini-2.0-flash", method: str = "generateContent", **body):
    body.setdefault("contents", [USER])
    return http.post(f"/v1beta/models/{model}:{method}", json=body)


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status
    assert set(error) <= {"code", "message", "status", "details"}
    return error


def sse_payloads(text: str) -> list[dict]:
    return [json.loads(line[len("data: "):]) for line in text.split("\r\n") if line.startswith("data: ")]


WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Weather for a city",
    parameters=types.Schema(
        type="OBJECT", properties={"city": types.Schema(type="STRING")}, required=["city"]
    ),
)
TIME = types.FunctionDeclaration(
    name="get_time",
    parameters_json_schema={"type": "object", "properties": {"tz": {"type": ["string", "null"]}}},
)
RAW_TOOLS = [{"functionDeclarations": [
    {"name": "get_weather", "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}},
    {"name": "get_time"},
]}]


class Record(pydantic.BaseModel):
    name: str
    tags: list[str]
    age: int | None = None


# ----------------------------------------------------------------- SDK, happy paths


def test_sdk_generate_content(sdk):
    response = sdk.models.generate_content(
        model="gemini-2.0-flash",
        contents="hello world",
        config=types.GenerateContentConfig(system_instruction="be brief", temperature=0.5),
    )
    assert response.text == "Echo: hello world"
    candidate = response.candidates[0]
    assert (candidate.finish_reason, candidate.index, candidate.content.role) == ("STOP", 0, "model")
    assert response.model_version == "gemini-2.0-flash"
    assert response.response_id.startswith("gemtest")
    usage = response.usage_metadata
    # "hello world" + "be brief" = 19 characters -> 19 // 4 + 1; 3 words answered
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.total_token_count) == (5, 3, 8)
    assert usage.thoughts_token_count is None  # gemini-2.0 does not think


def test_sdk_stream_four_characters_per_event(sdk):
    chunks = list(sdk.models.generate_content_stream(model="gemini-2.0-flash", contents="hello world"))
    assert [c.text for c in chunks] == ["Echo", ": he", "llo ", "worl", "d"]
    assert [c.candidates[0].finish_reason for c in chunks] == [None] * 4 + ["STOP"]
    assert {c.response_id for c in chunks} == {chunks[0].response_id}
    assert all(c.usage_metadata.candidates_token_count is None for c in chunks[:-1])
    assert chunks[0].usage_metadata.prompt_token_count == 3
    assert chunks[-1].usage_metadata.candidates_token_count == 3


def test_sdk_function_calling_round_trip_keeps_gemini3_signatures(sdk, http):
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER, TIME])])
    chat = sdk.chats.create(model="gemini-3-pro-preview", config=config)
    first = chat.send_message("what now?")
    calls = first.function_calls
    assert [(c.name, c.args, c.id) for c in calls] == [
        ("get_weather", {"tool": "get_weather", "n": 0}, None),
        ("get_time", {"tool": "get_time", "n": 1}, None),
    ]
    assert first.candidates[0].finish_reason == "STOP"
    call_parts = [p for p in first.candidates[0].content.parts if p.function_call]
    assert call_parts[0].thought_signature.startswith(b"\xfb\xef\xbe")  # "++++..." on the wire
    assert call_parts[1].thought_signature is None  # parallel calls: only the first is signed

    http.delete("/__requests")
    final = chat.send_message([
        types.Part.from_function_response(name="get_weather", response={"sky": "sunny"}),
        types.Part.from_function_response(name="get_time", response={"time": "noon"}),
    ])
    assert final.text == 'Tool results: {"sky":"sunny"}; {"time":"noon"}'
    # gemini-3 signs a text answer too
    assert final.candidates[0].content.parts[-1].thought_signature.startswith(b"\xfb\xef\xbe")
    # the SDK re-encodes the signature bytes URL-safe: "++++" comes back as "----"
    sent = http.get("/__requests").json()[0]["body"]
    assert sent["contents"][1]["parts"][0]["thoughtSignature"].startswith("----")


def test_sdk_json_schema_output(sdk):
    config = types.GenerateContentConfig(response_mime_type="application/json", response_schema=Record)
    response = sdk.models.generate_content(model="gemini-2.5-flash", contents="give json", config=config)
    assert response.text == '{"name":"x","tags":["x"],"age":1}'
    assert response.parsed == Record(name="x", tags=["x"], age=1)

    config = types.GenerateContentConfig(
        response_mime_type="application/json", response_json_schema=Record.model_json_schema()
    )
    response = sdk.models.generate_content(model="gemini-2.5-flash", contents="give json", config=config)
    assert json.loads(response.text) == {"name": "x", "tags": ["x"], "age": 1}

    plain = sdk.models.generate_content(
        model="gemini-2.0-flash", contents="hi",
        config=types.GenerateContentConfig(response_mime_type="application/json"),
    )
    assert plain.text == '{"echo":"hi"}'


def test_sdk_thinking_on_gemini_2_5(sdk):
    thinking = types.ThinkingConfig(include_thoughts=True, thinking_budget=1024)
    response = sdk.models.generate_content(
        model="gemini-2.5-flash", contents="ponder this",
        config=types.GenerateContentConfig(thinking_config=thinking),
    )
    parts = response.candidates[0].content.parts
    assert (parts[0].thought, parts[0].text) == (True, "Thinking about: ponder this")
    assert response.text == "Echo: ponder this"  # the SDK leaves thoughts out
    assert parts[1].thought_signature is None  # 2.5 signs function calls only
    assert response.usage_metadata.thoughts_token_count == 4
    assert response.usage_metadata.total_token_count == 3 + 3 + 4

    off = sdk.models.generate_content(
        model="gemini-2.5-flash", contents="ponder this",
        config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(thinking_budget=0)),
    )
    assert len(off.candidates[0].content.parts) == 1
    assert off.usage_metadata.thoughts_token_count is None

    default = sdk.models.generate_content(model="gemini-2.5-flash", contents="ponder this")
    assert default.usage_metadata.thoughts_token_count == 4  # thinking is on by default
    assert len(default.candidates[0].content.parts) == 1  # but thoughts are not shown


def test_sdk_stream_with_thoughts_and_calls(sdk):
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER])],
        thinking_config=types.ThinkingConfig(include_thoughts=True),
    )
    chunks = list(sdk.models.generate_content_stream(model="gemini-2.5-flash", contents="go", config=config))
    assert len(chunks) == 2
    assert chunks[0].candidates[0].content.parts[0].thought is True
    call_part = chunks[1].candidates[0].content.parts[0]
    assert call_part.function_call.name == "get_weather"
    assert call_part.thought_signature.startswith(b"\xfb\xef\xbe")
    assert chunks[1].candidates[0].finish_reason == "STOP"


def test_sdk_models_count_tokens_and_image(sdk):
    names = [m.name for m in sdk.models.list()]
    assert names == [f"models/{m}" for m in MODELS + SCENARIO_MODELS + list(EMBEDDING_MODELS)]
    model = sdk.models.get(model="gemini-2.5-pro")
    assert (model.display_name, model.input_token_limit, model.output_token_limit) == ("Gemini 2.5 Pro", 1048576, 65536)
    assert model.supported_actions == ["generateContent", "countTokens"]
    assert sdk.models.count_tokens(model="gemini-2.5-flash", contents="hello world").total_tokens == 3
    image = types.Part.from_bytes(data=b"\x89PNG", mime_type="image/png")
    response = sdk.models.generate_content(model="gemini-2.0-flash", contents=["look", image])
    assert response.text == "Echo: look [1 image(s)]"
    assert response.usage_metadata.prompt_token_count == 2 + 258


def test_sdk_raises_google_errors(base_url):
    wrong = genai.Client(api_key="AIza-wrong", http_options=types.HttpOptions(base_url=base_url, timeout=5000))
    with pytest.raises(genai_errors.ClientError) as caught:
        wrong.models.generate_content(model="gemini-2.0-flash", contents="hi")
    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
    assert caught.value.message == "API key not valid. Please pass a valid API key."


# ----------------------------------------------------------------- auth


def test_missing_key_is_403(base_url):
    error = error_of(httpx.post(f"{base_url}/v1beta/models/gemini-2.0-flash:generateContent", json={}), 403)
    assert error["status"] == "PERMISSION_DENIED"
    assert error["message"].startswith("Method doesn't allow unregistered callers")
    bearer = httpx.get(f"{base_url}/v1beta/models", headers={"Authorization": f"Bearer {KEY}"})
    assert error_of(bearer, 401)["status"] == "UNAUTHENTICATED"


def test_wrong_key_is_400_api_key_invalid(base_url):
    response = httpx.get(f"{base_url}/v1beta/models", headers={"x-goog-api-key": "nope"})
    error = error_of(response, 400)
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"] == "API key not valid. Please pass a valid API key."
    assert error["details"][0] == {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    }
    assert httpx.get(f"{base_url}/v1beta/models?key=nope").status_code == 400
    assert httpx.get(f"{base_url}/v1beta/models?key={KEY}").status_code == 200


def test_no_api_key_configured_means_no_auth():
    with ServerThread(make_app(None, ["gemini-2.0-flash"])) as url:
        response = httpx.post(f"{url}/v1beta/models/gemini-2.0-flash:generateContent", json={"contents": [USER]})
    assert response.status_code == 200
    assert response.json()["candidates"][0]["content"]["parts"] == [{"text": "Echo: hello world"}]


# ----------------------------------------------------------------- proto JSON parsing


def schema_tool(parameters: dict) -> list[dict]:
    return [{"functionDeclarations": [{"name": "f", "parameters": parameters}]}]


def test_unknown_top_level_field(http):
    error = error_of(generate(http, stream=True), 400)
    assert error["message"] == 'Invalid JSON payload received. Unknown name "stream": Cannot find field.'
    assert error["details"] == [{
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"description": error["message"]}],
    }]


def test_unknown_nested_field_path_is_snake_case(http):
    error = error_of(generate(http, generationConfig={"maxTokens": 5}), 400)
    assert error["message"] == (
        "Invalid JSON payload received. Unknown name \"maxTokens\" at 'generation_config': Cannot find field."
    )
    assert error["details"][0]["fieldViolations"][0]["field"] == "generation_config"


@pytest.mark.parametrize(
    "keyword",
    ["$ref", "$defs", "$schema", "const", "exclusiveMinimum", "exclusiveMaximum",
     "additionalProperties", "examples", "oneOf", "allOf", "not", "patternProperties"],
)
def test_json_schema_keywords_rejected_in_parameters(http, keyword):
    properties = {"a": {"type": "string"}, "b": {"type": "string"}, "c": {"type": "integer", keyword: 1}}
    error = error_of(generate(http, tools=schema_tool({"type": "object", "properties": properties})), 400)
    assert error["message"] == (
        f"Invalid JSON payload received. Unknown name \"{keyword}\" at "
        "'tools[0].function_declarations[0].parameters.properties[2].value': Cannot find field."
    )


def test_all_parse_errors_reported_together(http):
    parameters = {"type": "object", "$schema": "x", "additionalProperties": False,
                  "properties": {"a": {"type": "string", "format": "uri"}}}
    error = error_of(generate(http, tools=schema_tool(parameters)), 400)
    assert error["message"].split("\n") == [
        "Invalid JSON payload received. Unknown name \"$schema\" at "
        "'tools[0].function_declarations[0].parameters': Cannot find field.",
        "Invalid JSON payload received. Unknown name \"additionalProperties\" at "
        "'tools[0].function_declarations[0].parameters': Cannot find field.",
    ]
    assert len(error["details"][0]["fieldViolations"]) == 2


def test_list_typed_type_is_rejected(http):
    parameters = {"type": "object", "properties": {"a": {"type": ["string", "null"]}}}
    error = error_of(generate(http, tools=schema_tool(parameters)), 400)
    assert error["message"] == (
        "Invalid JSON payload received. Unknown name \"type\" at "
        "'tools[0].function_declarations[0].parameters.properties[0].value': "
        "Proto field is not repeating, cannot start list."
    )


def test_parameters_json_schema_takes_any_json_schema(http):
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
              "properties": {"a": {"type": ["string", "null"], "const": "x"}}, "additionalProperties": False}
    tools = [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": schema}]}]
    assert generate(http, tools=tools).status_code == 200
    both = [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": schema,
                                       "parameters": {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}}}]}]
    assert "cannot both be set" in error_of(generate(http, tools=both), 400)["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"tools": schema_tool({"type": "object", "properties": {"a": {"type": "string", "enum": [1]}}})},
         "Invalid value at 'tools[0].function_declarations[0].parameters.properties[0].value.enum[0]' (TYPE_STRING), 1"),
        ({"tools": schema_tool({"type": "object", "properties": {"a": {"type": ""}}})},
         "Invalid value at 'tools[0].function_declarations[0].parameters.properties[0].value.type' "
         "(type.googleapis.com/google.ai.generativelanguage.v1beta.Type), \"\""),
        ({"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "%%"}}]}]},
         "Invalid value at 'contents[0].parts[0].inline_data.data' (TYPE_BYTES), Base64 decoding failed for \"%%\""),
        ({"contents": [{"role": "user", "parts": [{"text": "a", "inlineData": {"mimeType": "image/png", "data": PNG}}]}]},
         "Invalid value at 'contents[0].parts[0]' (oneof), oneof field 'data' is already set. Cannot set 'inlineData'"),
        ({"contents": [USER, {"role": "model", "parts": [{"functionCall": {"name": "f", "args": "{}"}}]}]},
         "Invalid value at 'contents[1].parts[0].function_call.args' (type.googleapis.com/google.protobuf.Struct), \"{}\""),
        ({"generationConfig": {"temperature": "hot"}},
         "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), \"hot\""),
        ({"toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}, "tools": RAW_TOOLS},
         "Invalid value at 'tool_config.function_calling_config.mode' "
         "(type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), \"SOMETIMES\""),
        ({"contents": [{"role": "user", "parts": [{"text": "a", "thought_signature": "a"}]}]},
         "Invalid value at 'contents[0].parts[0].thought_signature' (TYPE_BYTES), Base64 decoding failed for \"a\""),
    ],
)
def test_invalid_values(http, body, message):
    assert error_of(generate(http, **body), 400)["message"] == message


def test_snake_case_and_proto3_json_leniency_accepted(http):
    body = {
        "system_instruction": {"parts": {"text": "be brief"}},  # one value for a repeated field
        "contents": [{"role": "user", "parts": [
            {"text": "look"}, {"inline_data": {"mime_type": "image/png", "data": PNG}}]}],
        "generation_config": {"max_output_tokens": "100", "thinking_config": {"include_thoughts": True},
                              "response_modalities": ["text"]},
        "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "tools": [{"function_declarations": [{"name": "f", "parameters": {
            "type": "object", "properties": {"a": {"type": "string"}}, "property_ordering": ["a"]}}]}],
        "tool_config": {"function_calling_config": {"mode": "none"}},
    }
    response = generate(http, model="gemini-2.5-flash", **body)
    assert response.status_code == 200, response.text
    parts = response.json()["candidates"][0]["content"]["parts"]
    assert parts[0]["thought"] is True
    assert parts[1] == {"text": "Echo: look [1 image(s)]"}


def test_body_must_be_a_json_object(http):
    not_json = http.post("/v1beta/models/gemini-2.0-flash:generateContent", content=b"{nope")
    assert error_of(not_json, 400)["message"].startswith("Invalid JSON payload received.")
    array = http.post("/v1beta/models/gemini-2.0-flash:generateContent", json=[USER])
    assert "Root element must be a message" in error_of(array, 400)["message"]


# ----------------------------------------------------------------- semantic checks


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"contents": []}, "* GenerateContentRequest.contents: contents is not specified\n"),
        ({"contents": [{"role": "user", "parts": []}]},
         "* GenerateContentRequest.contents[0].parts: contents.parts must not be empty.\n"),
        ({"contents": [{"role": "user", "parts": [{"thought": True}]}]},
         "* GenerateContentRequest.contents[0].parts[0].data: required oneof field 'data' must have one initialized field\n"),
        ({"contents": [{"role": "user", "parts": [{"text": ""}]}]},
         "* GenerateContentRequest.contents[0].parts[0].data: required oneof field 'data' must have one initialized field\n"),
        ({"tools": schema_tool({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]})},
         "* GenerateContentRequest.tools[0].function_declarations[0].parameters.required[0]: property is not defined\n"),
        ({"tools": schema_tool({"type": "object", "properties": {"level": {"type": "integer", "enum": ["1"]}}})},
         "* GenerateContentRequest.tools[0].function_declarations[0].parameters.properties[level].enum: only allowed for STRING type\n"),
        ({"tools": schema_tool({"type": "object", "properties": {"files": {"type": "array"}}})},
         "* GenerateContentRequest.tools[0].function_declarations[0].parameters.properties[files].items: missing field.\n"),
        ({"tools": schema_tool({"type": "object"})},
         "* GenerateContentRequest.tools[0].function_declarations[0].parameters.properties: should be non-empty for OBJECT type\n"),
        ({"tools": [{"functionDeclarations": [{"name": "bad name"}]}]},
         "* GenerateContentRequest.tools[0].function_declarations[0].name: Invalid function name. Must start with a letter"
         " or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes (-),"
         " with a maximum length of 64.\n"),
        ({"generationConfig": {"responseMimeType": "application/json", "responseSchema": {
            "type": "object", "properties": {"go_back": {"type": "object", "properties": {}}}}}},
         "* GenerateContentRequest.generation_config.response_schema.properties[\"go_back\"].properties:"
         " should be non-empty for OBJECT type\n"),
        ({"generationConfig": {"responseSchema": {"type": "string"}}},
         "* GenerateContentRequest.generation_config.response_mime_type: response_mime_type must be"
         " `application/json` or `text/x.enum` when response_schema is set.\n"),
        ({"generationConfig": {"stopSequences": list("abcdef")}},
         "* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences are allowed.\n"),
        ({"generationConfig": {"candidateCount": 2}},
         "* GenerateContentRequest.generation_config.candidate_count: this test double supports only candidate_count 1.\n"),
        ({"generationConfig": {"temperature": 3}},
         "Unable to submit request because it has a temperature value of 3 but the supported range is"
         " from 0 (inclusive) to 2.0001 (exclusive). Update the value and try again."),
        ({"generationConfig": {"maxOutputTokens": 0}},
         "Unable to submit request because it has a maxOutputTokens value of 0 but the supported range is"
         " from 1 (inclusive) to 65537 (exclusive). Update the value and try again."),
        ({"toolConfig": {"functionCallingConfig": {"mode": "ANY"}}},
         "Function calling config is set without function_declarations."),
        ({"cachedContent": "cachedContents/abc"}, "CachedContent not found (or permission denied)"),
    ],
)
def test_semantic_rejections(http, body, message):
    response = generate(http, **body)
    status = 403 if "cachedContent" in body else 400
    assert error_of(response, status)["message"] == message


def test_problems_are_reported_together(http):
    tools = schema_tool({"type": "object", "properties": {"a": {"type": "array"}}, "required": ["z"]})
    message = error_of(generate(http, tools=tools, contents=[{"role": "user", "parts": []}]), 400)["message"]
    assert message.count("* GenerateContentRequest.") == 3
    assert message.endswith("\n")


@pytest.mark.parametrize(
    "contents",
    [
        [{"role": "assistant", "parts": [{"text": "x"}]}],
        [{"role": "system", "parts": [{"text": "x"}]}, USER],
        [{"parts": [{"text": "x"}]}, {"role": "model", "parts": [{"text": "y"}]}, USER],
    ],
)
def test_bad_roles(http, contents):
    assert error_of(generate(http, contents=contents), 400)["message"] == "Please use a valid role: user, model."


def test_missing_role_is_fine_for_single_turn(http):
    assert generate(http, contents=[{"parts": [{"text": "hi"}]}]).status_code == 200


def call_turn(name: str = "f", signature: str | None = None) -> dict:
    part = {"functionCall": {"name": name, "args": {}}}
    if signature:
        part["thoughtSignature"] = signature
    return {"role": "model", "parts": [part]}


def response_turn(name: str = "f") -> dict:
    return {"role": "user", "parts": [{"functionResponse": {"name": name, "response": {"ok": True}}}]}


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        ([USER, response_turn()],
         "Please ensure that function response turn comes immediately after a function call turn."),
        ([USER, {"role": "model", "parts": [{"text": "a"}]}, call_turn(), response_turn()],
         "Please ensure that function call turn comes immediately after a user turn or after a function response turn."),
        ([USER, call_turn(), {"role": "user", "parts": [response_turn()["parts"][0]] * 2}],
         "Please ensure that the number of function response parts is equal to the number of function call"
         " parts of the function call turn."),
    ],
)
def test_function_turn_order(http, contents, message):
    assert error_of(generate(http, contents=contents), 400)["message"] == message


# ----------------------------------------------------------------- thought signatures


def issued_signature(http: httpx.Client) -> str:
    body = generate(http, model="gemini-3-pro-preview", tools=RAW_TOOLS).json()
    return body["candidates"][0]["content"]["parts"][0]["thoughtSignature"]


def test_gemini3_rejects_unsigned_function_call_in_current_turn(http):
    history = [USER, call_turn("get_weather"), response_turn("get_weather")]
    error = error_of(generate(http, model="gemini-3-pro-preview", contents=history), 400)
    assert error["message"] == (
        "Function call is missing a thought_signature in functionCall parts. This is required for tools to"
        " work correctly, and missing thought_signature may lead to degraded model performance. Additional"
        " data, function call `default_api:get_weather` , position 2. Please refer to"
        " https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
    )
    assert generate(http, model="gemini-2.5-flash", contents=history).status_code == 200


def test_gemini3_accepts_issued_signature_in_either_base64_alphabet(http):
    signature = issued_signature(http)
    assert signature.startswith("++++")
    for spelling in (signature, signature.replace("+", "-").replace("/", "_").rstrip("=")):
        history = [USER, call_turn("get_weather", spelling), response_turn("get_weather")]
        response = generate(http, model="gemini-3-pro-preview", contents=history)
        assert response.status_code == 200, response.text


def test_gemini3_checks_only_the_current_turn(http):
    signature = issued_signature(http)
    old_turn = [USER, call_turn(), response_turn(), {"role": "model", "parts": [{"text": "done"}]}]
    ok = [*old_turn, USER, call_turn("g", signature), response_turn("g")]
    assert generate(http, model="gemini-3-pro-preview", contents=ok).status_code == 200
    unsigned = [*old_turn, USER, call_turn("g", signature), response_turn("g"), call_turn("h"), response_turn("h")]
    message = error_of(generate(http, model="gemini-3-pro-preview", contents=unsigned), 400)["message"]
    assert "function call `default_api:h` , position 8." in message


def test_forged_signature_rejected_for_every_model(http):
    forged = base64.b64encode(b"not issued by this double").decode()
    for model in ("gemini-2.0-flash", "gemini-2.5-flash", "gemini-3-pro-preview"):
        history = [USER, call_turn("f", forged), response_turn()]
        error = error_of(generate(http, model=model, contents=history), 400)
        assert error["message"] == "Unable to submit request because Thought signature is not valid."
    dummy = [USER, call_turn("f", "skip_thought_signature_validator"), response_turn()]
    assert generate(http, model="gemini-3-pro-preview", contents=dummy).status_code == 200


# ----------------------------------------------------------------- answers and formats


def test_tool_calls_modes(http):
    parts = generate(http, tools=RAW_TOOLS).json()["candidates"][0]["content"]["parts"]
    assert parts == [
        {"functionCall": {"name": "get_weather", "args": {"tool": "get_weather", "n": 0}}},
        {"functionCall": {"name": "get_time", "args": {"tool": "get_time", "n": 1}}},
    ]
    only = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}}
    parts = generate(http, tools=RAW_TOOLS, toolConfig=only).json()["candidates"][0]["content"]["parts"]
    assert parts == [{"functionCall": {"name": "get_time", "args": {"tool": "get_time", "n": 0}}}]
    none = generate(http, tools=RAW_TOOLS, toolConfig={"functionCallingConfig": {"mode": "NONE"}}).json()
    assert none["candidates"][0]["content"]["parts"] == [{"text": "Echo: hello world"}]
    after_results = [USER, call_turn("get_weather"), response_turn("get_weather")]
    done = generate(http, tools=RAW_TOOLS, contents=after_results).json()
    assert done["candidates"][0]["content"]["parts"] == [{"text": 'Tool results: {"ok":true}'}]


def test_sse_wire_format(http):
    response = generate(http, method="streamGenerateContent?alt=sse")
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.text.startswith('data: {"candidates": [{"content": {"parts": [{"text": "Echo"}],"role": "model"}')
    assert response.text.endswith("}\r\n\r\n")
    assert "[DONE]" not in response.text
    events = sse_payloads(response.text)
    assert "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events) == "Echo: hello world"
    assert all(e["modelVersion"] == "gemini-2.0-flash" for e in events)


def test_json_array_stream_and_its_errors(http):
    response = generate(http, method="streamGenerateContent")
    assert response.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert response.text.startswith("[{") and "}\r\n,{" in response.text and response.text.endswith("}\r\n]")
    texts = [e["candidates"][0]["content"]["parts"][0]["text"] for e in response.json()]
    assert texts == ["Echo", ": he", "llo ", "worl", "d"]
    failed = generate(http, method="streamGenerateContent", contents=[])
    assert failed.status_code == 400
    assert failed.json()[0]["error"]["status"] == "INVALID_ARGUMENT"


def test_gemini3_stream_signs_last_text_event(http):
    events = sse_payloads(generate(http, model="gemini-3-pro-preview", method="streamGenerateContent?alt=sse").text)
    signed = ["thoughtSignature" in e["candidates"][0]["content"]["parts"][0] for e in events]
    assert signed == [False] * (len(events) - 1) + [True]
    assert events[0]["usageMetadata"]["thoughtsTokenCount"] > 0


def test_count_tokens_forms(http):
    url = "/v1beta/models/gemini-2.5-flash:countTokens"
    assert http.post(url, json={"contents": [USER]}).json()["totalTokens"] == 3
    inner = {"model": "models/gemini-2.5-flash", "contents": [USER], "systemInstruction": {"parts": [{"text": "be brief"}]}}
    assert http.post(url, json={"generateContentRequest": inner}).json()["totalTokens"] == 5
    no_model = http.post(url, json={"generateContentRequest": {"contents": [USER]}})
    assert "unexpected model name format" in error_of(no_model, 400)["message"]
    assert "Unknown name \"foo\" at 'generate_content_request'" in error_of(
        http.post(url, json={"generateContentRequest": {**inner, "foo": 1}}), 400)["message"]


def test_not_found(http):
    error = error_of(generate(http, model="gemini-9"), 404)
    assert error["status"] == "NOT_FOUND"
    assert error["message"].startswith("models/gemini-9 is not found for API version v1beta, or is not supported for generateContent.")
    assert error_of(http.get("/v1beta/models/gemini-9"), 404)["status"] == "NOT_FOUND"
    assert "not supported for fooBar" in error_of(generate(http, method="fooBar"), 404)["message"]
    page = http.post("/v1/chat/completions", json={})
    assert page.status_code == 404
    assert page.headers["Content-Type"].startswith("text/html")
    assert "The requested URL <code>/v1/chat/completions</code> was not found" in page.text


def test_request_log(http, base_url):
    assert http.delete("/__requests").status_code == 200
    http.post("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", json={"contents": [USER]},
              headers={"X-Custom": "A"})
    log = httpx.get(f"{base_url}/__requests").json()  # no auth needed
    assert len(log) == 1
    entry = log[0]
    assert (entry["method"], entry["path"], entry["query"]) == (
        "POST", "/v1beta/models/gemini-2.0-flash:streamGenerateContent", "alt=sse")
    assert entry["headers"]["x-custom"] == "A"
    assert entry["headers"]["x-goog-api-key"] == KEY
    assert entry["body"] == {"contents": [USER]}
    assert httpx.delete(f"{base_url}/__requests").json() == {"cleared": 1}
    assert http.get("/__requests").json() == []


# ----------------------------------------------------------------- embeddings

EMBED_MODEL = "gemini-embedding-001"


def embed(http: httpx.Client, body: dict, model: str = EMBED_MODEL, method: str = "embedContent") -> httpx.Response:
    return http.post(f"/v1beta/models/{model}:{method}", json=body)


def text_content(*texts: str) -> dict:
    return {"parts": [{"text": t} for t in texts]}


def batch_item(text: str, model: str = EMBED_MODEL, **extra) -> dict:
    return {"model": f"models/{model}", "content": text_content(text), **extra}


def test_sdk_embed_content_uses_batch_endpoint(sdk, http):
    http.delete("/__requests")
    config = types.EmbedContentConfig(task_type="RETRIEVAL_DOCUMENT", title="doc", output_dimensionality=4)
    response = sdk.models.embed_content(model=EMBED_MODEL, contents=["hello", "world"], config=config)
    assert [e.values for e in response.embeddings] == [embedding_values("hello", 4), embedding_values("world", 4)]
    sent = http.get("/__requests").json()[0]
    assert sent["path"] == f"/v1beta/models/{EMBED_MODEL}:batchEmbedContents"
    assert sent["body"]["requests"][0] == {
        "content": {"parts": [{"text": "hello"}], "role": "user"}, "taskType": "RETRIEVAL_DOCUMENT",
        "title": "doc", "outputDimensionality": 4, "model": f"models/{EMBED_MODEL}"}


def test_embed_content_values(http):
    body = embed(http, {"content": text_content("hello", "world"), "taskType": "retrieval_query"}).json()
    assert set(body) == {"embedding"}
    values = body["embedding"]["values"]
    assert values == embedding_values("hello\nworld")  # text parts joined with "\n"
    assert len(values) == 8
    assert math.isclose(math.fsum(v * v for v in values), 1, rel_tol=1e-6)
    assert values == openai_compat.embedding_vector("hello\nworld")  # both doubles agree
    sized = embed(http, {"content": text_content("hello"), "output_dimensionality": 768}, model="text-embedding-004")
    assert len(sized.json()["embedding"]["values"]) == 768


def test_batch_embed_contents_in_order(http):
    body = {"requests": [batch_item("a"), batch_item("b", outputDimensionality=3), batch_item("a")]}
    embeddings = embed(http, body, method="batchEmbedContents").json()["embeddings"]
    assert [e["values"] for e in embeddings] == [embedding_values("a"), embedding_values("b", 3), embedding_values("a")]
    full = embed(http, {"requests": [batch_item("x")] * 100}, method="batchEmbedContents")
    assert len(full.json()["embeddings"]) == 100


def test_embedding_models_listed_for_embedding_only(http):
    entry = http.get(f"/v1beta/models/{EMBED_MODEL}").json()
    assert entry["supportedGenerationMethods"] == ["embedContent", "batchEmbedContents"]
    assert (entry["inputTokenLimit"], entry["outputTokenLimit"]) == (2048, 1)
    assert "temperature" not in entry
    error = error_of(generate(http, model=EMBED_MODEL), 404)
    assert error["message"].startswith(
        f"models/{EMBED_MODEL} is not found for API version v1beta, or is not supported for generateContent.")
    stream = generate(http, model=EMBED_MODEL, method="streamGenerateContent?alt=sse")
    assert error_of(stream, 404)["status"] == "NOT_FOUND"
    assert "not supported for countTokens" in error_of(generate(http, model=EMBED_MODEL, method="countTokens"), 404)["message"]


def test_embed_on_chat_or_unknown_model_is_404(http):
    for model in ("gemini-2.5-flash", "gemini-9"):
        for method, body in (("embedContent", {"content": text_content("x")}),
                             ("batchEmbedContents", {"requests": [batch_item("x", model)]})):
            error = error_of(embed(http, body, model=model, method=method), 404)
            assert error["message"].startswith(
                f"models/{model} is not found for API version v1beta, or is not supported for {method}.")


@pytest.mark.parametrize(
    ("method", "body", "message"),
    [
        ("embedContent", {"content": text_content("x"), "contents": []},
         'Invalid JSON payload received. Unknown name "contents": Cannot find field.'),
        ("embedContent", {"content": {"parts": [{"text": "x", "bogus": 1}]}},
         "Invalid JSON payload received. Unknown name \"bogus\" at 'content.parts[0]': Cannot find field."),
        ("embedContent", {"content": text_content("x"), "taskType": "SUMMARIZE"},
         "Invalid value at 'task_type' (type.googleapis.com/google.ai.generativelanguage.v1beta.TaskType), \"SUMMARIZE\""),
        ("embedContent", {"content": text_content("x"), "outputDimensionality": "many"},
         "Invalid value at 'output_dimensionality' (TYPE_INT32), \"many\""),
        ("embedContent", {"content": [text_content("x")]},
         'Invalid JSON payload received. Unknown name "content": Proto field is not repeating, cannot start list.'),
        ("batchEmbedContents", {"requests": [{**batch_item("x"), "taskTypes": 1}]},
         "Invalid JSON payload received. Unknown name \"taskTypes\" at 'requests[0]': Cannot find field."),
        ("embedContent", {}, "* EmbedContentRequest.content: content is not specified\n"),
        ("embedContent", {"content": {"parts": []}},
         "* EmbedContentRequest.content.parts: contents.parts must not be empty.\n"),
        ("embedContent", {"content": text_content("")},
         "* EmbedContentRequest.content.parts[0].data: required oneof field 'data' must have one initialized field\n"),
        ("embedContent", {"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": PNG}}]}},
         "* EmbedContentRequest.content.parts[0]: only text parts are supported by this model.\n"),
        ("embedContent", {"content": text_content("x"), "outputDimensionality": 3073},
         "* EmbedContentRequest.output_dimensionality: must be between 1 and 3072, or unset.\n"),
        ("embedContent", {"content": text_content("x"), "outputDimensionality": -1},
         "* EmbedContentRequest.output_dimensionality: must be between 1 and 3072, or unset.\n"),
        ("batchEmbedContents", {}, "* BatchEmbedContentsRequest.requests: requests is not specified\n"),
        ("batchEmbedContents", {"requests": [batch_item("x")] * 101},
         "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch\n"),
        ("batchEmbedContents", {"requests": [{"content": text_content("x")}]},
         "* BatchEmbedContentsRequest.requests[0].model: model is not specified\n"),
        ("batchEmbedContents", {"requests": [{**batch_item("x"), "model": EMBED_MODEL}]},
         "* BatchEmbedContentsRequest.requests[0].model: unexpected model name format\n"),
        ("batchEmbedContents", {"requests": [batch_item("x"), batch_item("y", "text-embedding-004")]},
         ("* BatchEmbedContentsRequest.requests[1].model: models/text-embedding-004 does not match the batch"
          f" model models/{EMBED_MODEL}.\n")),
        ("batchEmbedContents", {"requests": [batch_item("x"), {"model": f"models/{EMBED_MODEL}"}]},
         "* BatchEmbedContentsRequest.requests[1].content: content is not specified\n"),
    ],
)
def test_embed_rejections(http, method, body, message):
    assert error_of(embed(http, body, method=method), 400)["message"] == message


def test_embed_parse_errors_come_before_model_check(http):
    error = error_of(embed(http, {"contents": [USER]}, model="gemini-9"), 400)
    assert error["details"][0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"


def test_embed_problems_reported_together(http):
    body = {"requests": [{"content": {"parts": []}}, batch_item("x", outputDimensionality=4000)]}
    message = error_of(embed(http, body, method="batchEmbedContents"), 400)["message"]
    assert message.count("\n") == 3
    assert "requests[0].model" in message and "requests[0].content.parts" in message
    assert "requests[1].output_dimensionality" in message


def test_embed_auth_and_faults(http, base_url):
    anonymous = httpx.post(f"{base_url}/v1beta/models/{EMBED_MODEL}:embedContent", json={"content": text_content("x")})
    assert error_of(anonymous, 403)["status"] == "PERMISSION_DENIED"
    assert error_of(embed(http, {"content": text_content("x")}, model="fault-500"), 500)["status"] == "INTERNAL"
    limited = embed(http, {"requests": [batch_item("x", "fault-429")]}, model="fault-429", method="batchEmbedContents")
    assert error_of(limited, 429)["status"] == "RESOURCE_EXHAUSTED"
    assert embed(http, {"content": text_content("")}, model="fault-503").status_code == 400  # validation first
    with pytest.raises(httpx.RemoteProtocolError):
        embed(http, {"content": text_content("x")}, model="fault-cut")
    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1beta/models/fault-hang:embedContent", json={"content": text_content("x")}, timeout=0.3)
    assert error_of(embed(http, {"content": text_content("x")}, model="fault-safety"), 404)["status"] == "NOT_FOUND"


# ----------------------------------------------------------------- scenarios


def test_fault_finish_reasons(http, sdk):
    cut = generate(http, model="fault-max-tokens").json()["candidates"][0]
    assert (cut["content"]["parts"], cut["finishReason"]) == ([{"text": "Echo: he"}], "MAX_TOKENS")
    safety = generate(http, model="fault-safety").json()["candidates"][0]
    assert "content" not in safety and safety["finishReason"] == "SAFETY"
    assert {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True} in safety["safetyRatings"]
    blocked = sdk.models.generate_content(model="fault-prompt-blocked", contents="hi")
    assert blocked.candidates is None
    assert blocked.prompt_feedback.block_reason == "SAFETY"
    events = sse_payloads(generate(http, model="fault-max-tokens", method="streamGenerateContent?alt=sse").text)
    assert [e["candidates"][0].get("finishReason") for e in events] == [None, "MAX_TOKENS"]


def test_fault_errors(http):
    limited = error_of(generate(http, model="fault-429"), 429)
    assert limited["status"] == "RESOURCE_EXHAUSTED"
    by_type = {d["@type"].rsplit(".", 1)[-1]: d for d in limited["details"]}
    assert by_type["RetryInfo"]["retryDelay"] == "7s"
    assert by_type["ErrorInfo"]["reason"] == "RATE_LIMIT_EXCEEDED"
    assert error_of(generate(http, model="fault-500"), 500)["status"] == "INTERNAL"
    overloaded = error_of(generate(http, model="fault-503", method="streamGenerateContent?alt=sse"), 503)
    assert (overloaded["status"], overloaded["message"]) == ("UNAVAILABLE", "The model is overloaded. Please try again later.")


def test_scenarios_still_validate(http, base_url):
    assert generate(http, model="fault-500", bogus=1).status_code == 400
    response = httpx.post(f"{base_url}/v1beta/models/fault-hang:generateContent", json={"contents": [USER]},
                          headers={"x-goog-api-key": "nope"})
    assert response.status_code == 400


def test_fault_hang_sends_no_headers(http):
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1beta/models/fault-hang:generateContent", json={"contents": [USER]}, timeout=0.3)
    assert time.monotonic() - started < 2


def test_fault_cut_stream_aborts_after_two_events(http):
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        with http.stream("POST", "/v1beta/models/fault-cut:streamGenerateContent?alt=sse",
                         json={"contents": [USER]}) as response:
            assert response.status_code == 200
            for piece in response.iter_bytes():
                received += piece
    texts = [e["candidates"][0]["content"]["parts"][0]["text"] for e in sse_payloads(received.decode())]
    assert texts == ["Echo", ": he"]
    with pytest.raises(httpx.RemoteProtocolError):
        generate(http, model="fault-cut")


def test_fault_slow_stream_arrives_incrementally(http):
    arrivals = []
    with http.stream("POST", "/v1beta/models/fault-slow-stream:streamGenerateContent?alt=sse",
                     json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 2  # "Echo", ": hi"
    assert arrivals[1] - arrivals[0] > 0.2


# ----------------------------------------------------------------- command line


def test_cli_prints_ready_and_serves():
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.upstreams.gemini_api", "--port", "0", "--models", "a,b",
         "--api-key", "k1"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        word, port = process.stdout.readline().split()
        assert word == "READY"
        listing = httpx.get(f"http://127.0.0.1:{port}/v1beta/models", headers={"x-goog-api-key": "k1"}).json()
        assert [m["name"] for m in listing["models"]][:2] == ["models/a", "models/b"]
    finally:
        process.terminate()
        rest, _ = process.communicate(timeout=5)
    assert rest == ""
    assert process.returncode == 0
