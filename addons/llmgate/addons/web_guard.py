"""What keeps web pages away from a gateway that trusts its position (loopback, no keys).

A browser lets any page send "simple" requests (a GET, or a POST with a text/plain or form
body) to http://127.0.0.1:8143 without asking first, and a DNS-rebinding page sends them
under its own host name, as if it were same-origin. So:
- a page's request says where it came from (Origin, Sec-Fetch-Site): other origins are refused;
- a rebinding page's request names the attacker's host (Host): only this gateway's own
  address, loopback names and server.allowed_hosts are served. The port is not compared:
  rebinding is about the name, and tunnels or port mappings change the port legitimately;
- admin writes need Content-Type: application/json, which a page can only send after a CORS
  preflight that this gateway never grants (admin_api).
Pure functions: each returns why a request is refused, or None.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from urllib.parse import urlsplit

from mitmproxy.net.http import url

SAME_SITE = frozenset({"same-origin", "none"})  # "none": typed in the address bar, a bookmark
DEFAULT_PORTS = {"http": 80, "https": 443}


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return None
    return getattr(ip, "ipv4_mapped", None) or ip


def host_refusal(host_header: str | None, sockname: tuple | None, allowed_hosts: list[str]) -> str | None:
    """A Host that is not ours: a DNS-rebinding page (browsers always send Host)."""
    if not host_header:
        return None
    return _host_refusal(host_header, str(sockname[0]) if sockname else None, tuple(allowed_hosts))


@lru_cache(maxsize=1024)  # a handful of Host values in practice; parsing one costs ~20 us
def _host_refusal(host_header: str, own_address: str | None, allowed_hosts: tuple[str, ...]) -> str | None:
    try:
        name, _ = url.parse_authority(host_header, check=True)
    except ValueError:
        return "The Host header is not a valid host name."
    name = name.lower().rstrip(".")
    ip = _ip(name)
    own = _ip(own_address) if own_address else None
    if name == "localhost" or (ip is not None and (ip.is_loopback or ip == own)):
        return None
    if name in (h.lower().rstrip(".") for h in allowed_hosts):
        return None
    return (f"Host '{host_header}' is not this gateway's address. If clients reach it under that name, "
            "add the name to server.allowed_hosts in proxy.yaml.")


def page_refusal(sec_fetch_site: str | None, origin: str | None, host_header: str | None, tls: bool) -> str | None:
    """A request a web page of another origin sent (a browser marks it; other clients send neither)."""
    if sec_fetch_site is not None and sec_fetch_site.strip().lower() not in SAME_SITE:
        return f"Requests from other web sites are refused (Sec-Fetch-Site: {sec_fetch_site})."
    if origin is not None and not _same_origin(origin, host_header, "https" if tls else "http"):
        return f"Requests from web pages of another origin are refused (Origin: {origin})."
    return None


def _same_origin(origin: str, host_header: str | None, scheme: str) -> bool:
    try:
        o = urlsplit(origin.strip())
        name, port = url.parse_authority(host_header or "", check=True)
        o_port = o.port
    except ValueError:
        return False  # "null" (sandboxed frames, file: pages) included
    if o.scheme != scheme or not o.hostname:
        return False
    return (o.hostname == name.lower().strip("[]")
            and (o_port or DEFAULT_PORTS[scheme]) == (port or DEFAULT_PORTS[scheme]))


def client_address(peer: str | None, forwarded_for: list[str]) -> str | None:
    """Who the client is. A peer on loopback may be a load balancer on this machine, which names the
    address it was called from in X-Forwarded-For (deploy/haproxy.cfg sets it): then the last entry
    is the client. A peer elsewhere is the client, whatever it sends (the header is anyone's to write)."""
    ip = _ip(peer) if peer else None
    if ip is None or not ip.is_loopback or not forwarded_for:
        return peer
    last = forwarded_for[-1].rsplit(",", 1)[-1].strip()
    return last if _ip(last.strip("[]")) is not None else peer


def is_loopback(address: str | None) -> bool:
    ip = _ip(address.strip("[]")) if address else None
    return ip is not None and ip.is_loopback


def network_refusal(address: str | None, open_networks: list) -> str | None:
    """A client on another machine while no client key can prove it (server.api_keys empty): it
    would spend the provider credentials behind this gateway."""
    if is_loopback(address):
        return None
    ip = _ip(address.strip("[]")) if address else None
    if ip is not None and any(ip in net for net in open_networks):
        return None
    return (f"This gateway serves clients on other machines ({address}) only when server.api_keys is set "
            "(or their network is in server.open_networks) in proxy.yaml.")
