"""Addon: browser access to the client APIs for the web page origins in server.cors (off by default).

A page may read an answer from another origin only when it carries Access-Control-Allow-Origin
naming the page's origin; before a request with an API key or a JSON body the browser asks with
a preflight (OPTIONS, never with credentials), answered here before client authentication.
/admin, /ui and /metrics never get these headers, and Access-Control-* headers from anywhere
else (an upstream's own) are dropped, so nothing but server.cors opens the gateway to pages.
An origin let in here also passes web_guard's refusal of foreign pages (llmgate/client_auth).
"""

from __future__ import annotations

from mitmproxy import http

from llmgate.request_path.inbound import inbound_of
from llmgate.runtime import UPSTREAM_MARK, Runtime
from llmgate.settings import CorsSettings, GatewaySettings

CORS_ORIGIN = "llmgate_cors_origin"  # flow.metadata: the page origin server.cors lets in
PREFLIGHT = "llmgate_cors_preflight"  # flow.metadata: answered here, headers and all
NEVER = frozenset(("admin", "ui", "metrics"))  # endpoints no page of another origin may use
METHODS = "GET, POST"  # what the client API routes take


def allowed_origin(flow: http.HTTPFlow, settings: GatewaySettings) -> str | None:
    """The request's Origin, if server.cors lets it use this route."""
    cors = settings.server.cors
    if cors is None:  # off (the default): no header lookup on every request
        return None
    origin = flow.request.headers.get("origin")
    if origin is None or (origin not in cors.origins and "*" not in cors.origins):
        return None
    return None if inbound_of(flow, settings).endpoint in NEVER else origin


def preflight_headers(cors: CorsSettings, origin: str, req: http.Request) -> dict[str, str]:
    asked = req.headers.get("access-control-request-headers", "")
    out = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": METHODS,
        "Access-Control-Max-Age": str(cors.max_age),
        "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
    }
    allow = asked if cors.allow_headers is None else ", ".join(cors.allow_headers)
    if allow:
        out["Access-Control-Allow-Headers"] = allow
    if req.headers.get("access-control-request-private-network", "").lower() == "true":
        out["Access-Control-Allow-Private-Network"] = "true"  # a public page calling a loopback gateway
    return out


class Cors:
    def __init__(self, rt: Runtime):
        self.rt = rt

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # decided once the headers are in, so that early refusals (too large, too slow) carry it too
        if flow.live and UPSTREAM_MARK not in flow.metadata:
            if origin := allowed_origin(flow, self.rt.settings):
                flow.metadata[CORS_ORIGIN] = origin

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        origin, req, cors = flow.metadata.get(CORS_ORIGIN), flow.request, self.rt.settings.server.cors
        if origin and cors and req.method == "OPTIONS" and "access-control-request-method" in req.headers:
            flow.response = http.Response.make(204, b"", preflight_headers(cors, origin, req))
            flow.metadata[PREFLIGHT] = True

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._annotate(flow)  # a stream's headers leave before the response hook

    def response(self, flow: http.HTTPFlow) -> None:
        self._annotate(flow)  # answers made in a request hook have no responseheaders

    def _annotate(self, flow: http.HTTPFlow) -> None:
        if flow.response is None or not flow.live or UPSTREAM_MARK in flow.metadata or PREFLIGHT in flow.metadata:
            return
        h = flow.response.headers
        if any(k[:15].lower() == b"access-control-" for k, _ in h.fields):  # raw fields: a cheap check first
            for name in [n for n in h.keys() if n.lower().startswith("access-control-")]:
                del h[name]
        origin, cors = flow.metadata.get(CORS_ORIGIN), self.rt.settings.server.cors
        if not origin or cors is None:
            return
        h["Access-Control-Allow-Origin"] = origin
        if cors.expose_headers:
            h["Access-Control-Expose-Headers"] = ", ".join(cors.expose_headers)
        vary = [v.strip() for v in h.get_all("vary") for v in v.split(",")]
        if "origin" not in (v.lower() for v in vary):
            h["Vary"] = ", ".join([*filter(None, vary), "Origin"])
