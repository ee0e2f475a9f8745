"""Which models each provider serves: its `models:` list, or discovered from its models endpoint."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from llmgate.errors import GatewayError
from llmgate.providers import PROVIDER_TYPES
from llmgate.request_path.provider_call import CallRequest
from llmgate.settings import ProviderSettings, Timeouts

log = logging.getLogger(__name__)

FRESH_FOR = 600.0  # seconds a discovered list is trusted
RETRY_AFTER = 30.0  # seconds before a failed discovery is tried again on demand
DISCOVERY_TIMEOUTS = Timeouts(connect=5, read=15, total=60)
MAX_MODEL_LIST = 16 << 20  # bytes; a module constant until server.limits exists in settings


@dataclass
class _Entry:
    models: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)  # per model, for kinds that keep facts (model_info)
    fetched_at: float = 0.0
    error: str | None = None
    failed_at: float = 0.0
    task: asyncio.Task | None = field(default=None, repr=False)


class ModelCatalog:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self.call: Any = None  # (provider, kind, CallRequest) -> a ProviderCall (runtime sets it)
        self.scrub: Any = lambda body: body  # secrets out of an answer that is logged (runtime sets it)

    def models(self, p: ProviderSettings) -> list[str] | None:
        """The provider's models as known now (None: not known yet)."""
        if p.models is not None:
            return p.models
        kind = PROVIDER_TYPES[p.type]
        if kind.models_path is None and kind.default_models:
            return list(kind.default_models)  # the list the official CLI has built in
        entry = self._entries.get(p.id)
        if (entry is None or entry.models is None) and kind.default_models:
            return list(kind.default_models)  # not discovered (yet): the known ones meanwhile
        return entry.models if entry else None

    def info(self, p: ProviderSettings, model: str) -> Any:
        """What the provider's models endpoint said of one model (None: nothing known)."""
        entry = self._entries.get(p.id)
        return entry.info.get(model) if entry is not None else None

    def status(self, p: ProviderSettings) -> dict:
        if p.models is not None:
            return {"models": len(p.models), "source": "config"}
        kind = PROVIDER_TYPES[p.type]
        if kind.models_path is None and kind.default_models:
            return {"models": len(kind.default_models), "source": "built-in"}
        entry = self._entries.get(p.id) or _Entry()
        out: dict = {"models": len(entry.models) if entry.models is not None else None, "source": "discovered"}
        if entry.error:
            out["error"] = entry.error
        return out

    def forget(self, keep: set[str]) -> None:
        for pid in list(self._entries):
            if pid not in keep:
                del self._entries[pid]

    def stale(self, p: ProviderSettings) -> bool:
        kind = PROVIDER_TYPES[p.type]  # a `models:` list still leaves model_info's facts to discover
        if (p.models is not None and kind.model_info is None) or kind.models_path is None:
            return False
        e = self._entries.get(p.id)
        now = time.monotonic()
        if e is None:
            return True
        if e.error and now - e.failed_at < RETRY_AFTER:
            return False
        return e.models is None or now - e.fetched_at > FRESH_FOR or bool(e.error)

    async def refresh(self, p: ProviderSettings) -> None:
        """Discover the provider's models; concurrent callers share one fetch."""
        e = self._entries.setdefault(p.id, _Entry())
        if e.task is None or e.task.done():
            e.task = asyncio.ensure_future(self._fetch(p, e))
        await asyncio.shield(e.task)

    async def learned(self, p: ProviderSettings, wait: float) -> None:
        """For a kind whose models endpoint says how each model is served (model_info, Copilot): wait
        at most `wait` s for its first answer, so that a request made as the gateway starts (or as the
        provider is added) is not sent to the wrong endpoint. A list that is only old is refreshed
        in the background meanwhile."""
        if not self.stale(p):
            return
        e = self._entries.get(p.id)
        pending = asyncio.ensure_future(self.refresh(p))
        if e is None or e.models is None:
            await asyncio.wait([pending], timeout=wait)

    async def _fetch(self, p: ProviderSettings, e: _Entry) -> None:
        kind = PROVIDER_TYPES[p.type]
        req = CallRequest(p.base_url + (kind.models_path or ""), self._error, method="GET", purpose="models",
                          timeouts=DISCOVERY_TIMEOUTS)
        call = None
        try:
            call = self.call(p, kind, req)
            resp = await call.send()
            body = await call.read(resp, MAX_MODEL_LIST)
            answer = json.loads(body)
            e.models = kind.parse_models(answer)
            e.info = kind.model_info(answer) if kind.model_info is not None else {}
            e.fetched_at, e.error = time.monotonic(), None
            log.info("provider %s: discovered %d models", p.id, len(e.models))
        except (GatewayError, ValueError) as err:
            e.error, e.failed_at = f"model discovery failed: {err}", time.monotonic()
            log.warning("provider %s: %s", p.id, e.error)
        finally:
            if call is not None:
                call.release()

    def _error(self, status: int, reason: str, headers: Any, body: bytes) -> GatewayError:
        return GatewayError(status, f"models endpoint answered {status}: {self.scrub(body)[:200]!r}")
