"""Addon: answers every request itself: the client APIs' routes, routing, upstream I/O.

Nothing is ever forwarded to mitmproxy's reverse target. Non-streamed answers
are set as the flow's response; streams are handed to the loopback relay.
Routes are listed in llmgate/request_path/inbound.py.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from mitmproxy import ctx, http
from prometheus_client import CONTENT_TYPE_LATEST

from converters import anthropic, embeddings, gemini, openai_chat
from converters import canonical as cn
from converters.token_estimate import estimate
from llmgate.addons.accounting import INBOUND
from llmgate.addons.limits import request_body
from llmgate.errors import GatewayError
from llmgate.operations.admin_api import AdminApi
from llmgate.providers import PROVIDER_TYPES
from llmgate.providers.base import ProviderKind
from llmgate.request_path import listings
from llmgate.request_path.answers import error_response, json_response
from llmgate.request_path.client_apis import ANTHROPIC, GEMINI
from llmgate.request_path.failover import affinity_key, cool_down
from llmgate.request_path.failover_engine import Failover, member_state
from llmgate.request_path.inbound import INTERCEPT_MARK, ROUTES_HINT, Inbound, inbound_of
from llmgate.request_path.pool import Cooling
from llmgate.request_path.provider_call import CallRequest, Exchange, ProviderCall
from llmgate.request_path.relay import Pipe, bound_socket_buffers, point_at_relay
from llmgate.request_path.routing import Route, members
from llmgate.request_path.wire import UPSTREAM_FORMATS, plan, serving_kind
from llmgate.runtime import UPSTREAM_MARK, Runtime
from llmgate.settings import Limits

log = logging.getLogger("llmgate")

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
    "content-length", "content-encoding", "set-cookie",
}
GEMINI_BATCH_LIMIT = 100  # inputs per batchEmbedContents call
COUNTERS = {"anthropic": (anthropic.count_request, anthropic.count_of),
            "gemini": (gemini.count_request, gemini.count_of),
            "code_assist": (gemini.count_request, gemini.count_of)}  # the account re-wraps it


def client_headers(raw: tuple[tuple[bytes, bytes], ...]) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers that make sense to pass on to the client."""
    return [(k, v) for k, v in raw if k.lower().decode("latin-1") not in HOP_BY_HOP]


def _parse_body(raw: bytes, limits: Limits) -> dict[str, Any]:
    try:
        return openai_chat.parse_json_object(raw, limits.max_depth, limits.max_values)
    except openai_chat.RequestError as e:
        raise GatewayError(400, str(e), code="invalid_request", param=e.param) from None


def _model_field(data: dict[str, Any]) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayError(400, "Missing required parameter: 'model'.", code="invalid_request", param="model")
    return model


def _stream_field(data: dict[str, Any]) -> bool:
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise GatewayError(400, "'stream' must be a boolean.", code="invalid_request", param="stream")
    return stream is True


class FrontDoor:
    def __init__(self, rt: Runtime):
        self.rt = rt
        self.admin = AdminApi(rt, lambda: ctx.options.gateway_config, lambda: rt.reload())

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or UPSTREAM_MARK in flow.metadata:
            return
        if (flow.metadata.get(INTERCEPT_MARK) or {}).get("action") == "passthrough":
            return  # a CLI's call that goes on to its vendor (llmgate/addons/intercept)
        inbound = inbound_of(flow, self.rt.settings)
        flow.metadata[INBOUND] = {"inbound": inbound.api.name, "endpoint": inbound.endpoint}
        try:
            await self._dispatch(flow, inbound)
        except GatewayError as e:
            array = inbound.action == "streamGenerateContent" and flow.request.query.get("alt") != "sse"
            flow.response = error_response(e, inbound.api, array)
        except RecursionError:  # JSON nested past json.loads' reach: client bodies are depth-checked, so an upstream's
            log.warning("an upstream answer to %s %s nests JSON too deeply to read", flow.request.method,
                        flow.request.path)
            flow.response = error_response(GatewayError(
                502, "The upstream's answer nests its JSON too deeply to be read.", code="upstream_error"), inbound.api)
        except Exception:
            log.exception("gateway failed on %s %s", flow.request.method, flow.request.path)
            flow.response = error_response(GatewayError(
                500, "Internal gateway error; the gateway log has the details.", code="internal_error"), inbound.api)

    def done(self) -> None:
        for shim in self.rt.claude_code_shims.values():
            shim.kill_all()

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        ex = self.rt.exchanges.get(flow.id)
        if ex is not None and ex.pipe is not None and flow.response is not None:
            flow.response.stream = True  # the relay sends converted events: pass them straight on
            bound_socket_buffers(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        ex = self.rt.exchanges.get(flow.id)
        if ex is not None:  # done (a stream: fully sent): the account's slot is free
            self.rt.pool.release(ex.inflight)
            ex.inflight = None

    def error(self, flow: http.HTTPFlow) -> None:
        ex = self.rt.exchanges.get(flow.id)
        if ex is not None:
            self.rt.pool.release(ex.inflight)
            ex.inflight = None
        if ex is not None and ex.pipe is not None:  # the client left: stop the upstream generating
            if ex.token is not None:
                self.rt.relay.discard(ex.token)
            ex.pipe.abandon("client-gone")

    async def _dispatch(self, flow: http.HTTPFlow, ib: Inbound) -> None:
        settings = self.rt.settings
        if ib.endpoint == "unknown":
            raise GatewayError(404, f"Unknown route: {flow.request.method} {flow.request.path.split('?', 1)[0]}. "
                               + ROUTES_HINT, code="unknown_route")
        if ib.endpoint == "admin":
            flow.response = await self.admin.handle(flow)
            return
        if ib.endpoint == "ui":
            return  # the web console: llmgate/console's addon, next in the chain, answers
        self._allow(flow.request.method, ib.method)
        raw = request_body(flow.request, settings.server.limits)
        limits = settings.server.limits
        catalog = self.rt.catalog
        if ib.endpoint in ("health", "provider_health"):
            flow.response = await listings.health(self.rt, settings, ib.endpoint == "provider_health")
        elif ib.endpoint == "metrics":
            flow.response = http.Response.make(200, self.rt.metrics.render(), {"Content-Type": CONTENT_TYPE_LATEST})
        elif ib.endpoint == "models":
            flow.response = await listings.model_list(catalog, settings, ib)
        elif ib.endpoint == "model":
            flow.response = await listings.one_model(catalog, settings, ib)
        elif ib.endpoint == "chat":
            try:
                data, req = openai_chat.parse_request(raw, limits.max_depth, limits.max_values)
            except openai_chat.RequestError as e:
                raise GatewayError(400, str(e), code="invalid_request", param=e.param) from None
            await self._generate(flow, ib, data, raw, req.model, bool(req.stream))
        elif ib.endpoint in ("messages", "responses"):
            data = _parse_body(raw, limits)
            await self._generate(flow, ib, data, raw, _model_field(data), _stream_field(data))
        elif ib.endpoint == "count_tokens":
            data = _parse_body(raw, limits)
            await self._count(flow, ib, data, raw, _model_field(data))
        elif ib.endpoint == "gemini":
            data = _parse_body(raw, limits)
            model = unquote(ib.model or "").removeprefix("models/")
            if ib.action == "countTokens":
                await self._count(flow, ib, gemini.count_body_of(data), raw, model)
            elif ib.action in ("embedContent", "batchEmbedContents"):
                await self._embed(flow, ib, data, raw, model)
            elif ib.action in ("generateContent", "streamGenerateContent"):
                stream = ib.action == "streamGenerateContent"
                await self._generate(flow, ib, data, raw, model, stream, sse=flow.request.query.get("alt") == "sse")
        elif ib.endpoint == "embeddings":
            data = _parse_body(raw, limits)
            await self._embed(flow, ib, data, raw, _model_field(data))

    @staticmethod
    def _allow(method: str, allowed: str) -> None:
        if method != allowed:
            raise GatewayError(405, f"Method {method} is not allowed here; use {allowed}.",
                               code="method_not_allowed", headers={"Allow": allowed})

    async def _members(self, model: str, forced: str | None, header: str | None) -> list[Route]:
        settings, models_of = self.rt.settings, self.rt.catalog.models
        try:
            return members(settings, models_of, model, forced, header)
        except GatewayError as e:
            if e.code != "model_not_found":
                raise
        # maybe a provider that discovers its models serves it: look (again) and retry
        await listings.refresh(self.rt.catalog, settings.providers)
        return members(settings, models_of, model, forced, header)

    def _member_state(self, route: Route) -> Cooling | None | bool:
        p, kind = route.provider, PROVIDER_TYPES[route.provider.type]
        usable = [a.name for a in self.rt.account_set(p, kind).accounts if a.usable()] if kind.accounts else None
        return member_state(self.rt.pool, route, usable)

    async def _engine(self, flow: http.HTTPFlow, ib: Inbound, model: str, data: dict[str, Any] | None) -> Failover:
        """The failover over the model's pool, then its fallback models' pools, in this request's order."""
        settings = self.rt.settings
        flow.metadata[INBOUND]["model"] = model
        target = (flow.metadata.get(INTERCEPT_MARK) or {}).get("model") or model  # an intercept rule's target
        rules = settings.routing.for_model(target)
        header = flow.request.headers.get("model-provider")
        strategy = rules.strategy or settings.routing.strategy
        session = affinity_key(rules.affinity or settings.routing.affinity, flow.request.headers, data)
        tiers = [(target, await self._members(target, ib.forced, header))]
        for fallback in rules.fallbacks:
            try:
                tiers.append((fallback, await self._members(fallback, None, header)))
            except GatewayError:
                log.warning("fallback model %s of %s is served by no provider", fallback, model)
        order = [r for name, routes in tiers for r in self.rt.pool.order(name, routes, strategy, session)]
        return Failover(model, order, self._member_state, self.rt.pool.clock, settings.routing.max_attempts,
                        settings.routing.deadline)

    async def _failover(self, flow: http.HTTPFlow, ib: Inbound, model: str, data: dict[str, Any] | None,
                        attempt: Callable[[Route, ProviderKind, bool], Awaitable[None]]) -> None:
        """Try members until one answers (llmgate/failover_engine decides which). A member that
        fails before the first byte reaches the client with a rate limit, a 5xx, no connection
        or no answer in time (a stream: also an error as its first event) cools down, and the
        next one is tried."""
        engine = await self._engine(flow, ib, model, data)
        while (a := engine.next()) is not None:
            before = self.rt.exchanges.get(flow.id)
            try:
                kind = PROVIDER_TYPES[a.route.provider.type]
                if kind.for_model is not None:  # Copilot: its models endpoint says where each model is served
                    await self.rt.catalog.learned(a.route.provider, listings.DISCOVERY_WAIT)
                    kind = serving_kind(kind, self.rt.catalog.info, a.route.provider, a.route.model, ib.api.wire)
                await attempt(a.route, kind, a.probe)
                return
            except GatewayError as e:
                ex = self._end_attempt(flow, before)
                account = ex.account if ex is not None else ""
                if flow.error or not engine.failed(a, account, e):
                    raise
                c = cool_down(self.rt.pool, a.route, account, e)
                cooling = round(c.until - self.rt.pool.clock()) if c else None
                note = f"{a.route.provider.id}/{a.route.model}: {e.status}" + (
                    f", cooling {cooling} s" if c else "")
                if ex is not None:  # its provider flow says why (flow_record)
                    ex.failure = {"status": e.status, "error": e.message, "cooling_s": cooling}
                flow.metadata.setdefault("llmgate_attempts", []).append(note)
                log.info("%s failed over: %s", flow.request.path, note)
        raise engine.error()

    def _end_attempt(self, flow: http.HTTPFlow, before: Exchange | None) -> Exchange | None:
        """A failed attempt gives its account's slot back; answers its exchange (None: it
        failed before calling the provider)."""
        ex = self.rt.exchanges.get(flow.id)
        if ex is None or ex is before:
            return None
        self.rt.pool.release(ex.inflight)
        ex.inflight = None
        return ex

    async def _call(self, flow: http.HTTPFlow, ib: Inbound, route: Route, kind: ProviderKind, model: str,
                    req: CallRequest, note: str, probe: bool) -> tuple[ProviderCall, Any]:
        """The upstream call of one attempt, recorded on the flow (llmgate/provider_call).
        The response is None if the client left while we waited."""
        p = route.provider
        if kind.wire == ib.api.wire:
            req.headers.update({n: flow.request.headers[n] for n in ib.api.pass_headers if n in flow.request.headers})
        call = ProviderCall(self.rt, route, kind, req, model, probe)
        if (prev := self.rt.exchanges.get(flow.id)) is not None:  # it failed over: keep it for the record
            call.ex.earlier = (*prev.earlier, prev)
        self.rt.exchanges[flow.id] = call.ex
        flow.metadata["llmgate"] = {"provider": p.id, "upstream_model": route.model, "route": route.how}
        converted = "" if kind.wire == ib.api.wire else f", {ib.api.wire}->{kind.wire}"
        flow.comment = f"-> {p.id} / {route.model} ({route.how}{converted}{note})"
        try:
            if not await self.rt.pool.confirm(call.ex.inflight, p.max_concurrency):  # other processes' slots
                raise GatewayError(429, f"Provider '{p.id}': at its max_concurrency ({p.max_concurrency}) across "
                                   "the gateway processes.", code="pool_cooling")
            return call, await call.send(lambda: flow.error is not None)
        finally:
            if call.ex.status is not None and call.account is not None:  # it answered: say which account
                flow.comment = flow.comment[:-1] + f", account {call.account.name})"

    async def _generate(self, flow: http.HTTPFlow, ib: Inbound, data: dict[str, Any], raw: bytes,
                        model: str, stream: bool, sse: bool = True) -> None:
        flow.metadata[INBOUND]["stream"] = stream

        async def attempt(route: Route, kind: ProviderKind, probe: bool) -> None:
            p = route.provider
            pl = plan(ib.api, kind, p, route.model, model, data, raw, stream, self.rt.reasoning, sse)
            req = CallRequest(pl.url, pl.error, pl.body, pl.accept, "stream" if stream else "generate")
            call, resp = await self._call(flow, ib, route, kind, model, req, "", probe)
            if resp is None:
                return
            out_headers = client_headers(resp.raw_headers) + pl.headers
            if stream:
                await self._hand_to_relay(flow, route, kind, call, resp, pl, out_headers, sse)
                return
            body = await call.read(resp)
            if kind.collect is not None:
                body = kind.collect(body)
            try:
                client_body = pl.response(body)
            except ValueError:
                raise GatewayError(502, f"Upstream '{p.id}' answered {resp.status} with a body that is not valid "
                                   f"JSON ({resp.content_type}).", code="upstream_error") from None
            flow.response = http.Response.make(resp.status, client_body, out_headers)

        await self._failover(flow, ib, model, data, attempt)

    async def _hand_to_relay(self, flow: http.HTTPFlow, route: Route, kind: ProviderKind, call: ProviderCall,
                             resp: Any, pl: Any, out_headers: list[tuple[bytes, bytes]], sse: bool) -> None:
        """A stream goes to the client through the loopback relay, converted event by event."""
        p, ex = route.provider, call.ex
        if resp.content_type != kind.stream_type:
            resp.close()
            raise GatewayError(502, f"Upstream '{p.id}' answered a streaming request with "
                               f"{resp.content_type or 'no content type'}, not a stream.", code="upstream_error")
        if not sse:  # a Gemini client that asked for one JSON array
            out_headers = [(k, v) for k, v in out_headers if k.lower() != b"content-type"]
            out_headers.append((b"content-type", b"application/json; charset=UTF-8"))
        read_timeout = (p.timeouts or self.rt.settings.server.timeouts).read
        head = await call.first_event(resp, read_timeout)  # an error as the first event fails over
        if flow.error is not None:  # the client left while it was awaited
            resp.close()
            return
        pipe = Pipe(resp, self.rt.secrets.stream(pl.transform()), out_headers, f"'{p.id}'", read_timeout, head,
                    keep_upstream=self.rt.provider_flows())
        port = await self.rt.relay.ensure_started()
        ex.pipe, ex.token = pipe, self.rt.relay.register(pipe)
        ex.relay_saved = point_at_relay(flow.request, port, ex.token)

    async def _count(self, flow: http.HTTPFlow, ib: Inbound, data: dict[str, Any], raw: bytes, model: str) -> None:
        """Token counting: the provider's own count where it has one, else a local estimate."""
        await self._failover(flow, ib, model, data,
                             lambda route, kind, probe: self._count_at(flow, ib, data, raw, model, route, kind, probe))

    async def _count_at(self, flow: http.HTTPFlow, ib: Inbound, data: dict[str, Any], raw: bytes, model: str,
                        route: Route, kind: ProviderKind, probe: bool) -> None:
        p = route.provider
        error = UPSTREAM_FORMATS[kind.wire].error
        fail = lambda status, reason, headers, b: error(p, status, reason, headers, b)  # noqa: E731
        if kind.count_url and kind.wire == ib.api.wire:  # passthrough
            req = CallRequest(kind.count_url(p.base_url, route.model), fail, ib.api.with_model(data, raw, route.model),
                              purpose="count")
            call, resp = await self._call(flow, ib, route, kind, model, req, ", count", probe)
            if resp is not None:
                body, _ = await call.read_json(resp)
                flow.response = http.Response.make(resp.status, body, client_headers(resp.raw_headers))
            return
        try:
            # count_tokens bodies have no max_tokens, which the Messages decoder requires
            decoded = ib.api.decode_request({"max_tokens": 1, **data} if ib.api is ANTHROPIC else data, model)
            decoded.model = route.model
        except cn.ConversionError as e:
            raise GatewayError(400, str(e), code="invalid_request", param=e.param) from None
        if kind.count_url and kind.wire in COUNTERS:
            n = await self._count_upstream(flow, ib, route, kind, model, decoded, fail, probe)
            if n is None:
                return
        else:
            n = estimate(decoded)
            flow.comment = f"-> {p.id} / {route.model} ({route.how}, local token estimate)"
        counted = {"input_tokens": n} if ib.api is ANTHROPIC else {"totalTokens": n}
        flow.response = json_response(200, counted)

    async def _count_upstream(self, flow: http.HTTPFlow, ib: Inbound, route: Route, kind: ProviderKind, model: str,
                              decoded: Any, fail: Any, probe: bool) -> int | None:
        """The provider's count of a converted request (None: the client left)."""
        p = route.provider
        assert kind.count_url is not None  # _count_at asks only kinds with a count endpoint
        encode, count_of = COUNTERS[kind.wire]
        try:
            body = openai_chat.dumps(encode(decoded))
        except cn.ConversionError as e:
            raise GatewayError(400, str(e), code="unsupported_for_provider", param=e.param) from None
        req = CallRequest(kind.count_url(p.base_url, route.model), fail, body, purpose="count")
        call, resp = await self._call(flow, ib, route, kind, model, req, ", count", probe)
        if resp is None:
            return None
        _, answer = await call.read_json(resp)
        try:
            return count_of(answer)
        except ValueError as e:
            raise GatewayError(502, f"Upstream '{p.id}' sent an unusable token count: {e}.",
                               code="upstream_error") from None

    async def _embed(self, flow: http.HTTPFlow, ib: Inbound, data: dict[str, Any], raw: bytes, model: str) -> None:
        """Embeddings, OpenAI or Gemini shape in, an OpenAI-compatible or Gemini provider out."""
        await self._failover(flow, ib, model, data,
                             lambda route, kind, probe: self._embed_at(flow, ib, data, raw, model, route, kind, probe))

    async def _embed_at(self, flow: http.HTTPFlow, ib: Inbound, data: dict[str, Any], raw: bytes, model: str,
                        route: Route, kind: ProviderKind, probe: bool) -> None:
        p = route.provider
        if kind.embed_url is None:
            raise GatewayError(400, f"Provider '{p.id}' ({p.type}) has no embeddings endpoint.",
                               code="unsupported_for_provider", param="model")
        error = UPSTREAM_FORMATS[kind.wire].error
        fail = lambda status, reason, headers, b: error(p, status, reason, headers, b)  # noqa: E731
        url, body, back = self._embed_request(ib, data, raw, model, route, kind)
        call, resp = await self._call(flow, ib, route, kind, model, CallRequest(url, fail, body, purpose="embed"),
                                      ", embeddings", probe)
        if resp is None:
            return
        answer_raw, answer = await call.read_json(resp)
        if back is None:
            out = openai_chat.rename_model(answer_raw, model) if ib.api is not GEMINI else answer_raw
        else:
            try:
                out = openai_chat.dumps(back(answer))
            except (ValueError, TypeError, KeyError) as e:
                raise GatewayError(502, f"Upstream '{p.id}' sent an unusable embeddings response: {e}.",
                                   code="upstream_error") from None
        flow.response = http.Response.make(200, out, {"Content-Type": "application/json"})

    def _embed_request(self, ib: Inbound, data: dict[str, Any], raw: bytes, model: str, route: Route,
                       kind: ProviderKind) -> tuple[str, bytes, Callable[[Any], Any] | None]:
        """The upstream URL and body, and how its answer maps back (None: passed through)."""
        upstream_gemini = kind.wire == "gemini"
        batch = ib.action == "batchEmbedContents"
        assert kind.embed_url is not None  # _embed_at refused the kinds without one
        url = kind.embed_url(route.provider.base_url, route.model)
        try:
            if ib.api is not GEMINI and not upstream_gemini:  # OpenAI both sides: passthrough
                return url, openai_chat.with_model(data, raw, route.model), None
            if ib.api is GEMINI and upstream_gemini:  # Gemini both sides: passthrough
                url = url.rsplit(":", 1)[0] + ":" + (ib.action or "embedContent")
                return url, self._gemini_embed_body(data, raw, model, route.model, batch), None
            if ib.api is GEMINI:
                body = openai_chat.dumps(embeddings.gemini_to_openai_request(data, route.model, batch))
                return url, body, lambda answer: embeddings.openai_to_gemini_response(answer, batch)
            req = embeddings.parse_openai_request(data)
            if len(req.inputs) > GEMINI_BATCH_LIMIT:
                raise GatewayError(400, f"Gemini embeds at most {GEMINI_BATCH_LIMIT} inputs per request; "
                                   f"this one has {len(req.inputs)}.", code="invalid_request", param="input")
            body = openai_chat.dumps(embeddings.openai_to_gemini(req, route.model))
            texts = [t for t in req.inputs if isinstance(t, str)]  # all of them: token arrays were refused
            return url, body, lambda answer: embeddings.gemini_to_openai_response(
                answer, model, req.encoding_format, texts)
        except cn.ConversionError as e:
            raise GatewayError(400, str(e), code="invalid_request", param=e.param) from None

    @staticmethod
    def _gemini_embed_body(data: dict[str, Any], raw: bytes, client_model: str, model: str, batch: bool) -> bytes:
        """A batch names its model in every item, which must match the URL's: renamed with it."""
        items = data.get("requests")
        if not batch or client_model == model or not isinstance(items, list):
            return raw
        renamed = [{**r, "model": gemini.model_path(model)} if isinstance(r, dict) else r for r in items]
        return openai_chat.dumps({**data, "requests": renamed})
