"""A stream's first event, per wire format (converters/first_event), and the hold before it
(failover_engine.StreamStart) on an injected clock: an error sent inside a 200 is the HTTP error it
stands for, classified and cooled down by the same mapping; keepalives are held, but not forever."""

from __future__ import annotations

import json
import struct
import zlib

import pytest

from converters.first_event import FirstEvent, StreamStartError
from llmgate.request_path.failover import cool_down, fails_over
from llmgate.request_path.failover_engine import StreamStart
from llmgate.request_path.pool import PoolState
from llmgate.request_path.routing import Route
from llmgate.request_path.wire import UPSTREAM_FORMATS
from llmgate.settings import ProviderSettings
from tests.unit.test_failover_engine import T0, Clock

ANTHROPIC_OVERLOADED = (b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
                        b'"message":"Overloaded"}}\n\n')
ANTHROPIC_START = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
                   b'"role":"assistant","content":[],"model":"claude-sonnet-4-5","usage":{"input_tokens":3,'
                   b'"output_tokens":1}}}\n\n')
PING = b'event: ping\ndata: {"type": "ping"}\n\n'
GEMINI_429 = {"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                        "status": "RESOURCE_EXHAUSTED",
                        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]}}


def sse(body: dict, event: str | None = None) -> bytes:
    return (f"event: {event}\n" if event else "").encode() + b"data: " + json.dumps(body).encode() + b"\n\n"


def first(wire: str, *chunks: bytes):
    f = FirstEvent(wire)
    verdict = None
    for c in chunks:
        verdict = f.feed(c)
        if verdict is not None:
            return verdict
    return verdict


# ----------------------------------------------------------------- per wire format


def test_anthropic_overloaded_error_first_is_a_529_split_anywhere():
    for cut in range(1, len(ANTHROPIC_OVERLOADED)):
        v = first("anthropic", ANTHROPIC_OVERLOADED[:cut], ANTHROPIC_OVERLOADED[cut:])
        assert v == StreamStartError(529, ANTHROPIC_OVERLOADED[len(b"event: error\ndata: "):-2])


@pytest.mark.parametrize("etype, status", [("rate_limit_error", 429), ("api_error", 500),
                                           ("invalid_request_error", 400), ("something_new", 502)])
def test_anthropic_error_types_are_their_http_statuses(etype, status):
    v = first("anthropic", sse({"type": "error", "error": {"type": etype, "message": "x"}}, "error"))
    assert isinstance(v, StreamStartError) and v.status == status


def test_anthropic_pings_comments_and_message_start_are_not_a_start_content_is():
    f = FirstEvent("anthropic")
    assert f.feed(b": keepalive\n\n") is None
    assert f.feed(PING) is None
    assert f.feed(ANTHROPIC_START) is None  # no content yet: an error may still follow it
    assert f.feed(b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
                  b'"content_block":{"type":"text","text":""}}\n\n') is True


def test_anthropic_error_after_message_start_is_still_the_first_event():
    v = first("anthropic", ANTHROPIC_START, PING, ANTHROPIC_OVERLOADED)
    assert isinstance(v, StreamStartError) and v.status == 529


def test_openai_error_chunk_first():
    v = first("openai_chat", b": OPENROUTER PROCESSING\n\n",
              sse({"error": {"message": "Rate limit exceeded", "code": 429}}))
    assert v == StreamStartError(429, json.dumps({"error": {"message": "Rate limit exceeded", "code": 429}}).encode())
    assert first("openai_chat", sse({"error": {"message": "boom", "type": "server_error"}})).status == 500
    assert first("openai_chat", sse({"error": "weird"})).status == 502
    vllm = first("openai_chat", sse({"object": "error", "message": "overloaded", "type": "x", "code": 503}))
    assert vllm.status == 503 and json.loads(vllm.body)["error"]["message"] == "overloaded"
    assert first("openai_chat", b"data: \n\n", sse({"id": "c", "choices": [{"delta": {"role": "assistant"}}]})) is True
    assert first("openai_chat", b"data: [DONE]\n\n") is True


def test_gemini_and_code_assist_resource_exhausted():
    assert first("gemini", sse(GEMINI_429)) == StreamStartError(429, json.dumps(GEMINI_429).encode())
    v = first("code_assist", sse({"response": GEMINI_429}))
    assert v == StreamStartError(429, json.dumps(GEMINI_429).encode())
    unavailable = {"error": {"message": "No capacity available for model", "status": "UNAVAILABLE"}}
    assert first("code_assist", sse(unavailable)).status == 503
    assert first("gemini", sse({"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]})) is True


def test_responses_failed_or_error_first():
    failed = {"type": "response.failed", "response": {"id": "r", "status": "failed",
                                                      "error": {"code": "rate_limit_exceeded", "message": "slow down"}}}
    v = first("responses", sse(failed, "response.failed"))
    assert v.status == 429 and json.loads(v.body) == {"error": {"code": "rate_limit_exceeded", "message": "slow down"}}
    err = {"type": "error", "code": "server_error", "message": "oops", "param": None}
    assert first("responses", sse(err, "error")).status == 500
    created = sse({"type": "response.created", "response": {}}, "response.created")
    in_progress = sse({"type": "response.in_progress", "response": {}}, "response.in_progress")
    assert first("responses", created, in_progress) is None  # no content yet
    limit = {"type": "response.failed", "response": {"error": {"code": "rate_limit_exceeded", "message": "limit"}}}
    assert first("responses", created, in_progress, sse(limit, "response.failed")).status == 429
    text = {"type": "response.output_item.added", "output_index": 0, "item": {"type": "message"}}
    assert first("responses", created, sse(text, "response.output_item.added")) is True


def test_codegeex_error_event():
    assert first("codegeex", b'event: error\ndata: {"code": 429, "msg": "too many"}\n\n').status == 429
    assert first("codegeex", b'event: add\ndata: {"text": "Hi"}\n\n') is True


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream frame (string headers only)."""
    h = b"".join(bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
                 for k, v in headers.items())
    total = 12 + len(h) + len(payload) + 4
    prelude = struct.pack(">II", total, len(h))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + h + payload
    return head + struct.pack(">I", zlib.crc32(head))


def test_kiro_exception_frame_first():
    f = frame({":message-type": "exception", ":exception-type": "ThrottlingException"}, b'{"message":"slow"}')
    v = first("kiro", f[:10], f[10:])
    assert isinstance(v, StreamStartError) and v.status == 429
    ok = frame({":message-type": "event", ":event-type": "assistantResponseEvent"}, b'{"content":"Hi"}')
    assert first("kiro", ok) is True


def test_a_first_event_that_is_not_json_is_the_relays_to_judge():
    assert first("anthropic", b"event: message_start\ndata: {not json\n\n") is True
    assert first("gemini", b"data: {not json\n\n") is True


# ----------------------------------------------------------------- the hold, on a clock


def test_keepalives_are_held_until_the_wait_ends_then_the_stream_goes_on():
    clock = Clock()
    gate = StreamStart(FirstEvent("anthropic"), clock, wait=30)
    assert gate.feed(PING) is False
    clock.advance(29)
    assert gate.feed(PING) is False and gate.remaining() == pytest.approx(1)
    clock.advance(1)
    assert gate.feed(PING) is True  # alive but silent: no longer held
    assert gate.held == PING * 3


def test_keepalives_are_held_only_up_to_the_byte_limit():
    gate = StreamStart(FirstEvent("openai_chat"), Clock(), wait=600, limit=100)
    assert gate.feed(b": x" * 20 + b"\n\n") is False
    assert gate.feed(b": x" * 20 + b"\n\n") is True


def test_held_bytes_come_back_byte_for_byte_with_the_first_event():
    gate = StreamStart(FirstEvent("anthropic"), Clock(), wait=600)
    block = b'event: content_block_start\r\ndata: {"type":"content_block_start","index":0}\r\n\r\n'
    assert gate.feed(PING[:7]) is False
    assert gate.feed(PING[7:] + ANTHROPIC_START) is False
    assert gate.feed(block) is True
    assert gate.held == PING + ANTHROPIC_START + block


def test_an_in_stream_error_cools_down_like_the_http_answer():
    """The Gemini error chunk goes through the provider's error mapping: 429 with the RetryInfo
    delay, so its member cools for exactly those 7 s, as the same error with a 429 status would."""
    clock = Clock()
    pool = PoolState(clock=clock)
    p = ProviderSettings(id="gem", type="gemini", base_url="http://gem.invalid", api_key="k" * 20)
    gate = StreamStart(FirstEvent("gemini"), clock, wait=600)
    v = gate.feed(sse(GEMINI_429))
    assert isinstance(v, StreamStartError)
    e = UPSTREAM_FORMATS["gemini"].error(p, v.status, "", {}, v.body)
    assert e.status == 429 and e.code == "resource_exhausted" and fails_over(e)
    c = cool_down(pool, Route(p, "gemini-2.5-flash", "alias"), "", e)
    assert c is not None and c.until == T0 + 7


def test_an_anthropic_overloaded_event_maps_to_its_native_error():
    p = ProviderSettings(id="claude", type="anthropic", base_url="http://a.invalid", api_key="k" * 20)
    v = first("anthropic", ANTHROPIC_OVERLOADED)
    e = UPSTREAM_FORMATS["anthropic"].error(p, v.status, "", {}, v.body)
    assert (e.status, e.code) == (529, "overloaded_error") and fails_over(e)
    assert e.native == ("anthropic", v.body)
