"""The answers about models: GET /health, the model lists and single models, in each API's shape."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from mitmproxy import http

from converters import anthropic, gemini, openai_chat
from llmgate.errors import GatewayError
from llmgate.providers import PROVIDER_TYPES
from llmgate.request_path.answers import json_response
from llmgate.request_path.catalog import ModelCatalog
from llmgate.request_path.client_apis import ANTHROPIC, GEMINI
from llmgate.request_path.inbound import Inbound
from llmgate.request_path.model_names import check_model_name
from llmgate.request_path.routing import Route, members, provider_named
from llmgate.settings import GatewaySettings, ProviderSettings

DISCOVERY_WAIT = 5.0  # seconds a request waits for model discovery


async def refresh(catalog: ModelCatalog, providers: list[ProviderSettings]) -> None:
    """Discover the models of providers whose list is stale, waiting at most DISCOVERY_WAIT."""
    stale = [p for p in providers if p.enabled and catalog.stale(p)]
    if stale:
        await asyncio.wait([asyncio.ensure_future(catalog.refresh(p)) for p in stale], timeout=DISCOVERY_WAIT)


async def health(rt: Any, settings: GatewaySettings, per_model: bool = False) -> http.Response:
    """Providers (reachable? how many models?) and, per model, its pool: accounts configured,
    accounts routable now, and when each cooling one returns. 503 only when nothing is routable.
    per_model (/provider_health, as the seed names it): the pools only."""
    catalog = rt.catalog
    await refresh(catalog, settings.providers)
    found = getattr(rt, "first_run", None)  # what `auto: true` found (llmgate/operations/first_run.py)
    report = []
    for p in settings.providers:
        st = catalog.status(p)
        models = catalog.models(p)
        ok = p.enabled and (bool(models) or (p.id == settings.routing.default and "error" not in st))
        kind = PROVIDER_TYPES[p.type]
        if ok and kind.accounts:  # a subscription entry with no usable account cannot serve
            accounts = rt.account_set(p, kind).accounts
            if not any(a.usable() for a in accounts):
                ok, st = False, {**st, "error": "; ".join(f"{a.name}: {a.needs_login}" for a in accounts)
                                 or "no credentials file found"}
        state = "disabled" if not p.enabled else "ok" if ok else "unavailable" if "error" in st else "unknown"
        auto = found and found.source_of(p.id)
        report.append({"id": p.id, "type": p.type, "state": state, **st, **({"auto_detected": auto} if auto else {})})
    pools = {}
    for name in await listed(catalog, settings, None):
        try:
            routes = members(settings, catalog.models, name)
        except GatewayError:
            continue
        pools[name] = _pool_health(rt, routes)
    routable = sum(1 for v in pools.values() if v["routable"])
    if per_model:
        return json_response(200 if routable else 503, {"routable_models": routable, "models": pools})
    body = {"status": "ok" if routable else "unavailable", "routable_models": routable, "providers": report,
            "models": pools, **({"auto": found.health()} if found else {})}
    return json_response(200 if routable else 503, body)


def _pool_health(rt: Any, routes: list[Route]) -> dict[str, Any]:
    configured, routable, cooling = 0, 0, []
    for r in routes:
        p = r.provider
        kind = PROVIDER_TYPES[p.type]
        accounts = [(a.name, a.usable()) for a in rt.account_set(p, kind).accounts] if kind.accounts else [("", True)]
        for name, usable in accounts:
            configured += 1
            c = rt.pool.cooling(p.id, name, r.model)
            if c is not None:
                cooling.append({"provider": p.id, "account": name or None, "model": r.model,
                                "until": datetime.fromtimestamp(c.until, UTC).isoformat(timespec="seconds"),
                                "reason": c.reason})
            elif usable:
                routable += 1
    return {"configured": configured, "routable": routable, "cooling": cooling}


async def listed(catalog: ModelCatalog, settings: GatewaySettings, forced: str | None,
                 prefixed: bool = False) -> dict[str, str]:
    """Every model the gateway can route -> the provider (or "alias") serving it; `prefixed`: also
    "provider/model" for each (routing.list_prefixed), which routes by its prefix."""
    providers = [provider_named(settings, forced, "in the request path")] if forced else settings.providers
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
    if prefixed and not forced:
        for p in providers:
            if p.enabled:
                for m in catalog.models(p) or ():
                    seen.setdefault(f"{p.id}/{m}", p.id)
    return seen


async def model_list(catalog: ModelCatalog, settings: GatewaySettings, ib: Inbound) -> http.Response:
    seen = await listed(catalog, settings, ib.forced, settings.routing.list_prefixed)
    if ib.api is ANTHROPIC:
        return json_response(200, anthropic.model_list(list(seen)))
    if ib.api is GEMINI:
        return json_response(200, gemini.model_list(list(seen)))
    return json_response(200, openai_chat.model_list(list(seen.items())))


async def one_model(catalog: ModelCatalog, settings: GatewaySettings, ib: Inbound) -> http.Response:
    name = unquote(ib.model or "")
    if ib.api is GEMINI:
        name = name.removeprefix("models/")
    check_model_name(name)  # as for generation: 400 rather than 404 for a name no provider could have
    seen = await listed(catalog, settings, ib.forced, settings.routing.list_prefixed)
    if name not in seen:
        raise GatewayError(404, f"The model '{name}' does not exist or is not served by this gateway. "
                           "GET /v1/models lists the models.", code="model_not_found", param="model")
    if ib.api is ANTHROPIC:
        return json_response(200, anthropic.model_entry(name))
    if ib.api is GEMINI:
        return json_response(200, gemini.model_entry(name))
    return json_response(200, openai_chat.model_entry(name, seen[name]))
