"""Model names a client sends: refused when they could steer an upstream URL.

A Gemini-style provider puts the model in its URL path, with the provider key attached:
"gem/a/../../../x#" would reach another path. Names with control characters, whitespace,
'#', '?', a backslash or a '.'/'..' path segment are refused with a 400 (no provider uses
such names); the URL builders percent-encode the rest (providers/gemini_api.py).
"""

from __future__ import annotations

import re

from llmgate.errors import GatewayError

_INVALID = re.compile(r"[\x00-\x1f\x7f\s#?\\]|(?:^|/)\.{1,2}(?:/|$)")


def check_model_name(model: str) -> None:
    if _INVALID.search(model):
        raise GatewayError(400, f"Invalid model name {model!r}: control characters, whitespace, '#', '?', "
                           "'\\\\' and '.' or '..' path segments are not allowed.", code="invalid_request",
                           param="model")
