"""Which endpoint a request path names, in which client API, for which forced provider.

Routes (each also under /{provider}/... to force a provider):
  GET  /health, /provider_health (its per-model part)
  /admin/...                                 the management API (llmgate/operations/admin_api.py; admin keys)
  /ui, /ui/...                               the web console (llmgate/console; admin keys or loopback)
  GET  /metrics                              Prometheus metrics (admin keys)
  GET  /v1/models, /v1/models/{model}        OpenAI shape; Anthropic's with an anthropic-version header
  POST /v1/chat/completions                  OpenAI chat
  POST /v1/responses                         OpenAI Responses
  POST /v1/embeddings                        OpenAI embeddings
  POST /v1/messages, /v1/messages/count_tokens   Anthropic
  GET  /v1beta/models, /v1beta/models/{model}    Gemini
  POST /v1beta/models/{model}:{method}       generateContent, streamGenerateContent, countTokens,
                                             embedContent, batchEmbedContents
Seed-compatible prefixes: /anthropic/messages, /anthropic/models and /gemini/models/... route
by model like the plain routes; so do /anthropic/v1/... and /gemini/v1beta/... unless a provider
has that id (then they force it, like any /{provider}/v1/...; so does the list /{seed}/models).
A forced provider may be named by its type when exactly one provider has it (llmgate/routing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from mitmproxy import http

from llmgate.request_path.client_apis import ANTHROPIC, GEMINI, OPENAI_CHAT, RESPONSES, ClientApi
from llmgate.settings import GatewaySettings

GEMINI_METHODS = frozenset(("generateContent", "streamGenerateContent", "countTokens", "embedContent",
                            "batchEmbedContents"))
_POSTS = {
    "/v1/chat/completions": ("chat", OPENAI_CHAT),
    "/v1/responses": ("responses", RESPONSES),
    "/v1/embeddings": ("embeddings", OPENAI_CHAT),
    "/v1/messages": ("messages", ANTHROPIC),
    "/v1/messages/count_tokens": ("count_tokens", ANTHROPIC),
}
_SEED_PREFIXES = {"anthropic": "/v1", "gemini": "/v1beta"}
# flow.metadata of a regular-mode flow (llmgate/addons/intercept): {"host", "action": "route" | "passthrough"},
# and for a routed call the gateway "path" it is, with the rule's "provider" or routing "model"
INTERCEPT_MARK = "llmgate.intercept"
ROUTES_HINT = ("Routes: POST /v1/chat/completions, /v1/responses, /v1/embeddings, /v1/messages, "
               "/v1beta/models/{model}:generateContent; GET /v1/models, /v1beta/models, /health "
               "(also under /{provider}/...).")


@dataclass(frozen=True, slots=True)
class Inbound:
    endpoint: str  # health | provider_health | models | model | chat | responses | embeddings | messages | count_tokens
    #                | gemini | unknown
    api: ClientApi  # the caller's API: requests are read and errors written in it
    method: str = "GET"  # the HTTP method the endpoint takes
    forced: str | None = None  # provider id from the path
    model: str | None = None  # from the path (Gemini, GET /v1/models/{model})
    action: str | None = None  # Gemini method: generateContent, ...


def inbound_of(flow: http.HTTPFlow, settings: GatewaySettings) -> Inbound:
    routed = flow.metadata.get(INTERCEPT_MARK) or {}  # a CLI's vendor call an intercept rule routes
    ib = match(routed.get("path") or flow.request.path.split("?", 1)[0], "anthropic-version" in flow.request.headers,
               lambda pid: settings.provider(pid) is not None)
    return replace(ib, forced=routed["provider"]) if "provider" in routed else ib


def match(path: str, anthropic_version: bool, is_provider: Callable[[str], bool]) -> Inbound:
    """`path` without its query string."""
    forced, path, seed = _split_prefix(path, is_provider)
    anthropic_shape = anthropic_version or seed == "anthropic"
    if path == "/health" and not forced:
        return Inbound("health", OPENAI_CHAT)
    if path == "/provider_health" and not forced:
        return Inbound("provider_health", OPENAI_CHAT)
    if path.startswith("/admin/") and not forced:
        return Inbound("admin", OPENAI_CHAT, "*")  # llmgate/operations/admin_api.py checks methods
    if (path == "/ui" or path.startswith("/ui/")) and not forced:
        return Inbound("ui", OPENAI_CHAT, "*")  # the web console (llmgate/console)
    if path == "/metrics" and not forced:
        return Inbound("metrics", OPENAI_CHAT)
    if path in _POSTS:
        endpoint, api = _POSTS[path]
        return Inbound(endpoint, api, "POST", forced)
    if path in ("/v1/models", "/v1beta/models"):
        api = GEMINI if path.startswith("/v1beta") else ANTHROPIC if anthropic_shape else OPENAI_CHAT
        return Inbound("models", api, "GET", forced)
    for prefix in ("/v1beta/models/", "/v1/models/"):
        if path.startswith(prefix) and len(path) > len(prefix):
            name = path[len(prefix):]
            model, _, action = name.rpartition(":")
            if model and action in GEMINI_METHODS:
                return Inbound("gemini", GEMINI, "POST", forced, model, action)
            api = GEMINI if prefix == "/v1beta/models/" else ANTHROPIC if anthropic_shape else OPENAI_CHAT
            return Inbound("model", api, "GET", forced, name)
    guess = (GEMINI if path.startswith("/v1beta/") or seed == "gemini"
             else ANTHROPIC if anthropic_shape or path.startswith("/v1/messages") else OPENAI_CHAT)
    return Inbound("unknown", guess, forced=forced)


def _split_prefix(path: str, is_provider: Callable[[str], bool]) -> tuple[str | None, str, str | None]:
    """-> (forced provider, the rest of the path, seed prefix used)."""
    head, sep, rest = path[1:].partition("/")
    if not sep or head in ("v1", "v1beta"):
        return None, path, None
    rest = "/" + rest
    versioned = rest.startswith(("/v1/", "/v1beta/"))
    if head in _SEED_PREFIXES:
        version = _SEED_PREFIXES[head]
        if rest == "/models" and is_provider(head):  # the seed's list of that provider's models
            return head, version + rest, head
        if not (versioned and is_provider(head)):
            return None, rest if rest.startswith(version + "/") else version + rest, head
    if versioned:
        return head, rest, None
    return None, path, None
