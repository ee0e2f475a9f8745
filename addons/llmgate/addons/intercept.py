"""Addon: intercept mode, the official coding CLIs' calls to their vendors seen and routed.

With mitmproxy in regular mode (the CLI started with HTTPS_PROXY and mitmproxy's CA trusted; any
listener not in reverse mode, as local capture, is treated alike), the TLS of the vendor API hosts
(proxy.yaml `intercept.hosts`) is intercepted; every other host is tunnelled as it is (mitmproxy's
`allow_hosts`, set here from that list). A call to a vendor host that an `intercept.rules` entry
matches is answered by the gateway: front_door serves it as the route it names
(inbound.inbound_of reads the mark this addon leaves), with the gateway's provider credentials;
the CLI's own are masked before anything reads the flow. Every other call goes to the vendor
unchanged, bytes and credentials as the CLI sent them, and is recorded like gateway traffic
(request log, metrics, content views) with provider `passthrough` and the vendor host as its
account. Client keys (server.api_keys) are not asked of intercepted calls: the vendor checks its own.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import unquote

from mitmproxy import connection, ctx, http
from mitmproxy.proxy.mode_specs import ProxyMode, ReverseMode

from converters import openai_chat
from llmgate.addons.accounting import INBOUND
from llmgate.addons.client_auth import mask_client_credentials
from llmgate.addons.limits import decode
from llmgate.addons.web_guard import page_refusal
from llmgate.errors import GatewayError
from llmgate.request_path.answers import error_response
from llmgate.request_path.inbound import INTERCEPT_MARK, Inbound, match
from llmgate.runtime import Runtime
from llmgate.settings import GatewaySettings, InterceptRule, InterceptSettings, Limits

log = logging.getLogger("llmgate")

PASSTHROUGH = "passthrough"
ROUTE = "route"
ROUTABLE = frozenset(("chat", "responses", "messages", "count_tokens", "gemini", "embeddings"))
# vendor paths that are one of the gateway's routes under another prefix
PREFIXES = {
    "chatgpt.com": ("/backend-api/codex/", "/v1/"),  # Codex signed in with ChatGPT: the Responses API
    "dashscope.aliyuncs.com": ("/compatible-mode/v1/", "/v1/"),
    "dashscope-intl.aliyuncs.com": ("/compatible-mode/v1/", "/v1/"),
}
# body fields a CLI adds only for its vendor (Qwen Code for DashScope and the Qwen portal): a routed
# call is the CLI's call, not the vendor's dialect, so they stay behind (an OpenAI-compatible
# provider may refuse them: "Unrecognized request argument supplied: preserve_thinking")
QWEN_EXTRAS = ("preserve_thinking", "vl_high_resolution_images", "enable_thinking", "thinking_budget")
DIALECTS = {h: QWEN_EXTRAS for h in ("dashscope.aliyuncs.com", "dashscope-intl.aliyuncs.com", "portal.qwen.ai")}
STREAM_CAPTURE = 4 << 20  # bytes of a passed-on stream kept for the views and the request log
DEFAULT = InterceptSettings()


@dataclass(frozen=True, slots=True)
class Call:
    """An LLM call to a vendor, as the gateway's route it would be."""

    path: str  # the gateway's route (no query)
    inbound: Inbound
    model: str | None
    stream: bool


def gateway_path(host: str, path: str) -> str:
    old, new = PREFIXES.get(host, ("", ""))
    return new + path[len(old):] if old and path.startswith(old) else path


def pick_rule(rules: Sequence[InterceptRule], host: str, model: str | None) -> InterceptRule | None:
    """The first rule naming this host (or none) whose model glob matches (a rule with a glob
    never matches a call that names no model)."""
    for r in rules:
        if r.host not in (None, host):
            continue
        if r.model is None or (model is not None and fnmatchcase(model, r.model)):
            return r
    return None


def allow_patterns(hosts: Sequence[str], modes: Sequence[ProxyMode]) -> list[str]:
    """allow_hosts for these hosts (matched as host:port), plus the targets of any reverse-mode
    listeners beside the regular one, which allow_hosts would otherwise tunnel untouched."""
    out = [rf"^{re.escape(h)}:\d+$" for h in hosts]
    for m in modes:
        if isinstance(m, ReverseMode):
            host, port = m.address
            out.append(rf"^{re.escape(host)}:{port}$")
    return out


def intercept_settings(settings: GatewaySettings) -> InterceptSettings:
    return settings.intercept or DEFAULT  # regular mode without the section: watch the known vendors


def call_of(host: str, req: http.Request, limits: Limits) -> Call | None:
    """The request as a gateway route, if it is an LLM call the gateway can serve."""
    path = gateway_path(host, req.path.split("?", 1)[0])
    ib = match(path, "anthropic-version" in req.headers, lambda _: False)
    if ib.endpoint not in ROUTABLE or req.method != "POST":
        return None
    data = _body(req, limits)
    if ib.endpoint == "gemini":
        model: Any = unquote(ib.model or "").removeprefix("models/")
        stream = ib.action == "streamGenerateContent"
    else:
        model, stream = data.get("model"), data.get("stream") is True
    return Call(path, ib, model if isinstance(model, str) and model else None, stream)


def without_dialect(host: str, req: http.Request, limits: Limits) -> None:
    """A routed call's body without its vendor's own fields (DIALECTS), if it has any."""
    extras = DIALECTS.get(host, ())
    data = _body(req, limits) if extras else {}
    if any(k in data for k in extras):
        req.content = openai_chat.dumps({k: v for k, v in data.items() if k not in extras})


def _body(req: http.Request, limits: Limits) -> dict[str, Any]:
    """The JSON body, read without touching the flow's bytes ({} when it cannot be read)."""
    raw = req.raw_content or b""
    if len(raw) > limits.max_body:
        return {}
    try:
        raw = decode(raw, req.headers.get("content-encoding", ""), limits.max_decompressed)
        return openai_chat.parse_json_object(raw, limits.max_depth, limits.max_values)
    except (GatewayError, openai_chat.RequestError):
        return {}


class StreamTap:
    """A passed-on stream's chunks sent on as they come, the first STREAM_CAPTURE bytes kept."""

    def __init__(self) -> None:
        self.kept = bytearray()

    def __call__(self, chunk: bytes) -> bytes:
        if len(self.kept) < STREAM_CAPTURE:
            self.kept += chunk[:STREAM_CAPTURE - len(self.kept)]
        return chunk


class Intercept:
    name = "llmgate_intercept"  # mitmweb has an addon named "intercept" (its own); two may not share a name

    def __init__(self, rt: Runtime):
        self.rt = rt
        self._applied: GatewaySettings | None = None  # the settings allow_hosts was last set from
        self._ours: list[str] | None = None  # what we set it to

    # --- which hosts are decrypted ---------------------------------------------------------

    def running(self) -> None:
        self._apply_hosts()

    def client_connected(self, client: connection.Client) -> None:
        self._apply_hosts()  # before this connection's first layer decision; a cheap check when unchanged

    def _apply_hosts(self) -> None:
        settings = self.rt.settings
        if settings is self._applied:
            return
        self._applied = settings
        modes = [ProxyMode.parse(m) for m in ctx.options.mode]
        if all(isinstance(m, ReverseMode) for m in modes):
            return
        o = ctx.options
        if o.ignore_hosts or (o.allow_hosts and list(o.allow_hosts) != self._ours):
            log.warning("intercept: allow_hosts/ignore_hosts were set on the command line; they, not "
                        "intercept.hosts, choose which hosts are decrypted")
            return
        allow = allow_patterns(intercept_settings(settings).hosts, modes)
        if allow != self._ours:
            self._ours = allow
            o.update(allow_hosts=allow)

    # --- each call -----------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.live and not isinstance(flow.client_conn.proxy_mode, ReverseMode):  # regular, local, ...
            flow.metadata[INTERCEPT_MARK] = {"host": flow.request.host.lower(), "action": PASSTHROUGH}

    def request(self, flow: http.HTTPFlow) -> None:
        mark = flow.metadata.get(INTERCEPT_MARK)
        if mark is None or flow.response or flow.error or not flow.live:
            return
        host, ic = mark["host"], intercept_settings(self.rt.settings)
        if host not in ic.hosts:
            return  # not a vendor API (plain http through the proxy): passed on, not logged
        call = call_of(host, flow.request, self.rt.settings.server.limits)
        if call is None:
            return  # the CLI's other calls to its vendor (login, quotas...): shown, passed on
        rule = pick_rule(ic.rules, host, call.model)
        if rule is not None:
            req = flow.request
            if why := page_refusal(req.headers.get("sec-fetch-site"), req.headers.get("origin"), req.host_header,
                                   flow.client_conn.tls_established):
                # the gateway's credentials would answer it: not for a web page of another site (a browser
                # that uses this proxy), as on the gateway's own port; the CLIs send neither header
                mask_client_credentials(req)
                flow.response = error_response(GatewayError(403, why, code="forbidden"), call.inbound.api)
                return
            mark.update(action=ROUTE, path=call.path)
            without_dialect(host, req, self.rt.settings.server.limits)
            if rule.provider:
                mark["provider"] = rule.provider
            elif rule.route != "gateway":
                mark["model"] = rule.route  # routed in the call's model's place (front_door._engine)
            return
        flow.metadata[INBOUND] = {"inbound": call.inbound.api.name, "endpoint": call.inbound.endpoint,
                                  "model": call.model, "stream": call.stream}
        flow.metadata["llmgate"] = {"provider": PASSTHROUGH, "upstream_model": call.model, "route": PASSTHROUGH,
                                    "account": host}
        flow.comment = f"-> {host} ({PASSTHROUGH})"

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if not self._passed_on(flow) or flow.response is None:
            return
        self._as_record(flow.request)
        if INBOUND in flow.metadata and "text/event-stream" in flow.response.headers.get("content-type", ""):
            flow.response.stream = StreamTap()  # the CLI gets each event as it comes

    def response(self, flow: http.HTTPFlow) -> None:
        if self._passed_on(flow) and flow.response is not None and isinstance(flow.response.stream, StreamTap):
            flow.response.data.content = bytes(flow.response.stream.kept)  # what the views and the log read

    def error(self, flow: http.HTTPFlow) -> None:
        if self._passed_on(flow):
            self._as_record(flow.request)

    def _as_record(self, req: http.Request) -> None:
        """A sent request, from here on only a record: credentials masked, the body decoded within
        the limits (Codex compresses its bodies), so the views, the request log and mitmweb read it
        without inflating anything unbounded (limits.py drops a Content-Encoding left on it)."""
        mask_client_credentials(req)
        if encoding := req.headers.get("content-encoding"):
            limit = self.rt.settings.server.limits.max_decompressed
            try:
                req.raw_content = decode(req.raw_content or b"", encoding, limit)
            except GatewayError:
                return
            del req.headers["content-encoding"]

    @staticmethod
    def _passed_on(flow: http.HTTPFlow) -> bool:
        mark = flow.metadata.get(INTERCEPT_MARK)
        return mark is not None and mark["action"] == PASSTHROUGH and flow.live
