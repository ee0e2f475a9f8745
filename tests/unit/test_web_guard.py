"""llmgate.addons.web_guard: which requests come from web pages, and which Host names are ours."""

from __future__ import annotations

import ipaddress

import pytest

from llmgate.addons.web_guard import client_address, host_refusal, network_refusal, page_refusal

OWN = ("127.0.0.1", 8143)


@pytest.mark.parametrize("host", ["127.0.0.1:8143", "localhost:8143", "LOCALHOST", "localhost.:9000", "[::1]:8143",
                                  "127.0.0.2:8143", None, ""])
def test_loopback_names_at_any_port_are_ours(host):
    assert host_refusal(host, OWN, []) is None


def test_the_address_the_connection_came_in_on_is_ours():
    assert host_refusal("192.168.1.5:8143", ("192.168.1.5", 8143), []) is None
    assert host_refusal("192.168.1.5:8143", ("::ffff:192.168.1.5", 8143), []) is None
    assert host_refusal("192.168.1.6:8143", ("192.168.1.5", 8143), []) is not None


@pytest.mark.parametrize("host", ["evil.example:8143", "evil.example", "localhost.evil.example:8143",
                                  "127.0.0.1.nip.io:8143", "0.0.0.0:8143", "bad host"])
def test_other_names_are_refused(host):
    why = host_refusal(host, OWN, [])
    assert why is not None and ("server.allowed_hosts" in why or "not a valid host" in why)


def test_allowed_hosts_are_ours_whatever_their_case():
    assert host_refusal("GW.Internal:8143", OWN, ["gw.internal"]) is None
    assert host_refusal("gw.internal.evil:8143", OWN, ["gw.internal"]) is not None


@pytest.mark.parametrize("site, origin, host, tls", [
    (None, None, "127.0.0.1:8143", False),  # curl, SDKs: neither header
    ("none", None, "127.0.0.1:8143", False),  # typed into the address bar
    ("same-origin", "http://127.0.0.1:8143", "127.0.0.1:8143", False),
    (None, "http://localhost:9000", "localhost:9000", False),  # through a tunnel: same origin
    (None, "https://gw.example", "gw.example:443", True),
    (None, "http://gw.example:80", "gw.example", False),
])
def test_same_origin_and_non_browser_requests_pass(site, origin, host, tls):
    assert page_refusal(site, origin, host, tls) is None


@pytest.mark.parametrize("site, origin, host, tls", [
    ("cross-site", None, "127.0.0.1:8143", False),
    ("same-site", None, "127.0.0.1:8143", False),  # another port of localhost
    (None, "https://evil.example", "127.0.0.1:8143", False),
    (None, "null", "127.0.0.1:8143", False),
    (None, "http://localhost:3000", "localhost:8143", False),
    (None, "https://127.0.0.1:8143", "127.0.0.1:8143", False),  # another scheme
    (None, "http://127.0.0.1:8143", None, False),
    (None, "http://127.0.0.1:x", "127.0.0.1:8143", False),
])
def test_pages_of_other_origins_are_refused(site, origin, host, tls):
    assert page_refusal(site, origin, host, tls) is not None


@pytest.mark.parametrize("peer, forwarded, client", [
    ("127.0.0.1", [], "127.0.0.1"),
    ("127.0.0.1", ["203.0.113.7"], "203.0.113.7"),  # HAProxy on this machine names the client
    ("::1", ["10.0.0.1, 203.0.113.7"], "203.0.113.7"),  # the last hop's entry is the one it wrote
    ("::ffff:127.0.0.1", ["10.0.0.1", "2001:db8::5"], "2001:db8::5"),
    ("127.0.0.1", ["not an address"], "127.0.0.1"),
    ("203.0.113.7", ["127.0.0.1"], "203.0.113.7"),  # a network client cannot make itself loopback
    ("192.168.1.9", [], "192.168.1.9"),
    (None, ["127.0.0.1"], None),
])
def test_the_client_behind_a_load_balancer_on_this_machine(peer, forwarded, client):
    assert client_address(peer, forwarded) == client


NETS = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.5", "::1", "::ffff:127.0.0.1", "10.1.2.3",
                                     "::ffff:10.1.2.3", "fd00::7"])
def test_this_machine_and_open_networks_need_no_key(address):
    assert network_refusal(address, NETS) is None


@pytest.mark.parametrize("address", ["192.168.1.9", "11.0.0.1", "2001:db8::1", "fe80::1%eth0", None, "garbage"])
def test_other_machines_need_a_key(address):
    why = network_refusal(address, NETS)
    assert why is not None and "server.api_keys" in why and "server.open_networks" in why
    assert network_refusal("10.1.2.3", []) is not None  # no open network: only this machine
