"""A local token count for providers without a counting endpoint (pure, no I/O).

A rough estimate, not a tokenizer: about 4 characters of text per token (what
OpenAI and Anthropic quote for English prose and code), counted over everything the
model would read: system text, message text, thinking, tool calls and results, tool
names, descriptions and JSON schemas. Each message adds 4 tokens of framing, each
image a flat 1,000 (between Anthropic's and OpenAI's figures for a ~1 MP image).
Good enough for context-window bookkeeping (what clients such as Claude Code use
count_tokens for); never for billing.
"""

from __future__ import annotations

import json
import math

from converters import canonical as cn

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_PER_IMAGE = 1000


def _chars(b: cn.Block) -> int:
    if isinstance(b, (cn.Text, cn.Thinking)):
        return len(b.text)
    if isinstance(b, cn.ToolCall):
        return len(b.name) + len(b.arguments)
    if isinstance(b, cn.ToolResult):
        return sum(_chars(c) for c in b.content)
    return 0


def _images(blocks: list[cn.Block]) -> int:
    n = 0
    for b in blocks:
        if isinstance(b, cn.Image):
            n += 1
        elif isinstance(b, cn.ToolResult):
            n += _images(list(b.content))
    return n


def estimate(req: cn.Request) -> int:
    chars = sum(len(t.text) for t in req.system)
    images = 0
    for m in req.messages:
        chars += sum(_chars(b) for b in m.content)
        images += _images(m.content)
    for t in req.tools:
        chars += len(t.name) + len(t.description or "") + len(json.dumps(t.parameters or {}))
    return (math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(req.messages)
            + TOKENS_PER_IMAGE * images)
