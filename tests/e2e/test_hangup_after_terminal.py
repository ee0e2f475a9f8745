"""A client that hangs up the moment it has the stream's terminal event (Codex closes at
response.completed) while the upstream has not yet ended its body: the exchange succeeded,
and the request log says so (addons/llmgate/addons/accounting.py, terminal_sent)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.conftest import CLIENT_KEY, responses_stream_then_hang_up
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


def test_hanging_up_after_response_completed_while_the_upstream_lingers_is_a_success(gw):
    responses_stream_then_hang_up(gw.port, "h/linger")  # the upstream holds its body open 2 s more
    deadline = time.monotonic() + 10
    rows: list[dict] = []
    while time.monotonic() < deadline and not rows:
        rows = httpx.get(gw.base + "/admin/requests", params={"limit": 1}).json()["requests"]
        time.sleep(0.2)
    (row,) = rows
    assert (row["endpoint"], row["stream"], row["status"], row["error"]) == ("responses", 1, 200, None)
    assert "client_gone" not in httpx.get(gw.base + "/metrics").text
