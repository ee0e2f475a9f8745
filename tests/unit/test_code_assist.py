"""Tests for the Code Assist / Google OAuth test double (tests/upstreams/code_assist.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.upstreams import code_assist, gemini_api
from tests.upstreams.code_assist import (
    ANTIGRAVITY_CLIENT,
    CLIENTS,
    GEMINI_CLI_CLIENT,
    Store,
    make_app,
)
from tests.upstreams.serving import ServerThread

REPO = Path(__file__).resolve().parents[2]
USER = {"role": "user", "parts": [{"text": "hello world"}]}
METADATA = {"ideType": "IDE_UNSPECIFIED", "platform": "PLATFORM_UNSPECIFIED", "pluginType": "GEMINI"}
AG_UA = "antigravity/1.15.8 linux/amd64"
SCOPES = "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email"


@pytest.fixture(scope="module")
def base_url():
    with ServerThread(make_app()) as url:
        yield url


@pytest.fixture(scope="module")
def ag_url():
    with ServerThread(make_app(flavour="antigravity")) as url:
        yield url


@pytest.fixture
def http(base_url):
    with httpx.Client(base_url=base_url, timeout=5) as client:
        yield client
        client.post("/__scenario", json={"mode": None})


@pytest.fixture
def ag(ag_url):
    with httpx.Client(base_url=ag_url, timeout=5, headers={"User-Agent": AG_UA}) as client:
        yield client
        client.post("/__scenario", json={"mode": None})


def seed(http_client: httpx.Client, **body) -> tuple[dict, str]:
    """Credentials and the account's project."""
    email = body.setdefault("email", f"u{secrets.token_hex(4)}@example.com")
    creds = http_client.post("/__seed", json=body).json()
    accounts = http_client.get("/__state").json()["accounts"]
    return creds, next(a["project"] for a in accounts if a["email"] == email)


def bearer(creds: dict | str) -> dict[str, str]:
    token = creds if isinstance(creds, str) else creds["access_token"]
    return {"Authorization": f"Bearer {token}"}


def refresh(client: httpx.Client, refresh_token: str, client_id: str = GEMINI_CLI_CLIENT,
            secret: str | None = None) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id,
            "client_secret": CLIENTS.get(client_id, "x") if secret is None else secret}
    return client.post("/token", data=form)


def envelope(project: str, model: str = "gemini-2.5-flash", **request) -> dict:
    request.setdefault("contents", [USER])
    return {"model": model, "project": project, "user_prompt_id": "p1",
            "request": {**request, "session_id": "s1"}}


def ag_envelope(project: str, model: str = "gemini-3-flash", **request) -> dict:
    request.setdefault("contents", [USER])
    return {"model": model, "project": project, "userAgent": "antigravity", "requestType": "agent",
            "requestId": "agent-0b9c", "request": {**request, "sessionId": "-4242"}}


def error_of(response: httpx.Response, status: int, google_status: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status
    if google_status:
        assert error["status"] == google_status
    return error


def sse_events(text: str) -> list[dict]:
    assert "[DONE]" not in text
    chunks = [c for c in text.split("\r\n\r\n") if c]
    assert all(c.startswith("data: ") for c in chunks)
    return [json.loads(c[len("data: "):]) for c in chunks]


def detail(error: dict, kind: str) -> dict:
    return next(d for d in error["details"] if d["@type"].endswith(kind))


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    return verifier, challenge.decode()


# --------------------------------------------------------------------------
# OAuth
# --------------------------------------------------------------------------


def test_seed_gives_gemini_cli_credentials(http):
    creds, _ = seed(http)
    assert set(creds) == {"access_token", "refresh_token", "scope", "token_type", "id_token",
                          "expiry_date"}
    assert creds["access_token"].startswith("ya29.")
    assert creds["token_type"] == "Bearer"
    assert abs(creds["expiry_date"] - (time.time() + 3599) * 1000) < 10_000
    payload = creds["id_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["aud"] == GEMINI_CLI_CLIENT and claims["email"].endswith("@example.com")


def test_refresh_does_not_rotate(http):
    creds, _ = seed(http, expired=True)
    assert creds["expiry_date"] < time.time() * 1000
    r = http.post("/v1internal:loadCodeAssist", json={"metadata": METADATA}, headers=bearer(creds))
    error_of(r, 401, "UNAUTHENTICATED")
    before = http.get("/__state").json()["refresh_calls"]
    r = refresh(http, creds["refresh_token"])
    assert r.status_code == 200, r.text
    answer = r.json()
    assert list(answer) == ["access_token", "expires_in", "scope", "token_type", "id_token"]
    assert answer["access_token"].startswith("ya29.") and answer["access_token"] != creds["access_token"]
    assert answer["expires_in"] == 3599 and answer["token_type"] == "Bearer"
    assert "refresh_token" not in answer
    assert http.get("/__state").json()["refresh_calls"] == before + 1
    r = http.post("/v1internal:loadCodeAssist", json={"metadata": METADATA}, headers=bearer(answer))
    assert r.status_code == 200, r.text
    assert refresh(http, creds["refresh_token"]).status_code == 200  # same token again


def test_refresh_failures(http):
    creds, _ = seed(http)
    r = refresh(http, "1//0-never-issued")
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
    r = refresh(http, creds["refresh_token"], secret="GOCSPX-wrong")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = refresh(http, creds["refresh_token"], client_id="123-unknown.apps.googleusercontent.com")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = refresh(http, creds["refresh_token"], client_id=ANTIGRAVITY_CLIENT)  # not its client
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"
    r = http.post("/token", data={"grant_type": "password", "client_id": GEMINI_CLI_CLIENT})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = http.post("/token", data={"grant_type": "refresh_token", "client_id": GEMINI_CLI_CLIENT,
                                  "client_secret": CLIENTS[GEMINI_CLI_CLIENT]})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    # revoked: the refresh token and its access tokens stop working
    assert http.post("/revoke", data={"token": creds["refresh_token"]}).status_code == 200
    r = refresh(http, creds["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = http.post("/v1internal:loadCodeAssist", json={"metadata": METADATA}, headers=bearer(creds))
    error_of(r, 401)
    assert http.post("/revoke", data={"token": "nothing"}).json()["error"] == "invalid_token"


def test_client_secret_by_basic_auth_and_json_body(http):
    creds, _ = seed(http, client="antigravity")
    basic = base64.b64encode(f"{ANTIGRAVITY_CLIENT}:{CLIENTS[ANTIGRAVITY_CLIENT]}".encode()).decode()
    r = http.post("/token", data={"grant_type": "refresh_token", "refresh_token": creds["refresh_token"]},
                  headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 200, r.text
    assert "cclog" in r.json()["scope"]
    r = http.post("/token", json={"grant_type": "refresh_token", "refresh_token": creds["refresh_token"],
                                  "client_id": ANTIGRAVITY_CLIENT,
                                  "client_secret": CLIENTS[ANTIGRAVITY_CLIENT]})
    assert r.status_code == 200, r.text


def authorize(client: httpx.Client, challenge: str | None, **extra) -> httpx.Response:
    params = {"client_id": GEMINI_CLI_CLIENT, "redirect_uri": "http://127.0.0.1:8085/oauth2callback",
              "response_type": "code", "scope": SCOPES, "state": "st4te", "access_type": "offline",
              **extra}
    if challenge:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    return client.get("/o/oauth2/v2/auth", params=params, follow_redirects=False)


def exchange(client: httpx.Client, code: str, verifier: str | None,
             redirect_uri: str = "http://127.0.0.1:8085/oauth2callback") -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "client_id": GEMINI_CLI_CLIENT, "client_secret": CLIENTS[GEMINI_CLI_CLIENT]}
    if verifier:
        form["code_verifier"] = verifier
    return client.post("/token", data=form)


def test_authorization_code_with_pkce(http):
    verifier, challenge = pkce()
    r = authorize(http, challenge, login_hint="login-user@example.com")
    assert r.status_code == 302
    location = urlsplit(r.headers["Location"])
    assert (location.scheme, location.netloc, location.path) == ("http", "127.0.0.1:8085", "/oauth2callback")
    query = parse_qs(location.query)
    assert query["state"] == ["st4te"]
    code = query["code"][0]
    assert code.startswith("4/0A") and "openid" in query["scope"][0]
    assert exchange(http, code, "x" * 50).json() == {"error": "invalid_grant",
                                                     "error_description": "Invalid code verifier."}
    assert exchange(http, code, None).json()["error_description"] == "Missing code verifier."
    r = exchange(http, code, verifier, redirect_uri="http://127.0.0.1:9999/oauth2callback")
    assert r.status_code == 400 and r.json()["error"] == "redirect_uri_mismatch"
    assert exchange(http, "4/0Anever", verifier).json()["error_description"] == "Malformed auth code."
    r = exchange(http, code, verifier)
    assert r.status_code == 200, r.text
    tokens = r.json()
    assert list(tokens) == ["access_token", "expires_in", "refresh_token", "scope", "token_type", "id_token"]
    assert tokens["refresh_token"].startswith("1//")
    r = exchange(http, code, verifier)  # a code works once
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert refresh(http, tokens["refresh_token"]).status_code == 200
    info = http.get("/oauth2/v2/userinfo", headers=bearer(tokens)).json()
    assert info["email"] == "login-user@example.com" and info["verified_email"] is True
    # the same login_hint logs the same account in
    r = authorize(http, None, login_hint="login-user@example.com")
    emails = [a["email"] for a in http.get("/__state").json()["accounts"]]
    assert emails.count("login-user@example.com") == 1
    assert r.status_code == 302


def test_authorize_rejects_bad_requests(http):
    r = authorize(http, None, client_id="nobody.apps.googleusercontent.com")
    assert r.status_code == 401 and "invalid_client" in r.text
    r = authorize(http, None, redirect_uri="https://evil.example/cb")
    assert r.status_code == 400 and "redirect_uri_mismatch" in r.text
    r = authorize(http, None, scope="https://evil.example/scope")
    assert r.status_code == 400 and "invalid_scope" in r.text
    r = authorize(http, None, access_type="online")  # no refresh token without offline access
    code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    assert "refresh_token" not in exchange(http, code, None).json()


# --------------------------------------------------------------------------
# Auth on Code Assist
# --------------------------------------------------------------------------


def test_access_token_checks(http):
    r = http.post("/v1internal:loadCodeAssist", json={"metadata": METADATA})
    error = error_of(r, 401, "UNAUTHENTICATED")
    assert detail(error, "ErrorInfo")["reason"] == "CREDENTIALS_MISSING"
    r = http.post("/v1internal:loadCodeAssist", json={}, headers=bearer("ya29.forged"))
    error = error_of(r, 401, "UNAUTHENTICATED")
    assert error["message"].startswith("Request had invalid authentication credentials")
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    creds, _ = seed(http)
    assert http.post("/v1internal:loadCodeAssist", json={}, headers=bearer(creds)).status_code == 200
    assert http.post("/__expire_access", json={"access_token": creds["access_token"]}).json() == {"expired": 1}
    error_of(http.post("/v1internal:loadCodeAssist", json={}, headers=bearer(creds)), 401)
    creds, _ = seed(http, scope="https://www.googleapis.com/auth/userinfo.email")
    r = http.post("/v1internal:loadCodeAssist", json={}, headers=bearer(creds))
    assert error_of(r, 403, "PERMISSION_DENIED")["message"] == "Request had insufficient authentication scopes."


def test_expire_all_access_tokens():
    with ServerThread(make_app(expires_in=60)) as url, httpx.Client(base_url=url) as client:
        creds, _ = seed(client)
        assert creds["expiry_date"] < (time.time() + 61) * 1000
        assert client.post("/__expire_access").json()["expired"] == 1
        error_of(client.post("/v1internal:loadCodeAssist", json={}, headers=bearer(creds)), 401)
        fresh = refresh(client, creds["refresh_token"]).json()
        assert fresh["expires_in"] == 60
        assert client.post("/v1internal:loadCodeAssist", json={}, headers=bearer(fresh)).status_code == 200


# --------------------------------------------------------------------------
# Project discovery and onboarding
# --------------------------------------------------------------------------


def test_load_code_assist_onboarded(http):
    creds, project = seed(http)
    r = http.post("/v1internal:loadCodeAssist", json={"metadata": METADATA}, headers=bearer(creds))
    answer = r.json()
    assert answer["currentTier"]["id"] == "standard-tier"
    assert answer["cloudaicompanionProject"] == project
    assert [t["isDefault"] for t in answer["allowedTiers"]] == [True]
    body = {"cloudaicompanionProject": "someone-elses", "metadata": {**METADATA, "duetProject": "x"}}
    r = http.post("/v1internal:loadCodeAssist", json=body, headers=bearer(creds))
    assert detail(error_of(r, 403, "PERMISSION_DENIED"), "ErrorInfo")["reason"] == "IAM_PERMISSION_DENIED"
    r = http.post("/v1internal:loadCodeAssist", json={"metadata": {"ideType": "EMACS"}}, headers=bearer(creds))
    assert "Invalid value at 'metadata.ide_type'" in error_of(r, 400)["message"]
    r = http.post("/v1internal:loadCodeAssist", json={"metadata": {"ideType": 9}}, headers=bearer(creds))
    assert r.status_code == 200  # proto JSON takes enum numbers
    r = http.post("/v1internal:loadCodeAssist", json={"meta": {}}, headers=bearer(creds))
    assert 'Unknown name "meta"' in error_of(r, 400)["message"]


def test_onboarding_free_tier(http):
    creds, project = seed(http, onboarded=False)
    before = http.get("/__state").json()
    loaded = http.post("/v1internal:loadCodeAssist", json={"metadata": METADATA}, headers=bearer(creds)).json()
    assert "currentTier" not in loaded and "cloudaicompanionProject" not in loaded
    [tier] = loaded["allowedTiers"]
    assert tier["id"] == "free-tier" and tier["isDefault"] is True
    r = http.post("/v1internal:generateContent", json=envelope(project), headers=bearer(creds))
    error_of(r, 403, "PERMISSION_DENIED")  # not onboarded yet
    body = {"tierId": "free-tier", "cloudaicompanionProject": project, "metadata": METADATA}
    r = http.post("/v1internal:onboardUser", json=body, headers=bearer(creds))
    assert error_of(r, 400)["status"] == "FAILED_PRECONDITION"
    r = http.post("/v1internal:onboardUser", json={"tierId": "standard-tier", "metadata": METADATA},
                  headers=bearer(creds))
    error_of(r, 400, "INVALID_ARGUMENT")
    op = http.post("/v1internal:onboardUser", json={"tierId": "free-tier", "metadata": METADATA},
                   headers=bearer(creds)).json()
    assert op["done"] is False and op["name"].startswith("operations/")
    assert http.get(f"/v1internal/{op['name']}", headers=bearer(creds)).json() == {"name": op["name"], "done": False}
    done = http.get(f"/v1internal/{op['name']}", headers=bearer(creds)).json()
    assert done["done"] is True
    assert done["response"]["cloudaicompanionProject"]["id"] == project
    loaded = http.post("/v1internal:loadCodeAssist", json={"metadata": METADATA}, headers=bearer(creds)).json()
    assert loaded["currentTier"]["id"] == "free-tier" and loaded["cloudaicompanionProject"] == project
    assert http.post("/v1internal:generateContent", json=envelope(project), headers=bearer(creds)).status_code == 200
    after = http.get("/__state").json()
    assert after["load_calls"] - before["load_calls"] == 2
    assert after["onboard_calls"] - before["onboard_calls"] == 3
    assert after["operation_polls"] - before["operation_polls"] == 2
    other, _ = seed(http)
    error_of(http.get(f"/v1internal/{op['name']}", headers=bearer(other)), 404, "NOT_FOUND")


def test_onboarding_standard_tier_and_repeat_calls():
    with ServerThread(make_app(default_tier="standard-tier")) as url, httpx.Client(base_url=url) as client:
        creds, project = seed(client, onboarded=False)
        loaded = client.post("/v1internal:loadCodeAssist", json={"metadata": METADATA}, headers=bearer(creds)).json()
        assert loaded["allowedTiers"][0]["id"] == "standard-tier"
        # without a project the operation ends with none (Gemini CLI: ProjectIdRequiredError)
        op = client.post("/v1internal:onboardUser", json={"tierId": "standard-tier"}, headers=bearer(creds)).json()
        op = client.post("/v1internal:onboardUser", json={"tierId": "standard-tier"}, headers=bearer(creds)).json()
        assert op["done"] is True and "cloudaicompanionProject" not in op["response"]
        body = {"tierId": "standard-tier", "cloudaicompanionProject": project, "metadata": METADATA}
        op = client.post("/v1internal:onboardUser", json=body, headers=bearer(creds)).json()
        assert op["done"] is False
        op = client.post("/v1internal:onboardUser", json=body, headers=bearer(creds)).json()  # peers re-call
        assert op["done"] is True and op["response"]["cloudaicompanionProject"]["id"] == project
        loaded = client.post("/v1internal:loadCodeAssist", json={}, headers=bearer(creds)).json()
        assert loaded["currentTier"]["id"] == "standard-tier"


# --------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------


def test_generate_matches_gemini_api(http):
    creds, project = seed(http)
    r = http.post("/v1internal:generateContent", json=envelope(project), headers=bearer(creds))
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"response", "traceId"}
    assert r.headers["x-cloudaicompanion-trace-id"] == body["traceId"]
    with ServerThread(gemini_api.make_app(None, ["gemini-2.5-flash"])) as url:
        direct = httpx.post(f"{url}/v1beta/models/gemini-2.5-flash:generateContent", json={"contents": [USER]}).json()
    for answer in (body["response"], direct):
        answer.pop("responseId")
    assert body["response"] == direct
    assert direct["candidates"][0]["content"]["parts"] == [{"text": "Echo: hello world"}]


def test_stream_is_sse_without_done(http):
    creds, project = seed(http)
    r = http.post("/v1internal:streamGenerateContent", params={"alt": "sse"},
                  json=envelope(project, "gemini-3-pro-preview"), headers=bearer(creds))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.text.endswith("}\r\n\r\n")
    events = sse_events(r.text)
    assert len(events) > 2 and len({e["traceId"] for e in events}) == 1
    parts = [p for e in events for p in e["response"]["candidates"][0]["content"]["parts"]]
    assert "".join(p["text"] for p in parts) == "Echo: hello world"
    assert "thoughtSignature" in parts[-1]
    assert events[-1]["response"]["candidates"][0]["finishReason"] == "STOP"
    # without alt=sse: one JSON array
    r = http.post("/v1internal:streamGenerateContent", json=envelope(project), headers=bearer(creds))
    assert isinstance(r.json(), list) and all("response" in e for e in r.json())


def test_thought_signatures_are_checked_like_gemini(http):
    creds, project = seed(http)
    tools = [{"functionDeclarations": [{"name": "get_time", "parametersJsonSchema": {"type": "object"}}]}]
    first = http.post("/v1internal:generateContent", json=envelope(project, "gemini-3-pro-preview", tools=tools),
                      headers=bearer(creds)).json()["response"]
    call = first["candidates"][0]["content"]
    assert call["parts"][0]["thoughtSignature"].startswith("++++")
    reply = {"role": "user", "parts": [{"functionResponse": {"name": "get_time", "response": {"t": 1}}}]}
    ok = envelope(project, "gemini-3-pro-preview", tools=tools, contents=[USER, call, reply])
    assert http.post("/v1internal:generateContent", json=ok, headers=bearer(creds)).status_code == 200
    unsigned = {"role": "model", "parts": [{"functionCall": {"name": "get_time", "args": {}}}]}
    bad = envelope(project, "gemini-3-pro-preview", tools=tools, contents=[USER, unsigned, reply])
    r = http.post("/v1internal:generateContent", json=bad, headers=bearer(creds))
    assert "missing a thought_signature" in error_of(r, 400)["message"]


def test_envelope_validation(http):
    creds, project = seed(http)
    h = bearer(creds)
    body = envelope(project)
    body["extra"] = 1
    body["request"]["contents"][0] = {"role": "user", "parts": [{"txt": "x"}]}
    error = error_of(http.post("/v1internal:generateContent", json=body, headers=h), 400, "INVALID_ARGUMENT")
    assert 'Unknown name "txt" at \'request.contents[0].parts[0]\'' in error["message"]
    assert 'Unknown name "extra": Cannot find field.' in error["message"]
    r = http.post("/v1internal:generateContent", json={"model": "gemini-2.5-flash", "request": {"contents": [USER]}},
                  headers=h)
    violations = detail(error_of(r, 400), "BadRequest")["fieldViolations"]
    assert violations == [{"field": "project", "description": "project is required"}]
    r = http.post("/v1internal:generateContent", json=envelope("not-mine"), headers=h)
    assert "not-mine" in error_of(r, 403, "PERMISSION_DENIED")["message"]
    r = http.post("/v1internal:generateContent", json=envelope(project, "gemini-1.0-pro"), headers=h)
    assert error_of(r, 404, "NOT_FOUND")["message"] == "Requested entity was not found."
    r = http.post("/v1internal:generateContent", json=envelope(project, contents=[]), headers=h)
    assert "* GenerateContentRequest.contents: contents is not specified" in error_of(r, 400)["message"]
    r = http.post("/v1internal:generateContent", json=envelope(project, generationConfig={"temperature": 3}),
                  headers=h)
    assert "temperature value of 3" in error_of(r, 400)["message"]
    r = http.post("/v1internal:generateContent", content=b"{nope", headers=h)
    error_of(r, 400)
    r = http.post("/v1internal:streamGenerateContent?alt=sse", json=envelope("not-mine"), headers=h)
    assert r.headers["content-type"].startswith("text/event-stream")
    error_of(r, 403)
    r = http.post("/v1internal:streamGenerateContent", json=envelope("not-mine"), headers=h)
    assert r.json()[0]["error"]["code"] == 403  # the array path wraps errors in [ ]
    # labels and session_id / sessionId are part of Code Assist's request
    body = envelope(project)
    body["request"]["labels"] = {"a": "b"}
    assert http.post("/v1internal:generateContent", json=body, headers=h).status_code == 200


def test_count_tokens(http):
    creds, _ = seed(http)
    h = bearer(creds)
    body = {"request": {"model": "models/gemini-2.5-pro", "contents": [USER]}}
    r = http.post("/v1internal:countTokens", json=body, headers=h)
    assert r.json() == {"totalTokens": len("hello world") // 4 + 1}
    r = http.post("/v1internal:countTokens", json={"request": {"model": "gemini-2.5-pro", "contents": [USER]}},
                  headers=h)
    assert "unexpected model name format" in error_of(r, 400)["message"]
    r = http.post("/v1internal:countTokens", json={"request": {"model": "models/nope", "contents": [USER]}},
                  headers=h)
    error_of(r, 404)
    r = http.post("/v1internal:countTokens", json={**body, "project": "p"}, headers=h)
    assert 'Unknown name "project"' in error_of(r, 400)["message"]


def test_unknown_methods_get_html_404(http):
    creds, _ = seed(http)
    r = http.post("/v1internal:fetchAvailableModels", json={}, headers=bearer(creds))
    assert r.status_code == 404 and "That\u2019s an error." in r.text
    assert http.get("/v1internal:generateContent").status_code == 404


def test_retrieve_user_quota(http):
    creds, project = seed(http)
    buckets = http.post("/v1internal:retrieveUserQuota", json={"project": project},
                        headers=bearer(creds)).json()["buckets"]
    assert {b["modelId"] for b in buckets} == set(code_assist.DEFAULT_MODELS)
    assert all(b["remainingFraction"] == 1 for b in buckets)


# --------------------------------------------------------------------------
# Error scenarios
# --------------------------------------------------------------------------


def test_quota_exhausted(http):
    creds, project = seed(http)
    http.post("/__scenario", json={"mode": "quota_exhausted"})
    r = http.post("/v1internal:generateContent", json=envelope(project), headers=bearer(creds))
    error = error_of(r, 429, "RESOURCE_EXHAUSTED")
    info = detail(error, "ErrorInfo")
    assert (info["reason"], info["domain"]) == ("QUOTA_EXHAUSTED", "cloudcode-pa.googleapis.com")
    assert info["metadata"]["quotaResetDelay"] == "3h2m1s"
    assert detail(error, "RetryInfo")["retryDelay"] == "10921s"
    buckets = http.post("/v1internal:retrieveUserQuota", json={"project": project},
                        headers=bearer(creds)).json()["buckets"]
    assert all(b["remainingFraction"] == 0 for b in buckets)
    # validation still comes first
    error_of(http.post("/v1internal:generateContent", json=envelope("x"), headers=bearer(creds)), 403)


def test_rate_limited_once_then_fine(http):
    creds, project = seed(http)
    http.post("/__scenario", json={"mode": "rate_limited", "times": 1})
    r = http.post("/v1internal:streamGenerateContent?alt=sse", json=envelope(project), headers=bearer(creds))
    error = error_of(r, 429, "RESOURCE_EXHAUSTED")
    assert detail(error, "ErrorInfo")["reason"] == "RATE_LIMIT_EXCEEDED"
    assert detail(error, "RetryInfo")["retryDelay"] == "0.47s"
    r = http.post("/v1internal:streamGenerateContent?alt=sse", json=envelope(project), headers=bearer(creds))
    assert r.status_code == 200
    assert http.get("/__state").json()["scenario"]["mode"] is None


def test_capacity_for_one_model(http):
    creds, project = seed(http)
    http.post("/__scenario", json={"mode": "capacity", "models": ["gemini-2.5-pro"]})
    r = http.post("/v1internal:generateContent", json=envelope(project, "gemini-2.5-pro"), headers=bearer(creds))
    error = error_of(r, 503, "UNAVAILABLE")
    assert error["message"] == "No capacity available for model gemini-2.5-pro on the server"
    assert detail(error, "ErrorInfo")["reason"] == "MODEL_CAPACITY_EXHAUSTED"
    r = http.post("/v1internal:generateContent", json=envelope(project, "gemini-2.5-flash"), headers=bearer(creds))
    assert r.status_code == 200


def test_account_not_allowed_and_validation_required(http):
    creds, project = seed(http)
    http.post("/__scenario", json={"mode": "not_allowed"})
    for path, body in (("loadCodeAssist", {}), ("generateContent", envelope(project))):
        error = error_of(http.post(f"/v1internal:{path}", json=body, headers=bearer(creds)), 403, "PERMISSION_DENIED")
        assert "no longer available for this account" in error["message"]
    http.post("/__scenario", json={"mode": "validation_required"})
    error = error_of(http.post("/v1internal:loadCodeAssist", json={}, headers=bearer(creds)), 403)
    assert detail(error, "ErrorInfo")["reason"] == "VALIDATION_REQUIRED"
    assert detail(error, "Help")["links"][0]["url"].startswith("https://")


def test_cut_stream(http):
    creds, project = seed(http)
    http.post("/__scenario", json={"mode": "cut", "times": 2})
    with pytest.raises(httpx.HTTPError):
        http.post("/v1internal:streamGenerateContent?alt=sse", json=envelope(project), headers=bearer(creds))
    with pytest.raises(httpx.HTTPError):
        http.post("/v1internal:generateContent", json=envelope(project), headers=bearer(creds))


def test_scenario_control_rejects_unknown_modes(http):
    assert http.post("/__scenario", json={"mode": "meteor"}).status_code == 400
    assert http.post("/__config", json={"flavour": "vim"}).status_code == 400
    assert http.post("/__config", json={"color": 1}).status_code == 400


def test_host_fallback_with_two_instances():
    store = Store()
    with ServerThread(make_app(flavour="antigravity", store=store)) as daily, \
            ServerThread(make_app(flavour="antigravity", store=store)) as prod, \
            httpx.Client(base_url=daily, timeout=5, headers={"User-Agent": AG_UA}) as d, \
            httpx.Client(base_url=prod, timeout=5, headers={"User-Agent": AG_UA}) as p:
        creds, project = seed(d)
        h = bearer(creds)
        d.post("/__scenario", json={"mode": "down"})
        error = error_of(d.post("/v1internal:generateContent", json=ag_envelope(project)), 503, "UNAVAILABLE")
        assert error["message"] == "The service is currently unavailable."
        r = p.post("/v1internal:generateContent", json=ag_envelope(project), headers=h)
        assert r.status_code == 200, r.text  # same token and project on the other host
        d.post("/__scenario", json={"mode": "down_close"})
        with pytest.raises(httpx.HTTPError):
            d.post("/v1internal:generateContent", json=ag_envelope(project), headers=h)
        assert d.get("/__state").json()["down_hits"] == 2
        assert p.get("/__state").json()["generate_calls"] == 1
        d.post("/__scenario", json={"mode": None})
        assert d.post("/v1internal:generateContent", json=ag_envelope(project), headers=h).status_code == 200


# --------------------------------------------------------------------------
# Antigravity flavour
# --------------------------------------------------------------------------


def test_antigravity_user_agent(ag):
    creds, project = seed(ag)
    for agent in ("antigravity/1.10.9 windows/amd64", "GeminiCLI/0.20.0/gemini-3-flash (linux; x64)", ""):
        r = ag.post("/v1internal:generateContent", json=ag_envelope(project),
                    headers={**bearer(creds), "User-Agent": agent})
        assert error_of(r, 400, "INVALID_ARGUMENT")["message"] == code_assist.OLD_ANTIGRAVITY
    for agent in ("antigravity/1.11.0 darwin/arm64", "antigravity/1.15.8 Windows/amd64"):
        r = ag.post("/v1internal:loadCodeAssist", json={"metadata": {"ideType": "ANTIGRAVITY"}},
                    headers={**bearer(creds), "User-Agent": agent})
        assert r.status_code == 200, r.text
    assert ag.post("/__config", json={"min_version": "1.16.0"}).status_code == 200
    try:
        error_of(ag.post("/v1internal:loadCodeAssist", json={}, headers=bearer(creds)), 400)
    finally:
        ag.post("/__config", json={"min_version": "1.11.0"})


def test_antigravity_envelope(ag):
    creds, project = seed(ag)
    h = bearer(creds)
    r = ag.post("/v1internal:generateContent", json=ag_envelope(project), headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["response"]["candidates"][0]["content"]["parts"][0]["text"] == "Echo: hello world"
    r = ag.post("/v1internal:generateContent", json=envelope(project, "gemini-3-flash"), headers=h)
    fields = {v["field"] for v in detail(error_of(r, 400), "BadRequest")["fieldViolations"]}
    assert fields == {"user_agent", "request_type", "request_id"}
    body = ag_envelope(project)
    body["requestId"] = "req-1"
    del body["request"]["sessionId"]
    r = ag.post("/v1internal:generateContent", json=body, headers=h)
    fields = {v["field"] for v in detail(error_of(r, 400), "BadRequest")["fieldViolations"]}
    assert fields == {"request_id", "request.session_id"}
    body = ag_envelope(project)
    body["request"]["safetySettings"] = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}]
    r = ag.post("/v1internal:generateContent", json=body, headers=h)
    assert 'Unknown name "safetySettings" at \'request\'' in error_of(r, 400)["message"]
    body = ag_envelope(project)
    body["enabledCreditTypes"] = ["GOOGLE_ONE_AI"]
    body["request"]["toolConfig"] = {"functionCallingConfig": {"mode": "VALIDATED"}}
    body["request"]["tools"] = [{"functionDeclarations": [{"name": "f", "parameters": {
        "type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "required": ["a"]}}]}]
    assert ag.post("/v1internal:generateContent", json=body, headers=h).status_code == 200


def test_fetch_available_models(ag):
    creds, project = seed(ag)
    r = ag.post("/v1internal:fetchAvailableModels", json={}, headers=bearer(creds))
    models = r.json()["models"]
    assert set(models) == set(code_assist.ANTIGRAVITY_MODELS)
    assert models["claude-opus-4-6-thinking"]["displayName"] == "Claude Opus 4.6 (Thinking)"
    for info in models.values():
        assert 0 <= info["quotaInfo"]["remainingFraction"] <= 1
        assert info["quotaInfo"]["resetTime"].endswith("Z")
    ag.post("/__scenario", json={"mode": "quota_exhausted", "models": ["claude-sonnet-4-6"]})
    models = ag.post("/v1internal:fetchAvailableModels", json={"project": project},
                     headers=bearer(creds)).json()["models"]
    assert models["claude-sonnet-4-6"]["quotaInfo"]["remainingFraction"] == 0
    assert models["gemini-3-flash"]["quotaInfo"]["remainingFraction"] == 1
    r = ag.post("/v1internal:fetchAvailableModels", json={"project": "other"}, headers=bearer(creds))
    error_of(r, 403)


def test_claude_models_in_gemini_shape(ag):
    creds, project = seed(ag)
    h = bearer(creds)
    tools = [{"functionDeclarations": [{"name": "get_time", "parameters": {
        "type": "OBJECT", "properties": {"tz": {"type": "STRING"}}}}]}]
    config = {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 2048}}
    body = ag_envelope(project, "claude-opus-4-6-thinking", tools=tools, generationConfig=config)
    answer = ag.post("/v1internal:generateContent", json=body, headers=h).json()["response"]
    turn = answer["candidates"][0]["content"]
    thought, call = turn["parts"]
    assert thought["thought"] is True and thought["text"] == "Thinking about: hello world"
    assert thought["thoughtSignature"].startswith("++++")
    assert call["functionCall"] == {"name": "get_time", "args": {"tool": "get_time", "n": 0}}
    assert answer["usageMetadata"]["thoughtsTokenCount"] > 0
    result = {"role": "user", "parts": [{"functionResponse": {"name": "get_time", "response": {"t": 1}}}]}
    body["request"]["contents"] = [USER, turn, result]
    r = ag.post("/v1internal:streamGenerateContent?alt=sse", json=body, headers=h)
    text = "".join(p.get("text", "") for e in sse_events(r.text)
                   for p in e["response"]["candidates"][0]["content"]["parts"] if not p.get("thought"))
    assert text == 'Tool results: {"t":1}'
    body["request"]["contents"] = [USER, {"role": "model", "parts": [call]}, result]  # thinking dropped
    error = error_of(ag.post("/v1internal:generateContent", json=body, headers=h), 400, "INVALID_ARGUMENT")
    inner = json.loads(error["message"])
    assert inner["error"]["type"] == "invalid_request_error"
    assert inner["error"]["message"].startswith(
        "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`")
    forged = {**thought, "thoughtSignature": base64.b64encode(b"forged-signature-bytes").decode()}
    body["request"]["contents"] = [USER, {"role": "model", "parts": [forged, call]}, result]
    error = error_of(ag.post("/v1internal:generateContent", json=body, headers=h), 400)
    assert "Invalid `signature` in `thinking` block" in error["message"]
    # Claude without thinking: no thought part, no signature
    body = ag_envelope(project, "claude-sonnet-4-6")
    parts = ag.post("/v1internal:generateContent", json=body, headers=h).json()["response"]["candidates"][0]["content"]["parts"]
    assert parts == [{"text": "Echo: hello world"}]


# --------------------------------------------------------------------------
# Command line and request log
# --------------------------------------------------------------------------


def test_request_log(http):
    http.delete("/__requests")
    http.post("/v1internal:loadCodeAssist", json={"metadata": METADATA})
    [entry] = http.get("/__requests").json()
    assert entry["path"] == "/v1internal:loadCodeAssist" and entry["body"] == {"metadata": METADATA}


def test_command_line_prints_ready():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.upstreams.code_assist", "--host", "127.0.0.1", "--port", "0",
         "--flavour", "antigravity", "--expires-in", "30"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY ") and line.split()[1].isdigit(), proc.stderr.read()
        url = f"http://127.0.0.1:{line.split()[1]}"
        state = httpx.get(f"{url}/__state", timeout=5).json()
        assert state["config"]["flavour"] == "antigravity" and state["config"]["expires_in"] == 30
    finally:
        proc.terminate()
        proc.wait(5)
