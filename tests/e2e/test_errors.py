"""Every failure reaches the client as OpenAI error JSON with the right status."""

import time

import httpx
import openai
import pytest

from tests.e2e.conftest import CLIENT_KEY

HELLO = [{"role": "user", "content": "hello"}]
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


def assert_openai_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str)
    if code:
        assert err["code"] == code
    return err


@pytest.mark.parametrize(
    "body, param",
    [
        (b"{oops", None),
        (b"", None),
        (b'{"model": "gpt-4o-mini"}', "messages"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "gpt-4o-mini", "messages": "hi"}', "messages"),
    ],
)
def test_bad_request_body(gateway, upstream, body, param):
    upstream.clear()
    r = httpx.post(gateway.base + "/v1/chat/completions", content=body, headers=AUTH)
    err = assert_openai_error(r, 400)
    assert err["param"] == param
    assert [q for q in upstream.received() if q["method"] == "POST"] == []  # (model discovery may run)


def test_unknown_model(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert "GET /v1/models" in e.value.message and e.value.code == "model_not_found"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"x-api-key": "wrong"}])
def test_bad_client_key_never_reaches_upstream(gateway, upstream, headers):
    upstream.clear()
    r = httpx.post(gateway.base + "/v1/chat/completions", headers=headers,
                   json={"model": "gpt-4o-mini", "messages": HELLO})
    assert_openai_error(r, 401)
    assert upstream.received() == []


@pytest.mark.parametrize("how", [{"x-api-key": CLIENT_KEY}, {"x-goog-api-key": CLIENT_KEY}, "query"])
def test_other_key_placements(gateway, how):
    url = gateway.base + "/v1/chat/completions" + (f"?key={CLIENT_KEY}" if how == "query" else "")
    r = httpx.post(url, headers={} if how == "query" else how, json={"model": "gpt-4o-mini", "messages": HELLO})
    assert r.status_code == 200, r.text


def test_upstream_unreachable_is_502(client):
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="dead-model", messages=HELLO)
    assert e.value.status_code == 502 and e.value.code == "upstream_unreachable"
    assert "'dead'" in e.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_timeout_is_504(client, stream):
    start = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="fault-hang", messages=HELLO, stream=stream)
    assert e.value.status_code == 504 and e.value.code == "upstream_timeout"
    assert time.monotonic() - start < 10  # read timeout is 2 s in this config


def test_upstream_500_keeps_message(client):
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="fault-500", messages=HELLO)
    assert e.value.status_code == 500
    assert "The server had an error while processing your request." in e.value.message


def test_upstream_429_keeps_retry_after(gateway):
    r = httpx.post(gateway.base + "/v1/chat/completions", headers=AUTH,
                   json={"model": "fault-429", "messages": HELLO})
    err = assert_openai_error(r, 429, "rate_limit_exceeded")
    assert r.headers["retry-after"] == "7" and "Rate limit" in err["message"]


def test_upstream_html_error_becomes_json(gateway):
    r = httpx.post(gateway.base + "/v1/chat/completions", headers=AUTH,
                   json={"model": "fault-502-html", "messages": HELLO, "stream": True})
    err = assert_openai_error(r, 502)
    assert "502 Bad Gateway" in err["message"] and "'up'" in err["message"]


def test_upstream_rejects_provider_key(client):
    """The provider refusing the gateway's key is not the client's key being wrong: a 502
    the SDK does not report as an authentication error, naming the provider."""
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="wrongkey-model", messages=HELLO)
    assert e.value.status_code == 502 and e.value.body["code"] == "provider_auth_failed"
    assert "'wrongkey' refused the credentials configured for it" in e.value.message
    assert "Incorrect API key" in e.value.message


def test_upstream_validation_error_passes_through(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream_options={"include_usage": True})
    assert "stream_options" in e.value.message


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/v2/whatever", 404), ("POST", "/", 404), ("GET", "/v1/chat/completions", 405),
    ("GET", "/ghost/v1/models", 404),
])
def test_unknown_routes(gateway, method, path, status):
    assert_openai_error(httpx.request(method, gateway.base + path, headers=AUTH), status)
