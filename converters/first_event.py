"""A streamed answer's first event: is it an error the provider sent inside a 200? (pure, no I/O)

Providers answer 200 and then fail in the stream: Anthropic's `event: error` (overloaded_error,
rate_limit_error, api_error), an OpenAI-compatible first chunk `{"error": ...}` (OpenRouter, SGLang;
vLLM's `{"object": "error", ...}`), a Gemini or Code
Assist error object (RESOURCE_EXHAUSTED), a Responses `response.failed` or `error` event, a Kiro
exception frame, a CodeGeeX `event: error`. When that is the first event, nothing has reached the
client yet, so the gateway can treat it as the HTTP error it stands for and try another member.

`FirstEvent(wire).feed(chunk)` takes the stream's bytes as read and answers None (no event yet,
or only keepalives and preambles that carry no content: SSE comments, Anthropic `ping` and
`message_start`, Responses `response.created` / `response.in_progress`, empty data; an error may
still follow them, as Anthropic's overloaded_error and the Codex backend's usage limit do), True
(the first real event is not an error, or cannot be read: the relay's decoder judges it), or a `StreamStartError`: the
HTTP status the same error has when answered before a stream, and the error in the body shape
the format's error mapping reads (llmgate/request_path/wire.py), so it is classified, cooled down
and shown exactly like that HTTP answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.eventstream import EventStreamBuffer

from converters import jsonio, kiro
from converters.sse import Event, SSEParser


@dataclass(frozen=True, slots=True)
class StreamStartError:
    status: int  # what the same error is as an HTTP answer
    body: bytes  # the error in the format's error-body shape


Verdict = StreamStartError | bool | None

# Anthropic's error types -> the HTTP status its documentation gives them
ANTHROPIC_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
                    "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                    "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529}
# google.rpc.Code names -> HTTP, as Google's own HTTP mapping has them
GOOGLE_STATUS = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "UNAUTHENTICATED": 401,
                 "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ABORTED": 409, "ALREADY_EXISTS": 409,
                 "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "DATA_LOSS": 500, "UNKNOWN": 500, "INTERNAL": 500,
                 "NOT_IMPLEMENTED": 501, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504}
# OpenAI-style error codes and types (chat chunks, Responses events) -> HTTP; unknown ones are 502
OPENAI_STATUS = {"invalid_request_error": 400, "invalid_prompt": 400, "context_length_exceeded": 400,
                 "authentication_error": 401, "invalid_api_key": 401, "permission_error": 403,
                 "not_found_error": 404, "rate_limit_exceeded": 429, "rate_limit_error": 429, "insufficient_quota": 429,
                 "server_error": 500, "internal_error": 500, "api_error": 500, "overloaded": 503,
                 "service_unavailable": 503, "overloaded_error": 529, "timeout_error": 504}


def _json(data: str | None) -> Any:
    try:
        return jsonio.loads(data) if data else None
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _http_status(value: Any) -> int | None:
    """An error's own numeric code, when it is an HTTP error status (429, "503")."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599 else None


def _openai_status(err: dict[str, Any]) -> int:
    for key in ("status", "code"):
        if (s := _http_status(err.get(key))) is not None:
            return s
    for key in ("code", "type"):
        if isinstance(err.get(key), str) and err[key] in OPENAI_STATUS:
            return OPENAI_STATUS[err[key]]
    return 502


def _openai_error(err: Any) -> StreamStartError:
    err = err if isinstance(err, dict) else {"message": str(err)}
    return StreamStartError(_openai_status(err), json.dumps({"error": err}).encode())


ANTHROPIC_PREAMBLE = ("ping", "message_start")
RESPONSES_PREAMBLE = ("response.created", "response.in_progress")


def anthropic_event(ev: Event) -> Verdict:
    if ev.event not in (None, "error", *ANTHROPIC_PREAMBLE):
        return True  # named as no error: not parsed here (the relay does)
    body = _json(ev.data)
    if not isinstance(body, dict):
        return None if ev.data is None else True
    kind = body.get("type") if isinstance(body.get("type"), str) else ev.event
    if kind in ANTHROPIC_PREAMBLE:
        return None
    if kind != "error":
        return True
    etype = _dict(body.get("error")).get("type")
    status = ANTHROPIC_STATUS.get(etype, 502) if isinstance(etype, str) else 502
    return StreamStartError(status, ev.data.encode() if ev.data else b"")


def openai_chat_event(ev: Event) -> Verdict:
    if not (ev.data or "").strip():
        return None
    body = _json(ev.data)
    if isinstance(body, dict) and body.get("error"):
        return _openai_error(body["error"])
    if isinstance(body, dict) and body.get("object") == "error":  # vLLM's shape
        return _openai_error({k: v for k, v in body.items() if k != "object"})
    return True


def gemini_event(ev: Event) -> Verdict:
    if not (ev.data or "").strip():
        return None
    body = _json(ev.data)
    if isinstance(body, dict) and "error" not in body and isinstance(body.get("response"), dict):
        body = body["response"]  # Code Assist's envelope
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return True
    name = err.get("status")
    status = _http_status(err.get("code")) or (GOOGLE_STATUS.get(name, 502) if isinstance(name, str) else 502)
    return StreamStartError(status, json.dumps({"error": err}).encode())


def responses_event(ev: Event) -> Verdict:
    if ev.event not in (None, "error", "response.failed", *RESPONSES_PREAMBLE):
        return True  # named as no error: not parsed here (the relay does)
    body = _json(ev.data)
    if not isinstance(body, dict):
        return None if not (ev.data or "").strip() else True
    kind = body.get("type") if isinstance(body.get("type"), str) else ev.event
    if kind in RESPONSES_PREAMBLE:
        return None
    if kind == "response.failed":
        failed = _dict(body.get("response")).get("error")
        return _openai_error(failed or {"message": "The response failed.", "code": "server_error"})
    if kind == "error":
        inner = body.get("error")
        return _openai_error(inner if isinstance(inner, dict) else
                             {k: body[k] for k in ("message", "code", "param") if k in body})
    return True


def codegeex_event(ev: Event) -> Verdict:
    if ev.event is None and not (ev.data or "").strip():
        return None
    if ev.event != "error":
        return True
    body = _json(ev.data)
    err = body if isinstance(body, dict) else {"msg": (ev.data or "").strip() or "CodeGeeX sent an error event."}
    return StreamStartError(_http_status(err.get("code")) or 502, json.dumps(err).encode())


SSE_FORMATS: dict[str, Callable[[Event], Verdict]] = {
    "anthropic": anthropic_event, "openai_chat": openai_chat_event, "gemini": gemini_event,
    "code_assist": gemini_event, "responses": responses_event, "codegeex": codegeex_event,
}


class FirstEvent:
    """Feed a stream's bytes until it answers (not None); then drop it."""

    def __init__(self, wire: str):
        self._kiro = EventStreamBuffer() if wire == "kiro" else None
        self._sse = SSEParser() if self._kiro is None else None
        self._classify = SSE_FORMATS.get(wire)

    def feed(self, chunk: bytes) -> Verdict:
        if self._kiro is not None:
            return self._kiro_frames(chunk)
        if self._sse is None or self._classify is None:
            return True  # a format with nothing to check
        try:
            events = self._sse.feed(chunk)
        except ValueError:  # an event too large: not an error event; the relay reports it
            return True
        for ev in events:
            if not ev.is_comment_only and (verdict := self._classify(ev)) is not None:
                return verdict
        return None

    def _kiro_frames(self, chunk: bytes) -> Verdict:
        assert self._kiro is not None
        self._kiro.add_data(chunk)
        try:
            msg = next(self._kiro, None)
        except Exception:  # noqa: BLE001 - a corrupt frame: the relay's decoder says so
            return True
        if msg is None:
            return None
        kind = msg.headers.get(":message-type")
        if kind not in ("exception", "error"):
            return True
        etype = msg.headers.get(":exception-type") or msg.headers.get(":error-code") or "UnknownError"
        payload = _json(msg.payload.decode("utf-8", "replace")) if msg.payload else None
        payload = payload if isinstance(payload, dict) else {}
        message = payload.get("message") or payload.get("Message") or msg.headers.get(":error-message") or ""
        reason = payload.get("reason") if isinstance(payload.get("reason"), str) else None
        _, status = kiro.classify(etype, reason)
        body = {"__type": etype, "message": message, **({"reason": reason} if reason else {})}
        return StreamStartError(status, json.dumps(body).encode())
