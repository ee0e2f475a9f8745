"""Clients on other machines while no client key is configured: nothing proves who may spend the
provider credentials behind the gateway, so they are refused (403, in their API's format) unless
their network is in server.open_networks. Also behind HAProxy on the same machine (`make cores`
HOST=<address>), where every connection the gateways see comes from loopback: the address HAProxy
names in X-Forwarded-For is the client, for this check and for the loopback-only admin routes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import yaml

from tests.e2e.conftest import UPSTREAM_KEY, closed_port
from tests.e2e.test_attacks_round4 import lan_address
from tests.e2e.test_cores import BODY, chats
from tests.harness import ROOT, Gateway, Proc, Upstream, until
from tests.services import binary, free_port

MESSAGES = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def up() -> Iterator[Upstream]:
    u = Upstream("openai_compat", "--api-key", UPSTREAM_KEY, "--models", "m")
    yield u
    u.stop()


def config(up: Upstream, **server) -> dict:
    return {"server": server, "providers": [{"id": "a", "type": "openai", "base_url": up.base + "/v1",
                                             "api_key": UPSTREAM_KEY, "models": ["m"]}]}


def on_lan(tmp_path, up: Upstream, lan: str, **server) -> tuple[Gateway, str]:
    """The gateway as `make run HOST=<lan address>` runs it (and on loopback, as the harness starts it)."""
    gw = Gateway(config(up, **server), tmp_path / "proxy.yaml", "--mode", f"reverse:http://127.0.0.1:1@{lan}:{closed_port()}")
    port = gw.wait_for(rf"listening at {lan.replace('.', r'\.')}:(\d+)").group(1)
    return gw, f"http://{lan}:{port}"


def admitted(url: str) -> httpx.Response | None:
    """The answer once HAProxy is up and has a gateway to pass it to (else None: ask again)."""
    try:
        r = httpx.post(url, json=BODY, timeout=10)
    except httpx.TransportError:
        return None
    return None if r.status_code == 503 and "text/html" in r.headers.get("content-type", "") else r


def test_without_keys_network_clients_are_refused_in_their_own_format(tmp_path, up):
    lan = lan_address()
    gw, base = on_lan(tmp_path, up, lan)
    try:
        r = httpx.post(base + "/v1/chat/completions", json=BODY, timeout=10)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "forbidden" and "server.api_keys" in r.json()["error"]["message"]
        r = httpx.post(base + "/v1/messages", json=MESSAGES, timeout=10)
        assert r.status_code == 403 and r.json()["type"] == "error", r.text
        assert chats(up) == 0
        assert httpx.get(base + "/health", timeout=10).status_code in (200, 503)  # a load balancer's check
        assert httpx.post(gw.base + "/v1/chat/completions", json=BODY, timeout=10).status_code == 200  # loopback
    finally:
        gw.stop()


def test_open_networks_are_served_without_a_key(tmp_path, up):
    lan = lan_address()
    gw, base = on_lan(tmp_path, up, lan, open_networks=[f"{lan}/32"])
    try:
        r = httpx.post(base + "/v1/chat/completions", json=BODY, timeout=10)
        assert r.status_code == 200, r.text
        r = httpx.get(base + "/admin/status", headers={"Host": "127.0.0.1"}, timeout=10)
        assert r.status_code == 403, r.text  # admin routes stay loopback-only without admin_keys
    finally:
        gw.stop()


def test_behind_haproxy_the_client_is_the_one_haproxy_names(tmp_path, up):
    """`make cores HOST=<lan address>` without keys: HAProxy's connections to the gateways come from
    loopback, yet a network client through it neither spends the providers nor opens /admin."""
    binary("haproxy")
    lan = lan_address()
    (tmp_path / "proxy.yaml").write_text(yaml.safe_dump(config(up)))
    port = free_port()
    while free_port() in (port + 1, port + 2):  # unlikely; the script takes the next two ports
        port = free_port()
    cores = Proc([str(ROOT / "scripts" / "cores.sh")],
                 env={"CORES": "2", "PORT": str(port), "HOST": lan, "CONFIG": str(tmp_path / "proxy.yaml")})
    try:
        cores.wait_for(r"cores: 2 gateways")
        via = f"http://{lan}:{port}"
        refused = until(lambda: admitted(via + "/v1/chat/completions"), "HAProxy to admit a gateway", 60)
        assert refused.status_code == 403 and "server.api_keys" in refused.text, refused.text
        forged = httpx.post(via + "/v1/chat/completions", json=BODY, headers={"X-Forwarded-For": "127.0.0.1"},
                            timeout=30)
        assert forged.status_code == 403, forged.text  # HAProxy sets the header, it never passes the client's
        admin = httpx.get(via + "/admin/status", headers={"Host": "127.0.0.1"}, timeout=30)
        assert admin.status_code == 403 and "loopback" in admin.text, admin.text
        assert chats(up) == 0
        direct = httpx.post(f"http://127.0.0.1:{port + 1}/v1/chat/completions", json=BODY, timeout=30)
        assert direct.status_code == 200, direct.text
    finally:
        cores.stop()
