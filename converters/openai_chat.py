"""OpenAI Chat Completions wire format (pure, no I/O).

The models are tolerant: unknown fields are allowed and kept, so a request that
goes to an OpenAI-compatible upstream passes through with only its model name
changed. Validation here is what the gateway itself must know to route and
stream a request; the upstream validates the rest.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from converters.sse import Event, SSEParser, encode, encode_like


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Message(_Open):
    role: str = Field(min_length=1)


class StreamOptions(_Open):
    include_usage: bool | None = None


class ChatRequest(_Open):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None


class RequestError(ValueError):
    """The client's request body is unusable; `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def parse_request(body: bytes) -> tuple[dict[str, Any], ChatRequest]:
    """Decode and validate a chat completion request body.

    Returns the raw JSON object (to forward) and the validated view of it.
    """
    data = parse_json_object(body)
    try:
        req = ChatRequest.model_validate(data)
    except ValidationError as e:
        raise RequestError(*describe_validation_error(e)) from None
    return data, req


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise RequestError("The request body is empty; expected a JSON object.")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"The request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise RequestError("The request body must be a JSON object.")
    return data


def describe_validation_error(e: ValidationError) -> tuple[str, str]:
    err = e.errors()[0]
    param = ".".join(str(p) for p in err["loc"]) or "body"
    if err["type"] == "missing":
        return f"Missing required parameter: '{param}'.", param
    return f"Invalid value for '{param}': {err['msg']}.", param


def dumps(obj: Any) -> bytes:
    """Compact JSON, as OpenAI itself sends it."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def with_model(data: dict[str, Any], body: bytes, model: str) -> bytes:
    """The request body with `model` replaced; the original bytes if unchanged."""
    if data.get("model") == model:
        return body
    return dumps({**data, "model": model})


def rename_model(body: bytes, model: str) -> bytes:
    """A response body (completion or chunk JSON) with the client's model name.

    Bodies that are not JSON objects or carry no model are returned unchanged.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body
    if not isinstance(data, dict) or "model" not in data or data["model"] == model:
        return body
    data["model"] = model
    return dumps(data)


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


def chunk_finished(chunk: dict[str, Any]) -> bool:
    """True if a stream chunk carries a finish_reason on any choice."""
    for choice in chunk.get("choices") or ():
        if isinstance(choice, dict) and choice.get("finish_reason"):
            return True
    return False


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def model_list(models: list[tuple[str, str]]) -> dict:
    """GET /v1/models body from (model id, owner) pairs."""
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 0, "owned_by": owner} for m, owner in models],
    }


class StreamRelabel:
    """OpenAI chat SSE -> the same SSE, with the client's model name in every chunk.

    Events are forwarded as whole events, byte for byte unless the model name
    changes. The end of the stream is checked: a stream that stops before a
    finish_reason or [DONE] ends with an error event, never as a silent stop.
    """

    def __init__(self, model: str):
        self.model = model
        self._parser = SSEParser()
        self.finished = False  # a finish_reason was seen
        self.done = False  # [DONE] was seen
        self.errored = False  # the upstream sent an error event
        self.usage: dict | None = None

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(self._event(ev) for ev in self._parser.feed(chunk))

    def finish(self) -> bytes:
        """Upstream ended cleanly. Returns the remaining bytes for the client."""
        out = b"".join(self._event(ev) for ev in self._parser.close())
        if self.done or self.errored:
            return out
        if self.finished:
            return out + b"data: [DONE]\n\n"
        return out + self.error_event(
            "The upstream stream ended before the response was complete (no finish_reason).",
            "stream_truncated",
        )

    def fail(self, message: str, code: str = "upstream_error") -> bytes:
        """Upstream broke off; a half-received event is dropped."""
        if self.done or self.errored:
            return b""
        return self.error_event(message, code)

    def error_event(self, message: str, code: str) -> bytes:
        self.errored = True
        return encode(dumps(error_body(message, "upstream_error", code)).decode())

    def _event(self, ev: Event) -> bytes:
        if ev.data is None:
            return ev.raw
        if ev.data.strip() == "[DONE]":
            self.done = True
            return ev.raw
        try:
            data = json.loads(ev.data)
        except ValueError:
            return ev.raw
        if not isinstance(data, dict):
            return ev.raw
        if "error" in data:
            self.errored = True
        if chunk_finished(data):
            self.finished = True
        if data.get("usage"):
            self.usage = data["usage"]
        if "model" in data and data["model"] != self.model:
            data["model"] = self.model
            return encode_like(ev, dumps(data).decode())
        return ev.raw
