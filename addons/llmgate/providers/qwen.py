"""Qwen Code's OAuth login (portal.qwen.ai), from the credentials file Qwen Code writes.

The chat API is OpenAI-compatible at "https://" + resource_url + "/v1" (resource_url comes
with the token; base_url in proxy.yaml overrides it). Requests carry Qwen Code's headers,
and the body gets Qwen's quirks: exactly one system message, first, its text marked for
prompt caching; usage requested in streams. Errors that mean the account's quota is spent,
or that the service is no longer available to it, are named as such.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from llmgate.credentials import oauth
from llmgate.credentials.accounts import (
    VERSION,
    AccountSet,
    OAuthAccount,
    platform_tag,
)
from llmgate.errors import GatewayError
from llmgate.providers.base import ProviderKind
from llmgate.providers.openai_compat import KIND as OPENAI

if TYPE_CHECKING:
    from llmgate.request_path.upstream import UpstreamRequest

DEFAULT_BASE = "https://portal.qwen.ai/v1"


def base_from_resource(resource_url: Any) -> str | None:
    """resource_url as Qwen Code turns it into its base URL (scheme added, /v1 ensured)."""
    if not isinstance(resource_url, str) or not resource_url:
        return None
    url = resource_url if resource_url.startswith(("http://", "https://")) else "https://" + resource_url
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def qwen_body(body: bytes, stream: bool) -> bytes:
    """Qwen's request quirks on an OpenAI chat body. Bodies that are already right go untouched."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        return body
    messages = data["messages"]
    system = [m for m in messages if isinstance(m, dict) and m.get("role") in ("system", "developer")]
    rest = [m for m in messages if not (isinstance(m, dict) and m.get("role") in ("system", "developer"))]
    changed = False
    if system:
        text = "\n\n".join(t for t in (_text_of(m.get("content")) for m in system) if t)
        lead = {"role": "system", "content": [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]}
        if messages[0] != lead or len(system) > 1:
            data["messages"], changed = [lead, *rest], True
    if stream and not (data.get("stream_options") or {}).get("include_usage"):
        data["stream_options"], changed = {**(data.get("stream_options") or {}), "include_usage": True}, True
    if not changed:
        return body
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def quota_error(p_id: str, account: str, status: int, headers: Any, body: bytes) -> GatewayError | None:
    """Qwen's quota / discontinued answers as their specific errors."""
    text = body.decode("utf-8", "replace")
    try:
        err = json.loads(body).get("error") or {}
    except (ValueError, AttributeError):
        err = {}
    code = err.get("code") if isinstance(err, dict) else None
    message = (err.get("message") if isinstance(err, dict) else None) or text[:300]
    if code in ("insufficient_quota", "quota_exceeded") or "quota exceeded" in text.lower():
        retry = {"Retry-After": headers["Retry-After"]} if "Retry-After" in headers else {}
        return GatewayError(429, f"Qwen quota exhausted for account {account} (provider '{p_id}'): {message}",
                            code="quota_exhausted", headers=retry)
    if status == 403 and any(w in text.lower() for w in ("discontinued", "no longer", "not available")):
        return GatewayError(403, f"Qwen OAuth service is not available to account {account} (provider "
                            f"'{p_id}'): {message}. Qwen's free OAuth tier ended 2026-04-15; use a paid "
                            "account or a DashScope API key (type: openai).", code="service_discontinued")
    return None


class QwenAccount(OAuthAccount):
    async def prepare(self, up: UpstreamRequest, model: str, purpose: str, force: bool = False) -> None:
        creds = await self.token(force)
        base = self.p.base_url if "base_url" in self.p.model_fields_set else (
            base_from_resource(creds.get("resource_url")) or DEFAULT_BASE)
        up.url = base + up.url[len(self.p.base_url):]
        system, arch = platform_tag()
        agent = f"QwenCode/{VERSION} ({system}; {arch})"
        up.headers.update({
            "Authorization": f"Bearer {creds['access_token']}",
            "User-Agent": agent,
            "X-DashScope-CacheControl": "enable",
            "X-DashScope-UserAgent": agent,
            "X-DashScope-AuthType": "qwen-oauth",
        })
        up.body = qwen_body(up.body, purpose == "stream")

    def error(self, status: int, headers: Any, body: bytes) -> GatewayError | None:
        return quota_error(self.p.id, self.name, status, headers, body)


def _accounts(p: Any, rt: Any) -> AccountSet:
    return AccountSet(p, lambda path: QwenAccount(p, rt, path, oauth.QWEN, "qwen"), KIND.credentials)


KIND = ProviderKind(
    type="qwen",
    wire="openai_chat",
    chat_url=OPENAI.chat_url,
    models_path=None,  # Qwen's portal has no list endpoint
    auth_headers=lambda key: {},
    parse_models=OPENAI.parse_models,
    default_base_url=DEFAULT_BASE,
    default_models=("coder-model", "vision-model"),
    accounts=_accounts,
    credentials="~/.qwen/oauth_creds.json",
    config_fields=("credentials", "token_url"),
    secret_headers=("Authorization",),  # the OAuth access token
)
