"""Same-format stream passthrough (converters.*.StreamRelabel): bytes kept, model renamed,
ends checked, errors in each format's own shape."""

import json

import pytest

from converters import anthropic, gemini, openai_chat, responses
from converters import canonical as cn
from converters.sse import SSEParser, StreamFault

ANTHROPIC_STREAM = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
    b'"role":"assistant","model":"claude-x-20250101","content":[],"usage":{"input_tokens":3,"output_tokens":0}}}\n\n'
    b'event: ping\ndata: {"type": "ping"}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"Hi \\u00e9"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
    b'"usage":{"output_tokens":2}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)
GEMINI_STREAM = (
    b'data: {"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"}}],"modelVersion":"gemini-x-001"}\r\n\r\n'
    b'data: {"candidates":[{"content":{"parts":[{"text":"!"}],"role":"model"},"finishReason":"STOP"}],'
    b'"usageMetadata":{"promptTokenCount":1},"modelVersion":"gemini-x-001"}\r\n\r\n'
)
RESPONSES_STREAM = (
    b'event: response.created\ndata: {"type":"response.created","sequence_number":0,'
    b'"response":{"id":"resp_1","model":"gpt-x-2025","status":"in_progress","output":[]}}\n\n'
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":1,'
    b'"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi"}\n\n'
    b'event: response.completed\ndata: {"type":"response.completed","sequence_number":2,'
    b'"response":{"id":"resp_1","model":"gpt-x-2025","status":"completed","output":[]}}\n\n'
)


def run(relabel, stream: bytes, split: int = 7) -> bytes:
    out = b"".join(relabel.feed(stream[i:i + split]) for i in range(0, len(stream), split))
    return out + relabel.finish()


def events(raw: bytes) -> list[tuple[str | None, dict]]:
    return [(e.event, json.loads(e.data)) for e in SSEParser().feed(raw) if e.data]


@pytest.mark.parametrize("split", [1, 7, 10_000])
def test_anthropic_same_model_is_byte_identical(split):
    assert run(anthropic.StreamRelabel("claude-x-20250101"), ANTHROPIC_STREAM, split) == ANTHROPIC_STREAM


def test_anthropic_model_renamed_only_in_message_start():
    out = run(anthropic.StreamRelabel("sonnet"), ANTHROPIC_STREAM)
    evs = events(out)
    assert evs[0][1]["message"]["model"] == "sonnet"
    assert [name for name, _ in evs] == [name for name, _ in events(ANTHROPIC_STREAM)]
    # everything after message_start is the upstream's bytes
    assert out.endswith(ANTHROPIC_STREAM[ANTHROPIC_STREAM.index(b"event: ping"):])


def test_anthropic_truncated_and_broken_streams_end_with_an_error_event():
    cut = ANTHROPIC_STREAM[:ANTHROPIC_STREAM.index(b"event: message_delta")]
    name, body = events(run(anthropic.StreamRelabel("m"), cut))[-1]
    assert name == "error" and body["error"]["type"] == "api_error"
    assert "message_stop" in body["error"]["message"]
    r = anthropic.StreamRelabel("m")
    r.feed(cut)
    name, body = events(r.fail("gone", "upstream_disconnected"))[-1]
    assert (name, body["error"]["message"]) == ("error", "gone")
    assert r.finish() == b""  # nothing after the error


def test_anthropic_upstream_error_event_is_not_doubled():
    stream = ANTHROPIC_STREAM[:200] + b'\n\nevent: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}\n\n'
    r = anthropic.StreamRelabel("m")
    out = r.feed(stream) + r.finish()
    assert [n for n, _ in events(out)].count("error") == 1


def test_gemini_sse_rename_and_array_framing():
    out = run(gemini.StreamRelabel("flash"), GEMINI_STREAM)
    assert [b["modelVersion"] for _, b in events(out)] == ["flash", "flash"]
    arr = json.loads(run(gemini.StreamRelabel("gemini-x-001", sse=False), GEMINI_STREAM))
    assert [c["candidates"][0]["content"]["parts"][0]["text"] for c in arr] == ["Hi", "!"]
    # same model: the array holds the upstream's JSON text unchanged
    framed = run(gemini.StreamRelabel("gemini-x-001", sse=False), GEMINI_STREAM)
    assert GEMINI_STREAM.split(b"\r\n\r\n")[0][len(b"data: "):] in framed


def test_gemini_truncation_as_array_error_element():
    cut = GEMINI_STREAM.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    arr = json.loads(run(gemini.StreamRelabel("m", sse=False), cut))
    assert arr[-1]["error"]["status"] == "UNAVAILABLE" and "finishReason" in arr[-1]["error"]["message"]
    assert json.loads(run(gemini.StreamRelabel("m", sse=False), b"")) == [
        {"error": {"code": 502, "message": arr[-1]["error"]["message"], "status": "UNAVAILABLE"}}]


def test_responses_rename_and_failed_event():
    out = run(responses.StreamRelabel("codex"), RESPONSES_STREAM)
    models = [b["response"]["model"] for _, b in events(out) if "response" in b]
    assert models == ["codex", "codex"]
    cut = RESPONSES_STREAM[:RESPONSES_STREAM.index(b"event: response.completed")]
    name, body = events(run(responses.StreamRelabel("codex"), cut))[-1]
    assert name == "response.failed" and body["sequence_number"] == 2
    assert body["response"]["id"] == "resp_1" and body["response"]["error"]["code"] == "server_error"


# --- malformed events: an error, never relayed raw, never a normal stop ------------------------

BAD = b'data: {"choices": [\n\n'


@pytest.mark.parametrize("relabel, good", [
    (lambda: anthropic.StreamRelabel("m"), ANTHROPIC_STREAM[:ANTHROPIC_STREAM.index(b"event: content_block_start")]),
    (lambda: gemini.StreamRelabel("m"), GEMINI_STREAM[:GEMINI_STREAM.index(b"\r\n\r\n") + 4]),
    (lambda: gemini.StreamRelabel("m", sse=False), GEMINI_STREAM[:GEMINI_STREAM.index(b"\r\n\r\n") + 4]),
    (lambda: responses.StreamRelabel("m"), RESPONSES_STREAM[:RESPONSES_STREAM.index(b"event: response.output")]),
    (lambda: openai_chat.StreamRelabel("m"), b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'),
])
def test_a_malformed_event_stops_a_relabel_with_what_came_before_it(relabel, good):
    r = relabel()
    with pytest.raises(StreamFault) as e:
        r.feed(good + BAD + good)
    assert e.value.code == "upstream_malformed" and "not valid JSON" in e.value.message
    out = e.value.before + r.fail("Upstream 'x' " + e.value.message, e.value.code)
    assert b'{"choices": [' not in out and b"not valid JSON" in out
    if isinstance(r, gemini.StreamRelabel) and not r.sse:
        assert json.loads(out)[-1]["error"]["message"].startswith("Upstream 'x' sent")  # still one JSON array
    else:  # the format's own error event: Anthropic's and OpenAI's/Gemini's "error", Responses' response.failed
        last = events(out)[-1][1]
        assert last.get("type") in ("error", "response.failed") or "error" in last, last


@pytest.mark.parametrize("decoder, good", [
    (anthropic.StreamDecoder, ANTHROPIC_STREAM[:ANTHROPIC_STREAM.index(b"event: content_block_stop")]),
    (gemini.StreamDecoder, GEMINI_STREAM[:GEMINI_STREAM.index(b"\r\n\r\n") + 4]),
    (responses.StreamDecoder, RESPONSES_STREAM[:RESPONSES_STREAM.index(b"event: response.completed")]),
    (openai_chat.StreamDecoder, b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'),
])
def test_a_malformed_event_ends_a_decoded_stream_with_an_error(decoder, good):
    d = decoder()
    out = d.feed(good + BAD) + d.feed(b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\n') + d.finish()
    errors = [e for e in out if isinstance(e, cn.StreamError)]
    assert [e.code for e in errors] == ["upstream_malformed"]
    assert not any(isinstance(e, cn.Finish) for e in out)
    assert isinstance(out[-1], cn.StreamError)


# --- the model renamed by splicing the event's bytes: every other byte kept ---------------------

def test_openai_rename_keeps_every_other_byte():
    chunk = (b'data: {"id":"c1", "model": "gpt-x", "choices":[{"index":0,"delta":{"content":"caf\\u00e9 \\"model\\":'
             b'\\"gpt-x\\""},"finish_reason":null}]}\n\n')
    out = openai_chat.StreamRelabel("alias").feed(chunk)
    assert out == chunk.replace(b'"model": "gpt-x"', b'"model": "alias"')
    assert json.loads(out[6:])["choices"][0]["delta"]["content"] == 'café "model":"gpt-x"'


def test_gemini_rename_keeps_every_other_byte():
    out = run(gemini.StreamRelabel("flash"), GEMINI_STREAM)
    assert out == GEMINI_STREAM.replace(b'"modelVersion":"gemini-x-001"', b'"modelVersion":"flash"')


@pytest.mark.parametrize("chunk", [
    b'data: {"model":"gpt-x","choices":[],"meta":{"model":"gpt-x"}}\n\n',  # a second member of that name
    b'data: {"choices":[],"model":"gpt-x","name":"model"}\n\n',  # the name as a value
    b'data: {"choices":[],"model" : "gpt-x"}\n\n',  # spacing the splice does not look for
    b'data: {"choices":[],"model":"gpt\\u002dx"}\n\n',  # the value escaped
    b'data: {"choices":[{"delta":{"content":"x\\\\"}}],"model":"gpt-x"}\n\n',  # a string ending in a backslash
])
def test_a_model_member_the_splice_cannot_vouch_for_is_re_encoded(chunk):
    out = openai_chat.StreamRelabel("alias").feed(chunk)
    body = json.loads(out[6:])
    assert body["model"] == "alias"
    assert {k: v for k, v in body.items() if k != "model"} == {
        k: v for k, v in json.loads(chunk[6:]).items() if k != "model"}
