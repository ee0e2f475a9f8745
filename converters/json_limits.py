"""How deep a JSON text nests and how many values it holds, found without parsing it.

json.loads recurses per level (a 10^5-deep body would raise RecursionError, and pydantic and
the converters recurse too), and it builds a Python object per value: 32 MiB of `[],` is ten
million lists, about a gigabyte. Both are refused before parsing."""

from __future__ import annotations

import re

_STRING = re.compile(rb'"[^"]*"')  # once escapes are gone, a string is quote to quote
_RUN = re.compile(rb"\[+|\]+")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN_CLOSE = bytes.maketrans(b"{}", b"[]")
_PASSES = 8  # rounds of removing empty containers before counting


def too_deep(body: bytes, limit: int) -> bool:
    """True if `body` nests arrays/objects more than `limit` levels deep (or, being invalid
    JSON, has more than `limit` unclosed brackets). Linear, in C but for a loop over runs
    of brackets (about a second for a hostile 32 MiB body)."""
    return exceeds(body, limit, None) is not None


def exceeds(body: bytes, max_depth: int, max_values: int | None) -> str | None:
    """Which limit `body` breaks: "depth", "values" (values and keys, each container counted
    too), or None."""
    text = body.replace(b"\\\\", b"").replace(b'\\"', b"")  # left to right, as JSON reads escapes
    text = _STRING.sub(b"", text)
    brackets = text.translate(_OPEN_CLOSE, _NOT_BRACKETS)
    if max_values is not None:
        # a separator per value but the last of each container; each container on top
        values = text.count(b",") + text.count(b":") + brackets.count(b"[") + 1
        if values > max_values:
            return "values"
    return "depth" if _nests_deeper(brackets, max_depth) else None


def _nests_deeper(brackets: bytes, limit: int) -> bool:
    for _ in range(_PASSES):
        if b"[" * (limit + 1) in brackets:  # a run of openers deeper than the limit
            return True
        # drop the empty containers: every subtree gets one level lower, so the limit does too
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            break
        brackets, limit = shorter, limit - 1
    depth = 0
    for run in _RUN.findall(brackets):
        depth += len(run) if run[0] == 91 else -len(run)  # "[" opens
        if depth > limit:
            return True
    return False
