"""Addon: answers every request itself: OpenAI-compatible routes, routing, upstream I/O.

Nothing is ever forwarded to mitmproxy's reverse target. Non-streamed answers
are set as the flow's response; streams are handed to the loopback relay.
"""

from __future__ import annotations

import asyncio
import logging
import time

from mitmproxy import http

from converters import openai_chat
from llmgate.errors import GatewayError
from llmgate.providers import PROVIDER_TYPES
from llmgate.relay import Pipe, point_at_relay
from llmgate.responses import error_response, json_response
from llmgate.routing import Route, provider_by_id, resolve
from llmgate.runtime import UPSTREAM_MARK, Exchange, Runtime
from llmgate.settings import GatewaySettings, ProviderSettings
from llmgate.translate import plan_openai_client
from llmgate.upstream import MAX_ERROR_BODY, UpstreamRequest

log = logging.getLogger("llmgate")

DISCOVERY_WAIT = 5.0  # seconds a request waits for model discovery
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
    "content-length", "content-encoding", "set-cookie",
}


def split_forced_provider(path: str) -> tuple[str | None, str]:
    """'/lmstudio/v1/models' -> ('lmstudio', '/v1/models')."""
    parts = path.split("/", 3)
    if len(parts) >= 3 and parts[1] and parts[1] != "v1" and parts[2] == "v1":
        return parts[1], "/" + "/".join(parts[2:])
    return None, path


def client_headers(raw: tuple[tuple[bytes, bytes], ...]) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers that make sense to pass on to the client."""
    return [(k, v) for k, v in raw if k.lower().decode("latin-1") not in HOP_BY_HOP]


class FrontDoor:
    def __init__(self, rt: Runtime):
        self.rt = rt

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or UPSTREAM_MARK in flow.metadata:
            return
        try:
            await self._dispatch(flow)
        except GatewayError as e:
            flow.response = error_response(e)
        except Exception:
            log.exception("gateway failed on %s %s", flow.request.method, flow.request.path)
            flow.response = error_response(GatewayError(
                500, "Internal gateway error; the gateway log has the details.", code="internal_error"))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        ex = self.rt.exchanges.get(flow.id)
        if ex is not None and ex.pipe is not None and flow.response is not None:
            flow.response.stream = True  # the relay sends converted events: pass them straight on

    def error(self, flow: http.HTTPFlow) -> None:
        ex = self.rt.exchanges.get(flow.id)
        if ex is not None and ex.pipe is not None:  # the client left: stop the upstream generating
            self.rt.relay.discard(ex.token)
            ex.pipe.abandon("client-gone")

    async def _dispatch(self, flow: http.HTTPFlow) -> None:
        method = flow.request.method
        path = flow.request.path.split("?", 1)[0]
        forced, path = split_forced_provider(path)
        settings = self.rt.settings
        if path == "/health" and not forced:
            self._allow(method, "GET")
            flow.response = await self._health(settings)
        elif path == "/v1/models":
            self._allow(method, "GET")
            flow.response = await self._models(settings, forced)
        elif path == "/v1/chat/completions":
            self._allow(method, "POST")
            await self._chat(flow, settings, forced)
        else:
            raise GatewayError(404, f"Unknown route: {method} {flow.request.path.split('?', 1)[0]}. "
                               "Routes: POST /v1/chat/completions, GET /v1/models, GET /health "
                               "(also under /{provider}/v1/...).", code="unknown_route")

    @staticmethod
    def _allow(method: str, allowed: str) -> None:
        if method != allowed:
            raise GatewayError(405, f"Method {method} is not allowed here; use {allowed}.",
                               code="method_not_allowed", headers={"Allow": allowed})

    async def _refresh(self, providers: list[ProviderSettings]) -> None:
        stale = [p for p in providers if p.enabled and self.rt.catalog.stale(p)]
        if stale:
            await asyncio.wait([asyncio.ensure_future(self.rt.catalog.refresh(p)) for p in stale],
                               timeout=DISCOVERY_WAIT)

    async def _health(self, settings: GatewaySettings) -> http.Response:
        await self._refresh(settings.providers)
        report, routable = [], 0
        for p in settings.providers:
            st = self.rt.catalog.status(p)
            models = self.rt.catalog.models(p)
            ok = p.enabled and (bool(models) or (p.id == settings.routing.default and "error" not in st))
            routable += ok
            state = "disabled" if not p.enabled else "ok" if ok else "unavailable" if "error" in st else "unknown"
            report.append({"id": p.id, "type": p.type, "state": state, **st})
        body = {"status": "ok" if routable else "unavailable", "routable_providers": routable,
                "providers": report}
        return json_response(200 if routable else 503, body)

    async def _models(self, settings: GatewaySettings, forced: str | None) -> http.Response:
        providers = [provider_by_id(settings, forced, "in the request path")] if forced else settings.providers
        await self._refresh(providers)
        seen: dict[str, str] = {}
        for p in providers:
            if p.enabled:
                for m in self.rt.catalog.models(p) or ():
                    seen.setdefault(m, p.id)
        if not forced:
            for alias, target in settings.routing.aliases.items():
                seen.setdefault(alias, target.partition("/")[0] if "/" in target else "alias")
        return json_response(200, openai_chat.model_list(list(seen.items())))

    async def _route(self, settings: GatewaySettings, model: str, forced: str | None, header: str | None) -> Route:
        models_of = self.rt.catalog.models
        try:
            return resolve(settings, models_of, model, forced, header)
        except GatewayError as e:
            if e.code != "model_not_found":
                raise
        # maybe a provider that discovers its models serves it: look (again) and retry
        await self._refresh(settings.providers)
        return resolve(settings, models_of, model, forced, header)

    async def _chat(self, flow: http.HTTPFlow, settings: GatewaySettings, forced: str | None) -> None:
        body = flow.request.content or b""
        try:
            data, req = openai_chat.parse_request(body)
        except openai_chat.RequestError as e:
            raise GatewayError(400, str(e), code="invalid_request", param=e.param) from None
        route = await self._route(settings, req.model, forced, flow.request.headers.get("model-provider"))
        p = route.provider
        kind = PROVIDER_TYPES[p.type]
        timeouts = p.timeouts or settings.server.timeouts
        who = f"'{p.id}'"
        plan = plan_openai_client(kind, p, route.model, req.model, data, body, bool(req.stream), self.rt.reasoning)
        headers = {
            "Content-Type": "application/json",
            "Accept": plan.accept,
            "Accept-Encoding": "identity",  # streams are rewritten chunk by chunk: no gzip
            **kind.default_headers,
            **(kind.auth_headers(p.api_key) if p.api_key else {}),
            **p.headers,
        }
        up = UpstreamRequest("POST", plan.url, headers, plan.body)
        ex = Exchange(p.id, route.model, req.model, route.how, up, started=time.time())
        self.rt.exchanges[flow.id] = ex
        flow.metadata["llmgate"] = {"provider": p.id, "upstream_model": route.model, "route": route.how}
        converted = "" if kind.wire == "openai_chat" else f", openai_chat->{kind.wire}"
        flow.comment = f"-> {p.id} / {route.model} ({route.how}{converted})"

        resp = await self.rt.upstream.send(up, timeouts, who)
        if flow.error:  # the client left while we waited
            resp.close()
            return
        ex.first_byte = time.time()
        ex.status = resp.status
        ex.response_headers = resp.raw_headers
        if resp.status >= 400:
            ex.response_body = await self.rt.upstream.read_body(resp, who, limit=MAX_ERROR_BODY)
            raise plan.error(resp.status, resp.reason or "", resp.headers, ex.response_body)

        out_headers = client_headers(resp.raw_headers)
        if req.stream and resp.content_type == "text/event-stream":
            pipe = Pipe(resp, plan.transform(), out_headers, who, timeouts.read)
            port = await self.rt.relay.ensure_started()
            ex.pipe, ex.token = pipe, self.rt.relay.register(pipe)
            ex.relay_saved = point_at_relay(flow.request, port, ex.token)
            return

        ex.response_body = await self.rt.upstream.read_body(resp, who)
        try:
            client_body = plan.response(ex.response_body)
        except ValueError:
            raise GatewayError(502, f"Upstream {who} sent a response that is not valid JSON.",
                               code="upstream_error") from None
        flow.response = http.Response.make(resp.status, client_body, out_headers)
