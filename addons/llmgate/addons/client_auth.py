"""Addon: when server.api_keys is set, every request must carry one of them.

Accepted as Authorization: Bearer, x-api-key, x-goog-api-key or ?key=, as the
OpenAI, Anthropic and Gemini SDKs send them. The key is masked in the flow as soon
as its headers are read, so it never shows in mitmweb, in saved flows or in mitmdump's
output, also when the body never arrives whole (the request hook then never runs).
When it is not set, only this machine's clients (and server.open_networks) are served: nothing
else proves who may spend the provider credentials behind the gateway.
"""

from __future__ import annotations

import hmac
import weakref

from mitmproxy import ctx, http

from llmgate.addons.cors import CORS_ORIGIN
from llmgate.addons.web_guard import client_address, host_refusal, is_loopback, network_refusal, page_refusal
from llmgate.errors import GatewayError
from llmgate.request_path.answers import error_response
from llmgate.request_path.inbound import INTERCEPT_MARK, inbound_of
from llmgate.runtime import UPSTREAM_MARK, Runtime
from llmgate.settings import ServerSettings

OPEN_PATHS = ("/health", "/provider_health")
ADMIN_PREFIX = "/admin/"
ADMIN_PATHS = ("/metrics",)
CONSOLE = "/ui"  # the web console: admin routes, with a login session instead of a key per request
KEY_ID = "llmgate_key"
REPLAY_KEY_ID = "replay"  # the request log's key id for a flow the operator replayed from mitmweb
REDACTED = "[redacted]"


CREDENTIAL_HEADERS = (b"authorization", b"x-api-key", b"x-goog-api-key")


def presented_key(req: http.Request) -> str | None:
    # one pass over the raw header fields: this runs on every request
    for name, value in req.headers.fields:
        name = name.lower()
        if name == b"authorization":
            if value[:7].lower() == b"bearer ":
                return value[7:].strip().decode("utf-8", "replace")
        elif name in CREDENTIAL_HEADERS:
            return value.decode("utf-8", "replace")
    if b"?" in req.data.path:
        return req.query.get("key")
    return None


def mask_client_credentials(req: http.Request, query_key: bool = True) -> None:
    """query_key: ?key= is a credential (Gemini's); on admin routes it is a filter."""
    fields = req.headers.fields
    masked = None  # one pass, and a copy only when there is something to mask: this runs twice per request
    for i, (k, _) in enumerate(fields):
        if k.lower() in CREDENTIAL_HEADERS:
            masked = masked or list(fields)
            masked[i] = (k, b"[redacted]")
    if masked is not None:
        req.headers.fields = tuple(masked)
    if query_key and b"?" in req.data.path and "key" in req.query:
        req.query["key"] = REDACTED


def client_ip(flow: http.HTTPFlow) -> str | None:
    """The client's address, also behind a load balancer on this machine (web_guard.client_address)."""
    peer = flow.client_conn.peername
    return client_address(str(peer[0]) if peer else None, flow.request.headers.get_all("x-forwarded-for"))


def operator_replay(flow: http.HTTPFlow) -> bool:
    """A client flow replayed by mitmproxy's ClientPlayback (mitmweb's Replay, `replay.client`,
    `client_replay`): only that sets is_replay to "request", nothing a client sends can. It is the
    operator's own action, so its key (masked when it was recorded) is not asked for."""
    return flow.is_replay == "request" and UPSTREAM_MARK not in flow.metadata


class ClientAuth:
    def __init__(self, rt: Runtime):
        self.rt = rt
        # flow -> the request's own (header fields, path), from requestheaders to request (weak:
        # a flow that never reaches either hook takes its entry with it)
        self._held: weakref.WeakKeyDictionary[http.HTTPFlow, tuple[tuple, bytes]] = weakref.WeakKeyDictionary()
        self._keys: tuple[ServerSettings | None, list[tuple[bytes, str]]] = (None, [])

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if not flow.live:
            return  # a provider-side flow (flow_record), redacted already
        req = flow.request
        self._held[flow] = (req.headers.fields, req.data.path)
        self._mask(req)

    def _mask(self, req: http.Request) -> None:
        mask_client_credentials(req, query_key=not req.path.startswith(ADMIN_PREFIX))
        req.data.path = self.rt.secrets.current().bytes(req.data.path)  # e.g. an admin key as ?key=

    def error(self, flow: http.HTTPFlow) -> None:
        # e.g. the body never came: no request hook. Masked again in case requestheaders
        # never saw this flow (it was in flight while the script reloaded).
        self._held.pop(flow, None)
        if flow.live:
            self._mask(flow.request)

    def request(self, flow: http.HTTPFlow) -> None:
        held = self._held.pop(flow, None)
        if flow.response or flow.error or not flow.live:
            return
        if held is not None:  # the key as sent, for this check only: masked again below
            flow.request.headers.fields, flow.request.data.path = held
        if (mark := flow.metadata.get(INTERCEPT_MARK)) is not None:  # a CLI's call to its vendor (addons/intercept):
            if mark["action"] != "passthrough":  # no client key asked; the vendor's own goes only to the vendor
                self._mask(flow.request)
            return
        settings = self.rt.settings
        keys = settings.server.api_keys
        path = flow.request.path.split("?", 1)[0]
        if path.startswith(ADMIN_PREFIX) or path in ADMIN_PATHS:
            self._admin(flow, settings.server)
        elif path == CONSOLE or path.startswith(CONSOLE + "/"):
            self._admin(flow, settings.server, console=True)
        elif operator_replay(flow):
            flow.metadata[KEY_ID] = REPLAY_KEY_ID
        elif not keys:  # no key to prove the caller: keep other machines and web pages out (web_guard)
            why = None if path in OPEN_PATHS else network_refusal(client_ip(flow), settings.server.open_networks)
            if why := why or self._web_refusal(flow, settings.server, check_host=True):
                flow.response = error_response(GatewayError(403, why, code="forbidden"),
                                               inbound_of(flow, settings).api)
        elif path not in OPEN_PATHS:
            key = presented_key(flow.request)
            err = None
            if key is None:
                err = GatewayError(401, "Missing API key. Send it as 'Authorization: Bearer <key>' (or x-api-key, "
                                   "x-goog-api-key, ?key=).", code="missing_api_key")
            else:
                sent = key.encode()
                kid = next((i for k, i in self._key_ids(settings.server) if hmac.compare_digest(sent, k)), None)
                if kid is None:
                    err = GatewayError(401, "Incorrect API key provided.", code="invalid_api_key")
                else:
                    flow.metadata[KEY_ID] = kid  # who asked, for the request log (never the key)
            if err is not None:  # in the caller's own error format
                flow.response = error_response(err, inbound_of(flow, settings).api)
        self._mask(flow.request)

    def _key_ids(self, server: ServerSettings) -> list[tuple[bytes, str]]:
        """server.key_ids() with the keys encoded, built once per settings object (a reload makes a new one)."""
        if self._keys[0] is not server:
            self._keys = (server, [(k.encode(), i) for k, i in server.key_ids()])
        return self._keys[1]

    def configure(self, updated: set[str]) -> None:
        # the Host check needs the Host the client sent, which reverse mode rewrites unless told not to
        if "keep_host_header" in updated and not ctx.options.keep_host_header:
            ctx.options.keep_host_header = True

    @staticmethod
    def _web_refusal(flow: http.HTTPFlow, server: ServerSettings, check_host: bool) -> str | None:
        req = flow.request
        why = None if CORS_ORIGIN in flow.metadata else page_refusal(  # server.cors lets that page in
            req.headers.get("sec-fetch-site"), req.headers.get("origin"), req.host_header,
            flow.client_conn.tls_established)
        if why is None and check_host:  # with a key to check, a rebinding page has nothing to present
            why = host_refusal(req.host_header, flow.client_conn.sockname, server.allowed_hosts)
        return why

    @classmethod
    def _admin(cls, flow: http.HTTPFlow, server: ServerSettings, console: bool = False) -> None:
        """Admin routes: never for web pages of other origins; an admin key when server.admin_keys
        is set, else loopback clients that name this gateway as their Host. The console checks
        its own login session."""
        admin_keys = server.admin_keys
        if why := cls._web_refusal(flow, server, check_host=not admin_keys):
            flow.response = error_response(GatewayError(403, why, code="forbidden"))
        elif admin_keys and console:
            return
        elif admin_keys:
            key = presented_key(flow.request) or ""
            if not any(hmac.compare_digest(key.encode(), k.encode()) for k in admin_keys):
                flow.response = error_response(GatewayError(
                    401, "This route needs an admin key (server.admin_keys).", code="invalid_api_key"))
        elif not is_loopback(client_ip(flow)):
            flow.response = error_response(GatewayError(
                403, "Admin routes answer loopback clients only unless server.admin_keys is set.", code="forbidden"))
