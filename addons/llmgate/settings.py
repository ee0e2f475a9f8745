"""proxy.yaml: schema, ${VAR} interpolation and error messages that name the field and line."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from llmgate.providers import PROVIDER_TYPES
from llmgate.providers.base import ProviderKind
from llmgate.request_path.upstream import check_proxy


class ConfigError(Exception):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Timeouts(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True)  # hashable: the upstream caches per value

    connect: float = Field(10.0, gt=0, description="seconds to open the upstream connection")
    read: float = Field(
        600.0, gt=0, description="seconds to wait for response headers, and between stream chunks"
    )
    total: float = Field(
        600.0, gt=0, description="seconds for a whole non-streamed answer, from sending to its last byte"
    )


class ClientKey(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
    key: str


class Limits(_Strict):
    """Bounds on what a client may send, and for how long it may hold a connection."""

    max_body: int = Field(32 << 20, ge=1024, description="bytes of a request body as sent")
    max_decompressed: int = Field(64 << 20, ge=1024, description="bytes of a request body once decompressed")
    max_depth: int = Field(128, ge=8, le=10000, description="nesting levels of a JSON request body")
    max_values: int = Field(2_000_000, ge=1000, description="values and keys in a JSON request body (each "
                            "becomes a Python object: memory, not bytes, is what they cost)")
    max_header_bytes: int = Field(64 << 10, ge=4096, description="bytes of a request's head (request line and headers)")
    idle_timeout: float = Field(75.0, gt=0, description="seconds a connection may stay silent between requests")
    header_timeout: float = Field(30.0, gt=0, description="seconds to send a request's headers, from its first byte")
    body_timeout: float = Field(120.0, gt=0, description="seconds to send a request's body, after its headers")
    max_connections: int | None = Field(
        None, ge=1, description="open client connections at most (default: from the process's file limit)")


PROXY_HELP = ('outbound proxy: "http://[user:pass@]host:port", "socks5://...", "env" (HTTPS_PROXY, HTTP_PROXY, '
              'ALL_PROXY, NO_PROXY) or "none" (direct)')


class CorsSettings(_Strict):
    """Which web pages' origins may call the client APIs from a browser (never /admin, /ui, /metrics)."""

    origins: list[str] = Field(description="origins as a browser sends them (https://app.example.com), or '*'")
    allow_headers: list[str] | None = Field(
        None, description="request headers a page may send (default: whatever its preflight asks for)")
    expose_headers: list[str] = Field(default_factory=list, description="response headers a page may read")
    max_age: int = Field(600, ge=0, description="seconds a browser may cache a preflight answer")

    @field_validator("origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        return [o if o == "*" else _origin(o) for o in v]

    @field_validator("allow_headers", "expose_headers")
    @classmethod
    def _header_names(cls, v: list[str] | None) -> list[str] | None:
        for name in v or ():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
        return v


def _origin(o: str) -> str:
    """scheme://host[:port], as browsers serialise it (lower case, no default port, no path)."""
    try:
        u = urlsplit(o.strip())
        port = u.port
    except ValueError:
        u, port = None, None
    if (u is None or u.scheme not in ("http", "https") or not u.hostname or u.path not in ("", "/")
            or u.query or u.fragment or u.username or u.password):
        raise ValueError(f"{o!r} is not an origin (scheme://host[:port], e.g. https://app.example.com)")
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    default = {"http": 80, "https": 443}[u.scheme]
    return f"{u.scheme}://{host}" + (f":{port}" if port and port != default else "")


class ServerSettings(_Strict):
    api_keys: list[str | ClientKey] = Field(default_factory=list, description="a key, or {name, key}")
    admin_keys: list[str] = Field(default_factory=list, description="keys for /admin/...; none: loopback only")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="host names clients use for this gateway, beside its own address and "
        "localhost (checked when no keys are set: DNS rebinding)")
    open_networks: list[IPvAnyNetwork] = Field(
        default_factory=list, description="while api_keys is empty, the client networks (CIDR, e.g. 10.0.0.0/8) "
        "served without a key besides this machine; others are refused (403)")
    state_file: str | None = Field(None, description="SQLite file for cooldowns (default: beside proxy.yaml)")
    state: str | None = Field(None, description="redis://[:password@]host:port/db (or rediss://): state shared by "
                              "gateway hosts; default: this host's state_file")
    timeouts: Timeouts = Field(default_factory=Timeouts)
    limits: Limits = Field(default_factory=Limits)
    cors: CorsSettings | None = Field(None, description="browser access to the client APIs (off by default)")
    proxy: str | None = Field(None, description=PROXY_HELP + "; default: direct")

    _proxy = field_validator("proxy")(check_proxy)

    @field_validator("state")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("state must be a redis://, rediss:// or unix:// URL")
        return url

    @field_validator("api_keys")
    @classmethod
    def _no_empty_keys(cls, keys: list[str | ClientKey]) -> list[str | ClientKey]:
        if any(not (k.key if isinstance(k, ClientKey) else k) for k in keys):
            raise ValueError("an API key is empty (is its environment variable set?)")
        return keys

    def key_ids(self) -> list[tuple[str, str]]:
        """(key, the id the request log shows for it: its name, else a hash prefix, never the key)."""
        out = []
        for k in self.api_keys:
            if isinstance(k, ClientKey):
                out.append((k.key, k.name))
            else:
                out.append((k, "key-" + hashlib.sha256(k.encode()).hexdigest()[:8]))
        return out


_UNSAFE_URL = re.compile(r"[\s\x00-\x1f\x7f]")
# an absolute http(s) URL with an ASCII host (docs/admin-openapi.yaml's HttpUrl is the same, minus [IPv6])
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
_HTTP_URL = re.compile(r"https?://(?:[A-Za-z0-9._~%!$&'()*+,;=:-]*@)?"
                       r"(?:[A-Za-z0-9._~%!$&'()*+,;=-]+|\[[0-9A-Fa-f:.]+\])"
                       rf"(?::{_PORT}?)?(?:[/?#][^\s\x00-\x1f\x7f]*)?")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: what a header name may be
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # a header value may hold tabs, not other controls


class ThinkingLimits(_Strict):
    """What a model takes for reasoning: a budget range, or levels (Gemini 3 / OpenAI efforts)."""
    min_budget: int | None = Field(None, ge=0)
    max_budget: int | None = Field(None, ge=0)
    can_disable: bool | None = Field(None, description="budget 0 (thinking off) is accepted")
    levels: list[Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]] | None = None


# Fields only some kinds take: each kind names its own (ProviderKind.config_fields). On an entry of
# another kind they are an error in proxy.yaml, and read as None in code.
KIND_FIELDS = {
    "credentials": "credentials file, or a glob naming one file per account",
    "token_url": "OAuth token endpoint (default: the official one)",
    "project": "Code Assist project id (default: discovered)",
    "command": "the local CLI to run (default: claude on PATH)",
}


class ProviderSettings(_Strict):
    """The fields every kind takes; each kind's model (PROVIDER_MODELS) adds its own."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    type: str
    base_url: str = Field(None, validate_default=True)  # type: ignore[assignment]  # required unless the type has a default
    api_key: str | None = None
    fallback_urls: list[str] = Field(default_factory=list, description="hosts tried after base_url fails")
    weight: int = Field(1, ge=1, description="share of requests under the weighted strategy")
    max_concurrency: int | None = Field(None, ge=1, description="requests in flight per account at most")
    models: list[str] | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeouts: Timeouts | None = None
    enabled: bool = True
    proxy: str | None = Field(None, description=PROXY_HELP + "; default: server.proxy")
    thinking: dict[str, ThinkingLimits] | None = Field(
        None, description="model name or glob -> thinking limits, over the built-in table (converters/thinking.py)")

    def __getattr__(self, name: str) -> Any:
        if name in KIND_FIELDS:  # another kind's field: this kind does not take it
            return None
        return super().__getattr__(name)  # type: ignore[misc]

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v not in PROVIDER_TYPES:
            raise ValueError(f"unknown provider type {v!r}; known: {', '.join(sorted(PROVIDER_TYPES))}")
        return v

    @field_validator("base_url", mode="before")
    @classmethod
    def _base_url(cls, v: Any, info: ValidationInfo) -> Any:
        kind = PROVIDER_TYPES.get(info.data.get("type") or "")
        if v is None and kind is not None and kind.default_base_url:
            return kind.default_base_url
        if v is None:
            raise ValueError("Field required")
        return cls._http_url(v) if isinstance(v, str) else v

    @field_validator("token_url", check_fields=False)  # on the kinds that take it
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if _UNSAFE_URL.search(v):  # the HTTP client would refuse it on every request
            raise ValueError("must not contain spaces, line breaks or control characters")
        if not _HTTP_URL.fullmatch(v):
            raise ValueError("must be an http:// or https:// URL with a host (and a port up to 65535)")
        try:
            urlsplit(v)  # checks what the pattern does not: an [IPv6] host
        except ValueError as e:
            raise ValueError(f"is not a valid URL ({e})") from None
        return v.rstrip("/")

    _proxy = field_validator("proxy")(check_proxy)

    @field_validator("fallback_urls")
    @classmethod
    def _http_urls(cls, v: list[str]) -> list[str]:
        if any(not u for u in v):
            raise ValueError("must be http:// or https:// URLs")
        return [cls._http_url(u) or "" for u in v]

    @field_validator("headers")
    @classmethod
    def _header_fields(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if _CONTROL.search(value):  # CR/LF would split the request; never echo the value (a secret?)
                raise ValueError(f"the value of {name} must not contain line breaks or control characters")
        return v


def _kind_model(type_: str, kind: ProviderKind) -> type[ProviderSettings]:
    name = "".join(w.capitalize() for w in type_.split("-")) + "Settings"
    own: dict[str, Any] = {f: (str | None, Field(None, description=KIND_FIELDS[f])) for f in kind.config_fields}
    return create_model(name, __base__=ProviderSettings, __module__=__name__, type=(Literal[type_], ...), **own)


PROVIDER_MODELS: dict[str, type[ProviderSettings]] = {t: _kind_model(t, k) for t, k in PROVIDER_TYPES.items()}
globals().update({m.__name__: m for m in PROVIDER_MODELS.values()})  # importable by name, as pickle wants
# one entry of `providers:`, validated by the model its `type` names (built at run time: to a type
# checker, every kind's model is a ProviderSettings)
if TYPE_CHECKING:
    ProviderEntry = ProviderSettings
else:
    ProviderEntry = Annotated[Union[tuple(PROVIDER_MODELS.values())], Field(discriminator="type")]  # noqa: UP007
PROVIDER_ENTRY: TypeAdapter[ProviderSettings] = TypeAdapter(ProviderEntry)


def entry_error(err: ErrorDetails) -> tuple[tuple, str]:
    """A provider entry's validation error as (location in the entry, message). The union puts the
    entry's type into the location (providers.0.openai.command): it goes, and names the type in
    an unknown-field message; a missing or unknown type is an error of `type`."""
    loc, msg = tuple(err["loc"]), err["msg"].removeprefix("Value error, ")
    if err["type"] == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag")
        return ("type",), f"unknown provider type {tag!r}; known: {', '.join(sorted(PROVIDER_TYPES))}"
    if err["type"] == "union_tag_not_found":
        return ("type",), "Field required"
    kind = loc[0] if loc and loc[0] in PROVIDER_TYPES else None
    loc = loc[1:] if kind else loc
    if err["type"] == "extra_forbidden":
        msg = f"unknown field for type {kind}" if kind else "unknown field"
    return loc, msg


Strategy = Literal["round-robin", "least-busy", "fill-first", "weighted"]
AFFINITY = r"^(header:[A-Za-z0-9-]+|prompt_cache_key)$"


class ModelRouting(_Strict):
    """Pool settings of one model (or alias) name."""

    strategy: Strategy | None = None
    affinity: str | None = Field(None, pattern=AFFINITY)
    fallbacks: list[str] = Field(default_factory=list, description="models tried when the whole pool is unavailable")


class RoutingSettings(_Strict):
    default: str | None = None
    # an alias names one target or a pool of them ("provider/model" or a model name)
    aliases: dict[str, str | list[str]] = Field(default_factory=dict)
    strategy: Strategy = "round-robin"
    affinity: str | None = Field(None, pattern=AFFINITY, description="header:<name> or prompt_cache_key")
    models: dict[str, ModelRouting] = Field(default_factory=dict)
    list_prefixed: bool = Field(False, description="GET /v1/models also lists each provider's models as id/model")
    max_attempts: int = Field(3, ge=1, description="upstream attempts per request before giving up")
    deadline: float = Field(120.0, gt=0, description="seconds all attempts together may take before the first byte")

    def for_model(self, name: str) -> ModelRouting:
        return self.models.get(name) or ModelRouting()


class LogSettings(_Strict):
    enabled: bool = True
    file: str | None = Field(None, description="SQLite request log (default: llmgate-requests.sqlite beside "
                             "proxy.yaml)")
    retention_days: float = Field(30, gt=0)
    capture_bodies: bool = Field(False, description="keep request and response bodies (size-capped)")
    max_body_bytes: int = Field(65536, ge=0)
    database: str | None = Field(None, description="postgresql://user:password@host:port/db: the request log in "
                                 "PostgreSQL, shared by gateway hosts (default: the SQLite file)")

    @field_validator("database")
    @classmethod
    def _postgres_url(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).scheme not in ("postgresql", "postgres"):
            raise ValueError("database must be a postgresql:// URL")
        return url


# the vendor API hosts the official coding CLIs call (intercept mode)
VENDOR_HOSTS = ("api.anthropic.com", "api.openai.com", "chatgpt.com", "generativelanguage.googleapis.com",
                "cloudcode-pa.googleapis.com", "portal.qwen.ai", "dashscope.aliyuncs.com",
                "dashscope-intl.aliyuncs.com")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


class InterceptRule(_Strict):
    """Which intercepted calls the gateway answers itself; the first rule that matches wins."""

    host: str | None = Field(None, description="one of intercept.hosts (default: any)")
    model: str | None = Field(None, min_length=1, description="glob on the model the call names, as "
                              "claude-*haiku* (default: any)")
    route: str | None = Field(None, min_length=1, description="'gateway': the gateway's routing by the call's "
                              "model; else a target as in routing.aliases (provider/model, a model, an alias)")
    provider: str | None = Field(None, min_length=1, description="a provider id: the call goes there, its model "
                                 "name as sent")

    @model_validator(mode="after")
    def _one_target(self) -> InterceptRule:
        if (self.route is None) == (self.provider is None):
            raise ValueError("give one of 'route' (gateway, or a routing target) and 'provider'")
        return self


class InterceptSettings(_Strict):
    """Intercept mode (mitmproxy's regular mode): the CLIs' calls to these hosts are shown and logged,
    and those a rule matches are answered by the gateway; the rest reach the vendor unchanged."""

    hosts: list[str] = Field(default_factory=lambda: list(VENDOR_HOSTS),
                             description="vendor API hosts whose TLS is intercepted; every other host is "
                             "tunnelled untouched")
    rules: list[InterceptRule] = Field(default_factory=list, description="calls the gateway routes")

    @field_validator("hosts")
    @classmethod
    def _hostnames(cls, hosts: list[str]) -> list[str]:
        out = []
        for h in hosts:
            name = h.strip().lower()
            if "/" in name or ":" in name:
                raise ValueError(f"{h!r}: write the bare host name, as api.anthropic.com (no scheme, port or path)")
            if not _HOSTNAME.match(name):
                raise ValueError(f"{h!r} is not a host name")
            out.append(name)
        if not out:
            raise ValueError("no hosts: list the vendor API hosts to intercept")
        return out

    @model_validator(mode="after")
    def _rule_hosts(self) -> InterceptSettings:
        for i, r in enumerate(self.rules):
            if r.host is not None and r.host.lower() not in self.hosts:
                raise ValueError(f"rules[{i}].host: {r.host!r} is not in intercept.hosts ({', '.join(self.hosts)})")
            r.host = r.host.lower() if r.host else None
        return self


class GatewaySettings(_Strict):
    auto: bool = Field(False, description="also serve the providers found on this machine: API keys in the "
                       "environment, local servers, coding-CLI logins (llmgate/operations/first_run.py)")
    server: ServerSettings = Field(default_factory=ServerSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    providers: list[ProviderEntry] = Field(default_factory=list)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    intercept: InterceptSettings | None = Field(None, description="intercept mode: the official CLIs' calls to "
                                                "their vendors, watched and routed by rules")

    @model_validator(mode="after")
    def _references(self) -> GatewaySettings:
        ids = [p.id for p in self.providers]
        dupes = {i for i in ids if ids.count(i) > 1}
        if dupes:
            raise ValueError(f"duplicate provider id(s): {', '.join(sorted(dupes))}")
        if self.routing.default and self.routing.default not in ids:
            raise ValueError(f"routing.default names unknown provider {self.routing.default!r}")
        for alias, targets in self.routing.aliases.items():
            for target in [targets] if isinstance(targets, str) else targets:
                self._check_target(alias, target, ids)
            if not targets:
                raise ValueError(f"routing.aliases.{alias}: no target")
        if self.server.cors and "*" in self.server.cors.origins and not self.server.api_keys:
            raise ValueError("server.cors.origins: '*' needs server.api_keys (else any web page could use "
                             "this gateway's providers)")
        if self.intercept is not None:
            self._check_intercept(ids)
        return self

    def _check_intercept(self, ids: list[str]) -> None:
        for i, r in enumerate(self.intercept.rules if self.intercept else ()):
            if r.provider and r.provider not in ids and not (self.auto and r.provider in _auto_ids()):
                raise ValueError(f"intercept.rules.{i}.provider: unknown provider {r.provider!r} "
                                 f"(providers: {', '.join(ids) or 'none configured'})")
            if r.route and r.route != "gateway":
                try:
                    self._check_target(f"intercept-{i}", r.route, ids)
                except ValueError as e:
                    raise ValueError(f"intercept.rules.{i}.route: {str(e).split(': ', 1)[1]}") from None

    def _check_target(self, alias: str, target: str, ids: list[str]) -> None:
        """A target is a model name, another alias, or "provider/model". A name with '/' whose first
        segment is no provider id is only a model name if a provider's `models:` lists it: else it is
        most likely a provider id mistyped or missing, which would send requests to the wrong place."""
        prov, sep, model = target.partition("/")
        if not target or (sep and prov in ids and not model):
            raise ValueError(f"routing.aliases.{alias}: target {target!r} has no model name")
        if (sep and prov not in ids and target not in self.routing.aliases
                and not any(target in (p.models or ()) for p in self.providers)
                and not (self.auto and prov in _auto_ids())):  # `auto: true` may find it at start
            known = ", ".join(ids) or "none configured"
            raise ValueError(f"routing.aliases.{alias}: target {target!r} names provider {prov!r}, which does not "
                             f"exist (providers: {known}). For a model name containing '/' (as OpenRouter's), "
                             f"write it as 'provider/{target}'")

    def provider(self, id: str) -> ProviderSettings | None:
        return next((p for p in self.providers if p.id == id), None)


def _auto_ids() -> frozenset[str]:
    """The provider ids `auto: true` may add (llmgate/first_run imports this module: imported late)."""
    from llmgate.operations import first_run

    return frozenset([*(k.id for k in first_run.API_KEYS), *(s.id for s in first_run.LOCAL_SERVERS),
                      *(lg.type for lg in first_run.LOGINS)])


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value: Any, path: str, unset: list[str]) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is None:
                unset.append(f"{path}: environment variable {name} is not set")
                return ""
            return default
        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{path}.{k}" if path else str(k), unset) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]", unset) for i, v in enumerate(value)]
    return value


def _line_of(root: yaml.Node | None, loc: tuple) -> int | None:
    """Line (1-based) of the YAML node at a pydantic error location."""
    node, line = root, None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == str(key)), None)
            if nxt is None:
                break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    if line is None and root is not None:
        line = root.start_mark.line + 1
    return line


def _fmt_loc(loc: tuple) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


# Bounds on the file itself: a few hundred bytes of nested YAML aliases can expand to billions of
# nodes ("billion laughs"), and deep nesting exhausts the stack. Real configs are a few KB.
MAX_CONFIG_BYTES = 1 << 20
MAX_NODES = 100_000  # counted as if every alias were expanded
MAX_DEPTH = 64
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml parses ~10x faster than pure Python


class _LimitExceeded(Exception):
    def __init__(self, message: str, mark: Any):  # a yaml Mark, or None
        super().__init__(message)
        self.line = mark.line + 1 if mark else 0


def _check_limits(text: str) -> None:
    """One pass over the YAML events (nothing built, no recursion) counting the values and the depth
    the document has once every alias is expanded, as _interpolate will expand them."""
    parser = _Loader(text)
    try:
        nodes = 0
        frames: list[list] = []  # per open collection: [nodes before it, its tallest child, its anchor]
        anchored: dict[str, tuple[int, int]] = {}  # anchor -> (expanded nodes, height)
        while parser.check_event():
            event, anchor = parser.get_event(), None
            if isinstance(event, yaml.CollectionStartEvent):
                if len(frames) >= MAX_DEPTH:
                    raise _LimitExceeded(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
                frames.append([nodes, 0, event.anchor])
                continue
            if isinstance(event, yaml.AliasEvent):
                if any(f[2] == event.anchor for f in frames):
                    raise _LimitExceeded(f"alias *{event.anchor} is inside its own anchor", event.start_mark)
                size, height = anchored.get(event.anchor or "", (0, 0))  # an undefined one fails in compose
                nodes += size
            elif isinstance(event, yaml.ScalarEvent):
                nodes, size, height, anchor = nodes + 1, 1, 1, event.anchor
            elif isinstance(event, yaml.CollectionEndEvent):
                before, tallest, anchor = frames.pop()
                nodes += 1
                size, height = nodes - before, tallest + 1
            else:
                continue
            if anchor is not None:
                anchored[anchor] = size, height
            if frames:
                frames[-1][1] = max(frames[-1][1], height)
            if nodes > MAX_NODES:
                raise _LimitExceeded(f"more than {MAX_NODES} values (aliases counted as expanded)", event.start_mark)
            if len(frames) + height > MAX_DEPTH:
                raise _LimitExceeded(f"nested deeper than {MAX_DEPTH} levels once its aliases are expanded",
                                     event.start_mark)
    finally:
        parser.dispose()


def _load_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The document's node tree (for line numbers) and its data, within the limits above."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: larger than the limit of {MAX_CONFIG_BYTES} bytes")
    try:
        _check_limits(text)
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            return root, loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except _LimitExceeded as e:
        raise ConfigError(f"{source}:{e.line}: refused: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None


_FIELD_FIRST = re.compile(r"((?:server|routing|intercept)\.[A-Za-z_]+\.[^:\s]+): ")  # "routing.aliases.big: ..."


def parse_settings(text: str, source: str = "proxy.yaml") -> tuple[GatewaySettings, list[str]]:
    """Parse and validate config text. Returns the settings and warnings; raises ConfigError."""
    root, raw = _load_yaml(text, source)
    if raw is None:
        # an empty file is more likely a half-written or truncated one than a wish to turn
        # client authentication off; `{}` says the latter explicitly
        raise ConfigError(f"{source}: has no settings (empty); write {{}} for an empty config")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping (server, providers, routing)")
    warnings: list[str] = []
    data = _interpolate(raw, "", warnings)
    try:
        settings = GatewaySettings.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = tuple(p for p in err["loc"] if p not in ("function-after",))
            if loc[:1] == ("providers",) and len(loc) > 1 and isinstance(loc[1], int):
                rest, msg = entry_error({**err, "loc": loc[2:]})
                loc = loc[:2] + rest
            else:
                msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            if not loc and (m := _FIELD_FIRST.match(msg)):  # a check across fields names the one at fault
                loc, msg = (*m.group(1).split(".", 2),), msg[m.end():]
            line = _line_of(root, loc)
            where = _fmt_loc(loc) or "(top level)"
            lines.append(f"{source}:{line}: {where}: {msg}" if line else f"{source}: {where}: {msg}")
        raise ConfigError("invalid config\n  " + "\n  ".join(lines)) from None
    return settings, warnings


def load_settings(path: str | Path) -> tuple[GatewaySettings, list[str]]:
    """Read and parse the config file (blocking: the watcher calls it in a worker thread)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(p)!r} not found (set --set gateway_config=PATH; proxy.yaml in the repo is an example)"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(p)!r}: {e.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{p.name}: larger than the limit of {MAX_CONFIG_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{p.name}:{line}: not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    return parse_settings(text, p.name)
