"""iFlow (apis.iflow.cn): OpenAI-compatible, with iFlow CLI's signed session headers.

iFlow CLI closed on 2026-04-17; API keys issued before still work. The key comes from
`api_key` in proxy.yaml or from the `apiKey` field of iFlow CLI's credentials file
(~/.iflow/oauth_creds.json, which `llmgate login iflow` also writes). Every request carries
a session id, a millisecond timestamp and
x-iflow-signature = hex(HMAC-SHA256(key=apiKey, "iFlow-Cli:<session-id>:<timestamp>")).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmgate.credentials.accounts import Account, AccountSet
from llmgate.providers.base import ProviderKind
from llmgate.providers.openai_compat import KIND as OPENAI

if TYPE_CHECKING:
    from llmgate.request_path.upstream import UpstreamRequest
    from llmgate.settings import ProviderSettings

USER_AGENT = "iFlow-Cli"


def signed_headers(api_key: str, session_id: str, now_ms: int | None = None) -> dict[str, str]:
    timestamp = str(now_ms if now_ms is not None else int(time.time() * 1000))
    message = f"{USER_AGENT}:{session_id}:{timestamp}".encode()
    signature = hmac.new(api_key.encode(), message, hashlib.sha256).hexdigest()
    return {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT, "session-id": session_id,
            "x-iflow-timestamp": timestamp, "x-iflow-signature": signature}


class IFlowAccount(Account):
    def __init__(self, p: ProviderSettings, key: str | None = None, path: Path | None = None):
        self.p = p
        self.key = key
        self.path = path
        self.name = str(path) if path else f"{p.id} (api_key)"
        self.session_id = f"session-{uuid.uuid4()}"

    def api_key(self) -> str | None:
        if self.key:
            return self.key
        try:
            value = json.loads(self.path.read_text()).get("apiKey") if self.path else None
        except (OSError, ValueError, AttributeError):
            value = None
        self.needs_login = None if value else f"no apiKey in {self.path}; run: llmgate login iflow"
        return value if isinstance(value, str) and value else None

    def usable(self) -> bool:
        return self.api_key() is not None

    async def prepare(self, up: UpstreamRequest, model: str, purpose: str, force: bool = False) -> None:
        key = self.api_key()
        if key:
            up.headers.update(signed_headers(key, self.session_id))


def _accounts(p: Any, rt: Any) -> AccountSet:
    if p.api_key:
        return AccountSet(p, lambda path: IFlowAccount(p, path=path), fixed=[IFlowAccount(p, key=p.api_key)])
    return AccountSet(p, lambda path: IFlowAccount(p, path=path), KIND.credentials)


KIND = ProviderKind(
    type="iflow",
    wire="openai_chat",
    chat_url=OPENAI.chat_url,
    models_path=None,  # the list endpoint needs signed headers too: use the built-in list or `models:`
    auth_headers=lambda key: {},
    parse_models=OPENAI.parse_models,
    default_base_url="https://apis.iflow.cn/v1",
    default_models=("qwen3-coder-plus", "qwen3-max", "kimi-k2", "glm-4.6", "deepseek-v3.2"),
    accounts=_accounts,
    credentials="~/.iflow/oauth_creds.json",
    config_fields=("credentials",),
    secret_headers=("Authorization", "x-iflow-signature"),  # the key, and a replayable signature made with it
)
