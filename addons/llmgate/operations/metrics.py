"""Prometheus metrics (GET /metrics): requests, errors, latency and time-to-first-token
histograms and tokens per provider / model / account, and the pools' state at scrape time.

Labels carry configured names only (provider ids, the upstream model names they serve,
account files), never what a client typed, so their number stays bounded.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

TOKEN_KINDS = ("prompt", "completion", "cached", "reasoning")
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self, rt: Any):
        self.registry = CollectorRegistry()
        labels = ("provider", "model", "account")
        self.requests = Counter("llmgate_requests", "Client requests answered", (*labels, "inbound", "status"),
                                registry=self.registry)
        self.errors = Counter("llmgate_errors", "Client requests answered with an error", (*labels, "code"),
                              registry=self.registry)
        self.latency = Histogram("llmgate_request_seconds", "Time to the last byte", labels, buckets=BUCKETS,
                                 registry=self.registry)
        self.ttft = Histogram("llmgate_time_to_first_token_seconds", "Time to the first streamed byte", labels,
                              buckets=BUCKETS, registry=self.registry)
        self.tokens = Counter("llmgate_tokens", "Tokens reported by providers", (*labels, "kind"),
                              registry=self.registry)
        self.registry.register(_PoolCollector(rt))
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def observe(self, row: dict[str, Any]) -> None:
        provider = row.get("provider") or "-"
        model = row.get("upstream_model") or "-"
        account = row.get("account") or ""
        series = (provider, model, account)
        self._child(self.requests, (*series, row.get("inbound") or "-", str(row.get("status")))).inc()
        if row.get("error"):
            self._child(self.errors, (*series, row["error"])).inc()
        if row.get("latency_ms") is not None:
            self._child(self.latency, series).observe(row["latency_ms"] / 1000)
        if row.get("stream") and row.get("ttft_ms") is not None:
            self._child(self.ttft, series).observe(row["ttft_ms"] / 1000)
        for kind in TOKEN_KINDS:
            n = row.get(f"{kind}_tokens")
            if n:
                self._child(self.tokens, (*series, kind)).inc(n)

    def _child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        """metric.labels(*labels), remembered: prometheus_client's lookup (label checks, a lock)
        showed in the per-request profile. The label values are configured names (bounded)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PoolCollector:
    """Cooling members and requests in flight, read at scrape time."""

    def __init__(self, rt: Any):
        self.rt = rt

    def collect(self):
        cooling = GaugeMetricFamily("llmgate_cooldown_seconds", "Seconds until a cooling member is tried again",
                                    labels=("provider", "account", "model"))
        now = time.time()
        for (provider, account, model), c in list(self.rt.pool.cooldowns.items()):
            if c.until > now:
                cooling.add_metric((provider, account, model), c.until - now)
        inflight = GaugeMetricFamily("llmgate_in_flight", "Requests in flight", labels=("provider", "account"))
        for (provider, account), n in list(self.rt.pool.inflight.items()):
            inflight.add_metric((provider, account), n)
        yield cooling
        yield inflight
        up = self.rt.state.connected() if self.rt.state is not None else None
        if up is not None:  # server.state names a Redis
            shared = GaugeMetricFamily("llmgate_shared_state_up", "1 while the shared state (Redis) is reachable")
            shared.add_metric((), 1.0 if up else 0.0)
            yield shared
