"""A hostile upstream (tests/upstreams/hostile.py) behind a real gateway: answers too big, too
slow, redirected, compressed, not JSON, not a stream, malformed or cut mid-stream, and clients
that open streams and never read. The gateway answers each in the caller's format, within
bounded memory and time, and never relays a broken answer as if it were fine."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.conftest import CLIENT_KEY
from tests.harness import Gateway, Upstream

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
HELLO = [{"role": "user", "content": "hi"}]
TOTAL = 3  # timeouts.total, seconds


@pytest.fixture(scope="module")
def hostile():
    u = Upstream("hostile")
    yield u
    u.stop()


@pytest.fixture(scope="module")
def gw(hostile, tmp_path_factory):
    from tests.upstreams.hostile import SCENARIOS

    g = Gateway({
        "server": {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 10, "total": TOTAL}},
        "providers": [
            {"id": "h", "type": "openai", "base_url": hostile.base + "/v1", "api_key": "k", "models": SCENARIOS},
            {"id": "hm", "type": "openai", "base_url": hostile.base + "/huge/v1", "api_key": "k"},
        ],
    }, tmp_path_factory.mktemp("hostile") / "proxy.yaml")
    yield g
    g.stop()


def peak_rss_mb(g: Gateway) -> float:
    """The gateway process's peak resident memory so far (VmHWM), in MB."""
    for line in open(f"/proc/{g.p.pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def rss_mb(g: Gateway) -> float:
    for line in open(f"/proc/{g.p.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def chat(gw: Gateway, model: str, stream: bool = False, timeout: float = 30) -> httpx.Response:
    return httpx.post(gw.base + "/v1/chat/completions", headers=AUTH, timeout=timeout,
                      json={"model": model, "messages": HELLO, "stream": stream})


def openai_error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == code, err
    return err["message"]


def sse_data(body: bytes) -> list[str]:
    return [line[5:].strip() for line in body.decode().splitlines() if line.startswith("data:")]


# --- sizes and time ------------------------------------------------------------------------

def test_a_huge_answer_is_a_502_and_is_not_read_whole(gw):
    r = chat(gw, "huge-body")
    assert "64 MiB" in openai_error(r, 502, "upstream_too_large")
    assert peak_rss_mb(gw) < 400  # the whole 200 MB body took ~1 GB


def test_a_line_without_end_ends_the_stream_with_an_error_event(gw):
    r = chat(gw, "long-line", stream=True)
    assert r.status_code == 200
    last = json.loads(sse_data(r.content)[-1])
    assert last["error"]["code"] == "upstream_event_too_large" and "16 MiB" in last["error"]["message"]
    assert peak_rss_mb(gw) < 400


def test_a_huge_model_list_is_refused_not_read_whole(gw):
    r = httpx.get(gw.base + "/health", headers=AUTH, timeout=60)
    hm = next(p for p in r.json()["providers"] if p["id"] == "hm")
    assert "larger than" in hm["error"] and "16 MiB" in hm["error"], hm
    assert peak_rss_mb(gw) < 400


def test_a_dripping_answer_ends_at_the_total_deadline(gw):
    started = time.monotonic()
    r = chat(gw, "drip")
    took = time.monotonic() - started
    assert "timeouts.total" in openai_error(r, 504, "upstream_timeout")
    assert took < TOTAL + 5, took  # each byte restarts the read timeout: that alone never ended it


# --- answers that are not what they claim --------------------------------------------------

def test_an_html_page_with_200_is_a_502_in_the_callers_format(gw):
    assert "text/html" in openai_error(chat(gw, "html"), 502, "upstream_error")
    r = httpx.post(gw.base + "/v1/messages", headers={"x-api-key": CLIENT_KEY}, timeout=30,
                   json={"model": "html", "max_tokens": 16, "messages": HELLO})
    assert r.status_code == 502 and r.json()["type"] == "error", r.text


def test_a_json_answer_to_a_stream_request_is_a_502(gw):
    assert "not a stream" in openai_error(chat(gw, "json-for-stream", stream=True), 502, "upstream_error")


def test_a_redirect_is_a_502_naming_the_host_and_is_not_followed(gw, hostile):
    message = openai_error(chat(gw, "redirect"), 502, "upstream_redirect")
    assert "elsewhere.invalid" in message and "token" not in message
    hostile.clear()
    openai_error(chat(gw, "redirect", stream=True), 502, "upstream_redirect")
    assert [r["path"] for r in hostile.received()] == ["/v1/chat/completions"]  # /followed never asked


@pytest.mark.parametrize("stream", [False, True])
def test_a_compressed_answer_is_decoded(gw, stream):
    r = chat(gw, "gzip", stream=stream)
    assert r.status_code == 200 and "content-encoding" not in r.headers, r.headers
    if stream:
        texts = [json.loads(d)["choices"][0]["delta"].get("content") for d in sse_data(r.content) if d != "[DONE]"]
        assert "hello" in texts and sse_data(r.content)[-1] == "[DONE]"
    else:
        assert r.json()["choices"][0]["message"]["content"] == "hello"


def test_an_encoding_that_cannot_be_decoded_is_a_502(gw):
    assert "snappy-x" in openai_error(chat(gw, "weird-encoding"), 502, "upstream_bad_encoding")


# --- malformed and cut streams -------------------------------------------------------------

def test_a_malformed_event_ends_an_openai_stream_with_an_error(gw):
    r = chat(gw, "bad-json-event", stream=True)
    data = sse_data(r.content)
    assert '{"choices": [' not in data and "[DONE]" not in data
    last = json.loads(data[-1])
    assert last["error"]["code"] == "upstream_malformed" and "not valid JSON" in last["error"]["message"]


def test_a_malformed_event_ends_an_anthropic_stream_with_an_error_not_end_turn(gw):
    r = httpx.post(gw.base + "/v1/messages", headers={"x-api-key": CLIENT_KEY}, timeout=30,
                   json={"model": "bad-json-event", "max_tokens": 16, "messages": HELLO, "stream": True})
    events = [json.loads(d) for d in sse_data(r.content)]
    assert events[-1]["type"] == "error" and "not valid JSON" in events[-1]["error"]["message"], events[-1]
    assert not any(e["type"] == "message_delta" and e["delta"].get("stop_reason") == "end_turn" for e in events)


def test_a_malformed_event_ends_a_gemini_stream_with_an_error_not_stop(gw):
    r = httpx.post(gw.base + "/v1beta/models/bad-json-event:streamGenerateContent?alt=sse",
                   headers={"x-goog-api-key": CLIENT_KEY}, timeout=30,
                   json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    chunks = [json.loads(d) for d in sse_data(r.content)]
    assert "error" in chunks[-1] and "not valid JSON" in chunks[-1]["error"]["message"], chunks[-1]
    assert not any(c.get("finishReason") for ch in chunks for c in ch.get("candidates", []))


def test_a_cut_stream_says_what_happened_in_words(gw):
    last = json.loads(sse_data(chat(gw, "cut", stream=True).content)[-1])
    message = last["error"]["message"]
    assert last["error"]["code"] == "upstream_disconnected"
    assert "closed the connection in the middle of the stream, after" in message and "bytes" in message
    assert "Error" not in message and "<" not in message, message


def test_bad_chunk_framing_is_an_error_at_once_not_a_hang(gw):
    """aiohttp closes the connection on a chunk size that does not parse, but left the body
    neither failed nor ended with its read timeout stopped: answers waited for timeouts.total
    (a 504), streams forever."""
    message = openai_error(chat(gw, "bad-framing", timeout=TOTAL + 10), 502, "upstream_disconnected")
    assert "HTTP framing that does not parse" in message
    events = sse_data(chat(gw, "bad-framing", stream=True, timeout=TOTAL + 10).content)
    assert json.loads(events[1])["choices"][0]["delta"]["content"] == "Hel"
    last = json.loads(events[-1])["error"]
    assert last["code"] == "upstream_disconnected" and "HTTP framing that does not parse" in last["message"]


def raw_upstream(answer: bytes) -> tuple[socket.socket, int]:
    """An upstream that answers every request with `answer` in one write, then holds the connection
    (a daemon thread; closing the listening socket ends it)."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = srv.accept()
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                conn.sendall(answer)
                threading.Thread(target=lambda c=conn: (time.sleep(10), c.close()), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def test_an_answer_whose_framing_is_broken_from_the_start_is_named_so(tmp_path):
    """The head and broken chunk framing in one read: aiohttp fails the request itself, with its
    own 400 and the upstream's URL in the text; the caller gets a 502 saying what the upstream did."""
    srv, port = raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n6\r\n{\"id\":\r\nzz\r\nnot a chunk\r\n")
    g = Gateway({"server": {"api_keys": [CLIENT_KEY]}, "providers": [
        {"id": "raw", "type": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "api_key": "k", "models": ["m"]}]},
        tmp_path / "proxy.yaml")
    try:
        message = openai_error(chat(g, "m", timeout=20), 502, "upstream_error")
        assert message == "Upstream 'raw' sent an answer that is not valid HTTP (Invalid character in chunk size)."
    finally:
        g.stop()
        srv.close()


# --- clients that never read ---------------------------------------------------------------

def test_streams_nobody_reads_cost_bounded_memory_and_others_are_served(gw, hostile):
    body = json.dumps({"model": "firehose", "messages": HELLO, "stream": True}).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    before = rss_mb(gw)
    socks = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", gw.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(request)
            socks.append(s)
        time.sleep(3)  # let every stream fill what buffers it may
        with ThreadPoolExecutor(8) as pool:
            started = time.monotonic()
            answers = list(pool.map(lambda _: chat(gw, "ok", timeout=15), range(16)))
            took = time.monotonic() - started
        held = rss_mb(gw)
        print(f"\n200 non-reading streams: RSS {before:.0f} MB -> {held:.0f} MB "
              f"({(held - before) / 200:.2f} MB per stream); 16 normal requests alongside took {took:.2f} s")
        assert all(a.status_code == 200 and a.json()["choices"][0]["message"]["content"] == "hello"
                   for a in answers)
        assert held - before < 200 * 2.5, (before, held)  # ~1 MB capture + a few 64 KiB buffers each
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 30  # the clients left: the gateway stops reading their upstreams
    while (left := httpx.get(hostile.base + "/__active").json()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == 0
    assert chat(gw, "ok").status_code == 200
