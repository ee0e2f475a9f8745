"""Tests for the iFlow test double (tests/upstreams/iflow_api.py).

The expected signature is computed here with hmac + hashlib, not with the double's
own helper, so a wrong formula in either place shows up."""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.upstreams.iflow_api import DEFAULT_MODELS, make_app, signature
from tests.upstreams.serving import ServerThread

KEY = "sk-iflow-test-0123456789"
MODELS = ["qwen3-coder-plus", "glm-4.6"]
CLIENT_ID = "10009311001"
CLIENT_SECRET = "any-non-empty-secret"
REDIRECT = "http://127.0.0.1:11451/oauth2callback"
CHAT = {"model": "qwen3-coder-plus", "messages": [{"role": "user", "content": "hi there"}]}
REPO = Path(__file__).resolve().parents[2]


def expected_signature(key: str, session_id: str, timestamp: str) -> str:
    message = f"iFlow-Cli:{session_id}:{timestamp}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(key: str = KEY, *, timestamp: int | None = None) -> dict[str, str]:
    session_id = f"session-{uuid.uuid4()}"
    ts = str(int(time.time() * 1000) if timestamp is None else timestamp)
    return {
        "Authorization": f"Bearer {key}",
        "User-Agent": "iFlow-Cli",
        "session-id": session_id,
        "x-iflow-timestamp": ts,
        "x-iflow-signature": expected_signature(key, session_id, ts),
    }


@pytest.fixture(scope="module")
def base_url():
    with ServerThread(make_app(KEY, MODELS)) as url:
        yield url


@pytest.fixture
def http(base_url):
    with httpx.Client(base_url=base_url, timeout=10) as client:
        del client.headers["User-Agent"]  # only what each test sends
        yield client


def error_of(response: httpx.Response) -> dict:
    return response.json()["error"]


def test_helper_matches_independent_formula():
    assert signature("k", "session-x", 123) == expected_signature("k", "session-x", "123")


def test_valid_signed_request_is_answered(http):
    response = http.post("/v1/chat/completions", json=CHAT, headers=signed_headers())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Echo: hi there"
    assert body["model"].startswith("qwen3-coder-plus")


def test_valid_signed_stream(http):
    with http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True},
                     headers=signed_headers()) as response:
        assert response.status_code == 200
        text = response.read().decode()
    assert text.rstrip().endswith("data: [DONE]")


def test_openai_validation_still_applies(http):
    response = http.post("/v1/chat/completions", json={"model": "qwen3-coder-plus"},
                         headers=signed_headers())
    assert response.status_code == 400
    assert error_of(response)["param"] == "messages"
    response = http.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o"},
                         headers=signed_headers())
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("Authorization", 401),
        ("User-Agent", 400),
        ("session-id", 400),
        ("x-iflow-timestamp", 400),
        ("x-iflow-signature", 401),
    ],
)
def test_each_missing_header_is_named(http, header, status):
    headers = signed_headers()
    del headers[header]
    response = http.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == status
    message = error_of(response)["message"]
    if header == "Authorization":
        assert "Authorization" in message
    else:
        assert header in message and "Missing" in message


def test_wrong_hmac_is_rejected(http):
    headers = signed_headers()
    good = headers["x-iflow-signature"]
    headers["x-iflow-signature"] = ("0" if good[0] != "0" else "1") + good[1:]
    response = http.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_signature"
    assert "x-iflow-signature" in error_of(response)["message"]


def test_signature_over_other_session_is_rejected(http):
    headers = signed_headers()
    headers["session-id"] = f"session-{uuid.uuid4()}"
    response = http.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_signature"


def test_signature_with_other_key_is_rejected(http):
    headers = signed_headers()
    ts, sid = headers["x-iflow-timestamp"], headers["session-id"]
    headers["x-iflow-signature"] = expected_signature("some-other-key", sid, ts)
    response = http.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 401


@pytest.mark.parametrize("offset_ms", [-6 * 60 * 1000, 6 * 60 * 1000])
def test_stale_timestamp_is_rejected(http, offset_ms):
    headers = signed_headers(timestamp=int(time.time() * 1000) + offset_ms)
    response = http.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 401
    assert error_of(response)["code"] == "timestamp_out_of_range"
    assert "x-iflow-timestamp" in error_of(response)["message"]


def test_timestamp_in_seconds_is_rejected_with_hint(http):
    response = http.post("/v1/chat/completions", json=CHAT,
                         headers=signed_headers(timestamp=int(time.time())))
    assert response.status_code == 401
    assert "seconds" in error_of(response)["message"]


def test_timestamp_within_window_is_accepted(http):
    headers = signed_headers(timestamp=int(time.time() * 1000) - 4 * 60 * 1000)
    assert http.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 200


@pytest.mark.parametrize(
    ("header", "value", "code"),
    [
        ("User-Agent", "iFlow-Cli/1.0", "invalid_user_agent"),
        ("session-id", str(uuid.uuid4()), "invalid_session_id"),
        ("session-id", "session-not-a-uuid", "invalid_session_id"),
        ("x-iflow-timestamp", "12.5", "invalid_timestamp"),
    ],
)
def test_malformed_headers(http, header, value, code):
    headers = signed_headers()
    headers[header] = value
    response = http.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 400
    assert error_of(response)["code"] == code
    assert header in error_of(response)["message"]


def test_wrong_key_is_rejected(http):
    response = http.post("/v1/chat/completions", json=CHAT,
                         headers=signed_headers("sk-not-a-configured-key"))
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"


def test_models_list(http):
    response = http.get("/v1/models", headers=signed_headers())
    assert response.status_code == 200
    ids = [m["id"] for m in response.json()["data"]]
    assert ids[: len(MODELS)] == MODELS
    assert http.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 400


def test_default_models():
    assert {"qwen3-coder-plus", "kimi-k2", "glm-4.6", "deepseek-v3.2"} <= set(DEFAULT_MODELS)


def test_control_add_key_and_state(http):
    new_key = "sk-added-through-control"
    assert http.post("/v1/chat/completions", json=CHAT,
                     headers=signed_headers(new_key)).status_code == 401
    assert http.post("/__keys", json={"api_key": new_key}).status_code == 200
    assert http.post("/v1/chat/completions", json=CHAT,
                     headers=signed_headers(new_key)).status_code == 200
    assert new_key in http.get("/__state").json()["api_keys"]
    assert http.post("/__keys", json={"api_key": ""}).status_code == 400


def test_request_log(http):
    http.delete("/__requests")
    headers = signed_headers()
    http.post("/v1/chat/completions", json=CHAT, headers=headers)
    log = http.get("/__requests").json()
    assert log[-1]["path"] == "/v1/chat/completions"
    assert log[-1]["headers"]["x-iflow-signature"] == headers["x-iflow-signature"]


def basic(client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> dict[str, str]:
    token = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def authorize(http, state: str = "st-123") -> str:
    response = http.get("/oauth", params={
        "loginMethod": "phone", "type": "phone", "redirect": REDIRECT,
        "state": state, "client_id": CLIENT_ID})
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == [state]
    return query["code"][0]


def exchange(http, code: str, **overrides) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **overrides}
    return http.post("/oauth/token", data=form,
                     headers=basic(form["client_id"], form["client_secret"]))


def test_oauth_code_token_userinfo_then_chat(http):
    code = authorize(http)
    response = exchange(http, code)
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert {"access_token", "refresh_token", "expires_in", "token_type", "scope"} <= set(tokens)

    info = http.get("/api/oauth/getUserInfo", params={"accessToken": tokens["access_token"]})
    assert info.status_code == 200
    assert info.json()["success"] is True
    data = info.json()["data"]
    api_key = data["apiKey"]
    assert api_key and (data.get("email") or data.get("phone"))

    response = http.post("/v1/chat/completions", json=CHAT, headers=signed_headers(api_key))
    assert response.status_code == 200, response.text

    # the code is single-use
    assert exchange(http, code).json()["error"] == "invalid_grant"

    # refresh keeps the same apiKey
    refreshed = http.post("/oauth/token", headers=basic(), data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
        "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    assert refreshed.status_code == 200
    info = http.get("/api/oauth/getUserInfo",
                    params={"accessToken": refreshed.json()["access_token"]})
    assert info.json()["data"]["apiKey"] == api_key


def test_oauth_errors(http):
    assert exchange(http, "no-such-code").status_code == 400
    assert exchange(http, "no-such-code").json()["error"] == "invalid_grant"
    code = authorize(http)
    wrong_client = exchange(http, code, client_id="12345")
    assert wrong_client.status_code == 400 and wrong_client.json()["error"] == "invalid_grant"
    code = authorize(http)
    assert exchange(http, code, redirect_uri="http://127.0.0.1:1/cb").json()["error"] == (
        "invalid_grant")
    code = authorize(http)
    no_basic = http.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    assert no_basic.status_code == 401 and no_basic.json()["error"] == "invalid_client"
    bad = http.get("/oauth", params={"client_id": "1", "redirect": REDIRECT, "state": "s"})
    assert bad.status_code == 400
    info = http.get("/api/oauth/getUserInfo", params={"accessToken": "nope"})
    assert info.json()["success"] is False


def test_cli_prints_ready():
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.upstreams.iflow_api", "--host", "127.0.0.1",
         "--port", "0", "--api-key", KEY],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("READY ")
        port = int(line.split()[1])
        response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT,
                              headers=signed_headers())
        assert response.status_code == 200
    finally:
        process.terminate()
        process.wait(10)
