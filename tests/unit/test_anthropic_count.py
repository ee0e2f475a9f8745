"""Token counts of a fragment: Gemini CLI counts a turn of tool results on its own (a
functionResponse and the image it read), which Anthropic's count_tokens refused as a
tool_result without its tool_use (agent test: gemini via anthropic, housekeeping)."""

from converters import anthropic, gemini

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4z8AARAwQCgAf7gP9i18U1AAAAABJRU5ErkJggg=="


def test_a_tool_result_without_its_call_is_counted_as_text():
    data = {"contents": [{"role": "user", "parts": [
        {"functionResponse": {"id": "read_file_1", "name": "read_file", "response": {"output": "Binary content."}}},
        {"inlineData": {"mimeType": "image/png", "data": PNG}}]}]}
    req = gemini.decode_request(gemini.count_body_of(data), "claude-sonnet-4-5")
    body = anthropic.count_request(req)
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Binary content."},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}]


def test_a_tool_result_with_its_call_stays_a_tool_result():
    data = {"contents": [
        {"role": "user", "parts": [{"text": "read it"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "read_file", "args": {"path": "a"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "read_file", "response": {"output": "x"}}}]}]}
    body = anthropic.count_request(gemini.decode_request(data, "claude-sonnet-4-5"))
    assert body["messages"][2]["content"][0]["type"] == "tool_result"
