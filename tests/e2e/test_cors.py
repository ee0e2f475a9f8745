"""server.cors (issue 15): browser pages of the listed origins may use the client APIs.
Raw httpx requests carry the Origin and preflight headers a browser sends; a headless Chromium
(Debian's, driven by playwright) then does what a real page does."""

import http.server
import json
import shutil
import threading

import httpx
import pytest

from tests.e2e.conftest import CLIENT_KEY, UPSTREAM_KEY
from tests.harness import Gateway

PAGE = "http://127.0.0.1:{port}"  # the allowed page's origin: another port is another origin
OTHER = "http://evil.example"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def config(upstream, page_origin: str | None, keys: bool, loose_port: int) -> dict:
    cors = {"origins": [f"{page_origin}/"], "expose_headers": ["X-Llmgate-Test"], "max_age": 60}
    return {
        "server": {"api_keys": [CLIENT_KEY] if keys else [], **({"cors": cors} if page_origin else {})},
        "providers": [{"id": "up", "type": "openai", "base_url": upstream.base + "/v1", "api_key": UPSTREAM_KEY},
                      {"id": "loose", "type": "openai", "base_url": f"http://127.0.0.1:{loose_port}/v1",
                       "models": ["loose-model"]}],
    }


class LooseUpstream(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible upstream that opens itself to every page (Access-Control-Allow-Origin: *)."""

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v1/chat/completions" and body["model"] == "loose-model"
        out = json.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "loose-model",
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                       "finish_reason": "stop"}]}).encode()
        self.send_response(200)
        for name, value in (("Content-Type", "application/json"), ("Content-Length", str(len(out))),
                            ("Access-Control-Allow-Origin", "*"), ("Access-Control-Allow-Credentials", "true")):
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def loose():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LooseUpstream)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    (root / "index.html").write_text("<!doctype html><title>page</title>")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(root))  # noqa: E731
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()


@pytest.fixture(scope="module")
def gateways(upstream, page_server, loose, tmp_path_factory):
    origin = PAGE.format(port=page_server)
    keyed = Gateway(config(upstream, origin, True, loose), tmp_path_factory.mktemp("cors") / "proxy.yaml")
    keyless = Gateway(config(upstream, origin, False, loose), tmp_path_factory.mktemp("cors-open") / "proxy.yaml")
    yield origin, keyed, keyless
    keyed.stop()
    keyless.stop()


def preflight(gw, path: str, origin: str, method="POST", headers="authorization, content-type") -> httpx.Response:
    return httpx.options(gw.base + path, headers={
        "Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers,
        "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"})


def test_preflight_is_answered_before_auth(gateways):
    origin, keyed, _ = gateways
    r = preflight(keyed, "/v1/chat/completions", origin)  # no key: a preflight never carries one
    assert r.status_code == 204 and r.content == b""
    h = r.headers
    assert h["access-control-allow-origin"] == origin and "POST" in h["access-control-allow-methods"]
    assert h["access-control-allow-headers"] == "authorization, content-type"
    assert h["access-control-max-age"] == "60" and "Origin" in h["vary"]
    r = preflight(keyed, "/v1/messages", origin)
    assert r.status_code == 204
    r = httpx.options(keyed.base + "/v1/models", headers={  # a public page asking for a loopback one
        "Origin": origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Private-Network": "true"})
    assert r.headers["access-control-allow-private-network"] == "true"


def test_answers_errors_and_streams_carry_the_origin(gateways):
    origin, keyed, _ = gateways
    page = {"Origin": origin, "Sec-Fetch-Site": "cross-site", "Authorization": f"Bearer {CLIENT_KEY}"}
    r = httpx.post(keyed.base + "/v1/chat/completions", json=CHAT, headers=page, timeout=20)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
    assert r.headers["access-control-expose-headers"] == "X-Llmgate-Test" and "Origin" in r.headers["vary"]
    r = httpx.post(keyed.base + "/v1/chat/completions", json=CHAT, headers={**page, "Authorization": "Bearer no"})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == origin  # the page can read why
    r = httpx.post(keyed.base + "/v1/chat/completions", json={**CHAT, "model": "nope"}, headers=page)
    assert r.status_code == 404 and r.headers["access-control-allow-origin"] == origin
    with httpx.stream("POST", keyed.base + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=page,
                      timeout=20) as s:
        assert s.status_code == 200 and s.headers["access-control-allow-origin"] == origin
        assert s.headers["content-type"].startswith("text/event-stream")
        assert b"[DONE]" in b"".join(s.iter_bytes())


def test_other_origins_and_operator_routes_get_nothing(gateways):
    origin, keyed, _ = gateways
    r = preflight(keyed, "/v1/chat/completions", OTHER)
    assert r.status_code == 401 and "access-control-allow-origin" not in r.headers
    for path in ("/admin/reset", "/metrics", "/ui"):
        r = preflight(keyed, path, origin)
        assert r.status_code != 204 and "access-control-allow-origin" not in r.headers, path
        r = httpx.get(keyed.base + path, headers={"Origin": origin, "Authorization": f"Bearer {CLIENT_KEY}"})
        assert "access-control-allow-origin" not in r.headers, path


def test_without_keys_a_listed_origin_passes_the_page_guard(gateways):
    origin, _, keyless = gateways
    page = {"Origin": origin, "Sec-Fetch-Site": "cross-site"}
    r = httpx.post(keyless.base + "/v1/chat/completions", json=CHAT, headers=page, timeout=20)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
    r = httpx.post(keyless.base + "/v1/chat/completions", json=CHAT, headers={**page, "Origin": OTHER})
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    for path in ("/metrics", "/admin/reset"):  # still refused to every page
        r = httpx.get(keyless.base + path, headers=page)
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers, path
    r = httpx.post(keyless.base + "/v1/chat/completions", json=CHAT, timeout=20,  # a rebinding page: its own Host
                   headers={**page, "Host": "evil.example"})
    assert r.status_code == 403


def test_an_upstreams_own_cors_headers_never_reach_the_client(gateways, upstream, loose, tmp_path):
    origin, keyed, _ = gateways
    page = {"Origin": origin, "Authorization": f"Bearer {CLIENT_KEY}"}
    body = {"model": "loose-model", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(keyed.base + "/v1/chat/completions", json=body, headers=page, timeout=20)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "ok"
    assert r.headers.get_list("access-control-allow-origin") == [origin]
    assert "access-control-allow-credentials" not in r.headers
    off = Gateway(config(upstream, None, True, loose), tmp_path / "proxy.yaml")  # no server.cors
    try:
        r = httpx.post(off.base + "/v1/chat/completions", json=body, headers=page, timeout=20)
        assert r.status_code == 200 and not [h for h in r.headers if h.startswith("access-control-")]
    finally:
        off.stop()


def test_off_by_default(gateway):
    r = preflight(gateway, "/v1/chat/completions", "http://127.0.0.1:1")
    assert r.status_code == 401 and not [h for h in r.headers if h.startswith("access-control-")]
    r = httpx.get(gateway.base + "/v1/models", headers={"Origin": "http://127.0.0.1:1",
                                                       "Authorization": f"Bearer {CLIENT_KEY}"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FETCH = """async ([url, key]) => {
  try {
    const r = await fetch(url, {method: "POST", headers: {"Authorization": "Bearer " + key,
      "Content-Type": "application/json"}, body: JSON.stringify({model: "gpt-4o-mini",
      messages: [{role: "user", content: "hi"}]})});
    return (await r.json()).model;
  } catch (e) { return "blocked: " + e.name; }
}"""


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_a_browser_page_of_a_listed_origin_can_call_and_another_cannot(gateways, page_server):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    origin, keyed, _ = gateways
    url = keyed.base + "/v1/chat/completions"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page()
            page.goto(origin + "/index.html")  # the listed origin: preflight, then the call
            assert page.evaluate(FETCH, [url, CLIENT_KEY]) == "gpt-4o-mini"
            page.goto(f"http://localhost:{page_server}/index.html")  # the same page, another origin
            assert page.evaluate(FETCH, [url, CLIENT_KEY]) == "blocked: TypeError"
        finally:
            browser.close()
