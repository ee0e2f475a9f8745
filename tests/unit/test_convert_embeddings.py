"""Tests for converters/embeddings.py: OpenAI embeddings <-> Gemini embedContent / batchEmbedContents."""

from __future__ import annotations

import array
import base64
import struct

import pytest
from openai import omit
from openai.lib._parsing._embeddings import parse_embedding_response
from openai.types import CreateEmbeddingResponse

from converters import canonical as cn
from converters import embeddings as emb

VALUES = [0.5, -0.25, 1.0, 0.125]  # exact in float32


def gemini_batch(*vectors: list[float]) -> dict:
    return {"embeddings": [{"values": v} for v in vectors]}


# ----------------------------------------------------------------- parse_openai_request


def test_parse_defaults_and_normalized_inputs():
    req = emb.parse_openai_request({"model": "m", "input": "hello"})
    assert req == emb.OpenAIEmbedRequest("m", ["hello"], "float", None, None)
    assert not req.is_tokens
    full = {"model": "m", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 3, "user": "u"}
    assert emb.parse_openai_request(full) == emb.OpenAIEmbedRequest("m", ["a", "b"], "base64", 3, "u")
    tokens = emb.parse_openai_request({"model": "m", "input": [1, 2, 3]})
    assert (tokens.inputs, tokens.is_tokens) == ([[1, 2, 3]], True)
    assert emb.parse_openai_request({"model": "m", "input": [[1], [2, 3]]}).inputs == [[1], [2, 3]]
    nulls = {"model": "m", "input": "x", "encoding_format": None, "dimensions": None, "user": None}
    assert emb.parse_openai_request(nulls).encoding_format == "float"


def test_parse_allows_2048_inputs_and_a_long_token_array():
    assert len(emb.parse_openai_request({"model": "m", "input": ["x"] * 2048}).inputs) == 2048
    assert emb.parse_openai_request({"model": "m", "input": list(range(5000))}).inputs == [list(range(5000))]


@pytest.mark.parametrize(
    ("data", "param", "message_start"),
    [
        ([], None, "The request body must be a JSON object."),
        ({"input": "x"}, "model", "Missing required parameter: 'model'."),
        ({"model": "", "input": "x"}, "model", "Invalid 'model'"),
        ({"model": 3, "input": "x"}, "model", "Invalid 'model'"),
        ({"model": "m"}, "input", "Missing required parameter: 'input'."),
        ({"model": "m", "input": ""}, "input", "'$.input' is invalid."),
        ({"model": "m", "input": ["a", ""]}, "input", "'$.input' is invalid."),
        ({"model": "m", "input": ["a", 1]}, "input", "'$.input' is invalid."),
        ({"model": "m", "input": [[1], []]}, "input", "'$.input' is invalid."),
        ({"model": "m", "input": [1, -1]}, "input", "'$.input' is invalid."),
        ({"model": "m", "input": [True]}, "input", "'$.input' is invalid."),
        ({"model": "m", "input": []}, "input", "Invalid 'input': empty array."),
        ({"model": "m", "input": 7}, "input", "Invalid type for 'input'"),
        ({"model": "m", "input": ["x"] * 2049}, "input", "Invalid 'input': array too long."),
        ({"model": "m", "input": "x", "encoding_format": "binary"}, "encoding_format", "Invalid value: 'binary'."),
        ({"model": "m", "input": "x", "encoding_format": ""}, "encoding_format", "Invalid value: ''."),
        ({"model": "m", "input": "x", "dimensions": 0}, "dimensions", "Invalid 'dimensions'"),
        ({"model": "m", "input": "x", "dimensions": "8"}, "dimensions", "Invalid 'dimensions'"),
        ({"model": "m", "input": "x", "dimensions": True}, "dimensions", "Invalid 'dimensions'"),
        ({"model": "m", "input": "x", "user": 5}, "user", "Invalid type for 'user'"),
        ({"model": "m", "input": "x", "stream": True}, "stream", "Unrecognized request argument supplied: stream"),
    ],
)
def test_parse_rejects(data, param, message_start):
    with pytest.raises(cn.ConversionError) as e:
        emb.parse_openai_request(data)
    assert e.value.param == param
    assert str(e.value).startswith(message_start)


# ----------------------------------------------------------------- OpenAI client -> Gemini backend


def test_openai_to_gemini_batch_body():
    req = emb.parse_openai_request({"model": "alias", "input": ["a", "b"], "dimensions": 4, "user": "u"})
    assert emb.openai_to_gemini(req, "gemini-embedding-001") == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 4},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 4},
    ]}
    single = emb.openai_to_gemini(emb.parse_openai_request({"model": "m", "input": "x"}), "models/text-embedding-004")
    assert single == {"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "x"}]}}]}


@pytest.mark.parametrize("tokens", [[1, 2, 3], [[1], [2]]])
def test_openai_to_gemini_rejects_token_arrays(tokens):
    req = emb.parse_openai_request({"model": "m", "input": tokens})
    with pytest.raises(cn.ConversionError) as e:
        emb.openai_to_gemini(req, "gemini-embedding-001")
    assert e.value.param == "input"


def test_gemini_to_openai_response_float():
    texts = ["hello", "hi", "a longer text!"]
    body = emb.gemini_to_openai_response(gemini_batch(VALUES, [1, 2], [0.1]), "alias", "float", texts)
    assert body == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": VALUES},
            {"object": "embedding", "index": 1, "embedding": [1.0, 2.0]},
            {"object": "embedding", "index": 2, "embedding": [0.1]},
        ],
        "model": "alias",
        # ceil(chars / 4) per input: 2 + 1 + 4
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    assert all(isinstance(v, float) for v in body["data"][1]["embedding"])


def test_gemini_to_openai_response_base64_decodes_like_the_openai_sdk():
    body = emb.gemini_to_openai_response(gemini_batch(VALUES, [0.1, 0.2]), "m", "base64", ["a", "b"])
    encoded = [d["embedding"] for d in body["data"]]
    assert all(isinstance(e, str) for e in encoded)
    assert base64.b64decode(encoded[0]) == struct.pack("<4f", *VALUES)  # little-endian float32
    # the SDK's own decoder on a response built as the SDK builds it (unvalidated), when the
    # caller left encoding_format to the SDK
    decoded = parse_embedding_response(CreateEmbeddingResponse.construct(**body), encoding_format=omit)
    assert decoded.data[0].embedding == VALUES
    assert decoded.data[1].embedding == pytest.approx([0.1, 0.2], rel=1e-7)
    assert array.array("f", base64.b64decode(encoded[1])).tolist() == decoded.data[1].embedding
    assert decoded.usage.prompt_tokens == 2


@pytest.mark.parametrize(
    "body",
    [
        None,
        {},
        {"embeddings": {}},
        {"embeddings": [{"values": [1.0]}]},  # one short
        {"embeddings": [{"values": [1.0]}, {"value": [1.0]}]},
        {"embeddings": [{"values": [1.0]}, {"values": ["1"]}]},
        {"embeddings": [{"values": [1.0]}, {"values": [True]}]},
        {"embeddings": [{"values": [1.0]}, [1.0]]},
    ],
)
def test_gemini_to_openai_response_rejects_malformed(body):
    with pytest.raises(ValueError):
        emb.gemini_to_openai_response(body, "m", "float", ["a", "b"])


def test_openai_client_round_trip_through_gemini_shapes():
    req = emb.parse_openai_request({"model": "m", "input": ["x", "y"], "encoding_format": "base64"})
    sent = emb.openai_to_gemini(req, "gemini-embedding-001")
    texts = [r["content"]["parts"][0]["text"] for r in sent["requests"]]
    answer = emb.gemini_to_openai_response(gemini_batch([1.0], [2.0]), req.model, req.encoding_format, texts)
    back = emb.openai_to_gemini_response(answer, batch=True)
    assert back == gemini_batch([1.0], [2.0])


# ----------------------------------------------------------------- Gemini client -> OpenAI backend


def test_embed_content_to_openai():
    data = {"content": {"role": "user", "parts": [{"text": "line one"}, {"text": "line two"}]},
            "taskType": "RETRIEVAL_DOCUMENT", "title": "dropped", "outputDimensionality": 256}
    assert emb.gemini_to_openai_request(data, "text-embedding-3-small", batch=False) == {
        "model": "text-embedding-3-small", "input": "line one\nline two", "encoding_format": "float", "dimensions": 256}
    plain = emb.gemini_to_openai_request({"content": {"parts": [{"text": "x"}]}}, "m", batch=False)
    assert plain == {"model": "m", "input": "x", "encoding_format": "float"}


def test_batch_embed_contents_to_openai():
    data = {"requests": [
        {"model": "models/g", "content": {"parts": [{"text": "a"}]}, "output_dimensionality": 8},
        {"model": "models/g", "content": {"parts": [{"text": "b"}, {"text": "c"}]}, "taskType": "CLUSTERING",
         "outputDimensionality": 8},
    ]}
    assert emb.gemini_to_openai_request(data, "m", batch=True) == {
        "model": "m", "input": ["a", "b\nc"], "encoding_format": "float", "dimensions": 8}


@pytest.mark.parametrize(
    ("data", "batch", "param"),
    [
        ("text", False, None),
        ({}, False, "content"),
        ({"content": {"parts": []}}, False, "content"),
        ({"content": {"parts": [{"text": ""}]}}, False, "content"),
        ({"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "AA=="}}]}}, False,
         "content.parts[0]"),
        ({"content": {"parts": [{"text": "x", "thought": True}]}}, False, "content.parts[0]"),
        ({"content": {"parts": [{"text": "x"}]}, "outputDimensionality": 0}, False, "outputDimensionality"),
        ({}, True, "requests"),
        ({"requests": []}, True, "requests"),
        ({"requests": ["x"]}, True, "requests[0]"),
        ({"requests": [{"content": {"parts": [{"text": "a"}]}}, {"content": {"parts": [{"fileData": {}}]}}]}, True,
         "requests[1].content.parts[0]"),
        ({"requests": [{"content": {"parts": [{"text": "a"}]}, "outputDimensionality": 4},
                       {"content": {"parts": [{"text": "b"}]}, "outputDimensionality": 8}]}, True,
         "requests.outputDimensionality"),
    ],
)
def test_gemini_to_openai_request_rejects(data, batch, param):
    with pytest.raises(cn.ConversionError) as e:
        emb.gemini_to_openai_request(data, "m", batch=batch)
    assert e.value.param == param


def test_openai_to_gemini_response_orders_by_index():
    body = {"object": "list", "model": "m", "data": [
        {"object": "embedding", "index": 2, "embedding": [3.0]},
        {"object": "embedding", "index": 0, "embedding": [1.0]},
        {"object": "embedding", "index": 1, "embedding": [2, 2.5]},
    ]}
    assert emb.openai_to_gemini_response(body, batch=True) == gemini_batch([1.0], [2.0, 2.5], [3.0])


def test_openai_to_gemini_response_accepts_base64():
    encoded = base64.b64encode(struct.pack("<4f", *VALUES)).decode()
    body = {"data": [{"object": "embedding", "index": 0, "embedding": encoded}]}
    assert emb.openai_to_gemini_response(body, batch=False) == {"embedding": {"values": VALUES}}
    assert emb.decode_base64(emb.encode_base64([0.1]))[0] == pytest.approx(0.1, rel=1e-7)


@pytest.mark.parametrize(
    ("body", "batch"),
    [
        (None, True),
        ({"data": {}}, True),
        ({"data": [{"embedding": [1.0]}]}, True),  # no index
        ({"data": [{"index": 0, "embedding": None}]}, True),
        ({"data": [{"index": 0, "embedding": "not base64!"}]}, True),
        ({"data": [{"index": 0, "embedding": "AAAAAAA="}]}, True),  # 5 bytes: no whole float32
        ({"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [2.0]}]}, False),
        ({"data": []}, False),
    ],
)
def test_openai_to_gemini_response_rejects_malformed(body, batch):
    with pytest.raises(ValueError):
        emb.openai_to_gemini_response(body, batch=batch)


def test_gemini_client_round_trip_through_openai_shapes():
    sent = emb.gemini_to_openai_request(
        {"requests": [{"model": "models/g", "content": {"parts": [{"text": "a"}]}}]}, "m", batch=True)
    req = emb.parse_openai_request(sent)  # what the converter sends is a valid OpenAI request
    assert req.inputs == ["a"]
    openai_body = {"object": "list", "model": "m", "data": [
        {"object": "embedding", "index": 0, "embedding": base64.b64encode(struct.pack("<1f", 0.5)).decode()}]}
    assert emb.openai_to_gemini_response(openai_body, batch=True) == gemini_batch([0.5])
