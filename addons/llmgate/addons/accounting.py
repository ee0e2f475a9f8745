"""Addon: every client request into the request log and the metrics, once it has ended.

Runs before flow_record (which restores relayed requests and drops the exchange). The row is
built from the flow, its exchange and what the client received; the SQLite write happens in
the request log's own thread.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from mitmproxy import http

from converters import usage
from llmgate.addons.client_auth import KEY_ID
from llmgate.runtime import UPSTREAM_MARK, Runtime

INBOUND = "llmgate_in"  # flow.metadata: {"inbound", "endpoint", "model", "stream"}, set by front_door
LOGGED = frozenset(("chat", "responses", "messages", "gemini", "embeddings", "count_tokens"))
# a stream's last event in each client format: OpenAI chat [DONE], Anthropic message_stop, Responses'
# terminal response.* events, a Gemini chunk carrying finishReason (a key, never escaped text)
TERMINAL = re.compile(rb'^data: ?\[DONE\]|^event: ?(message_stop|response\.(completed|incomplete|failed))\b'
                      rb'|"finishReason"\s*:', re.M)


def terminal_sent(sent: bytes) -> bool:
    """Whether a stream's final event reached the client: if it then hangs up (Codex closes
    at response.completed), the exchange still succeeded."""
    return TERMINAL.search(sent) is not None


def error_code(body: bytes | None) -> str | None:
    """The code of an error answer in any of the client formats."""
    try:
        err = json.loads(body or b"").get("error")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None
    if not isinstance(err, dict):
        return None
    code = err.get("code") if isinstance(err.get("code"), str) else None
    return code or err.get("type") or (err.get("status") or "").lower() or None


class Accounting:
    def __init__(self, rt: Runtime):
        self.rt = rt
        self.subscribers: list[Callable[[dict[str, Any]], None]] = []  # each logged row, e.g. the console's feed

    def response(self, flow: http.HTTPFlow) -> None:
        self._record(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._record(flow)

    def _record(self, flow: http.HTTPFlow) -> None:
        info = flow.metadata.get(INBOUND)
        if UPSTREAM_MARK in flow.metadata or not info or info.get("endpoint") not in LOGGED:
            return
        row = self.row(flow, info)
        notes = ["replay"] if flow.is_replay == "request" else []  # for mitmweb's flow list, beside the route
        if row["attempts"] > 1:
            notes.append(f"{row['attempts']} attempts")
        if row.get("prompt_tokens") is not None:
            notes.append(f"{row['prompt_tokens']}+{row['completion_tokens']} tokens")
        if notes:
            flow.comment = f"{flow.comment} [{', '.join(notes)}]".strip()
        if self.rt.request_log is not None:
            self.rt.request_log.add(row)
        self.rt.metrics.observe(row)
        for publish in self.subscribers:
            publish(row)

    def row(self, flow: http.HTTPFlow, info: dict[str, Any]) -> dict[str, Any]:
        ex = self.rt.exchanges.get(flow.id)
        routed = flow.metadata.get("llmgate") or {}
        start = flow.request.timestamp_start
        status = flow.response.status_code if flow.response is not None else 499  # the client left
        pipe = ex.pipe if ex is not None else None
        streamed = pipe is not None
        sent: bytes | None
        if pipe is not None:
            first = pipe.first_sent
            sent = pipe.client.bytes()
            tokens = usage.of_stream(sent)
            if pipe.outcome == "client-gone" and terminal_sent(sent):
                pipe.outcome = "complete"  # the answer was whole; what the client did next is its own
            outcome = pipe.outcome
            error = None if outcome == "complete" else outcome.replace("-", "_")
        else:
            first = flow.response.timestamp_start if flow.response is not None else None
            sent = flow.response.content if flow.response is not None else None
            count = usage.of_stream if info.get("stream") else usage.of_body  # a passed-on stream (addons/intercept)
            tokens = count(sent) if status < 400 and sent else None
            error = error_code(sent) if status >= 400 else None
        if flow.response is None and streamed and error is None:
            status = 200  # the relay's answer, whole, though mitmproxy dropped the flow's response
        elif flow.response is None:
            error = "client_gone"
        row: dict[str, Any] = {
            "ts": start, "key_id": flow.metadata.get(KEY_ID), "inbound": info.get("inbound"),
            "endpoint": info.get("endpoint"), "model": info.get("model"), "provider": routed.get("provider"),
            "account": ex.account if ex is not None and ex.account else routed.get("account"),
            "upstream_model": routed.get("upstream_model"),
            "attempts": len(ex.earlier) + 1 if ex is not None else 0,  # members called, failed-over ones included
            "status": status, "stream": int(bool(info.get("stream"))),
            "latency_ms": round((time.time() - start) * 1000, 2),
            "ttft_ms": round((first - start) * 1000, 2) if first else None,
            "error": error,
        }
        if tokens is not None:
            row.update(prompt_tokens=tokens.prompt, completion_tokens=tokens.completion,
                       cached_tokens=tokens.cached, reasoning_tokens=tokens.reasoning)
        settings = self.rt.settings.log
        if settings.capture_bodies:
            cap = settings.max_body_bytes
            original = ex.relay_saved[6] if ex is not None and ex.relay_saved else flow.request.content
            row["request_body"] = self.rt.secrets.current().bytes(original or b"")[:cap]
            row["response_body"] = (sent or b"")[:cap]
        return row
