"""State the addons share: the loaded config, upstream I/O, and the exchanges in flight."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from llmgate.addons.redaction import Secrets
from llmgate.operations.metrics import Metrics
from llmgate.operations.request_log import RequestLog
from llmgate.request_path.catalog import ModelCatalog
from llmgate.request_path.pool import PoolState
from llmgate.request_path.provider_call import Exchange, ProviderCall
from llmgate.request_path.relay import StreamRelay
from llmgate.request_path.routing import Route
from llmgate.request_path.upstream import Upstream
from llmgate.request_path.wire import ReasoningMemory
from llmgate.settings import GatewaySettings
from llmgate.state import SharedState, open_state

STATE_GRACE = 300.0  # seconds a replaced state file stays open (a failover in progress may still write to it)
UPSTREAM_MARK = "llmgate.upstream_of"  # metadata key on the flows that show the provider side
__all__ = ["UPSTREAM_MARK", "Exchange", "Runtime"]  # Exchange lives with the call that fills it


class Runtime:
    def __init__(self) -> None:
        self.settings = GatewaySettings()
        self.upstream = Upstream()
        self.catalog = ModelCatalog()
        self.catalog.call = lambda p, kind, req: ProviderCall(self, Route(p, "", "models"), kind, req)
        self.relay = StreamRelay()
        self.exchanges: dict[str, Exchange] = {}
        self.reasoning = ReasoningMemory()
        self.secrets = Secrets(self)  # what redaction scrubs from bodies
        self.catalog.scrub = lambda body: self.secrets.current().bytes(body)
        self.pool = PoolState()
        self.state: SharedState | None = None  # what processes share (llmgate/state)
        self._state_where: tuple[str, str | None] | None = None
        self.request_log: RequestLog | None = None
        self.metrics = Metrics(self)
        self.started = time.time()
        self.claude_code_shims: dict = {}  # (command, concurrency) -> ClaudeCodeShim, started on first use
        self.reload: Callable[[], None] = lambda: None  # re-read the config now (config_watch sets it)
        self.first_run: Any = None  # what `auto: true` found (config_watch sets it; listings.health shows it)
        self.provider_flows: Callable[[], bool] = lambda: True  # are provider-side flows recorded (flow_record sets it)
        self._accounts: dict[str, tuple[object, object]] = {}

    def open_state(self, path: str, url: str | None = None) -> None:
        """Keep shared state (cooldowns, ...) in this SQLite file, and in Redis at `url` when given;
        the pool's cooldowns are loaded from there. A new path or URL moves them."""
        path = os.path.abspath(os.path.expanduser(path))
        if (path, url) == self._state_where:
            return
        old = self.pool
        self.state = open_state(path, url)
        self.pool = PoolState(self.state)
        self.pool.inflight = old.inflight
        self.state.attach(self.pool)
        self.reasoning = self.state.reasoning(self.reasoning)
        if old.store is not None:
            old.store.stop_sharing()
            # a request still failing over may hold the old pool: close its file once none can
            closer = threading.Timer(STATE_GRACE, old.store.close)
            closer.daemon = True
            closer.start()
        self._state_where = (path, url)

    def open_request_log(self, path: str | None, retention_days: float, database: str | None = None) -> None:
        """Log requests to this SQLite file, or to PostgreSQL spilling to it (None: no request log)."""
        path = os.path.abspath(os.path.expanduser(path)) if path else None
        old = self.request_log
        if (old is not None and path == str(old.path) and old.retention == retention_days * 86400
                and old.database == database):
            return
        self.request_log = RequestLog(path, retention_days, database) if path else None
        if old is not None:
            old.close()

    def account_set(self, p, kind):
        """The accounts of a subscription provider entry, rebuilt when its settings change."""
        cached = self._accounts.get(p.id)
        if cached is None or cached[0] is not p:
            cached = self._accounts[p.id] = (p, kind.accounts(p, self).share(self))
        return cached[1]
