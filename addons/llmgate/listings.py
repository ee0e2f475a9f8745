"""The answers about models: GET /health, the model lists and single models, in each API's shape."""

from __future__ import annotations

import asyncio
from urllib.parse import unquote

from mitmproxy import http

from converters import anthropic, gemini, openai_chat
from llmgate.catalog import ModelCatalog
from llmgate.client_apis import ANTHROPIC, GEMINI
from llmgate.errors import GatewayError
from llmgate.inbound import Inbound
from llmgate.responses import json_response
from llmgate.routing import provider_by_id
from llmgate.settings import GatewaySettings, ProviderSettings

DISCOVERY_WAIT = 5.0  # seconds a request waits for model discovery


async def refresh(catalog: ModelCatalog, providers: list[ProviderSettings]) -> None:
    """Discover the models of providers whose list is stale, waiting at most DISCOVERY_WAIT."""
    stale = [p for p in providers if p.enabled and catalog.stale(p)]
    if stale:
        await asyncio.wait([asyncio.ensure_future(catalog.refresh(p)) for p in stale], timeout=DISCOVERY_WAIT)


async def health(catalog: ModelCatalog, settings: GatewaySettings) -> http.Response:
    await refresh(catalog, settings.providers)
    report, routable = [], 0
    for p in settings.providers:
        st = catalog.status(p)
        models = catalog.models(p)
        ok = p.enabled and (bool(models) or (p.id == settings.routing.default and "error" not in st))
        routable += ok
        state = "disabled" if not p.enabled else "ok" if ok else "unavailable" if "error" in st else "unknown"
        report.append({"id": p.id, "type": p.type, "state": state, **st})
    body = {"status": "ok" if routable else "unavailable", "routable_providers": routable, "providers": report}
    return json_response(200 if routable else 503, body)


async def listed(catalog: ModelCatalog, settings: GatewaySettings, forced: str | None) -> dict[str, str]:
    """Every model the gateway can route -> the provider (or "alias") serving it."""
    providers = [provider_by_id(settings, forced, "in the request path")] if forced else settings.providers
    await refresh(catalog, providers)
    seen: dict[str, str] = {}
    for p in providers:
        if p.enabled:
            for m in catalog.models(p) or ():
                seen.setdefault(m, p.id)
    if not forced:
        for alias, targets in settings.routing.aliases.items():
            target = targets if isinstance(targets, str) else targets[0]
            seen.setdefault(alias, target.partition("/")[0] if "/" in target else "alias")
    return seen


async def model_list(catalog: ModelCatalog, settings: GatewaySettings, ib: Inbound) -> http.Response:
    seen = await listed(catalog, settings, ib.forced)
    if ib.api is ANTHROPIC:
        return json_response(200, anthropic.model_list(list(seen)))
    if ib.api is GEMINI:
        return json_response(200, gemini.model_list(list(seen)))
    return json_response(200, openai_chat.model_list(list(seen.items())))


async def one_model(catalog: ModelCatalog, settings: GatewaySettings, ib: Inbound) -> http.Response:
    name = unquote(ib.model or "")
    if ib.api is GEMINI:
        name = name.removeprefix("models/")
    seen = await listed(catalog, settings, ib.forced)
    if name not in seen:
        raise GatewayError(404, f"The model '{name}' does not exist or is not served by this gateway. "
                           "GET /v1/models lists the models.", code="model_not_found", param="model")
    if ib.api is ANTHROPIC:
        return json_response(200, anthropic.model_entry(name))
    if ib.api is GEMINI:
        return json_response(200, gemini.model_entry(name))
    return json_response(200, openai_chat.model_entry(name, seen[name]))
