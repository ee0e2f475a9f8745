"""Google Code Assist (cloudcode-pa.googleapis.com/v1internal): what Gemini CLI's "Login with
Google" talks to, with the credentials file Gemini CLI writes (~/.gemini/oauth_creds.json).

The body is a Gemini GenerateContentRequest inside Code Assist's envelope
{model, project, user_prompt_id, request: {..., session_id}}; answers come as {response: ...}
and streams as SSE without [DONE] (the Gemini decoders unwrap both). The project comes from
proxy.yaml (`project:`) or is discovered once per account the way Gemini CLI does it:
loadCodeAssist, and when the account has no tier yet, onboardUser (a long-running operation,
polled until done). Google's quota answers (RESOURCE_EXHAUSTED with ErrorInfo QUOTA_EXHAUSTED
or RATE_LIMIT_EXCEEDED, "No capacity available" 503s, PERMISSION_DENIED) reach the client
as those specific errors, Retry-After from RetryInfo / quotaResetDelay.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from converters import gemini
from llmgate.credentials import oauth
from llmgate.credentials.accounts import (
    VERSION,
    AccountSet,
    OAuthAccount,
    platform_tag,
)
from llmgate.errors import GatewayError
from llmgate.providers.base import ProviderKind

if TYPE_CHECKING:
    from llmgate.request_path.upstream import UpstreamRequest

DEFAULT_BASE = "https://cloudcode-pa.googleapis.com"
MODELS = ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-3-pro-preview",
          "gemini-3-flash-preview")
CLIENT_METADATA = {"ideType": "IDE_UNSPECIFIED", "platform": "PLATFORM_UNSPECIFIED", "pluginType": "GEMINI"}
ONBOARD_WAIT = 60.0  # seconds an onboarding operation may take


def chat_url(base: str, model: str, stream: bool) -> str:
    return f"{base}/v1internal:" + ("streamGenerateContent?alt=sse" if stream else "generateContent")


def _duration(value: Any) -> float | None:
    """Google durations: "0.47s", "3h2m1s", "10921s"."""
    if not isinstance(value, str):
        return None
    total, found = 0.0, False
    for amount, unit in re.findall(r"([\d.]+)(h|m(?!s)|s|ms)", value):
        found = True
        total += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total if found else None


def classify_error(p_id: str, account: str, status: int, body: bytes) -> GatewayError | None:
    """Code Assist's quota, capacity and permission answers as specific errors."""
    try:
        err = json.loads(body).get("error") or {}
    except (ValueError, AttributeError):
        return None
    if not isinstance(err, dict):
        return None
    message = str(err.get("message") or "")
    details = [d for d in err.get("details") or () if isinstance(d, dict)]
    reasons = {d.get("reason") for d in details if "ErrorInfo" in str(d.get("@type"))}
    delay = None
    for d in details:
        delay = delay or _duration((d.get("metadata") or {}).get("quotaResetDelay")) or _duration(d.get("retryDelay"))
    headers = {"Retry-After": str(max(1, round(delay)))} if delay else {}
    who = f"account {account} (provider '{p_id}')"
    if "QUOTA_EXHAUSTED" in reasons:
        return GatewayError(429, f"Quota exhausted for {who}: {message}", code="quota_exhausted", headers=headers)
    if status == 429 or "RATE_LIMIT_EXCEEDED" in reasons:
        return GatewayError(429, f"Rate limited for {who}: {message}", code="rate_limited", headers=headers)
    if "MODEL_CAPACITY_EXHAUSTED" in reasons or (status == 503 and "capacity" in message.lower()):
        return GatewayError(503, f"No capacity for this model right now ({who}): {message}",
                            code="model_capacity_exhausted", headers=headers)
    if status == 403:
        return GatewayError(403, f"This account is not allowed to use Code Assist ({who}): {message}",
                            code="account_not_allowed")
    return None


class CodeAssistAccount(OAuthAccount):
    client = oauth.GEMINI_CLI
    login = "gemini"

    def __init__(self, p: Any, rt: Any, path: Path):
        super().__init__(p, rt, path, self.client, self.login)
        self.project: str | None = p.project
        self._project_login: Any = None  # the refresh token the discovered project belongs to
        self._discovering: asyncio.Future | None = None
        self.session_id = str(uuid.uuid4())

    def user_agent(self, model: str) -> str:
        system, arch = platform_tag()
        return f"GeminiCLI/{VERSION}/{model} ({system}; {arch})"

    def envelope(self, body: dict[str, Any], model: str, project: str) -> dict[str, Any]:
        return gemini.wrap_code_assist(body, model, project, user_prompt_id=secrets.token_hex(8),
                                       session_id=self.session_id)

    async def prepare(self, up: UpstreamRequest, model: str, purpose: str, force: bool = False) -> None:
        creds = await self.token(force)
        token = creds["access_token"]
        up.headers.update({"Authorization": f"Bearer {token}", "User-Agent": self.user_agent(model)})
        if purpose == "count":
            body = json.loads(up.body)
            inner = body.get("generateContentRequest") or body
            up.body = json.dumps({"request": {"model": gemini.model_path(model),
                                              "contents": inner.get("contents", [])}}).encode()
            return
        if self.p.project is None and creds.get("refresh_token") != self._project_login:
            self.project, self._project_login = None, creds.get("refresh_token")  # a new login: look again
        project = await self.discover_project(up.url.split("/v1internal", 1)[0], token)
        up.body = json.dumps(self.envelope(json.loads(up.body), model, project), ensure_ascii=False,
                             separators=(",", ":")).encode()

    async def discover_project(self, base: str, token: str) -> str:
        if self.project:
            return self.project
        if self._discovering is None or self._discovering.done():
            self._discovering = asyncio.ensure_future(self._discover(base, token))
        project = await asyncio.shield(self._discovering)
        self.project = project
        return project

    async def _call(self, session: aiohttp.ClientSession, method: str, url: str, token: str,
                    body: dict | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                   "User-Agent": self.user_agent("")}
        try:
            async with session.request(method, url, json=body, headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=30)) as resp:
                text = await resp.read()
                if resp.status != 200:
                    raise self.error(resp.status, resp.headers, text) or GatewayError(
                        502 if resp.status >= 500 else resp.status,
                        f"Provider '{self.p.id}': Code Assist setup ({url.rsplit('/', 1)[-1]}) "
                        f"answered {resp.status}: {text[:300].decode('utf-8', 'replace')}",
                        code="provider_setup_failed")
                return json.loads(text)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise GatewayError(502, f"Provider '{self.p.id}': Code Assist setup failed: {type(e).__name__}",
                               code="provider_setup_failed") from None

    async def _discover(self, base: str, token: str) -> str:
        """loadCodeAssist, then onboardUser when the account has no tier yet (Gemini CLI's setup)."""
        session = self.session(base)
        loaded = await self._call(session, "POST", f"{base}/v1internal:loadCodeAssist", token,
                                  {"metadata": CLIENT_METADATA})
        project = loaded.get("cloudaicompanionProject")
        if loaded.get("currentTier") and isinstance(project, str) and project:
            return project
        tiers = [t for t in loaded.get("allowedTiers") or () if isinstance(t, dict)]
        tier = next((t for t in tiers if t.get("isDefault")), tiers[0] if tiers else {"id": "free-tier"})
        body: dict[str, Any] = {"tierId": tier.get("id"), "metadata": CLIENT_METADATA}
        if isinstance(project, str) and project:
            body["cloudaicompanionProject"] = project
        op = await self._call(session, "POST", f"{base}/v1internal:onboardUser", token, body)
        delay, waited = 0.5, 0.0
        while not op.get("done"):
            if waited > ONBOARD_WAIT or not op.get("name"):
                raise GatewayError(502, f"Provider '{self.p.id}': onboarding the account did not finish.",
                                   code="provider_setup_failed")
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 5.0)
            op = await self._call(session, "GET", f"{base}/v1internal/{op['name']}", token)
        found = ((op.get("response") or {}).get("cloudaicompanionProject") or {}).get("id")
        if not isinstance(found, str) or not found:
            raise GatewayError(502, f"Provider '{self.p.id}': onboarding gave no project; set `project:` "
                               "in proxy.yaml.", code="provider_setup_failed")
        return found

    def error(self, status: int, headers: Any, body: bytes) -> GatewayError | None:
        return classify_error(self.p.id, self.name, status, body)


def _accounts(p: Any, rt: Any) -> AccountSet:
    return AccountSet(p, lambda path: CodeAssistAccount(p, rt, path), KIND.credentials)


KIND = ProviderKind(
    type="gemini-cli",
    wire="code_assist",
    chat_url=chat_url,
    models_path=None,  # Gemini CLI has its list built in
    auth_headers=lambda key: {},
    parse_models=lambda body: [],
    count_url=lambda base, model: f"{base}/v1internal:countTokens",
    default_base_url=DEFAULT_BASE,
    default_models=MODELS,
    accounts=_accounts,
    credentials="~/.gemini/oauth_creds.json",
    config_fields=("credentials", "token_url", "project"),
    secret_headers=("Authorization",),  # the OAuth access token
)
