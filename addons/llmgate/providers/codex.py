"""Codex: a ChatGPT plan through Codex CLI's sign-in (its auth.json) and the backend Codex CLI
talks to (https://chatgpt.com/backend-api/codex/responses, the Responses API).

Terms of service: OpenAI's terms allow the ChatGPT sign-in for its own apps (Codex CLI, the
IDE extension); using it from another client is not covered and accounts can be suspended.
The gateway logs a warning the first time an entry is used.

Facts from openai/codex (codex-rs/login/src/server.rs, auth/manager.rs, core/src/client.rs;
the request headers and the stream-only backend as public re-implementations have them):
- auth.json in CODEX_HOME (~/.codex): {"OPENAI_API_KEY", "auth_mode", "tokens": {id_token,
  access_token, refresh_token, account_id}, "last_refresh" (RFC 3339)}. The access token is a
  JWT (its `exp` tells when it dies); Codex CLI also refreshes tokens older than 8 days.
- Refresh: POST https://auth.openai.com/oauth/token, JSON {client_id, grant_type:
  "refresh_token", refresh_token}; the answer may rotate the refresh token and bring a new
  id_token. 401, or error codes refresh_token_expired / _reused / _invalidated, are permanent.
- Requests: Bearer access token, chatgpt-account-id, originator: codex_cli_rs, session_id,
  `store: false`; the backend answers only streams (a request the client did not stream is
  collected from the stream's events here).
- Usage limits: 429 {"error": {"type": "usage_limit_reached", "plan_type", "resets_at",
  "resets_in_seconds"}}; "usage_not_included": the plan has no Codex.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.sse import SSEParser
from llmgate.credentials import oauth
from llmgate.credentials.accounts import AccountSet, OAuthAccount, platform_tag
from llmgate.credentials.store import CredentialsFile, LoginRequired, RefreshFailed
from llmgate.errors import GatewayError
from llmgate.providers.base import ProviderKind, call_token_endpoint

if TYPE_CHECKING:
    from llmgate.request_path.upstream import UpstreamRequest

log = logging.getLogger("llmgate")

DEFAULT_BASE = "https://chatgpt.com/backend-api/codex"
ORIGINATOR = "codex_cli_rs"
CODEX_VERSION = "0.63.0"
REFRESH_AGE = 8 * 86400.0  # seconds: Codex CLI's TOKEN_REFRESH_INTERVAL (8 days)
AUTH_CLAIMS = "https://api.openai.com/auth"
MODELS = ("gpt-5.2-codex", "gpt-5.1-codex", "gpt-5.1-codex-max", "gpt-5.1-codex-mini", "gpt-5.2", "gpt-5.1")
DROPPED = ("max_output_tokens", "temperature", "top_p")  # the backend refuses them (CLIProxyAPI strips them too)
PERMANENT = ("refresh_token_expired", "refresh_token_reused", "refresh_token_invalidated")
_warned: set[str] = set()


def codex_home_file() -> str:
    return os.path.join(os.environ.get("CODEX_HOME") or "~/.codex", "auth.json")


def jwt_claims(token: Any) -> dict[str, Any]:
    """A JWT's payload, unverified (it is only read for its expiry and account id)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (AttributeError, IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def account_id(tokens: dict[str, Any]) -> str | None:
    """tokens.account_id, else the chatgpt_account_id claim of the id token (as Codex CLI does)."""
    value = tokens.get("account_id") or (jwt_claims(tokens.get("id_token")).get(AUTH_CLAIMS) or {}).get(
        "chatgpt_account_id")
    return value if isinstance(value, str) and value else None


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class CodexCredentials(CredentialsFile):
    """auth.json: the tokens sit under "tokens"; expiry is the access token's `exp` or
    last_refresh + 8 days, whichever comes first."""

    def __init__(self, path: Path, login_hint: str):
        super().__init__(path, login_hint, expiry_key="last_refresh", token_key="tokens")

    def _tokens(self) -> dict[str, Any]:
        tokens = self.data.get("tokens")
        return tokens if isinstance(tokens, dict) else {}

    def expires_at(self) -> float | None:
        ends = []
        exp = jwt_claims(self._tokens().get("access_token")).get("exp")
        if isinstance(exp, (int, float)) and not isinstance(exp, bool):
            ends.append(float(exp))
        last = super().expires_at()  # last_refresh as epoch seconds
        if last is not None:
            ends.append(last + REFRESH_AGE)
        return min(ends) if ends else None

    def fresh(self, skew: float = 30.0) -> bool:
        return isinstance(self._tokens().get("access_token"), str) and super().fresh(skew)


class CodexAccount(OAuthAccount):
    def __init__(self, p: Any, rt: Any, path: Path):
        creds = CodexCredentials(path, f"codex login (Codex CLI), or llmgate login codex --credentials {path}")
        super().__init__(p, rt, path, oauth.CODEX, "codex", creds)
        self.session_id = str(uuid.uuid4())

    async def refresh(self, data: dict[str, Any]) -> dict[str, Any]:
        found = data.get("tokens")
        tokens: dict[str, Any] = found if isinstance(found, dict) else {}
        token = tokens.get("refresh_token")
        if not isinstance(token, str) or not token:
            raise LoginRequired("the file holds no ChatGPT refresh token (Codex CLI signed in with an API key?)")
        client = self.client or oauth.CODEX
        body = {"client_id": client.client_id, "grant_type": "refresh_token", "refresh_token": token}
        status, answer = await call_token_endpoint(
            self.session(client.token_url), "POST", client.token_url, f"token endpoint {client.token_url}",
            json=body, headers={"Accept": "application/json"})
        if status == 200 and isinstance(answer, dict) and isinstance(answer.get("access_token"), str):
            new = {**tokens, **{k: answer[k] for k in ("id_token", "access_token", "refresh_token")
                                if isinstance(answer.get(k), str) and answer[k]}}
            new["account_id"] = account_id({"id_token": new.get("id_token")}) or tokens.get("account_id")
            return {"tokens": new, "last_refresh": now_rfc3339()}
        code = _error_code(answer)
        if status == 401 or code in PERMANENT:
            raise LoginRequired(f"the token endpoint refused the refresh token ({code or status})")
        raise RefreshFailed(f"token endpoint answered {status} {code or ''}".strip())

    async def prepare(self, up: UpstreamRequest, model: str, purpose: str, force: bool = False) -> None:
        creds = await self.token(force)
        tokens = creds["tokens"]
        system, arch = platform_tag()
        up.headers.update({
            "Authorization": f"Bearer {tokens['access_token']}",
            "originator": ORIGINATOR,
            "version": CODEX_VERSION,
            "session_id": self.session_id,
            "User-Agent": f"{ORIGINATOR}/{CODEX_VERSION} ({system}; {arch})",
            "Accept": "text/event-stream",
        })
        if acct := account_id(tokens):
            up.headers["chatgpt-account-id"] = acct
        if up.body:
            up.body = codex_body(up.body)

    def error(self, status: int, headers: Any, body: bytes) -> GatewayError | None:
        return usage_error(self.p.id, self.name, status, headers, body)


def codex_body(body: bytes) -> bytes:
    """What the backend takes: always a stream, never stored, instructions present, no sampling
    or output-length fields."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, dict):
        return body
    data.update(stream=True, store=False)
    if not isinstance(data.get("instructions"), str):
        data["instructions"] = ""
    for key in DROPPED:
        data.pop(key, None)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _error_code(answer: Any) -> str | None:
    err = answer.get("error") if isinstance(answer, dict) else None
    code = err.get("code") or err.get("type") if isinstance(err, dict) else err
    return code if isinstance(code, str) else None


def _retry_after(err: dict[str, Any], headers: Any) -> dict[str, str]:
    wait = err.get("resets_in_seconds")
    if not isinstance(wait, (int, float)) and isinstance(err.get("resets_at"), (int, float)):
        wait = err["resets_at"] - time.time()
    if isinstance(wait, (int, float)) and not isinstance(wait, bool):
        return {"Retry-After": str(max(1, round(wait)))}
    return {"Retry-After": headers["Retry-After"]} if "Retry-After" in headers else {}


def usage_error(p_id: str, account: str, status: int, headers: Any, body: bytes) -> GatewayError | None:
    """The backend's usage-limit answers as named errors with the wait until the limit resets."""
    try:
        err = json.loads(body).get("error")
    except (ValueError, AttributeError):
        err = None
    return classify(err, status, headers, f"account {account} (provider '{p_id}')") if isinstance(err, dict) else None


def classify(err: dict[str, Any], status: int, headers: Any, who: str) -> GatewayError | None:
    """An error object of the backend (an answer's, or a failed stream's) as a named error."""
    kind, plan = err.get("type") or err.get("code"), err.get("plan_type")
    who += f" (plan {plan})" if plan else ""
    message = str(err.get("message") or "")[:300]
    if kind == "usage_limit_reached":
        return GatewayError(429, f"ChatGPT usage limit reached for {who}: {message}", code="quota_exhausted",
                            headers=_retry_after(err, headers))
    if kind == "usage_not_included":
        return GatewayError(403, f"Codex is not included in the ChatGPT plan of {who}: {message}",
                            code="account_not_allowed")
    if status == 429 or kind == "rate_limit_exceeded":
        return GatewayError(429, f"Rate limited for {who}: {message}", code="rate_limited",
                            headers=_retry_after(err, headers))
    return None


def collect(body: bytes) -> bytes:
    """A streamed Responses answer -> the response object of its last event. Output items come
    from response.output_item.done when the final event lists none."""
    parser, final = SSEParser(), None
    items: dict[Any, dict[str, Any]] = {}
    for ev in [*parser.feed(body), *parser.close()]:
        try:
            data = json.loads(ev.data or "")
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            continue
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "response.output_item.done" and isinstance(data.get("item"), dict):
            index = data.get("output_index")
            items[index if type(index) is int else len(items)] = data["item"]
        elif kind in ("response.completed", "response.incomplete", "response.failed", "error"):
            final = data
    if final is None or not isinstance(final.get("response"), dict):
        why = ((final or {}).get("message") or "the stream ended before response.completed")
        raise GatewayError(502, f"Codex backend: {why}", code="upstream_error")
    response = final["response"]
    if final["type"] == "response.failed":  # a usage limit may come this way too (Codex CLI reads both)
        err = response.get("error") if isinstance(response.get("error"), dict) else {}
        raise classify(err, 502, {}, "the account") or GatewayError(
            502, f"Codex backend failed the response: {err.get('message') or err}", code="upstream_error")
    if not response.get("output") and items:
        response["output"] = [items[i] for i in sorted(items)]
    return json.dumps(response, ensure_ascii=False, separators=(",", ":")).encode()


def _accounts(p: Any, rt: Any) -> AccountSet:
    if p.id not in _warned:
        _warned.add(p.id)
        log.warning("provider %s uses ChatGPT sign-ins (Codex): OpenAI's terms cover them for its own apps; "
                    "accounts used from other clients can be suspended.", p.id)
    return AccountSet(p, lambda path: CodexAccount(p, rt, path), KIND.credentials)


KIND = ProviderKind(
    type="codex",
    wire="responses",
    chat_url=lambda base, model, stream: base + "/responses",
    models_path=None,  # the built-in list (or `models:`)
    auth_headers=lambda key: {},
    parse_models=lambda body: [],
    default_base_url=DEFAULT_BASE,
    default_models=MODELS,
    accounts=_accounts,
    credentials=codex_home_file(),
    config_fields=("credentials", "token_url"),
    secret_headers=("Authorization",),  # the OAuth access token
    collect=collect,
)
