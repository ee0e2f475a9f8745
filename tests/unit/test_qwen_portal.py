"""Tests for the Qwen Code OAuth + portal test double (tests/upstreams/qwen_portal.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.upstreams.qwen_portal import CLIENT_ID, QwenOptions, make_app
from tests.upstreams.serving import ServerThread

REPO = Path(__file__).resolve().parents[2]
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SCOPE = "openid profile email model.completion"
UA = "QwenCode/0.0.14 (linux; x64)"
QWEN_HEADERS = {
    "User-Agent": UA,
    "X-DashScope-CacheControl": "enable",
    "X-DashScope-UserAgent": UA,
    "X-DashScope-AuthType": "qwen-oauth",
}
USER = {"role": "user", "content": "hello world"}
POLL = 0.2


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(32)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def base_url():
    options = QwenOptions(poll_interval=POLL, access_ttl=3600)
    with ServerThread(make_app(None, ["coder-model", "vision-model"], options=options)) as url:
        yield url


@pytest.fixture
def http(base_url):
    with httpx.Client(base_url=base_url, timeout=10) as client:
        client.post("/__oauth/reset").raise_for_status()
        client.post("/__oauth/config", json={"refresh_delay": 0, "poll_interval": POLL,
                                             "auto_approve_after": None}).raise_for_status()
        yield client


def device_code(http: httpx.Client, challenge: str, **extra) -> httpx.Response:
    form = {"client_id": CLIENT_ID, "scope": SCOPE, "code_challenge": challenge,
            "code_challenge_method": "S256", **extra}
    return http.post("/api/v1/oauth2/device/code", data=form)


def poll(http: httpx.Client, code: str, verifier: str) -> httpx.Response:
    return http.post("/api/v1/oauth2/token", data={
        "grant_type": DEVICE_GRANT, "client_id": CLIENT_ID, "device_code": code,
        "code_verifier": verifier})


def refresh(http: httpx.Client, refresh_token: str) -> httpx.Response:
    return http.post("/api/v1/oauth2/token", data={
        "grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": CLIENT_ID})


def seed(http: httpx.Client, **body) -> dict:
    response = http.post("/__oauth/seed", json=body)
    assert response.status_code == 200
    return response.json()


def chat(http: httpx.Client, token: str | None, headers: dict | None = None, **body) -> httpx.Response:
    body.setdefault("model", "coder-model")
    body.setdefault("messages", [USER])
    auth = f"Bearer {token}" if token is not None else None
    sent = {**QWEN_HEADERS, "Authorization": auth, **(headers or {})}
    return http.post("/v1/chat/completions", json=body,
                     headers={k: v for k, v in sent.items() if v is not None})


def inspect(http: httpx.Client) -> dict:
    return http.get("/__oauth").json()


# ----------------------------------------------------------------- device flow


def test_device_flow_happy_path(http, base_url):
    verifier, challenge = pkce()
    response = device_code(http, challenge)
    assert response.status_code == 200
    auth = response.json()
    assert set(auth) == {"device_code", "user_code", "verification_uri",
                         "verification_uri_complete", "expires_in"}  # no interval
    assert auth["expires_in"] == 600
    assert auth["user_code"] in auth["verification_uri_complete"]

    pending = poll(http, auth["device_code"], verifier)
    assert pending.status_code == 400
    assert pending.json()["error"] == "authorization_pending"

    approved = http.post("/__oauth/approve", params={"user_code": auth["user_code"]})
    assert approved.status_code == 200
    time.sleep(POLL)
    tokens = poll(http, auth["device_code"], verifier)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["resource_url"] == base_url.removeprefix("http://")
    assert body["scope"] == SCOPE
    assert chat(http, body["access_token"]).status_code == 200

    state = inspect(http)
    assert state["device_polls"] == 2
    assert state["current_refresh_token"] == body["refresh_token"]
    assert body["access_token"] in state["valid_access_tokens"]
    assert state["issued"] == {"device_codes": 1, "access_tokens": 1, "refresh_tokens": 1}

    time.sleep(POLL)
    reused = poll(http, auth["device_code"], verifier)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"


def test_form_log_records_fields(http):
    _, challenge = pkce()
    http.delete("/__requests")
    device_code(http, challenge)
    entry = http.get("/__requests").json()[0]
    assert entry["path"] == "/api/v1/oauth2/device/code"
    assert entry["form"]["code_challenge_method"] == "S256"


def test_slow_down_when_polling_faster_than_interval(http):
    verifier, challenge = pkce()
    code = device_code(http, challenge).json()["device_code"]
    assert poll(http, code, verifier).json()["error"] == "authorization_pending"
    fast = poll(http, code, verifier)
    assert fast.status_code == 429
    assert fast.json()["error"] == "slow_down"
    time.sleep(POLL + 0.05)
    assert poll(http, code, verifier).json()["error"] == "authorization_pending"


def test_auto_approve_after_polls(http):
    http.post("/__oauth/config", json={"auto_approve_after": 2, "poll_interval": 0})
    verifier, challenge = pkce()
    code = device_code(http, challenge).json()["device_code"]
    assert [poll(http, code, verifier).status_code for _ in range(3)] == [400, 400, 200]


def test_wrong_verifier_is_invalid_grant(http):
    _, challenge = pkce()
    other_verifier, _ = pkce()
    code = device_code(http, challenge).json()["device_code"]
    response = poll(http, code, other_verifier)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_denied_and_expired_device_codes(http):
    verifier, challenge = pkce()
    auth = device_code(http, challenge).json()
    http.post("/__oauth/deny", params={"user_code": auth["user_code"]}).raise_for_status()
    denied = poll(http, auth["device_code"], verifier)
    assert (denied.status_code, denied.json()["error"]) == (400, "access_denied")

    verifier, challenge = pkce()
    auth = device_code(http, challenge).json()
    http.post("/__oauth/expire_device", params={"user_code": auth["user_code"]})
    expired = poll(http, auth["device_code"], verifier)
    assert (expired.status_code, expired.json()["error"]) == (400, "expired_token")

    assert http.post("/__oauth/approve", params={"user_code": "NOPE-NOPE"}).status_code == 404


@pytest.mark.parametrize("change, error", [
    ({"client_id": "someone-else"}, "invalid_client"),
    ({"code_challenge": None}, "invalid_request"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge_method": None}, "invalid_request"),
    ({"scope": "openid admin"}, "invalid_scope"),
])
def test_device_code_rejects_bad_requests(http, change, error):
    _, challenge = pkce()
    form = {"client_id": CLIENT_ID, "scope": SCOPE, "code_challenge": challenge,
            "code_challenge_method": "S256", **change}
    response = http.post("/api/v1/oauth2/device/code",
                         data={k: v for k, v in form.items() if v is not None})
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert response.json()["error_description"]


def test_device_code_rejects_json_body(http):
    _, challenge = pkce()
    response = http.post("/api/v1/oauth2/device/code", json={
        "client_id": CLIENT_ID, "scope": SCOPE, "code_challenge": challenge,
        "code_challenge_method": "S256"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_unknown_grant_type(http):
    response = http.post("/api/v1/oauth2/token", data={"grant_type": "password",
                                                       "client_id": CLIENT_ID})
    assert response.json()["error"] == "unsupported_grant_type"


# ----------------------------------------------------------------- refresh


def test_refresh_rotates_and_old_token_is_dead(http):
    creds = seed(http)
    first = refresh(http, creds["refresh_token"])
    assert first.status_code == 200
    new = first.json()
    assert new["refresh_token"] != creds["refresh_token"]
    assert new["access_token"] != creds["access_token"]
    assert new["token_type"] == "Bearer" and new["expires_in"] == 3600
    assert new["resource_url"] == creds["resource_url"]

    reused = refresh(http, creds["refresh_token"])
    assert reused.status_code == 400
    assert reused.json() == {"error": "invalid_grant",
                             "error_description": "Refresh token expired or invalid"}
    assert refresh(http, new["refresh_token"]).status_code == 200

    state = inspect(http)
    assert state["refresh_calls"] == 3 and state["refresh_failures"] == 1
    assert new["refresh_token"] not in state["valid_refresh_tokens"]


def test_refresh_wrong_client_id(http):
    creds = seed(http)
    response = http.post("/api/v1/oauth2/token", data={
        "grant_type": "refresh_token", "refresh_token": creds["refresh_token"],
        "client_id": "x"})
    assert response.json()["error"] == "invalid_client"
    assert refresh(http, creds["refresh_token"]).status_code == 200  # still valid


def test_concurrent_refreshes_with_delay_one_wins(http, base_url):
    creds = seed(http)
    http.post("/__oauth/config", json={"refresh_delay": 0.3}).raise_for_status()

    def one(_: int) -> int:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            return refresh(client, creds["refresh_token"]).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(pool.map(one, range(4)))
    assert statuses == [200, 400, 400, 400]
    assert time.monotonic() - started < 1.0  # the delays overlapped
    assert inspect(http)["refresh_calls"] == 4


# ----------------------------------------------------------------- chat


def test_chat_with_valid_token_and_headers(http):
    token = seed(http)["access_token"]
    response = chat(http, token, messages=[
        {"role": "system", "content": [{"type": "text", "text": "be brief",
                                        "cache_control": {"type": "ephemeral"}}]},
        USER,
    ], metadata={"sessionId": "s", "promptId": "p"}, preserve_thinking=True,
        vl_high_resolution_images=True)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Echo: hello world"
    assert body["model"] == "coder-model"


def test_chat_stream_with_usage(http):
    token = seed(http)["access_token"]
    response = chat(http, token, model="vision-model", stream=True,
                    stream_options={"include_usage": True})
    assert response.status_code == 200
    payloads = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c["choices"]) == "Echo: hello world"
    assert chunks[-1]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("header, value", [
    ("User-Agent", None),
    ("User-Agent", "python-httpx/0.28"),
    ("X-DashScope-AuthType", None),
    ("X-DashScope-AuthType", "api-key"),
    ("X-DashScope-CacheControl", None),
    ("X-DashScope-CacheControl", "disable"),
    ("X-DashScope-UserAgent", None),
])
def test_chat_rejects_missing_or_wrong_header(http, header, value):
    token = seed(http)["access_token"]
    headers = {header: value}
    if header == "User-Agent" and value is None:
        headers[header] = ""  # httpx would add its own User-Agent otherwise
    response = chat(http, token, headers=headers)
    assert response.status_code == 400
    assert header in response.json()["error"]["message"]


def test_chat_rejects_unknown_expired_and_missing_tokens(http):
    expected = {"message": "Invalid access token or token expired",
                "type": "invalid_request_error", "code": "invalid_api_key"}
    for token in ("nope", None):
        response = chat(http, token)
        assert response.status_code == 401
        assert expected.items() <= response.json()["error"].items()

    creds = seed(http)
    assert chat(http, creds["access_token"]).status_code == 200
    assert http.post("/__oauth/expire_access").json()["expired"] >= 1
    assert chat(http, creds["access_token"]).status_code == 401
    assert inspect(http)["valid_access_tokens"] == []
    renewed = refresh(http, creds["refresh_token"]).json()
    assert chat(http, renewed["access_token"]).status_code == 200


def test_seed_expired_credentials(http, base_url):
    creds = seed(http, expired=True)
    assert set(creds) == {"access_token", "refresh_token", "token_type", "resource_url",
                          "expiry_date"}
    assert creds["expiry_date"] < time.time() * 1000
    assert creds["resource_url"] == base_url.removeprefix("http://")
    assert chat(http, creds["access_token"]).status_code == 401
    assert creds["access_token"] not in inspect(http)["valid_access_tokens"]
    renewed = refresh(http, creds["refresh_token"])
    assert renewed.status_code == 200
    assert chat(http, renewed.json()["access_token"]).status_code == 200

    fresh = seed(http)
    assert fresh["expiry_date"] > (time.time() + 3500) * 1000
    assert inspect(http)["current_refresh_token"] == fresh["refresh_token"]


def test_system_message_must_be_first(http):
    token = seed(http)["access_token"]
    response = chat(http, token, messages=[USER, {"role": "system", "content": "late"}])
    assert response.status_code == 400
    assert "System message must be at the beginning" in response.json()["error"]["message"]


def test_chat_still_validates_like_openai(http):
    token = seed(http)["access_token"]
    unknown = chat(http, token, model="qwen3-coder-plus")
    assert unknown.status_code == 404
    assert chat(http, token, bogus=1).status_code == 400
    assert chat(http, token, preserve_thinking="yes").status_code == 400
    bad_cache = chat(http, token, messages=[
        {"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {}}]}])
    assert bad_cache.status_code == 400


def test_no_models_endpoint(http):
    token = seed(http)["access_token"]
    response = http.get("/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404


def test_quota_modes(http):
    token = seed(http)["access_token"]
    assert http.post("/__oauth/quota", params={"mode": "exhausted",
                                               "retry_after": 30}).status_code == 200
    exhausted = chat(http, token)
    assert exhausted.status_code == 429
    assert exhausted.headers["Retry-After"] == "30"
    assert exhausted.json() == {"error": {"code": "insufficient_quota",
                                          "message": "Free allocated quota exceeded.",
                                          "type": "insufficient_quota"}}

    http.post("/__oauth/quota", params={"mode": "discontinued"})
    discontinued = chat(http, token)
    assert discontinued.status_code == 403
    assert discontinued.json()["error"]["code"] == "access_denied"
    assert "discontinued" in discontinued.json()["error"]["message"]

    http.post("/__oauth/quota", params={"mode": "ok"})
    assert chat(http, token).status_code == 200
    assert http.post("/__oauth/quota", params={"mode": "weird"}).status_code == 400


# ----------------------------------------------------------------- command line


def test_command_line_prints_ready_and_serves(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.upstreams.qwen_portal", "--host", "127.0.0.1",
         "--port", "0", "--poll-interval", "0.2", "--auto-approve-after", "1",
         "--access-ttl", "120"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("READY ")
        port = int(line.split()[1])
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            config = client.get("/__oauth").json()["config"]
            assert config["poll_interval"] == 0.2 and config["auto_approve_after"] == 1
            verifier, challenge = pkce()
            code = device_code(client, challenge).json()["device_code"]
            assert poll(client, code, verifier).status_code == 400
            time.sleep(0.25)
            tokens = poll(client, code, verifier).json()
            assert tokens["expires_in"] == 120
    finally:
        proc.terminate()
        proc.wait(5)
