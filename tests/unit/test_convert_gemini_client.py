"""Gemini clients (google-genai SDK, Gemini CLI) <-> canonical: requests captured from the
google-genai SDK itself (driven over an in-memory transport), responses and streams checked
with the SDK's own types and parsers, round trips through the upstream-side Gemini converter."""

import base64
import copy
import json
import random

import httpx
import pytest
from google import genai
from google.genai import types as gtypes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converters import anthropic as an
from converters import call_ids, gemini, openai_chat, responses
from converters import canonical as cn
from converters.gemini_schema import to_gemini_schema
from converters.pipeline import Converting

IMG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
SIG = "CiQB0e2Kb3+zX5c/Lq9n2w=="  # standard base64 with + and /: the Python SDK sends it back URL-safe
THINK_SIG = "EqQBCkYIBxgCKkBZ3qJ9J0l1mH1cOq4v8w0gYkY0tBfNn9xj1t8QpMxKkTu7Ol5x0ePZ2ZE+/Y0rJ6bF0KjT8eFZ1q8x"
FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

READ_FILE_SCHEMA = {  # parametersJsonSchema, as Gemini CLI and MCP servers write them
    "type": "object",
    "properties": {
        "absolute_path": {"type": "string", "description": "Absolute path of the file."},
        "offset": {"type": "integer", "minimum": 0},
        "limit": {"type": ["integer", "null"], "exclusiveMinimum": 0},
    },
    "required": ["absolute_path"],
    "additionalProperties": False,
    "$schema": "http://json-schema.org/draft-07/schema#",
}
ANSWER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "temp_c": {"type": "number"}},
                 "required": ["city", "temp_c"]}


# --- the google-genai SDK, over an in-memory transport -------------------------

def sdk_client(handler) -> genai.Client:
    return genai.Client(api_key="test-key", http_options=gtypes.HttpOptions(
        httpx_client=httpx.Client(transport=httpx.MockTransport(handler))))


def sdk_request(contents, config, model="gemini-2.5-flash") -> tuple[str, dict]:
    """(URL, JSON body) exactly as the google-genai SDK sends generate_content."""
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), json.loads(request.content)))
        return httpx.Response(200, json={"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]},
                                                         "finishReason": "STOP"}]})

    sdk_client(handler).models.generate_content(model=model, contents=contents, config=config)
    return seen[0]


def sdk_conversation():
    sig, think_sig = base64.b64decode(SIG), base64.b64decode(THINK_SIG)
    contents = [
        gtypes.Content(role="user", parts=[gtypes.Part.from_text(text="What is in this picture? And the weather?"),
                                           gtypes.Part.from_bytes(data=base64.b64decode(IMG), mime_type="image/png")]),
        gtypes.Content(role="model", parts=[
            gtypes.Part(text="The user wants two things.", thought=True, thought_signature=think_sig),
            gtypes.Part.from_text(text="A pixel. Checking the weather."),
            gtypes.Part(function_call=gtypes.FunctionCall(name="get_weather", args={"city": "Paris"}),
                        thought_signature=sig),
            gtypes.Part(function_call=gtypes.FunctionCall(name="get_weather", args={"city": "Lyon"})),
        ]),
        gtypes.Content(role="user", parts=[
            gtypes.Part.from_function_response(name="get_weather", response={"output": "18C, sunny"}),
            gtypes.Part.from_function_response(name="get_weather", response={"error": "station offline"}),
        ]),
        gtypes.Content(role="model", parts=[gtypes.Part.from_text(text="Paris: 18C. Lyon: unknown.")]),
        gtypes.Content(role="user", parts=[gtypes.Part.from_text(text="Answer as JSON.")]),
    ]
    config = gtypes.GenerateContentConfig(
        system_instruction="You are terse.",
        tools=[gtypes.Tool(function_declarations=[
            gtypes.FunctionDeclaration(name="get_weather", description="Weather for a city",
                                       parameters=gtypes.Schema(
                                           type="OBJECT", required=["city"], property_ordering=["city", "days"],
                                           properties={"city": gtypes.Schema(type="STRING"),
                                                       "days": gtypes.Schema(type="INTEGER", nullable=True)})),
            gtypes.FunctionDeclaration(name="read_file", description="Read a file",
                                       parameters_json_schema=READ_FILE_SCHEMA),
        ])],
        tool_config=gtypes.ToolConfig(function_calling_config=gtypes.FunctionCallingConfig(mode="AUTO")),
        response_mime_type="application/json", response_json_schema=ANSWER_SCHEMA,
        thinking_config=gtypes.ThinkingConfig(include_thoughts=True, thinking_budget=2048),
        max_output_tokens=1024, temperature=0.4, top_p=0.9, top_k=40, stop_sequences=["END"], seed=11,
        safety_settings=[gtypes.SafetySetting(category="HARM_CATEGORY_HARASSMENT", threshold="BLOCK_NONE")],
    )
    return contents, config


@pytest.fixture(scope="module")
def sdk_body() -> dict:
    url, body = sdk_request(*sdk_conversation())
    assert url.endswith("/models/gemini-2.5-flash:generateContent")
    return body


def test_the_sdk_sends_snake_case_and_url_safe_base64(sdk_body):
    """What the decoder has to cope with (pitfall 15), seen on the wire."""
    assert "include_thoughts" in sdk_body["generationConfig"]["thinkingConfig"]
    decls = sdk_body["tools"][0]["functionDeclarations"]
    assert "property_ordering" in decls[0]["parameters"] and "parameters_json_schema" in decls[1]
    call = sdk_body["contents"][1]["parts"][2]
    assert call["thoughtSignature"] == SIG.replace("+", "-").replace("/", "_")


def test_sdk_request_decodes(sdk_body):
    req = gemini.decode_request(sdk_body, "models/gemini-2.5-flash")
    assert req.model == "gemini-2.5-flash" and req.include_usage and not req.stream
    assert req.system == [cn.Text("You are terse.")]
    user, model, results, answer, last = req.messages
    assert [m.role for m in req.messages] == ["user", "assistant", "user", "assistant", "user"]
    assert user.content == [cn.Text("What is in this picture? And the weather?"), cn.Image("image/png", IMG)]
    thinking, text, paris, lyon = model.content
    assert thinking == cn.Thinking("The user wants two things.", THINK_SIG)  # back in standard base64
    assert text == cn.Text("A pixel. Checking the weather.")
    assert (paris.name, json.loads(paris.arguments), paris.signature) == ("get_weather", {"city": "Paris"}, SIG)
    assert call_ids.signature_of(paris.id) == SIG  # the id carries it too, for OpenAI-shaped backends
    assert lyon.signature is None and lyon.id != paris.id
    ok, failed = results.content
    assert (ok.call_id, ok.name, ok.content, ok.is_error) == (paris.id, "get_weather", [cn.Text("18C, sunny")], False)
    assert (failed.call_id, failed.content, failed.is_error) == (lyon.id, [cn.Text("station offline")], True)
    assert cn.text_of(answer.content) == "Paris: 18C. Lyon: unknown." and cn.text_of(last.content) == "Answer as JSON."

    weather, read = req.tools
    assert weather.parameters == {"type": "object", "required": ["city"], "propertyOrdering": ["city", "days"],
                                  "properties": {"city": {"type": "string"},
                                                 "days": {"type": ["integer", "null"]}}}
    assert read.parameters == READ_FILE_SCHEMA  # parametersJsonSchema: as given
    assert req.tool_choice == cn.ToolChoice("auto")
    assert (req.max_tokens, req.temperature, req.top_p, req.top_k, req.stop, req.seed) == (
        1024, 0.4, 0.9, 40, ["END"], 11)
    assert isinstance(req.top_k, int)  # the SDK sends 40.0
    assert req.response_format == cn.ResponseFormat("json_schema", ANSWER_SCHEMA)
    assert req.reasoning == cn.Reasoning(budget_tokens=2048, include_thoughts=True)
    assert req.dropped == ["safetySettings"]


def _without_ids(body: dict) -> dict:
    body = copy.deepcopy(body)
    for c in body["contents"]:
        for p in c["parts"]:
            for key in ("functionCall", "functionResponse"):
                if key in p:
                    p[key].pop("id", None)
    return body


def test_sdk_request_round_trips_through_the_gemini_encoder(sdk_body):
    """Gemini client -> canonical -> Gemini upstream: the same request, in the upstream encoder's spelling."""
    out = gemini.encode_request(gemini.decode_request(sdk_body, "gemini-2.5-flash"))
    expected_contents = [
        {"role": "user", "parts": [{"text": "What is in this picture? And the weather?"},
                                   {"inlineData": {"mimeType": "image/png", "data": IMG}}]},
        {"role": "model", "parts": [  # thinking is not replayed upstream; signatures of calls are, in standard base64
            {"text": "A pixel. Checking the weather."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG},
            {"functionCall": {"name": "get_weather", "args": {"city": "Lyon"}}},
        ]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"content": "18C, sunny"}}},
            {"functionResponse": {"name": "get_weather", "response": {"error": "station offline"}}},
        ]},
        {"role": "model", "parts": [{"text": "Paris: 18C. Lyon: unknown."}]},
        {"role": "user", "parts": [{"text": "Answer as JSON."}]},
    ]
    assert _without_ids(out)["contents"] == expected_contents
    assert out["systemInstruction"] == {"parts": [{"text": "You are terse."}]}
    weather, read = out["tools"][0]["functionDeclarations"]
    original = sdk_body["tools"][0]["functionDeclarations"][0]["parameters"]
    assert weather["parameters"]["properties"] == {"city": {"type": "STRING"},
                                                   "days": {"type": "INTEGER", "nullable": True}}
    assert weather["parameters"]["required"] == original["required"]
    assert weather["parameters"].get("propertyOrdering", original["property_ordering"]) == ["city", "days"]
    assert read["parameters"] == to_gemini_schema(READ_FILE_SCHEMA)
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    gc = out["generationConfig"]
    sent = sdk_body["generationConfig"]
    for key in ("maxOutputTokens", "temperature", "topP", "topK", "stopSequences", "seed", "responseMimeType"):
        assert gc[key] == sent[key], key
    assert gc["responseSchema"] == to_gemini_schema(ANSWER_SCHEMA)
    assert gc["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 2048}
    # and the SDK's own strict (extra=forbid) models accept every piece
    for c in out["contents"]:
        gtypes.Content.model_validate(c)
    gtypes.Tool.model_validate(out["tools"][0])
    gtypes.GenerationConfig.model_validate(gc)


def test_sdk_request_to_other_backends(sdk_body):
    req = gemini.decode_request(sdk_body, "gemini-2.5-flash")
    body = an.encode_request(copy.deepcopy(req))
    uses = [b for m in body["messages"] for b in m["content"] if isinstance(b, dict) and b.get("type") == "tool_use"]
    results = [b for m in body["messages"] for b in m["content"]
               if isinstance(b, dict) and b.get("type") == "tool_result"]
    assert [u["id"] for u in uses] == [r["tool_use_id"] for r in results]  # every result answers its call
    assert results[1].get("is_error") is True
    thinking = body["messages"][1]["content"][0]
    assert thinking == {"type": "thinking", "thinking": "The user wants two things.", "signature": THINK_SIG}
    assert body["tools"][0]["input_schema"]["properties"]["days"]["type"] == ["integer", "null"]

    chat = openai_chat.encode_request(copy.deepcopy(req))
    tool_msgs = [m for m in chat["messages"] if m["role"] == "tool"]
    calls = [tc for m in chat["messages"] for tc in m.get("tool_calls") or ()]
    assert [m["tool_call_id"] for m in tool_msgs] == [c["id"] for c in calls]
    assert chat["tools"][0]["function"]["parameters"]["properties"]["city"] == {"type": "string"}
    json.dumps(responses.encode_request(copy.deepcopy(req)))


# --- Gemini CLI-shaped (camelCase, @google/genai) requests ----------------------

GEMINI_CLI_REQUEST = {
    "contents": [
        {"role": "user", "parts": [{"text": "Read README.md"}]},
        {"role": "model", "parts": [
            {"text": "**Planning**\nI will read it.", "thought": True},
            {"text": "", "thought": True, "thoughtSignature": THINK_SIG},
            {"functionCall": {"id": "read_file-1730000000000-ab12", "name": "read_file",
                              "args": {"absolute_path": "/w/README.md"}}, "thoughtSignature": SIG},
        ]},
        {"role": "user", "parts": [{"functionResponse": {"id": "read_file-1730000000000-ab12", "name": "read_file",
                                                         "response": {"output": "# Project\n"}}}]},
    ],
    "systemInstruction": {"role": "user", "parts": [{"text": "You are Gemini CLI."}, {"text": "Be careful."}]},
    "tools": [{"functionDeclarations": [{"name": "read_file", "description": "Reads a file",
                                         "parametersJsonSchema": READ_FILE_SCHEMA}]}],
    "generationConfig": {"temperature": 0, "topP": 1,
                         "thinkingConfig": {"includeThoughts": True, "thinkingBudget": -1}},
}


def test_gemini_cli_request():
    req = gemini.decode_request(GEMINI_CLI_REQUEST, "gemini-2.5-pro")
    assert [t.text for t in req.system] == ["You are Gemini CLI.", "Be careful."]
    thinking, call = req.messages[1].content  # the stream's thought parts are one block, signed
    assert thinking == cn.Thinking("**Planning**\nI will read it.", THINK_SIG)
    assert (call.id, call.signature) == ("read_file-1730000000000-ab12", SIG)  # the client's own id is kept
    result = req.messages[2].content[0]
    assert (result.call_id, result.content) == (call.id, [cn.Text("# Project\n")])
    assert req.reasoning == cn.Reasoning(include_thoughts=True)  # dynamic budget: no budget
    assert (req.temperature, req.top_p) == (0, 1)
    assert gemini.encode_request(req)["generationConfig"]["thinkingConfig"] == {"includeThoughts": True}


def _snake(key: str) -> str:
    return "".join("_" + ch.lower() if ch.isupper() else ch for ch in key)


def snake_case(value, user_data=False):
    """The request with every format key in snake_case (user data — args, responses, schemas — untouched)."""
    if isinstance(value, list):
        return [snake_case(v, user_data) for v in value]
    if not isinstance(value, dict) or user_data:
        return value
    return {_snake(k): snake_case(v, k in ("args", "response", "parametersJsonSchema")) for k, v in value.items()}


def _strip_ids(req: cn.Request) -> cn.Request:
    req = copy.deepcopy(req)
    for m in req.messages:
        for b in m.content:
            if isinstance(b, cn.ToolCall):
                b.id = "x"
            elif isinstance(b, cn.ToolResult):
                b.call_id = "x"
    return req


def test_snake_case_and_camel_case_are_the_same_request():
    snake = snake_case(GEMINI_CLI_REQUEST)
    assert "function_declarations" in snake["tools"][0] and "thought_signature" in snake["contents"][1]["parts"][1]
    assert "absolute_path" in snake["tools"][0]["function_declarations"][0]["parameters_json_schema"]["properties"]
    assert _strip_ids(gemini.decode_request(snake, "m")) == _strip_ids(gemini.decode_request(GEMINI_CLI_REQUEST, "m"))


# --- details of request decoding ------------------------------------------------

def decode(contents=None, **body) -> cn.Request:
    return gemini.decode_request({"contents": contents or [{"parts": [{"text": "hi"}]}], **body}, "gemini-2.5-flash")


def test_function_responses_match_calls_by_name_in_order():
    req = decode([
        {"role": "user", "parts": [{"text": "go"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"n": 1}}},
                                    {"functionCall": {"name": "g"}},
                                    {"functionCall": {"name": "f", "args": {"n": 2}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"result": "one"}}},
                                   {"functionResponse": {"name": "f", "response": {"result": "two"}}},
                                   {"functionResponse": {"name": "g", "response": {"a": 1, "b": [2]}}}]},
        {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"n": 3}}}]},
        {"parts": [{"functionResponse": {"name": "f", "response": {}}}]},  # role missing: user
    ])
    f1, g, f2 = req.messages[1].content
    r1, r2, rg = req.messages[2].content
    (f3,) = req.messages[3].content
    (r3,) = req.messages[4].content
    assert (r1.call_id, r2.call_id, rg.call_id, r3.call_id) == (f1.id, f2.id, g.id, f3.id)
    assert [cn.text_of(r.content) for r in (r1, r2, rg, r3)] == ["one", "two", '{"a":1,"b":[2]}', ""]
    assert g.arguments == "{}"


def test_unmatched_function_response_gets_its_own_id():
    req = decode([{"parts": [{"functionResponse": {"name": "lost", "response": {"content": "x"}}}]}])
    (r,) = req.messages[0].content
    assert r.name == "lost" and r.call_id.startswith("call_")


@pytest.mark.parametrize("response, text, is_error", [
    ({"output": "plain"}, "plain", False),
    ({"content": "plain"}, "plain", False),
    ({"result": {"x": 1}}, '{"result":{"x":1}}', False),
    ({"output": "a", "exit_code": 1}, '{"output":"a","exit_code":1}', False),
    ({"error": "boom"}, "boom", True),
    ({"error": {"code": 2}}, '{"error":{"code":2}}', True),
    ({"error": "boom", "stderr": "x"}, '{"error":"boom","stderr":"x"}', True),
])
def test_function_response_payloads(response, text, is_error):
    req = decode([{"role": "model", "parts": [{"functionCall": {"name": "f"}}]},
                  {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": response}}]}])
    r = req.messages[1].content[0]
    assert (cn.text_of(r.content), r.is_error) == (text, is_error)


def test_function_response_with_image_parts():
    image = {"inlineData": {"mimeType": "image/png", "data": IMG}}
    req = decode([{"role": "model", "parts": [{"functionCall": {"name": "shot"}}]},
                  {"parts": [{"functionResponse": {"name": "shot", "response": {"output": "done"}, "parts": [image]}}]}])
    assert req.messages[1].content[0].content == [cn.Text("done"), cn.Image("image/png", IMG)]


def test_file_data_is_an_image_url():
    uri = "https://generativelanguage.googleapis.com/v1beta/files/abc123"
    req = decode([{"parts": [{"fileData": {"mimeType": "application/pdf", "fileUri": uri}}, {"text": "summarise"}]}])
    assert req.messages[0].content[0] == cn.Image("application/pdf", url=uri)
    with pytest.raises(cn.ConversionError):  # the upstream encoder takes inline data only
        gemini.encode_request(req)


@pytest.mark.parametrize("si, texts", [
    ("Be brief.", ["Be brief."]),
    ({"parts": [{"text": "A"}, {"text": "B"}]}, ["A", "B"]),
    ({"role": "system", "parts": [{"text": "A"}]}, ["A"]),
    ({"text": "A"}, ["A"]),
    ([{"text": "A"}, "B"], ["A", "B"]),
    ({"parts": []}, []),
])
def test_system_instruction_forms(si, texts):
    assert [t.text for t in decode(systemInstruction=si).system] == texts
    assert [t.text for t in decode(system_instruction=si).system] == texts


@pytest.mark.parametrize("config, choice", [
    ({"mode": "AUTO"}, cn.ToolChoice("auto")),
    ({"mode": "VALIDATED"}, cn.ToolChoice("auto")),
    ({"mode": "NONE"}, cn.ToolChoice("none")),
    ({"mode": "ANY"}, cn.ToolChoice("required")),
    ({"mode": "ANY", "allowedFunctionNames": ["f"]}, cn.ToolChoice("tool", "f")),
    ({"mode": "any", "allowed_function_names": ["f"]}, cn.ToolChoice("tool", "f")),
    ({"mode": "MODE_UNSPECIFIED"}, None),
    ({}, None),
])
def test_tool_config_modes(config, choice):
    assert decode(toolConfig={"functionCallingConfig": config}).tool_choice == choice


def test_any_with_several_allowed_names_is_required_and_says_so():
    req = decode(toolConfig={"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f", "g"]}})
    assert req.tool_choice == cn.ToolChoice("required")
    assert req.dropped == ["toolConfig.functionCallingConfig.allowedFunctionNames"]


@pytest.mark.parametrize("config, reasoning", [
    ({"thinkingBudget": 0}, None),
    ({"thinking_budget": 0, "include_thoughts": False}, None),
    ({"thinkingBudget": 4096}, cn.Reasoning(budget_tokens=4096, include_thoughts=False)),
    ({"includeThoughts": True, "thinkingBudget": 512}, cn.Reasoning(budget_tokens=512)),
    ({"includeThoughts": True, "thinkingBudget": -1}, cn.Reasoning()),
    ({"includeThoughts": True}, cn.Reasoning()),
    ({"includeThoughts": False}, None),
    ({"thinkingLevel": "LOW"}, cn.Reasoning(effort="low", include_thoughts=False)),
    ({"thinking_level": "high", "include_thoughts": True}, cn.Reasoning(effort="high")),
    ({"thinkingLevel": "MINIMAL"}, cn.Reasoning(effort="minimal", include_thoughts=False)),
])
def test_thinking_config(config, reasoning):
    assert decode(generationConfig={"thinkingConfig": config}).reasoning == reasoning


def test_generation_config_and_dropped_fields():
    req = decode(generationConfig={"maxOutputTokens": 50, "presencePenalty": 0.5, "frequency_penalty": -0.5,
                                   "candidateCount": 1, "responseMimeType": "application/json",
                                   "responseModalities": ["TEXT"], "mediaResolution": "MEDIA_RESOLUTION_LOW",
                                   "responseLogprobs": False},
                 safetySettings=[{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
                 cachedContent="cachedContents/abc", session_id="s1")
    assert (req.max_tokens, req.presence_penalty, req.frequency_penalty) == (50, 0.5, -0.5)
    assert req.response_format == cn.ResponseFormat("json_object")
    assert req.dropped == ["cachedContent", "generationConfig.mediaResolution", "generationConfig.responseLogprobs",
                           "safetySettings"]
    req = decode(generationConfig={"responseModalities": ["TEXT", "IMAGE"]})
    assert req.dropped == ["generationConfig.responseModalities"]


def test_response_schema_in_gemini_form_becomes_json_schema():
    req = decode(generationConfig={"responseMimeType": "application/json", "responseSchema": {
        "type": "ARRAY", "max_items": 3, "items": {"type": "OBJECT", "properties": {
            "name": {"type": "STRING", "enum": ["a", "b"], "format": "enum"},
            "when": {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}], "nullable": True}}}}})
    schema = req.response_format.schema
    assert schema == {"type": "array", "maxItems": 3, "items": {"type": "object", "properties": {
        "name": {"type": "string", "enum": ["a", "b"], "format": "enum"},
        "when": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}}}}
    back = gemini.encode_request(req)["generationConfig"]["responseSchema"]
    assert back["type"] == "ARRAY" and back["maxItems"] == 3
    assert back["items"]["properties"]["name"]["enum"] == ["a", "b"]


@pytest.mark.parametrize("body, param", [
    ({"generationConfig": {"candidateCount": 2}}, "generationConfig.candidateCount"),
    ({"generationConfig": {"responseMimeType": "text/x.enum"}}, "generationConfig.responseMimeType"),
    ({"generationConfig": {"temperature": "hot"}}, "generationConfig.temperature"),
    ({"generationConfig": {"thinkingConfig": {"thinkingLevel": "extreme"}}},
     "generationConfig.thinkingConfig.thinkingLevel"),
    ({"toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}}, "toolConfig.functionCallingConfig.mode"),
    ({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}, "contents.0.role"),
    ({"contents": [{"parts": [{"executableCode": {"code": "print(1)", "language": "PYTHON"}}]}]},
     "contents.0.parts.0.executableCode"),
    ({"contents": [{"parts": [{"functionCall": {"args": {}}}]}]}, "contents.0.parts.0.functionCall.name"),
    ({"contents": []}, "contents"),
    ({"systemInstruction": {"parts": [{"inlineData": {"mimeType": "image/png", "data": IMG}}]}},
     "systemInstruction.parts.0"),
])
def test_what_cannot_be_converted_is_a_named_400(body, param):
    with pytest.raises(cn.ConversionError) as e:
        gemini.decode_request({"contents": [{"parts": [{"text": "hi"}]}], **body}, "m")
    assert e.value.param == param and str(e.value)


def test_signatures_back_in_standard_base64_but_placeholders_untouched():
    url_safe = SIG.replace("+", "-").replace("/", "_")
    req = decode([{"role": "model", "parts": [
        {"functionCall": {"name": "a"}, "thoughtSignature": url_safe},
        {"functionCall": {"name": "b"}, "thoughtSignature": gemini.SKIP_SIGNATURE},
        {"functionCall": {"name": "c"}, "thoughtSignature": "opaque.sig:1"},
    ]}, {"parts": [{"inlineData": {"mimeType": "image/png", "data": "ab-_"}}]}])
    assert [b.signature for b in req.messages[0].content] == [SIG, gemini.SKIP_SIGNATURE, "opaque.sig:1"]
    assert req.messages[1].content[0].data == "ab+/"


# --- canonical -> GenerateContentResponse ---------------------------------------

USAGE = cn.Usage(input_tokens=120, output_tokens=40, cached_tokens=100, reasoning_tokens=15)

RESPONSES = {
    "text": cn.Response("resp-1", "up", [cn.Text("Hello there.")], "stop", USAGE),
    "thinking": cn.Response("resp-2", "up", [cn.Thinking("Let me think.", THINK_SIG), cn.Text("42.")], "stop", USAGE),
    "tool_calls": cn.Response("resp-3", "up", [
        cn.Text("Checking."),
        cn.ToolCall(call_ids.new_call_id(SIG), "get_weather", '{"city":"Paris"}', SIG),
        cn.ToolCall("toolu_01ABC", "get_time", ""),
    ], "tool_calls", USAGE),
    "max_tokens": cn.Response("resp-4", "up", [cn.Text("Once upon a")], "length", USAGE),
    "safety": cn.Response("resp-5", "up", [], "content_filter", cn.Usage(input_tokens=9)),
}


@pytest.mark.parametrize("name", RESPONSES)
def test_encode_response_is_a_valid_generate_content_response(name):
    r = RESPONSES[name]
    body = gemini.encode_response(r, "my-alias")
    parsed = gtypes.GenerateContentResponse.model_validate(body)
    assert parsed.model_version == "my-alias" and parsed.response_id == r.id
    cand = parsed.candidates[0]
    assert cand.content.role == "model" and cand.index == 0
    assert cand.finish_reason.value == {"text": "STOP", "thinking": "STOP", "tool_calls": "STOP",
                                        "max_tokens": "MAX_TOKENS", "safety": "SAFETY"}[name]
    u = parsed.usage_metadata
    assert u.prompt_token_count == r.usage.input_tokens and u.total_token_count == r.usage.total_tokens
    assert u.candidates_token_count == r.usage.output_tokens - r.usage.reasoning_tokens
    assert u.thoughts_token_count == (r.usage.reasoning_tokens or None)
    assert u.cached_content_token_count == (r.usage.cached_tokens or None)


def _blocks_without_ids(blocks):
    return [cn.ToolCall("", b.name, json.dumps(json.loads(b.arguments or "{}")), b.signature)
            if isinstance(b, cn.ToolCall) else b for b in blocks]


@pytest.mark.parametrize("name", RESPONSES)
def test_encode_response_round_trips_through_decode_response(name):
    r = RESPONSES[name]
    back = gemini.decode_response(gemini.encode_response(r, "alias"))
    expected = _blocks_without_ids(r.content) or [cn.Text("")]  # an empty answer is one empty text part
    assert _blocks_without_ids(back.content) == expected
    assert back.finish == r.finish and back.usage == r.usage and back.id == r.id


def test_encode_response_parts():
    body = gemini.encode_response(RESPONSES["tool_calls"], "alias")
    text, call, plain = body["candidates"][0]["content"]["parts"]
    assert text == {"text": "Checking."}
    assert call == {"functionCall": {"id": RESPONSES["tool_calls"].content[1].id, "name": "get_weather",
                                     "args": {"city": "Paris"}}, "thoughtSignature": SIG}
    assert plain == {"functionCall": {"id": "toolu_01ABC", "name": "get_time", "args": {}}}
    thinking = gemini.encode_response(RESPONSES["thinking"], "alias")["candidates"][0]["content"]["parts"][0]
    assert thinking == {"text": "Let me think.", "thought": True, "thoughtSignature": THINK_SIG}
    bad = cn.Response("r", "m", [cn.ToolCall("c", "f", "{not json"), cn.RedactedThinking("xx")], "tool_calls")
    assert gemini.encode_response(bad, "m")["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"id": "c", "name": "f", "args": {}}}]


@pytest.mark.parametrize("finish, detail, reason", [
    ("stop_sequence", None, "STOP"),
    ("content_filter", "RECITATION", "RECITATION"),
    ("content_filter", "refusal", "SAFETY"),
    ("error", "MALFORMED_FUNCTION_CALL", "MALFORMED_FUNCTION_CALL"),
    ("error", "pause_turn", "OTHER"),
    ("error", None, "OTHER"),
])
def test_finish_reasons(finish, detail, reason):
    body = gemini.encode_response(cn.Response("r", "m", [cn.Text("x")], finish, finish_detail=detail), "m")
    cand = gtypes.GenerateContentResponse.model_validate(body).candidates[0]
    assert cand.finish_reason.value == reason
    assert (cand.finish_message is not None) == (reason == "OTHER" and detail is not None)


def test_the_sdk_reads_an_encoded_response():
    r = RESPONSES["tool_calls"]
    client = sdk_client(lambda request: httpx.Response(200, json=gemini.encode_response(r, "alias")))
    resp = client.models.generate_content(model="alias", contents="weather?")
    assert resp.text == "Checking."
    calls = resp.function_calls
    assert [(c.name, c.args, c.id) for c in calls] == [("get_weather", {"city": "Paris"}, r.content[1].id),
                                                       ("get_time", {}, "toolu_01ABC")]
    assert resp.candidates[0].content.parts[1].thought_signature == base64.b64decode(SIG)


def test_sdk_history_comes_back_with_the_same_signatures():
    """Response -> SDK -> next request -> decode_request: the signature survives (pitfall 1)."""
    r = RESPONSES["thinking"]
    bodies = []

    def handler(request):
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=gemini.encode_response(r, "alias"))

    chat = sdk_client(handler).chats.create(model="alias")
    chat.send_message("q1")
    chat.send_message("q2")
    req = gemini.decode_request(bodies[1], "alias")
    assert req.messages[1].content == [cn.Thinking("Let me think.", THINK_SIG), cn.Text("42.")]


# --- streams --------------------------------------------------------------------

def parse_sse(out: bytes) -> list[dict]:
    text = out.decode()
    assert text.endswith("\r\n\r\n") and "[DONE]" not in text
    return [json.loads(e.removeprefix("data: ")) for e in text.split("\r\n\r\n") if e]


def validated(bodies: list[dict]) -> list[gtypes.GenerateContentResponse]:
    return [gtypes.GenerateContentResponse.model_validate(b) for b in bodies if "error" not in b]


def parts_of(bodies):
    return [b["candidates"][0]["content"]["parts"] for b in bodies if "candidates" in b]


CALL_ID = call_ids.new_call_id(SIG)
HAND_EVENTS = [
    cn.MessageStart("msg_1", "upstream-model", 1),
    cn.BlockStart(0, cn.Thinking("")),
    cn.ThinkingDelta(0, "Think"),
    cn.ThinkingDelta(0, "ing."),
    cn.SignatureDelta(0, THINK_SIG),
    cn.BlockStop(0),
    cn.BlockStart(1, cn.Text("")),
    cn.TextDelta(1, "Hel"),
    cn.TextDelta(1, ""),
    cn.TextDelta(1, "lo"),
    cn.BlockStop(1),
    cn.BlockStart(2, cn.ToolCall(CALL_ID, "get_weather", "", SIG)),
    cn.ArgumentsDelta(2, '{"city":'),
    cn.ArgumentsDelta(2, '"Paris"}'),
    cn.BlockStop(2),
    cn.UsageUpdate(USAGE),
    cn.Finish("tool_calls"),
]


def test_hand_written_events_to_sse():
    enc = gemini.StreamEncoder("alias")
    bodies = parse_sse(b"".join(enc.encode([e]) for e in HAND_EVENTS))  # one event per call: no merging
    validated(bodies)
    assert {b["responseId"] for b in bodies} == {"msg_1"} and {b["modelVersion"] for b in bodies} == {"alias"}
    assert parts_of(bodies) == [
        [{"text": "Think", "thought": True}],
        [{"text": "ing.", "thought": True}],
        [{"text": "", "thought": True, "thoughtSignature": THINK_SIG}],
        [{"text": "Hel"}],
        [{"text": "lo"}],
        [{"functionCall": {"id": CALL_ID, "name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG}],
        [{"text": ""}],
    ]
    assert all("finishReason" not in b["candidates"][0] for b in bodies[:-1])
    last = bodies[-1]
    assert last["candidates"][0]["finishReason"] == "STOP"
    assert last["usageMetadata"] == {"promptTokenCount": 120, "candidatesTokenCount": 25, "totalTokenCount": 160,
                                     "thoughtsTokenCount": 15, "cachedContentTokenCount": 100}
    assert enc.encode([cn.TextDelta(1, "late")]) == b""


def test_one_batch_puts_signature_and_finish_on_the_last_parts():
    bodies = parse_sse(gemini.StreamEncoder("alias").encode(HAND_EVENTS))
    assert parts_of(bodies)[1] == [{"text": "ing.", "thought": True, "thoughtSignature": THINK_SIG}]
    assert len(bodies) == 5 and "functionCall" in bodies[-1]["candidates"][0]["content"]["parts"][0]
    assert bodies[-1]["candidates"][0]["finishReason"] == "STOP" and "usageMetadata" in bodies[-1]


def decode_gemini(data: bytes, cuts=()) -> list[cn.Event]:
    d = gemini.StreamDecoder()
    out, last = [], 0
    for c in list(cuts) + [len(data)]:
        out += d.feed(data[last:c])
        last = c
    return out + d.finish()


def comparable(events: list[cn.Event]) -> list:
    """Events with per-run values blanked and empty text blocks left out, arguments joined per block."""
    empty = set()
    for e in events:
        if isinstance(e, cn.BlockStart) and isinstance(e.block, cn.Text):
            empty.add(e.index)
        if isinstance(e, cn.TextDelta) and e.text:
            empty.discard(e.index)
    out: list = []
    args: dict[int, str] = {}
    order: dict[int, int] = {}
    for e in events:
        if getattr(e, "index", None) in empty:
            continue
        if isinstance(e, cn.MessageStart):
            continue
        if isinstance(e, cn.BlockStart):
            order[e.index] = len(order)
            b = copy.copy(e.block)
            if isinstance(b, cn.ToolCall):
                b.id = ""
            out.append(("start", order[e.index], b))
        elif isinstance(e, cn.ArgumentsDelta):
            args[e.index] = args.get(e.index, "") + e.json
        elif isinstance(e, cn.BlockStop):
            if e.index in args:
                out.append(("args", order[e.index], json.loads(args.pop(e.index))))
            out.append(("stop", order[e.index]))
        elif isinstance(e, (cn.TextDelta, cn.ThinkingDelta)):
            if out and out[-1][0] == type(e).__name__ and out[-1][1] == order[e.index]:
                out[-1] = (out[-1][0], out[-1][1], out[-1][2] + e.text)
            else:
                out.append((type(e).__name__, order[e.index], e.text))
        elif isinstance(e, cn.SignatureDelta):
            out.append(("sig", order[e.index], e.signature))
        else:
            out.append(e)
    return out


def test_hand_written_events_round_trip_through_the_gemini_decoder():
    for batched in (True, False):
        enc = gemini.StreamEncoder("alias")
        out = enc.encode(HAND_EVENTS) if batched else b"".join(enc.encode([e]) for e in HAND_EVENTS)
        assert comparable(decode_gemini(out)) == comparable(HAND_EVENTS)


def sse(*bodies):
    return b"".join(b"data: " + json.dumps(b).encode() + b"\r\n\r\n" for b in bodies)


GEMINI_STREAM = sse(
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "**Plan** look it up", "thought": True}]},
                     "index": 0}], "responseId": "r1", "modelVersion": "gemini-2.5-flash",
     "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}], "responseId": "r1"},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}, "index": 0}], "responseId": "r1"},
    {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG}]},
        "finishReason": "STOP", "index": 0}], "responseId": "r1",
     "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 4, "thoughtsTokenCount": 2,
                       "totalTokenCount": 13}},
)


def gemini_to_gemini(data: bytes, cuts=(), **kw) -> bytes:
    t = Converting(gemini.StreamDecoder(), gemini.StreamEncoder("alias", **kw))
    out, last = b"", 0
    for c in list(cuts) + [len(data)]:
        out += t.feed(data[last:c])
        last = c
    return out + t.finish()


def test_gemini_stream_through_canonical_and_back():
    out = gemini_to_gemini(GEMINI_STREAM)
    bodies = parse_sse(out)
    validated(bodies)
    assert parts_of(bodies) == [[{"text": "**Plan** look it up", "thought": True}], [{"text": "Hel"}], [{"text": "lo"}],
                                [{"functionCall": {"id": parts_of(bodies)[3][0]["functionCall"]["id"],
                                                   "name": "get_weather", "args": {"city": "Paris"}},
                                  "thoughtSignature": SIG}]]
    assert bodies[-1]["candidates"][0]["finishReason"] == "STOP"  # on the call's own event, as Gemini does
    assert bodies[-1]["usageMetadata"]["thoughtsTokenCount"] == 2
    assert {b["responseId"] for b in bodies} == {"r1"}
    assert comparable(decode_gemini(out)) == comparable(decode_gemini(GEMINI_STREAM))


def normalized(out: bytes) -> list:
    bodies = parse_sse(out)
    for b in bodies:
        for p in b["candidates"][0]["content"]["parts"]:
            if "functionCall" in p:
                p["functionCall"]["id"] = ""
    return bodies


def test_any_chunking_gives_the_same_events():
    whole = normalized(gemini_to_gemini(GEMINI_STREAM))
    rng = random.Random(7)
    for _ in range(100):
        cuts = sorted(rng.sample(range(1, len(GEMINI_STREAM)), rng.randint(1, 20)))
        # content is the same; only where finishReason lands may move to its own event
        got = normalized(gemini_to_gemini(GEMINI_STREAM, cuts))
        assert [p for p in parts_of(got) if p != [{"text": ""}]] == parts_of(whole)
        assert got[-1]["candidates"][0]["finishReason"] == "STOP"


def anthropic_sse(*events) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


ANTHROPIC_STREAM = anthropic_sse(
    {"type": "message_start", "message": {
        "id": "msg_01XYZ", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5",
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 300, "cache_read_input_tokens": 1000, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Weather tool."}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": THINK_SIG}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Let me check."}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2, "content_block": {
        "type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}},
    {"type": "content_block_stop", "index": 2},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 60}},
    {"type": "message_stop"},
)


def test_anthropic_stream_to_gemini_client():
    t = Converting(an.StreamDecoder(), gemini.StreamEncoder("alias"))
    out = b"".join(t.feed(ANTHROPIC_STREAM[i:i + 37]) for i in range(0, len(ANTHROPIC_STREAM), 37)) + t.finish()
    bodies = parse_sse(out)
    validated(bodies)
    parts = [p for ps in parts_of(bodies) for p in ps]
    assert {b["responseId"] for b in bodies} == {"msg_01XYZ"}
    assert "".join(p["text"] for p in parts if p.get("thought")) == "Weather tool."
    assert [p["thoughtSignature"] for p in parts if p.get("thought") and "thoughtSignature" in p] == [THINK_SIG]
    assert "".join(p["text"] for p in parts if "text" in p and not p.get("thought")) == "Let me check."
    (call,) = [p["functionCall"] for p in parts if "functionCall" in p]
    assert call == {"id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "args": {"city": "Paris"}}
    assert bodies[-1]["candidates"][0]["finishReason"] == "STOP"
    assert bodies[-1]["usageMetadata"] == {"promptTokenCount": 1300, "candidatesTokenCount": 60,
                                           "totalTokenCount": 1360, "cachedContentTokenCount": 1000}


def test_the_sdk_parses_the_stream_and_records_valid_history():
    out = Converting(an.StreamDecoder(), gemini.StreamEncoder("alias")).feed(ANTHROPIC_STREAM)
    requests = []

    def handler(request):
        requests.append(request)
        return httpx.Response(200, content=out, headers={"content-type": "text/event-stream"})

    client = sdk_client(handler)
    chunks = list(client.models.generate_content_stream(model="alias", contents="weather in Paris?"))
    assert requests[0].url.params.get("alt") == "sse"
    assert "".join(c.text or "" for c in chunks) == "Let me check."
    (fc,) = [fc for c in chunks for fc in c.function_calls or ()]
    assert (fc.name, fc.args, fc.id) == ("get_weather", {"city": "Paris"}, "toolu_01T1x1fJ34qAmk2tNTrN7Up6")
    assert chunks[-1].candidates[0].finish_reason == gtypes.FinishReason.STOP
    assert chunks[-1].usage_metadata.total_token_count == 1360
    chat = client.chats.create(model="alias")
    list(chat.send_message_stream("weather in Paris?"))
    curated = chat.get_history(curated=True)  # a turn with any invalid chunk would be left out of it
    assert curated == chat.get_history() and [c.role for c in curated][:2] == ["user", "model"]


def test_stream_error_is_the_last_event():
    enc = gemini.StreamEncoder("alias")
    out = enc.encode([cn.MessageStart("m", ""), cn.BlockStart(0, cn.Text("")), cn.TextDelta(0, "par"),
                      cn.StreamError("The model is overloaded.", "overloaded_error", 503), cn.TextDelta(0, "x")])
    bodies = parse_sse(out)
    assert bodies[-1] == {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    assert parts_of(bodies) == [[{"text": "par"}]]
    assert enc.encode([cn.Finish("stop")]) == b""
    # the upstream decoder reads it back as an error
    assert isinstance(decode_gemini(out)[-1], cn.StreamError)


def test_truncated_upstream_stream_ends_with_an_error_event():
    cut = GEMINI_STREAM[: GEMINI_STREAM.index(b'"finishReason"') - 40]
    bodies = parse_sse(gemini_to_gemini(cut))
    assert bodies[-1]["error"]["status"] == "UNAVAILABLE"
    assert not any("finishReason" in b["candidates"][0] for b in bodies[:-1])


@pytest.mark.parametrize("finish, reason", [(cn.Finish("length"), "MAX_TOKENS"),
                                            (cn.Finish("error", "MALFORMED_FUNCTION_CALL"), "MALFORMED_FUNCTION_CALL"),
                                            (cn.Finish("content_filter"), "SAFETY")])
def test_stream_finish_reasons(finish, reason):
    bodies = parse_sse(gemini.StreamEncoder("m").encode([cn.TextDelta(0, "a"), finish]))
    assert bodies[-1]["candidates"][0]["finishReason"] == reason and parts_of(bodies) == [[{"text": "a"}]]


def test_unstopped_tool_call_is_sent_before_the_finish():
    bodies = parse_sse(gemini.StreamEncoder("m").encode([
        cn.BlockStart(0, cn.ToolCall("c1", "f", '{"a"')), cn.ArgumentsDelta(0, ":1}"), cn.Finish("tool_calls")]))
    assert parts_of(bodies) == [[{"functionCall": {"id": "c1", "name": "f", "args": {"a": 1}}}]]


def test_json_array_stream():
    out = gemini_to_gemini(GEMINI_STREAM, sse=False)
    assert out.startswith(b"[") and out.endswith(b"]")
    bodies = json.loads(out)
    validated(bodies)
    for b in bodies:
        for p in b["candidates"][0]["content"]["parts"]:
            if "functionCall" in p:
                p["functionCall"]["id"] = ""
    assert bodies == normalized(gemini_to_gemini(GEMINI_STREAM))  # the same events as with alt=sse
    assert json.loads(gemini.StreamEncoder("m", sse=False).encode([cn.StreamError("x")])) == [
        {"error": {"code": 502, "message": "x", "status": "UNAVAILABLE"}}]


# --- Code Assist envelope ---------------------------------------------------------

def test_code_assist_wrap_unwrap_round_trip():
    wrapped = gemini.wrap_code_assist(GEMINI_CLI_REQUEST, "models/gemini-2.5-pro", "proj-123", "prompt-1", "sess-9")
    assert wrapped["model"] == "gemini-2.5-pro" and wrapped["project"] == "proj-123"
    assert wrapped["user_prompt_id"] == "prompt-1" and wrapped["request"]["session_id"] == "sess-9"
    assert "session_id" not in GEMINI_CLI_REQUEST  # the input is not mutated
    body, model, project = gemini.unwrap_code_assist_request(json.loads(json.dumps(wrapped)))
    assert (model, project) == ("gemini-2.5-pro", "proj-123")
    assert body == {**GEMINI_CLI_REQUEST, "session_id": "sess-9"}
    req = gemini.decode_request(body, model)
    assert req.dropped == [] and len(req.messages) == 3  # session_id is envelope, not a dropped parameter
    minimal = gemini.wrap_code_assist({"contents": []}, "gemini-2.5-flash", "p")
    assert minimal == {"model": "gemini-2.5-flash", "project": "p", "request": {"contents": []}}
    with pytest.raises(cn.ConversionError):
        gemini.unwrap_code_assist_request({"model": "m", "request": "nope"})


def test_code_assist_response_envelope_is_read_by_decode_response():
    body = gemini.encode_response(RESPONSES["tool_calls"], "gemini-2.5-pro")
    wrapped = gemini.wrap_code_assist_response(body)
    assert wrapped == {"response": body}
    r = gemini.decode_response({**wrapped, "traceId": "t-1"})
    assert _blocks_without_ids(r.content) == _blocks_without_ids(RESPONSES["tool_calls"].content)


def test_code_assist_stream_envelope_is_read_by_stream_decoder():
    out = gemini_to_gemini(GEMINI_STREAM, code_assist=True)
    bodies = parse_sse(out)
    assert all(set(b) == {"response"} for b in bodies)
    validated([b["response"] for b in bodies])
    assert comparable(decode_gemini(out)) == comparable(decode_gemini(GEMINI_STREAM))


# --- arbitrary input ----------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
PART_KEYS = ["text", "thought", "thoughtSignature", "thought_signature", "functionCall", "function_call",
             "functionResponse", "inlineData", "fileData", "executableCode", "videoMetadata"]
PART = st.dictionaries(st.sampled_from(PART_KEYS), JSON | st.fixed_dictionaries(
    {}, optional={"name": st.sampled_from(["f", "g"]) | JSON, "id": JSON, "args": JSON, "response": JSON,
                  "data": JSON, "mimeType": JSON, "fileUri": JSON, "parts": JSON}), max_size=3)
CONTENT = st.fixed_dictionaries({}, optional={"role": st.sampled_from(["user", "model", "function", "x"]) | JSON,
                                              "parts": st.lists(PART | JSON, max_size=4) | JSON})
GEN_KEYS = ["maxOutputTokens", "temperature", "top_k", "stopSequences", "candidateCount", "responseMimeType",
            "responseSchema", "response_json_schema", "thinkingConfig", "responseModalities"]
REQUEST = st.fixed_dictionaries(
    {"contents": st.lists(CONTENT, max_size=4) | JSON},
    optional={"systemInstruction": JSON | CONTENT, "tools": JSON | st.lists(st.fixed_dictionaries({}, optional={
        "functionDeclarations": st.lists(st.dictionaries(
            st.sampled_from(["name", "description", "parameters", "parametersJsonSchema"]), JSON), max_size=2) | JSON,
        "googleSearch": JSON}), max_size=2),
        "toolConfig": JSON, "generationConfig": st.dictionaries(st.sampled_from(GEN_KEYS), JSON) | JSON,
        "safetySettings": JSON},
)


def _never_crashes(data):
    try:
        req = gemini.decode_request(data, "gemini-3-pro-preview")
    except cn.ConversionError as e:
        assert str(e)
        return
    for encode in (gemini.encode_request, an.encode_request, openai_chat.encode_request):
        try:
            json.dumps(encode(copy.deepcopy(req)))
        except cn.ConversionError as e:
            assert str(e)


@FAST
@given(JSON)
def test_any_json_decodes_or_raises_conversion_error(data):
    _never_crashes(data)


@FAST
@given(REQUEST)
def test_any_gemini_shaped_request_decodes_or_raises_conversion_error(data):
    _never_crashes(data)


BLOCKS = st.one_of(st.builds(cn.Text, st.text(max_size=5)), st.builds(cn.Thinking, st.text(max_size=5)),
                   st.builds(cn.ToolCall, st.text(max_size=3), st.text(max_size=3), st.text(max_size=6)))
EVENTS = st.lists(st.one_of(
    st.builds(cn.MessageStart, st.text(max_size=3), st.text(max_size=3)),
    st.builds(cn.BlockStart, st.integers(0, 3), BLOCKS),
    st.builds(cn.TextDelta, st.integers(0, 3), st.text(max_size=4)),
    st.builds(cn.ThinkingDelta, st.integers(0, 3), st.text(max_size=4)),
    st.builds(cn.SignatureDelta, st.integers(0, 3), st.sampled_from(["", SIG, THINK_SIG])),
    st.builds(cn.ArgumentsDelta, st.integers(0, 3), st.text(max_size=4)),
    st.builds(cn.BlockStop, st.integers(0, 3)),
    st.builds(cn.UsageUpdate, st.builds(cn.Usage, st.integers(0, 9), st.integers(0, 9))),
    st.builds(cn.Finish, st.sampled_from(["stop", "length", "tool_calls", "content_filter", "error"]),
              st.none() | st.sampled_from(["SAFETY", "pause_turn"])),
    st.builds(cn.StreamError, st.text(max_size=5)),
), max_size=12)


@FAST
@given(st.lists(EVENTS, max_size=3))
def test_any_event_sequence_gives_valid_gemini_events(batches):
    enc = gemini.StreamEncoder("m")
    out = b"".join(enc.encode(b) for b in batches)
    if not out:
        return
    bodies = parse_sse(out)
    validated(bodies)
    assert all("error" not in b for b in bodies[:-1])
