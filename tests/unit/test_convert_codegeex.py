"""Tests for converters/codegeex.py (CodeGeeX chatCodeSseV3 requests, SSE streams, errors)."""

from __future__ import annotations

import json

import pytest

from converters import canonical as cn
from converters import codegeex

TALK = "talk-1"
MACHINE = "machine-1"


def user(*texts: str) -> cn.Message:
    return cn.Message("user", [cn.Text(t) for t in texts])


def assistant(*texts: str) -> cn.Message:
    return cn.Message("assistant", [cn.Text(t) for t in texts])


def encode(messages: list[cn.Message], **kw) -> dict:
    return codegeex.encode_request(cn.Request(model="codegeex-4", messages=messages, **kw), TALK, MACHINE)


# --- requests ----------------------------------------------------------------

def test_single_user_message():
    assert encode([user("hi there")]) == {
        "user_role": 0, "ide": "VSCode", "prompt": "hi there", "history": [],
        "talkId": TALK, "model": "codegeex-4", "machineId": MACHINE, "locale": "en",
    }


def test_history_pairs_and_prompt():
    body = encode([user("q1"), assistant("a1"), user("q2"), assistant("a2"), user("q3")])
    assert body["prompt"] == "q3"
    assert body["history"] == [
        {"query": "q1", "answer": "a1", "id": "talk-1-0"},
        {"query": "q2", "answer": "a2", "id": "talk-1-1"},
    ]


def test_consecutive_roles_are_merged():
    body = encode([user("a"), user("b"), assistant("x"), assistant("y"), user("c"), user("d")])
    assert body["history"] == [{"query": "a\n\nb", "answer": "x\n\ny", "id": "talk-1-0"}]
    assert body["prompt"] == "c\n\nd"


def test_text_blocks_of_one_message_are_concatenated():
    assert encode([user("ab", "cd")])["prompt"] == "abcd"


def test_leading_assistant_turn_gets_empty_query():
    body = encode([assistant("hello, how can I help?"), user("q")])
    assert body["history"] == [{"query": "", "answer": "hello, how can I help?", "id": "talk-1-0"}]


def test_system_goes_before_the_first_query():
    body = encode([user("q1"), assistant("a1"), user("q2")], system=[cn.Text("be brief"), cn.Text("be kind")])
    assert body["history"][0]["query"] == "be brief\n\nbe kind\n\nq1"
    assert body["prompt"] == "q2"


def test_system_goes_before_the_prompt_without_history():
    assert encode([user("q")], system=[cn.Text("be brief")])["prompt"] == "be brief\n\nq"


def test_system_with_leading_assistant_turn():
    body = encode([assistant("hi"), user("q")], system=[cn.Text("sys")])
    assert body["history"][0]["query"] == "sys"


def test_thinking_is_dropped():
    msgs = [user("q1"), cn.Message("assistant", [cn.Thinking("hmm", "sig"), cn.RedactedThinking("x"),
                                                 cn.Text("a1")]), user("q2")]
    assert encode(msgs)["history"] == [{"query": "q1", "answer": "a1", "id": "talk-1-0"}]


def test_assistant_with_only_thinking_still_closes_the_turn():
    msgs = [user("q1"), cn.Message("assistant", [cn.Thinking("hmm")]), user("q2"), assistant("a2"), user("q3")]
    assert [(h["query"], h["answer"]) for h in encode(msgs)["history"]] == [("q1", ""), ("q2", "a2")]


def test_tools_are_refused():
    with pytest.raises(cn.ConversionError, match="CodeGeeX has no tool calling") as e:
        encode([user("q")], tools=[cn.Tool("get_weather")])
    assert e.value.param == "tools"


def test_tool_calls_and_results_are_refused():
    call = cn.Message("assistant", [cn.ToolCall("c1", "f", "{}")])
    result = cn.Message("user", [cn.ToolResult("c1", [cn.Text("ok")])])
    for msgs, param in (([user("q"), call, user("r")], "messages.1"), ([user("q"), assistant("a"), result], "messages.2")):
        with pytest.raises(cn.ConversionError, match="CodeGeeX has no tool calling") as e:
            encode(msgs)
        assert e.value.param == param


def test_tool_choice_without_tools_is_ignored():
    assert encode([user("q")], tool_choice=cn.ToolChoice("auto"))["prompt"] == "q"


def test_images_are_refused():
    with pytest.raises(cn.ConversionError, match="images") as e:
        encode([cn.Message("user", [cn.Text("what is this"), cn.Image("image/png", "AAAA")])])
    assert e.value.param == "messages.0"


def test_prefill_is_refused():
    with pytest.raises(cn.ConversionError, match="end with a user message") as e:
        encode([user("q"), assistant("partial")])
    assert e.value.param == "messages"


def test_empty_messages_are_refused():
    with pytest.raises(cn.ConversionError):
        encode([])


def test_empty_prompt_is_refused():
    with pytest.raises(cn.ConversionError, match="non-empty prompt"):
        encode([user("q"), assistant("a"), user("   ")])


def test_unsupported_parameters_are_named_in_dropped():
    req = cn.Request(model="m", messages=[user("q")], max_tokens=10, temperature=0.2, top_p=0.9,
                     stop=["x"], seed=1, response_format=cn.ResponseFormat("json_object"),
                     reasoning=cn.Reasoning(effort="high"), dropped=["top_k"])
    codegeex.encode_request(req, TALK, MACHINE)
    assert sorted(req.dropped) == sorted(["top_k", "max_tokens", "temperature", "top_p", "stop", "seed",
                                          "response_format", "reasoning"])


def test_encoding_is_deterministic():
    msgs = [user("q1"), assistant("a1"), user("q2")]
    assert encode(msgs) == encode(msgs)


# --- streams -----------------------------------------------------------------

def add(text: str) -> bytes:
    return f"event: add\ndata: {json.dumps({'text': text}, ensure_ascii=False)}\n\n".encode()


def finish(text: str, **extra) -> bytes:
    return f"event: finish\ndata: {json.dumps({'text': text, **extra}, ensure_ascii=False)}\n\n".encode()


STREAM = add("Echo") + add(": h") + add("é 😀") + b": keep-alive\n\n" + finish("Echo: hé 😀")


def run(data: bytes, cuts: list[int] | None = None, model: str = "codegeex-4") -> list[cn.Event]:
    dec = codegeex.StreamDecoder(model)
    events: list[cn.Event] = []
    last = 0
    for c in (cuts or []) + [len(data)]:
        events += dec.feed(data[last:c])
        last = c
    return events + dec.finish()


def normalized(events: list[cn.Event]) -> list[cn.Event]:
    """Events with MessageStart's random id and clock removed; text deltas merged."""
    out: list = []
    for ev in events:
        if isinstance(ev, cn.MessageStart):
            out.append(("start", ev.model))
        elif isinstance(ev, cn.TextDelta) and out and isinstance(out[-1], cn.TextDelta):
            out[-1] = cn.TextDelta(ev.index, out[-1].text + ev.text)
        else:
            out.append(ev)
    return out


def test_whole_stream():
    events = run(STREAM)
    assert isinstance(events[0], cn.MessageStart) and events[0].id.startswith("codegeex-")
    assert events[0].model == "codegeex-4"
    assert events[1:] == [cn.BlockStart(0, cn.Text("")), cn.TextDelta(0, "Echo"), cn.TextDelta(0, ": h"),
                          cn.TextDelta(0, "é 😀"), cn.BlockStop(0), cn.Finish("stop")]


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_split_at_every_byte(cut):
    assert normalized(run(STREAM, [cut])) == normalized(run(STREAM))


def test_one_byte_at_a_time_and_crlf():
    crlf = STREAM.replace(b"\n", b"\r\n")
    assert normalized(run(crlf, list(range(1, len(crlf))))) == normalized(run(STREAM))


def test_finish_sends_a_missing_tail():
    events = run(add("Echo") + finish("Echo: hi"))
    assert [e for e in events if isinstance(e, cn.TextDelta)] == [cn.TextDelta(0, "Echo"), cn.TextDelta(0, ": hi")]
    assert events[-2:] == [cn.BlockStop(0), cn.Finish("stop")]


def test_finish_without_adds_sends_its_text():
    events = run(finish("whole answer"))
    assert [type(e) for e in events] == [cn.MessageStart, cn.BlockStart, cn.TextDelta, cn.BlockStop, cn.Finish]
    assert events[2] == cn.TextDelta(0, "whole answer")


def test_finish_text_that_disagrees_is_ignored():
    events = run(add("abc") + finish("xyz"))
    assert [e for e in events if isinstance(e, cn.TextDelta)] == [cn.TextDelta(0, "abc")]
    assert events[-1] == cn.Finish("stop")


def test_finish_reason_length():
    assert run(add("a") + finish("a", finish_reason="length"))[-1] == cn.Finish("length")


def test_id_and_model_from_the_data():
    start = run(b'event: add\ndata: {"text": "a", "id": "m1", "model": "glm"}\n\n' + finish("a"))[0]
    assert (start.id, start.model) == ("m1", "glm")


def test_empty_add_opens_the_message_only():
    events = run(add("") + finish(""))
    assert [type(e) for e in events] == [cn.MessageStart, cn.BlockStart, cn.BlockStop, cn.Finish]


def test_error_event_after_text():
    events = run(add("Echo") + b'event: error\ndata: {"code": 500, "msg": "busy"}\n\n' + add("more"))
    assert events[-2:] == [cn.BlockStop(0), cn.StreamError("busy", "upstream_error", 502)]
    assert not any(isinstance(e, cn.TextDelta) and e.text == "more" for e in events)


def test_error_event_before_text():
    assert run(b'event: error\ndata: {"code": 401, "msg": "token expired"}\n\n') == [
        cn.StreamError("token expired", "upstream_error", 401)]


def test_error_event_with_plain_text():
    assert run(b"event: error\ndata: quota exhausted, too many requests\n\n") == [
        cn.StreamError("quota exhausted, too many requests", "upstream_error", 429)]


@pytest.mark.parametrize("data", [b"not json", b"[1]", b'{"content": "x"}', b'{"text": 5}'])
def test_malformed_add_is_an_error(data):
    events = run(add("a") + b"event: add\ndata: " + data + b"\n\n" + finish("a"))
    assert events[-2] == cn.BlockStop(0)
    assert isinstance(events[-1], cn.StreamError) and "malformed 'add'" in events[-1].message
    assert not any(isinstance(e, cn.Finish) for e in events)


def test_unknown_and_unnamed_events_are_ignored():
    events = run(b'data: {"text": "x"}\n\nevent: ping\ndata: {}\n\n' + add("a") + finish("a"))
    assert normalized(events) == normalized(run(add("a") + finish("a")))


def test_events_after_finish_are_ignored():
    assert normalized(run(add("a") + finish("a") + add("b"))) == normalized(run(add("a") + finish("a")))


def test_truncated_stream():
    events = run(add("Echo") + add(": h"))
    assert events[-2] == cn.BlockStop(0)
    assert events[-1].code == "stream_truncated" and "finish" in events[-1].message


def test_empty_stream_is_truncated():
    [err] = run(b"")
    assert err.code == "stream_truncated"


# --- whole responses -----------------------------------------------------------

def test_decode_response():
    resp = codegeex.decode_response(STREAM, "codegeex-4")
    assert resp.content == [cn.Text("Echo: hé 😀")]
    assert (resp.finish, resp.model, resp.finish_detail) == ("stop", "codegeex-4", None)
    assert resp.id.startswith("codegeex-") and resp.usage == cn.Usage()


def test_decode_response_takes_the_finish_tail():
    assert codegeex.decode_response(add("Ec") + finish("Echo")).content == [cn.Text("Echo")]


def test_decode_response_error():
    resp = codegeex.decode_response(add("Ec") + b'event: error\ndata: {"msg": "busy"}\n\n')
    assert (resp.finish, resp.finish_detail, resp.content) == ("error", "busy", [cn.Text("Ec")])


def test_decode_response_truncated():
    resp = codegeex.decode_response(add("Ec"))
    assert resp.finish == "error" and "finish" in resp.finish_detail


# --- errors --------------------------------------------------------------------

@pytest.mark.parametrize("body, expected", [
    (b'{"code": 401, "msg": "invalid token"}', ("invalid token", "401")),
    (b'{"code": "A0001", "message": "bad"}', ("bad", "A0001")),
    (b'{"error": {"message": "nested", "code": 7}}', ("nested", "7")),
    (b'{"error": "flat"}', ("flat", None)),
    (b'{"detail": "d"}', ("d", None)),
    (b"<html>502 Bad Gateway</html>", ("<html>502 Bad Gateway</html>", None)),
    (b'{"code": 500}', ('{"code": 500}', "500")),
    (b"", ("CodeGeeX answered HTTP 503.", None)),
])
def test_decode_error(body, expected):
    assert codegeex.decode_error(503, body) == expected
