"""Token usage as the client saw it, from any of the four client formats (pure, no I/O).

Read from what the client received, so passthrough and converted answers are counted alike:
OpenAI chat `usage` (prompt/completion tokens, cached and reasoning details), Responses
`usage` (input/output tokens and details), Anthropic `usage` (input excludes cache reads and
writes: they are added back, as in the canonical model), Gemini `usageMetadata`. Streams: the
events that carry usage are found by a substring test and only those are parsed; the last one
wins for each field (usage is cumulative in every format's final event; Anthropic's input
count may come only in message_start).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from converters import jsonio


@dataclass(slots=True)
class Tokens:
    prompt: int = 0
    completion: int = 0
    cached: int = 0
    reasoning: int = 0


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _apply(t: Tokens, obj: Any) -> bool:
    """Fold one JSON object's usage into t; True if it had any."""
    if not isinstance(obj, dict):
        return False
    found = False
    for holder in (obj, obj.get("message"), obj.get("response")):  # Anthropic message_start, Responses events
        if not isinstance(holder, dict):
            continue
        u, meta = holder.get("usage"), holder.get("usageMetadata")
        if isinstance(meta, dict):  # Gemini
            t.prompt = _int(meta.get("promptTokenCount")) or t.prompt
            answer = _int(meta.get("candidatesTokenCount")) + _int(meta.get("thoughtsTokenCount"))
            t.completion = answer or t.completion
            t.cached = _int(meta.get("cachedContentTokenCount")) or t.cached
            t.reasoning = _int(meta.get("thoughtsTokenCount")) or t.reasoning
            found = True
        if not isinstance(u, dict):
            continue
        found = True
        if "prompt_tokens" in u or "completion_tokens" in u:  # OpenAI chat
            t.prompt = _int(u.get("prompt_tokens")) or t.prompt
            t.completion = _int(u.get("completion_tokens")) or t.completion
            t.cached = _int((u.get("prompt_tokens_details") or {}).get("cached_tokens")) or t.cached
            t.reasoning = _int((u.get("completion_tokens_details") or {}).get("reasoning_tokens")) or t.reasoning
        elif "input_tokens_details" in u or "output_tokens_details" in u or "total_tokens" in u:  # Responses
            t.prompt = _int(u.get("input_tokens")) or t.prompt
            t.completion = _int(u.get("output_tokens")) or t.completion
            t.cached = _int((u.get("input_tokens_details") or {}).get("cached_tokens")) or t.cached
            t.reasoning = _int((u.get("output_tokens_details") or {}).get("reasoning_tokens")) or t.reasoning
        else:  # Anthropic
            reads, writes = _int(u.get("cache_read_input_tokens")), _int(u.get("cache_creation_input_tokens"))
            if "input_tokens" in u:
                t.prompt = (_int(u.get("input_tokens")) + reads + writes) or t.prompt
            t.completion = _int(u.get("output_tokens")) or t.completion
            t.cached = reads or t.cached
    return found


def of_body(body: bytes) -> Tokens | None:
    try:
        obj = jsonio.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested deeper than json goes
        return None
    t = Tokens()
    return t if _apply(t, obj) else None


def _lines_with(data: bytes, needle: bytes) -> Iterator[bytes]:
    """The lines (split at LF) of data holding needle, in order, without splitting the rest."""
    i = data.find(needle)
    while i != -1:
        end = data.find(b"\n", i)
        end = len(data) if end == -1 else end
        yield data[data.rfind(b"\n", 0, i) + 1:end]
        i = data.find(needle, end)


def of_stream(data: bytes) -> Tokens | None:
    """Usage from an SSE stream (or a Gemini JSON-array stream) the client received."""
    t, found = Tokens(), False
    for line in _lines_with(data, b"sage"):  # "usage" / "usageMetadata": only those lines are parsed
        text = line.strip().removeprefix(b"data:").strip().lstrip(b"[,").rstrip(b",]").strip()
        try:
            found |= _apply(t, jsonio.loads(text))
        except (ValueError, UnicodeDecodeError, RecursionError):
            continue
    return t if found else None
