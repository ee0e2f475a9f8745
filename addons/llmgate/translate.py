"""How one request travels: the upstream body and URL, and how answers come back.

Same wire format on both sides: the body passes through untouched but for the
model name. Otherwise: client format -> canonical -> provider format, and back
through the canonical model for responses, streams and errors.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable

from converters import canonical as cn
from converters import anthropic, gemini, openai_chat, responses
from converters.pipeline import Converting
from llmgate.errors import GatewayError
from llmgate.providers.base import ProviderKind
from llmgate.relay import StreamTransform
from llmgate.settings import ProviderSettings

log = logging.getLogger("llmgate")

PASS_ON_ERROR = ("retry-after", "x-request-id")


@dataclass(slots=True)
class Plan:
    url: str
    body: bytes
    accept: str
    transform: Callable[[], StreamTransform]  # for a streamed answer
    response: Callable[[bytes], bytes]  # a 2xx upstream body -> the client's body
    error: Callable[[int, str, Any, bytes], GatewayError]  # (status, reason, headers, body) -> error


def plan_openai_client(kind: ProviderKind, p: ProviderSettings, upstream_model: str, client_model: str,
                       data: dict[str, Any], raw: bytes, stream: bool) -> Plan:
    """An OpenAI chat request from the client, to a provider of any wire format."""
    if kind.wire == "openai_chat":
        return Plan(
            url=kind.chat_url(p.base_url, upstream_model, stream),
            body=openai_chat.with_model(data, raw, upstream_model),
            accept="text/event-stream" if stream else "application/json",
            transform=lambda: openai_chat.StreamRelabel(client_model),
            response=lambda body: openai_chat.rename_model(body, client_model),
            error=lambda status, reason, headers, body: openai_error(p, status, reason, headers, body),
        )
    fmt = UPSTREAM_FORMATS.get(kind.wire)
    if fmt is None:
        raise GatewayError(500, f"No converter from OpenAI chat to {kind.wire}.", code="internal_error")
    try:
        req = openai_chat.decode_request(data)
        req.model = upstream_model
        body = openai_chat.dumps(fmt.encode_request(req))
    except cn.ConversionError as e:
        raise GatewayError(400, str(e), code="unsupported_for_provider", param=e.param) from None
    if req.dropped:
        log.debug("provider %s cannot honour %s; dropped", p.id, ", ".join(req.dropped))

    def response(upstream_body: bytes) -> bytes:
        r = fmt.decode_response(json.loads(upstream_body))
        if r.finish == "error":
            raise GatewayError(502, f"Upstream '{p.id}' stopped the response: {r.finish_detail}.",
                               code="upstream_error")
        return openai_chat.dumps(openai_chat.encode_response(r, client_model))

    return Plan(
        url=kind.chat_url(p.base_url, upstream_model, stream),
        body=body,
        accept="text/event-stream" if stream else "application/json",
        transform=lambda: Converting(fmt.StreamDecoder(), openai_chat.StreamEncoder(client_model, req.include_usage)),
        response=response,
        error=lambda status, reason, headers, b: fmt.error(p, status, reason, headers, b),
    )


def _scrub(p: ProviderSettings, message: str) -> str:
    if p.api_key and len(p.api_key) >= 8:
        return message.replace(p.api_key, "[redacted]")
    return message


def _passed(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() in PASS_ON_ERROR}


def openai_error(p: ProviderSettings, status: int, reason: str, headers: Any, body: bytes) -> GatewayError:
    """An OpenAI-compatible upstream's own error: same status, its message and code kept."""
    message, code, param = None, None, None
    try:
        err = json.loads(body).get("error")
        if isinstance(err, dict):
            message, code, param = err.get("message"), err.get("code"), err.get("param")
        elif isinstance(err, str):
            message = err
    except (ValueError, AttributeError):
        pass
    if not message:
        text = body[:300].decode("utf-8", "replace").strip() or "(empty body)"
        message = f"Upstream '{p.id}' answered {status} {reason}: {text}"
    return GatewayError(status, _scrub(p, message), code=code if isinstance(code, str) else None,
                        param=param if isinstance(param, str) else None, headers=_passed(headers))


def google_error(p: ProviderSettings, status: int, reason: str, headers: Any, body: bytes) -> GatewayError:
    """A Google-format error. Gemini says 400 API_KEY_INVALID for a bad key: that is a 401 here."""
    message, status_name = gemini.decode_error(status, body)
    if not status_name:
        message = f"Upstream '{p.id}' answered {status} {reason}: {message or '(empty body)'}"
    if "API_KEY_INVALID" in body.decode("utf-8", "replace") or "API key not valid" in message:
        status = 401
    code = (status_name or "").lower() or None
    passed = _passed(headers)
    delay = gemini.retry_delay(body)
    if delay is not None and "retry-after" not in {k.lower() for k in passed}:
        passed["Retry-After"] = str(delay)
    return GatewayError(status, _scrub(p, message), code=code, headers=passed)


def anthropic_error(p: ProviderSettings, status: int, reason: str, headers: Any, body: bytes) -> GatewayError:
    message, kind = anthropic.decode_error(status, body)
    if not kind:
        message = f"Upstream '{p.id}' answered {status} {reason}: {message or '(empty body)'}"
    return GatewayError(status, _scrub(p, message), code=kind, headers=_passed(headers))


@dataclass(frozen=True, slots=True)
class UpstreamFormat:
    """What converting to and from one provider wire format takes."""

    encode_request: Callable[[cn.Request], dict]
    decode_response: Callable[[Any], cn.Response]
    StreamDecoder: Callable[[], Any]
    error: Callable[[ProviderSettings, int, str, Any, bytes], GatewayError]


UPSTREAM_FORMATS = {
    "gemini": UpstreamFormat(gemini.encode_request, gemini.decode_response, gemini.StreamDecoder, google_error),
    "anthropic": UpstreamFormat(anthropic.encode_request, anthropic.decode_response, anthropic.StreamDecoder,
                                anthropic_error),
    "responses": UpstreamFormat(responses.encode_request, responses.decode_response, responses.StreamDecoder,
                                openai_error),
}
