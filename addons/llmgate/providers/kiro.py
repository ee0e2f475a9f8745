"""Kiro: Claude models through AWS CodeWhisperer / Q, with the login Kiro writes
(~/.aws/sso/cache/kiro-auth-token.json).

Terms of service: Kiro's terms forbid third-party clients, and accounts have been suspended
for using them. The gateway logs a warning the first time an entry is used.

- Credentials: {accessToken, refreshToken, expiresAt (ISO-8601), authMethod "social" | "IdC",
  profileArn (social), region, clientIdHash (IdC)}. Social logins refresh at
  https://prod.{region}.auth.desktop.kiro.dev/refreshToken; IdC (Builder ID) ones at
  https://oidc.{region}.amazonaws.com/token with the client registration Kiro keeps in
  ~/.aws/sso/cache/<clientIdHash>.json. `token_url` overrides either (tests). With shared
  credentials (server.state), the registration goes into the store with the tokens it refreshes
  (key clientRegistration), so hosts without Kiro's folder refresh them too.
- Requests: converters/kiro.py builds the conversationState; the account adds profileArn
  (social) and the Kiro IDE's headers. Answers are AWS event streams, decoded frame by frame.
- Models: ListAvailableModels (cached like any discovered list), each id also in its dashed
  spelling (claude-sonnet-4.5 and claude-sonnet-4-5).
- Errors: a 403 means a bad token (refresh and retry once) or a blocked account; throttling
  and spent quotas are 429s named as such.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp

from converters import kiro
from llmgate.credentials.accounts import AccountSet, OAuthAccount, platform_tag
from llmgate.credentials.store import CredentialsFile, LoginRequired, RefreshFailed
from llmgate.errors import GatewayError
from llmgate.providers.base import ProviderKind

if TYPE_CHECKING:
    from llmgate.request_path.upstream import UpstreamRequest

log = logging.getLogger("llmgate")

DEFAULT_REGION = "us-east-1"
KIRO_VERSION = "0.2.13"
MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-5", "claude-sonnet-4")  # until discovered
_warned: set[str] = set()
REGISTRATION = "clientRegistration"  # ours: an IdC login's client registration, carried in the shared store


def _model_ids(body: Any) -> list[str]:
    """ListAvailableModels -> ids, each also in the dashed spelling clients use (claude-sonnet-4-5)."""
    models = body.get("models") if isinstance(body, dict) else None
    if not isinstance(models, list):
        raise ValueError('expected {"models": [...]} from ListAvailableModels')
    out: list[str] = []
    for m in models:
        mid = m.get("modelId") if isinstance(m, dict) else None
        if isinstance(mid, str) and mid:
            out += [mid] + ([mid.replace(".", "-")] if "." in mid else [])
    return out


def _iso_in(seconds: Any) -> str:
    s = seconds if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else 3600
    return datetime.fromtimestamp(time.time() + s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def client_registration(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """The IdC client registration Kiro keeps beside its token file (<clientIdHash>.json)."""
    h = str(data.get("clientIdHash"))
    file = path.parent / f"{h}.json"
    if Path(h).name != h or "\0" in h:  # a name beside the token file, nothing else
        raise LoginRequired("the credentials' clientIdHash is not a file name")
    try:
        client = json.loads(file.read_text())
    except (OSError, ValueError, RecursionError):
        raise LoginRequired(f"the IdC client registration {file} is missing") from None
    if not isinstance(client, dict) or not client.get("clientId"):
        raise LoginRequired(f"{file} holds no clientId")
    return client


def _bundle(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """An IdC login's tokens with their client registration, for the shared store."""
    if str(data.get("authMethod", "social")).lower() != "idc":
        return data
    try:
        client = client_registration(path, data)
    except LoginRequired as e:
        log.warning("credentials %s: %s; hosts without it cannot refresh this login", path, e)
        return data
    return {**data, REGISTRATION: {k: client[k] for k in ("clientId", "clientSecret", "expiresAt") if k in client}}


class KiroAccount(OAuthAccount):
    def __init__(self, p: Any, rt: Any, path: Path):
        creds = CredentialsFile(path, f"log in again with the Kiro IDE (it writes {path})",
                                expiry_key="expiresAt", token_key="accessToken")
        super().__init__(p, rt, path, None, "kiro", creds)
        self.machine = uuid.uuid5(uuid.NAMESPACE_URL, str(path)).hex

    def region(self) -> str:
        r = self.creds.data.get("region")
        return r if isinstance(r, str) and r else DEFAULT_REGION

    async def refresh(self, data: dict[str, Any]) -> dict[str, Any]:
        token = data.get("refreshToken")
        if not isinstance(token, str) or not token:
            raise LoginRequired("the credentials hold no refreshToken")
        region = self.region()
        if str(data.get("authMethod", "social")).lower() == "idc":
            client = self._client_registration(data)
            url = self.p.token_url or f"https://oidc.{region}.amazonaws.com/token"
            body = {"clientId": client.get("clientId"), "clientSecret": client.get("clientSecret"),
                    "refreshToken": token, "grantType": "refresh_token"}
        else:
            url = self.p.token_url or f"https://prod.{region}.auth.desktop.kiro.dev/refreshToken"
            body = {"refreshToken": token}
        session = self.session(url)
        try:
            async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=30)) as resp:
                status = resp.status
                answer = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise RefreshFailed(f"{url} failed: {type(e).__name__}") from None
        if status == 200 and isinstance(answer, dict) and isinstance(answer.get("accessToken"), str):
            new = {"accessToken": answer["accessToken"], "expiresAt": _iso_in(answer.get("expiresIn"))}
            if answer.get("refreshToken"):
                new["refreshToken"] = answer["refreshToken"]
            if answer.get("profileArn"):
                new["profileArn"] = answer["profileArn"]
            return new
        if status in (400, 401, 403):
            raise LoginRequired(f"the token endpoint refused the refresh token ({status})")
        raise RefreshFailed(f"{url} answered {status}")

    def _client_registration(self, data: dict[str, Any]) -> dict[str, Any]:
        carried = data.get(REGISTRATION)  # it came with the tokens (shared store): the one they belong to
        if isinstance(carried, dict) and carried.get("clientId"):
            return carried
        return client_registration(self.creds.path, data)

    async def prepare(self, up: UpstreamRequest, model: str, purpose: str, force: bool = False) -> None:
        creds = await self.token(force)
        if "base_url" not in self.p.model_fields_set:
            up.url = f"https://q.{self.region()}.amazonaws.com" + up.url[len(self.p.base_url):]
        system, arch = platform_tag()
        ide = f"KiroIDE-{KIRO_VERSION}-{self.machine}"
        up.headers.update({
            "Authorization": f"Bearer {creds['accessToken']}",
            "Accept": "application/json",
            "amz-sdk-invocation-id": str(uuid.uuid4()),
            "amz-sdk-request": "attempt=1; max=1",
            "x-amzn-kiro-agent-mode": "vibe",
            "x-amz-user-agent": f"aws-sdk-js/1.0.0 {ide}",
            "User-Agent": f"aws-sdk-js/1.0.0 ua/2.1 os/{system} lang/js md/nodejs#20 "
                          f"api/codewhispererruntime#1.0.0 m/E {ide} ({arch})",
        })
        arn = creds.get("profileArn")
        if purpose == "models":  # GET ListAvailableModels: social logins name their profile in the query
            if arn:
                up.url += "&profileArn=" + quote(arn, safe="")
            return
        if arn and up.body:
            body = json.loads(up.body)
            body["profileArn"] = arn
            up.body = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    def error(self, status: int, headers: Any, body: bytes) -> GatewayError | None:
        message, code = kiro.decode_error(status, body)
        who = f"account {self.name} (provider '{self.p.id}')"
        if code in ("rate_limited", "quota_exhausted"):
            what = "Quota exhausted" if code == "quota_exhausted" else "Throttled"
            return GatewayError(429, f"{what} for {who}: {message}", code=code)
        if status == 403:
            return GatewayError(403, f"Kiro refused {who}: {message}", code="account_not_allowed")
        return None


def _accounts(p: Any, rt: Any) -> AccountSet:
    if p.id not in _warned:
        _warned.add(p.id)
        log.warning("provider %s uses Kiro accounts: Kiro's terms forbid third-party clients and accounts "
                    "have been suspended for it.", p.id)
    return AccountSet(p, lambda path: KiroAccount(p, rt, path), KIND.credentials)


KIND = ProviderKind(
    type="kiro",
    wire="kiro",
    chat_url=lambda base, model, stream: base + "/generateAssistantResponse",
    models_path="/ListAvailableModels?origin=AI_EDITOR",
    auth_headers=lambda key: {},
    parse_models=_model_ids,
    default_base_url=f"https://q.{DEFAULT_REGION}.amazonaws.com",
    default_models=MODELS,
    accounts=_accounts,
    credentials="~/.aws/sso/cache/kiro-auth-token.json",
    config_fields=("credentials", "token_url"),
    secret_headers=("Authorization",),  # the OAuth access token
    stream_type="application/vnd.amazon.eventstream",
    reauth_statuses=(401, 403),  # Kiro says 403 for an expired token
    bundle=_bundle,
    bundled=(REGISTRATION,),
)
