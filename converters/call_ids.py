"""Tool-call ids that carry a thought signature through clients that know nothing of it.

Gemini has no tool-call ids, and Gemini 3 requires each functionCall's
thoughtSignature back on the next turn. An OpenAI-shaped client keeps exactly one
thing of a tool call for sure: its id (it must, to answer the call). So the
gateway synthesises ids of the form

    call_<8 hex>                     no signature
    call_<8 hex>s<signature>         signature in base64url, padding dropped

using only [A-Za-z0-9_-], which every client format accepts (Anthropic requires
that alphabet). Stateless: it survives gateway restarts and several replicas.
"""

from __future__ import annotations

import re
import secrets

_STD = str.maketrans("+/", "-_")
_URL = str.maketrans("-_", "+/")
_B64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_ID = re.compile(r"^call_[0-9a-f]{8}s([A-Za-z0-9_-]+)$")


def new_call_id(signature: str | None = None) -> str:
    base = "call_" + secrets.token_hex(4)
    if signature and _B64.match(signature):
        return base + "s" + signature.translate(_STD).rstrip("=")
    return base


def signature_of(call_id: str) -> str | None:
    """The signature new_call_id() put into `call_id`, if any."""
    m = _ID.match(call_id)
    if not m:
        return None
    sig = m.group(1).translate(_URL)
    return sig + "=" * (-len(sig) % 4)
