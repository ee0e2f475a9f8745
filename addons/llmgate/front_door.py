"""Addon: answers every request itself: the client APIs' routes, routing, upstream I/O.

Nothing is ever forwarded to mitmproxy's reverse target. Non-streamed answers
are set as the flow's response; streams are handed to the loopback relay.
Routes are listed in llmgate/inbound.py.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable
from urllib.parse import unquote

from mitmproxy import http

from converters import anthropic, embeddings, gemini, openai_chat
from converters import canonical as cn
from converters.token_estimate import estimate
from llmgate import listings
from llmgate.client_apis import ANTHROPIC, GEMINI
from llmgate.errors import GatewayError
from llmgate.inbound import ROUTES_HINT, Inbound, inbound_of
from llmgate.providers import PROVIDER_TYPES
from llmgate.providers.base import ProviderKind
from llmgate.relay import Pipe, point_at_relay
from llmgate.responses import error_response, json_response
from llmgate.routing import Route, resolve
from llmgate.runtime import UPSTREAM_MARK, Exchange, Runtime
from llmgate.settings import GatewaySettings
from llmgate.translate import UPSTREAM_FORMATS, plan
from llmgate.upstream import MAX_ERROR_BODY, UpstreamRequest

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


def _parse_body(raw: bytes) -> dict[str, Any]:
    try:
        return openai_chat.parse_json_object(raw)
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

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or UPSTREAM_MARK in flow.metadata:
            return
        inbound = inbound_of(flow, self.rt.settings)
        try:
            await self._dispatch(flow, inbound)
        except GatewayError as e:
            array = inbound.action == "streamGenerateContent" and flow.request.query.get("alt") != "sse"
            flow.response = error_response(e, inbound.api, array)
        except Exception:
            log.exception("gateway failed on %s %s", flow.request.method, flow.request.path)
            flow.response = error_response(GatewayError(
                500, "Internal gateway error; the gateway log has the details.", code="internal_error"), inbound.api)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        ex = self.rt.exchanges.get(flow.id)
        if ex is not None and ex.pipe is not None and flow.response is not None:
            flow.response.stream = True  # the relay sends converted events: pass them straight on

    def error(self, flow: http.HTTPFlow) -> None:
        ex = self.rt.exchanges.get(flow.id)
        if ex is not None and ex.pipe is not None:  # the client left: stop the upstream generating
            self.rt.relay.discard(ex.token)
            ex.pipe.abandon("client-gone")

    async def _dispatch(self, flow: http.HTTPFlow, ib: Inbound) -> None:
        settings = self.rt.settings
        if ib.endpoint == "unknown":
            raise GatewayError(404, f"Unknown route: {flow.request.method} {flow.request.path.split('?', 1)[0]}. "
                               + ROUTES_HINT, code="unknown_route")
        self._allow(flow.request.method, ib.method)
        raw = flow.request.content or b""
        catalog = self.rt.catalog
        if ib.endpoint == "health":
            flow.response = await listings.health(catalog, settings)
        elif ib.endpoint == "models":
            flow.response = await listings.model_list(catalog, settings, ib)
        elif ib.endpoint == "model":
            flow.response = await listings.one_model(catalog, settings, ib)
        elif ib.endpoint == "chat":
            try:
                data, req = openai_chat.parse_request(raw)
            except openai_chat.RequestError as e:
                raise GatewayError(400, str(e), code="invalid_request", param=e.param) from None
            await self._generate(flow, ib, data, raw, req.model, bool(req.stream))
        elif ib.endpoint in ("messages", "responses"):
            data = _parse_body(raw)
            await self._generate(flow, ib, data, raw, _model_field(data), _stream_field(data))
        elif ib.endpoint == "count_tokens":
            data = _parse_body(raw)
            await self._count(flow, ib, data, raw, _model_field(data))
        elif ib.endpoint == "gemini":
            data = _parse_body(raw)
            model = unquote(ib.model or "").removeprefix("models/")
            if ib.action == "countTokens":
                await self._count(flow, ib, gemini.count_body_of(data), raw, model)
            elif ib.action in ("embedContent", "batchEmbedContents"):
                await self._embed(flow, ib, data, raw, model)
            elif ib.action in ("generateContent", "streamGenerateContent"):
                stream = ib.action == "streamGenerateContent"
                await self._generate(flow, ib, data, raw, model, stream, sse=flow.request.query.get("alt") == "sse")
        elif ib.endpoint == "embeddings":
            data = _parse_body(raw)
            await self._embed(flow, ib, data, raw, _model_field(data))

    @staticmethod
    def _allow(method: str, allowed: str) -> None:
        if method != allowed:
            raise GatewayError(405, f"Method {method} is not allowed here; use {allowed}.",
                               code="method_not_allowed", headers={"Allow": allowed})

    async def _route(self, settings: GatewaySettings, model: str, forced: str | None, header: str | None) -> Route:
        models_of = self.rt.catalog.models
        try:
            return resolve(settings, models_of, model, forced, header)
        except GatewayError as e:
            if e.code != "model_not_found":
                raise
        # maybe a provider that discovers its models serves it: look (again) and retry
        await listings.refresh(self.rt.catalog, settings.providers)
        return resolve(settings, models_of, model, forced, header)

    async def _open(self, flow: http.HTTPFlow, ib: Inbound, model: str) -> tuple[Route, ProviderKind]:
        settings = self.rt.settings
        route = await self._route(settings, model, ib.forced, flow.request.headers.get("model-provider"))
        return route, PROVIDER_TYPES[route.provider.type]

    async def _send(self, flow: http.HTTPFlow, ib: Inbound, route: Route, kind: ProviderKind, model: str,
                    url: str, body: bytes, accept: str, error: Callable[[int, str, Any, bytes], GatewayError],
                    note: str, purpose: str = "generate"):
        """POST to the provider; answers the upstream response (2xx) or raises its error.
        None if the client left while we waited.

        Subscription kinds: the account puts its credentials (refreshed when due) and envelope
        on the request; a 401 refreshes and retries once; a host that fails (connect error,
        timeout, 5xx) gives way to the kind's fallback hosts. purpose: generate | stream | count | embed."""
        p = route.provider
        headers = {
            "Content-Type": "application/json",
            "Accept": accept,
            "Accept-Encoding": "identity",  # streams are rewritten chunk by chunk: no gzip
            **kind.default_headers,
        }
        if kind.wire == ib.api.wire:
            for name in ib.api.pass_headers:
                if name in flow.request.headers:
                    headers[name] = flow.request.headers[name]
        headers.update(kind.auth_headers(p.api_key) if p.api_key else {})
        accounts = self.rt.account_set(p, kind) if kind.accounts else None
        account = accounts.pick() if accounts else None
        path = url[len(p.base_url):] if url.startswith(p.base_url) else None
        bases = [p.base_url] + (list(p.fallback_urls) or ([] if "base_url" in p.model_fields_set
                                                          else list(kind.fallback_urls)))
        if path is None:
            bases = bases[:1]
        ex = Exchange(p.id, route.model, model, route.how, UpstreamRequest("POST", url, headers, body),
                      started=time.time())
        self.rt.exchanges[flow.id] = ex
        flow.metadata["llmgate"] = {"provider": p.id, "upstream_model": route.model, "route": route.how}
        converted = "" if kind.wire == ib.api.wire else f", {ib.api.wire}->{kind.wire}"
        flow.comment = f"-> {p.id} / {route.model} ({route.how}{converted}{note})"

        timeouts = p.timeouts or self.rt.settings.server.timeouts
        who = f"'{p.id}'"
        refreshed = False
        i = 0
        while True:
            up = UpstreamRequest("POST", url if path is None else bases[i] + path, dict(headers), body)
            last_host = i == len(bases) - 1
            if account is not None:
                try:
                    await account.prepare(up, route.model, purpose, force=refreshed)
                except GatewayError as e:
                    if e.code == "provider_login_required" and accounts is not None:
                        account, refreshed = accounts.pick(), False  # this one needs a login: the next
                        continue
                    if e.code == "provider_setup_failed" and e.status == 502 and not last_host:
                        i += 1  # this host could not even set up the account
                        continue
                    raise
            up.headers.update(p.headers)  # the entry's own headers have the last word
            ex.upstream = up
            try:
                resp = await self.rt.upstream.send(up, timeouts, who)
            except GatewayError as e:
                if last_host or e.status not in (502, 504):
                    raise
                log.warning("provider %s: %s failed (%s); trying %s", p.id, bases[i], e.message, bases[i + 1])
                i += 1
                continue
            if flow.error:  # the client left while we waited
                resp.close()
                return None
            if resp.status == 401 and account is not None and not refreshed:
                resp.close()  # the token may have been revoked early: refresh and try once more
                refreshed = True
                continue
            if resp.status >= 500 and not last_host:
                resp.close()
                log.warning("provider %s: %s answered %d; trying %s", p.id, bases[i], resp.status, bases[i + 1])
                i += 1
                continue
            break
        if account is not None:
            flow.comment = flow.comment[:-1] + f", account {account.name})"
        ex.first_byte = time.time()
        ex.status = resp.status
        ex.response_headers = resp.raw_headers
        if resp.status >= 400:
            ex.response_body = await self.rt.upstream.read_body(resp, who, limit=MAX_ERROR_BODY)
            specific = account.error(resp.status, resp.headers, ex.response_body) if account is not None else None
            raise specific or error(resp.status, resp.reason or "", resp.headers, ex.response_body)
        return resp

    async def _read_json(self, flow: http.HTTPFlow, resp: Any, route: Route) -> tuple[bytes, Any]:
        ex = self.rt.exchanges[flow.id]
        ex.response_body = await self.rt.upstream.read_body(resp, f"'{route.provider.id}'")
        try:
            return ex.response_body, json.loads(ex.response_body)
        except ValueError:
            raise GatewayError(502, f"Upstream '{route.provider.id}' sent a response that is not valid JSON.",
                               code="upstream_error") from None

    async def _generate(self, flow: http.HTTPFlow, ib: Inbound, data: dict[str, Any], raw: bytes,
                        model: str, stream: bool, sse: bool = True) -> None:
        route, kind = await self._open(flow, ib, model)
        p = route.provider
        pl = plan(ib.api, kind, p, route.model, model, data, raw, stream, self.rt.reasoning, sse)
        resp = await self._send(flow, ib, route, kind, model, pl.url, pl.body, pl.accept, pl.error, "",
                                "stream" if stream else "generate")
        if resp is None:
            return
        out_headers = client_headers(resp.raw_headers)
        if stream and resp.content_type == "text/event-stream":
            if not sse:  # a Gemini client that asked for one JSON array
                out_headers = [(k, v) for k, v in out_headers if k.lower() != b"content-type"]
                out_headers.append((b"content-type", b"application/json; charset=UTF-8"))
            ex = self.rt.exchanges[flow.id]
            read_timeout = (p.timeouts or self.rt.settings.server.timeouts).read
            pipe = Pipe(resp, pl.transform(), out_headers, f"'{p.id}'", read_timeout)
            port = await self.rt.relay.ensure_started()
            ex.pipe, ex.token = pipe, self.rt.relay.register(pipe)
            ex.relay_saved = point_at_relay(flow.request, port, ex.token)
            return
        ex = self.rt.exchanges[flow.id]
        ex.response_body = await self.rt.upstream.read_body(resp, f"'{p.id}'")
        try:
            client_body = pl.response(ex.response_body)
        except ValueError:
            raise GatewayError(502, f"Upstream '{p.id}' sent a response that is not valid JSON.",
                               code="upstream_error") from None
        flow.response = http.Response.make(resp.status, client_body, out_headers)

    async def _count(self, flow: http.HTTPFlow, ib: Inbound, data: dict[str, Any], raw: bytes, model: str) -> None:
        """Token counting: the provider's own count where it has one, else a local estimate."""
        route, kind = await self._open(flow, ib, model)
        p = route.provider
        error = UPSTREAM_FORMATS[kind.wire].error
        fail = lambda status, reason, headers, b: error(p, status, reason, headers, b)
        if kind.count_url and kind.wire == ib.api.wire:  # passthrough
            body = ib.api.with_model(data, raw, route.model)
            resp = await self._send(flow, ib, route, kind, model, kind.count_url(p.base_url, route.model), body,
                                    "application/json", fail, ", count", "count")
            if resp is not None:
                body, _ = await self._read_json(flow, resp, route)
                flow.response = http.Response.make(resp.status, body, client_headers(resp.raw_headers))
            return
        try:
            # count_tokens bodies have no max_tokens, which the Messages decoder requires
            req = ib.api.decode_request({"max_tokens": 1, **data} if ib.api is ANTHROPIC else data, model)
            req.model = route.model
        except cn.ConversionError as e:
            raise GatewayError(400, str(e), code="invalid_request", param=e.param) from None
        if kind.count_url and kind.wire in COUNTERS:
            encode, count_of = COUNTERS[kind.wire]
            try:
                body = openai_chat.dumps(encode(req))
            except cn.ConversionError as e:
                raise GatewayError(400, str(e), code="unsupported_for_provider", param=e.param) from None
            resp = await self._send(flow, ib, route, kind, model, kind.count_url(p.base_url, route.model), body,
                                    "application/json", fail, ", count", "count")
            if resp is None:
                return
            _, answer = await self._read_json(flow, resp, route)
            try:
                n = count_of(answer)
            except ValueError as e:
                raise GatewayError(502, f"Upstream '{p.id}' sent an unusable token count: {e}.",
                                   code="upstream_error") from None
        else:
            n = estimate(req)
            flow.comment = f"-> {p.id} / {route.model} ({route.how}, local token estimate)"
        counted = {"input_tokens": n} if ib.api is ANTHROPIC else {"totalTokens": n}
        flow.response = json_response(200, counted)

    async def _embed(self, flow: http.HTTPFlow, ib: Inbound, data: dict[str, Any], raw: bytes, model: str) -> None:
        """Embeddings, OpenAI or Gemini shape in, an OpenAI-compatible or Gemini provider out."""
        route, kind = await self._open(flow, ib, model)
        p = route.provider
        if kind.embed_url is None:
            raise GatewayError(400, f"Provider '{p.id}' ({p.type}) has no embeddings endpoint.",
                               code="unsupported_for_provider", param="model")
        error = UPSTREAM_FORMATS[kind.wire].error
        fail = lambda status, reason, headers, b: error(p, status, reason, headers, b)  # noqa: E731
        upstream_gemini = kind.wire == "gemini"
        batch = ib.action == "batchEmbedContents"
        url = kind.embed_url(p.base_url, route.model)
        try:
            if ib.api is not GEMINI and not upstream_gemini:  # OpenAI both sides: passthrough
                body, back = openai_chat.with_model(data, raw, route.model), None
            elif ib.api is GEMINI and upstream_gemini:  # Gemini both sides: passthrough
                url = url.rsplit(":", 1)[0] + ":" + (ib.action or "embedContent")
                body, back = self._gemini_embed_body(data, raw, model, route.model, batch), None
            elif ib.api is GEMINI:
                body = openai_chat.dumps(embeddings.gemini_to_openai_request(data, route.model, batch))
                back = lambda answer: embeddings.openai_to_gemini_response(answer, batch)  # noqa: E731
            else:
                req = embeddings.parse_openai_request(data)
                if len(req.inputs) > GEMINI_BATCH_LIMIT:
                    raise GatewayError(400, f"Gemini embeds at most {GEMINI_BATCH_LIMIT} inputs per request; "
                                       f"this one has {len(req.inputs)}.", code="invalid_request", param="input")
                body = openai_chat.dumps(embeddings.openai_to_gemini(req, route.model))
                back = lambda answer: embeddings.gemini_to_openai_response(  # noqa: E731
                    answer, model, req.encoding_format, list(req.inputs))
        except cn.ConversionError as e:
            raise GatewayError(400, str(e), code="invalid_request", param=e.param) from None
        resp = await self._send(flow, ib, route, kind, model, url, body, "application/json", fail, ", embeddings", "embed")
        if resp is None:
            return
        answer_raw, answer = await self._read_json(flow, resp, route)
        if back is None:
            out = openai_chat.rename_model(answer_raw, model) if ib.api is not GEMINI else answer_raw
        else:
            try:
                out = openai_chat.dumps(back(answer))
            except (ValueError, TypeError, KeyError) as e:
                raise GatewayError(502, f"Upstream '{p.id}' sent an unusable embeddings response: {e}.",
                                   code="upstream_error") from None
        flow.response = http.Response.make(200, out, {"Content-Type": "application/json"})

    @staticmethod
    def _gemini_embed_body(data: dict[str, Any], raw: bytes, client_model: str, model: str, batch: bool) -> bytes:
        """A batch names its model in every item, which must match the URL's: renamed with it."""
        items = data.get("requests")
        if not batch or client_model == model or not isinstance(items, list):
            return raw
        renamed = [{**r, "model": gemini.model_path(model)} if isinstance(r, dict) else r for r in items]
        return openai_chat.dumps({**data, "requests": renamed})
