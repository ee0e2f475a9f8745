"""The 4x4 conversion matrix: every client format against every upstream format, same-format pairs included.

    client format --decode--> canonical --encode--> upstream format        (requests)
    upstream format --decode--> canonical --encode--> client format        (responses, streams)

Judges, so that nothing here is checked against the converters' own idea of the formats:
- upstream requests: the strict local doubles' validators, called in-process
  (tests/upstreams: openai_compat.validate_chat_request; anthropic_api.validate_create +
  require_model + validate_semantics; gemini_api.parse_request + validate_generate +
  check_signatures; responses_api.validate_request). Only the HTTP layer (auth, headers,
  content type) is left out.
- client responses and stream events: the client SDKs' own pydantic types (ChatCompletion /
  ChatCompletionChunk, anthropic Message / RawMessageStreamEvent, google-genai
  GenerateContentResponse, openai Response / ResponseStreamEvent); client streams are
  accumulated with the SDKs' stream helpers where they exist (ChatCompletionStreamState,
  anthropic accumulate_event, ResponseStreamState).
The upstream fixtures are checked against the same SDK types first, so they are realistic.
Test ids read "<client>-><upstream>".

Streams must give the same output for any byte chunking, except documented per-run values
(normalised): synthesised Gemini call ids, "now" timestamps, and the Gemini client encoder's
documented batch-dependent placement of a thinking signature / the finishReason.

Usage arithmetic relied on (canonical: input includes cached, output includes reasoning):
    OpenAI chat   prompt_tokens, completion_tokens, prompt_tokens_details.cached_tokens,
                  completion_tokens_details.reasoning_tokens                       (as canonical)
    Anthropic     input = input_tokens + cache_read_input_tokens + cache_creation_input_tokens,
                  output = output_tokens, cached = cache_read_input_tokens,
                  reasoning = output_tokens_details.thinking_tokens (optional field)
    Gemini        input = promptTokenCount, output = candidatesTokenCount + thoughtsTokenCount,
                  cached = cachedContentTokenCount, reasoning = thoughtsTokenCount
    Responses     input_tokens, output_tokens, input_tokens_details.cached_tokens,
                  output_tokens_details.reasoning_tokens                            (as canonical)
"""

from __future__ import annotations

import base64
import copy
import json
import random
import re
from dataclasses import dataclass
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message as AnthropicMessage
from anthropic.types import RawMessageStreamEvent
from google.genai import types as genai
from openai import omit
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.lib.streaming.responses import ResponseStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response as ResponsesResponse
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from converters import anthropic, gemini, openai_chat, responses
from converters import canonical as cn
from converters.pipeline import Converting
from converters.sse import SSEParser
from tests.upstreams import anthropic_api, gemini_api, openai_compat, responses_api

FORMATS = ("openai", "anthropic", "gemini", "responses")
PAIRS = [pytest.param(c, u, id=f"{c}->{u}") for c in FORMATS for u in FORMATS]
UPSTREAMS = [pytest.param(u, id=u) for u in FORMATS]
UPSTREAM_MODEL = {"openai": "o4-mini", "anthropic": "claude-sonnet-4-5", "gemini": "gemini-3-pro-preview",
                  "responses": "gpt-5"}
CLIENT_MODEL = "team-default"
CREATED = 1730000000

# --- the conversation every fixture tells ------------------------------------------------------

SYSTEM = "You are a terse travel assistant. Use the tools when they help."
Q1 = "What is in this picture?"
A1 = "A lighthouse on a rocky coast."
Q2 = "What's the weather in Brest right now? Answer as JSON."
THOUGHT = "The user wants the current weather in Brest, so I should call get_weather."
TOOL_RESULT = "14°C, light rain, wind 30 km/h from the west"
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
PNG = base64.b64decode(PNG_B64)
WEATHER_ARGS = {"location": {"city": "Brest", "country": "FR"}, "unit": "celsius"}
TIME_ARGS = {"timezone": "Europe/Paris"}

WEATHER_SCHEMA = {  # $ref/$defs + additionalProperties, strict-mode clean (OpenAI structured outputs)
    "type": "object",
    "properties": {
        "location": {"$ref": "#/$defs/location"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["location", "unit"],
    "additionalProperties": False,
    "$defs": {
        "location": {
            "type": "object",
            "properties": {"city": {"type": "string"},
                           "country": {"type": "string", "description": "ISO 3166-1 alpha-2 code"}},
            "required": ["city", "country"],
            "additionalProperties": False,
        },
    },
}
TIME_SCHEMA = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "description": "IANA time zone, e.g. Europe/Paris"}},
    "required": ["timezone"],
}
REPORT_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temperature_c": {"type": "number"},
                   "conditions": {"type": "string"}},
    "required": ["city", "temperature_c", "conditions"],
    "additionalProperties": False,
}
WEATHER_DOC = "Current weather at a location."
TIME_DOC = "Current local time in a time zone."

# Opaque reasoning state each provider issued in an earlier turn; the doubles are told they issued it.
ANTHROPIC_SIG = "EqQBCkU/uO0eEqUazIMkficdIRpGY9ej2RCqKyGZCAceLQ0T3wpwiG5Nw4x9MOutjH9ecfWfMao3nGYkZMZSFg=="
GEMINI_SIG = "++++KCkqKywtLi8wMTIzNDU2Nzg5Ojs8"  # the Gemini double's signatures start with 0xFBEFBE
RESPONSES_BLOB = "gAAAAABo1Jd3bW9ja19lbmNyeXB0ZWRfcmVhc29uaW5nX2Jsb2JfZm9yX3Rlc3Rz"

# --- 1. client request fixtures (one realistic request per client format) -----------------------

OPENAI_REQUEST = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": [
            {"type": "text", "text": Q1},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}", "detail": "auto"}},
        ]},
        {"role": "assistant", "content": A1},
        {"role": "user", "content": Q2},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_Xq3m81Ta", "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps(WEATHER_ARGS)}},
        ]},
        {"role": "tool", "tool_call_id": "call_Xq3m81Ta", "content": TOOL_RESULT},
    ],
    "tools": [
        {"type": "function", "function": {"name": "get_weather", "description": WEATHER_DOC,
                                          "parameters": WEATHER_SCHEMA, "strict": True}},
        {"type": "function", "function": {"name": "get_time", "description": TIME_DOC, "parameters": TIME_SCHEMA}},
    ],
    "tool_choice": "auto",
    "response_format": {"type": "json_schema",
                        "json_schema": {"name": "weather_report", "strict": True, "schema": REPORT_SCHEMA}},
    "reasoning_effort": "medium",
    "max_completion_tokens": 2048,
    "stream": False,
}

ANTHROPIC_REQUEST = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 16000,
    "system": [{"type": "text", "text": SYSTEM}],
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": Q1},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
        ]},
        {"role": "assistant", "content": [{"type": "text", "text": A1}]},
        {"role": "user", "content": Q2},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": THOUGHT, "signature": ANTHROPIC_SIG},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": WEATHER_ARGS},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": TOOL_RESULT},
        ]},
    ],
    "tools": [
        {"name": "get_weather", "description": WEATHER_DOC, "input_schema": WEATHER_SCHEMA},
        {"name": "get_time", "description": TIME_DOC, "input_schema": TIME_SCHEMA},
    ],
    "tool_choice": {"type": "auto"},
    "thinking": {"type": "enabled", "budget_tokens": 4096},
    "output_config": {"format": {"type": "json_schema", "schema": REPORT_SCHEMA}},
}

GEMINI_REQUEST = {  # POST /v1beta/models/gemini-2.5-pro:generateContent
    "systemInstruction": {"parts": [{"text": SYSTEM}]},
    "contents": [
        {"role": "user", "parts": [{"text": Q1}, {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}]},
        {"role": "model", "parts": [{"text": A1}]},
        {"role": "user", "parts": [{"text": Q2}]},
        {"role": "model", "parts": [
            {"text": THOUGHT, "thought": True},
            {"functionCall": {"name": "get_weather", "args": WEATHER_ARGS}, "thoughtSignature": GEMINI_SIG},
        ]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"content": TOOL_RESULT}}},
        ]},
    ],
    "tools": [{"functionDeclarations": [
        {"name": "get_weather", "description": WEATHER_DOC, "parametersJsonSchema": WEATHER_SCHEMA},
        {"name": "get_time", "description": TIME_DOC, "parameters": {
            "type": "OBJECT", "properties": {"timezone": {"type": "STRING", "description": "IANA time zone"}},
            "required": ["timezone"]}},
    ]}],
    "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
    "generationConfig": {
        "maxOutputTokens": 2048,
        "responseMimeType": "application/json",
        "responseJsonSchema": REPORT_SCHEMA,
        "thinkingConfig": {"thinkingBudget": 4096, "includeThoughts": True},
    },
}

RESPONSES_REQUEST = {  # what Codex CLI sends: store false, the whole conversation in input
    "model": "gpt-5",
    "instructions": SYSTEM,
    "input": [
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": Q1},
            {"type": "input_image", "image_url": f"data:image/png;base64,{PNG_B64}", "detail": "auto"},
        ]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": A1, "annotations": []}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": Q2}]},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": THOUGHT}],
         "encrypted_content": RESPONSES_BLOB},
        {"type": "function_call", "call_id": "call_Xq3m81Ta", "name": "get_weather",
         "arguments": json.dumps(WEATHER_ARGS)},
        {"type": "function_call_output", "call_id": "call_Xq3m81Ta", "output": TOOL_RESULT},
    ],
    "tools": [
        {"type": "function", "name": "get_weather", "description": WEATHER_DOC, "parameters": WEATHER_SCHEMA,
         "strict": True},
        {"type": "function", "name": "get_time", "description": TIME_DOC, "parameters": TIME_SCHEMA, "strict": False},
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "text": {"format": {"type": "json_schema", "name": "weather_report", "schema": REPORT_SCHEMA, "strict": True}},
    "reasoning": {"effort": "medium", "summary": "auto"},
    "include": ["reasoning.encrypted_content"],
    "store": False,
    "stream": False,
    "max_output_tokens": 2048,
}

CLIENT_REQUESTS = {"openai": OPENAI_REQUEST, "anthropic": ANTHROPIC_REQUEST, "gemini": GEMINI_REQUEST,
                   "responses": RESPONSES_REQUEST}


def decode_client_request(client: str) -> cn.Request:
    body = copy.deepcopy(CLIENT_REQUESTS[client])
    if client == "openai":
        data, _ = openai_chat.parse_request(json.dumps(body).encode())
        return openai_chat.decode_request(data)
    if client == "anthropic":
        return anthropic.decode_request(body)
    if client == "gemini":
        return gemini.decode_request(body, "models/gemini-2.5-pro")
    return responses.decode_request(body)


ENCODE_REQUEST = {"openai": openai_chat.encode_request, "anthropic": anthropic.encode_request,
                  "gemini": gemini.encode_request, "responses": responses.encode_request}


def upstream_accepts(upstream: str, body: dict[str, Any]) -> None:
    """Raise the double's ApiError if the provider would refuse `body` (what the HTTP handler runs)."""
    model = UPSTREAM_MODEL[upstream]
    if upstream == "openai":
        openai_compat.validate_chat_request(body, [model])
    elif upstream == "anthropic":
        state = anthropic_api.UpstreamState(api_key=None, models=[model])
        state.thoughts[ANTHROPIC_SIG] = THOUGHT  # issued with the earlier turn
        anthropic_api.validate_create(body)
        anthropic_api.require_model(state, body["model"])
        anthropic_api.validate_semantics(state, body, body["model"])
    elif upstream == "gemini":  # the model is in the URL path, not the body
        state = gemini_api.UpstreamState(api_key=None, models=[model])
        state.signatures.add(base64.b64decode(GEMINI_SIG))
        parsed = gemini_api.parse_request(body, "GenerateContentRequest")
        gemini_api.require_model(state, model)
        gemini_api.validate_generate(parsed, model, "GenerateContentRequest")
        gemini_api.check_signatures(state, model, parsed["contents"])
    else:
        state = responses_api.ResponsesState(api_key=None, models=[model])
        state.issued[RESPONSES_BLOB] = "rs_earlier"
        responses_api.validate_request(body, state)


@dataclass
class Facts:
    """What must survive a request conversion, read out of an upstream body."""
    system: list[str]
    user_texts: list[str]
    assistant_texts: list[str]
    tools: list[str]
    calls: list[tuple[str, Any]]
    results: list[str]
    images: list[tuple[str, bytes]]  # (media type, bytes)
    max_tokens: int
    tool_choice: Any


def _data_url_image(url: str) -> tuple[str, bytes]:
    head, _, data = url.partition(",")
    assert head.endswith(";base64"), head
    return head.removeprefix("data:").removesuffix(";base64"), base64.b64decode(data)


def facts_of(upstream: str, body: dict[str, Any]) -> Facts:
    if upstream == "openai":
        msgs = body["messages"]

        def texts(m):
            c = m.get("content")
            return [c] if isinstance(c, str) and c else [p["text"] for p in c or () if p["type"] == "text"]

        return Facts(
            system=[t for m in msgs if m["role"] in ("system", "developer") for t in texts(m)],
            user_texts=[t for m in msgs if m["role"] == "user" for t in texts(m)],
            assistant_texts=[t for m in msgs if m["role"] == "assistant" for t in texts(m)],
            tools=[t["function"]["name"] for t in body["tools"]],
            calls=[(c["function"]["name"], json.loads(c["function"]["arguments"]))
                   for m in msgs for c in m.get("tool_calls") or ()],
            results=[m["content"] for m in msgs if m["role"] == "tool"],
            images=[_data_url_image(p["image_url"]["url"]) for m in msgs if m["role"] == "user"
                    and isinstance(m["content"], list) for p in m["content"] if p["type"] == "image_url"],
            max_tokens=body.get("max_tokens", body.get("max_completion_tokens")), tool_choice=body["tool_choice"],
        )
    if upstream == "anthropic":
        def blocks(role, kind):
            return [b for m in body["messages"] if m["role"] == role
                    for b in ([{"type": "text", "text": m["content"]}] if isinstance(m["content"], str)
                              else m["content"]) if b["type"] == kind]

        return Facts(
            system=[b["text"] for b in body.get("system", [])],
            user_texts=[b["text"] for b in blocks("user", "text")],
            assistant_texts=[b["text"] for b in blocks("assistant", "text")],
            tools=[t["name"] for t in body["tools"]],
            calls=[(b["name"], b["input"]) for b in blocks("assistant", "tool_use")],
            results=[b["content"] for b in blocks("user", "tool_result")],
            images=[(b["source"]["media_type"], base64.b64decode(b["source"]["data"]))
                    for b in blocks("user", "image")],
            max_tokens=body["max_tokens"], tool_choice=body["tool_choice"]["type"],
        )
    if upstream == "gemini":
        def parts(role):
            return [p for c in body["contents"] if c["role"] == role for p in c["parts"]]

        return Facts(
            system=[p["text"] for p in body["systemInstruction"]["parts"]],
            user_texts=[p["text"] for p in parts("user") if "text" in p],
            assistant_texts=[p["text"] for p in parts("model") if "text" in p and not p.get("thought")],
            tools=[d["name"] for t in body["tools"] for d in t["functionDeclarations"]],
            calls=[(p["functionCall"]["name"], p["functionCall"]["args"]) for p in parts("model")
                   if "functionCall" in p],
            results=[p["functionResponse"]["response"]["content"] for p in parts("user") if "functionResponse" in p],
            images=[(p["inlineData"]["mimeType"], base64.b64decode(p["inlineData"]["data"])) for p in parts("user")
                    if "inlineData" in p],
            max_tokens=body["generationConfig"]["maxOutputTokens"],
            tool_choice=body["toolConfig"]["functionCallingConfig"]["mode"].lower(),
        )
    items = body["input"]

    def message_parts(role, kind):
        return [p for i in items if i["type"] == "message" and i["role"] == role for p in i["content"]
                if p["type"] == kind]

    return Facts(
        system=[body["instructions"]] + [p["text"] for role in ("system", "developer")
                                         for p in message_parts(role, "input_text")],
        user_texts=[p["text"] for p in message_parts("user", "input_text")],
        assistant_texts=[p["text"] for p in message_parts("assistant", "output_text")],
        tools=[t["name"] for t in body["tools"]],
        calls=[(i["name"], json.loads(i["arguments"])) for i in items if i["type"] == "function_call"],
        results=[i["output"] for i in items if i["type"] == "function_call_output"],
        images=[_data_url_image(p["image_url"]) for p in message_parts("user", "input_image")],
        max_tokens=body["max_output_tokens"], tool_choice=body["tool_choice"],
    )


EXPECTED_FACTS = Facts(system=[SYSTEM], user_texts=[Q1, Q2], assistant_texts=[A1], tools=["get_weather", "get_time"],
                       calls=[("get_weather", WEATHER_ARGS)], results=[TOOL_RESULT], images=[("image/png", PNG)],
                       max_tokens=2048, tool_choice="auto")
# The reasoning each client asked for, in each upstream's terms (documented mappings):
# effort medium -> Gemini budget 8192; budget 4096 -> OpenAI/Responses effort medium (<= 8192).
GEMINI_BUDGET = {"openai": 8192, "anthropic": 4096, "gemini": 4096, "responses": 8192}


@pytest.mark.parametrize("client,upstream", PAIRS)
def test_request_is_accepted_and_keeps_its_facts(client, upstream):
    req = decode_client_request(client)
    req.model = UPSTREAM_MODEL[upstream]  # what the router does
    body = json.loads(json.dumps(ENCODE_REQUEST[upstream](req)))  # as sent on the wire

    upstream_accepts(upstream, body)

    facts = facts_of(upstream, body)
    expected = copy.deepcopy(EXPECTED_FACTS)
    expected.max_tokens = 16000 if client == "anthropic" else 2048
    if upstream == "anthropic":  # documented: response_format becomes a last system block
        instruction = facts.system.pop()
        assert instruction.startswith("Respond with a single JSON object only")
        assert json.dumps(REPORT_SCHEMA, separators=(",", ":")) in instruction
        assert "output_config" not in body
    assert facts == expected

    # JSON output and reasoning, per upstream
    if upstream == "openai":
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["schema"] == REPORT_SCHEMA
        assert body["reasoning_effort"] == "medium"
    elif upstream == "anthropic":
        thinking = [b for m in body["messages"] for b in m["content"] if isinstance(b, dict)
                    and b["type"] == "thinking"]
        if client == "anthropic":  # signed thinking leads the tool loop: it is replayed, thinking stays on
            assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
            assert thinking == [{"type": "thinking", "thinking": THOUGHT, "signature": ANTHROPIC_SIG}]
        else:  # documented: unsigned thinking is not replayed, so thinking is left off for this tool loop
            assert "thinking" not in body and thinking == []
            assert any(d.startswith("reasoning (the tool loop") for d in req.dropped)
    elif upstream == "gemini":
        config = body["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        assert config["responseSchema"]["type"] == "OBJECT"
        assert set(config["responseSchema"]["properties"]) == set(REPORT_SCHEMA["properties"])
        assert config["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": GEMINI_BUDGET[client]}
        call = next(p for c in body["contents"] for p in c["parts"] if "functionCall" in p)
        # Gemini's own signature comes back; other histories get the documented Gemini 3 placeholder
        assert call["thoughtSignature"] == (GEMINI_SIG if client == "gemini" else gemini.SKIP_SIGNATURE)
        declared = body["tools"][0]["functionDeclarations"][0]["parameters"]
        assert declared["properties"]["location"]["properties"]["city"] == {"type": "STRING"}  # $ref inlined
    else:
        assert body["text"]["format"]["type"] == "json_schema"
        assert body["text"]["format"]["schema"] == REPORT_SCHEMA
        assert body["reasoning"] == {"effort": "medium", "summary": "auto"}
        assert body["store"] is False
        reasoning = [i for i in body["input"] if i["type"] == "reasoning"]
        # documented: only a Responses upstream's own encrypted_content is replayed
        assert [r.get("encrypted_content") for r in reasoning] == ([RESPONSES_BLOB] if client == "responses" else [])


# --- 2. upstream response fixtures (thinking + text + two tool calls + usage) -------------------

ANSWER = "I'll check the weather and the local time in Brest."
CALLS = [("get_weather", WEATHER_ARGS), ("get_time", TIME_ARGS)]
USAGE = (1200, 300, 1024, 128)  # canonical input (incl. cached), output (incl. reasoning), cached, reasoning

OPENAI_USAGE = {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
                "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 128, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
ANTHROPIC_USAGE = {"input_tokens": 176, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1024,
                   "output_tokens": 300, "output_tokens_details": {"thinking_tokens": 128}, "service_tier": "standard"}
GEMINI_USAGE = {"promptTokenCount": 1200, "candidatesTokenCount": 172, "thoughtsTokenCount": 128,
                "cachedContentTokenCount": 1024, "totalTokenCount": 1500}
RESPONSES_USAGE = {"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 0},
                   "output_tokens": 300, "output_tokens_details": {"reasoning_tokens": 128}, "total_tokens": 1500}

OPENAI_RESPONSE = {  # an OpenAI-compatible server that returns reasoning_content (vLLM, DeepSeek style)
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion", "created": CREATED,
    "model": "o4-mini-2025-04-16", "system_fingerprint": "fp_44709d6fcb",
    "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": ANSWER, "refusal": None, "reasoning_content": THOUGHT,
        "tool_calls": [
            {"id": "call_9hJ2kD", "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps(WEATHER_ARGS)}},
            {"id": "call_7Rt5pQ", "type": "function",
             "function": {"name": "get_time", "arguments": json.dumps(TIME_ARGS)}},
        ]}}],
    "usage": OPENAI_USAGE,
}
ANTHROPIC_RESPONSE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": THOUGHT, "signature": ANTHROPIC_SIG},
        {"type": "text", "text": ANSWER},
        {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": WEATHER_ARGS},
        {"type": "tool_use", "id": "toolu_01Fq8Zp2WQdYvE3mLk9sHn4R", "name": "get_time", "input": TIME_ARGS},
    ],
    "stop_reason": "tool_use", "stop_sequence": None, "usage": ANTHROPIC_USAGE,
}
GEMINI_RESPONSE = {
    "candidates": [{"index": 0, "finishReason": "STOP", "content": {"role": "model", "parts": [
        {"text": THOUGHT, "thought": True},
        {"text": ANSWER},
        {"functionCall": {"name": "get_weather", "args": WEATHER_ARGS}, "thoughtSignature": GEMINI_SIG},
        {"functionCall": {"name": "get_time", "args": TIME_ARGS}},
    ]}}],
    "usageMetadata": GEMINI_USAGE, "modelVersion": "gemini-3-pro-preview", "responseId": "kq3PaJ-XEo2i1MkPmPe4sQY",
}


def responses_object(status: str, output: list, usage: dict | None, incomplete: dict | None = None) -> dict:
    return {
        "id": "resp_68d1f0a2b6c88190a1e0c3a9b7d6e5f4", "object": "response", "created_at": CREATED,
        "status": status, "background": False, "error": None, "incomplete_details": incomplete,
        "instructions": SYSTEM, "max_output_tokens": 2048, "max_tool_calls": None, "model": "gpt-5-2025-08-07",
        "output": output, "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": "medium", "summary": "auto"}, "service_tier": "default", "store": False,
        "temperature": 1.0, "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto",
        "tools": [], "top_logprobs": 0, "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": None,
        "metadata": {},
    }


def _responses_output(thinking: str, text: str, calls: list, status: str = "completed") -> list[dict]:
    out: list[dict] = []
    if thinking:
        out.append({"id": "rs_68d1f0a3", "type": "reasoning", "encrypted_content": RESPONSES_BLOB,
                    "summary": [{"type": "summary_text", "text": thinking}]})
    if text:
        out.append({"id": "msg_68d1f0a4", "type": "message", "role": "assistant", "status": status,
                    "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
    for k, (name, args) in enumerate(calls):
        out.append({"id": f"fc_68d1f0a{5 + k}", "type": "function_call", "status": "completed",
                    "call_id": f"call_R{k}x8sL2", "name": name, "arguments": json.dumps(args)})
    return out


RESPONSES_RESPONSE = responses_object("completed", _responses_output(THOUGHT, ANSWER, CALLS), RESPONSES_USAGE)
UPSTREAM_RESPONSES = {"openai": OPENAI_RESPONSE, "anthropic": ANTHROPIC_RESPONSE, "gemini": GEMINI_RESPONSE,
                      "responses": RESPONSES_RESPONSE}

DECODE_RESPONSE = {"openai": openai_chat.decode_response, "anthropic": anthropic.decode_response,
                   "gemini": gemini.decode_response, "responses": responses.decode_response}
ENCODE_RESPONSE = {"openai": openai_chat.encode_response, "anthropic": anthropic.encode_response,
                   "gemini": gemini.encode_response, "responses": responses.encode_response}


def sdk_validate_response(fmt: str, body: dict) -> None:
    """The client SDK's own parse of a non-stream body (raises pydantic.ValidationError)."""
    if fmt == "openai":
        ChatCompletion.model_validate(body)
    elif fmt == "anthropic":
        AnthropicMessage.model_validate(body)
    elif fmt == "gemini":
        genai.GenerateContentResponse.model_validate_json(json.dumps(body))
    else:
        ResponsesResponse.model_validate(body)


@dataclass
class Said:
    """What a client reads out of an answer (stream or not)."""
    thinking: str
    text: str
    calls: list[tuple[str, Any]]  # (name, arguments as parsed JSON)
    finish: str
    usage: tuple  # (input incl. cached, output incl. reasoning, cached, reasoning or None): see the docstring


def said_in_response(client: str, body: dict) -> Said:
    if client == "openai":
        choice, u = body["choices"][0], body["usage"]
        msg = choice["message"]
        assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
        return Said(msg.get("reasoning_content") or "", msg["content"] or "",
                    [(c["function"]["name"], json.loads(c["function"]["arguments"]))
                     for c in msg.get("tool_calls") or ()],
                    choice["finish_reason"], _openai_usage(u))
    if client == "anthropic":
        content = body["content"]
        return Said("".join(b["thinking"] for b in content if b["type"] == "thinking"),
                    "".join(b["text"] for b in content if b["type"] == "text"),
                    [(b["name"], b["input"]) for b in content if b["type"] == "tool_use"],
                    body["stop_reason"], _anthropic_usage(body["usage"]))
    if client == "gemini":
        cand = body["candidates"][0]
        return _gemini_said(cand["content"]["parts"], cand.get("finishReason"), body["usageMetadata"])
    return _responses_said(body)


def _openai_usage(u: dict) -> tuple:
    return (u["prompt_tokens"], u["completion_tokens"], u["prompt_tokens_details"]["cached_tokens"],
            u["completion_tokens_details"]["reasoning_tokens"])


def _anthropic_usage(u: dict) -> tuple:
    read, write = u.get("cache_read_input_tokens") or 0, u.get("cache_creation_input_tokens") or 0
    details = u.get("output_tokens_details") or {}
    return (u["input_tokens"] + read + write, u["output_tokens"], read, details.get("thinking_tokens"))


def _gemini_usage(m: dict) -> tuple:
    thoughts = m.get("thoughtsTokenCount", 0)
    assert m["totalTokenCount"] == m["promptTokenCount"] + m["candidatesTokenCount"] + thoughts
    return (m["promptTokenCount"], m["candidatesTokenCount"] + thoughts, m.get("cachedContentTokenCount", 0), thoughts)


def _gemini_said(parts: list[dict], finish: str | None, usage: dict) -> Said:
    return Said("".join(p["text"] for p in parts if p.get("thought")),
                "".join(p.get("text", "") for p in parts if not p.get("thought")),
                [(p["functionCall"]["name"], p["functionCall"]["args"]) for p in parts if "functionCall" in p],
                finish or "", _gemini_usage(usage))


def _responses_said(body: dict) -> Said:
    out, u = body["output"], body["usage"]
    assert u["total_tokens"] == u["input_tokens"] + u["output_tokens"]
    reason = (body.get("incomplete_details") or {}).get("reason")
    return Said("".join(s["text"] for i in out if i["type"] == "reasoning" for s in i["summary"]),
                "".join(c["text"] for i in out if i["type"] == "message" for c in i["content"]),
                [(i["name"], json.loads(i["arguments"])) for i in out if i["type"] == "function_call"],
                body["status"] + (f":{reason}" if reason else ""),
                (u["input_tokens"], u["output_tokens"], u["input_tokens_details"]["cached_tokens"],
                 u["output_tokens_details"]["reasoning_tokens"]))


TOOL_FINISH = {"openai": "tool_calls", "anthropic": "tool_use", "gemini": "STOP", "responses": "completed"}
LENGTH_FINISH = {"openai": "length", "anthropic": "max_tokens", "gemini": "MAX_TOKENS",
                 "responses": "incomplete:max_output_tokens"}


def convert_response(upstream: str, client: str, body: dict) -> dict:
    r = DECODE_RESPONSE[upstream](copy.deepcopy(body))
    return json.loads(json.dumps(ENCODE_RESPONSE[client](r, CLIENT_MODEL)))


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_upstream_response_fixture_is_what_the_sdk_parses(upstream):
    sdk_validate_response(upstream, UPSTREAM_RESPONSES[upstream])


@pytest.mark.parametrize("client,upstream", PAIRS)
def test_response_converts(client, upstream):
    out = convert_response(upstream, client, UPSTREAM_RESPONSES[upstream])

    sdk_validate_response(client, out)
    said = said_in_response(client, out)
    assert said.thinking == THOUGHT
    assert said.text == ANSWER
    assert said.calls == CALLS
    assert said.finish == TOOL_FINISH[client]
    assert said.usage[:3] == USAGE[:3]
    if client != "anthropic":  # see test_thinking_tokens_reach_an_anthropic_client
        assert said.usage[3] == USAGE[3]
    assert (out["modelVersion"] if client == "gemini" else out["model"]) == CLIENT_MODEL


def test_thinking_tokens_reach_an_anthropic_client():
    out = convert_response("openai", "anthropic", OPENAI_RESPONSE)
    assert said_in_response("anthropic", out).usage[3] == USAGE[3]


# --- 3. streams ---------------------------------------------------------------------------------

def pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def openai_sse(thinking: str, text: str, calls: list, finish: str, usage: dict) -> bytes:
    base = {"id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion.chunk", "created": CREATED,
            "model": "o4-mini-2025-04-16", "system_fingerprint": "fp_44709d6fcb", "usage": None}

    def chunk(delta: dict, reason: str | None = None) -> dict:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"reasoning_content": p}) for p in pieces(thinking, 7)]
    events += [chunk({"content": p}) for p in pieces(text, 5)]
    for k, (name, args) in enumerate(calls):
        events.append(chunk({"tool_calls": [{"index": k, "id": f"call_{k}9hJ2kD", "type": "function",
                                             "function": {"name": name, "arguments": ""}}]}))
        events += [chunk({"tool_calls": [{"index": k, "function": {"arguments": p}}]})
                   for p in pieces(json.dumps(args), 6)]
    events.append(chunk({}, finish))
    events.append({**base, "choices": [], "usage": usage})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def anthropic_sse(thinking: str, text: str, calls: list, stop_reason: str, usage: dict) -> bytes:
    events: list[dict] = [
        {"type": "message_start", "message": {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {**{k: usage[k] for k in ("input_tokens", "cache_creation_input_tokens",
                                               "cache_read_input_tokens")}, "output_tokens": 1}}},
        {"type": "ping"},
    ]
    index = 0
    if thinking:
        events.append({"type": "content_block_start", "index": index,
                       "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
        events += [{"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": p}}
                   for p in pieces(thinking, 8)]
        events.append({"type": "content_block_delta", "index": index,
                       "delta": {"type": "signature_delta", "signature": ANTHROPIC_SIG}})
        events.append({"type": "content_block_stop", "index": index})
        index += 1
    events.append({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
    events += [{"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": p}}
               for p in pieces(text, 4)]
    events.append({"type": "content_block_stop", "index": index})
    for k, (name, args) in enumerate(calls):
        index += 1
        events.append({"type": "content_block_start", "index": index, "content_block": {
            "type": "tool_use", "id": f"toolu_01T1x1fJ34qAmk2tNTrN7U{k}", "name": name, "input": {}}})
        events += [{"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta",
                                                                              "partial_json": p}}
                   for p in ["", *pieces(json.dumps(args), 5)]]
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                   "usage": {"output_tokens": usage["output_tokens"],
                             "output_tokens_details": usage.get("output_tokens_details")}})
    events.append({"type": "message_stop"})
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def gemini_sse(thinking: str, text: str, calls: list, finish: str, usage: dict) -> bytes:
    so_far = {"promptTokenCount": usage["promptTokenCount"], "totalTokenCount": usage["promptTokenCount"]}

    def event(parts: list[dict], reason: str | None = None) -> dict:
        cand: dict = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if reason:
            cand["finishReason"] = reason
        return {"candidates": [cand], "usageMetadata": usage if reason else so_far,
                "modelVersion": "gemini-3-pro-preview", "responseId": "kq3PaJ-XEo2i1MkPmPe4sQY"}

    events = [event([{"text": p, "thought": True}]) for p in pieces(thinking, 9)]
    texts = pieces(text, 4)
    if calls:  # function calls come whole, together, in the last event
        events += [event([{"text": p}]) for p in texts]
        parts = [{"functionCall": {"name": name, "args": args}} for name, args in calls]
        parts[0]["thoughtSignature"] = GEMINI_SIG
        events.append(event(parts, finish))
    else:
        events += [event([{"text": p}]) for p in texts[:-1]] + [event([{"text": texts[-1]}], finish)]
    return b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events)


def responses_sse(thinking: str, text: str, calls: list, status: str, usage: dict,
                  incomplete: dict | None = None) -> bytes:
    events: list[dict] = []

    def add(kind: str, **fields: Any) -> None:
        events.append({"type": kind, **fields})

    add("response.created", response=responses_object("in_progress", [], None))
    add("response.in_progress", response=responses_object("in_progress", [], None))
    output = _responses_output(thinking, text, calls, "incomplete" if incomplete else "completed")
    for n, item in enumerate(output):
        at = {"item_id": item["id"], "output_index": n}
        if item["type"] == "reasoning":
            add("response.output_item.added", output_index=n, item={**item, "summary": [], "encrypted_content": None})
            part = {"type": "summary_text", "text": ""}
            add("response.reasoning_summary_part.added", **at, summary_index=0, part=part)
            for p in pieces(thinking, 8):
                add("response.reasoning_summary_text.delta", **at, summary_index=0, delta=p)
            add("response.reasoning_summary_text.done", **at, summary_index=0, text=thinking)
            add("response.reasoning_summary_part.done", **at, summary_index=0, part={**part, "text": thinking})
        elif item["type"] == "message":
            add("response.output_item.added", output_index=n,
                item={**item, "status": "in_progress", "content": []})
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            add("response.content_part.added", **at, content_index=0, part=part)
            for p in pieces(text, 4):
                add("response.output_text.delta", **at, content_index=0, delta=p, logprobs=[])
            add("response.output_text.done", **at, content_index=0, text=text, logprobs=[])
            add("response.content_part.done", **at, content_index=0, part={**part, "text": text})
        else:
            add("response.output_item.added", output_index=n,
                item={**item, "status": "in_progress", "arguments": ""})
            for p in pieces(item["arguments"], 5):
                add("response.function_call_arguments.delta", **at, delta=p)
            add("response.function_call_arguments.done", **at, arguments=item["arguments"])
        add("response.output_item.done", output_index=n, item=item)
    add(f"response.{status}", response=responses_object(status, output, usage, incomplete))
    return b"".join(f"event: {e['type']}\ndata: {json.dumps({**e, 'sequence_number': k})}\n\n".encode()
                    for k, e in enumerate(events))


UPSTREAM_STREAMS = {
    "openai": openai_sse(THOUGHT, ANSWER, CALLS, "tool_calls", OPENAI_USAGE),
    "anthropic": anthropic_sse(THOUGHT, ANSWER, CALLS, "tool_use", ANTHROPIC_USAGE),
    "gemini": gemini_sse(THOUGHT, ANSWER, CALLS, "STOP", GEMINI_USAGE),
    "responses": responses_sse(THOUGHT, ANSWER, CALLS, "completed", RESPONSES_USAGE),
}
STREAM_DECODER = {"openai": openai_chat.StreamDecoder, "anthropic": anthropic.StreamDecoder,
                  "gemini": gemini.StreamDecoder, "responses": responses.StreamDecoder}


def stream_encoder(client: str):
    if client == "openai":
        return openai_chat.StreamEncoder(CLIENT_MODEL, include_usage=True)
    return {"anthropic": anthropic.StreamEncoder, "gemini": gemini.StreamEncoder,
            "responses": responses.StreamEncoder}[client](CLIENT_MODEL)


def run_stream(upstream: str, client: str, data: bytes, cuts: list[int]) -> bytes:
    """Feed `data` split at the offsets `cuts`, then end the stream cleanly."""
    t = Converting(STREAM_DECODER[upstream](), stream_encoder(client))
    bounds = [0, *cuts, len(data)]
    return b"".join(t.feed(data[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)) + t.finish()


def events_of(out: bytes) -> list[tuple[str | None, Any]]:
    """The client's SSE events as (event name, parsed data); [DONE] stays a string."""
    parser = SSEParser()
    events = parser.feed(out) + parser.close()
    return [(e.event, e.data if e.data == "[DONE]" else json.loads(e.data)) for e in events if e.data is not None]


# Per-run values, as documented: Gemini call ids are synthesised (call_<8 random hex>), and
# timestamps are "now" where the upstream has none (Anthropic, Gemini streams).
_RANDOM_ID = re.compile(rb"call_[0-9a-f]{8}")
_TIMESTAMP = re.compile(rb'"(created|created_at)":\d+')


def normalised(out: bytes) -> bytes:
    return _TIMESTAMP.sub(rb'"\1":0', _RANDOM_ID.sub(b"call_RANDOM0", out))


def gemini_folded(out: bytes) -> list[dict]:
    """A Gemini client's events with the documented batch-dependent splits joined back:
    "a thinking signature rides on the last thought part of the same encode() batch or comes as
    an empty thought part"; "finishReason and usageMetadata go on the last content event of the
    batch that finishes, else on an event with one empty text part"."""
    folded: list[dict] = []
    for _, e in events_of(normalised(out)):
        cand = e["candidates"][0] if "candidates" in e else None
        prev = folded[-1]["candidates"][0] if folded and "candidates" in folded[-1] else None
        parts = cand["content"]["parts"] if cand else []
        if prev and parts == [{"text": ""}] and "finishReason" in cand and "finishReason" not in prev:
            prev["finishReason"] = cand["finishReason"]
            folded[-1]["usageMetadata"] = e["usageMetadata"]
            continue
        last = prev["content"]["parts"][-1] if prev else {}
        if (len(parts) == 1 and parts[0].get("thought") and parts[0]["text"] == "" and "thoughtSignature" in parts[0]
                and last.get("thought") and "thoughtSignature" not in last and len(cand) == 2):
            last["thoughtSignature"] = parts[0]["thoughtSignature"]
            continue
        folded.append(e)
    return folded


def comparable(client: str, out: bytes) -> bytes | list[dict]:
    return gemini_folded(out) if client == "gemini" else normalised(out)


_ANTHROPIC_EVENT = TypeAdapter(RawMessageStreamEvent)
_RESPONSES_EVENT = TypeAdapter(ResponseStreamEvent)


def sdk_validate_event(client: str, name: str | None, data: Any) -> None:
    if client == "openai":
        if data != "[DONE]":
            ChatCompletionChunk.model_validate(data)
    elif client == "anthropic":
        assert name == data["type"]
        if name != "ping":  # the SDK skips pings before parsing
            _ANTHROPIC_EVENT.validate_python(data)
    elif client == "gemini":
        genai.GenerateContentResponse.model_validate_json(json.dumps(data))
    else:
        assert name == data["type"]
        _RESPONSES_EVENT.validate_python(data)


def said_in_stream(client: str, events: list[tuple[str | None, Any]]) -> Said:
    """Accumulate a client's stream with its SDK's own stream helpers (google-genai has none:
    parts are concatenated, as its chat helper does)."""
    if client == "openai":
        state = ChatCompletionStreamState()
        for _, chunk in events:
            if chunk != "[DONE]":
                list(state.handle_chunk(ChatCompletionChunk.model_validate(chunk)))
        return said_in_response(client, state.current_completion_snapshot.model_dump(mode="json"))
    if client == "anthropic":
        snapshot, buffers = None, {}
        for name, e in events:
            if name != "ping":
                snapshot = accumulate_event(event=_ANTHROPIC_EVENT.validate_python(e), current_snapshot=snapshot,
                                            json_bufs=buffers)
        return said_in_response(client, snapshot.model_dump(mode="json"))
    if client == "gemini":
        parts = [p for _, e in events for p in e["candidates"][0]["content"]["parts"]]
        finishes = [e["candidates"][0]["finishReason"] for _, e in events if "finishReason" in e["candidates"][0]]
        assert len(finishes) == 1 and "finishReason" in events[-1][1]["candidates"][0]
        return _gemini_said(parts, finishes[0], events[-1][1]["usageMetadata"])
    state = ResponseStreamState(input_tools=omit, text_format=omit)  # raises on incoherent item/part ids
    thinking = text = ""
    for _, e in events:
        list(state.handle_event(_RESPONSES_EVENT.validate_python(e)))
        thinking += e["delta"] if e["type"] == "response.reasoning_summary_text.delta" else ""
        text += e["delta"] if e["type"] == "response.output_text.delta" else ""
    assert [e["sequence_number"] for _, e in events] == list(range(len(events)))
    final = events[-1][1]
    assert final["type"] in ("response.completed", "response.incomplete")
    said = _responses_said(final["response"])
    assert (said.thinking, said.text) == (thinking, text)  # the final Response agrees with the deltas
    return said


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_upstream_stream_fixture_is_what_the_sdk_parses(upstream):
    for name, data in events_of(UPSTREAM_STREAMS[upstream]):
        sdk_validate_event(upstream, name, data)


def chunkings(n: int) -> list[list[int]]:
    """Cut offsets: one byte at a time, then 50 seeded random splits (whole bytes is [])."""
    out = [list(range(1, n))]
    for seed in range(50):
        rng = random.Random(seed)
        out.append(sorted(rng.sample(range(1, n), rng.randint(1, min(300, n - 1)))))
    return out


@pytest.mark.parametrize("client,upstream", PAIRS)
def test_stream_converts_the_same_for_any_chunking(client, upstream):
    data = UPSTREAM_STREAMS[upstream]
    whole = run_stream(upstream, client, data, [])

    events = events_of(whole)
    for name, body in events:
        sdk_validate_event(client, name, body)
    said = said_in_stream(client, events)
    assert said == said_in_response(client, convert_response(upstream, client, UPSTREAM_RESPONSES[upstream]))

    reference = comparable(client, whole)
    for cuts in chunkings(len(data)):
        assert comparable(client, run_stream(upstream, client, data, cuts)) == reference, f"{len(cuts)} cuts"


# --- 4. truncation: a stream that stops before its finish is an error, never a normal stop -------

# The events that finish each upstream stream (Anthropic's stop_reason comes before its message_stop).
FINISH_MARKS = {"openai": [b'"finish_reason": "tool_calls"'],
                "anthropic": [b"event: message_delta", b"event: message_stop"],
                "gemini": [b'"finishReason"'],
                "responses": [b"event: response.completed"]}


def cut_points(upstream: str) -> list[int]:
    """Mid-stream, and just before / inside each finishing event."""
    data = UPSTREAM_STREAMS[upstream]
    sep = b"\r\n\r\n" if upstream == "gemini" else b"\n\n"
    cuts = [len(data) // 3, len(data) // 2]
    for mark in FINISH_MARKS[upstream]:
        start = data.rfind(sep, 0, data.index(mark)) + len(sep)
        cuts += [start, start + 12]
    return cuts


def assert_error_ending(client: str, events: list[tuple[str | None, Any]]) -> None:
    names = [n for n, _ in events]
    last_name, last = events[-1]
    if client == "openai":
        assert "error" in last and last != "[DONE]"
        assert "[DONE]" not in [d for _, d in events]
        assert not any(c.get("finish_reason") for _, d in events[:-1] for c in d["choices"])
    elif client == "anthropic":
        assert last_name == "error" and last["type"] == "error"
        assert "message_stop" not in names and "message_delta" not in names
    elif client == "gemini":
        assert set(last) == {"error"} and last["error"]["message"]
        assert not any("finishReason" in c for _, d in events[:-1] for c in d["candidates"])
    else:
        assert last_name == "response.failed" and last["response"]["status"] == "failed"
        _RESPONSES_EVENT.validate_python(last)
        assert "response.completed" not in names and "response.incomplete" not in names


@pytest.mark.parametrize("client,upstream", PAIRS)
def test_truncated_stream_ends_with_an_error(client, upstream):
    data = UPSTREAM_STREAMS[upstream]
    for cut in cut_points(upstream):
        assert FINISH_MARKS[upstream][-1] not in data[:cut]
        out = run_stream(upstream, client, data[:cut], [])
        assert_error_ending(client, events_of(out))


# --- 5. finish reasons: max tokens upstream -> each client's own "length" ------------------------

CUT_TEXT = "Brest: 14°C, light rain, wind from"
MAX_TOKENS_RESPONSES = {
    "openai": {**OPENAI_RESPONSE, "choices": [{"index": 0, "logprobs": None, "finish_reason": "length", "message": {
        "role": "assistant", "content": CUT_TEXT, "refusal": None}}]},
    "anthropic": {**ANTHROPIC_RESPONSE, "content": [{"type": "text", "text": CUT_TEXT}], "stop_reason": "max_tokens"},
    "gemini": {**GEMINI_RESPONSE, "candidates": [{"index": 0, "finishReason": "MAX_TOKENS", "content": {
        "role": "model", "parts": [{"text": CUT_TEXT}]}}]},
    "responses": responses_object("incomplete", _responses_output("", CUT_TEXT, [], "incomplete"), RESPONSES_USAGE,
                                  {"reason": "max_output_tokens"}),
}
MAX_TOKENS_STREAMS = {
    "openai": openai_sse("", CUT_TEXT, [], "length", OPENAI_USAGE),
    "anthropic": anthropic_sse("", CUT_TEXT, [], "max_tokens", ANTHROPIC_USAGE),
    "gemini": gemini_sse("", CUT_TEXT, [], "MAX_TOKENS", GEMINI_USAGE),
    "responses": responses_sse("", CUT_TEXT, [], "incomplete", RESPONSES_USAGE, {"reason": "max_output_tokens"}),
}


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_max_tokens_fixtures_are_what_the_sdk_parses(upstream):
    sdk_validate_response(upstream, MAX_TOKENS_RESPONSES[upstream])
    for name, data in events_of(MAX_TOKENS_STREAMS[upstream]):
        sdk_validate_event(upstream, name, data)


@pytest.mark.parametrize("client,upstream", PAIRS)
def test_max_tokens_becomes_the_clients_length_finish(client, upstream):
    out = convert_response(upstream, client, MAX_TOKENS_RESPONSES[upstream])
    sdk_validate_response(client, out)
    said = said_in_response(client, out)
    assert (said.text, said.calls, said.finish) == (CUT_TEXT, [], LENGTH_FINISH[client])

    events = events_of(run_stream(upstream, client, MAX_TOKENS_STREAMS[upstream], []))
    for name, body in events:
        sdk_validate_event(client, name, body)
    streamed = said_in_stream(client, events)
    assert (streamed.text, streamed.calls, streamed.finish) == (CUT_TEXT, [], LENGTH_FINISH[client])
