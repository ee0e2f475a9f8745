import json

import pytest

from converters import openai_chat as oc


def test_parse_request_keeps_unknown_fields():
    body = b'{"model":"m","messages":[{"role":"user","content":"hi","x_extra":1}],"vendor_flag":true}'
    data, req = oc.parse_request(body)
    assert req.model == "m" and data["vendor_flag"] is True
    assert oc.with_model(data, body, "m") is body  # unchanged -> same bytes
    assert json.loads(oc.with_model(data, body, "up")) == {**json.loads(body), "model": "up"}


@pytest.mark.parametrize(
    "body, param",
    [
        (b"", None),
        (b"{not json", None),
        (b"[1]", None),
        (b'{"messages":[{"role":"user","content":"x"}]}', "model"),
        (b'{"model":"m"}', "messages"),
        (b'{"model":"m","messages":[]}', "messages"),
        (b'{"model":"m","messages":[{"content":"x"}]}', "messages.0.role"),
        (b'{"model":"m","messages":[{"role":"user"}],"stream":"yes"}', "stream"),
        (b'{"model":5,"messages":[{"role":"user"}]}', "model"),
    ],
)
def test_bad_requests(body, param):
    with pytest.raises(oc.RequestError) as e:
        oc.parse_request(body)
    assert e.value.param == param
    assert str(e.value)


def test_rename_model():
    body = b'{"id":"x","model":"gpt-4o-2024-08-06","choices":[]}'
    assert json.loads(oc.rename_model(body, "gpt-4o"))["model"] == "gpt-4o"
    assert oc.rename_model(b'{"model":"same"}', "same") == b'{"model":"same"}'
    with pytest.raises(ValueError):  # an HTML page is no answer: the caller says so
        oc.rename_model(b"<html>not json</html>", "m")


def chunk(model, **delta_or_finish):
    return ("data: " + json.dumps({"model": model, "choices": [{"index": 0, **delta_or_finish}]}) + "\n\n").encode()


def test_stream_relabel_rewrites_model_and_passes_other_events_verbatim():
    r = oc.StreamRelabel("alias")
    up = b": hello\n\n" + chunk("real", delta={"content": "hi"}) + chunk("alias", delta={}, finish_reason="stop")
    out = r.feed(up[:7]) + r.feed(up[7:]) + r.feed(b"data: [DONE]\n\n") + r.finish()
    text = out.decode()
    assert text.startswith(": hello\n\n")
    assert '"model": "alias"' in text and "real" not in text  # spliced: the upstream's spacing is kept
    assert chunk("alias", delta={}, finish_reason="stop").decode() in text  # untouched event, same bytes
    assert text.endswith("data: [DONE]\n\n") and text.count("[DONE]") == 1


def test_stream_relabel_adds_done_after_finish_without_done():
    r = oc.StreamRelabel("m")
    out = r.feed(chunk("m", delta={}, finish_reason="length")) + r.finish()
    assert out.endswith(b"data: [DONE]\n\n")


def test_stream_relabel_truncated_stream_ends_with_error():
    r = oc.StreamRelabel("m")
    out = r.feed(chunk("m", delta={"content": "partial"})) + r.feed(b'data: {"half')
    out += r.finish()
    last = out.decode().strip().split("\n\n")[-1]
    err = json.loads(last.removeprefix("data: "))["error"]
    assert err["code"] == "stream_truncated" and "finish_reason" in err["message"]


def test_stream_relabel_failure_after_done_adds_nothing():
    r = oc.StreamRelabel("m")
    r.feed(chunk("m", delta={}, finish_reason="stop") + b"data: [DONE]\n\n")
    assert r.fail("gone") == b""
    r2 = oc.StreamRelabel("m")
    assert b"upstream_disconnected" in r2.fail("gone", "upstream_disconnected")


def test_stream_relabel_records_usage():
    r = oc.StreamRelabel("m")
    r.feed(b'data: {"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n')
    assert r.usage == {"prompt_tokens": 3, "completion_tokens": 2}
