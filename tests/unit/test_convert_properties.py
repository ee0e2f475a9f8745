"""Property tests: client input of any shape gives a converted request or a typed error, never a crash."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converters import canonical as cn
from converters import gemini, openai_chat

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "x"])
parts = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "input_audio", "x"])},
                              optional={"text": json_values, "image_url": json_values})
messages = st.fixed_dictionaries(
    {"role": roles},
    optional={
        "content": st.none() | st.text(max_size=10) | st.lists(parts | json_values, max_size=3) | json_values,
        "tool_calls": st.lists(st.fixed_dictionaries({}, optional={
            "id": json_values, "type": json_values,
            "function": json_values | st.fixed_dictionaries({"name": st.text(max_size=5)},
                                                            optional={"arguments": json_values})}),
            max_size=3) | json_values,
        "tool_call_id": st.text(max_size=5) | json_values,
        "reasoning_content": json_values,
    },
)
requests = st.fixed_dictionaries(
    {"model": st.text(min_size=1, max_size=5), "messages": st.lists(messages, min_size=1, max_size=4)},
    optional={k: json_values for k in ("tools", "tool_choice", "response_format", "stop", "n", "max_tokens",
                                       "temperature", "reasoning_effort", "stream_options", "stream")},
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_openai_request_to_gemini_never_crashes(data):
    try:
        parsed, _ = openai_chat.parse_request(json.dumps(data).encode())
        req = openai_chat.decode_request(parsed)
        body = gemini.encode_request(req)
    except (openai_chat.RequestError, cn.ConversionError) as e:
        assert str(e)
        return
    json.dumps(body)  # whatever came out is JSON


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_gemini_response_decodes(body):
    if isinstance(body, dict):
        r = gemini.decode_response(body)
        openai_chat.encode_response(r, "m")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40) | json_values.map(lambda v: b"data: " + json.dumps(v).encode() + b"\n\n"),
                max_size=8))
def test_any_gemini_stream_bytes_convert(chunks):
    from converters.pipeline import Converting

    t = Converting(gemini.StreamDecoder(), openai_chat.StreamEncoder("m", True))
    out = b"".join(t.feed(c) for c in chunks) + t.finish()
    assert out.endswith(b"\n\n")  # always a well-terminated stream: finished, or an error event


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40) | json_values.map(lambda v: b"data: " + json.dumps(v).encode() + b"\n\n"),
                max_size=8))
def test_any_openai_stream_bytes_convert(chunks):
    from converters import anthropic
    from converters.pipeline import Converting

    t = Converting(openai_chat.StreamDecoder(), anthropic.StreamEncoder("m"))
    out = b"".join(t.feed(c) for c in chunks) + t.finish()
    assert out.endswith(b"\n\n")  # every stream ends well formed: message_stop or an error event


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_openai_completion_decodes(body):
    if isinstance(body, dict):
        openai_chat.decode_response(body)
