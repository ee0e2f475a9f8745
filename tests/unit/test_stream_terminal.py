"""A stream whose final event reached the client is a success (issue 13, defect 3)."""

import pytest

from llmgate.addons.accounting import terminal_sent


@pytest.mark.parametrize("sent", [
    b'data: {"choices":[]}\n\ndata: [DONE]\n\n',
    b'event: message_delta\ndata: {}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n',
    b'event: response.completed\ndata: {"type":"response.completed"}\n\n',
    b'event: response.failed\ndata: {}\n\n', b'event: response.incomplete\ndata: {}\n\n',
    b'data: {"candidates":[{"finishReason": "STOP"}]}\r\n\r\n', b'[{"candidates":[{"finishReason":"STOP"}]}]'])
def test_each_formats_terminal_event(sent):
    assert terminal_sent(sent)


@pytest.mark.parametrize("sent", [
    b'data: {"choices":[{"delta":{"content":"data: [DONE]"}}]}\n\n',  # inside text, escaped: not an event
    b'event: response.output_text.delta\ndata: {"delta":"\\"finishReason\\": x"}\n\n',
    b'event: message_start\ndata: {}\n\n', b""])
def test_unfinished_streams(sent):
    assert not terminal_sent(sent)
