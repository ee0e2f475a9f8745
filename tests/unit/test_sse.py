import json

import pytest

from converters.sse import SSEParser, encode, encode_like

STREAM = (
    b": keep-alive\r\n\r\n"
    b"id: 1\r\ndata: {\"a\": 1,\r\ndata:  \"b\": 2}\r\n\r\n"
    b"event: ping\ndata: x\n\n"
    b"data: caf\xc3\xa9\rdata: second\r\r"
    b"data: [DONE]\n\n"
)


def parse_in_pieces(data: bytes, cuts: list[int]):
    p, events, last = SSEParser(), [], 0
    for c in cuts + [len(data)]:
        events += p.feed(data[last:c])
        last = c
    return events + p.close()


def summary(events):
    return [(e.event, e.id, e.data, e.comments) for e in events]


def test_fields_crlf_comments_and_multiline_data():
    events = parse_in_pieces(STREAM, [])
    assert summary(events) == [
        (None, None, None, ["keep-alive"]),
        (None, "1", '{"a": 1,\n "b": 2}', []),
        ("ping", None, "x", []),
        (None, None, "café\nsecond", []),
        (None, None, "[DONE]", []),
    ]
    assert json.loads(events[1].data) == {"a": 1, "b": 2}
    # raw bytes of all events together are the input, byte for byte
    assert b"".join(e.raw for e in events) == STREAM


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_split_at_every_byte(cut):
    assert summary(parse_in_pieces(STREAM, [cut])) == summary(parse_in_pieces(STREAM, []))


def test_one_byte_at_a_time():
    events = parse_in_pieces(STREAM, list(range(1, len(STREAM))))
    assert summary(events) == summary(parse_in_pieces(STREAM, []))
    assert b"".join(e.raw for e in events) == STREAM


def test_cr_at_end_of_read_is_not_two_line_breaks():
    p = SSEParser()
    assert p.feed(b"data: a\r") == []
    assert p.feed(b"\n") == []  # still one line end: the event is not complete
    [ev] = p.feed(b"\r\n")
    assert ev.data == "a"


def test_incomplete_event_is_held_back():
    p = SSEParser()
    assert p.feed(b'data: {"x":') == []
    assert p.pending == b'data: {"x":'
    [ev] = p.feed(b"1}\n\n")
    assert ev.data == '{"x":1}'


def test_close_keeps_complete_lines_and_drops_a_partial_one():
    p = SSEParser()
    assert p.feed(b"data: last\n") == []
    [ev] = p.close()
    assert (ev.data, ev.raw) == ("last", b"data: last\n\n")
    p = SSEParser()
    p.feed(b'data: {"half')
    assert p.close() == []


def test_bom_and_field_without_colon():
    events = parse_in_pieces(b"\xef\xbb\xbfdata\n\nretry: 500\ndata: y\n\n", [1])
    assert [(e.data, e.retry) for e in events] == [("", None), ("y", 500)]


def test_encode_round_trip():
    raw = encode("line1\nline2", event="message_start", id="7")
    assert raw == b"event: message_start\nid: 7\ndata: line1\ndata: line2\n\n"
    [ev] = SSEParser().feed(raw)
    assert (ev.event, ev.id, ev.data) == ("message_start", "7", "line1\nline2")
    ev.comments.append("note")
    assert encode_like(ev, "new") == b": note\nevent: message_start\nid: 7\ndata: new\n\n"


# --- bounds ----------------------------------------------------------------------------------

def test_an_event_past_the_limit_fails_at_the_next_read_after_the_complete_ones():
    from converters.sse import StreamFault

    p = SSEParser(max_event=100)
    events = p.feed(b"data: ok\n\ndata: " + b"a" * 120)  # the complete event still comes out
    assert [e.data for e in events] == ["ok"]
    with pytest.raises(StreamFault) as e:
        p.feed(b"a")
    assert e.value.code == "upstream_event_too_large"
    p = SSEParser(max_event=10)
    p.feed(b"data: " + b"a" * 20)
    with pytest.raises(StreamFault):  # also when the upstream ends right there
        p.close()


def test_an_event_of_many_lines_counts_toward_the_limit():
    from converters.sse import StreamFault

    p = SSEParser(max_event=100)
    p.feed(b"data: x\n" * 20)  # 160 bytes, no blank line yet
    with pytest.raises(StreamFault):
        p.feed(b"data: x\n\n")


def test_a_long_line_in_many_reads_is_one_event():
    line = b"data: " + b"b" * 50_000 + b"\r\n\r\n"
    events = parse_in_pieces(line, list(range(1, len(line), 97)))
    assert [len(e.data) for e in events] == [50_000]


# Events of one `data:` line with LF endings take a fast path at event boundaries; whatever
# the split, it must parse exactly as the line loop does (one byte at a time never takes it).
LF_STREAM = (
    b'data: {"a":1}\n\n'
    b'data:{"b":"caf\xc3\xa9 \xff"}\n\n'
    b"\n"  # a stray blank line
    b"data: x\ndata: y\n\n"
    b": comment\ndata: z\n\n"
    b"event: e\ndata: w\n\n"
    b"data\n\n"  # a field without a colon
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("cuts", [[], [16], [16, 40], [15], [17, 18, 19]] + [[c] for c in range(1, len(LF_STREAM))])
def test_single_line_events_parse_as_the_line_loop_does(cuts):
    slow = parse_in_pieces(LF_STREAM, list(range(1, len(LF_STREAM))))
    fast = parse_in_pieces(LF_STREAM, cuts)
    assert summary(fast) == summary(slow)
    assert [e.raw for e in fast] == [e.raw for e in slow]
    assert b"".join(e.raw for e in fast) == LF_STREAM.replace(b"\n\n\n", b"\n\n", 1)


def test_a_read_of_whole_events_is_parsed_at_once():
    events = SSEParser().feed(b"\xef\xbb\xbf: hi\n\n" + b'data: {"n":1}\n\n' * 3 + b"data: par")
    assert [e.data for e in events] == [None, '{"n":1}', '{"n":1}', '{"n":1}']
    p = SSEParser()
    p.feed(b"data: 1\n\n")
    assert [e.data for e in p.feed(b"data: 2\n\ndata: 3\n\ndata: 4")] == ["2", "3"]
    assert [e.data for e in p.feed(b"\n\n")] == ["4"]
