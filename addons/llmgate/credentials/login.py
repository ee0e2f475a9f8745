"""Logging in from scratch, as the official CLIs do, writing the credentials where the gateway
(and the CLI) read them.

- Qwen Code: OAuth device code with PKCE. Prints the URL and code, polls the token endpoint
  (authorization_pending: keep going; slow_down: interval x1.5, at most 10 s).
- Gemini CLI, Antigravity, iFlow, Codex: authorization code on a loopback callback, with a state
  check (and PKCE for Google and OpenAI). The browser is opened when there is one; the URL is
  printed either way. Codex writes auth.json as Codex CLI does (tokens under "tokens").
- GitHub Copilot: GitHub's OAuth device flow (RFC 8628 as GitHub runs it: errors come with
  HTTP 200; slow_down adds 5 s to the interval); the GitHub token is written, the gateway trades
  it for Copilot tokens itself.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import http.server
import secrets
import threading
import time
import urllib.parse
import webbrowser
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from llmgate.credentials import oauth
from llmgate.credentials.store import write_atomic
from llmgate.providers import codex
from llmgate.request_path.upstream import check_proxy, proxy_name

Say = Callable[[str], None]


class LoginError(Exception):
    pass


def pkce() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)[:64]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@contextlib.contextmanager
def _http(proxy: str | None) -> Iterator[httpx.Client]:
    """The login's HTTP client, through `proxy` (a proxy URL, "env" or "none"; None: the environment's
    proxies, as curl would). Failures are LoginErrors naming the proxy by host only (never its password)."""
    try:
        check_proxy(proxy)
    except ValueError as e:
        raise LoginError(f"--proxy {e}") from None
    explicit = proxy not in (None, "env", "none")
    try:
        with httpx.Client(timeout=30, proxy=proxy if explicit else None, trust_env=proxy != "none") as http:
            yield http
    except httpx.HTTPError as e:
        via = f" through the proxy {proxy_name(proxy)}" if explicit and proxy else ""
        raise LoginError(f"the login's HTTP request failed{via} ({type(e).__name__})") from None


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        raise LoginError(f"{resp.request.url} answered {resp.status_code} with no JSON") from None
    if not isinstance(data, dict):
        raise LoginError(f"{resp.request.url} answered {resp.status_code} with unexpected JSON")
    return data


def qwen_device_login(client: oauth.OAuthClient, path: Path, say: Say, interval: float = 2.0,
                      timeout: float = 900.0, proxy: str | None = None) -> dict[str, Any]:
    verifier, challenge = pkce()
    with _http(proxy) as http:
        r = http.post(client.device_url or "", data={
            "client_id": client.client_id, "scope": " ".join(client.scopes),
            "code_challenge": challenge, "code_challenge_method": "S256"})
        device = _json(r)
        if r.status_code != 200 or "device_code" not in device:
            raise LoginError(f"device authorization failed: {device.get('error_description') or device}")
        say(f"Open {device.get('verification_uri_complete') or device.get('verification_uri')} "
            f"and confirm the code {device.get('user_code')}.")
        deadline = time.monotonic() + min(timeout, float(device.get("expires_in") or timeout))
        while time.monotonic() < deadline:
            r = http.post(client.token_url, data={
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": client.client_id,
                "device_code": device["device_code"], "code_verifier": verifier})
            answer = _json(r)
            if r.status_code == 200:
                creds = oauth.token_fields(answer, {})
                write_atomic(path, creds)
                return creds
            error = answer.get("error")
            if error == "authorization_pending":
                pass
            elif error == "slow_down":
                interval = min(interval * 1.5, 10.0)
            else:
                raise LoginError(f"{error}: {answer.get('error_description') or ''}".rstrip(": "))
            time.sleep(interval)
    raise LoginError("the device code expired before the login was confirmed")


@dataclass
class _Callback:
    params: dict[str, str] | None = None
    state = ""  # the login's: a callback without it is not this login's (any page can load the URL)


def _callback_server(path: str, port: int, done: _Callback, event: threading.Event) -> http.server.HTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            url = urllib.parse.urlsplit(self.path)
            if url.path != path:
                self.send_error(404)
                return
            params = dict(urllib.parse.parse_qsl(url.query))
            if params.get("state") != done.state:
                self.send_error(400, "Not this login's callback")
                return
            done.params = params
            ok = "code" in done.params
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.end_headers()
            self.wfile.write(b"Logged in; you can close this tab." if ok else b"Login failed; see the terminal.")
            event.set()

        def log_message(self, *args: Any) -> None:
            pass

    return http.server.HTTPServer(("127.0.0.1", port), Handler)


def loopback_code(auth_url: str, params: dict[str, str], callback_path: str, port: int, say: Say,
                  open_browser: bool, timeout: float, redirect_key: str = "redirect_uri",
                  redirect_host: str = "127.0.0.1") -> tuple[str, str]:
    """Run the browser leg: -> (code, redirect_uri). Checks the state it sent. `redirect_host`: the
    name the issuer has allow-listed (OpenAI's is "localhost"); the server listens on 127.0.0.1."""
    done, event = _Callback(), threading.Event()
    done.state = state = secrets.token_urlsafe(16)
    server = _callback_server(callback_path, port, done, event)
    redirect = f"http://{redirect_host}:{server.server_address[1]}{callback_path}"
    query = {**params, redirect_key: redirect, "state": state}
    url = auth_url + "?" + urllib.parse.urlencode(query)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        say(f"Open this URL to log in:\n{url}")
        if open_browser:
            webbrowser.open(url)
        if not event.wait(timeout):
            raise LoginError("no login came back in time")
    finally:
        server.shutdown()
        server.server_close()
    got = done.params or {}  # with the login's state (the callback server keeps only that)
    if "code" not in got:
        raise LoginError(got.get("error") or "no code in the callback")
    return got["code"], redirect


def google_login(client: oauth.OAuthClient, path: Path, say: Say, callback_path: str, port: int,
                 open_browser: bool = True, timeout: float = 600.0, proxy: str | None = None) -> dict[str, Any]:
    verifier, challenge = pkce()
    code, redirect = loopback_code(client.auth_url or "", {
        "client_id": client.client_id, "response_type": "code", "scope": " ".join(client.scopes),
        "access_type": "offline", "prompt": "consent", "code_challenge": challenge,
        "code_challenge_method": "S256"}, callback_path, port, say, open_browser, timeout)
    with _http(proxy) as http:
        r = http.post(client.token_url, data={
            "grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": redirect,
            "client_id": client.client_id, "client_secret": client.client_secret or ""})
    answer = _json(r)
    if r.status_code != 200:
        raise LoginError(f"token exchange failed: {answer.get('error')}: {answer.get('error_description') or ''}")
    creds = oauth.token_fields(answer, {})
    write_atomic(path, creds)
    return creds


def iflow_login(client: oauth.OAuthClient, userinfo_url: str, path: Path, say: Say, port: int,
                open_browser: bool = True, timeout: float = 600.0, proxy: str | None = None) -> dict[str, Any]:
    code, redirect = loopback_code(client.auth_url or "", {
        "client_id": client.client_id, "loginMethod": "phone", "type": "phone"},
        "/oauth2callback", port, say, open_browser, timeout, redirect_key="redirect")
    basic = base64.b64encode(f"{client.client_id}:{client.client_secret}".encode()).decode()
    with _http(proxy) as http:
        r = http.post(client.token_url, headers={"Authorization": f"Basic {basic}"}, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
            "client_id": client.client_id, "client_secret": client.client_secret or ""})
        answer = _json(r)
        if r.status_code != 200:
            raise LoginError(f"token exchange failed: {answer.get('error')}")
        creds = oauth.token_fields(answer, {})
        info = _json(http.get(userinfo_url, params={"accessToken": creds["access_token"]}))
    key = (info.get("data") or {}).get("apiKey") if isinstance(info.get("data"), dict) else None
    if not key:
        raise LoginError("iFlow gave no API key for this account")
    creds["apiKey"] = key
    write_atomic(path, creds)
    return creds


CODEX_PORTS = (1455, 1457)  # the callback ports OpenAI allow-lists for Codex CLI, tried in turn


def codex_login(client: oauth.OAuthClient, path: Path, say: Say, port: int | None = None, open_browser: bool = True,
                timeout: float = 600.0, proxy: str | None = None) -> dict[str, Any]:
    """Codex CLI's "Sign in with ChatGPT": PKCE, callback http://localhost:<port>/auth/callback
    (1455, else 1457 when it is taken), the code traded at the token endpoint."""
    verifier, challenge = pkce()
    params = {"response_type": "code", "client_id": client.client_id, "scope": " ".join(client.scopes),
              "code_challenge": challenge, "code_challenge_method": "S256", "id_token_add_organizations": "true",
              "codex_cli_simplified_flow": "true", "originator": codex.ORIGINATOR}
    ports = CODEX_PORTS if port is None else (port,)
    for i, each in enumerate(ports):
        try:
            code, redirect = loopback_code(client.auth_url or "", params, "/auth/callback", each, say, open_browser,
                                           timeout, redirect_host="localhost")
            break
        except OSError as e:  # only binding the callback server raises it
            if e.errno != errno.EADDRINUSE or i == len(ports) - 1:
                raise LoginError(f"cannot listen on 127.0.0.1:{each} for the callback ({e.strerror})") from None
    with _http(proxy) as http:
        r = http.post(client.token_url, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
            "client_id": client.client_id, "code_verifier": verifier})
    answer = _json(r)
    if r.status_code != 200 or not all(isinstance(answer.get(k), str) for k in
                                       ("id_token", "access_token", "refresh_token")):
        raise LoginError(f"token exchange failed ({r.status_code}): {answer.get('error') or 'no tokens'}")
    tokens = {k: answer[k] for k in ("id_token", "access_token", "refresh_token")}
    tokens["account_id"] = codex.account_id(tokens)
    creds = {"OPENAI_API_KEY": None, "auth_mode": "chatgpt", "tokens": tokens, "last_refresh": codex.now_rfc3339()}
    write_atomic(path, creds)
    return creds


def github_device_login(client: oauth.OAuthClient, path: Path, say: Say, timeout: float = 900.0,
                        proxy: str | None = None) -> dict[str, Any]:
    """GitHub's device flow with the Copilot editors' client id; writes {"oauth_token", "scope"}."""
    accept = {"Accept": "application/json"}  # else GitHub answers form-encoded
    with _http(proxy) as http:
        r = http.post(client.device_url or "", headers=accept,
                      data={"client_id": client.client_id, "scope": " ".join(client.scopes)})
        device = _json(r)
        if r.status_code != 200 or "device_code" not in device:
            raise LoginError(f"device authorization failed: {device.get('error_description') or device.get('error')}")
        say(f"Open {device.get('verification_uri')} and enter the code {device.get('user_code')}.")
        interval = float(device.get("interval") or 5)
        deadline = time.monotonic() + min(timeout, float(device.get("expires_in") or timeout))
        while time.monotonic() < deadline:
            time.sleep(interval)
            answer = _json(http.post(client.token_url, headers=accept, data={
                "client_id": client.client_id, "device_code": device["device_code"],
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code"}))
            if isinstance(answer.get("access_token"), str) and answer["access_token"]:
                creds = {"oauth_token": answer["access_token"], "scope": answer.get("scope", "")}
                write_atomic(path, creds)
                return creds
            error = answer.get("error")
            if error == "slow_down":
                interval = float(answer.get("interval") or interval + 5)
            elif error != "authorization_pending":
                raise LoginError(f"{error}: {answer.get('error_description') or ''}".rstrip(": "))
    raise LoginError("the device code expired before the login was confirmed")
