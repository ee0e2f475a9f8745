"""OpenAI chat <-> canonical <-> Gemini: golden conversions checked against the SDKs' own types."""

import json
import random

import pytest
from google.genai import types as gtypes
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from converters import call_ids, gemini, openai_chat
from converters import canonical as cn
from converters.pipeline import Converting

IMG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
SIG = "CiQB0e2Kb3+zX5c/Lq9n2w=="

OPENAI_REQUEST = {
    "model": "gemini-2.5-flash",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "What is in this picture, and the weather?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{IMG}"}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_ids.new_call_id(SIG), "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_plain", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_plain", "content": "12:00"},
        {"role": "user", "content": "thanks"},
    ],
    "tools": [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                          "parameters": {"type": "object", "additionalProperties": False,
                                                         "properties": {"city": {"type": "string"}},
                                                         "required": ["city"]}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
    ],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "max_completion_tokens": 256, "temperature": 0.2, "stop": "END", "seed": 7,
    "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {
        "type": "object", "properties": {"temp": {"type": ["number", "null"]}}, "required": ["temp"]}}},
    "reasoning_effort": "low",
    "stream": True, "stream_options": {"include_usage": True},
}


def test_openai_request_to_gemini():
    req = openai_chat.decode_request(OPENAI_REQUEST)
    assert req.stream and req.include_usage and req.max_tokens == 256
    body = gemini.encode_request(req)

    assert body["systemInstruction"] == {"parts": [{"text": "You are terse."}, {"text": "Use tools."}]}
    user, model, tool_turn = body["contents"]
    assert user["role"] == "user" and user["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": IMG}}
    assert model["role"] == "model"
    assert model["parts"][0] == {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                                 "thoughtSignature": SIG}  # the signature came back out of the id
    assert "thoughtSignature" not in model["parts"][1]  # not a gemini-3 model: no placeholder
    # the tool result and the next user text merge into one user turn; the result is named from its call
    assert tool_turn["parts"] == [{"functionResponse": {"name": "get_time", "response": {"content": "12:00"}}},
                                  {"text": "thanks"}]
    decl = body["tools"][0]["functionDeclarations"]
    assert decl[0]["parameters"]["properties"]["city"]["type"] in ("STRING", "string")
    assert "additionalProperties" not in json.dumps(decl)
    assert decl[1] == {"name": "get_time"}  # no properties: no parameters
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
    gc = body["generationConfig"]
    assert (gc["maxOutputTokens"], gc["temperature"], gc["stopSequences"], gc["seed"]) == (256, 0.2, ["END"], 7)
    assert gc["responseMimeType"] == "application/json"
    assert gc["responseSchema"]["properties"]["temp"]["nullable"] is True
    assert gc["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 1024}
    # the google-genai SDK's own (strict, extra=forbid) models accept what we built
    for c in body["contents"]:
        gtypes.Content.model_validate(c)
    gtypes.Tool.model_validate(body["tools"][0])
    gtypes.GenerationConfig.model_validate(gc)


def test_gemini_3_gets_placeholder_signature_for_foreign_calls():
    req = openai_chat.decode_request({**OPENAI_REQUEST, "model": "gemini-3-pro-preview"})
    model_turn = gemini.encode_request(req)["contents"][1]
    assert model_turn["parts"][1]["thoughtSignature"] == gemini.SKIP_SIGNATURE


@pytest.mark.parametrize("bad, param", [
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}, "messages.0"),
    ({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}, "messages.0.content.0.type"),
    ({"role": "tool", "tool_call_id": "nope", "content": "x"}, "messages.0"),
])
def test_requests_gemini_cannot_express_are_400s(bad, param):
    with pytest.raises(cn.ConversionError) as e:
        gemini.encode_request(openai_chat.decode_request({"model": "m", "messages": [bad]}))
    assert e.value.param == param and str(e.value)


GEMINI_RESPONSE = {
    "candidates": [{"content": {"role": "model", "parts": [
        {"text": "Let me think.", "thought": True},
        {"text": "Calling"},
        {"text": " tools."},
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG},
        {"functionCall": {"name": "get_time", "args": {}}},
    ]}, "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 3,
                      "cachedContentTokenCount": 4, "totalTokenCount": 18},
    "modelVersion": "gemini-2.5-flash", "responseId": "abc123",
}


def test_gemini_response_to_openai():
    gtypes.GenerateContentResponse.model_validate(GEMINI_RESPONSE)  # the fixture is real-shaped
    out = openai_chat.encode_response(gemini.decode_response(GEMINI_RESPONSE), "my-alias")
    c = ChatCompletion.model_validate(out)
    assert c.model == "my-alias" and c.id == "chatcmpl-abc123"
    m = c.choices[0].message
    assert m.content == "Calling tools." and out["choices"][0]["message"]["reasoning_content"] == "Let me think."
    assert c.choices[0].finish_reason == "tool_calls"
    assert [(t.function.name, json.loads(t.function.arguments)) for t in m.tool_calls] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert call_ids.signature_of(m.tool_calls[0].id) == SIG and call_ids.signature_of(m.tool_calls[1].id) is None
    u = c.usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (10, 8, 18)
    assert u.prompt_tokens_details.cached_tokens == 4 and u.completion_tokens_details.reasoning_tokens == 3


@pytest.mark.parametrize("reason, finish", [("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
                                            ("RECITATION", "content_filter"), ("STOP", "stop"),
                                            ("MALFORMED_FUNCTION_CALL", "error")])
def test_finish_reasons(reason, finish):
    body = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]}
    assert gemini.decode_response(body).finish == finish


def test_prompt_blocked_is_content_filter():
    assert gemini.decode_response({"promptFeedback": {"blockReason": "SAFETY"}}).finish == "content_filter"


def test_code_assist_envelope_is_unwrapped():
    r = gemini.decode_response({"response": GEMINI_RESPONSE, "traceId": "t"})
    assert cn.text_of(r.content) == "Calling tools."


def sse(*bodies):
    return b"".join(b"data: " + json.dumps(b).encode() + b"\r\n\r\n" for b in bodies)


STREAM = sse(
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hmm", "thought": True}]}}],
     "responseId": "r1", "modelVersion": "gemini-2.5-flash"},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}}]},
    {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG}]}}]},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP"}],
     "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 4, "thoughtsTokenCount": 2}},
)


def openai_stream(data: bytes, cuts, include_usage=True) -> bytes:
    t = Converting(gemini.StreamDecoder(), openai_chat.StreamEncoder("alias", include_usage))
    out, last = b"", 0
    for c in list(cuts) + [len(data)]:
        out += t.feed(data[last:c])
        last = c
    return out + t.finish()


def parse_chunks(out: bytes):
    events = [e for e in out.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    return [ChatCompletionChunk.model_validate(json.loads(e.removeprefix("data: "))) for e in events[:-1]]


def test_gemini_stream_to_openai_chunks():
    chunks = parse_chunks(openai_stream(STREAM, []))
    assert {c.model for c in chunks} == {"alias"} and {c.id for c in chunks} == {"chatcmpl-r1"}
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    assert "".join(d.content or "" for d in deltas) == "Hello"
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == "Hmm"
    first, *rest = [tc for d in deltas for tc in d.tool_calls or ()]
    assert (first.index, first.function.name, first.function.arguments) == (0, "get_weather", "")
    assert call_ids.signature_of(first.id) == SIG
    assert all(tc.index == 0 and tc.id is None for tc in rest)
    assert json.loads("".join(tc.function.arguments for tc in rest)) == {"city": "Paris"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6


def normalized(out: bytes) -> list:
    """Chunks with the per-run parts (random tool-call ids, timestamps) blanked."""
    events = []
    for e in out.decode().split("\n\n"):
        if not e or e == "data: [DONE]":
            events.append(e)
            continue
        chunk = json.loads(e.removeprefix("data: "))
        chunk["created"] = 0
        for choice in chunk["choices"]:
            for tc in choice["delta"].get("tool_calls") or ():
                tc.pop("id", None)
        events.append(chunk)
    return events


def test_any_chunking_gives_the_same_stream():
    whole = normalized(openai_stream(STREAM, []))
    rng = random.Random(1)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(1, 30)))
        assert normalized(openai_stream(STREAM, cuts)) == whole


def test_truncated_gemini_stream_ends_with_error():
    cut = STREAM[: STREAM.index(b'"finishReason"') - 60]
    out = openai_stream(cut, [])
    last = json.loads(out.decode().strip().split("\n\n")[-1].removeprefix("data: "))
    assert last["error"]["code"] == "stream_truncated"
    assert b"[DONE]" not in out


def test_max_tokens_in_stream_is_length():
    data = sse({"candidates": [{"content": {"parts": [{"text": "par"}]}, "finishReason": "MAX_TOKENS"}]})
    chunks = parse_chunks(openai_stream(data, [], include_usage=False))
    assert chunks[-1].choices[0].finish_reason == "length"


def test_gemini_error_event_mid_stream():
    data = sse({"candidates": [{"content": {"parts": [{"text": "a"}]}}]},
               {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}})
    out = openai_stream(data, [])
    assert json.loads(out.decode().strip().split("\n\n")[-1][6:])["error"]["message"] == "The model is overloaded."


def test_retry_delay_from_google_error():
    body = json.dumps({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "6.2s"}]}}).encode()
    assert gemini.retry_delay(body) == 7
    assert gemini.retry_delay(b"nope") is None


def test_call_ids():
    plain = call_ids.new_call_id()
    assert call_ids.signature_of(plain) is None and len(plain) == 13
    for sig in (SIG, "ab+/cd==", "AAAA"):
        cid = call_ids.new_call_id(sig)
        assert call_ids.signature_of(cid) == sig
        assert all(ch.isalnum() or ch in "_-" for ch in cid)
    assert call_ids.signature_of("toolu_01ABC") is None
