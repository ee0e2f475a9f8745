"""OAuth facts of the coding CLIs and the token refresh the gateway does with them.

Client ids and the Google installed-app "secrets" are the ones the official CLIs publish in
their own source (Qwen Code, Gemini CLI, Antigravity, Codex CLI; GitHub Copilot's editor client):
a refresh token only works with the client it was issued to. Every URL can be overridden in
proxy.yaml (tests point them at local servers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from llmgate.credentials.store import LoginRequired, RefreshFailed


@dataclass(frozen=True, slots=True)
class OAuthClient:
    token_url: str
    client_id: str
    client_secret: str | None = None
    scopes: tuple[str, ...] = ()
    auth_url: str | None = None  # authorization-code flows
    device_url: str | None = None  # device-code flows


QWEN = OAuthClient(
    token_url="https://chat.qwen.ai/api/v1/oauth2/token",
    device_url="https://chat.qwen.ai/api/v1/oauth2/device/code",
    client_id="f0304373b74a44d2b584a3fb70ca9e56",
    scopes=("openid", "profile", "email", "model.completion"),
)
GEMINI_CLI = OAuthClient(
    token_url="https://oauth2.googleapis.com/token",
    auth_url="https://accounts.google.com/o/oauth2/v2/auth",
    client_id="681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com",
    client_secret="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",
    scopes=("https://www.googleapis.com/auth/cloud-platform", "https://www.googleapis.com/auth/userinfo.email",
            "https://www.googleapis.com/auth/userinfo.profile"),
)
ANTIGRAVITY = OAuthClient(
    token_url="https://oauth2.googleapis.com/token",
    auth_url="https://accounts.google.com/o/oauth2/v2/auth",
    client_id="1071006060591-tmhssin2h21lcre235vtolojh4g403ep.apps.googleusercontent.com",
    client_secret="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",
    scopes=GEMINI_CLI.scopes + ("https://www.googleapis.com/auth/cclog",
                                "https://www.googleapis.com/auth/experimentsandconfigs"),
)
IFLOW = OAuthClient(
    token_url="https://iflow.cn/oauth/token",
    auth_url="https://iflow.cn/oauth",
    client_id="10009311001",
    client_secret="4Z3YjXycVsQvyGF1etiNlIBB4RsqSDtW",
)

CODEX = OAuthClient(  # Codex CLI's ChatGPT sign-in (openai/codex codex-rs/login/src/server.rs, auth/manager.rs)
    token_url="https://auth.openai.com/oauth/token",
    auth_url="https://auth.openai.com/oauth/authorize",
    client_id="app_EMoamEEZ73f0CkXaXp7hrann",
    scopes=("openid", "profile", "email", "offline_access", "api.connectors.read", "api.connectors.invoke"),
)
COPILOT = OAuthClient(  # GitHub's device flow with the client id of the Copilot editor extensions
    token_url="https://github.com/login/oauth/access_token",
    device_url="https://github.com/login/device/code",
    client_id="Iv1.b507a08c87ecfe98",
    scopes=("read:user",),
)


def expiry_ms(expires_in: Any) -> int:
    """`expires_in` seconds from now as epoch milliseconds (the unit the CLIs' files use)."""
    seconds = expires_in if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) else 3600
    return int((time.time() + seconds) * 1000)


def token_fields(answer: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """A token endpoint's answer as credentials-file fields. A refresh token that is not
    rotated (Google) keeps the old one; so do resource_url and id_token when not repeated."""
    if not isinstance(answer.get("access_token"), str) or not answer["access_token"]:
        raise RefreshFailed("the token endpoint answered without an access_token")
    new = {"access_token": answer["access_token"],
           "refresh_token": answer.get("refresh_token") or old.get("refresh_token"),
           "token_type": answer.get("token_type") or old.get("token_type") or "Bearer",
           "expiry_date": expiry_ms(answer.get("expires_in"))}
    for key in ("resource_url", "id_token", "scope"):
        if answer.get(key):
            new[key] = answer[key]
    return new


async def refresh(session: aiohttp.ClientSession, client: OAuthClient, creds: dict[str, Any],
                  timeout: float = 30.0) -> dict[str, Any]:
    """The refresh_token grant. LoginRequired when the endpoint refuses the token for good."""
    token = creds.get("refresh_token")
    if not isinstance(token, str) or not token:
        raise LoginRequired("the credentials hold no refresh_token")
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": client.client_id}
    if client.client_secret:
        form["client_secret"] = client.client_secret
    try:
        async with session.post(client.token_url, data=form, headers={"Accept": "application/json"},
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            status = resp.status
            try:
                answer = await resp.json(content_type=None)
            except ValueError:
                answer = None
    except aiohttp.ClientProxyConnectionError as e:  # the proxy by address only: its URL may hold a password
        raise RefreshFailed(f"token endpoint {client.token_url} could not be reached through the proxy "
                            f"{e.host}:{e.port}") from None
    except (aiohttp.ClientError, TimeoutError) as e:
        raise RefreshFailed(f"token endpoint {client.token_url} unreachable: {type(e).__name__}") from None
    if status == 200 and isinstance(answer, dict):
        return token_fields(answer, creds)
    error = answer.get("error") if isinstance(answer, dict) else None
    if status in (400, 401) and error in ("invalid_grant", "invalid_client", "unauthorized_client", None):
        detail = answer.get("error_description") if isinstance(answer, dict) else None
        raise LoginRequired(f"the token endpoint refused the refresh token ({error or status}"
                            f"{': ' + detail if detail else ''})")
    raise RefreshFailed(f"token endpoint answered {status} {error or ''}".strip())
