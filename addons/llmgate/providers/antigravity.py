"""Antigravity (Google's agent IDE) accounts: Code Assist with Antigravity's OAuth client,
envelope and hosts. Gemini and Claude models, both in Gemini's content shape (Claude's
thinking arrives as thought parts with signatures, replayed like Gemini's).

Terms of service: Antigravity's terms forbid third-party clients, and accounts have been
suspended for using them. The gateway logs a warning the first time an entry is used.

Differences from Gemini CLI's Code Assist (providers.md, CLIProxyAPI's executor):
- hosts tried in order: daily-cloudcode-pa, then cloudcode-pa (`base_url`, `fallback_urls`);
- envelope adds userAgent "antigravity", requestType "agent", requestId "agent-<uuid>" and
  request.sessionId; safetySettings are removed; function calling runs in mode VALIDATED;
- User-Agent "antigravity/<version> <os>/<arch>": Google refuses old versions ("This version
  of Antigravity is no longer supported"); override it with `headers: {User-Agent: ...}`.
"""

from __future__ import annotations

import logging
import platform
import uuid
from typing import Any

from llmgate.credentials import oauth
from llmgate.credentials.accounts import AccountSet
from llmgate.errors import GatewayError
from llmgate.providers import code_assist
from llmgate.providers.base import ProviderKind

log = logging.getLogger("llmgate")

DAILY = "https://daily-cloudcode-pa.googleapis.com"
PROD = "https://cloudcode-pa.googleapis.com"
CLIENT_VERSION = "1.23.2"
MODELS = ("gemini-3-pro-high", "gemini-3-pro-low", "gemini-3-flash", "gemini-2.5-flash", "claude-sonnet-4-6",
          "claude-opus-4-6-thinking")
_warned: set[str] = set()


def user_agent() -> str:
    system = {"Darwin": "darwin", "Windows": "windows"}.get(platform.system(), platform.system().lower())
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine().lower(), platform.machine().lower())
    return f"antigravity/{CLIENT_VERSION} {system}/{machine}"


class AntigravityAccount(code_assist.CodeAssistAccount):
    client = oauth.ANTIGRAVITY
    login = "antigravity"

    def user_agent(self, model: str) -> str:
        return user_agent()

    def envelope(self, body: dict[str, Any], model: str, project: str) -> dict[str, Any]:
        request = {k: v for k, v in body.items() if k != "safetySettings"}
        request["sessionId"] = self.session_id
        if "toolConfig" in request:
            calling = request["toolConfig"].get("functionCallingConfig") or {}
            if calling.get("mode") in (None, "AUTO"):
                request["toolConfig"] = {**request["toolConfig"],
                                         "functionCallingConfig": {**calling, "mode": "VALIDATED"}}
        elif request.get("tools"):
            request["toolConfig"] = {"functionCallingConfig": {"mode": "VALIDATED"}}
        return {"model": model.removeprefix("models/"), "project": project, "userAgent": "antigravity",
                "requestType": "agent", "requestId": f"agent-{uuid.uuid4()}", "request": request}

    def error(self, status: int, headers: Any, body: bytes) -> GatewayError | None:
        if b"no longer supported" in body:
            return GatewayError(400, f"Provider '{self.p.id}': Google refuses this Antigravity client version "
                                f"({user_agent()}); set a newer one with `headers: {{User-Agent: antigravity/"
                                "<version> <os>/<arch>}` in proxy.yaml.", code="client_version_rejected")
        return super().error(status, headers, body)


def _accounts(p: Any, rt: Any) -> AccountSet:
    if p.id not in _warned:
        _warned.add(p.id)
        log.warning("provider %s uses Antigravity accounts: Antigravity's terms forbid third-party clients "
                    "and accounts have been suspended for it.", p.id)
    return AccountSet(p, lambda path: AntigravityAccount(p, rt, path), KIND.credentials)


KIND = ProviderKind(
    type="antigravity",
    wire="code_assist",
    chat_url=code_assist.chat_url,
    models_path=None,
    auth_headers=lambda key: {},
    parse_models=lambda body: [],
    count_url=code_assist.KIND.count_url,
    default_base_url=DAILY,
    fallback_urls=(PROD,),
    default_models=MODELS,
    accounts=_accounts,
    credentials="~/.llmgate/antigravity/*.json",
    config_fields=("credentials", "token_url", "project"),
    secret_headers=("Authorization",),  # the OAuth access token
)
