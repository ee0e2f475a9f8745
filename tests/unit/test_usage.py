"""Token usage read from what the client received: streams of each format, and the line search
that picks the few lines worth parsing out of a stream."""

from hypothesis import given
from hypothesis import strategies as st

from converters.usage import Tokens, _lines_with, of_stream


def test_openai_chat_stream_usage_is_read_from_its_last_chunk():
    stream = (b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'
              b'data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":3,'
              b'"prompt_tokens_details":{"cached_tokens":4}}}\n\ndata: [DONE]\n\n')
    assert of_stream(stream) == Tokens(prompt=11, completion=3, cached=4)


def test_anthropic_stream_adds_the_input_of_message_start_to_the_output_of_message_delta():
    stream = (b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":9,'
              b'"cache_read_input_tokens":5,"output_tokens":1}}}\n\n'
              b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"usage"}}\n\n'
              b'event: message_delta\r\ndata: {"type":"message_delta","usage":{"output_tokens":7}}\r\n\r\n')
    assert of_stream(stream) == Tokens(prompt=14, completion=7, cached=5)


def test_gemini_json_array_stream_and_a_stream_without_usage():
    array = b'[{"candidates":[]}\n,{"usageMetadata":{"promptTokenCount":6,"candidatesTokenCount":2}}\n]'
    assert of_stream(array) == Tokens(prompt=6, completion=2)
    assert of_stream(b'data: {"choices":[]}\n\ndata: [DONE]\n\n') is None
    assert of_stream(b"") is None


@given(st.lists(st.sampled_from([b"", b"sage", b"usage", b"x", b"\n", b"s", b"age", b"\r"]), max_size=30))
def test_the_lines_searched_are_those_a_split_finds(parts):
    data = b"".join(parts)
    assert list(_lines_with(data, b"sage")) == [line for line in data.split(b"\n") if b"sage" in line]
