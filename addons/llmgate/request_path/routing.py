"""Model name -> (provider, upstream model name).

Order: alias (one target, or a pool of them) -> forced provider (/{id}/v1/...) ->
"id/model" prefix -> Model-Provider header -> every provider listing the model -> routing.default.
The path and the header may name a provider type instead of an id when exactly one provider has it.
members() gives the whole pool; llmgate/request_path/pool.py orders it per request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llmgate.errors import GatewayError
from llmgate.request_path.model_names import check_model_name
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


def provider_named(settings: GatewaySettings, name: str, where: str) -> ProviderSettings:
    """A provider by id, or by type when it is the only provider of that type (as the seed accepts)."""
    if settings.provider(name) is None:
        of_type = [p for p in settings.providers if p.type == name]
        if len(of_type) == 1:
            name = of_type[0].id
    return provider_by_id(settings, name, where)


def members(
    settings: GatewaySettings,
    models_of: Callable[[ProviderSettings], list[str] | None],
    model: str,
    forced: str | None = None,
    header: str | None = None,
) -> list[Route]:
    """Every (provider, upstream model) that can serve `model`: its pool, in config order."""
    check_model_name(model)  # it may end up in an upstream URL
    names, aliased = _expand(settings, model)
    if forced:
        p = provider_named(settings, forced, "in the request path")
        return [Route(p, names[0].removeprefix(f"{p.id}/"), "path")]
    out: list[Route] = []
    for name in names:
        for r in _serving(settings, models_of, name, header, aliased):
            if all((r.provider.id, r.model) != (o.provider.id, o.model) for o in out):
                out.append(r)
    if not out:
        raise GatewayError(
            404,
            f"The model '{model}' is not served by any configured provider. "
            "GET /v1/models lists the models; use 'provider/model' to pick a provider explicitly, "
            "or set routing.default in the gateway config.",
            code="model_not_found",
            param="model",
        )
    return out


def resolve(
    settings: GatewaySettings,
    models_of: Callable[[ProviderSettings], list[str] | None],
    model: str,
    forced: str | None = None,
    header: str | None = None,
) -> Route:
    """The pool's first member."""
    return members(settings, models_of, model, forced, header)[0]


def _expand(settings: GatewaySettings, model: str, depth: int = 0) -> tuple[list[str], bool]:
    """Alias -> the names it stands for (an alias may name a pool, and other aliases)."""
    aliases = settings.routing.aliases
    if model not in aliases or depth >= MAX_ALIAS_DEPTH:
        return [model], depth > 0
    targets = aliases[model]
    out: list[str] = []
    for t in [targets] if isinstance(targets, str) else targets:
        out += _expand(settings, t, depth + 1)[0]
    return out, True


def _serving(settings: GatewaySettings, models_of: Callable[[ProviderSettings], list[str] | None], name: str,
             header: str | None, aliased: bool) -> list[Route]:
    head, sep, rest = name.partition("/")
    if sep and rest and settings.provider(head) is not None:
        return [Route(provider_by_id(settings, head, "model prefix"), rest, "alias" if aliased else "prefix")]
    if header:
        return [Route(provider_named(settings, header, "Model-Provider header"), name, "header")]
    listed = [Route(p, name, "alias" if aliased else "listed")
              for p in settings.providers if p.enabled and name in (models_of(p) or ())]
    if listed:
        return listed
    if settings.routing.default:
        return [Route(provider_by_id(settings, settings.routing.default, "routing.default"), name, "default")]
    return []
