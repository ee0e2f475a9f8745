"""`make cores` as shipped: scripts/cores.sh starts N gateway processes and HAProxy with
deploy/haproxy.cfg; the processes share cooldowns through the state file beside proxy.yaml."""

from __future__ import annotations

import time

import httpx
import pytest
import yaml

from tests.e2e.conftest import CLIENT_KEY, UPSTREAM_KEY
from tests.harness import ROOT, Proc, Upstream
from tests.services import binary, free_port

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def ups():
    a = Upstream("openai_compat", "--api-key", UPSTREAM_KEY, "--models", "m")
    b = Upstream("openai_compat", "--api-key", UPSTREAM_KEY, "--models", "m")
    yield a, b
    a.stop(), b.stop()


def chats(up: Upstream) -> int:
    return sum(r["path"] == "/v1/chat/completions" for r in up.received())


def answered(url: str, timeout: float = 60.0) -> httpx.Response:
    """The first 200 from url (HAProxy admits a gateway once its check passes)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = httpx.post(url, json=BODY, headers=AUTH, timeout=10)
            if r.status_code == 200 or time.monotonic() > deadline:
                return r
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def test_make_cores_serves_through_haproxy_and_shares_cooldowns(ups, tmp_path):
    binary("haproxy")
    a, b = ups
    config = tmp_path / "proxy.yaml"
    config.write_text(yaml.safe_dump({
        "server": {"api_keys": [CLIENT_KEY]},
        "providers": [{"id": pid, "type": "openai", "base_url": up.base + "/v1", "api_key": UPSTREAM_KEY,
                       "models": ["m"]} for pid, up in (("a", a), ("b", b))],
        "routing": {"strategy": "fill-first"}}))
    port = free_port()
    while free_port() in (port + 1, port + 2):  # unlikely; the script takes the next two ports
        port = free_port()
    cores = Proc([str(ROOT / "scripts" / "cores.sh")], env={"CORES": "2", "PORT": str(port), "CONFIG": str(config)})
    try:
        cores.wait_for(r"cores: 2 gateways")
        gws = [f"http://127.0.0.1:{port + i}/v1/chat/completions" for i in (1, 2)]
        for url in gws:
            assert answered(url).status_code == 200
        assert answered(f"http://127.0.0.1:{port}/v1/chat/completions").status_code == 200  # via HAProxy
        a.clear(), b.clear()
        httpx.post(a.base + "/__fault", json={"scenario": "fault-429", "count": 1, "retry_after": 30})
        assert httpx.post(gws[0], json=BODY, headers=AUTH, timeout=10).status_code == 200  # a: 429, then b
        assert httpx.post(gws[1], json=BODY, headers=AUTH, timeout=10).status_code == 200
        assert (chats(a), chats(b)) == (1, 2)  # the second process knew a was cooling
        assert (tmp_path / "llmgate-state.sqlite").exists()
        assert "Traceback" not in cores.output and "locked" not in cores.output  # shared files, no contention errors
    finally:
        cores.stop()
    assert cores.p.returncode is not None
