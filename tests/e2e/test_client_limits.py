"""Hostile clients against a real gateway: huge, deep or falsely compressed bodies, idle and
slow connections, too many of them, HTTP/1.0; every refusal in the caller's own format."""

from __future__ import annotations

import gzip
import json
import resource
import socket
import time

import httpx
import pytest

from tests.e2e.conftest import CLIENT_KEY, gateway_config
from tests.harness import Gateway

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
LIMITS = {"max_body": 1 << 20, "max_decompressed": 2 << 20, "max_depth": 64, "idle_timeout": 1.5,
          "header_timeout": 1.0, "body_timeout": 1.0, "max_connections": 40}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
# route -> (path, body, how its errors look)
ROUTES = {
    "openai": ("/v1/chat/completions", CHAT),
    "responses": ("/v1/responses", {"model": "gpt-4o-mini", "input": "hello"}),
    "anthropic": ("/v1/messages", {"model": "gpt-4o-mini", "max_tokens": 10,
                                   "messages": [{"role": "user", "content": "hello"}]}),
    "gemini": ("/v1beta/models/gpt-4o-mini:generateContent", {"contents": [{"parts": [{"text": "hello"}]}]}),
}


def error_of(route: str, r: httpx.Response) -> tuple[str, str]:
    """(type or status name, message) from an error body in the route's format; fails on any other shape."""
    assert r.headers["content-type"].startswith("application/json"), r.text
    body = r.json()
    if route == "anthropic":
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
        return body["error"]["type"], body["error"]["message"]
    err = body["error"]
    if route == "gemini":
        assert err["code"] == r.status_code and isinstance(err["status"], str), body
        return err["status"], err["message"]
    assert {"message", "type", "param", "code"} <= set(err), body
    return err["type"], err["message"]


@pytest.fixture(scope="module")
def gw(upstream, tmp_path_factory):
    cfg = gateway_config(upstream, limits=LIMITS)
    g = Gateway(cfg, tmp_path_factory.mktemp("limits") / "proxy.yaml")
    yield g
    g.stop()


def raw_exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send bytes, read until the gateway closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def closed_within(s: socket.socket, seconds: float) -> bool:
    """True if the peer closes `s` within `seconds` (reading whatever it sends first)."""
    s.settimeout(seconds)
    try:
        while s.recv(4096):
            pass
        return True
    except (TimeoutError, socket.timeout):
        return False
    except ConnectionResetError:
        return True


# --- bodies ---------------------------------------------------------------------------

@pytest.mark.parametrize("route", ROUTES)
def test_deep_nesting_is_a_400(gw, route):
    path, _ = ROUTES[route]
    deep = b'{"model":"gpt-4o-mini","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = httpx.post(gw.base + path, content=deep, headers=AUTH, timeout=20)
    assert r.status_code == 400
    kind, message = error_of(route, r)
    assert kind in ("invalid_request_error", "INVALID_ARGUMENT") and "64 levels" in message


def test_nesting_within_the_limit_is_served(gw):
    body = dict(CHAT, metadata_note=json.loads("[" * 60 + "]" * 60))
    r = httpx.post(gw.base + "/v1/chat/completions", json=body, headers=AUTH, timeout=20)
    assert r.status_code != 400 or "levels" not in r.text


@pytest.mark.parametrize("route", ROUTES)
def test_false_gzip_is_a_400(gw, route):
    path, body = ROUTES[route]
    r = httpx.post(gw.base + path, content=json.dumps(body).encode(), timeout=20,
                   headers={**AUTH, "Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert r.status_code == 400
    assert "gzip" in error_of(route, r)[1]


def test_gzip_body_is_decoded(gw):
    r = httpx.post(gw.base + "/v1/chat/completions", content=gzip.compress(json.dumps(CHAT).encode()), timeout=20,
                   headers={**AUTH, "Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]


def vm_hwm_kib(pid: int) -> int:
    status = open(f"/proc/{pid}/status").read()
    return int(status.split("VmHWM:")[1].split()[0])


@pytest.mark.parametrize("route", ["anthropic", "gemini"])
def test_gzip_bomb_is_a_413_without_inflating(gw, route):
    bomb = gzip.compress(b"\0" * (512 << 20), compresslevel=9)  # 512 MiB in ~0.5 MB
    before = vm_hwm_kib(gw.p.pid)
    r = httpx.post(gw.base + ROUTES[route][0], content=bomb, timeout=30,
                   headers={**AUTH, "Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert r.status_code == 413
    kind, _ = error_of(route, r)
    assert kind == {"anthropic": "request_too_large", "gemini": "INVALID_ARGUMENT"}[route]
    assert vm_hwm_kib(gw.p.pid) - before < 64 << 10  # peak RSS grew by less than 64 MiB


def test_unknown_encoding_is_a_415(gw):
    r = httpx.post(gw.base + "/v1/chat/completions", content=b"{}", timeout=20,
                   headers={**AUTH, "Content-Encoding": "compress"})
    assert r.status_code == 415 and error_of("openai", r)[0] == "invalid_request_error"


@pytest.mark.parametrize("route", ROUTES)
def test_oversized_body_is_a_413(gw, route):
    path, body = ROUTES[route]
    padded = json.dumps(dict(body, pad="x" * (1 << 20))).encode()
    r = httpx.post(gw.base + path, content=padded, headers=AUTH, timeout=20)
    assert r.status_code == 413
    kind, message = error_of(route, r)
    assert str(1 << 20) in message
    if route == "anthropic":
        assert kind == "request_too_large"


def test_absurd_content_length_is_refused_by_mitmproxy(gw):
    """Over twice max_body, mitmproxy's body_size_limit answers (its own page, not JSON)."""
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {10 << 30}\r\n\r\n").encode()
    assert raw_exchange(gw.port, head + b"{").startswith(b"HTTP/1.1 413")


def test_chunked_body_over_the_limit_is_refused(gw):
    chunk = b"x" * 65536
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(head)
        sent = 0
        try:
            for _ in range(64):  # 4 MiB, over twice max_body
                s.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 4 << 20 or answer  # stopped while it arrived, not buffered whole


# --- error shapes -----------------------------------------------------------------------

@pytest.mark.parametrize("route, expected", [("openai", "invalid_request_error"),
                                             ("responses", "invalid_request_error"),
                                             ("anthropic", "invalid_request_error"),
                                             ("gemini", "UNIMPLEMENTED")])
def test_method_not_allowed_shapes(gw, route, expected):
    r = httpx.get(gw.base + ROUTES[route][0], headers=AUTH)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert error_of(route, r)[0] == expected


@pytest.mark.parametrize("route, expected", [("openai", "invalid_request_error"),
                                             ("anthropic", "authentication_error"),
                                             ("gemini", "UNAUTHENTICATED")])
def test_unauthenticated_shapes(gw, route, expected):
    path, body = ROUTES[route]
    r = httpx.post(gw.base + path, json=body, headers={"x-api-key": "wrong", "anthropic-version": "2023-06-01"})
    assert r.status_code == 401 and error_of(route, r)[0] == expected


@pytest.mark.parametrize("route, expected", [("openai", "invalid_request_error"),
                                             ("anthropic", "not_found_error"),
                                             ("gemini", "NOT_FOUND")])
def test_unknown_route_shapes(gw, route, expected):
    path = {"openai": "/v1/nothing", "anthropic": "/v1/messages/nothing", "gemini": "/v1beta/nothing"}[route]
    r = httpx.post(gw.base + path, json={}, headers=AUTH)
    assert r.status_code == 404 and error_of(route, r)[0] == expected


# --- HTTP/1.0 ---------------------------------------------------------------------------

def test_http10_stream_is_not_chunked(gw):
    body = json.dumps(dict(CHAT, stream=True)).encode()
    request = (f"POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    answer = raw_exchange(gw.port, request)  # returns once the gateway closes: the body's end
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head
    assert b"transfer-encoding" not in head.lower()
    assert payload.startswith(b"data: ") and payload.rstrip().endswith(b"data: [DONE]")


def test_http10_plain_answer(gw):
    request = f"GET /v1/models HTTP/1.0\r\nAuthorization: Bearer {CLIENT_KEY}\r\n\r\n".encode()
    head, _, payload = raw_exchange(gw.port, request).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and json.loads(payload)["data"]


# --- connections ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_gw(upstream, tmp_path_factory):
    """A gateway whose process may open 256 files at most."""
    cfg = gateway_config(upstream, limits={**LIMITS, "max_connections": None, "idle_timeout": 2.0})
    g = Gateway(cfg, tmp_path_factory.mktemp("fds") / "proxy.yaml")
    resource.prlimit(g.p.pid, resource.RLIMIT_NOFILE, (256, 256))
    yield g
    g.stop()


def test_idle_sockets_do_not_stop_the_gateway_and_are_closed(small_gw):
    socks = [socket.create_connection(("127.0.0.1", small_gw.port)) for _ in range(400)]
    try:
        t0 = time.monotonic()
        r = httpx.post(small_gw.base + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=10)
        assert r.status_code == 200, r.text  # served, with 400 idle sockets open and 256 fds
        for s in socks[-20:]:  # the newest ones, still open, are closed after idle_timeout
            assert closed_within(s, 6)
        assert time.monotonic() - t0 > 1.5  # (not before)
    finally:
        for s in socks:
            s.close()
    r = httpx.post(small_gw.base + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=10)
    assert r.status_code == 200


def test_slowloris_headers_are_cut_off(gw):
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        closed = False
        for i in range(40):  # one header line every 0.2 s: never idle, never done
            try:
                s.sendall(b"X-Slow-%d: y\r\n" % i)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_within(s, 0.2):
                closed = True
                break
        assert closed
        elapsed = time.monotonic() - t0
        assert 0.9 < elapsed < 4  # header_timeout is 1 s (plus the sweep's tick)
        r = httpx.post(gw.base + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=10)
        assert r.status_code == 200


def test_body_that_never_completes_is_cut_off(gw):
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
            f"Content-Length: 1000\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(head + b'{"model":')
        t0 = time.monotonic()
        assert closed_within(s, 5)
        assert time.monotonic() - t0 > 0.9


def test_connection_cap_evicts_idle_ones_first(gw):
    socks = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(LIMITS["max_connections"])]
    try:
        time.sleep(0.3)  # all registered
        r = httpx.post(gw.base + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=10)
        assert r.status_code == 200  # the cap is full of idle sockets: the oldest made room
        assert closed_within(socks[0], 1)
    finally:
        for s in socks:
            s.close()
