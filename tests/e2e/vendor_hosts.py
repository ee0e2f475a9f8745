"""Test scaffolding, not the gateway's code: a second `-s` script for tests/e2e/test_intercept.py
that connects the vendor hosts it is given to local doubles, as DNS would connect them to the
vendors. `--set test_vendor_hosts=api.anthropic.com=8443,other.example=9443` (ports on 127.0.0.1)."""

from __future__ import annotations

from mitmproxy import ctx
from mitmproxy.proxy import server_hooks


class VendorHosts:
    def load(self, loader) -> None:
        loader.add_option("test_vendor_hosts", str, "", "host=port,...: connect these hosts to 127.0.0.1:port")

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        pairs = (p.split("=", 1) for p in ctx.options.test_vendor_hosts.split(",") if "=" in p)
        ports = {host: int(port) for host, port in pairs}
        if data.server.address and data.server.address[0] in ports:
            data.server.address = ("127.0.0.1", ports[data.server.address[0]])


addons = [VendorHosts()]
