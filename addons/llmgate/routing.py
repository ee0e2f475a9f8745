"""Model name -> (provider, upstream model name).

Order: alias -> forced provider (/{id}/v1/...) -> "id/model" prefix ->
Model-Provider header -> the first provider listing the model -> routing.default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from llmgate.errors import GatewayError
from llmgate.settings import GatewaySettings, ProviderSettings

MAX_ALIAS_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Route:
    provider: ProviderSettings
    model: str  # the name the upstream gets
    how: str  # why this provider: alias | path | prefix | header | listed | default


def provider_by_id(settings: GatewaySettings, pid: str, where: str) -> ProviderSettings:
    p = settings.provider(pid)
    if p is None:
        known = ", ".join(x.id for x in settings.providers) or "none configured"
        raise GatewayError(404, f"Unknown provider '{pid}' ({where}). Providers: {known}.", code="provider_not_found")
    if not p.enabled:
        raise GatewayError(404, f"Provider '{pid}' is disabled.", code="provider_disabled")
    return p


def resolve(
    settings: GatewaySettings,
    models_of: Callable[[ProviderSettings], list[str] | None],
    model: str,
    forced: str | None = None,
    header: str | None = None,
) -> Route:
    name, aliased = model, False
    for _ in range(MAX_ALIAS_DEPTH):
        if name not in settings.routing.aliases:
            break
        name, aliased = settings.routing.aliases[name], True

    if forced:
        p = provider_by_id(settings, forced, "in the request path")
        return Route(p, name.removeprefix(f"{p.id}/"), "path")

    head, sep, rest = name.partition("/")
    if sep and rest and settings.provider(head) is not None:
        return Route(provider_by_id(settings, head, "model prefix"), rest, "alias" if aliased else "prefix")

    if header:
        return Route(provider_by_id(settings, header, "Model-Provider header"), name, "header")

    for p in settings.providers:
        if p.enabled and name in (models_of(p) or ()):
            return Route(p, name, "alias" if aliased else "listed")

    if settings.routing.default:
        return Route(provider_by_id(settings, settings.routing.default, "routing.default"), name, "default")

    raise GatewayError(
        404,
        f"The model '{model}' is not served by any configured provider. "
        "GET /v1/models lists the models; use 'provider/model' to pick a provider explicitly, "
        "or set routing.default in the gateway config.",
        code="model_not_found",
        param="model",
    )
