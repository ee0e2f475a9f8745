from multidict import CIMultiDict

from llmgate.front_door import split_forced_provider
from llmgate.translate import openai_error as upstream_error
from llmgate.settings import ProviderSettings

P = ProviderSettings(id="lms", type="openai", base_url="http://h/v1", api_key="sk-provider-secret-123")


def test_openai_shaped_error_keeps_message_code_and_retry_after():
    e = upstream_error(P, 429, "Too Many Requests", CIMultiDict({"Retry-After": "3", "X-Other": "x"}),
                       b'{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded","param":null}}')
    assert (e.status, e.message, e.code, e.headers) == (429, "slow down", "rate_limit_exceeded", {"Retry-After": "3"})


def test_non_json_error_names_provider_and_status():
    e = upstream_error(P, 502, "Bad Gateway", CIMultiDict(), b"<html>upstream down</html>")
    assert e.status == 502 and e.message == "Upstream 'lms' answered 502 Bad Gateway: <html>upstream down</html>"
    assert upstream_error(P, 500, "Internal Server Error", CIMultiDict(), b"").message.endswith("(empty body)")


def test_an_upstream_echoing_our_key_does_not_leak_it():
    body = b'{"error":{"message":"Incorrect API key provided: sk-provider-secret-123"}}'
    e = upstream_error(P, 401, "Unauthorized", CIMultiDict(), body)
    assert "secret" not in e.message and "[redacted]" in e.message


def test_split_forced_provider():
    assert split_forced_provider("/lms/v1/chat/completions") == ("lms", "/v1/chat/completions")
    assert split_forced_provider("/v1/models") == (None, "/v1/models")
    assert split_forced_provider("/health") == (None, "/health")
    assert split_forced_provider("/a/b/v1") == (None, "/a/b/v1")
