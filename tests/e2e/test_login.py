"""`llmgate login` as users run it (the installed command, a real process) against the strict
OAuth doubles; the browser is played by httpx following the printed URL."""

import json
import re
import subprocess
import time

import httpx
import pytest

from tests.harness import BIN, Proc, Upstream
from tests.upstreams import code_assist, serving


@pytest.fixture(scope="module")
def qwen():
    u = Upstream("qwen_portal", "--poll-interval", "0.3")
    yield u
    u.stop()


@pytest.fixture(scope="module")
def iflow():
    u = Upstream("iflow_api")
    yield u
    u.stop()


def login(*args: str) -> Proc:
    return Proc([str(BIN / "llmgate"), "login", *args, "--no-browser", "--timeout", "30"])


def finished(p: Proc, timeout: float = 30) -> int:
    p.p.wait(timeout)
    time.sleep(0.1)  # let the output pump catch up
    return p.p.returncode


def test_qwen_device_login_writes_what_qwen_code_reads(qwen, tmp_path):
    httpx.post(f"{qwen.base}/__oauth/reset")
    path = tmp_path / "qwen" / "oauth_creds.json"
    p = login("qwen", "--credentials", str(path), "--device-url", f"{qwen.base}/api/v1/oauth2/device/code",
              "--token-url", f"{qwen.base}/api/v1/oauth2/token")
    line = p.wait_for(r"confirm the code (\S+)\.")
    user_code = line.group(1).rstrip(".")
    time.sleep(1.0)  # a few pending polls first
    httpx.post(f"{qwen.base}/__oauth/approve", params={"user_code": user_code}).raise_for_status()
    assert finished(p) == 0, p.output
    creds = json.loads(path.read_text())
    state = httpx.get(f"{qwen.base}/__oauth").json()
    assert creds["access_token"] in state["valid_access_tokens"]
    assert creds["refresh_token"] == state["current_refresh_token"]
    assert creds["expiry_date"] > time.time() * 1000  # epoch milliseconds
    assert creds["resource_url"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert state["device_polls"] >= 2


def test_qwen_denied_login_fails_cleanly(qwen, tmp_path):
    httpx.post(f"{qwen.base}/__oauth/reset")
    path = tmp_path / "creds.json"
    p = login("qwen", "--credentials", str(path), "--device-url", f"{qwen.base}/api/v1/oauth2/device/code",
              "--token-url", f"{qwen.base}/api/v1/oauth2/token")
    user_code = p.wait_for(r"confirm the code (\S+)\.").group(1).rstrip(".")
    httpx.post(f"{qwen.base}/__oauth/deny", params={"user_code": user_code}).raise_for_status()
    assert finished(p) == 1
    assert "Login failed: access_denied" in p.output
    assert "Traceback" not in p.output and not path.exists()


def test_iflow_loopback_login_gets_an_api_key(iflow, tmp_path):
    path = tmp_path / "iflow" / "oauth_creds.json"
    p = login("iflow", "--credentials", str(path), "--port", "0", "--auth-url", f"{iflow.base}/oauth",
              "--token-url", f"{iflow.base}/oauth/token", "--userinfo-url", f"{iflow.base}/api/oauth/getUserInfo")
    url = p.wait_for(r"(http://127\.0\.0\.1:\d+/oauth\?\S+)").group(1)
    page = httpx.get(url, follow_redirects=True)  # the "browser": iFlow redirects to our callback
    assert page.status_code == 200 and "Logged in" in page.text
    assert finished(p) == 0, p.output
    creds = json.loads(path.read_text())
    key = creds["apiKey"]
    assert key in httpx.get(f"{iflow.base}/__state").json()["api_keys"]


def test_a_forged_callback_is_refused(iflow, tmp_path):
    path = tmp_path / "creds.json"
    p = login("iflow", "--credentials", str(path), "--port", "0", "--auth-url", f"{iflow.base}/oauth",
              "--token-url", f"{iflow.base}/oauth/token", "--userinfo-url", f"{iflow.base}/api/oauth/getUserInfo")
    url = p.wait_for(r"(http://127\.0\.0\.1:\d+/oauth\?\S+)").group(1)
    redirect = re.search(r"redirect=([^&]+)", url).group(1)
    callback = httpx.URL(httpx.QueryParams(f"r={redirect}")["r"])
    forged = httpx.get(callback, params={"code": "stolen", "state": "not-the-state"})
    assert forged.status_code == 400 and not path.exists()  # not this login's: it goes on waiting
    page = httpx.get(url, follow_redirects=True)  # the real round still logs in
    assert "Logged in" in page.text and finished(p) == 0, p.output


def test_help_names_every_provider():
    out = subprocess.run([str(BIN / "llmgate"), "login", "--help"], capture_output=True, text=True).stdout
    assert all(name in out for name in ("qwen", "gemini", "antigravity", "iflow"))


@pytest.fixture(scope="module")
def google():
    with serving.ServerThread(code_assist.make_app()) as base:
        yield base


@pytest.mark.parametrize("provider, callback", [("gemini", "/oauth2callback"), ("antigravity", "/oauth-callback")])
def test_google_loopback_login_with_pkce(google, tmp_path, provider, callback):
    path = tmp_path / f"{provider}.json"
    p = login(provider, "--credentials", str(path), "--port", "0", "--auth-url", f"{google}/o/oauth2/v2/auth",
              "--token-url", f"{google}/token")
    url = p.wait_for(r"(http://127\.0\.0\.1:\d+/o/oauth2/v2/auth\?\S+)").group(1)
    assert "code_challenge_method=S256" in url and "access_type=offline" in url
    assert httpx.URL(url).params["redirect_uri"].endswith(callback)
    page = httpx.get(url, follow_redirects=True)  # the "browser"; Google redirects to our callback
    assert "Logged in" in page.text
    assert finished(p) == 0, p.output
    creds = json.loads(path.read_text())
    assert creds["access_token"].startswith("ya29.") and creds["refresh_token"]
    assert creds["expiry_date"] > time.time() * 1000
    assert ("terms forbid" in p.output) == (provider == "antigravity")
    # the refresh token works with the client it was issued to
    client_id = httpx.URL(url).params["client_id"]
    secret = {"gemini": "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", "antigravity": "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"}
    r = httpx.post(f"{google}/token", data={"grant_type": "refresh_token", "refresh_token": creds["refresh_token"],
                                            "client_id": client_id, "client_secret": secret[provider]})
    assert r.status_code == 200, r.text


def test_qwen_slow_down_backs_off(qwen, tmp_path):
    """The server wants polls 2.5 s apart and the CLI starts at 2 s, so its second poll is
    necessarily answered slow_down: the login only completes if the CLI backs off (x1.5)
    instead of giving up or hammering on."""
    httpx.post(f"{qwen.base}/__oauth/reset")
    httpx.post(f"{qwen.base}/__oauth/config", json={"poll_interval": 2.5}).raise_for_status()
    try:
        path = tmp_path / "creds.json"
        p = login("qwen", "--credentials", str(path), "--device-url", f"{qwen.base}/api/v1/oauth2/device/code",
                  "--token-url", f"{qwen.base}/api/v1/oauth2/token")
        user_code = p.wait_for(r"confirm the code (\S+)\.").group(1).rstrip(".")
        time.sleep(2.5)  # the first poll (pending) and the second (slow_down) have happened
        httpx.post(f"{qwen.base}/__oauth/approve", params={"user_code": user_code}).raise_for_status()
        assert finished(p, 40) == 0, p.output
    finally:
        httpx.post(f"{qwen.base}/__oauth/config", json={"poll_interval": 0.3})
    token_polls = [r for r in httpx.get(f"{qwen.base}/__requests").json() if r["path"] == "/api/v1/oauth2/token"]
    assert len(token_polls) >= 3 and json.loads(path.read_text())["access_token"]
