"""Contentviews that read like an LLM exchange: one per wire format the gateway speaks.

Bodies are decoded with the gateway's own converters (decode_request / decode_response /
StreamDecoder of each converters/ module), so the view and the gateway agree on a format.
A request shows model, settings, system prompt, messages by role and tools (one line
each); a response or stream shows the assembled message (text, thinking, tool calls with
parsed arguments, finish, usage) and then, for streams, the events one line each.

The view is chosen automatically when the flow's path names the format (client flows and
the provider-side flows of flow_record alike). It never raises: what could not be decoded
is said in a `# ...` line. At most MAX_DECODE bytes of a body are decoded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mitmproxy import http
from mitmproxy.contentviews import Contentview, Metadata

from converters import anthropic, codegeex, gemini, kiro, openai_chat, responses
from converters import canonical as cn
from converters.json_limits import too_deep
from converters.sse import SSEParser
from llmgate.views import llm_render as show

SSE_TYPE = "text/event-stream"
AWS_EVENTSTREAM_TYPE = "application/vnd.amazon.eventstream"
# mitmweb renders in its event loop: bound the work. Measured here: ~25 us per stream event
# (4 MiB of small chunks ~0.6 s), json.loads ~3 ms per MiB.
MAX_STREAM = 4 * 1024 * 1024  # bytes of a stream decoded
MAX_JSON = 16 * 1024 * 1024  # a whole JSON body (requests with images are large)
MAX_EVENT_LINES = 5000
MAX_DEPTH = openai_chat.MAX_DEPTH
FEED_SLICE = 16 * 1024  # the SSE parser scans its whole buffer per line: 11 MB fed whole took 23 s
PRIORITY = 3.0  # above the SSE / AWS views (2.0) and JSON (1): the path says what this is

Decoder = Any  # feed(bytes) -> events, finish() -> events


@dataclass(frozen=True)
class Wire:
    name: str
    request: Callable[[Any, str], cn.Request]  # (parsed body, path) -> canonical
    response: Callable[[Any], cn.Response] | None  # a whole JSON answer; None: always a stream
    stream: Callable[[], Decoder]
    binary: bool = False  # AWS event stream rather than SSE


# ---------------------------------------------------------------- requests without a decoder

def _kiro_result(r: dict) -> cn.ToolResult:
    content = r.get("content") or ()
    texts: list[cn.Text | cn.Image] = [cn.Text(c.get("text", "")) for c in content if isinstance(c, dict)]
    return cn.ToolResult(r.get("toolUseId", "?"), texts, r.get("status") == "error")


def _kiro_user(m: dict) -> list[cn.Block]:
    ctx = m.get("userInputMessageContext") or {}
    out: list[cn.Block] = [_kiro_result(r) for r in ctx.get("toolResults") or () if isinstance(r, dict)]
    out += [cn.Image(f"image/{i.get('format', '?')}", (i.get("source") or {}).get("bytes", ""))
            for i in m.get("images") or () if isinstance(i, dict)]
    return out + [cn.Text(m.get("content", ""))]


def _kiro_request(body: Any, path: str) -> cn.Request:
    """generateAssistantResponse body -> canonical (the gateway only encodes these)."""
    state = body["conversationState"]
    current = state["currentMessage"]["userInputMessage"]
    req = cn.Request(model=current.get("modelId", "?"), messages=[], stream=True)
    for turn in [*(state.get("history") or ()), state["currentMessage"]]:
        if "userInputMessage" in turn:
            req.messages.append(cn.Message("user", _kiro_user(turn["userInputMessage"])))
        elif "assistantResponseMessage" in turn:
            a = turn["assistantResponseMessage"]
            calls = [cn.ToolCall(u.get("toolUseId", "?"), u.get("name", "?"), show.compact(u.get("input")))
                     for u in a.get("toolUses") or () if isinstance(u, dict)]
            req.messages.append(cn.Message("assistant", [cn.Text(a.get("content", "")), *calls]))
    for t in (current.get("userInputMessageContext") or {}).get("tools") or ():
        spec = t.get("toolSpecification") or {}
        req.tools.append(cn.Tool(spec.get("name", "?"), spec.get("description"),
                                 (spec.get("inputSchema") or {}).get("json")))
    return req


def _codegeex_request(body: Any, path: str) -> cn.Request:
    """chatCodeSseV3 body -> canonical (the gateway only encodes these)."""
    req = cn.Request(model=str(body.get("model", "?")), messages=[], stream=True)
    for turn in body.get("history") or ():
        req.messages += [cn.Message("user", [cn.Text(turn.get("query", ""))]),
                         cn.Message("assistant", [cn.Text(turn.get("answer", ""))])]
    req.messages.append(cn.Message("user", [cn.Text(body["prompt"])]))
    return req


def _openai_request(body: Any, path: str) -> cn.Request:
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise cn.ConversionError("not a chat request: no 'messages' array")
    return openai_chat.decode_request(body)


_GEMINI_MODEL = re.compile(r"/models/([^/:]+):")


def _gemini_request(body: Any, path: str) -> cn.Request:
    if isinstance(body, dict) and "contents" not in body and "request" in body:
        inner, model, _ = gemini.unwrap_code_assist_request(body)  # Code Assist envelope
        req = gemini.decode_request(inner, model)
    else:
        m = _GEMINI_MODEL.search(path)
        req = gemini.decode_request(body, m.group(1) if m else "?")
    req.stream = ":streamGenerateContent" in path
    return req


OPENAI_CHAT = Wire("LLM OpenAI Chat", _openai_request, openai_chat.decode_response, openai_chat.StreamDecoder)
RESPONSES = Wire("LLM OpenAI Responses", lambda b, p: responses.decode_request(b), responses.decode_response,
                 responses.StreamDecoder)
ANTHROPIC = Wire("LLM Anthropic Messages", lambda b, p: anthropic.decode_request(b), anthropic.decode_response,
                 anthropic.StreamDecoder)
GEMINI = Wire("LLM Gemini", _gemini_request, gemini.decode_response, gemini.StreamDecoder)
KIRO = Wire("LLM Kiro", _kiro_request, None, kiro.StreamDecoder, binary=True)
CODEGEEX = Wire("LLM CodeGeeX", _codegeex_request, None, codegeex.StreamDecoder)
WIRES = (OPENAI_CHAT, RESPONSES, ANTHROPIC, GEMINI, KIRO, CODEGEEX)


def wire_of(path: str) -> Wire | None:
    """The generate endpoint a request path names (client side or provider side), if any."""
    path = path.split("?", 1)[0].rstrip("/")
    if path.endswith("/chat/completions"):
        return OPENAI_CHAT
    if path.endswith("/responses"):  # /v1/responses, Codex's /backend-api/codex/responses
        return RESPONSES
    if path.endswith("/messages") and not path.endswith("/count_tokens"):
        return ANTHROPIC
    if path.endswith((":generateContent", ":streamGenerateContent")):  # also v1internal: (Code Assist)
        return GEMINI
    if path.endswith("/generateAssistantResponse"):
        return KIRO
    if path.endswith("/chatCodeSseV3/chat"):
        return CODEGEEX
    return None


# ---------------------------------------------------------------- decoding


def _parse_json(data: bytes) -> Any:
    if too_deep(data, MAX_DEPTH):
        raise ValueError(f"the JSON nests deeper than {MAX_DEPTH} levels")
    return json.loads(data)


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def render_request(wire: Wire, data: bytes, path: str) -> list[str]:
    if len(data) > MAX_JSON:
        return [f"# the body has {len(data)} bytes, more than the {MAX_JSON} this view decodes: see the JSON view"]
    try:
        return show.request(wire.request(_parse_json(data), path))
    except Exception as e:  # noqa: BLE001 - any malformed body: say why, never raise
        return [f"# not decoded as a {wire.name[4:]} request: {_why(e)}"]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _event_line(name: str | None, payload: str, previous: dict) -> str:
    """name + compact JSON, leaving out top-level strings, objects and arrays equal to the
    previous event's (ids, model) and a "type" that repeats the name, so the change shows.
    Numbers (indexes) are always shown."""
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return show.clip(f"{name or 'data'} {payload}")
    if not isinstance(obj, dict):
        return show.clip(f"{name or 'data'} {show.compact(obj)}")
    name = name or obj.get("type") or obj.get("object") or "data"
    shown = {k: v for k, v in obj.items() if not (k == "type" and v == name)
             and (_is_number(v) or previous.get(k, previous) != v)}
    previous.clear()
    previous.update(obj)
    return show.clip(f"{name} {show.compact(shown)}")


def _feed(decoder: Any, data: bytes) -> list:
    """decoder.feed() in slices, as the gateway feeds it reads off the network."""
    view = memoryview(data)
    return [e for i in range(0, len(view), FEED_SLICE) for e in decoder.feed(bytes(view[i:i + FEED_SLICE]))]


def _sse_lines(data: bytes) -> list[str]:
    parser, out = SSEParser(), []
    previous: dict[str, Any] = {}
    try:
        events = _feed(parser, data) + parser.close()
    except Exception as e:  # noqa: BLE001 - StreamFault: an event larger than the parser takes
        return [f"# events not listed: {_why(e)}"]
    for ev in events:
        if ev.data is None:
            continue
        if ev.data.strip() == "[DONE]":
            out.append("── [DONE] (end of stream) ──")
        else:
            out.append(_event_line(ev.event, ev.data, previous))
    return out


def _aws_lines(data: bytes) -> list[str]:
    from botocore.eventstream import EventStreamBuffer

    buf, out = EventStreamBuffer(), []
    previous: dict[str, Any] = {}
    buf.add_data(data)
    try:
        for msg in buf:
            h = msg.headers
            name = h.get(":event-type") or h.get(":exception-type") or h.get(":error-code") or "-"
            kind = "" if h.get(":message-type", "event") == "event" else f"{h.get(':message-type')} "
            out.append(_event_line(f"{kind}{name}", msg.payload.decode("utf-8", errors="replace"), previous))
    except Exception as e:  # noqa: BLE001 - corrupt frame: the stream decoder says so too
        out.append(f"# frames not listed past here: {_why(e)}")
    return out


def _decode_stream(wire: Wire, data: bytes, chunks: list[Any] | None) -> cn.Response:
    decoder = wire.stream()
    if chunks is None:
        events = _feed(decoder, data)
    else:  # Gemini without alt=sse: one JSON array of chunks
        events = [e for c in chunks for e in decoder.feed(b"data: " + json.dumps(c).encode() + b"\n\n")]
    return kiro.collect(events + decoder.finish())


def render_response(wire: Wire, data: bytes, content_type: str | None) -> list[str]:
    head = data[:64].lstrip()
    sse = content_type == SSE_TYPE or head.startswith((b"data:", b"event:", b":"))
    binary = wire.binary or content_type == AWS_EVENTSTREAM_TYPE
    if not (binary or sse or wire.response is None):
        return _render_json_answer(wire, data)
    cut = data[:MAX_STREAM]
    note = [f"# only the first {MAX_STREAM} of {len(data)} bytes were decoded"] if len(data) > MAX_STREAM else []
    try:
        lines = _aws_lines(cut) if binary else _sse_lines(cut)
        return note + show.response(_decode_stream(wire, cut, None)) + _events(lines)
    except Exception as e:  # noqa: BLE001 - any malformed body: say why, never raise
        return note + [f"# not decoded as a {wire.name[4:]} stream: {_why(e)}"]


def _render_json_answer(wire: Wire, data: bytes) -> list[str]:
    if len(data) > MAX_JSON:
        return [f"# the body has {len(data)} bytes, more than the {MAX_JSON} this view decodes: see the JSON view"]
    try:
        body = _parse_json(data)
        if isinstance(body, list):  # Gemini without alt=sse: a stream as one array
            if len(data) > MAX_STREAM:
                return [f"# a stream of {len(data)} bytes, more than the {MAX_STREAM} this view decodes: "
                        "see the JSON view"]
            previous: dict = {}
            return show.response(_decode_stream(wire, b"", body)) + _events(
                [_event_line("chunk", json.dumps(c), previous) for c in body])
        if wire.response is None:
            return [f"# {wire.name[4:]} answers as a stream only; this body is not one: see the JSON view"]
        return show.response(wire.response(body))
    except Exception as e:  # noqa: BLE001 - any malformed body: say why, never raise
        return [f"# not decoded as a {wire.name[4:]} response: {_why(e)}"]


def _events(lines: list[str]) -> list[str]:
    shown = lines[:MAX_EVENT_LINES]
    more = [f"# {len(lines) - len(shown)} more events not shown"] if len(lines) > len(shown) else []
    return ["", f"## events ({len(lines)}; top-level texts and objects as in the event before left out)", *shown, *more]


# ---------------------------------------------------------------- the views


def _path(metadata: Metadata) -> str:
    flow = metadata.flow
    return flow.request.path if isinstance(flow, http.HTTPFlow) else ""


class LLMContentview(Contentview):
    syntax_highlight = "none"

    def __init__(self, wire: Wire):
        self.wire = wire

    @property
    def name(self) -> str:
        return self.wire.name

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        if isinstance(metadata.http_message, http.Request):
            lines = render_request(self.wire, data, _path(metadata))
        else:
            lines = render_response(self.wire, data, metadata.content_type)
        return "\n".join(lines) + "\n"

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        if not data or wire_of(_path(metadata)) is not self.wire:
            return 0
        msg = metadata.http_message
        if isinstance(msg, http.Response) and msg.status_code >= 400:
            return 0  # an error answer reads best as the JSON it is
        return PRIORITY


LLM_VIEWS: tuple[LLMContentview, ...] = tuple(LLMContentview(w) for w in WIRES)
