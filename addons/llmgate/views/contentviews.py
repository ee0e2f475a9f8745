"""Contentviews for the streams LLM providers answer with, and the addon that registers them.

- "SSE": text/event-stream (OpenAI, Anthropic, Gemini `alt=sse`, ...): one block per
  event, `event:`/`id:`/`retry:` and comments kept, the data pretty-printed when it is JSON.
- "AWS EventStream": application/vnd.amazon.eventstream (Kiro / CodeWhisperer): one block
  per frame, a "<:message-type> <:event-type>" line then the JSON payload pretty-printed.

Both are read-only views and never raise on malformed input: they render what they could
decode and end with a `# ...` line saying where and why decoding stopped.

The views that read like an LLM exchange (one per wire format, chosen by the flow's path
over these generic ones) are in llm_views.py and registered here too.
"""

from __future__ import annotations

import binascii
import json
import re
import struct

from mitmproxy import contentviews
from mitmproxy.contentviews import Contentview, Metadata

from llmgate.views.llm_views import LLM_VIEWS

SSE_TYPE = "text/event-stream"
AWS_EVENTSTREAM_TYPE = "application/vnd.amazon.eventstream"

# builtin views stay within 0..1; these win outright when the content type says so
_PRIORITY_DECLARED = 2.0
_PRIORITY_SNIFFED_AWS = 1.2  # a valid prelude CRC is next to impossible by accident
_PRIORITY_SNIFFED_SSE = 0.3  # just above "raw" (0.1)

_LINE_END = re.compile(r"\r\n|\r|\n")


def _pretty(text: str) -> str | None:
    """`text` as indented JSON, or None unless it is a JSON object or array."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, (dict, list)):
        return None  # "[DONE]"-like sentinels and bare scalars read better raw
    return json.dumps(obj, indent=2, ensure_ascii=False)


# ---------------------------------------------------------------- SSE


def _render_sse_event(lines: list[str]) -> list[str]:
    out: list[str] = []
    data: list[str] = []
    for line in lines:
        if line.startswith(":"):
            out.append(line)  # comment, kept verbatim
            continue
        name, sep, value = line.partition(":")
        if name == "data":
            data.append(value.removeprefix(" ") if sep else "")
        else:
            out.append(line)  # event:, id:, retry: and unknown fields, verbatim
    if data:
        joined = "\n".join(data)
        pretty = _pretty(joined) if joined.strip() else None
        if pretty is not None:
            out.append(pretty)
        else:
            out.extend(f"data: {d}" if d else "data:" for d in data)
    return out


def render_sse(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace").removeprefix("\ufeff")
    lines = _LINE_END.split(text)
    # the split leaves "" after a final line end; anything else is a line cut short
    partial_line = lines[-1] != ""
    if not partial_line:
        lines.pop()
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in lines:
        if line:
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    rendered = ["\n".join(_render_sse_event(b)) for b in blocks]
    if current:
        tail = _render_sse_event(current)
        why = "inside a line" if partial_line else "before the blank line that ends it"
        tail.append(f"# truncated: the stream ends {why}")
        rendered.append("\n".join(tail))
    return "\n\n".join(r for r in rendered if r) + "\n" if rendered else ""


class SSEContentview(Contentview):
    name = "SSE"
    syntax_highlight = "yaml"

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        return render_sse(data)

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        if not data:
            return 0
        if metadata.content_type == SSE_TYPE:
            return _PRIORITY_DECLARED
        if metadata.content_type in (None, "text/plain") and data.lstrip()[:6] in (b"data: ", b"event:"):
            return _PRIORITY_SNIFFED_SSE
        return 0


# ---------------------------------------------------------------- AWS event stream

_PRELUDE = struct.Struct(">III")  # total length, headers length, prelude CRC
_MIN_FRAME = _PRELUDE.size + 4  # prelude + message CRC
_SHOWN_ELSEWHERE = {":message-type", ":event-type", ":exception-type", ":error-code", ":content-type"}


def _valid_prelude(data: bytes, offset: int = 0) -> tuple[int, int] | None:
    """(total length, headers length) if a frame prelude with a correct CRC starts at offset."""
    if len(data) - offset < _PRELUDE.size:
        return None
    total, headers, crc = _PRELUDE.unpack_from(data, offset)
    if binascii.crc32(data[offset : offset + 8]) & 0xFFFFFFFF != crc:
        return None
    if total < _MIN_FRAME or headers > total - _MIN_FRAME:
        return None
    return total, headers


def _header_value(value: object) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.hex()
    return str(value)


def _render_frame(headers: dict, payload: bytes) -> str:
    kind = _header_value(headers.get(":message-type", "-"))
    what = headers.get(":event-type") or headers.get(":exception-type") or headers.get(":error-code") or "-"
    out = [f"{kind} {_header_value(what)}"]
    out += [f"# {k}: {_header_value(v)}" for k, v in headers.items() if k not in _SHOWN_ELSEWHERE]
    if payload:
        text = payload.decode("utf-8", errors="backslashreplace")
        out.append(_pretty(text) or text)
    return "\n".join(out)


def render_aws_eventstream(data: bytes) -> str:
    # botocore is imported here so the SSE view works without it
    try:
        from botocore.eventstream import EventStreamBuffer
    except ImportError:  # pragma: no cover
        return f"# botocore is not installed: cannot decode {len(data)} bytes of AWS event stream\n"

    frames: list[str] = []
    offset = 0
    stop: str | None = None
    while offset < len(data):
        left = len(data) - offset
        if left < _PRELUDE.size:
            stop = f"truncated prelude ({left} of {_PRELUDE.size} bytes)"
            break
        total, _, _ = _PRELUDE.unpack_from(data, offset)
        if _valid_prelude(data, offset) is None:
            stop = "invalid prelude (bad CRC or lengths)"
            break
        if left < total:
            stop = f"truncated frame ({left} of {total} bytes)"
            break
        buf = EventStreamBuffer()  # one frame at a time: a parser error cannot hide the offset
        buf.add_data(data[offset : offset + total])
        try:
            msg = next(buf)
        except StopIteration:  # pragma: no cover - lengths were checked above
            stop = f"truncated frame ({left} of {total} bytes)"
            break
        except Exception as e:  # noqa: BLE001 - ChecksumMismatch, DuplicateHeader, bad header type or UTF-8
            stop = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            break
        frames.append(_render_frame(msg.headers, msg.payload))
        offset += total
    if stop is not None:
        frames.append(f"# decoding stopped at byte {offset} of {len(data)}: {stop}")
    return "\n\n".join(frames) + "\n" if frames else ""


class AWSEventStreamContentview(Contentview):
    name = "AWS EventStream"
    syntax_highlight = "yaml"

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        return render_aws_eventstream(data)

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        if not data:
            return 0
        if metadata.content_type == AWS_EVENTSTREAM_TYPE:
            return _PRIORITY_DECLARED
        if _valid_prelude(data) is not None:
            return _PRIORITY_SNIFFED_AWS
        return 0


sse_view = SSEContentview()
aws_eventstream_view = AWSEventStreamContentview()
VIEWS: tuple[Contentview, ...] = (sse_view, aws_eventstream_view, *LLM_VIEWS)


def register() -> None:
    """Add the views to mitmproxy's registry; idempotent (the registry is keyed by name)."""
    for view in VIEWS:
        if contentviews.registry.get(view.name.lower()) is not view:
            contentviews.add(view)


class ContentViews:
    """Addon: registers the views when loaded (mitmproxy, mitmweb and mitmdump alike).

    mitmproxy 12 has no API to unregister a contentview (`contentviews.remove` is a
    deprecated no-op), so done() leaves them in place; a script reload registers the
    same instances again under the same names, which replaces rather than duplicates.
    """

    def load(self, loader) -> None:
        register()
