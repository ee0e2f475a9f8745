import binascii
import json
import struct

import pytest
from botocore.eventstream import EventStreamBuffer
from llmgate.contentviews import (
    ContentViews,
    aws_eventstream_view,
    render_aws_eventstream,
    render_sse,
    sse_view,
)
from mitmproxy import contentviews, http
from mitmproxy.contentviews import Metadata
from mitmproxy.test import taddons, tflow

# ------------------------------------------------------------------ helpers


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream frame, straight from the spec (string headers only)."""
    hdr = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        hdr += struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = 12 + len(hdr) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hdr))
    prelude += struct.pack(">I", binascii.crc32(prelude) & 0xFFFFFFFF)
    body = prelude + hdr + payload
    return body + struct.pack(">I", binascii.crc32(body) & 0xFFFFFFFF)


def event_frame(event_type: str, obj) -> bytes:
    return encode_frame(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        json.dumps(obj).encode(),
    )


KIRO = (
    event_frame("assistantResponseEvent", {"content": "Hel"})
    + event_frame("assistantResponseEvent", {"content": "lo ✓"})
    + event_frame("meteringEvent", {"unit": "credit", "usage": 0.25})
)


def prettify(body: bytes, content_type: str, view_name: str = "auto"):
    f = tflow.tflow(resp=http.Response.make(200, body, {"content-type": content_type}))
    with taddons.context(ContentViews()):
        return contentviews.prettify_message(f.response, f, view_name)


# ------------------------------------------------------------------ SSE

OPENAI = (
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
    b": keep-alive\n\n"
    b"data: [DONE]\n\n"
)

ANTHROPIC = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_1","role":"assistant"}}\n\n'
    b"event: content_block_delta\nid: 7\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n'
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n\n'
)

GEMINI = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "Hel"}],"role": "model"}}]}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"text": "lo"}],"role": "model"}}],'
    b'"usageMetadata": {"totalTokenCount": 9}}\r\n\r\n'
)


def test_sse_openai():
    out = render_sse(OPENAI)
    blocks = out.rstrip("\n").split("\n\n")
    assert len(blocks) == 4
    assert json.loads(blocks[1]) == {"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}
    assert '\n  "choices": [' in blocks[0]  # indent 2
    assert blocks[2] == ": keep-alive"
    assert blocks[3] == "data: [DONE]"


def test_sse_anthropic_event_names_and_ids():
    blocks = render_sse(ANTHROPIC).rstrip("\n").split("\n\n")
    assert [b.split("\n", 1)[0] for b in blocks] == [
        "event: message_start",
        "event: content_block_delta",
        "event: message_stop",
    ]
    head, _, body = blocks[1].partition("\n{")
    assert head == "event: content_block_delta\nid: 7"
    assert json.loads("{" + body)["delta"]["text"] == "Hi"


def test_sse_gemini_crlf():
    blocks = render_sse(GEMINI).rstrip("\n").split("\n\n")
    assert len(blocks) == 2
    assert "\r" not in "".join(blocks)
    assert json.loads(blocks[1])["usageMetadata"] == {"totalTokenCount": 9}


def test_sse_truncated_last_event():
    cut = ANTHROPIC[: ANTHROPIC.index(b'"type":"message_stop"') + 11]
    blocks = render_sse(cut).rstrip("\n").split("\n\n")
    assert len(blocks) == 3
    assert blocks[2].split("\n") == [
        "event: message_stop",
        'data: {"type":"mes',
        "# truncated: the stream ends inside a line",
    ]
    # complete lines, missing only the blank line
    tail = render_sse(b"data: {\"a\": 1}\n").rstrip("\n").split("\n")
    assert tail[-1] == "# truncated: the stream ends before the blank line that ends it"
    assert json.loads("\n".join(tail[:-1])) == {"a": 1}


def test_sse_non_json_and_multiline_data():
    out = render_sse(b"event: note\ndata: plain text\ndata: second line\n\nretry: 3000\ndata:\n\n")
    assert out == "event: note\ndata: plain text\ndata: second line\n\nretry: 3000\ndata:\n"
    # a JSON document spread over data lines is joined before parsing
    assert json.loads(render_sse(b'data: {"a":\ndata:  [1, 2]}\n\n')) == {"a": [1, 2]}
    assert render_sse(b"") == ""
    assert render_sse(b"data: \xff\xfe\n\n") == "data: \ufffd\ufffd\n"


def test_sse_selected_for_event_stream_requests_and_responses():
    res = prettify(ANTHROPIC, "text/event-stream; charset=utf-8")
    assert res.view_name == "SSE"
    assert res.text.startswith("event: message_start\n{\n  \"type\": \"message_start\"")
    req = tflow.tflow()
    req.request.headers["content-type"] = "text/event-stream"
    req.request.content = OPENAI
    with taddons.context(ContentViews()):
        assert contentviews.prettify_message(req.request, req).view_name == "SSE"
    assert sse_view.render_priority(OPENAI, Metadata(content_type="application/json")) == 0
    assert sse_view.render_priority(OPENAI, Metadata()) > contentviews.registry["raw"].render_priority(OPENAI, Metadata())


# ------------------------------------------------------------------ AWS event stream


def test_encoder_agrees_with_botocore():
    buf = EventStreamBuffer()
    buf.add_data(KIRO)
    msgs = list(buf)
    assert [m.headers[":event-type"] for m in msgs] == ["assistantResponseEvent"] * 2 + ["meteringEvent"]
    assert msgs[0].headers[":message-type"] == "event"
    assert json.loads(msgs[1].payload) == {"content": "lo ✓"}


def test_aws_eventstream_renders_frames():
    blocks = render_aws_eventstream(KIRO).rstrip("\n").split("\n\n")
    assert len(blocks) == 3
    assert blocks[0] == 'event assistantResponseEvent\n{\n  "content": "Hel"\n}'
    assert blocks[1] == 'event assistantResponseEvent\n{\n  "content": "lo ✓"\n}'
    assert blocks[2].startswith("event meteringEvent\n{\n  \"unit\": \"credit\",")


def test_aws_eventstream_exception_and_extra_headers():
    frame = encode_frame(
        {":exception-type": "ThrottlingException", ":message-type": "exception", "x-request": "r1"},
        b'{"message":"slow down"}',
    )
    out = render_aws_eventstream(frame)
    assert out.split("\n")[:2] == ["exception ThrottlingException", "# x-request: r1"]
    assert json.loads(out.split("\n", 2)[2]) == {"message": "slow down"}
    # non-JSON payload shown raw, empty payload omitted
    assert render_aws_eventstream(encode_frame({":message-type": "event", ":event-type": "t"}, b"hi")) == (
        "event t\nhi\n"
    )
    assert render_aws_eventstream(encode_frame({}, b"")) == "- -\n"


def test_aws_eventstream_truncated():
    cut = KIRO[:-10]
    out = render_aws_eventstream(cut)
    blocks = out.rstrip("\n").split("\n\n")
    assert len(blocks) == 3
    first_two = len(event_frame("assistantResponseEvent", {"content": "Hel"})) + len(
        event_frame("assistantResponseEvent", {"content": "lo ✓"})
    )
    assert blocks[2].startswith(f"# decoding stopped at byte {first_two} of {len(cut)}: truncated frame (")
    assert render_aws_eventstream(KIRO[:5]) == "# decoding stopped at byte 0 of 5: truncated prelude (5 of 12 bytes)\n"


def test_aws_eventstream_corrupt_frames():
    first = event_frame("assistantResponseEvent", {"content": "Hel"})
    # flipped payload byte: message CRC mismatch
    bad = bytearray(KIRO)
    bad[len(first) + 40] ^= 0xFF
    blocks = render_aws_eventstream(bytes(bad)).rstrip("\n").split("\n\n")
    assert len(blocks) == 2
    assert blocks[0].startswith("event assistantResponseEvent")
    assert blocks[1].startswith(f"# decoding stopped at byte {len(first)} of {len(bad)}: ChecksumMismatch")
    # flipped prelude byte: prelude CRC mismatch
    bad = bytearray(KIRO)
    bad[len(first) + 2] ^= 0x01
    assert render_aws_eventstream(bytes(bad)).endswith(
        f"# decoding stopped at byte {len(first)} of {len(bad)}: invalid prelude (bad CRC or lengths)\n"
    )
    # an unknown header type inside an otherwise well-formed frame
    frame = bytearray(encode_frame({":event-type": "x"}, b"{}"))
    frame[12 + 1 + len(":event-type")] = 42  # type byte
    body = bytes(frame[:-4])
    frame[-4:] = struct.pack(">I", binascii.crc32(body) & 0xFFFFFFFF)
    out = render_aws_eventstream(bytes(frame))
    assert out.startswith("# decoding stopped at byte 0 of ")
    # garbage never raises
    assert render_aws_eventstream(b"\x00" * 40).startswith("# decoding stopped at byte 0")


def test_aws_eventstream_selection():
    res = prettify(KIRO, "application/vnd.amazon.eventstream")
    assert res.view_name == "AWS EventStream"
    assert res.text.startswith("event assistantResponseEvent\n")
    # sniffed by its prelude CRC when the content type does not say so
    assert prettify(KIRO, "application/octet-stream").view_name == "AWS EventStream"
    assert aws_eventstream_view.render_priority(b"{}", Metadata(content_type="application/json")) == 0
    # a corrupt body chosen by content type still renders, with the stop line
    res = prettify(b"\x00\x01garbage", "application/vnd.amazon.eventstream")
    assert res.view_name == "AWS EventStream"
    assert "decoding stopped at byte 0" in res.text


# ------------------------------------------------------------------ registration


def test_addon_registers_views_idempotently():
    from mitmproxy.test.taddons import context

    addon = ContentViews()
    with context(addon):
        assert contentviews.registry["sse"] is sse_view
        assert contentviews.registry["aws eventstream"] is aws_eventstream_view
    n = len(contentviews.registry)
    with context(ContentViews()):
        assert len(contentviews.registry) == n


@pytest.mark.parametrize("view_name", ["sse", "aws eventstream"])
def test_views_listed(view_name):
    with taddons.context(ContentViews()):
        assert view_name in contentviews.registry.available_views()
