from multidict import CIMultiDict

from llmgate.request_path.inbound import match
from llmgate.request_path.wire import openai_error as upstream_error
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


def test_inbound_routes():
    providers = {"lms", "anthropic"}.__contains__
    ib = match("/lms/v1/chat/completions", False, providers)
    assert (ib.endpoint, ib.forced, ib.api.name) == ("chat", "lms", "openai-chat")
    assert match("/v1/models", False, providers).api.name == "openai-chat"
    assert match("/v1/models", True, providers).api.name == "anthropic"
    assert match("/health", False, providers).endpoint == "health"
    assert match("/a/b/v1", False, providers).endpoint == "unknown"
    ib = match("/v1beta/models/gemini-2.5-flash:streamGenerateContent", False, providers)
    assert (ib.endpoint, ib.model, ib.action, ib.api.name) == ("gemini", "gemini-2.5-flash",
                                                                "streamGenerateContent", "gemini")
    # seed prefixes, unless a provider owns the name
    ib = match("/gemini/models/g:generateContent", False, providers)
    assert (ib.endpoint, ib.forced, ib.model) == ("gemini", None, "g")
    assert match("/gemini/v1beta/models", False, providers).api.name == "gemini"
    ib = match("/anthropic/messages", False, providers)
    assert (ib.endpoint, ib.forced) == ("messages", None)
    ib = match("/anthropic/v1/messages", False, providers)
    assert (ib.endpoint, ib.forced) == ("messages", "anthropic")
    ib = match("/anthropic/v1/messages", False, set().__contains__)
    assert (ib.endpoint, ib.forced) == ("messages", None)
    assert match("/anthropic/models", False, set().__contains__).api.name == "anthropic"
    ib = match("/v1/messages/count_tokens", False, providers)
    assert (ib.endpoint, ib.method) == ("count_tokens", "POST")
    ib = match("/v1/models/openrouter/meta/llama", False, providers)
    assert (ib.endpoint, ib.model) == ("model", "openrouter/meta/llama")
    assert match("/v1/nothing", True, providers).api.name == "anthropic"
    assert match("/v1beta/nothing", False, providers).api.name == "gemini"


def test_a_provider_refusing_its_own_key_is_a_502_never_a_401():
    from llmgate.request_path.wire import anthropic_error, google_error

    cases = [
        (upstream_error, 401, b'{"error":{"message":"Incorrect API key","code":"invalid_api_key"}}'),
        (upstream_error, 403, b'{"error":{"message":"key revoked","code":"invalid_api_key"}}'),
        (anthropic_error, 401, b'{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}'),
        (google_error, 400, b'{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.",'
                            b'"status":"INVALID_ARGUMENT","details":[{"reason":"API_KEY_INVALID"}]}}'),
    ]
    for error, status, body in cases:
        e = error(P, status, "", CIMultiDict(), body)
        assert (e.status, e.code, e.native) == (502, "provider_auth_failed", None), (status, body)
        assert e.message.startswith("Provider 'lms' refused the credentials configured for it")
    # a permission answer about the request (not the key) stays what it is
    e = upstream_error(P, 403, "", CIMultiDict(), b'{"error":{"message":"not an embeddings model"}}')
    assert e.status == 403
