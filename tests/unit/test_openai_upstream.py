"""Tests for the OpenAI Chat Completions test double (tests/upstreams/openai_compat.py)."""

from __future__ import annotations

import base64
import json
import math
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.upstreams.openai_compat import (
    EMBEDDING_MODELS,
    SCENARIO_MODELS,
    embedding_vector,
    make_app,
)
from tests.upstreams.serving import ServerThread

KEY = "sk-test-0123456789"
MODELS = ["gpt-4o", "gpt-4o-mini"]
USER = {"role": "user", "content": "hello world"}
REPO = Path(__file__).resolve().parents[2]


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


def chat(http: httpx.Client, **body) -> httpx.Response:
    body.setdefault("model", "gpt-4o")
    body.setdefault("messages", [USER])
    return http.post("/v1/chat/completions", json=body)


def sse_payloads(text: str) -> list[str]:
    return [line[len("data: "):] for line in text.split("\n") if line.startswith("data: ")]


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get-time"}},
]


# ----------------------------------------------------------------- SDK, happy paths


def test_sdk_non_stream_echoes_last_user_text(sdk):
    completion = sdk.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}]},
        ],
    )
    assert completion.id.startswith("chatcmpl-test")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-2024-08-06"
    assert completion.system_fingerprint == "fp_test"
    choice = completion.choices[0]
    assert (choice.message.role, choice.message.content) == ("assistant", "Echo: hello world")
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    # 8 + 5 + 2 + 11 characters -> 26 // 4 + 1; "Echo: hello world" has 3 words
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (7, 3)
    assert completion.usage.total_tokens == 10


def test_sdk_stream_with_include_usage(sdk):
    stream = sdk.chat.completions.create(
        model="gpt-4o-mini", messages=[USER], stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert {c.id for c in chunks} == {chunks[0].id}
    assert {c.model for c in chunks} == {"gpt-4o-mini-2024-08-06"}
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert texts == ["Echo", ": he", "llo ", "worl", "d"]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (3, 3)


def test_sdk_parallel_tool_calls_streamed_then_tool_results(sdk):
    stream = sdk.chat.completions.create(model="gpt-4o", messages=[USER], tools=TOOLS, stream=True)
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = delta.id or call["id"]
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
            assert len(delta.function.arguments or "") <= 5
    assert finish == "tool_calls"
    assert calls == {
        0: {"id": "call_0_get_weather", "name": "get_weather", "arguments": '{"tool":"get_weather","n":0}'},
        1: {"id": "call_1_get-time", "name": "get-time", "arguments": '{"tool":"get-time","n":1}'},
    }

    history = [
        USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in calls.values()
            ],
        },
        {"role": "tool", "tool_call_id": "call_0_get_weather", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_1_get-time", "content": [{"type": "text", "text": "noon"}]},
    ]
    completion = sdk.chat.completions.create(model="gpt-4o", messages=history, tools=TOOLS)
    assert completion.choices[0].message.content == "Tool results: sunny; noon"
    assert completion.choices[0].finish_reason == "stop"


def test_non_stream_tool_calls_and_tool_choice_none(http):
    body = chat(http, tools=TOOLS).json()
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert [c["id"] for c in message["tool_calls"]] == ["call_0_get_weather", "call_1_get-time"]
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["usage"]["completion_tokens"] == 10
    plain = chat(http, tools=TOOLS, tool_choice="none").json()
    assert plain["choices"][0]["message"]["content"] == "Echo: hello world"


def test_models_list_and_auth(http, base_url):
    listing = http.get("/v1/models").json()
    ids = [m["id"] for m in listing["data"]]
    assert ids == MODELS + SCENARIO_MODELS + list(EMBEDDING_MODELS)
    assert listing["data"][0] == {"id": "gpt-4o", "object": "model", "created": 1700000000, "owned_by": "test-upstream"}
    anonymous = httpx.get(f"{base_url}/v1/models")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["message"].startswith("You didn't provide an API key")


def test_no_api_key_configured_means_no_auth():
    with ServerThread(make_app(None, ["m1"])) as url:
        response = httpx.post(f"{url}/v1/chat/completions", json={"model": "m1", "messages": [USER]})
    assert response.status_code == 200
    assert response.json()["model"] == "m1-2024-08-06"


# ----------------------------------------------------------------- validation


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_bad_api_key(http):
    response = http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": [USER]},
                         headers={"Authorization": "Bearer sk-wrong"})
    error = error_of(response, 401)
    assert error["message"].startswith("Incorrect API key provided")
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")


def test_unknown_model(http):
    error = error_of(chat(http, model="gpt-9"), 404)
    assert error["message"] == "The model `gpt-9` does not exist or you do not have access to it."
    assert error["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("body", "message_start"),
    [
        ({"foo": 1}, "Unrecognized request argument supplied: foo"),
        ({"stream_options": {"include_usage": True}}, "The 'stream_options' parameter is only allowed"),
        ({"stream": False, "stream_options": {}}, "The 'stream_options' parameter is only allowed"),
        ({"stream": "yes"}, "Invalid type for 'stream'"),
        ({"temperature": 2.5}, "Invalid 'temperature': decimal above maximum value"),
        ({"n": 2}, "Invalid 'n'"),
        ({"messages": []}, "Invalid 'messages': empty array"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "Invalid value: 'robot'"),
        ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "Invalid value: 'video'"),
        ({"messages": [{"role": "assistant", "content": None}]}, "Invalid type for 'messages[0].content'"),
        ({"messages": [USER, {"role": "tool", "tool_call_id": "call_1", "content": "x"}]},
         "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'."),
        ({"messages": [USER, {"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, USER]},
         "An assistant message with 'tool_calls' must be followed by tool messages"),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "Invalid 'tools[0].function.name'"),
        ({"tool_choice": "auto"}, "Invalid value for 'tool_choice'"),
    ],
)
def test_validation_rejects(http, body, message_start):
    error = error_of(chat(http, **body), 400)
    assert error["message"].startswith(message_start)
    assert error["type"] == "invalid_request_error"


def test_tool_message_error_param(http):
    messages = [USER, {"role": "tool", "tool_call_id": "call_1", "content": "x"}]
    assert error_of(chat(http, messages=messages), 400)["param"] == "messages.[1].role"


def test_body_must_be_json_object(http):
    not_json = http.post("/v1/chat/completions", content=b"{nope", headers={"Content-Type": "application/json"})
    assert "could not parse the JSON body" in error_of(not_json, 400)["message"]
    wrong_type = http.post("/v1/chat/completions", content=b"{}", headers={"Content-Type": "text/plain"})
    assert "Unsupported content type" in error_of(wrong_type, 400)["message"]
    array = http.post("/v1/chat/completions", json=[1])
    error_of(array, 400)


def test_unknown_route_is_openai_404(http):
    error = error_of(http.post("/v1/completions", json={}), 404)
    assert error["message"] == "Invalid URL (POST /v1/completions)"


def test_request_log(http, base_url):
    assert http.delete("/__requests").status_code == 200
    http.post("/v1/chat/completions?trace=1", json={"model": "gpt-4o", "messages": [USER]}, headers={"X-Custom": "A"})
    log = httpx.get(f"{base_url}/__requests").json()  # no auth needed
    assert len(log) == 1
    entry = log[0]
    assert (entry["method"], entry["path"], entry["query"]) == ("POST", "/v1/chat/completions", "trace=1")
    assert entry["headers"]["x-custom"] == "A"
    assert entry["headers"]["authorization"] == f"Bearer {KEY}"
    assert entry["body"] == {"model": "gpt-4o", "messages": [USER]}
    assert httpx.delete(f"{base_url}/__requests").status_code == 200
    assert http.get("/__requests").json() == []


# ----------------------------------------------------------------- scenarios


def test_fault_500_429_502(http):
    error = error_of(chat(http, model="fault-500"), 500)
    assert (error["type"], error["message"]) == ("server_error", "The server had an error while processing your request.")
    limited = chat(http, model="fault-429")
    assert limited.headers["Retry-After"] == "7"
    assert error_of(limited, 429)["code"] == "rate_limit_exceeded"
    html = chat(http, model="fault-502-html")
    assert html.status_code == 502
    assert html.headers["Content-Type"].startswith("text/html")
    assert html.text == "<html><body><h1>502 Bad Gateway</h1></body></html>"


def test_scenarios_still_validate(http):
    assert chat(http, model="fault-500", bogus=1).status_code == 400
    response = http.post("/v1/chat/completions", json={"model": "fault-hang", "messages": [USER]},
                         headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401


def test_fault_hang_sends_no_headers(http):
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json={"model": "fault-hang", "messages": [USER]}, timeout=0.3)
    assert time.monotonic() - started < 2


def test_fault_cut_stream_aborts_after_two_content_chunks(http):
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        with http.stream("POST", "/v1/chat/completions",
                         json={"model": "fault-cut", "messages": [USER], "stream": True}) as response:
            assert response.status_code == 200
            for piece in response.iter_bytes():
                received += piece
    payloads = sse_payloads(received.decode())
    assert [json.loads(p)["choices"][0]["delta"].get("content") for p in payloads] == ["", "Echo", ": he"]
    with pytest.raises(httpx.RemoteProtocolError):
        chat(http, model="fault-cut")


def test_fault_no_finish_ends_cleanly_without_finish(http):
    response = chat(http, model="fault-no-finish", stream=True)  # no exception: body ends properly
    payloads = sse_payloads(response.text)
    assert "[DONE]" not in payloads
    chunks = [json.loads(p) for p in payloads]
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "Echo: hello world"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


def test_fault_slow_stream_arrives_incrementally(http):
    arrivals = []
    body = {"model": "fault-slow-stream", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                arrivals.append(time.monotonic())
    assert len(arrivals) == 2  # "Echo", ": hi"
    assert arrivals[1] - arrivals[0] > 0.2


def test_fault_override_counts_down_then_disarms(http, base_url):
    armed = httpx.post(f"{base_url}/__fault", json={"scenario": "fault-429", "count": 2, "retry_after": 1})
    assert armed.json() == {"scenario": "fault-429", "count": 2, "retry_after": 1}
    assert chat(http, bogus=1).status_code == 400  # validation first; does not use up the override
    for _ in range(2):
        limited = chat(http)
        assert error_of(limited, 429)["code"] == "rate_limit_exceeded" and limited.headers["Retry-After"] == "1"
    assert chat(http).status_code == 200  # disarmed after `count`
    httpx.post(f"{base_url}/__fault", json={"scenario": "fault-500"})  # no count: until DELETE
    assert [chat(http, model="gpt-4o-mini").status_code for _ in range(3)] == [500, 500, 500]
    assert httpx.delete(f"{base_url}/__fault").json()["scenario"] is None
    assert chat(http).status_code == 200
    for bad in ({"scenario": "gpt-4o"}, {"scenario": "fault-500", "count": 0}, {"scenario": "fault-429", "x": 1},
                {"scenario": "fault-429", "retry_after": "7"}):
        assert httpx.post(f"{base_url}/__fault", json=bad).status_code == 400
    assert chat(http).status_code == 200 and chat(http, model="fault-429").headers["Retry-After"] == "7"


def test_sse_torture_is_hostile_but_valid(http, sdk):
    body = {"model": "sse-torture", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        pieces = list(response.iter_raw())
    raw = b"".join(pieces)
    assert len(pieces) > 10  # written (and mostly read) in tiny pieces
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert raw.startswith(b": keep-alive\r\n\r\nid: 0\r\ndata: {")
    assert b'\r\n\r\n: keep-alive\r\ndata: {"id":"chatcmpl-test' in raw  # event 1, split:
    assert b'",\r\ndata:"object":' in raw
    assert b"\r\n\r\n: keep-alive\r\nid: 2\r\ndata: {" in raw
    assert raw.endswith(b"data: [DONE]\r\n\r\n")

    chunks = list(sdk.chat.completions.create(**body))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hi"
    assert chunks[-1].choices[0].finish_reason == "stop"


# ----------------------------------------------------------------- embeddings

EMBED = "text-embedding-3-small"


def embed(http: httpx.Client, **body) -> httpx.Response:
    body.setdefault("model", EMBED)
    body.setdefault("input", "hello")
    return http.post("/v1/embeddings", json=body)


def unpack(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_sdk_embeddings_default_base64_decodes_to_the_float_vectors(sdk, http):
    http.delete("/__requests")
    response = sdk.embeddings.create(model=EMBED, input=["hello", "world"])
    sent = http.get("/__requests").json()[0]["body"]
    assert sent["encoding_format"] == "base64"  # the SDK's default; it decodes itself
    assert response.model == EMBED
    assert [d.index for d in response.data] == [0, 1]
    floats = embed(http, input=["hello", "world"], encoding_format="float").json()
    assert [d.embedding for d in response.data] == [d["embedding"] for d in floats["data"]]
    assert response.data[0].embedding == embedding_vector("hello")
    # 5 // 4 + 1 tokens per input
    assert (response.usage.prompt_tokens, response.usage.total_tokens) == (4, 4)


def test_embeddings_vectors_are_deterministic_unit_float32(http):
    body = embed(http, input="hello", encoding_format="float").json()
    assert body["object"] == "list"
    item = body["data"][0]
    assert (item["object"], item["index"]) == ("embedding", 0)
    vector = item["embedding"]
    assert len(vector) == 8
    assert math.isclose(math.fsum(v * v for v in vector), 1, rel_tol=1e-6)
    assert vector == unpack(base64.b64encode(struct.pack("<8f", *vector)).decode())
    assert embed(http, input="hello", encoding_format="float").json()["data"][0]["embedding"] == vector
    assert embed(http, input="other", encoding_format="float").json()["data"][0]["embedding"] != vector


def test_embeddings_base64_is_little_endian_float32(http):
    body = embed(http, input=["a", "b"], encoding_format="base64").json()
    assert [unpack(d["embedding"]) for d in body["data"]] == [embedding_vector("a"), embedding_vector("b")]


def test_embeddings_dimensions_truncate_and_renormalize(http):
    short = embed(http, dimensions=3, encoding_format="float").json()["data"][0]["embedding"]
    full = embed(http, dimensions=32, encoding_format="float").json()["data"][0]["embedding"]
    assert (len(short), len(full)) == (3, 32)
    scale = math.sqrt(sum(v * v for v in full[:3]))
    assert all(math.isclose(s, f / scale, rel_tol=1e-5) for s, f in zip(short, full[:3], strict=False))
    large = embed(http, model="text-embedding-3-large", dimensions=3072).json()  # float by default
    assert len(large["data"][0]["embedding"]) == 3072


def test_embeddings_token_inputs(http):
    one = embed(http, input=[1, 2, 3], encoding_format="float").json()
    assert len(one["data"]) == 1
    assert one["usage"]["prompt_tokens"] == 3
    many = embed(http, input=[[1, 2], [3]], encoding_format="float").json()
    assert [d["index"] for d in many["data"]] == [0, 1]
    assert many["usage"]["prompt_tokens"] == 3
    assert many["data"][0]["embedding"] != embed(http, input="[1,2]").json()["data"][0]["embedding"]


def test_embeddings_max_inputs(http):
    assert len(embed(http, input=["x"] * 2048).json()["data"]) == 2048
    error = error_of(embed(http, input=["x"] * 2049), 400)
    assert error["message"].startswith("Invalid 'input': array too long. Expected an array with maximum length 2048")
    assert (error["param"], error["code"]) == ("input", "array_above_max_length")


EMPTY_INPUT = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."


@pytest.mark.parametrize(
    ("body", "status", "message_start", "param"),
    [
        ({"bogus": 1}, 400, "Unrecognized request argument supplied: bogus", None),
        ({"stream": True}, 400, "Unrecognized request argument supplied: stream", None),
        ({"model": None}, 400, "you must provide a model parameter", None),
        ({"model": 5}, 400, "Invalid type for 'model'", "model"),
        ({"model": "nope-embedding-9"}, 404, "The model `nope-embedding-9` does not exist", None),
        ({"model": "gpt-4o"}, 403, "You are not allowed to generate embeddings from this model", None),
        ({"input": None}, 400, "Missing required parameter: 'input'.", "input"),
        ({"input": 5}, 400, "Invalid type for 'input': expected one of a string", "input"),
        ({"input": {"text": "x"}}, 400, "Invalid type for 'input'", "input"),
        ({"input": []}, 400, "Invalid 'input': empty array.", "input"),
        ({"input": ""}, 400, EMPTY_INPUT, None),
        ({"input": ["a", ""]}, 400, EMPTY_INPUT, None),
        ({"input": ["a", 1]}, 400, EMPTY_INPUT, None),
        ({"input": [[1], []]}, 400, EMPTY_INPUT, None),
        ({"input": [1, -2]}, 400, EMPTY_INPUT, None),
        ({"input": [True]}, 400, EMPTY_INPUT, None),
        ({"encoding_format": "binary"}, 400, "Invalid value: 'binary'. Supported values are: 'float', 'base64'.",
         "encoding_format"),
        ({"encoding_format": 1}, 400, "Invalid type for 'encoding_format'", "encoding_format"),
        ({"dimensions": 0}, 400, "Invalid 'dimensions': integer below minimum value", "dimensions"),
        ({"dimensions": 1.5}, 400, "Invalid type for 'dimensions'", "dimensions"),
        ({"dimensions": 1537}, 400, "Invalid value for 'dimensions' = 1537. Must be less than or equal to 1536.",
         "dimensions"),
        ({"model": "text-embedding-ada-002", "dimensions": 8}, 400,
         "This model does not support specifying dimensions.", None),
        ({"user": 1}, 400, "Invalid type for 'user'", "user"),
    ],
)
def test_embeddings_validation_rejects(http, body, status, message_start, param):
    error = error_of(embed(http, **body), status)
    assert error["message"].startswith(message_start)
    assert (error["type"], error["param"]) == ("invalid_request_error", param)


def test_embeddings_auth_and_json(http, base_url):
    anonymous = httpx.post(f"{base_url}/v1/embeddings", json={"model": EMBED, "input": "x"})
    assert error_of(anonymous, 401)["message"].startswith("You didn't provide an API key")
    wrong = http.post("/v1/embeddings", json={"model": EMBED, "input": "x"}, headers={"Authorization": "Bearer sk-no"})
    assert error_of(wrong, 401)["code"] == "invalid_api_key"
    not_json = http.post("/v1/embeddings", content=b"{nope", headers={"Content-Type": "application/json"})
    assert "could not parse the JSON body" in error_of(not_json, 400)["message"]


def test_embedding_model_is_not_a_chat_model(http):
    error = error_of(chat(http, model=EMBED), 404)
    assert error["message"].startswith("This is not a chat model and thus not supported in the v1/chat/completions")
    assert (error["param"], error["code"]) == ("model", None)


def test_configured_embedding_model_and_embedding_faults(http):
    with ServerThread(make_app(None, ["my-embedding-model"])) as url:
        response = httpx.post(f"{url}/v1/embeddings", json={"model": "my-embedding-model", "input": "x"})
        assert response.json()["model"] == "my-embedding-model"
    assert error_of(embed(http, model="fault-500"), 500)["type"] == "server_error"
    assert embed(http, model="fault-429").headers["Retry-After"] == "7"
    assert embed(http, model="fault-502-html").status_code == 502
    assert embed(http, model="fault-500", input="").status_code == 400  # validation first
    with pytest.raises(httpx.RemoteProtocolError):
        embed(http, model="fault-cut")
    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1/embeddings", json={"model": "fault-hang", "input": "x"}, timeout=0.3)
    assert error_of(embed(http, model="sse-torture"), 403)["message"].startswith("You are not allowed")


# ----------------------------------------------------------------- command line


def test_cli_prints_ready_and_serves():
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.upstreams.openai_compat", "--port", "0", "--models", "a,b"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        word, port = process.stdout.readline().split()
        assert word == "READY"
        ids = [m["id"] for m in httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"]]
        assert ids[:2] == ["a", "b"]
    finally:
        process.terminate()
        rest, _ = process.communicate(timeout=5)
    assert rest == ""
    assert process.returncode == 0
