"""Client limits: bounded decoders, the nesting check, error types per API, the connection sweep."""

from __future__ import annotations

import gzip
import json
import zlib
from types import SimpleNamespace

import brotli
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from converters import openai_chat
from converters.json_limits import exceeds, too_deep
from llmgate.addons.limits import TICK, ClientLimits, Conn, decode
from llmgate.errors import GatewayError
from llmgate.request_path.client_apis import ANTHROPIC, GEMINI, OPENAI_CHAT, RESPONSES
from llmgate.runtime import Runtime
from llmgate.settings import Limits

DATA = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}).encode()
BOMB = b"\0" * (64 << 20)
ENCODERS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstandard.compress,
}


@pytest.mark.parametrize("coding", ENCODERS)
def test_decode_round_trips(coding):
    assert decode(ENCODERS[coding](DATA), coding, 1 << 20) == DATA


def test_raw_deflate_and_chains():
    raw = zlib.compressobj(wbits=-15)
    assert decode(raw.compress(DATA) + raw.flush(), "deflate", 1 << 20) == DATA
    assert decode(brotli.compress(gzip.compress(DATA)), "gzip, br", 1 << 20) == DATA
    assert decode(gzip.compress(DATA[:100]) + gzip.compress(DATA[100:]), "gzip", 1 << 20) == DATA


@pytest.mark.parametrize("coding", ENCODERS)
def test_bombs_stop_at_the_limit(coding):
    with pytest.raises(GatewayError) as e:
        decode(ENCODERS[coding](BOMB), coding, 1 << 20)
    assert e.value.status == 413 and e.value.code == "request_too_large"


@pytest.mark.parametrize("coding", ENCODERS)
def test_garbage_and_truncation_are_400(coding):
    for body in (DATA, ENCODERS[coding](DATA)[:-8]):
        with pytest.raises(GatewayError) as e:
            decode(body, coding, 1 << 20)
        assert e.value.status == 400 and coding in e.value.message


def test_unknown_coding_is_415():
    with pytest.raises(GatewayError) as e:
        decode(DATA, "compress", 1 << 20)
    assert e.value.status == 415 and "Accept-Encoding" in e.value.headers


@pytest.mark.parametrize("text, depth", [
    (b"{}", 1), (b"[[[]]]", 3), (b'{"a": {"b": [1, {"c": []}]}}', 5),
    (b'{"s": "[[[[[[[[[[[[[["}', 1), (b'{"s": "\\"[[[[[[[[[[\\\\"}', 1), (b'{"s": "\\\\", "t": [[[[]]]]}', 5),
    (b'[[], [[]], [[[]]], []]', 4), (b'[{"a": [{}]}, {"b": {"c": {"d": {}}}}]', 5),
])
def test_nesting_depth(text, depth):
    assert not too_deep(text, depth) and too_deep(text, depth - 1)


def _depth(v) -> int:
    children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
    return 0 if children is None else 1 + max(map(_depth, children), default=0)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab'),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
                         st.text(alphabet='[]{}"\\a', max_size=3), kids, max_size=4), max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_nesting_depth_matches_the_parsed_depth(value):
    text = json.dumps(value).encode()
    depth = _depth(value)
    assert not too_deep(text, depth) and (depth == 0 or too_deep(text, depth - 1))


def test_deep_body_is_a_request_error_not_a_recursion_error():
    with pytest.raises(openai_chat.RequestError, match="128 levels"):
        openai_chat.parse_json_object(b"[" * 100_000 + b"]" * 100_000)
    assert openai_chat.parse_json_object(b'{"a":' + b"[" * 100 + b"]" * 100 + b"}", 128)


def test_real_agent_payloads_stay_far_below_the_limit():
    tool = {"type": "object", "properties": {"edits": {"type": "array", "items": {"type": "object", "properties": {
        "old": {"type": "string"}, "new": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}}}}
    body = json.dumps({"model": "m", "tools": [{"type": "function", "function": {"parameters": tool}}],
                       "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}).encode()
    assert not too_deep(body, 16)


@pytest.mark.parametrize("status, openai, anthropic, google", [
    (400, "invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
    (401, "invalid_request_error", "authentication_error", "UNAUTHENTICATED"),
    (403, "permission_error", "permission_error", "PERMISSION_DENIED"),
    (404, "invalid_request_error", "not_found_error", "NOT_FOUND"),
    (405, "invalid_request_error", "invalid_request_error", "UNIMPLEMENTED"),
    (409, "invalid_request_error", "invalid_request_error", "ABORTED"),
    (413, "invalid_request_error", "request_too_large", "INVALID_ARGUMENT"),
    (415, "invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
    (429, "rate_limit_error", "rate_limit_error", "RESOURCE_EXHAUSTED"),
    (500, "server_error", "api_error", "INTERNAL"),
    (502, "upstream_error", "api_error", "UNAVAILABLE"),
    (503, "server_error", "overloaded_error", "UNAVAILABLE"),
    (504, "upstream_error", "timeout_error", "DEADLINE_EXCEEDED"),
    (418, "invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
    (599, "server_error", "api_error", "INTERNAL"),
])
def test_error_types_per_api(status, openai, anthropic, google):
    err = GatewayError(status, "m", code="some_code")
    assert json.loads(OPENAI_CHAT.error_body(err))["error"]["type"] == openai
    assert json.loads(RESPONSES.error_body(err))["error"]["type"] == openai
    assert json.loads(ANTHROPIC.error_body(err))["error"]["type"] == anthropic
    assert json.loads(GEMINI.error_body(err))["error"] == {"code": status, "message": "m", "status": google}


def test_upstream_status_names_kept_only_where_they_fit():
    # Gemini says 400 INVALID_ARGUMENT for a bad key; the gateway answers 401
    assert json.loads(GEMINI.error_body(GatewayError(401, "m", code="invalid_argument")))["error"]["status"] \
        == "UNAUTHENTICATED"
    assert json.loads(GEMINI.error_body(GatewayError(400, "m", code="failed_precondition")))["error"]["status"] \
        == "FAILED_PRECONDITION"
    assert json.loads(ANTHROPIC.error_body(GatewayError(529, "m", code="overloaded_error")))["error"]["type"] \
        == "overloaded_error"


class FakeClient:
    def __init__(self, cid: str):
        self.id, self.peername = cid, ("127.0.0.1", 1)


def sweep(limits: Limits, clock: list[float]):
    rt = Runtime()
    rt.settings.server.limits = limits
    return ClientLimits(rt, clock=lambda: clock[0])


def test_idle_connection_closes_after_idle_timeout():
    now = [100.0]
    cl = sweep(Limits(idle_timeout=10, header_timeout=3), now)
    c = Conn(FakeClient("a"), since=100.0)
    for t, activity, expect in [(100.1, 5.0, None), (101, 5.0, None), (109, 5.0, None), (110.5, 5.0, "idle")]:
        now[0] = t
        reason = cl.overdue(c, activity, t)
        assert (reason or "").startswith(expect or "") and bool(reason) == bool(expect)


def test_trickled_headers_close_after_header_timeout_even_when_never_silent():
    cl = sweep(Limits(idle_timeout=10, header_timeout=3), [0.0])
    c = Conn(FakeClient("a"), since=0.0)
    assert cl.overdue(c, 1.0, TICK) is None  # where activity stood
    reasons = [cl.overdue(c, 1.0 + t, TICK + t) for t in (0.5, 1, 2, 3, 3.6)]
    assert reasons[:-1] == [None] * 4 and "headers" in reasons[-1]


def test_body_timeout_and_busy_connections():
    cl = sweep(Limits(body_timeout=5, idle_timeout=1), [0.0])
    body = Conn(FakeClient("a"), since=0.0, flows={"f1": None, "f2": 0.0})  # HTTP/2: one answered, one uploading
    busy = Conn(FakeClient("b"), since=0.0, flows={"f3": None})
    assert cl.overdue(body, 1.0, 4.9) is None and "body" in cl.overdue(body, 1.0, 5.1)
    assert cl.overdue(busy, 1.0, 10_000) is None  # a long answer is never cut by these limits


class FakeFlow:
    def __init__(self, fid: str, client: FakeClient):
        self.id, self.client_conn = fid, client
        self.request = SimpleNamespace(headers={"content-encoding": "gzip"})


def test_a_connection_is_idle_only_when_all_its_requests_ended():
    now = [0.0]
    cl = sweep(Limits(idle_timeout=10, max_connections=2), now)
    client = FakeClient("c")
    cl.client_connected(client)
    a, b = FakeFlow("a", client), FakeFlow("b", client)
    for f in (a, b):
        cl.requestheaders(f)
        cl.request(f)
    now[0] = 50
    cl.error(a)  # one stream of the connection ended; the other is still being answered
    assert cl.overdue(cl.conns["c"], 1.0, 100) is None
    cl.error(b)
    assert b.request.headers == {}  # an unread body no longer claims an encoding
    assert cl.conns["c"].since == 50 and cl.overdue(cl.conns["c"], 1.0, 70) == "idle for 10 s"


def test_value_count_is_bounded_before_parsing():
    """32 MiB of `[],` would be ten million lists (about a gigabyte) once parsed: refused first."""
    flat = b"[" + b"[]," * 50_000 + b"[]]"
    assert exceeds(flat, 128, 10_000) == "values"
    assert exceeds(flat, 128, 110_000) is None  # 50,002 lists and 50,000 commas
    # strings, keys and numbers count too; a string's own commas and colons do not
    obj = b'{"a":"x,y:z","b":[1,2,3],"c":{"d":null}}'
    # 4 commas + 4 colons + 3 containers + 1: an estimate near the 13 values and keys it holds
    assert exceeds(obj, 128, 12) is None
    assert exceeds(obj, 128, 11) == "values"
    with pytest.raises(openai_chat.RequestError, match="max_values"):
        openai_chat.parse_json_object(flat, 128, 10_000)
