"""A client that hangs up the moment it has the stream's terminal event (Codex closes at
response.completed) while the upstream has not yet ended its body: the exchange succeeded,
and the request log says so (addons/llmgate/accounting.py, terminal_sent)."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.e2e.conftest import CLIENT_KEY
from tests.harness import Gateway, Upstream


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    u = Upstream("hostile")
    g = Gateway({"server": {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 10}},
                 "providers": [{"id": "h", "type": "openai", "base_url": u.base + "/v1", "api_key": "k",
                                "models": ["linger"]}]},
                tmp_path_factory.mktemp("hangup") / "proxy.yaml")
    yield g
    g.stop()
    u.stop()


def stream_until_completed_and_close(port: int) -> None:
    body = json.dumps({"model": "h/linger", "input": "hello", "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + CLIENT_KEY.encode()
                  + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        seen = b""
        while b"event: response.completed" not in seen:
            chunk = s.recv(65536)
            assert chunk, seen[-500:]
            seen += chunk


def test_hanging_up_after_response_completed_while_the_upstream_lingers_is_a_success(gw):
    stream_until_completed_and_close(gw.port)  # the upstream holds its body open 2 s more
    deadline = time.monotonic() + 10
    rows: list[dict] = []
    while time.monotonic() < deadline and not rows:
        rows = httpx.get(gw.base + "/admin/requests", params={"limit": 1}).json()["requests"]
        time.sleep(0.2)
    (row,) = rows
    assert (row["endpoint"], row["stream"], row["status"], row["error"]) == ("responses", 1, 200, None)
    assert "client_gone" not in httpx.get(gw.base + "/metrics").text
