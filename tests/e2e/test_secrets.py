"""Nothing leaked: client keys, provider keys and model names that would steer upstream URLs.

Real gateway processes with -w and full flow printing; raw sockets for requests mitmproxy's
HTTP layer rejects before the request hook; an echoing upstream for keys coming back.
"""

import asyncio
import json
import socket
import sqlite3
import time

import httpx
import openai
import pytest
from aiohttp import web
from mitmproxy import io

from tests.harness import Gateway
from tests.upstreams.serving import ServerThread

CLIENT_KEY = "sk-client-0123456789abcdef"
ADMIN_KEY = "adm-0123456789abcdef"
PROVIDER_KEY = "sk-provider-9876543210fedcba"
GEMINI_KEY = "AIza-gemini-key-0123456789"
ACCESS_TOKEN = "qwen-access-token-0123456789"  # a subscription account's, from its credentials file
REFRESH_TOKEN = "qwen-refresh-token-0123456789"
LISTING_KEY = "sk-listing-key-the-upstream-refuses"
SECRETS = (CLIENT_KEY, ADMIN_KEY, PROVIDER_KEY, GEMINI_KEY, ACCESS_TOKEN, REFRESH_TOKEN, LISTING_KEY)
HELLO = [{"role": "user", "content": "hello"}]


class EchoUpstream:
    """An OpenAI-compatible upstream that echoes the key it gets, as careless ones do; it keeps
    the raw path and query of every request."""

    MODELS = ("echo-error", "echo-html", "echo-ok", "echo-stream")

    def __init__(self) -> None:
        self.paths: list[str] = []
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_route("*", "/{tail:.*}", self.other)
        self._server = ServerThread(app)
        self.base = self._server.__enter__()

    async def models(self, request: web.Request) -> web.Response:
        self.paths.append(request.raw_path)
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if key == LISTING_KEY:
            return web.json_response({"error": {"message": f"Incorrect API key provided: {key}."}}, status=401)
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in self.MODELS]})

    async def other(self, request: web.Request) -> web.Response:
        self.paths.append(request.raw_path)
        return web.json_response({"error": {"message": "not found"}}, status=404)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.raw_path)
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        model = (await request.json())["model"]
        if model == "echo-error":
            return web.json_response({"error": {"message": f"Incorrect API key provided: {key}.", "type":
                                                "invalid_request_error", "code": "invalid_api_key"}}, status=401)
        if model == "echo-html":
            return web.Response(status=502, text=f"<html><body>bad gateway for {key}</body></html>",
                                content_type="text/html")
        if model == "echo-ok":
            return web.json_response({"id": "c1", "object": "chat.completion", "created": 1, "model": model,
                                      "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                          "role": "assistant", "content": f"your key is {key}"}}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        event = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                 "choices": [{"index": 0, "delta": {"content": f"key {key} end"}, "finish_reason": None}]}
        frame = f"data: {json.dumps(event)}\n\n".encode()
        half = frame.index(key.encode()) + len(key) // 2  # the key straddles two TCP reads
        for part in (frame[:half], frame[half:]):
            await resp.write(part)
            await asyncio.sleep(0.2)
        done = {**event, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await resp.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        await resp.write_eof()
        return resp

    def stop(self) -> None:
        self._server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def echo():
    u = EchoUpstream()
    yield u
    u.stop()


class GeminiTap:
    """The strict Gemini double, keeping the raw path of every request."""

    def __init__(self) -> None:
        from tests.upstreams.gemini_api import make_app

        self.paths: list[str] = []

        @web.middleware
        async def raw_paths(request, handler):  # exactly as received, before any decoding
            if request.path != "/__requests":
                self.paths.append(request.raw_path)
            return await handler(request)

        app = make_app(GEMINI_KEY, ["gemini-2.5-flash"])
        app.middlewares.insert(0, raw_paths)
        self._server = ServerThread(app)
        self.base = self._server.__enter__()

    def stop(self) -> None:
        self._server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def gemini_up():
    u = GeminiTap()
    yield u
    u.stop()


def config(echo: EchoUpstream, gemini_up, tmp_path) -> dict:
    creds = tmp_path / "oauth_creds.json"
    creds.write_text(json.dumps({"access_token": ACCESS_TOKEN, "refresh_token": REFRESH_TOKEN, "token_type": "Bearer",
                                 "expiry_date": int((time.time() + 3600) * 1000)}))
    return {
        "server": {"api_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY], "timeouts": {"connect": 3, "read": 5}},
        "log": {"file": str(tmp_path / "requests.sqlite"), "capture_bodies": True},
        "providers": [
            {"id": "echo", "type": "openai", "base_url": echo.base + "/v1", "api_key": PROVIDER_KEY,
             "models": list(EchoUpstream.MODELS)},
            {"id": "gem", "type": "gemini", "base_url": gemini_up.base, "api_key": GEMINI_KEY,
             "models": ["gemini-2.5-flash"]},
            {"id": "listing", "type": "openai", "base_url": echo.base + "/v1", "api_key": LISTING_KEY},
            {"id": "sub", "type": "qwen", "base_url": echo.base + "/v1", "credentials": str(creds),
             "models": ["echo-ok"]},
        ],
    }


@pytest.fixture
def recorded(echo, gemini_up, tmp_path):
    """A gateway that saves flows (-w) and prints whole flows (flow_detail=4)."""
    flows = tmp_path / "out.flows"
    g = Gateway(config(echo, gemini_up, tmp_path), tmp_path / "proxy.yaml", "-w", str(flows),
                "--set", "flow_detail=4", "--set", "gateway_upstream_flows=on")
    yield g, flows
    g.stop()


def saved(g: Gateway, flows) -> tuple[bytes, list]:
    time.sleep(0.5)  # the request log's writer and the provider-side flows finish
    g.stop()
    raw = flows.read_bytes()
    return raw, list(io.FlowReader(flows.open("rb")).stream())


def assert_no_secret(*texts: bytes | str) -> None:
    for t in texts:
        t = t if isinstance(t, bytes) else t.encode()
        for s in SECRETS:
            assert s.encode() not in t, f"{s} leaked"


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send bytes, half-close, read what comes back until the gateway closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


MALFORMED = [
    # a Content-Length that is not a number
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %(key)s\r\n"
    b"Content-Length: abc\r\n\r\n{}",
    # a body shorter than declared (the client then stops sending)
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-api-key: %(key)s\r\n"
    b"Content-Length: 500\r\n\r\n{\"model\":",
    # chunked and Content-Length at once
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-goog-api-key: %(key)s\r\n"
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    # the key in the query, a broken chunked body
    b"POST /v1beta/models/gemini-2.5-flash:generateContent?key=%(key)s HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    # the key in the query, a short body
    b"POST /v1beta/models/gemini-2.5-flash:generateContent?key=%(key)s HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: 100\r\n\r\n{",
]


def test_client_keys_masked_in_requests_that_fail_before_the_request_hook(recorded):
    g, path = recorded
    for request in MALFORMED:
        raw_exchange(g.port, request % {b"key": CLIENT_KEY.encode()})
    # an admin key in the query (accepted there, though ?key= is a filter on admin routes)
    assert httpx.get(g.base + "/admin/status", params={"key": ADMIN_KEY}).status_code == 200
    raw, flows = saved(g, path)
    assert_no_secret(raw, g.output)
    # the flows were recorded (so the test sees them), each with its key masked
    assert len(flows) >= 3 and all(f.error or f.response for f in flows)
    assert sum(b"[redacted]" in f.request.headers.get("x-api-key", "").encode() or
               "[redacted]" in f.request.query.get("key", "") for f in flows) >= 2


def test_keys_echoed_by_an_upstream_are_scrubbed_everywhere(recorded, tmp_path):
    g, path = recorded
    c = openai.OpenAI(base_url=g.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)
    with pytest.raises(openai.APIStatusError) as e:  # the provider refused the gateway's key
        c.chat.completions.create(model="echo-error", messages=HELLO)
    assert "[redacted]" in e.value.message and PROVIDER_KEY not in json.dumps(e.value.body)
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model="echo-html", messages=HELLO)
    assert PROVIDER_KEY not in e.value.response.text
    ok = c.chat.completions.create(model="echo-ok", messages=HELLO)
    assert ok.choices[0].message.content == "your key is [redacted]"
    text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="echo-stream", messages=HELLO, stream=True) if ch.choices)
    assert text == "key [redacted] end"
    # a subscription account's access token, echoed
    ok = c.chat.completions.create(model="sub/echo-ok", messages=HELLO)
    assert ok.choices[0].message.content == "your key is [redacted]"
    text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="sub/echo-stream", messages=HELLO, stream=True) if ch.choices)
    assert text == "key [redacted] end"
    # model discovery that fails logs the upstream's answer
    assert httpx.get(g.base + "/v1/models", headers={"Authorization": f"Bearer {CLIENT_KEY}"}).status_code == 200
    g.wait_for("provider listing: model discovery failed")
    # a client that pastes a key into its prompt does not see it recorded either
    c.chat.completions.create(model="echo-ok", messages=[{"role": "user", "content": f"is {ADMIN_KEY} mine?"}])

    raw, flows = saved(g, path)
    assert_no_secret(raw, g.output)
    assert sum("llmgate.upstream_of" in f.metadata for f in flows) == 7  # both sides were recorded
    db = sqlite3.connect(tmp_path / "requests.sqlite")
    rows = db.execute("select request_body, response_body from requests").fetchall()
    assert len(rows) == 7
    assert_no_secret(*(b for row in rows for b in row if b))


def test_model_names_cannot_steer_the_upstream_url(recorded, gemini_up, echo):
    g, _ = recorded
    gemini_up.paths.clear()
    c = openai.OpenAI(base_url=g.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)
    for model in ("gem/a/../../../x#", "gem/x?alt=1", "gem/..", "gem/a b", "gem/a\\b", "gem/a\x01", "echo/../x"):
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model=model, messages=HELLO)
        assert e.value.body["param"] == "model" and "Invalid model name" in e.value.message
    # in the Gemini path, percent-encoded: refused in Gemini's own error shape
    r = httpx.post(g.base + "/v1beta/models/gem%2Fa%2F..%2F..%2Fx:generateContent",
                   headers={"x-goog-api-key": CLIENT_KEY}, json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    # Anthropic's shape for an Anthropic caller
    r = httpx.post(g.base + "/v1/messages", headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"},
                   json={"model": "gem/a#b", "max_tokens": 5, "messages": HELLO})
    assert r.status_code == 400 and r.json()["type"] == "error"
    for url in ("/v1/models/a%2F..%2Fb", "/v1beta/models/a%23b", "/v1/models/a%20b"):  # a model's page, too
        r = httpx.get(g.base + url, headers={"Authorization": f"Bearer {CLIENT_KEY}"})
        assert r.status_code == 400 and "Invalid model name" in r.text
    assert gemini_up.paths == []
    # what is allowed reaches the upstream as one encoded path segment
    for model in ("gem/a/b", "gem/a%2e%2e", "gem/a:b"):
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model=model, messages=HELLO)
    assert gemini_up.paths == ["/v1beta/models/a%2Fb:generateContent", "/v1beta/models/a%252e%252e:generateContent",
                               "/v1beta/models/a:b:generateContent"]
    ok = c.chat.completions.create(model="gem/gemini-2.5-flash", messages=HELLO)
    assert ok.choices[0].message.content
    assert gemini_up.paths[-1] == "/v1beta/models/gemini-2.5-flash:generateContent"
