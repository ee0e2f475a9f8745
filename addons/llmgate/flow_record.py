"""Addon: makes both sides of every exchange inspectable in mitmweb and in saved flows.

The client's flow keeps the client's request (with its key masked) and what the
client received, streams included. The provider side, the request the gateway
really sent (credentials redacted) and the raw upstream answer, is added as a
second flow, marked with the metadata key llmgate.upstream_of.
"""

from __future__ import annotations

import asyncio
import logging
import time

from mitmproxy import connection, ctx, http
from mitmproxy.flow import Error
from mitmproxy.proxy.layers.http import (
    HttpErrorHook,
    HttpRequestHeadersHook,
    HttpResponseHook,
)

from llmgate.redaction import SECRET_HEADERS, Redactor, scrub_message
from llmgate.relay import restore
from llmgate.runtime import UPSTREAM_MARK, Exchange, Runtime

log = logging.getLogger("llmgate")

REDACTED = "[redacted]"


def redacted_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [
        (k.encode(), (REDACTED if k.lower() in SECRET_HEADERS else v).encode("utf-8", "surrogateescape"))
        for k, v in headers.items()
    ]


def upstream_flow(client: http.HTTPFlow, ex: Exchange, error: str | None, r: Redactor) -> http.HTTPFlow:
    """The provider side; every configured secret scrubbed (an upstream may echo its key)."""
    up = ex.upstream
    req = http.Request.make(up.method, r.text(up.url), up.body, redacted_headers(up.headers))
    scrub_message(r, req)
    if "key" in req.query:
        req.query["key"] = REDACTED
    req.timestamp_start = req.timestamp_end = ex.started
    server = connection.Server(address=(req.host, req.port))
    f = http.HTTPFlow(client.client_conn, server)
    f.request = req
    if ex.status is not None:
        body = ex.pipe.upstream.bytes() if ex.pipe else (ex.response_body or b"")
        f.response = http.Response.make(
            ex.status, b"", list(ex.response_headers)
        )
        f.response.raw_content = body  # as received (but for secrets); headers untouched
        scrub_message(r, f.response)
        f.response.timestamp_start = ex.first_byte or ex.started
        f.response.timestamp_end = time.time()
        if ex.pipe and ex.pipe.upstream.truncated:
            error = error or f"stream capture truncated after {len(body)} of {ex.pipe.upstream.size} bytes"
    if error and f.response is None:
        f.error = Error(r.text(error))
    f.metadata[UPSTREAM_MARK] = client.id
    f.metadata["llmgate"] = {"provider": ex.provider, "upstream_model": ex.model, "route": ex.how}
    if ex.pipe is not None:
        f.metadata["llmgate"]["stream"] = ex.pipe.outcome
    f.comment = f"upstream of {client.id[:8]}: {ex.provider} / {ex.model}"
    f.live = False
    return f


class FlowRecorder:
    def __init__(self, rt: Runtime):
        self.rt = rt
        self._tasks: set[asyncio.Task] = set()

    def load(self, loader):
        loader.add_option(
            "gateway_upstream_flows", str, "auto",
            "Add a flow for each provider-side exchange: on, off, or auto (on when flows are shown "
            "or saved: mitmweb, -w, or mitmdump printing flows). Costs about a quarter of peak throughput.",
            choices=["auto", "on", "off"],
        )

    def _watched(self) -> bool:
        mode = ctx.options.gateway_upstream_flows
        if mode != "auto":
            return mode == "on"
        o = ctx.options
        return bool(o.save_stream_file) or getattr(o, "flow_detail", 0) > 0 or ctx.master.addons.get("view") is not None

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow, None)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow, flow.error.msg if flow.error else "error")

    def _finish(self, flow: http.HTTPFlow, error: str | None) -> None:
        if UPSTREAM_MARK in flow.metadata:
            return
        ex = self.rt.exchanges.pop(flow.id, None)
        if ex is None:
            return
        r = self.rt.secrets.current()
        if ex.relay_saved is not None:
            restore(flow.request, ex.relay_saved)  # it pointed at the relay: show what the client sent
        scrub_message(r, flow.request)  # for the record: the exchange is over
        if ex.pipe is not None:
            if flow.response is not None:
                flow.response.raw_content = ex.pipe.client.bytes()
            flow.metadata["llmgate"]["stream"] = ex.pipe.outcome
        if not self._watched():
            return
        up = upstream_flow(flow, ex, error, r)
        task = asyncio.get_running_loop().create_task(self._emit(up))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _emit(self, f: http.HTTPFlow) -> None:
        # the usual lifecycle, so the view, the dumper and `-w` treat it like any flow
        addons = ctx.master.addons
        await addons.trigger_event(HttpRequestHeadersHook(f))
        await addons.handle_lifecycle(HttpResponseHook(f) if f.response else HttpErrorHook(f))
