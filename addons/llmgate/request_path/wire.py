"""How one request travels: the upstream body and URL, and how answers come back.

Same wire format on both sides: the body passes through untouched but for the
model name. Otherwise: client format -> canonical -> provider format, and back
through the canonical model for responses, streams and errors.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from converters import anthropic, call_ids, codegeex, gemini, jsonio, kiro, openai_chat, responses, thinking
from converters import canonical as cn
from converters.pipeline import Converting
from llmgate.errors import GatewayError
from llmgate.providers.base import ProviderKind
from llmgate.request_path.client_apis import ClientApi
from llmgate.request_path.relay import StreamTransform
from llmgate.settings import ProviderSettings

log = logging.getLogger("llmgate")

PASS_ON_ERROR = ("retry-after", "x-request-id")
DROPPED_TOOLS = b"x-llmgate-dropped-tools"  # hosted tools the provider has no equivalent of


@dataclass(slots=True)
class Plan:
    url: str
    body: bytes
    accept: str
    transform: Callable[[], StreamTransform]  # for a streamed answer
    response: Callable[[bytes], bytes]  # a 2xx upstream body -> the client's body
    error: Callable[[int, str, Any, bytes], GatewayError]  # (status, reason, headers, body) -> error
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # for the client's answer


class ReasoningMemory:
    """Signed thinking an OpenAI chat client cannot carry, kept by the tool call it preceded.

    Anthropic refuses a thinking-enabled tool loop whose assistant turn lost its signed
    thinking block, and Responses upstreams want their encrypted reasoning back; an
    OpenAI chat message has no field for either. The gateway remembers them under the
    first tool call's id (which the client does send back) and puts them back in the
    next request. Bounded, per process: after a restart the converters fall back to
    their documented behaviour (Anthropic: thinking off for that tool loop).
    (Gemini's signatures need none of this: they ride in the ids, converters/call_ids.py.)"""

    def __init__(self, size: int = 2000):
        self._size = size
        self._blocks: OrderedDict[str, list[cn.Block]] = OrderedDict()

    @staticmethod
    def _kept(b: cn.Block) -> bool:
        return isinstance(b, cn.RedactedThinking) or (
            isinstance(b, cn.Thinking) and bool(b.signature or b.encrypted_content))

    def remember(self, blocks: list[cn.Block]) -> None:
        thinking = [b for b in blocks if self._kept(b)]
        call = next((b for b in blocks if isinstance(b, cn.ToolCall)), None)
        if thinking and call is not None:
            self._blocks[call.id] = thinking
            self._blocks.move_to_end(call.id)
            while len(self._blocks) > self._size:
                self._blocks.popitem(last=False)

    def restore(self, req: cn.Request) -> None:
        for m in req.messages:
            if m.role != "assistant" or any(self._kept(b) for b in m.content):
                continue
            call = next((b for b in m.content if isinstance(b, cn.ToolCall)), None)
            kept = self._blocks.get(call.id) if call is not None else None
            if kept:  # the client's unsigned reasoning_content gives way to the signed original
                m.content[:] = kept + [b for b in m.content if not isinstance(b, cn.Thinking)]


def fresh_call_ids(blocks: list[cn.Block], taken: set[str]) -> None:
    """Tool calls whose id the conversation already holds get a new one (a signature it carries
    kept): some OpenAI-compatible servers number calls per answer (call_0, call_1, ...), and a
    client that keys calls by id (Claude Code) then drops a later call as a repeat."""
    for b in blocks:
        if isinstance(b, cn.ToolCall):
            if b.id in taken:
                b.id = call_ids.new_call_id(call_ids.signature_of(b.id))
            taken.add(b.id)


def _call_ids(req: cn.Request) -> set[str]:
    return {b.id for m in req.messages for b in m.content if isinstance(b, cn.ToolCall)}


class _Remembering:
    """A stream decoder that also hands each finished answer's blocks to the memory (and gives
    its tool calls ids the conversation does not hold yet)."""

    def __init__(self, decoder: Any, memory: ReasoningMemory, taken: set[str]):
        self._decoder = decoder
        self._memory = memory
        self._taken = taken
        self._blocks: dict[int, cn.Block] = {}

    def feed(self, chunk: bytes) -> list[cn.Event]:
        return self._watch(self._decoder.feed(chunk))

    def finish(self) -> list[cn.Event]:
        return self._watch(self._decoder.finish())

    def _watch(self, events: list[cn.Event]) -> list[cn.Event]:
        for e in events:
            if isinstance(e, cn.BlockStart) and isinstance(e.block, (cn.Thinking, cn.RedactedThinking, cn.ToolCall)):
                b = e.block
                fresh_call_ids([b], self._taken)
                self._blocks[e.index] = (cn.Thinking(b.text, b.signature, b.encrypted_content)
                                         if isinstance(b, cn.Thinking) else b)
            elif isinstance(e, cn.ThinkingDelta) and isinstance(t := self._blocks.get(e.index), cn.Thinking):
                t.text += e.text
            elif isinstance(e, cn.SignatureDelta) and isinstance(t := self._blocks.get(e.index), cn.Thinking):
                t.signature = (t.signature or "") + e.signature
            elif (isinstance(e, cn.BlockStop) and e.encrypted_content
                  and isinstance(t := self._blocks.get(e.index), cn.Thinking)):
                t.encrypted_content = e.encrypted_content
            elif isinstance(e, cn.Finish):
                self._memory.remember([self._blocks[i] for i in sorted(self._blocks)])
        return events


def serving_kind(kind: ProviderKind, info: Callable[[ProviderSettings, str], Any], p: ProviderSettings,
                 upstream_model: str, client_wire: str) -> ProviderKind:
    """The kind as it serves this model: most kinds speak one wire format; a kind with for_model
    (Copilot) picks it per model from what its models endpoint said (info: the catalog's)."""
    if kind.for_model is None:
        return kind
    return kind.for_model(upstream_model, info(p, upstream_model), client_wire)


def plan(client: ClientApi, kind: ProviderKind, p: ProviderSettings, upstream_model: str, client_model: str,
         data: dict[str, Any], raw: bytes, stream: bool, memory: ReasoningMemory, sse: bool = True) -> Plan:
    """A request in the client's API, to a provider of any wire format.

    `sse` is for Gemini clients: False when they asked for streamGenerateContent without alt=sse."""
    url = kind.chat_url(p.base_url, upstream_model, stream)
    accept = "text/event-stream" if stream else "application/json"
    fmt = UPSTREAM_FORMATS[kind.wire]
    error = fmt.error

    if kind.wire == client.wire:  # passthrough: only the model name changes, both ways
        return Plan(
            url=url, body=client.with_model(data, raw, upstream_model), accept=accept,
            transform=lambda: client.relabel(client_model, sse),
            response=lambda body: client.rename(body, client_model),
            error=lambda status, reason, headers, b: error(p, status, reason, headers, b),
        )
    try:
        req = client.decode_request(data, client_model)
        req.model, req.stream = upstream_model, stream  # Gemini clients say "stream" in the URL
        memory.restore(req)
        req.reasoning = thinking.fit(req.reasoning, _thinking_limits(kind.wire, upstream_model, p))
        body = openai_chat.dumps(fmt.encode_request(req))
    except cn.ConversionError as e:
        raise GatewayError(400, str(e), code="unsupported_for_provider", param=e.param) from None
    if req.dropped:
        log.debug("provider %s cannot honour %s; dropped", p.id, ", ".join(req.dropped))
    headers = []
    if req.dropped_tools:
        log.debug("provider %s has no %s tool; dropped", p.id, ", ".join(req.dropped_tools))
        headers.append((DROPPED_TOOLS, ", ".join(req.dropped_tools).encode()))

    def response(upstream_body: bytes) -> bytes:
        r = fmt.decode_response(upstream_body, req) if fmt.raw else fmt.decode_response(jsonio.loads(upstream_body))
        fresh_call_ids(r.content, _call_ids(req))
        memory.remember(r.content)
        if r.finish == "error" and client.wire in ("openai_chat", "anthropic"):  # no finish reason says it
            raise GatewayError(502, f"Upstream '{p.id}' stopped the response: {r.finish_detail}.",
                               code="upstream_error")
        return openai_chat.dumps(client.encode_response(r, client_model, req))

    return Plan(
        url=url, body=body, accept=accept,
        transform=lambda: Converting(_Remembering(fmt.StreamDecoder(req) if fmt.raw else fmt.StreamDecoder(), memory,
                                                  _call_ids(req)),
                                     client.stream_encoder(client_model, req, sse)),
        response=response,
        error=lambda status, reason, headers, b: error(p, status, reason, headers, b),
        headers=headers,
    )


def _thinking_limits(wire: str, model: str, p: ProviderSettings) -> thinking.Limits:
    table = {k: v.model_dump() for k, v in p.thinking.items()} if p.thinking else None
    return thinking.override(thinking.limits(wire, model), model, table)


def _scrub(p: ProviderSettings, message: str) -> str:
    if p.api_key and len(p.api_key) >= 8:
        return message.replace(p.api_key, "[redacted]")
    return message


def _native(p: ProviderSettings, shape: str, body: bytes) -> tuple[str, bytes]:
    if p.api_key and len(p.api_key) >= 8:
        body = body.replace(p.api_key.encode(), b"[redacted]")
    return shape, body


def _passed(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() in PASS_ON_ERROR}


def key_refused(p: ProviderSettings, status: int, message: str) -> GatewayError:
    """The provider refused the key configured for it. Not a 401: SDKs would tell the user
    that their own key is wrong. (Subscription accounts refresh and retry before this.)"""
    return GatewayError(502, _scrub(p, f"Provider '{p.id}' refused the credentials configured for it "
                                       f"(upstream {status}: {message}); check them in the gateway's config."),
                        code="provider_auth_failed")


def openai_error(p: ProviderSettings, status: int, reason: str, headers: Any, body: bytes) -> GatewayError:
    """An OpenAI-compatible upstream's own error: same status, its message and code kept."""
    message, code, param, native = None, None, None, None
    try:
        err = jsonio.loads(body).get("error")
        if isinstance(err, dict):
            message, code, param = err.get("message"), err.get("code"), err.get("param")
            native = _native(p, "openai", body)
        elif isinstance(err, str):
            message = err
    except (ValueError, AttributeError):
        pass
    if not message:
        text = body[:300].decode("utf-8", "replace").strip() or "(empty body)"
        message = f"Upstream '{p.id}' answered {status} {reason}: {text}"
    if status == 401 or code == "invalid_api_key":
        return key_refused(p, status, message)
    return GatewayError(status, _scrub(p, message), code=code if isinstance(code, str) else None,
                        param=param if isinstance(param, str) else None, headers=_passed(headers), native=native)


def google_error(p: ProviderSettings, status: int, reason: str, headers: Any, body: bytes) -> GatewayError:
    """A Google-format error. Gemini says 400 API_KEY_INVALID for a bad key."""
    message, status_name = gemini.decode_error(status, body)
    if not status_name:
        message = f"Upstream '{p.id}' answered {status} {reason}: {message or '(empty body)'}"
    native = _native(p, "google", body) if status_name else None
    if status == 401 or "API_KEY_INVALID" in body.decode("utf-8", "replace") or "API key not valid" in message:
        return key_refused(p, status, message)
    code = (status_name or "").lower() or None
    passed = _passed(headers)
    delay = gemini.retry_delay(body)
    if delay is not None and "retry-after" not in {k.lower() for k in passed}:
        passed["Retry-After"] = str(delay)
    return GatewayError(status, _scrub(p, message), code=code, headers=passed, native=native)


def anthropic_error(p: ProviderSettings, status: int, reason: str, headers: Any, body: bytes) -> GatewayError:
    message, kind = anthropic.decode_error(status, body)
    if not kind:
        message = f"Upstream '{p.id}' answered {status} {reason}: {message or '(empty body)'}"
    if status == 401 or kind == "authentication_error":
        return key_refused(p, status, message)
    return GatewayError(status, _scrub(p, message), code=kind, headers=_passed(headers),
                        native=_native(p, "anthropic", body) if kind else None)


def decoded_error(decode: Callable[[int, bytes], tuple[str, str | None]], keep_code: bool = True):
    """An upstream error for formats with no client of their own: (status, body) -> message and
    code by the format's decode_error, status kept, provider key scrubbed."""
    def error(p: ProviderSettings, status: int, reason: str, headers: Any, body: bytes) -> GatewayError:
        message, code = decode(status, body)
        if status == 401:
            return key_refused(p, status, message or reason)
        return GatewayError(status, _scrub(p, f"Upstream '{p.id}' answered {status}: {message or reason}"),
                            code=code if keep_code else None, headers=_passed(headers))
    return error


MACHINE_ID = uuid.uuid5(uuid.NAMESPACE_DNS, "llmgate").hex


@dataclass(frozen=True, slots=True)
class UpstreamFormat:
    """What converting to and from one provider wire format takes."""

    encode_request: Callable[[cn.Request], dict]
    decode_response: Callable[..., cn.Response]  # (JSON body) -> answer; raw: (bytes, request)
    StreamDecoder: Callable[..., Any]  # () -> decoder; raw: (request) -> decoder
    error: Callable[[ProviderSettings, int, str, Any, bytes], GatewayError]
    raw: bool = False  # a binary answer (Kiro's AWS event stream), decoded with the request at hand


UPSTREAM_FORMATS = {
    "openai_chat": UpstreamFormat(openai_chat.encode_request, openai_chat.decode_response, openai_chat.StreamDecoder,
                                  openai_error),
    "gemini": UpstreamFormat(gemini.encode_request, gemini.decode_response, gemini.StreamDecoder, google_error),
    # Code Assist: Gemini's format in an envelope the provider's account adds (and the decoders unwrap)
    "code_assist": UpstreamFormat(lambda req: gemini.encode_request(req, replay_thinking=True),
                                  gemini.decode_response, gemini.StreamDecoder, google_error),
    "anthropic": UpstreamFormat(anthropic.encode_request, anthropic.decode_response, anthropic.StreamDecoder,
                                anthropic_error),
    # CodeGeeX answers SSE whatever was asked: a non-streamed answer is its whole stream, decoded
    "codegeex": UpstreamFormat(lambda req: codegeex.encode_request(req, str(uuid.uuid4()), MACHINE_ID),
                               lambda body, req: codegeex.decode_response(body, req.model),
                               lambda req: codegeex.StreamDecoder(req.model),
                               decoded_error(codegeex.decode_error, keep_code=False), raw=True),
    # Kiro answers an AWS event stream whatever was asked; long tool names are shortened and mapped back
    "kiro": UpstreamFormat(lambda req: kiro.encode_request(req, str(uuid.uuid4()), None),
                           lambda body, req: kiro.decode_response(body, kiro.tool_names(req), req.model),
                           lambda req: kiro.StreamDecoder(names=kiro.tool_names(req), model=req.model),
                           decoded_error(kiro.decode_error),
                           raw=True),
    "responses": UpstreamFormat(responses.encode_request, responses.decode_response, responses.StreamDecoder,
                                openai_error),
}
