"""The four APIs clients speak to the gateway, and what answering in each one takes.

Each ClientApi says how its requests are read into the canonical model, how answers
(bodies, streams, errors) are written back in its shape, and how a request passes
through untouched when the provider speaks the same wire format.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from converters import anthropic, gemini, openai_chat, responses
from converters import canonical as cn
from converters.pipeline import StreamEncoder, relabel_body
from llmgate.errors import GatewayError, anthropic_type, google_status
from llmgate.request_path.relay import StreamTransform


@dataclass(frozen=True, slots=True)
class ClientApi:
    name: str
    wire: str  # the converters module speaking it; equal to a ProviderKind.wire means passthrough
    decode_request: Callable[[dict[str, Any], str], cn.Request]  # (body, model) -> canonical
    encode_response: Callable[[cn.Response, str, cn.Request], dict[str, Any]]  # (answer, client model, request)
    stream_encoder: Callable[[str, cn.Request, bool], StreamEncoder]  # (client model, request, sse)
    relabel: Callable[[str, bool], StreamTransform]  # passthrough stream: (client model, sse)
    rename: Callable[[bytes, str], bytes]  # passthrough body: (body, client model)
    with_model: Callable[[dict[str, Any], bytes, str], bytes]  # passthrough request: (data, raw, upstream model)
    error_json: Callable[[GatewayError], dict[str, Any]]
    error_shape: str  # "openai" | "anthropic" | "google": upstream errors of this shape pass as they are
    pass_headers: tuple[str, ...] = ()  # client headers forwarded to a same-format upstream

    def error_body(self, err: GatewayError) -> bytes:
        if err.native is not None and err.native[0] == self.error_shape:
            return err.native[1]
        # "replace": a message may quote a client's lone surrogate ("\ud800" is valid JSON, not UTF-8)
        return json.dumps(self.error_json(err), ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


def _openai_error(err: GatewayError) -> dict[str, Any]:
    return openai_chat.error_body(err.message, err.openai_type, err.code, err.param)


def _anthropic_error(err: GatewayError) -> dict[str, Any]:
    # an Anthropic upstream's own error type survives
    kind = err.code if err.code in anthropic.ERROR_TYPES else anthropic_type(err.status)
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def _google_error(err: GatewayError) -> dict[str, Any]:
    # a Google upstream's own status survives where it fits the HTTP status
    return {"error": {"code": err.status, "message": err.message, "status": google_status(err.status, err.code)}}


def _same_body(data: dict[str, Any], raw: bytes, model: str) -> bytes:
    return raw  # Gemini names the model in the URL, not the body


OPENAI_CHAT = ClientApi(
    name="openai-chat",
    wire="openai_chat",
    decode_request=lambda data, model: openai_chat.decode_request(data),
    encode_response=lambda r, model, req: openai_chat.encode_response(r, model),
    stream_encoder=lambda model, req, sse: openai_chat.StreamEncoder(model, req.include_usage),
    relabel=lambda model, sse: openai_chat.StreamRelabel(model),
    rename=openai_chat.rename_model,
    with_model=openai_chat.with_model,
    error_json=_openai_error,
    error_shape="openai",
)

ANTHROPIC = ClientApi(
    name="anthropic",
    wire="anthropic",
    decode_request=lambda data, model: anthropic.decode_request(data),
    encode_response=lambda r, model, req: anthropic.encode_response(r, model),
    stream_encoder=lambda model, req, sse: anthropic.StreamEncoder(model),
    relabel=lambda model, sse: anthropic.StreamRelabel(model),
    rename=relabel_body,
    with_model=openai_chat.with_model,
    error_json=_anthropic_error,
    error_shape="anthropic",
    pass_headers=("anthropic-beta",),
)

GEMINI = ClientApi(
    name="gemini",
    wire="gemini",
    decode_request=gemini.decode_request,
    encode_response=lambda r, model, req: gemini.encode_response(r, model),
    stream_encoder=lambda model, req, sse: gemini.StreamEncoder(model, sse=sse),
    relabel=gemini.StreamRelabel,
    rename=lambda body, model: relabel_body(body, model, "modelVersion"),
    with_model=_same_body,
    error_json=_google_error,
    error_shape="google",
)

RESPONSES = ClientApi(
    name="openai-responses",
    wire="responses",
    decode_request=lambda data, model: responses.decode_request(data),
    encode_response=lambda r, model, req: responses.encode_response(r, model, req.freeform_tools, req.namespaced),
    stream_encoder=lambda model, req, sse: responses.StreamEncoder(model, req.freeform_tools, req.namespaced),
    relabel=lambda model, sse: responses.StreamRelabel(model),
    rename=relabel_body,
    with_model=openai_chat.with_model,
    error_json=_openai_error,
    error_shape="openai",
)
