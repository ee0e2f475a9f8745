"""Addon: makes both sides of every exchange inspectable in mitmweb and in saved flows.

The client's flow keeps the client's request (with its key masked, listed at the address the
client used rather than the placeholder reverse target) and what the client received, streams
included. Each provider call (failed-over attempts included) is added as a flow of its own: the
request the gateway really sent (credentials redacted) and the raw upstream answer. Both sides
link up: a provider flow's metadata llmgate.upstream_of names its client flow, the client flow's
llmgate.provider_flows lists its provider flows, and all their comments end in one marker
(`#x` + the client flow id's first 8 hex digits) that mitmweb's search finds (`~comment #x...`).
"""

from __future__ import annotations

import asyncio
import logging
import time

from mitmproxy import connection, ctx, http
from mitmproxy.flow import Error
from mitmproxy.net.http.url import parse_authority
from mitmproxy.proxy.layers.http import (
    HttpErrorHook,
    HttpRequestHeadersHook,
    HttpResponseHook,
)

from llmgate.addons.redaction import SECRET_HEADERS, Redactor, scrub_message
from llmgate.request_path.inbound import INTERCEPT_MARK
from llmgate.request_path.relay import Capture, restore
from llmgate.runtime import UPSTREAM_MARK, Exchange, Runtime

log = logging.getLogger("llmgate")

REDACTED = "[redacted]"
PROVIDER_FLOWS = "llmgate.provider_flows"  # client flow metadata: the ids of its provider flows
COMMENT_COLUMN = "comment"  # mitmweb's flow list column showing route, attempts and tokens


def marker(client: http.HTTPFlow) -> str:
    """The comment marker one exchange's flows share (flow ids are uuid4: hex up front)."""
    return "#x" + client.id[:8]


def show_client_address(flow: http.HTTPFlow) -> None:
    """List the flow at the address the client used (Host / :authority, else the listen
    address), not the reverse target it never went to. Only once answered: it changes no reply."""
    if INTERCEPT_MARK in flow.metadata:
        return  # regular mode (addons/intercept): the URL is the vendor's own
    try:
        host, port = parse_authority(flow.request.host_header or "", check=True)
    except ValueError:
        host, port = "", None
    listen = flow.client_conn.sockname or ("", 0)
    host, port = (host, port or listen[1]) if host else listen[:2]  # no port in Host: the one it connected to
    if not host or not port:
        return
    d = flow.request.data
    d.scheme = b"https" if flow.client_conn.tls_established else b"http"
    d.host, d.port = host, port


def redacted_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [
        (k.encode(), (REDACTED if k.lower() in SECRET_HEADERS else v).encode("utf-8", "surrogateescape"))
        for k, v in headers.items()
    ]


def upstream_flow(client: http.HTTPFlow, ex: Exchange, error: str | None, r: Redactor,
                  attempt: int = 1, attempts: int = 1) -> http.HTTPFlow:
    """The provider side of one attempt; every configured secret scrubbed (an upstream may echo its key)."""
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
        f.response = http.Response.make(ex.status, b"", list(ex.response_headers))
        f.response.content = body  # as received (decoded, scrubbed next); Content-Length follows unless chunked
        scrub_message(r, f.response)
        f.response.timestamp_start = ex.first_byte or ex.started
        f.response.timestamp_end = time.time()
    meta = f.metadata["llmgate"] = {"provider": ex.provider, "upstream_model": ex.model, "route": ex.how,
                                    "attempt": attempt, "attempts": attempts}
    why = ""
    if ex.failure is not None:  # failed over: why, and whether the member now cools down
        meta["failed_over"] = failure = {**ex.failure, "error": r.text(ex.failure["error"])}
        error = error or failure["error"]
        cooling = failure["cooling_s"]
        why = f", failed {failure['status']}, " + (f"cooling {cooling} s" if cooling is not None else "not cooled down")
    if error and f.response is None:
        f.error = Error(r.text(error))
    f.metadata[UPSTREAM_MARK] = client.id
    if ex.pipe is not None:
        meta["stream"] = ex.pipe.outcome
    note = capture_note(ex.pipe.upstream) if ex.pipe is not None and f.response is not None else None
    if note:
        meta["capture"] = note
    of = f" (attempt {attempt} of {attempts}{why})" if attempts > 1 or why else ""
    f.comment = f"upstream of {marker(client)}: {ex.provider} / {ex.model}{of}" + (f" [{note}]" if note else "")
    f.live = False
    return f


def capture_note(c: Capture) -> str | None:
    """What a provider-side stream body shown lacks, if anything."""
    if not c.keep:
        return f"stream body not kept ({c.size} bytes): provider-side flows were off when it began"
    if c.truncated:
        return f"stream body shown up to {len(c.bytes())} of {c.size} bytes"
    return None


class FlowRecorder:
    def __init__(self, rt: Runtime):
        self.rt = rt
        self._tasks: set[asyncio.Task] = set()
        self._seen: bool | None = None
        rt.provider_flows = self._watched  # a stream keeps its provider-side body only then

    def load(self, loader):
        loader.add_option(
            "gateway_upstream_flows", str, "auto",
            "Add a flow for each provider-side exchange: on, off, or auto (on when flows are shown "
            "or saved: mitmweb, -w, or mitmdump printing flows). Costs about a quarter of peak throughput.",
            choices=["auto", "on", "off"],
        )

    def running(self) -> None:
        # mitmweb hides the comment column (route, attempts, tokens, marker): show it unless the user chose columns
        o = ctx.options
        if "web_columns" in o and o.web_columns == o.default("web_columns"):
            o.update(web_columns=[*o.web_columns, COMMENT_COLUMN])

    def update(self, flows: list) -> None:
        # ClientPlayback just queued these client flows for replay (is_replay set, answer
        # cleared): their comment and metadata described the old answer; the replay writes its own
        for f in flows:
            if (isinstance(f, http.HTTPFlow) and f.is_replay == "request" and f.response is None and not f.live
                    and UPSTREAM_MARK not in f.metadata):
                f.comment = ""
                for key in [k for k in f.metadata if k.startswith("llmgate")]:
                    del f.metadata[key]

    def configure(self, updated: set[str]) -> None:
        self._seen = None  # options changed: look again

    def _flows_seen(self) -> bool:
        """Whether anything shows or saves flows (mitmweb, -w, mitmdump printing them): looked up
        once per options change, not per flow."""
        if self._seen is None:
            o = ctx.options
            self._seen = bool(o.save_stream_file) or getattr(o, "flow_detail", 0) > 0 or \
                ctx.master.addons.get("view") is not None
        return self._seen

    def _watched(self) -> bool:
        mode = ctx.options.gateway_upstream_flows
        return mode == "on" if mode != "auto" else self._flows_seen()

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow, None)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow, flow.error.msg if flow.error else "error")

    def _finish(self, flow: http.HTTPFlow, error: str | None) -> None:
        if UPSTREAM_MARK in flow.metadata:
            return
        ex = self.rt.exchanges.pop(flow.id, None)
        if ex is not None and ex.relay_saved is not None:
            restore(flow.request, ex.relay_saved)  # it pointed at the relay: show what the client sent
        if self._flows_seen():
            show_client_address(flow)
        if ex is None:
            return
        r = self.rt.secrets.current()
        scrub_message(r, flow.request)  # for the record: the exchange is over
        if ex.pipe is not None:
            if flow.response is not None:
                flow.response.raw_content = ex.pipe.client.bytes()
            flow.metadata["llmgate"]["stream"] = ex.pipe.outcome
        if not self._watched():
            return
        calls = (*ex.earlier, ex)
        ups = [upstream_flow(flow, e, None if e.failure else error, r, i, len(calls))
               for i, e in enumerate(calls, 1)]
        flow.metadata[PROVIDER_FLOWS] = [f.id for f in ups]
        flow.comment = f"{flow.comment} {marker(flow)}".strip()
        for up in ups:
            task = asyncio.get_running_loop().create_task(self._emit(up))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _emit(self, f: http.HTTPFlow) -> None:
        # the usual lifecycle, so the view, the dumper and `-w` treat it like any flow
        addons = ctx.master.addons
        await addons.trigger_event(HttpRequestHeadersHook(f))
        await addons.handle_lifecycle(HttpResponseHook(f) if f.response else HttpErrorHook(f))
