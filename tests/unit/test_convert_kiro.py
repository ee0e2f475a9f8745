"""Kiro (CodeWhisperer / Q generateAssistantResponse): request bodies, the AWS binary event
stream (frames built here from the spec and checked against botocore's parser), errors."""

import base64
import binascii
import json
import struct

import pytest
from botocore.eventstream import EventStreamBuffer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converters import canonical as cn
from converters import kiro

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
LONG = "mcp__very_long_server_name_for_testing__and_an_even_longer_tool_name_that_goes_on"


# --- frames, straight from the spec -------------------------------------------

def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """prelude (total_len u32 BE, headers_len u32 BE, CRC32 of those 8 bytes), headers
    (name len u8, name, type 7 = string, value len u16 BE, value), payload, CRC32 of all before."""
    hdr = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        hdr += struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = 12 + len(hdr) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hdr))
    prelude += struct.pack(">I", binascii.crc32(prelude) & 0xFFFFFFFF)
    body = prelude + hdr + payload
    return body + struct.pack(">I", binascii.crc32(body) & 0xFFFFFFFF)


def event(kind: str, obj) -> bytes:
    return encode_frame({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                        json.dumps(obj).encode())


def text(s: str) -> bytes:
    return event("assistantResponseEvent", {"content": s})


def tool(tid: str, name: str, inp, stop: bool = False) -> bytes:
    body = {"toolUseId": tid, "name": name, "input": inp}
    if stop:
        body["stop"] = True
    return event("toolUseEvent", body)


def exception(kind: str, message: str) -> bytes:
    return encode_frame({":exception-type": kind, ":content-type": "application/json",
                         ":message-type": "exception"}, json.dumps({"message": message}).encode())


def run(data: bytes, chunks: list[int] | None = None, **kw) -> list[cn.Event]:
    d = kiro.StreamDecoder(**kw)
    out: list[cn.Event] = []
    if chunks is None:
        out += d.feed(data)
    else:
        pos = 0
        for n in chunks:
            out += d.feed(data[pos:pos + n])
            pos += n
        out += d.feed(data[pos:])
    return out + d.finish()


def norm(events: list[cn.Event]) -> list:
    """Events with the per-decoder message id and time taken out."""
    return [("start", e.model) if isinstance(e, cn.MessageStart) else e for e in events]


def merged(events: list[cn.Event]) -> list:
    """Events with consecutive deltas of one block joined (what a client ends up with)."""
    out: list = []
    for e in norm(events):
        if out and type(e) is type(out[-1]) and isinstance(e, (cn.TextDelta, cn.ThinkingDelta, cn.ArgumentsDelta)) \
                and e.index == out[-1].index:
            prev = out.pop()
            field = "json" if isinstance(e, cn.ArgumentsDelta) else "text"
            e = type(e)(e.index, getattr(prev, field) + getattr(e, field))
        out.append(e)
    return out


def test_frame_encoder_agrees_with_botocore():
    data = text("Hel") + text("lo ✓") + event("meteringEvent", {"unit": "credit", "usage": 0.25})
    buf = EventStreamBuffer()
    buf.add_data(data)
    msgs = list(buf)
    assert [m.headers[":event-type"] for m in msgs] == ["assistantResponseEvent"] * 2 + ["meteringEvent"]
    assert msgs[0].headers[":message-type"] == "event"
    assert json.loads(msgs[1].payload) == {"content": "lo ✓"}
    assert sum(m.prelude.total_length for m in msgs) == len(data)


# --- text ----------------------------------------------------------------------

STREAM = (text("Hello") + text(", wor") + text("ld ✓")
          + event("metadataEvent", {"tokenUsage": {"uncachedInputTokens": 120, "cacheReadInputTokens": 30,
                                                   "cacheWriteInputTokens": 7, "outputTokens": 11,
                                                   "totalTokens": 168}})
          + event("meteringEvent", {"unit": "credit", "usage": 0.02}))


def test_text_stream():
    events = run(STREAM, model="claude-sonnet-4.5")
    assert norm(events) == [
        ("start", "claude-sonnet-4.5"), cn.BlockStart(0, cn.Text("")), cn.TextDelta(0, "Hello"),
        cn.TextDelta(0, ", wor"), cn.TextDelta(0, "ld ✓"),
        cn.UsageUpdate(cn.Usage(input_tokens=157, output_tokens=11, cached_tokens=30, cache_write_tokens=7)),
        cn.BlockStop(0), cn.Finish("stop"),
    ]
    assert events[0].id.startswith("kiro-")


def test_text_stream_split_at_every_byte_gives_the_same_events():
    whole = norm(run(STREAM))
    for cut in range(1, len(STREAM)):
        assert norm(run(STREAM, [cut])) == whole, cut
    assert norm(run(STREAM, [1] * len(STREAM))) == whole


def test_nested_payload_and_unknown_events():
    data = (event("assistantResponseEvent", {"assistantResponseEvent": {"content": "a"}})
            + event("messageMetadataEvent", {"conversationId": "c"}) + event("followupPromptEvent", {"x": 1})
            + event("assistantResponseEvent", {"content": "ignored", "followupPrompt": {"content": "?"}})
            + encode_frame({":message-type": "event", ":event-type": "assistantResponseEvent"}, b"not json")
            + text("b"))
    assert [e.text for e in run(data) if isinstance(e, cn.TextDelta)] == ["a", "b"]


# --- thinking -----------------------------------------------------------------

def test_thinking_tags_across_chunks():
    data = (text("  <thi") + text("nking>\nLet me") + text(" think.</thin") + text("king>") + text("\n")
            + text("\nThe answer."))
    assert merged(run(data)) == [
        ("start", ""), cn.BlockStart(0, cn.Thinking("")), cn.ThinkingDelta(0, "Let me think."), cn.BlockStop(0),
        cn.BlockStart(1, cn.Text("")), cn.TextDelta(1, "The answer."), cn.BlockStop(1), cn.Finish("stop"),
    ]
    # the same split at every character: same result
    whole = "<thinking>\nLet me think.</thinking>\n\nThe answer."
    for cut in range(1, len(whole)):
        assert merged(run(text(whole[:cut]) + text(whole[cut:]))) == merged(run(text(whole))), cut


def test_quoted_close_tag_does_not_end_thinking():
    data = text("<thinking>the tag `</thinking>` ends it") + text("</thinking>\n\nok")
    out = merged(run(data))
    assert out[2] == cn.ThinkingDelta(0, "the tag `</thinking>` ends it")
    assert out[4:6] == [cn.BlockStart(1, cn.Text("")), cn.TextDelta(1, "ok")]


def test_thinking_tag_only_at_the_start_of_a_text_run():
    out = merged(run(text("Say <thinking> please")))
    assert out[1:3] == [cn.BlockStart(0, cn.Text("")), cn.TextDelta(0, "Say <thinking> please")]
    # unclosed thinking at the end is still thinking; a partial tag at the end is text
    out = merged(run(text("<thinking>hmm")))
    assert out[1:4] == [cn.BlockStart(0, cn.Thinking("")), cn.ThinkingDelta(0, "hmm"), cn.BlockStop(0)]
    assert merged(run(text("<thin")))[2] == cn.TextDelta(0, "<thin")
    # tags off: all text
    assert merged(run(text("<thinking>x</thinking>y"), thinking_tags=False))[2] == \
        cn.TextDelta(0, "<thinking>x</thinking>y")


def test_thinking_tag_after_a_tool_call_starts_a_new_run():
    data = (text("<thinking>a</thinking>\n\nCalling.") + tool("t1", "f", "{}", stop=True)
            + text("<thinking>b</thinking>done"))
    kinds = [(type(e.block).__name__ if isinstance(e, cn.BlockStart) else None) for e in run(data)]
    assert [k for k in kinds if k] == ["Thinking", "Text", "ToolCall", "Thinking", "Text"]


def test_reasoning_events_with_signature_and_redacted():
    data = (event("reasoningContentEvent", {"text": "Step 1. "}) + event("reasoningContentEvent", {"text": "Step 2."})
            + event("reasoningContentEvent", {"text": "", "signature": "sig=="})
            + event("reasoningContentEvent", {"redactedContent": "opaque"}) + text("Answer"))
    assert norm(run(data)) == [
        ("start", ""), cn.BlockStart(0, cn.Thinking("")), cn.ThinkingDelta(0, "Step 1. "),
        cn.ThinkingDelta(0, "Step 2."), cn.SignatureDelta(0, "sig=="), cn.BlockStop(0),
        cn.BlockStart(1, cn.RedactedThinking("opaque")), cn.BlockStop(1),
        cn.BlockStart(2, cn.Text("")), cn.TextDelta(2, "Answer"), cn.BlockStop(2), cn.Finish("stop"),
    ]
    r = kiro.decode_response(data)
    assert r.content == [cn.Thinking("Step 1. Step 2.", "sig=="), cn.RedactedThinking("opaque"), cn.Text("Answer")]


# --- tool calls -----------------------------------------------------------------

def args_of(events: list[cn.Event]) -> dict[int, str]:
    out: dict[int, str] = {}
    for e in events:
        if isinstance(e, cn.ArgumentsDelta):
            out[e.index] = out.get(e.index, "") + e.json
    return out


def test_tool_use_fragments():
    data = (text("Let me look.") + tool("t1", "read_file", "") + tool("t1", "read_file", '{"path": "/tm')
            + tool("t1", "read_file", 'p/a.txt", "limit": 1') + tool("t1", "read_file", "0}", stop=True)
            + tool("t2", "ls", '{"dir":"/"}', stop=True))
    events = run(data)
    assert [e for e in norm(events) if isinstance(e, (cn.BlockStart, cn.BlockStop, cn.Finish))] == [
        cn.BlockStart(0, cn.Text("")), cn.BlockStop(0), cn.BlockStart(1, cn.ToolCall("t1", "read_file", "")),
        cn.BlockStop(1), cn.BlockStart(2, cn.ToolCall("t2", "ls", "")), cn.BlockStop(2), cn.Finish("tool_calls"),
    ]
    assert json.loads(args_of(events)[1]) == {"path": "/tmp/a.txt", "limit": 10}
    r = kiro.decode_response(data)
    assert [(c.id, c.name, json.loads(c.arguments)) for c in r.content if isinstance(c, cn.ToolCall)] == [
        ("t1", "read_file", {"path": "/tmp/a.txt", "limit": 10}), ("t2", "ls", {"dir": "/"})]
    assert r.finish == "tool_calls"


@pytest.mark.parametrize("frames", [
    # the same event twice, first fragment (it equals everything so far)
    [tool("t", "f", '{"a": '), tool("t", "f", '{"a": '), tool("t", "f", '"x y", "n": 10}', stop=True)],
    # the same event twice in the middle (appending it would break the JSON)
    [tool("t", "f", '{"a": '), tool("t", "f", '"x y", '), tool("t", "f", '"x y", '),
     tool("t", "f", '"n": 10}', stop=True)],
    # the whole input re-sent with stop
    [tool("t", "f", '{"a": "x y", '), tool("t", "f", '"n": 10}'), tool("t", "f", '{"a": "x y", "n": 10}', stop=True)],
    # cumulative input instead of fragments
    [tool("t", "f", '{"a": '), tool("t", "f", '{"a": "x y"'), tool("t", "f", '{"a": "x y", "n": 10}'),
     tool("t", "f", '{"a": "x y", "n": 10}', stop=True)],
    # the whole frame sequence repeated after stop
    [tool("t", "f", '{"a": "x y", "n": 10}', stop=True), tool("t", "f", '{"a": "x y", "n": 10}', stop=True)],
    # the input as an object, alone or after fragments
    [tool("t", "f", {"a": "x y", "n": 10}, stop=True)],
    [tool("t", "f", '{"a": "x y", "n": 10}'), tool("t", "f", {"a": "x y", "n": 10}, stop=True)],
    # continuation without toolUseId, then a stop-only event
    [tool("t", "f", '{"a": "x y", '), event("toolUseEvent", {"input": '"n": 10}'}),
     event("toolUseEvent", {"stop": True})],
])
def test_tool_input_repeats_are_appended_once(frames):
    data = b"".join(frames)
    events = run(data)
    args = args_of(events)
    assert list(args) == [0]
    assert json.loads(args[0]) == {"a": "x y", "n": 10}
    assert sum(isinstance(e, cn.BlockStart) for e in events) == 1
    assert sum(isinstance(e, cn.BlockStop) for e in events) == 1
    # and at every byte boundary
    for cut in range(1, len(data), 7):
        assert norm(run(data, [cut])) == norm(events)


def test_repeats_that_keep_the_json_valid_are_real_output():
    data = tool("t", "f", '{"n": 1') + tool("t", "f", "0") + tool("t", "f", "0") + tool("t", "f", "}", stop=True)
    assert json.loads(args_of(run(data))[0]) == {"n": 100}


def test_broken_json_passes_unchanged():
    data = tool("t", "f", '{"a": 1') + tool("t", "f", "}}") + tool("t", "f", "}}", stop=True)
    assert args_of(run(data))[0] == '{"a": 1}}}}'


def test_long_tool_names_are_restored():
    short = kiro.short_tool_name(LONG)
    assert len(short) == 64 and short != LONG and short == kiro.short_tool_name(LONG)
    events = run(tool("t", short, "{}", stop=True), names={short: LONG})
    assert cn.BlockStart(0, cn.ToolCall("t", LONG, "")) in events


# --- usage ------------------------------------------------------------------------

def test_usage():
    events = run(text("x") + event("contextUsageEvent", {"contextUsagePercentage": 1.5}))
    assert cn.UsageUpdate(cn.Usage(input_tokens=3000)) in events
    events = run(text("x") + event("contextUsageEvent", {"contextUsagePercentage": 1.5}), context_window=None)
    assert not any(isinstance(e, cn.UsageUpdate) for e in events)
    events = run(text("x") + event("metadataEvent", {"tokenUsage": {"inputTokens": 10, "outputTokens": 2}})
                 + event("contextUsageEvent", {"contextUsagePercentage": 50}))
    assert [e for e in events if isinstance(e, cn.UsageUpdate)] == [
        cn.UsageUpdate(cn.Usage(input_tokens=10, output_tokens=2))]
    assert kiro.decode_response(STREAM).usage == cn.Usage(157, 11, 30, 0, 7)


# --- errors in the stream ------------------------------------------------------------

@pytest.mark.parametrize(("kind", "code", "status"), [
    ("ThrottlingException", "rate_limited", 429),
    ("ServiceQuotaExceededException", "quota_exhausted", 429),
    ("InternalServerException", "upstream_error", 502),
])
def test_exception_frames(kind, code, status):
    events = run(text("partial") + exception(kind, "Nope.") + text("never"))
    assert events[-3:] == [cn.TextDelta(0, "partial"), cn.BlockStop(0),
                           cn.StreamError(f"{kind}: Nope.", code, status)]
    assert not any(isinstance(e, cn.Finish) for e in events)
    r = kiro.decode_response(text("partial") + exception(kind, "Nope."))
    assert r.finish == "error" and r.finish_detail == f"{kind}: Nope." and r.content == [cn.Text("partial")]


def test_error_frames_and_invalid_state():
    frame = encode_frame({":message-type": "error", ":error-code": "ThrottlingException",
                          ":error-message": "Rate exceeded"}, b"")
    assert run(frame)[-1] == cn.StreamError("ThrottlingException: Rate exceeded", "rate_limited", 429)
    quota = encode_frame({":message-type": "exception", ":exception-type": "ThrottlingException"},
                         json.dumps({"message": "Limit reached", "reason": "MONTHLY_REQUEST_COUNT"}).encode())
    assert run(quota)[-1] == cn.StreamError("ThrottlingException: Limit reached (MONTHLY_REQUEST_COUNT)",
                                            "quota_exhausted", 429)
    events = run(text("a") + event("invalidStateEvent", {"reason": "INVALID_TASK_ASSIST_PLAN", "message": "bad"}))
    assert events[-1] == cn.StreamError("Kiro reported an invalid state: INVALID_TASK_ASSIST_PLAN: bad",
                                        "upstream_error", 502)


def test_corrupt_crc():
    good = text("Hello") + text("world")
    for pos in (len(text("Hello")) + 20, len(text("Hello")) + 2):  # payload byte, then prelude byte
        bad = bytearray(good)
        bad[pos] ^= 0x01
        events = run(bytes(bad))
        assert events[-1].code == "stream_corrupt" and events[-1].status == 502
        assert cn.TextDelta(0, "Hello") in events
        assert not any(isinstance(e, cn.Finish) for e in events)
    d = kiro.StreamDecoder()
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    events = d.feed(bytes(bad))
    assert events[-1].code == "stream_corrupt" and d.error is events[-1]
    assert d.feed(text("more")) == [] and d.finish() == []


def test_truncated_stream():
    data = text("Hello") + text("world")
    events = run(data[:-3])
    assert events[-3:-1] == [cn.TextDelta(0, "Hello"), cn.BlockStop(0)]
    assert events[-1].code == "stream_truncated"
    assert run(data[:5])[-1].code == "stream_truncated"  # inside the first prelude
    assert run(b"") == [cn.StreamError("The Kiro event stream ended before any event.", "stream_truncated", 502)]
    r = kiro.decode_response(data[:-3])
    assert r.finish == "error" and r.content == [cn.Text("Hello")]


# --- random chunkings ----------------------------------------------------------------

RICH = (text("<thinking>\nplan: ") + text("read it</thinking>\n\n") + text("Reading.")
        + tool("t1", LONG[:64], '{"path": "/a b/ü.txt", ') + tool("t1", LONG[:64], '{"path": "/a b/ü.txt", ')
        + tool("t1", LONG[:64], '"n": [1, 2]}')
        + tool("t1", LONG[:64], '{"path": "/a b/ü.txt", "n": [1, 2]}', stop=True)
        + event("reasoningContentEvent", {"text": "more", "signature": "s"}) + text("Done ✓")
        + event("metadataEvent", {"tokenUsage": {"uncachedInputTokens": 9, "outputTokens": 4}}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=40), max_size=40))
def test_random_chunkings_give_the_same_events(chunks):
    expected = norm(run(RICH))
    assert norm(run(RICH, chunks)) == expected
    assert json.loads(args_of(run(RICH, chunks))[2]) == {"path": "/a b/ü.txt", "n": [1, 2]}


_scalars = st.none() | st.booleans() | st.integers() | st.text(alphabet="ab \"\\é{}[]:,0", max_size=6)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(alphabet="abc", min_size=1, max_size=3), _values, max_size=4),
       st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=30))
def test_split_json_arguments_reassemble_exactly(obj, sizes):
    whole = json.dumps({"_root": obj}, ensure_ascii=False)
    frames, pos = [], 0
    for n in sizes:
        if pos < len(whole):
            frames.append(tool("t", "f", whole[pos:pos + n]))
            pos += n
    frames.append(tool("t", "f", whole[pos:], stop=True))
    assert args_of(run(b"".join(frames))) == {0: whole}


def test_json_prefix():
    for doc in ['{"a": [1, -2.5e3, true, false, null, "x\\"y\\u00e9"], "b": {}}', "[]", '"s"', " 12 "]:
        p = kiro.JsonPrefix()
        assert p.feed(doc) and p.complete, doc
    for bad in ['{"a" 1}', '{"a": 1}}', "{,", "[1 2]", '{"a": tru }', "nul1", '"\\uZZZZ"']:
        assert not kiro.JsonPrefix().feed(bad), bad
    assert kiro.JsonPrefix().feed('{"a": {"b": [1, "unfinished')


# --- requests ------------------------------------------------------------------------

def req(*messages, **kw) -> cn.Request:
    return cn.Request(model=kw.pop("model", "claude-sonnet-4-5"), messages=list(messages), **kw)


def user(*blocks) -> cn.Message:
    return cn.Message("user", [cn.Text(b) if isinstance(b, str) else b for b in blocks])


def assistant(*blocks) -> cn.Message:
    return cn.Message("assistant", [cn.Text(b) if isinstance(b, str) else b for b in blocks])


def test_model_ids():
    assert kiro.model_id("claude-sonnet-4-5") == "claude-sonnet-4.5"
    assert kiro.model_id("claude-haiku-4-5-20251001") == "claude-haiku-4.5"
    assert kiro.model_id("claude-opus-4-5-20251101") == "claude-opus-4.5"
    assert kiro.model_id("claude-sonnet-4.5") == "claude-sonnet-4.5"
    assert kiro.model_id("claude-sonnet-4") == "claude-sonnet-4"
    assert kiro.model_id("claude-sonnet-4-20250514") == "claude-sonnet-4"
    assert kiro.model_id("claude-3-7-sonnet-20250219") == "claude-3.7-sonnet"
    assert kiro.model_id("auto") == "auto"


def test_simple_request_with_system_folded():
    r = req(user("Hi"), system=[cn.Text("Be brief."), cn.Text("Be kind.")])
    assert kiro.encode_request(r, "conv-1", "arn:aws:codewhisperer:us-east-1:1:profile/X") == {
        "conversationState": {
            "agentTaskType": "vibe", "chatTriggerType": "MANUAL", "conversationId": "conv-1",
            "currentMessage": {"userInputMessage": {"content": "Be brief.\n\nBe kind.\n\nHi",
                                                    "modelId": "claude-sonnet-4.5", "origin": "AI_EDITOR"}},
        },
        "profileArn": "arn:aws:codewhisperer:us-east-1:1:profile/X",
    }
    assert "profileArn" not in kiro.encode_request(r, "c", None)


def test_history_alternates_and_system_goes_first():
    r = req(user("one"), user("two"), assistant("A"), assistant(cn.Thinking("hidden", "sig"), "B"),
            assistant(cn.Thinking("only thinking")), user("three"), system=[cn.Text("SYS")])
    state = kiro.encode_request(r, "c")["conversationState"]
    assert state["history"] == [
        {"userInputMessage": {"content": "SYS\n\none\n\ntwo", "modelId": "claude-sonnet-4.5", "origin": "AI_EDITOR"}},
        {"assistantResponseMessage": {"content": "A\n\nB"}},
    ]
    assert state["currentMessage"]["userInputMessage"]["content"] == "three"


def test_conversation_starting_or_ending_with_assistant():
    state = kiro.encode_request(req(assistant("Hello, how can I help?"), user("Hi")), "c")["conversationState"]
    assert state["history"] == [
        {"userInputMessage": {"content": ".", "modelId": "claude-sonnet-4.5", "origin": "AI_EDITOR"}},
        {"assistantResponseMessage": {"content": "Hello, how can I help?"}},
    ]
    state = kiro.encode_request(req(user("Write a poem"), assistant("Roses are")), "c")["conversationState"]
    assert [list(h) for h in state["history"]] == [["userInputMessage"], ["assistantResponseMessage"]]
    assert state["history"][1]["assistantResponseMessage"]["content"] == "Roses are"
    assert state["currentMessage"]["userInputMessage"]["content"] == "Continue"
    with pytest.raises(cn.ConversionError) as e:
        kiro.encode_request(req(assistant(cn.Thinking("x"))), "c")
    assert e.value.param == "messages"


def test_empty_content_placeholder():
    r = req(user(""), assistant(cn.ToolCall("t1", "f", "{}")), user(cn.ToolResult("t1", [cn.Text("")])))
    state = kiro.encode_request(r, "c")["conversationState"]
    assert state["history"][0]["userInputMessage"]["content"] == "."
    assert state["history"][1]["assistantResponseMessage"] == {
        "content": ".", "toolUses": [{"toolUseId": "t1", "name": "f", "input": {}}]}
    current = state["currentMessage"]["userInputMessage"]
    assert current["content"] == "."
    assert current["userInputMessageContext"]["toolResults"] == [
        {"toolUseId": "t1", "content": [{"text": "."}], "status": "success"}]


def test_tool_results_placement_tools_and_long_names():
    tools = [cn.Tool(LONG, "Reads.", {"type": "object", "properties": {"p": {"type": "string"}}}),
             cn.Tool("ls", None, None), cn.Tool("doc", "d" * 10000, None)]
    r = req(user("go"),
            assistant("Reading.", cn.ToolCall("t1", LONG, '{"p": "a"}')),
            user(cn.ToolResult("t1", [cn.Text("line 1"), cn.Text("line 2")]), "and list"),
            assistant(cn.ToolCall("t2", "ls", "[1]"), cn.ToolCall("t3", "ls", "")),
            user(cn.ToolResult("t2", [cn.Text("boom")], is_error=True), cn.ToolResult("t3", [cn.Text("ok")])),
            tools=tools, tool_choice=cn.ToolChoice("auto"))
    state = kiro.encode_request(r, "c")["conversationState"]
    short = kiro.short_tool_name(LONG)
    assert kiro.tool_names(r) == {short: LONG}
    h = state["history"]
    assert h[1]["assistantResponseMessage"]["toolUses"] == [{"toolUseId": "t1", "name": short, "input": {"p": "a"}}]
    assert h[2]["userInputMessage"]["content"] == "and list"
    assert h[2]["userInputMessage"]["userInputMessageContext"] == {"toolResults": [
        {"toolUseId": "t1", "content": [{"text": "line 1\nline 2"}], "status": "success"}]}
    assert h[3]["assistantResponseMessage"]["toolUses"] == [
        {"toolUseId": "t2", "name": "ls", "input": {"value": [1]}}, {"toolUseId": "t3", "name": "ls", "input": {}}]
    ctx = state["currentMessage"]["userInputMessage"]["userInputMessageContext"]
    assert ctx["toolResults"] == [{"toolUseId": "t2", "content": [{"text": "boom"}], "status": "error"},
                                  {"toolUseId": "t3", "content": [{"text": "ok"}], "status": "success"}]
    specs = [t["toolSpecification"] for t in ctx["tools"]]
    assert specs[0] == {"name": short, "description": "Reads.",
                        "inputSchema": {"json": {"type": "object", "properties": {"p": {"type": "string"}}}}}
    assert specs[1] == {"name": "ls", "description": "ls",
                        "inputSchema": {"json": {"type": "object", "properties": {}}}}
    assert len(specs[2]["description"]) == 9216
    assert all("userInputMessageContext" not in m.get("userInputMessage", {}) for m in h[:1])
    assert r.dropped == []
    # the decoder maps the short name back
    events = run(tool("t9", short, "{}", stop=True), names=kiro.tool_names(r))
    assert events[1] == cn.BlockStart(0, cn.ToolCall("t9", LONG, ""))


def test_images():
    r = req(user("What is this?", cn.Image("image/jpeg", PNG)),
            assistant("Let me crop.", cn.ToolCall("t1", "crop", "{}")),
            user(cn.ToolResult("t1", [cn.Text("cropped"), cn.Image("image/png", PNG)])))
    state = kiro.encode_request(r, "c")["conversationState"]
    assert state["history"][0]["userInputMessage"]["images"] == [{"format": "jpeg", "source": {"bytes": PNG}}]
    current = state["currentMessage"]["userInputMessage"]
    assert current["images"] == [{"format": "png", "source": {"bytes": PNG}}]
    assert base64.b64decode(current["images"][0]["source"]["bytes"]).startswith(b"\x89PNG")
    with pytest.raises(cn.ConversionError):
        kiro.encode_request(req(user(cn.Image(url="https://example.com/a.png"))), "c")
    with pytest.raises(cn.ConversionError):
        kiro.encode_request(req(user(cn.Image("image/tiff", PNG))), "c")
    with pytest.raises(cn.ConversionError):
        kiro.encode_request(req(user("x"), assistant(cn.Image("image/png", PNG))), "c")


def test_reasoning_and_dropped_parameters():
    r = req(user("Think."), system=[cn.Text("SYS")], reasoning=cn.Reasoning(budget_tokens=4096),
            temperature=0.2, max_tokens=100, stop=["X"], tool_choice=cn.ToolChoice("required"))
    content = kiro.encode_request(r, "c")["conversationState"]["currentMessage"]["userInputMessage"]["content"]
    assert content == ("<thinking_mode>enabled</thinking_mode><max_thinking_length>4096</max_thinking_length>"
                       "\n\nSYS\n\nThink.")
    assert sorted(r.dropped) == ["max_tokens", "stop", "temperature", "tool_choice"]
    assert kiro.thinking_budget(cn.Reasoning(effort="high")) == 24576
    assert kiro.thinking_budget(cn.Reasoning(effort="minimal")) is None
    assert kiro.thinking_budget(cn.Reasoning(budget_tokens=0)) is None
    assert kiro.thinking_budget(cn.Reasoning()) == 20000
    assert kiro.thinking_budget(None) is None


def test_request_errors():
    with pytest.raises(cn.ConversionError):
        kiro.encode_request(req(user("x"), assistant(cn.ToolCall("t", "f", "{not json"))), "c")
    with pytest.raises(cn.ConversionError):
        kiro.encode_request(req(user(cn.ToolCall("t", "f", "{}"))), "c")
    with pytest.raises(cn.ConversionError):
        kiro.encode_request(req(), "c")


# --- HTTP errors -----------------------------------------------------------------------

def test_decode_error():
    body = json.dumps({"__type": "com.amazon.aws.codewhisperer#ThrottlingException", "message": "Rate exceeded"})
    assert kiro.decode_error(429, body.encode()) == ("Rate exceeded", "rate_limited")
    body = json.dumps({"message": "You have reached the limit.", "reason": "MONTHLY_REQUEST_COUNT"})
    assert kiro.decode_error(400, body.encode()) == ("You have reached the limit. (MONTHLY_REQUEST_COUNT)",
                                                     "quota_exhausted")
    body = json.dumps({"__type": "ServiceQuotaExceededException:http://internal", "message": "Quota"})
    assert kiro.decode_error(400, body.encode()) == ("Quota", "quota_exhausted")
    body = json.dumps({"__type": "com.amazon#AccessDeniedException", "message": "Denied"})
    assert kiro.decode_error(403, body.encode()) == ("Denied", "AccessDeniedException")
    assert kiro.decode_error(429, b"{}") == ("Kiro answered HTTP 429.", "rate_limited")
    assert kiro.decode_error(500, b"<html>oops</html>") == ("<html>oops</html>", None)
    assert kiro.decode_error(502, b"") == ("Kiro answered HTTP 502.", None)
