"""converters.jsonio.loads answers exactly what json.loads answers: the same value (types
included) or the same kind of exception, whichever parser did the work."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converters import jsonio


def outcome(parse, data):
    try:
        return "ok", _typed(parse(data))
    except RecursionError:
        return "recursion", None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError both are
        return type(e).__name__, None


def _typed(v):
    """The value with every leaf's type, so 1 and 1.0 (and True) differ; NaN equals NaN."""
    if isinstance(v, dict):
        return {k: _typed(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_typed(x) for x in v]
    if isinstance(v, float) and math.isnan(v):
        return ("nan",)
    return (type(v).__name__, v)


EDGES = [
    '{"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}',
    "NaN", "[Infinity, -Infinity]", "[1e400]", "[-0]", "[-0.0]", '{"a":1,"a":2}',
    "[9223372036854775807]", "[9223372036854775808]", "[18446744073709551615]", "[18446744073709551616]",
    "[-9223372036854775809]", "[12345678901234567890123]", '["id-12345678901234567890"]', "[1234567890123456789.5]",
    '["\\ud800"]', '["\\udc00x"]', '["\\ud83d\\ude00"]', '"\\u0000"', '{"a":"\x01"}', "{'a':1}", '{"a":1,}',
    "", " ", "[1] x", "[01]", "[.5]", "\ufeff{}", '"\u2028"', "[" * 600 + "]" * 600, "[" * 5000 + "]" * 5000,
]


@pytest.mark.parametrize("text", EDGES)
def test_edges_as_json_loads(text: str) -> None:
    assert outcome(jsonio.loads, text) == outcome(json.loads, text)
    raw = text.encode("utf-8", "surrogatepass")
    assert outcome(jsonio.loads, raw) == outcome(json.loads, raw)


@pytest.mark.parametrize("raw", [b"\xef\xbb\xbf{}", b'["\xff"]', '{"a":1}'.encode("utf-16"), b"\x00"])
def test_bytes_edges_as_json_loads(raw: bytes) -> None:
    assert outcome(jsonio.loads, raw) == outcome(json.loads, raw)


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(st.characters(codec="utf-8")),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(values)
def test_any_document_as_json_loads(v) -> None:
    text = json.dumps(v, ensure_ascii=False)
    assert outcome(jsonio.loads, text) == outcome(json.loads, text)
    assert outcome(jsonio.loads, text.encode()) == outcome(json.loads, text.encode())


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet='{}[]",:0123456789.eE+-truefalsnul \\ud8', max_size=40))
def test_any_text_as_json_loads(text: str) -> None:
    assert outcome(jsonio.loads, text) == outcome(json.loads, text)
