"""GitHub Copilot: a GitHub token from the device-flow login (`llmgate login copilot`), traded
for a short-lived Copilot token, and Copilot's API: chat completions, Responses or Messages,
whichever its models list offers for a model.

Terms of service: GitHub's terms for Copilot cover its use through GitHub's own and supported
editor clients; using the editor login from a gateway is not among them, and GitHub can
suspend Copilot access for it. The gateway logs a warning the first time an entry is used.

- Credentials file (ours, ~/.llmgate/copilot/account.json; one per account, globs allowed):
  {"oauth_token": "gho_...", "copilot_token", "expiry_date" (epoch ms, when to trade again),
  "api_url"}. The Copilot token (~30 min) is fetched with GET
  https://api.github.com/copilot_internal/v2/token (Authorization: token <GitHub token>) and
  traded again `refresh_in` seconds after (before it expires), once for all concurrent requests.
  `token_url` overrides that endpoint. The answer's endpoints.api is the chat host (individual,
  business and enterprise plans differ); base_url in proxy.yaml overrides it.
- Requests carry the editor headers Copilot requires (Editor-Version, Editor-Plugin-Version,
  Copilot-Integration-Id) and X-Initiator (agent when the last message is a tool result).
- Models come from GET {api}/models; each entry's supported_endpoints says where a model is
  served: /chat/completions, /responses (GPT-5.x and the codex models, some only there) or
  /v1/messages (Claude models). A model sent to an endpoint it is not listed on is refused
  (400 unsupported_api_for_model), so the wire format is chosen per model (for_model): the
  client's own when the model is served in it (passed through), else chat completions, else
  Responses, else Messages. The list is read even when proxy.yaml gives `models:`; a request
  made before its first answer waits for it (at most 5 s); a model it says nothing of goes to
  chat completions.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmgate.credentials.accounts import AccountSet, OAuthAccount
from llmgate.credentials.store import CredentialsFile, LoginRequired, RefreshFailed
from llmgate.errors import GatewayError
from llmgate.providers.anthropic_api import ANTHROPIC_VERSION
from llmgate.providers.base import ProviderKind, call_token_endpoint
from llmgate.providers.openai_compat import KIND as OPENAI

if TYPE_CHECKING:
    from llmgate.request_path.upstream import UpstreamRequest

log = logging.getLogger("llmgate")

DEFAULT_BASE = "https://api.githubcopilot.com"
TOKEN_URL = "https://api.github.com/copilot_internal/v2/token"
EDITOR = {  # what VS Code's Copilot Chat sends
    "Editor-Version": "vscode/1.104.1",
    "Editor-Plugin-Version": "copilot-chat/0.31.2",
    "Copilot-Integration-Id": "vscode-chat",
    "User-Agent": "GitHubCopilotChat/0.31.2",
}
MODELS = ("gpt-4.1", "gpt-5-mini", "claude-sonnet-4.5", "gemini-2.5-pro")
_warned: set[str] = set()


# supported_endpoints -> wire format, in the order chosen when the client's own is not among them
ENDPOINT_WIRES = {"/chat/completions": "openai_chat", "/responses": "responses", "/v1/messages": "anthropic"}


def _entries(body: Any) -> list[dict[str, Any]]:
    data = body.get("data") if isinstance(body, dict) else None
    return [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)] if isinstance(data, list) else []


def model_wires(body: Any) -> dict[str, tuple[str, ...]]:
    """The models endpoint's answer -> the wire formats each model is served in (none listed: left out)."""
    out = {}
    for m in _entries(body):
        listed = m.get("supported_endpoints")
        wires = tuple(w for e, w in ENDPOINT_WIRES.items() if isinstance(listed, list) and e in listed)
        if wires:
            out[m["id"]] = wires
    return out


def _model_ids(body: Any) -> list[str]:
    """The models endpoint's chat models (embeddings and completions models left out): type chat, or
    served on an endpoint the gateway speaks."""
    wires = model_wires(body)
    return [m["id"] for m in _entries(body)
            if ((m.get("capabilities") or {}).get("type") or "chat") == "chat" or m["id"] in wires]


def initiator(body: bytes) -> str:
    """"agent" when the request continues a tool loop, else "user" (Copilot bills user turns). Chat
    and Messages bodies say it in their last message, Responses bodies in their last input item."""
    try:
        data = json.loads(body)
        turns = data.get("messages") or data.get("input")
        last = turns[-1] if isinstance(turns, list) and turns else {}
        role, content = last.get("role"), last.get("content")
    except (ValueError, AttributeError, TypeError):
        return "user"
    if role in ("tool", "assistant") or last.get("type") in ("function_call_output", "function_call"):
        return "agent"
    results = role == "user" and isinstance(content, list) and any(
        isinstance(c, dict) and c.get("type") == "tool_result" for c in content)
    return "agent" if results else "user"


class CopilotAccount(OAuthAccount):
    def __init__(self, p: Any, rt: Any, path: Path):
        creds = CredentialsFile(path, f"llmgate login copilot --credentials {path}", token_key="copilot_token")
        super().__init__(p, rt, path, None, "copilot", creds)

    async def refresh(self, data: dict[str, Any]) -> dict[str, Any]:
        """The trade of the GitHub token for a Copilot token (not an OAuth refresh: nothing rotates)."""
        github = data.get("oauth_token")
        if not isinstance(github, str) or not github:
            raise LoginRequired("the file holds no GitHub oauth_token")
        url = self.p.token_url or TOKEN_URL
        headers = {"Authorization": f"token {github}", "Accept": "application/json", **EDITOR}
        status, answer = await call_token_endpoint(self.session(url), "GET", url, url, headers=headers)
        if status == 200 and isinstance(answer, dict) and isinstance(answer.get("token"), str):
            return trade_fields(answer)
        message = answer.get("message") if isinstance(answer, dict) else None
        if status == 401:
            raise LoginRequired(f"GitHub refused the token ({message or status})")
        if status in (403, 404):
            raise LoginRequired(f"this GitHub account has no Copilot access ({message or status})")
        raise RefreshFailed(f"{url} answered {status}")

    async def prepare(self, up: UpstreamRequest, model: str, purpose: str, force: bool = False) -> None:
        creds = await self.token(force)
        api = creds.get("api_url")
        if "base_url" not in self.p.model_fields_set and isinstance(api, str) and api.startswith(("https://",
                                                                                                 "http://")):
            up.url = api.rstrip("/") + up.url[len(self.p.base_url):]
        up.headers.update({"Authorization": f"Bearer {creds['copilot_token']}", **EDITOR,
                           "Openai-Intent": "conversation-panel", "X-Request-Id": str(uuid.uuid4())})
        if purpose in ("generate", "stream") and up.body:
            up.headers["X-Initiator"] = initiator(up.body)

    def error(self, status: int, headers: Any, body: bytes) -> GatewayError | None:
        try:
            err = json.loads(body).get("error") or {}
        except (ValueError, AttributeError):
            err = {}
        message = str(err.get("message") if isinstance(err, dict) else err)[:300]
        code = err.get("code") if isinstance(err, dict) else None
        retry = {"Retry-After": headers["Retry-After"]} if "Retry-After" in headers else {}
        who = f"account {self.name} (provider '{self.p.id}')"
        if code in ("quota_exceeded", "premium_quota_exceeded") or status == 402:
            return GatewayError(429, f"Copilot quota exhausted for {who}: {message}", code="quota_exhausted",
                                headers=retry)
        if status == 429:
            return GatewayError(429, f"Rate limited by Copilot for {who}: {message}", code="rate_limited",
                                headers=retry)
        return None


def trade_fields(answer: dict[str, Any]) -> dict[str, Any]:
    """The token endpoint's answer as file fields: trade again after refresh_in (or a minute
    before expires_at), as the editors do."""
    now = time.time()
    given, refresh_in = answer.get("expires_at"), answer.get("refresh_in")
    expires = float(given) if isinstance(given, (int, float)) else now + 1500
    when = now + refresh_in if isinstance(refresh_in, (int, float)) else expires - 60
    new: dict[str, Any] = {"copilot_token": answer["token"], "expiry_date": int(min(when, expires) * 1000)}
    api = (answer.get("endpoints") or {}).get("api") if isinstance(answer.get("endpoints"), dict) else None
    if isinstance(api, str) and api:
        new["api_url"] = api
    return new


def _accounts(p: Any, rt: Any) -> AccountSet:
    if p.id not in _warned:
        _warned.add(p.id)
        log.warning("provider %s uses GitHub Copilot's editor login: GitHub's terms cover Copilot through its "
                    "own and supported clients; access used otherwise can be suspended.", p.id)
    return AccountSet(p, lambda path: CopilotAccount(p, rt, path), KIND.credentials)


def _for_model(model: str, wires: Any, client_wire: str) -> ProviderKind:
    """The kind as Copilot serves this model (wires: model_wires' entry for it, None if unknown)."""
    if not wires:
        return KIND
    return BY_WIRE[client_wire if client_wire in wires else wires[0]]


KIND = ProviderKind(
    type="copilot",
    wire="openai_chat",
    chat_url=OPENAI.chat_url,
    models_path="/models",
    auth_headers=lambda key: {},
    parse_models=_model_ids,
    default_base_url=DEFAULT_BASE,
    default_models=MODELS,
    accounts=_accounts,
    credentials="~/.llmgate/copilot/account.json",
    config_fields=("credentials", "token_url"),
    secret_headers=("Authorization",),  # the Copilot token
    model_info=model_wires,
    for_model=_for_model,
)
BY_WIRE = {  # same accounts and headers; only the endpoint and its format differ
    "openai_chat": KIND,
    "responses": replace(KIND, wire="responses", chat_url=lambda base, model, stream: base + "/responses"),
    "anthropic": replace(KIND, wire="anthropic", chat_url=lambda base, model, stream: base + "/v1/messages",
                         default_headers={"anthropic-version": ANTHROPIC_VERSION}),
}
