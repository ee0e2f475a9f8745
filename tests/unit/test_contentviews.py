import binascii
import json
import struct

import pytest
from botocore.eventstream import EventStreamBuffer
from mitmproxy import contentviews, http
from mitmproxy.contentviews import Metadata
from mitmproxy.test import taddons, tflow

from llmgate.views.contentviews import (
    ContentViews,
    aws_eventstream_view,
    render_aws_eventstream,
    render_sse,
    sse_view,
)

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


# ------------------------------------------------------------------ LLM views (llm_views.py)
# Sample bodies are made with the gateway's own encoders from one canonical exchange, so each
# format is the one the gateway sends and receives; Kiro frames use encode_frame above.

from converters import anthropic as anthropic_wire  # noqa: E402
from converters import canonical as cn  # noqa: E402
from converters import codegeex as codegeex_wire  # noqa: E402
from converters import gemini as gemini_wire  # noqa: E402
from converters import kiro as kiro_wire  # noqa: E402
from converters import openai_chat as openai_wire  # noqa: E402
from converters import responses as responses_wire  # noqa: E402
from llmgate.views import llm_views  # noqa: E402

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
WEATHER = cn.Tool("get_weather", "Look up the weather.\nMore lines.", {
    "type": "object", "required": ["city"],
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}, "days": {"type": "array",
                                                                                       "items": {"type": "integer"}}}})


def canonical_request(tools: bool = True) -> cn.Request:
    return cn.Request(
        model="m1", system=[cn.Text("Be brief.")], stream=True, temperature=0.2, max_tokens=100,
        reasoning=cn.Reasoning(budget_tokens=2048), tools=[WEATHER] if tools else [],
        messages=[
            cn.Message("user", [cn.Text("Weather in Paris?"), cn.Image("image/png", PNG)]),
            cn.Message("assistant", [cn.ToolCall("call_1", "get_weather", '{"city":"Paris"}')]),
            cn.Message("user", [cn.ToolResult("call_1", [cn.Text("sunny, 21C")], name="get_weather")]),
        ] if tools else [cn.Message("user", [cn.Text("Weather in Paris?")]),
                         cn.Message("assistant", [cn.Text("Sunny.")]), cn.Message("user", [cn.Text("And Rome?")])])


EVENTS = [
    cn.MessageStart("r1", "m1"), cn.BlockStart(0, cn.Thinking("")), cn.ThinkingDelta(0, "Let me look."),
    cn.BlockStop(0), cn.BlockStart(1, cn.Text("")), cn.TextDelta(1, "Checking "), cn.TextDelta(1, "Rome ✓"),
    cn.BlockStop(1), cn.BlockStart(2, cn.ToolCall("call_2", "get_weather", "")),
    cn.ArgumentsDelta(2, '{"city":'), cn.ArgumentsDelta(2, '"Rome"}'), cn.BlockStop(2),
    cn.UsageUpdate(cn.Usage(input_tokens=10, output_tokens=5, cached_tokens=2, reasoning_tokens=1)),
    cn.Finish("tool_calls"),
]
RESPONSE = cn.Response("r1", "m1", [cn.Text("Checking Rome ✓"),
                                   cn.ToolCall("call_2", "get_weather", '{"city":"Rome"}')], "tool_calls",
                       cn.Usage(input_tokens=10, output_tokens=5))

# format -> (client-side path, request body, SSE stream, whole JSON answer)
FORMATS = {
    "LLM OpenAI Chat": ("/v1/chat/completions", openai_wire.encode_request(canonical_request()),
                        openai_wire.StreamEncoder("m1", True).encode(EVENTS),
                        openai_wire.encode_response(RESPONSE, "m1")),
    "LLM OpenAI Responses": ("/v1/responses", responses_wire.encode_request(canonical_request()),
                             responses_wire.StreamEncoder("m1").encode(EVENTS),
                             responses_wire.encode_response(RESPONSE, "m1")),
    "LLM Anthropic Messages": ("/v1/messages", anthropic_wire.encode_request(canonical_request()),
                               anthropic_wire.StreamEncoder("m1").encode(EVENTS),
                               anthropic_wire.encode_response(RESPONSE, "m1")),
    "LLM Gemini": ("/v1beta/models/m1:streamGenerateContent", gemini_wire.encode_request(canonical_request()),
                   gemini_wire.StreamEncoder("m1").encode(EVENTS), gemini_wire.encode_response(RESPONSE, "m1")),
}


def llm_exchange(path: str, req: bytes, resp: bytes, resp_type: str, status: int = 200, view: str = "auto"):
    f = tflow.tflow(req=http.Request.make("POST", "http://127.0.0.1:8080" + path, req,
                                          {"content-type": "application/json"}),
                    resp=http.Response.make(status, resp, {"content-type": resp_type}))
    with taddons.context(ContentViews()):
        return contentviews.prettify_message(f.request, f, view), contentviews.prettify_message(f.response, f, view)


def assert_request_shown(text: str, tool_calls: bool = True) -> None:
    lines = text.split("\n")
    assert lines[0] == "model: m1"
    assert "stream: true" in lines[1]
    assert any(line.startswith("sampling: ") and "max_tokens=100" in line and "temperature=0.2" in line
               for line in lines)
    assert lines[lines.index("## system") + 1] == "Be brief."
    user = lines.index("## user")
    assert lines[user + 1: user + 3] == ["Weather in Paris?", "[image image/png, 70 bytes]"]
    assert "-> tool call get_weather (call_" in text
    assert '  "city": "Paris"' in lines  # the arguments parsed and indented
    assert any(line.startswith("<- tool result") and "call_" in line for line in lines)
    assert "sunny, 21C" in lines
    assert lines[lines.index("## tools (1)") + 1] == (
        "get_weather(city: string, unit?: \"c\"|\"f\", days?: integer[]) - Look up the weather.")


def assert_answer_shown(text: str, thinking: bool = True) -> list[str]:
    """The assembled message comes first; returns the event lines after it."""
    lines = text.split("\n")
    assert lines[0].startswith("## assistant (model m1, id ")
    head = lines[: lines.index("## events") if "## events" in lines else len(lines)]
    if thinking:
        assert head[1:4] == ["[thinking]", "Let me look.", "[/thinking]"]
    assert "Checking Rome ✓" in head
    assert head[head.index("Checking Rome ✓") + 1].startswith("-> tool call get_weather (call_")
    assert '  "city": "Rome"' in head
    assert "finish: tool_calls" in head
    assert any(line.startswith("usage: 10 in") and "5 out" in line for line in head)
    events = [i for i, line in enumerate(lines) if line.startswith("## events (")]
    return lines[events[0] + 1:] if events else []


@pytest.mark.parametrize("name", FORMATS)
def test_llm_view_stream_exchange(name):
    path, body, stream, _ = FORMATS[name]
    req, resp = llm_exchange(path, json.dumps(body).encode(), stream, "text/event-stream")
    assert (req.view_name, resp.view_name) == (name, name)
    assert_request_shown(req.text)
    events = assert_answer_shown(resp.text, thinking=True)
    assert len(events) >= 4 and all(len(e) <= 200 for e in events)
    assert not any(e.startswith("data: ") for e in events)


def test_llm_view_openai_events_and_done_sentinel():
    _, _, stream, _ = FORMATS["LLM OpenAI Chat"]
    events = assert_answer_shown(llm_exchange("/v1/chat/completions", b"{}", stream, "text/event-stream")[1].text)
    assert events[-2] == "── [DONE] (end of stream) ──" and events[-1] == ""
    assert "[DONE]" not in "\n".join(events[:-2])
    # the id, model and object a chunk repeats are left out after the first one
    assert '"model":"m1"' in events[0] and '"model"' not in events[2]
    assert events[2].startswith('chat.completion.chunk {"created":') and '"content":"Checking "' in events[2]


def test_llm_view_anthropic_event_names_and_indexes():
    _, _, stream, _ = FORMATS["LLM Anthropic Messages"]
    events = assert_answer_shown(llm_exchange("/v1/messages", b"{}", stream, "text/event-stream")[1].text)
    assert events[0].startswith('message_start {"message":{')
    assert events[1] == ('content_block_start {"index":0,"content_block":{"type":"thinking","thinking":"",'
                         '"signature":""}}')
    assert events[6] == 'content_block_delta {"index":1,"delta":{"type":"text_delta","text":"Rome ✓"}}'
    assert events[-2] == "message_stop {}"


@pytest.mark.parametrize("name", FORMATS)
def test_llm_view_whole_json_answer(name):
    path, body, _, answer = FORMATS[name]
    path = path.replace(":streamGenerateContent", ":generateContent")
    resp = llm_exchange(path, json.dumps(body).encode(), json.dumps(answer).encode(), "application/json")[1]
    assert resp.view_name == name
    assert_answer_shown(resp.text, thinking=False)
    assert "## events" not in resp.text


def test_llm_view_gemini_json_array_and_code_assist_envelope():
    chunks = json.loads(gemini_wire.StreamEncoder("m1", sse=False).encode(EVENTS))
    resp = llm_exchange("/v1beta/models/m1:streamGenerateContent", b"{}", json.dumps(chunks).encode(),
                        "application/json")[1]
    events = assert_answer_shown(resp.text)
    assert events[0].startswith('chunk {"candidates":')
    # the Code Assist envelope, both ways, on the provider-side path
    body = gemini_wire.wrap_code_assist(gemini_wire.encode_request(canonical_request()), "m1", "proj-1")
    stream = gemini_wire.StreamEncoder("m1", code_assist=True).encode(EVENTS)
    req, resp = llm_exchange("/v1internal:streamGenerateContent?alt=sse", json.dumps(body).encode(), stream,
                             "text/event-stream")
    assert (req.view_name, resp.view_name) == ("LLM Gemini", "LLM Gemini")
    assert_request_shown(req.text)
    assert "thinking: budget_tokens=2048" in req.text
    assert assert_answer_shown(resp.text)[0].startswith('data {"response":{"candidates":')


def test_llm_view_kiro():
    body = kiro_wire.encode_request(canonical_request(), "conv-1")
    stream = (event_frame("assistantResponseEvent", {"content": "<thinking>Let me look.</thinking>"})
              + event_frame("assistantResponseEvent", {"content": "Checking Rome ✓"})
              + event_frame("toolUseEvent", {"toolUseId": "call_2", "name": "get_weather", "input": '{"city":'})
              + event_frame("toolUseEvent", {"toolUseId": "call_2", "name": "get_weather", "input": '"Rome"}',
                                             "stop": True})
              + event_frame("meteringEvent", {"unit": "credit", "usage": 0.25}))
    req, resp = llm_exchange("/generateAssistantResponse", json.dumps(body).encode(), stream,
                             "application/vnd.amazon.eventstream")
    assert (req.view_name, resp.view_name) == ("LLM Kiro", "LLM Kiro")
    assert req.text.startswith("model: m1\nstream: true\n")
    assert "-> tool call get_weather (call_1):" in req.text and "<- tool result (call_1):" in req.text
    assert "get_weather(city: string, unit?: \"c\"|\"f\", days?: integer[]) - Look up the weather." in req.text
    lines = resp.text.split("\n")
    assert lines[1:4] == ["[thinking]", "Let me look.", "[/thinking]"]
    assert lines[4] == "Checking Rome ✓" and lines[5] == "-> tool call get_weather (call_2):"
    assert "finish: tool_calls" in lines
    events = lines[lines.index(next(x for x in lines if x.startswith("## events"))) + 1:]
    assert events[0] == 'assistantResponseEvent {"content":"<thinking>Let me look.</thinking>"}'
    assert events[4] == 'meteringEvent {"unit":"credit","usage":0.25}'


def test_llm_view_codegeex():
    body = codegeex_wire.encode_request(canonical_request(tools=False), "talk-1", "machine-1")
    stream = (b'event: add\ndata: {"id":"g1","model":"codegeex-4","text":"Sunny "}\n\n'
              b'event: add\ndata: {"text":"too."}\n\n'
              b'event: finish\ndata: {"text":"Sunny too.","finish_reason":"stop"}\n\n')
    req, resp = llm_exchange("/prod/code/chatCodeSseV3/chat", json.dumps(body).encode(), stream,
                             "text/event-stream")
    assert (req.view_name, resp.view_name) == ("LLM CodeGeeX", "LLM CodeGeeX")
    assert req.text.endswith("\n\n## user\nBe brief.\n\nWeather in Paris?\n\n## assistant\nSunny.\n\n"
                             "## user\nAnd Rome?\n")
    lines = resp.text.split("\n")
    assert lines[:2] == ["## assistant (model codegeex-4, id g1)", "Sunny too."]
    assert "finish: stop" in lines
    assert 'finish {"text":"Sunny too.","finish_reason":"stop"}' in lines


def test_llm_view_malformed_bodies_never_raise():
    req, resp = llm_exchange("/v1/messages", b'{"model": "m1", "messages": [', b"data: {oops\n\n",
                             "text/event-stream")
    assert req.view_name == "LLM Anthropic Messages"
    assert req.text.startswith("# not decoded as a Anthropic Messages request: JSONDecodeError")
    assert "finish: error (The upstream sent a stream event that is not valid JSON" in resp.text
    assert resp.text.rstrip().endswith("data {oops")
    # decodable JSON of the wrong shape
    assert llm_exchange("/v1/chat/completions", b"[1]", b"{}", "application/json")[0].text.startswith(
        "# not decoded as a OpenAI Chat request: ConversionError")
    # a stream cut short: what arrived, then why it is not complete
    _, _, stream, _ = FORMATS["LLM Anthropic Messages"]
    cut = llm_exchange("/v1/messages", b"{}", stream[: stream.index(b"event: content_block_stop\ndata: "
                                                                          b'{"type":"content_block_stop","index":1')],
                       "text/event-stream")[1].text
    assert cut.split("\n")[4] == "Checking Rome ✓"
    assert "finish: error (The upstream stream ended before the response was complete (no message_stop).)" in cut
    # a corrupt Kiro frame
    bad = bytearray(KIRO)
    bad[len(event_frame("assistantResponseEvent", {"content": "Hel"})) + 40] ^= 0xFF
    text = llm_exchange("/generateAssistantResponse", b"{}", bytes(bad), "application/vnd.amazon.eventstream")[1].text
    assert text.split("\n")[1] == "Hel"
    assert "finish: error (The Kiro event stream is corrupt (ChecksumMismatch" in text
    assert "# frames not listed past here: ChecksumMismatch" in text
    # JSON nested beyond the limit is refused before json.loads recurses (called directly: mitmproxy's
    # own GraphQL view logs a RecursionError for such a body when it is asked for its priority)
    deep = b"[" * 100_000 + b"]" * 100_000
    assert llm_views.render_request(llm_views.RESPONSES, deep, "/v1/responses") == [
        "# not decoded as a OpenAI Responses request: ValueError: the JSON nests deeper than 128 levels"]
    assert "nests deeper than" in llm_views.render_response(llm_views.RESPONSES, deep, "application/json")[0]


def test_llm_view_caps_the_work(monkeypatch):
    _, body, stream, answer = FORMATS["LLM OpenAI Chat"]
    whole, request = json.dumps(answer).encode(), json.dumps(body).encode()
    assert 300 < len(whole) < len(request)
    monkeypatch.setattr(llm_views, "MAX_STREAM", 300)
    monkeypatch.setattr(llm_views, "MAX_JSON", len(whole))
    req, resp = llm_exchange("/v1/chat/completions", request, stream, "text/event-stream")
    assert req.text == f"# the body has {len(request)} bytes, more than the {len(whole)} this view decodes: " \
                       "see the JSON view\n"
    assert resp.text.startswith(f"# only the first 300 of {len(stream)} bytes were decoded\n## assistant")
    assert "finish: error" in resp.text  # what was cut off is not shown as complete
    assert assert_answer_shown(llm_exchange("/v1/chat/completions", b"{}", whole, "application/json")[1].text,
                               thinking=False) == []
    big = llm_exchange("/v1/chat/completions", b"{}", whole + b" ", "application/json")[1].text
    assert big.startswith(f"# the body has {len(whole) + 1} bytes, more than the {len(whole)}")
    chunks = gemini_wire.StreamEncoder("m1", sse=False).encode(EVENTS)  # a stream as one JSON array
    monkeypatch.setattr(llm_views, "MAX_JSON", len(chunks))
    assert llm_exchange("/v1beta/models/m1:streamGenerateContent", b"{}", chunks, "application/json")[1].text == (
        f"# a stream of {len(chunks)} bytes, more than the 300 this view decodes: see the JSON view\n")


def test_llm_view_event_lines_capped(monkeypatch):
    monkeypatch.setattr(llm_views, "MAX_EVENT_LINES", 3)
    _, _, stream, _ = FORMATS["LLM Anthropic Messages"]
    text = llm_exchange("/v1/messages", b"{}", stream, "text/event-stream")[1].text
    assert text.rstrip().split("\n")[-4:-1][-1].startswith("content_block_delta")
    assert text.rstrip().endswith("# 11 more events not shown")


@pytest.mark.parametrize(("path", "status", "expected"), [
    ("/v1/chat/completions", 429, "JSON"),  # an error answer reads best as JSON
    ("/v1/messages/count_tokens", 200, "JSON"),
    ("/v1/models", 200, "JSON"),
    ("/openrouter/v1/chat/completions?x=1", 200, "LLM OpenAI Chat"),  # forced provider, query
    ("/api/v1/chat/completions", 200, "LLM OpenAI Chat"),  # an OpenAI-compatible upstream
    ("/backend-api/codex/responses", 200, "LLM OpenAI Responses"),
    ("/anthropic/messages", 200, "LLM Anthropic Messages"),
    ("/v1beta/models/gemini-2.5-pro:generateContent", 200, "LLM Gemini"),
    ("/v1internal:generateContent", 200, "LLM Gemini"),
])
def test_llm_view_chosen_by_path(path, status, expected):
    assert llm_exchange(path, b"{}", b'{"error": {"message": "x"}}', "application/json", status)[1].view_name \
        == expected


def test_generic_views_still_chosen_off_the_llm_paths():
    _, _, stream, _ = FORMATS["LLM Anthropic Messages"]
    assert llm_exchange("/elsewhere", b"{}", stream, "text/event-stream")[1].view_name == "SSE"
    assert llm_exchange("/elsewhere", b"{}", KIRO, "application/vnd.amazon.eventstream")[1].view_name \
        == "AWS EventStream"
    # and can be picked by hand on an LLM flow
    assert llm_exchange("/v1/messages", b"{}", stream, "text/event-stream", view="sse")[1].view_name == "SSE"


@pytest.mark.parametrize("view_name", [w.name.lower() for w in llm_views.WIRES])
def test_llm_views_listed(view_name):
    with taddons.context(ContentViews()):
        assert view_name in contentviews.registry.available_views()
