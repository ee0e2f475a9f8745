"""Addon: the intercept proxy port (any listener not in reverse mode) for network clients.

A client on the gateway's own machine may use the proxy as it likes: it reaches loopback anyway.
A client on the network is held to what the gateway's own port asks of it:
- with server.api_keys unset, it is refused, unless its network is in server.open_networks;
- with server.api_keys set, one of those keys, as the proxy password (HTTPS_PROXY=http://x:KEY@host:port;
  `Proxy-Authorization: Basic` or `Bearer`): a routed vendor call spends the gateway's provider
  credentials. The header goes no further (mitmproxy would forward it to the vendor);
- never a loopback destination, by any spelling or name: through the proxy its connection would come
  from loopback, and loopback is what opens /admin, /metrics and /ui when server.admin_keys is unset.
  (mitmproxy itself refuses only its own listen addresses spelt 127.0.0.1, ::1 or localhost.)
  Checked on the CONNECT or request, and again on every connection out (server_connect), which also
  sees what no flow shows: a SOCKS tunnel, a host not decrypted.
The name is resolved here, and again by mitmproxy when it connects: a name whose DNS answer changes
in between is not caught (the target's own Host check, web_guard, still refuses foreign names).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import socket
import weakref

from mitmproxy import connection, http
from mitmproxy.addons.proxyauth import parse_http_basic_auth
from mitmproxy.proxy import server_hooks
from mitmproxy.proxy.mode_specs import LocalMode, ReverseMode

from llmgate.addons.web_guard import is_loopback, network_refusal
from llmgate.errors import GatewayError
from llmgate.request_path.answers import error_response
from llmgate.request_path.inbound import inbound_of
from llmgate.runtime import Runtime

HEADER = "proxy-authorization"
REALM = {"Proxy-Authenticate": 'Basic realm="llmgate"'}


def proxy_key(value: str | None) -> str | None:
    """The key in a Proxy-Authorization value (Basic: the password, else the user name; or Bearer)."""
    if not value:
        return None
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip() or None
    try:
        _, user, password = parse_http_basic_auth(value)
    except ValueError:
        return None
    return password or user or None


def is_local(ip: str) -> bool:
    """Loopback or 'this host' (0.0.0.0 and :: connect to loopback), also as an IPv4-mapped IPv6 address."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    addr = getattr(addr, "ipv4_mapped", None) or addr
    return addr.is_loopback or addr.is_unspecified


async def reaches_local(host: str, port: int) -> bool:
    """Whether `host` is, or resolves to, a loopback address (a name that does not resolve: no)."""
    if is_local(host.strip("[]")):
        return True
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return any(is_local(str(info[4][0])) for info in infos)


def from_network(client: connection.Client) -> bool:
    """A client of a proxy listener that is not on this machine (local capture: this machine's processes,
    whatever address they connect from)."""
    if isinstance(client.proxy_mode, (ReverseMode, LocalMode)):
        return False
    return not (client.peername and is_loopback(str(client.peername[0])))


class ProxyGuard:
    def __init__(self, rt: Runtime):
        self.rt = rt
        # connections whose CONNECT passed: the requests inside go to the target checked then
        self._tunnels: weakref.WeakSet[connection.Client] = weakref.WeakSet()

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        await self._guard(flow)
        if flow.response is None:
            self._tunnels.add(flow.client_conn)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.live and not flow.response and flow.client_conn not in self._tunnels:
            await self._guard(flow)

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Every connection out, also those no flow shows (a SOCKS tunnel, a host not decrypted)."""
        if not from_network(data.client) or data.server.address is None:
            return
        server = self.rt.settings.server
        if not server.api_keys and (why := network_refusal(str(data.client.peername[0]), server.open_networks)):
            data.server.error = why  # e.g. a SOCKS tunnel: an open proxy for the network
            return
        if await reaches_local(str(data.server.address[0]), int(data.server.address[1])):
            data.server.error = "This proxy does not take network clients to the gateway's own machine (loopback)."

    async def _guard(self, flow: http.HTTPFlow) -> None:
        client, req = flow.client_conn, flow.request
        if isinstance(client.proxy_mode, ReverseMode):
            return
        key = proxy_key(req.headers.pop(HEADER, None))  # for us only: never to the vendor, a flow or a log
        if not from_network(client):
            return
        err = None
        server = self.rt.settings.server
        keys = [k.encode() for k, _ in server.key_ids()]
        if not keys and (why := network_refusal(str(client.peername[0]), server.open_networks)):
            err = GatewayError(403, why, code="forbidden")
        elif keys and not any(hmac.compare_digest((key or "").encode(), k) for k in keys):
            err = GatewayError(407, "This proxy asks network clients for a gateway key (server.api_keys) as the "
                               "proxy password: HTTPS_PROXY=http://llmgate:<key>@host:port.",
                               code="proxy_auth_required", headers=REALM)
        elif await reaches_local(req.host, req.port):
            err = GatewayError(403, "This proxy does not take network clients to the gateway's own machine "
                               "(loopback).", code="forbidden")
        if err is not None:
            flow.response = error_response(err, inbound_of(flow, self.rt.settings).api)
