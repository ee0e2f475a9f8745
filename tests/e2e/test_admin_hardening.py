"""Issue 12: nothing leaks to web pages. A gateway with the default config (no keys: it trusts
loopback clients) meets what a browser sends for a hostile page: a cross-site "simple" POST
(text/plain, no preflight), a DNS-rebinding page (its own host name in Host, same-origin in the
browser's eyes), and the chain they aimed at: add a provider whose api_key is ${SOME_VAR} and
whose base_url is the attacker's, then ask the gateway to test it. An attacker upstream
records whether anything secret arrived. Plus provider fields that used to break every request
to their provider (CR/LF in headers, whitespace in URLs)."""

from __future__ import annotations

import json
import os
import socket

import httpx
import pytest
from aiohttp import web

from tests.harness import Gateway, Upstream
from tests.upstreams.serving import ServerThread

SECRET_VAR = "LLMGATE_HARDENING_SECRET"
SECRET = "sk-env-secret-7f3a9c"
UP_KEY = "up-key-hardening"
HEADER_SECRET = "hdr-secret-51d2"
EVIL = "evil.example"


class Attacker:
    """The attacker's server: answers like an OpenAI-compatible upstream, keeps every request."""

    def __init__(self) -> None:
        self.seen: list[str] = []

        async def any_request(request: web.Request) -> web.Response:
            self.seen.append(f"{request.method} {request.path_qs}\n{dict(request.headers)}\n"
                             f"{(await request.read()).decode('latin-1')}")
            return web.json_response({"data": [{"id": "m", "object": "model"}], "object": "list"})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", any_request)
        self._server = ServerThread(app)
        self.base = self._server.__enter__()

    def got_secret(self) -> bool:
        return any(s in text for text in self.seen for s in (SECRET, UP_KEY, HEADER_SECRET))

    def stop(self) -> None:
        self._server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def up():
    u = Upstream("openai_compat", "--api-key", UP_KEY, "--models", "gpt-4o-mini")
    yield u
    u.stop()


@pytest.fixture(scope="module")
def attacker():
    a = Attacker()
    yield a
    a.stop()


def default_config(up: Upstream, **server) -> dict:
    """No api_keys, no admin_keys: the default, loopback-trusting setup."""
    return {"server": server, "providers": [
        {"id": "up", "type": "openai", "base_url": up.base + "/v1", "api_key": UP_KEY, "models": ["gpt-4o-mini"]},
        {"id": "hdr", "type": "openai", "base_url": up.base + "/v1", "api_key": UP_KEY, "models": ["hdr-model"],
         "headers": {"X-Upstream-Token": HEADER_SECRET}},
    ]}


@pytest.fixture(scope="module")
def gw(up, tmp_path_factory):
    os.environ[SECRET_VAR] = SECRET  # the gateway process inherits it, as a user's shell would pass it
    g = Gateway(default_config(up), tmp_path_factory.mktemp("hardening") / "proxy.yaml")
    try:
        yield g
    finally:
        g.stop()
        os.environ.pop(SECRET_VAR, None)


def raw(port: int, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"") -> tuple[int, dict]:
    """One HTTP/1.1 exchange with exactly these header lines (a browser's, a rebinding page's)."""
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers), f"Content-Length: {len(body)}",
             "Connection: close", "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall("\r\n".join(lines).encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(payload) if payload.strip() else {}


def browser(port: int, page_origin: str, site: str, content_type: str | None = "text/plain;charset=UTF-8",
            host: str | None = None) -> list[tuple[str, str]]:
    """What Chrome sends for fetch(url, {method: "POST", mode: "no-cors", body: "..."}) from a page."""
    h = [("Host", host or f"127.0.0.1:{port}"), ("Connection", "keep-alive"),
         ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"),
         ("Accept", "*/*"), ("Origin", page_origin), ("Sec-Fetch-Site", site), ("Sec-Fetch-Mode", "no-cors"),
         ("Sec-Fetch-Dest", "empty"), ("Referer", page_origin + "/"), ("Accept-Language", "en-US,en;q=0.9")]
    return h + ([("Content-Type", content_type)] if content_type else [])


def evil_provider(attacker: Attacker, pid: str = "evil") -> bytes:
    return json.dumps({"id": pid, "type": "openai", "base_url": attacker.base + "/v1",
                       "api_key": "${" + SECRET_VAR + "}", "models": ["m"]}).encode()


def assert_untouched(gw: Gateway, attacker: Attacker, before: str) -> None:
    assert gw.config_path.read_text() == before, "proxy.yaml was changed"
    assert not attacker.got_secret(), attacker.seen
    assert "evil" not in {p["id"] for p in httpx.get(gw.base + "/admin/providers").json()["providers"]}


# ------------------------------------------------------------------ cross-site pages


def test_cross_site_simple_post_is_refused_and_nothing_leaks(gw, attacker):
    before = gw.config_path.read_text()
    status, body = raw(gw.port, "POST", "/admin/providers", browser(gw.port, "https://evil.example", "cross-site"),
                       evil_provider(attacker))
    assert status == 403 and body["error"]["code"] == "forbidden", body
    assert "Origin" in body["error"]["message"] or "Sec-Fetch-Site" in body["error"]["message"]
    status, _ = raw(gw.port, "POST", "/admin/providers/up/test", browser(gw.port, "https://evil.example",
                                                                         "cross-site"), b'{"model": "gpt-4o-mini"}')
    assert status == 403
    assert_untouched(gw, attacker, before)


@pytest.mark.parametrize("headers", [
    [("Origin", "https://evil.example")],  # a browser too old for Sec-Fetch-*
    [("Origin", "null")],  # a sandboxed frame or a file: page
    [("Origin", "http://localhost:3000")],  # another local app: another origin
    [("Sec-Fetch-Site", "cross-site")],
    [("Sec-Fetch-Site", "same-site")],
], ids=["origin", "null-origin", "other-local-port", "cross-site", "same-site"])
def test_each_page_marker_alone_is_refused(gw, attacker, headers):
    before = gw.config_path.read_text()
    h = [("Host", f"127.0.0.1:{gw.port}"), ("Content-Type", "application/json"), *headers]
    status, body = raw(gw.port, "POST", "/admin/providers", h, evil_provider(attacker))
    assert status == 403 and body["error"]["type"] == "permission_error", body
    status, _ = raw(gw.port, "GET", "/metrics", [("Host", f"127.0.0.1:{gw.port}"), *headers])
    assert status == 403
    assert_untouched(gw, attacker, before)


@pytest.mark.parametrize("content_type", [None, "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "text/plain; application/json"])
def test_admin_writes_need_a_json_content_type(gw, content_type):
    """Without Origin (say a page in a browser that sends none): the content type still tells."""
    h = [("Host", f"127.0.0.1:{gw.port}")] + ([("Content-Type", content_type)] if content_type else [])
    for method, path, body in (("POST", "/admin/providers/up/disable", b""), ("POST", "/admin/reset",
                               b'{"provider": "up"}'), ("PATCH", "/admin/providers/up", b'{"weight": 2}'),
                               ("DELETE", "/admin/providers/up", b"")):
        status, answer = raw(gw.port, method, path, h, body)
        assert status == 415 and answer["error"]["code"] == "unsupported_media_type", (method, path, answer)
        assert "application/json" in answer["error"]["message"]
    assert httpx.get(gw.base + "/admin/providers").json()["providers"][0]["enabled"] is True


def test_the_gateways_own_pages_and_tools_still_work(gw):
    """Typed in the address bar (Sec-Fetch-Site: none), same-origin, and JSON clients with no marker."""
    status, _ = raw(gw.port, "GET", "/admin/status", [("Host", f"localhost:{gw.port}"), ("Sec-Fetch-Site", "none")])
    assert status == 200
    h = [("Host", f"127.0.0.1:{gw.port}"), ("Origin", f"http://127.0.0.1:{gw.port}"),
         ("Sec-Fetch-Site", "same-origin"), ("Content-Type", "application/json; charset=utf-8")]
    status, body = raw(gw.port, "POST", "/admin/reset", h, b'{"provider": "up"}')
    assert status == 200 and body["provider"] == "up", body
    r = httpx.post(gw.base + "/admin/providers/up/enable", headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------ DNS rebinding


def test_rebinding_page_cannot_use_the_admin_api(gw, attacker):
    """After rebinding, evil.example resolves to 127.0.0.1: the page is same-origin to the browser
    and may send JSON, but its Host names the attacker's domain."""
    before = gw.config_path.read_text()
    host = f"{EVIL}:{gw.port}"
    h = [("Host", host), ("Origin", f"http://{host}"), ("Sec-Fetch-Site", "same-origin"),
         ("Content-Type", "application/json")]
    status, body = raw(gw.port, "POST", "/admin/providers", h, evil_provider(attacker))
    assert status == 403 and "server.allowed_hosts" in body["error"]["message"], body
    status, _ = raw(gw.port, "POST", "/admin/providers/up/test", h, b"{}")
    assert status == 403
    status, _ = raw(gw.port, "GET", "/admin/providers", [("Host", host)])  # reading is refused too
    assert status == 403
    assert_untouched(gw, attacker, before)


def test_rebinding_page_cannot_spend_quota_on_a_keyless_gateway(gw, up):
    up.clear()
    chat = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
    host = f"{EVIL}:{gw.port}"
    status, body = raw(gw.port, "POST", "/v1/chat/completions", [("Host", host), ("Content-Type", "text/plain")],
                       chat)
    assert status == 403 and body["error"]["type"] == "permission_error", body
    anthropic = json.dumps({"model": "gpt-4o-mini", "max_tokens": 5,
                            "messages": [{"role": "user", "content": "hi"}]}).encode()
    status, body = raw(gw.port, "POST", "/v1/messages", browser(gw.port, "https://evil.example", "cross-site"),
                       anthropic)
    assert status == 403 and body["type"] == "error" and body["error"]["type"] == "permission_error", body
    assert [r for r in up.received() if "chat" in r["path"]] == []
    # the gateway's own names still serve
    for name in ("localhost", "127.0.0.1"):
        status, body = raw(gw.port, "POST", "/v1/chat/completions",
                           [("Host", f"{name}:{gw.port}"), ("Content-Type", "application/json")], chat)
        assert status == 200, body


def test_allowed_hosts_admits_a_configured_name(up, tmp_path):
    g = Gateway(default_config(up, allowed_hosts=["gw.internal"]), tmp_path / "proxy.yaml")
    try:
        status, _ = raw(g.port, "GET", "/admin/status", [("Host", f"GW.internal:{g.port}")])
        assert status == 200
        status, _ = raw(g.port, "GET", "/admin/status", [("Host", f"{EVIL}:{g.port}")])
        assert status == 403
    finally:
        g.stop()


# ------------------------------------------------------------------ ${VAR} and moved secrets


@pytest.mark.parametrize("field, entry", [
    ("api_key", {"api_key": "${" + SECRET_VAR + "}"}),
    ("headers.X-Leak", {"headers": {"X-Leak": "Bearer ${" + SECRET_VAR + "}"}}),
    ("base_url", {"base_url": "http://${" + SECRET_VAR + "}.example/v1"}),
])
def test_env_references_are_not_expanded_through_the_api(gw, attacker, field, entry):
    before = gw.config_path.read_text()
    body = {"id": "evil", "type": "openai", "base_url": attacker.base + "/v1", "models": ["m"], **entry}
    r = httpx.post(gw.base + "/admin/providers", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
    assert "proxy.yaml by hand" in r.json()["error"]["message"]
    r = httpx.patch(gw.base + "/admin/providers/up", json=entry)
    assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
    assert_untouched(gw, attacker, before)


def test_moving_a_provider_does_not_take_its_secrets_along(gw, attacker):
    before = gw.config_path.read_text()
    for pid, secret_field in (("up", "api_key"), ("hdr", "api_key")):
        r = httpx.patch(gw.base + f"/admin/providers/{pid}", json={"base_url": attacker.base + "/v1"})
        assert r.status_code == 409 and r.json()["error"]["param"] == secret_field, r.text
        assert r.json()["error"]["code"] == "secret_not_carried"
        tested = httpx.post(gw.base + f"/admin/providers/{pid}/test", json={"model": "gpt-4o-mini"}).json()
        assert tested["ok"] is True, tested
    r = httpx.patch(gw.base + "/admin/providers/hdr", json={"base_url": attacker.base + "/v1", "api_key": "new"})
    assert r.status_code == 409 and r.json()["error"]["param"] == "headers", r.text
    r = httpx.patch(gw.base + "/admin/providers/up", json={"fallback_urls": [attacker.base + "/v1"]})
    assert r.status_code == 409 and r.json()["error"]["param"] == "api_key", r.text
    assert_untouched(gw, attacker, before)
    # same host, another path: the key stays where it was written for
    r = httpx.patch(gw.base + "/admin/providers/up", json={"base_url": gw_up(gw) + "/v1/"})
    assert r.status_code == 200, r.text


def gw_up(gw: Gateway) -> str:
    return next(p["base_url"] for p in httpx.get(gw.base + "/admin/providers").json()["providers"]
                if p["id"] == "up").removesuffix("/v1")


def test_a_moved_provider_with_its_key_given_again(gw, attacker):
    """The key given in the same change goes to the new host: that is what was asked."""
    r = httpx.post(gw.base + "/admin/providers", json={"id": "moved", "type": "openai", "base_url": gw_up(gw) + "/v1",
                                                       "api_key": "literal-key", "models": ["m"]})
    assert r.status_code == 201, r.text
    try:
        r = httpx.patch(gw.base + "/admin/providers/moved", json={"base_url": attacker.base + "/v1",
                                                                   "api_key": "given-again"})
        assert r.status_code == 200, r.text
    finally:
        httpx.delete(gw.base + "/admin/providers/moved", headers={"Content-Type": "application/json"})


# ------------------------------------------------------------------ provider fields that broke every request


@pytest.mark.parametrize("field, change", [
    ("headers", {"headers": {"X-Title": "a\r\nX-Injected: 1"}}),
    ("headers", {"headers": {"X-Title": "a\nb"}}),
    ("headers", {"headers": {"X-Title": "a\x00b"}}),
    ("headers", {"headers": {"Bad Name": "a"}}),
    ("headers", {"headers": {"X-Title:": "a"}}),
    ("base_url", {"base_url": "http://127.0.0.1:9/v1\n"}),
    ("base_url", {"base_url": "http://127.0.0.1:9/v 1"}),
    ("base_url", {"base_url": "http://127.0.0.1:port/v1"}),
    ("base_url", {"base_url": "http:///v1"}),
    ("token_url", {"type": "qwen", "token_url": "https://oauth.example/token\r\n"}),  # a kind that takes one
    ("fallback_urls", {"fallback_urls": ["http://127.0.0.1:9/v1\t"]}),
])
def test_malformed_provider_fields_are_refused_naming_the_field(gw, field, change):
    before = gw.config_path.read_text()
    r = httpx.patch(gw.base + "/admin/providers/up", json={**change, "api_key": UP_KEY})
    assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
    assert "\r" not in r.json()["error"]["message"] and "X-Injected" not in r.json()["error"]["message"]
    r = httpx.post(gw.base + "/admin/providers", json={"id": "bad", "type": "openai",
                                                       "base_url": "http://127.0.0.1:9/v1", **change})
    assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
    assert gw.config_path.read_text() == before
    r = httpx.post(gw.base + "/v1/chat/completions", json={"model": "gpt-4o-mini",
                                                           "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
