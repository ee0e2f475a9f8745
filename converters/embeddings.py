"""Embeddings: OpenAI POST /v1/embeddings <-> Gemini :embedContent / :batchEmbedContents.

Pure, no I/O. Lossy choices:
  - Gemini reports no token usage for embeddings: OpenAI usage is estimated as
    ceil(characters / 4) per input.
  - Token-array inputs (OpenAI) cannot be sent to Gemini: ConversionError.
  - `user` (OpenAI), `taskType`, `title` and each batch item's `model` (Gemini)
    have no counterpart and are dropped; the text parts of one Gemini content
    are joined with "\\n" into one OpenAI input.
"""

from __future__ import annotations

import base64
import math
import struct
from dataclasses import dataclass
from typing import Any, Literal

from converters import canonical as cn

MAX_INPUTS = 2048  # api.openai.com's limit on input array length
KNOWN_PARAMS = ("model", "input", "encoding_format", "dimensions", "user")
EMPTY_INPUT = (
    "'$.input' is invalid. Please check the API reference:"
    " https://platform.openai.com/docs/api-reference."
)


@dataclass(slots=True)
class OpenAIEmbedRequest:
    model: str
    inputs: list[str] | list[list[int]]  # always a list: "a" -> ["a"], [1, 2] -> [[1, 2]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    @property
    def is_tokens(self) -> bool:
        return bool(self.inputs) and isinstance(self.inputs[0], list)


# --- OpenAI request ----------------------------------------------------------

def parse_openai_request(data: Any) -> OpenAIEmbedRequest:
    """Validate an OpenAI embeddings body as api.openai.com does (unknown params rejected).

    The official openai SDK sends encoding_format="base64" unless told otherwise."""
    if not isinstance(data, dict):
        raise cn.ConversionError("The request body must be a JSON object.")
    for name in data:
        if name not in KNOWN_PARAMS:
            raise cn.ConversionError(f"Unrecognized request argument supplied: {name}", name)
    model = data.get("model")
    if model is None:
        raise cn.ConversionError("Missing required parameter: 'model'.", "model")
    if not isinstance(model, str) or not model:
        raise cn.ConversionError("Invalid 'model': expected a non-empty string.", "model")
    fmt = data.get("encoding_format")
    fmt = "float" if fmt is None else fmt
    if fmt not in ("float", "base64"):
        raise cn.ConversionError(
            f"Invalid value: '{fmt}'. Supported values are: 'float' and 'base64'.", "encoding_format")
    dimensions = data.get("dimensions")
    if dimensions is not None and (not _is_int(dimensions) or dimensions < 1):
        raise cn.ConversionError("Invalid 'dimensions': expected a positive integer.", "dimensions")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise cn.ConversionError("Invalid type for 'user': expected a string.", "user")
    return OpenAIEmbedRequest(model, _inputs(data.get("input")), "base64" if fmt == "base64" else "float",
                              dimensions, user)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_int(t) and t >= 0 for t in value)


def _inputs(value: Any) -> list[str] | list[list[int]]:
    if value is None:
        raise cn.ConversionError("Missing required parameter: 'input'.", "input")
    if isinstance(value, str):
        if not value:
            raise cn.ConversionError(EMPTY_INPUT, "input")
        return [value]
    if not isinstance(value, list):
        raise cn.ConversionError(
            "Invalid type for 'input': expected a string, an array of strings, an array of"
            " integers or an array of arrays of integers.", "input")
    if not value:
        raise cn.ConversionError(
            "Invalid 'input': empty array. Expected an array with minimum length 1,"
            " but got an empty array instead.", "input")
    if _is_tokens(value):
        return [value]
    if len(value) > MAX_INPUTS:
        raise cn.ConversionError(
            f"Invalid 'input': array too long. Expected an array with maximum length"
            f" {MAX_INPUTS}, but got an array with length {len(value)} instead.", "input")
    if all(isinstance(v, str) and v for v in value) or all(_is_tokens(v) for v in value):
        return value
    raise cn.ConversionError(EMPTY_INPUT, "input")


def openai_to_gemini(req: OpenAIEmbedRequest, model: str) -> dict[str, Any]:
    """Body for Gemini POST /v1beta/models/{model}:batchEmbedContents."""
    if req.is_tokens:
        raise cn.ConversionError("Token-array inputs cannot be sent to a Gemini model; send text.", "input")
    extra = {} if req.dimensions is None else {"outputDimensionality": req.dimensions}
    name = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
    return {"requests": [{"model": name, "content": {"parts": [{"text": t}]}, **extra}
                         for t in req.inputs]}


def gemini_to_openai_response(
    body: dict, model: str, encoding_format: str, texts: list[str]
) -> dict[str, Any]:
    """A Gemini batch response as an OpenAI embeddings response; ValueError if malformed.

    base64 is little-endian float32, standard alphabet, as the openai SDK decodes it."""
    items = body.get("embeddings") if isinstance(body, dict) else None
    if not isinstance(items, list) or len(items) != len(texts):
        raise ValueError(f"expected {len(texts)} embeddings from Gemini")
    data = []
    for i, item in enumerate(items):
        values = _floats(item.get("values") if isinstance(item, dict) else None)
        embedding = encode_base64(values) if encoding_format == "base64" else values
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    tokens = sum(math.ceil(len(t) / 4) for t in texts)
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _floats(values: Any) -> list[float]:
    if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ValueError("an embedding must be an array of numbers")
    return [float(v) for v in values]


def encode_base64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def decode_base64(text: str) -> list[float]:
    raw = base64.b64decode(text, validate=True)
    if len(raw) % 4:
        raise ValueError("base64 embedding is not a whole number of float32 values")
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


# --- Gemini request -----------------------------------------------------------

def gemini_to_openai_request(data: Any, model: str, batch: bool) -> dict[str, Any]:
    """An embedContent (batch=False) or batchEmbedContents body as an OpenAI embeddings body."""
    if not isinstance(data, dict):
        raise cn.ConversionError("The request body must be a JSON object.")
    if batch:
        items = data.get("requests")
        if not isinstance(items, list) or not items:
            raise cn.ConversionError("requests must be a non-empty array.", "requests")
        paths = [f"requests[{i}]" for i in range(len(items))]
    else:
        items, paths = [data], [""]
    texts: list[str] = []
    dims: set[int] = set()
    for item, path in zip(items, paths, strict=True):
        if not isinstance(item, dict):
            raise cn.ConversionError("Each request must be an object.", path)
        texts.append(_content_text(item.get("content"), _join(path, "content")))
        dim = item.get("outputDimensionality", item.get("output_dimensionality"))
        if dim is not None:
            if not _is_int(dim) or dim < 1:
                raise cn.ConversionError("outputDimensionality must be a positive integer.",
                                         _join(path, "outputDimensionality"))
            dims.add(dim)
    if len(dims) > 1:
        raise cn.ConversionError("All requests must use the same outputDimensionality.",
                                 "requests.outputDimensionality")
    body: dict[str, Any] = {"model": model, "input": texts if batch else texts[0],
                            "encoding_format": "float"}
    if dims:
        body["dimensions"] = dims.pop()
    return body


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _content_text(content: Any, path: str) -> str:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise cn.ConversionError("content.parts must be a non-empty array.", path)
    texts = []
    for j, part in enumerate(parts):
        if not isinstance(part, dict) or set(part) - {"text"} or not isinstance(part.get("text"), str):
            raise cn.ConversionError("Only text parts can be embedded by this provider.",
                                     f"{path}.parts[{j}]")
        texts.append(part["text"])
    text = "\n".join(texts)
    if not text:
        raise cn.ConversionError("The text to embed must not be empty.", path)
    return text


def openai_to_gemini_response(body: dict, batch: bool) -> dict[str, Any]:
    """An OpenAI embeddings response (float or base64) as Gemini's; ValueError if malformed."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or not all(
            isinstance(d, dict) and _is_int(d.get("index")) for d in data):
        raise ValueError('expected {"data": [{"index", "embedding"}, ...]}')
    vectors = []
    for item in sorted(data, key=lambda d: d["index"]):
        embedding = item.get("embedding")
        if isinstance(embedding, str):
            try:
                vectors.append(decode_base64(embedding))
            except ValueError as e:  # binascii.Error is a ValueError
                raise ValueError(f"bad base64 embedding: {e}") from None
        else:
            vectors.append(_floats(embedding))
    if batch:
        return {"embeddings": [{"values": v} for v in vectors]}
    if len(vectors) != 1:
        raise ValueError(f"expected one embedding, got {len(vectors)}")
    return {"embedding": {"values": vectors[0]}}
