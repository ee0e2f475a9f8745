"""The Codex and Copilot doubles refuse what the real services refuse (tests/upstreams/codex_backend.py,
copilot_api.py): otherwise the e2e tests against them would prove nothing."""

import httpx
import pytest

from tests.upstreams import codex_backend, copilot_api
from tests.upstreams.serving import ServerThread

BODY = {"model": "gpt-5.1-codex", "input": "hi", "instructions": "", "stream": True, "store": False}


@pytest.fixture(scope="module")
def codex():
    with ServerThread(codex_backend.make_app(None, codex_backend.DEFAULT_MODELS)) as origin:
        yield origin


@pytest.fixture(scope="module")
def copilot():
    with ServerThread(copilot_api.make_app(None, copilot_api.DEFAULT_MODELS)) as origin:
        yield origin


def codex_headers(auth: dict, **over) -> dict:
    tokens = auth["tokens"]
    return {"Authorization": f"Bearer {tokens['access_token']}", "chatgpt-account-id": tokens["account_id"],
            "originator": "codex_cli_rs", **over}


def test_codex_refresh_rotates_and_refuses_reuse_and_foreign_clients(codex):
    auth = httpx.post(f"{codex}/__codex/seed", json={}).json()
    old = auth["tokens"]["refresh_token"]
    grant = {"client_id": codex_backend.CLIENT_ID, "grant_type": "refresh_token", "refresh_token": old}
    assert httpx.post(f"{codex}/oauth/token", json={**grant, "client_id": "app_other"}).status_code == 401
    first = httpx.post(f"{codex}/oauth/token", json=grant)
    assert first.status_code == 200 and first.json()["refresh_token"] != old
    again = httpx.post(f"{codex}/oauth/token", json=grant)
    assert again.status_code == 401 and again.json()["error"]["code"] == "refresh_token_reused"
    form = httpx.post(f"{codex}/oauth/token", data=grant)  # Codex CLI refreshes with JSON
    assert form.status_code == 400


@pytest.mark.parametrize("change, status", [
    ({"chatgpt-account-id": "acct-someone-else"}, 403),
    ({"originator": ""}, 400),
    ({"Authorization": "Bearer not-issued"}, 401),
])
def test_codex_backend_refuses_requests_codex_cli_would_not_send(codex, change, status):
    auth = httpx.post(f"{codex}/__codex/seed", json={}).json()
    r = httpx.post(f"{codex}/backend-api/codex/responses", json=BODY, headers=codex_headers(auth, **change))
    assert r.status_code == status, r.text


@pytest.mark.parametrize("change, words", [
    ({"stream": False}, "Stream must be set to true"),
    ({"store": True}, "Store must be set to false"),
    ({"instructions": 5}, "Instructions must be a string"),
    ({"max_output_tokens": 100}, "Unsupported parameter: max_output_tokens"),
])
def test_codex_backend_refuses_bodies_it_does_not_take(codex, change, words):
    auth = httpx.post(f"{codex}/__codex/seed", json={}).json()
    body = {k: v for k, v in {**BODY, **change}.items() if v is not None}
    r = httpx.post(f"{codex}/backend-api/codex/responses", json=body, headers=codex_headers(auth))
    assert r.status_code == 400 and words in r.json()["error"]["message"]


def test_codex_backend_refuses_an_expired_access_token_and_streams_a_good_request(codex):
    stale = httpx.post(f"{codex}/__codex/seed", json={"expired": True}).json()
    r = httpx.post(f"{codex}/backend-api/codex/responses", json=BODY, headers=codex_headers(stale))
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_expired"
    auth = httpx.post(f"{codex}/__codex/seed", json={}).json()
    r = httpx.post(f"{codex}/backend-api/codex/responses", json=BODY, headers=codex_headers(auth))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert "response.completed" in r.text


def test_codex_authorize_takes_only_codex_clis_redirect_and_pkce(codex):
    good = {"response_type": "code", "client_id": codex_backend.CLIENT_ID, "scope": "openid offline_access",
            "redirect_uri": "http://localhost:1455/auth/callback", "code_challenge": "a" * 43,
            "code_challenge_method": "S256", "state": "s"}
    assert httpx.get(f"{codex}/oauth/authorize", params=good).status_code == 302
    for change in ({"redirect_uri": "http://127.0.0.1:1455/auth/callback"}, {"client_id": "x"},
                   {"code_challenge_method": "plain"}, {"scope": "openid"}):
        assert httpx.get(f"{codex}/oauth/authorize", params={**good, **change}).status_code == 400, change


def test_github_device_flow_answers_as_github_does(copilot):
    httpx.post(f"{copilot}/__copilot/config", json={"poll_interval": 5})
    form = httpx.post(f"{copilot}/login/device/code", data={"client_id": copilot_api.CLIENT_ID, "scope": "read:user"})
    assert form.headers["content-type"].startswith("application/x-www-form-urlencoded")  # no Accept: json
    accept = {"Accept": "application/json"}
    device = httpx.post(f"{copilot}/login/device/code", headers=accept,
                        data={"client_id": copilot_api.CLIENT_ID, "scope": "read:user"}).json()
    poll = {"client_id": copilot_api.CLIENT_ID, "device_code": device["device_code"],
            "grant_type": copilot_api.DEVICE_GRANT}
    first = httpx.post(f"{copilot}/login/oauth/access_token", headers=accept, data=poll)
    assert (first.status_code, first.json()["error"]) == (200, "authorization_pending")
    fast = httpx.post(f"{copilot}/login/oauth/access_token", headers=accept, data=poll).json()
    assert fast["error"] == "slow_down" and fast["interval"] == 10
    wrong = httpx.post(f"{copilot}/login/oauth/access_token", headers=accept, data={**poll, "client_id": "Iv1.x"})
    assert wrong.json()["error"] == "incorrect_client_credentials"


def test_copilot_api_wants_a_live_copilot_token_and_the_editor_headers(copilot):
    github = httpx.post(f"{copilot}/__copilot/seed", json={}).json()["oauth_token"]
    assert httpx.get(f"{copilot}/copilot_internal/v2/token", headers={"Authorization": "token gho_x"}).status_code == 401
    trade = httpx.get(f"{copilot}/copilot_internal/v2/token", headers={"Authorization": f"token {github}"}).json()
    editor = {"Authorization": f"Bearer {trade['token']}", "Editor-Version": "vscode/1.104.1",
              "Copilot-Integration-Id": "vscode-chat"}
    chat = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{copilot}/chat/completions", json=chat, headers=editor).status_code == 200
    bare = {"Authorization": editor["Authorization"]}
    r = httpx.post(f"{copilot}/chat/completions", json=chat, headers=bare)
    assert r.status_code == 400 and "Editor-Version" in r.json()["error"]["message"]
    with_github = {**editor, "Authorization": f"Bearer {github}"}  # the GitHub token is not a Copilot token
    assert httpx.post(f"{copilot}/chat/completions", json=chat, headers=with_github).status_code == 401
    httpx.post(f"{copilot}/__copilot/expire")
    r = httpx.post(f"{copilot}/chat/completions", json=chat, headers=editor)
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
    none = httpx.post(f"{copilot}/__copilot/seed", json={"copilot": False}).json()["oauth_token"]
    assert httpx.get(f"{copilot}/copilot_internal/v2/token",
                     headers={"Authorization": f"token {none}"}).status_code == 404
