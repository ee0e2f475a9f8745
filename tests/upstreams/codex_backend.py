"""Strict local double of what Codex CLI's "Sign in with ChatGPT" talks to: OpenAI's auth
server (auth.openai.com: /oauth/authorize, /oauth/token) and the ChatGPT backend's Codex
endpoint (chatgpt.com/backend-api/codex/responses), in one aiohttp.web app.

    python -m tests.upstreams.codex_backend --port 0 [--models gpt-5.1-codex,...]

prints ``READY <port>``.

Confirmed (openai/codex, codex-rs/login/src/server.rs, auth/manager.rs, token_data.rs,
core/src/client.rs):
- client id app_EMoamEEZ73f0CkXaXp7hrann; authorize at {issuer}/oauth/authorize with
  response_type=code, client_id, redirect_uri http://localhost:<port>/auth/callback, scope
  "openid profile email offline_access ...", code_challenge (S256), state,
  id_token_add_organizations, codex_cli_simplified_flow, originator.
- code exchange: POST /oauth/token form grant_type=authorization_code, code, redirect_uri,
  client_id, code_verifier -> {id_token, access_token, refresh_token}.
- refresh: POST /oauth/token JSON {client_id, grant_type: "refresh_token", refresh_token} ->
  {id_token?, access_token?, refresh_token?}; failures carry error codes
  refresh_token_expired | refresh_token_reused | refresh_token_invalidated, and a 401 is
  permanent for Codex CLI.
- the id token's "https://api.openai.com/auth" claim holds chatgpt_account_id and
  chatgpt_plan_type (login/src/server.rs takes the account id from it).
- requests carry Authorization: Bearer <access token>, chatgpt-account-id and originator
  (the header names as several public re-implementations send them: opencode, pi-mono,
  CLIProxyAPI; the header code of codex-rs/core was not read here).
- usage limits: error {type: "usage_limit_reached" | "usage_not_included", message, plan_type,
  resets_in_seconds} (newer builds also resets_at).
Assumed (peers' reports, not the official source): the backend answers only streams
("Stream must be set to true"), requires store false, refuses
max_output_tokens / temperature / top_p; the exact wording and HTTP shape of its errors; a
missing chatgpt-account-id or originator is refused; refresh tokens rotate on every refresh and a
reused one is refused (401 refresh_token_reused) without revoking the newer ones; the real
redirect allow-list has only ports 1455 and 1457 (this double takes any localhost port);
access tokens are JWTs whose `exp` the backend enforces (401 token_expired).

Confirmed by the real Codex CLI 0.171 (tests/e2e/test_intercept_codex_qwen.py): it sends no
`instructions` (its base instructions ride as a developer message), so they are optional here.

Answers come from tests.upstreams.responses_api (validation, "Echo: <text>", reasoning items,
tool calls), so this double is as strict about the Responses body as that one.

Control (no auth): GET /__codex (refresh_calls, refresh_failures, current refresh token per
account, valid access tokens, logins); POST /__codex/seed JSON {account_id?, plan?, expired?}
-> an auth.json as Codex CLI writes it; POST /__codex/usage_limit JSON {account_id,
resets_in_seconds (null: lifted), type?, in_stream?: a 200 stream whose response.failed carries
the error, as Codex CLI also expects it}; POST /__codex/config JSON {refresh_delay,
access_ttl}; POST /__codex/expire_access; POST /__codex/reset.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from aiohttp import web

from tests.upstreams import openai_compat as oc
from tests.upstreams import responses_api as ra
from tests.upstreams import serving

CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
DEFAULT_MODELS = ["gpt-5.2-codex", "gpt-5.1-codex", "gpt-5.1-codex-mini", "gpt-5.2", "gpt-5.1"]
AUTH = "https://api.openai.com/auth"
REFUSED_PARAMS = ("max_output_tokens", "temperature", "top_p")
CODEX = web.AppKey("codex", object)


@dataclass
class CodexState:
    refresh_delay: float = 0.0
    access_ttl: float = 3600.0
    access: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (account, exp)
    refresh: dict[str, str] = field(default_factory=dict)  # live refresh token -> account
    plans: dict[str, str] = field(default_factory=dict)  # account -> plan
    codes: dict[str, dict[str, str]] = field(default_factory=dict)  # authorization code -> its grant
    limits: dict[str, tuple[float, str, bool]] = field(default_factory=dict)  # account -> (resets at, type, in stream)
    refresh_calls: int = 0
    refresh_failures: int = 0
    logins: int = 0

    def jwt(self, claims: dict[str, Any]) -> str:
        def part(obj: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
        return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.{secrets.token_urlsafe(16)}"

    def issue(self, account: str, expired: bool = False) -> dict[str, str]:
        plan = self.plans.setdefault(account, "plus")
        exp = time.time() + (-60 if expired else self.access_ttl)
        auth = {"chatgpt_account_id": account, "chatgpt_plan_type": plan, "chatgpt_user_id": "user-" + account}
        access = self.jwt({"exp": int(exp), "iat": int(time.time()), AUTH: auth, "jti": secrets.token_hex(8)})
        refresh = "rt_" + secrets.token_urlsafe(24)
        self.access[access], self.refresh[refresh] = (account, exp), account
        id_token = self.jwt({"email": f"{account}@example.com", "exp": int(time.time()) + 3600, AUTH: auth})
        return {"id_token": id_token, "access_token": access, "refresh_token": refresh}


def state(request: web.Request) -> CodexState:
    return request.app[CODEX]  # type: ignore[return-value]


def oauth_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, "type": "invalid_request_error"}},
                             status=status)


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


async def authorize(request: web.Request) -> web.Response:
    """The browser leg: checks what Codex CLI sends, then "signs in" at once and redirects."""
    q, st = request.query, state(request)
    redirect = q.get("redirect_uri", "")
    url = urlsplit(redirect)
    problems = [
        q.get("client_id") != CLIENT_ID and "unknown client_id",
        q.get("response_type") != "code" and "response_type must be code",
        (url.scheme, url.hostname, url.path) != ("http", "localhost", "/auth/callback") and "redirect_uri not allowed",
        not {"openid", "offline_access"} <= set(q.get("scope", "").split()) and "scope lacks openid offline_access",
        q.get("code_challenge_method") != "S256" and "code_challenge_method must be S256",
        len(q.get("code_challenge", "")) != 43 and "code_challenge must be 43 characters",
        not q.get("state") and "state is required",
    ]
    if any(problems):
        return web.Response(status=400, text="; ".join(p for p in problems if p))
    account = q.get("login_hint") or f"acct-{secrets.token_hex(4)}"  # a new ChatGPT account per sign-in
    code = "ac_" + secrets.token_urlsafe(16)
    st.codes[code] = {"account": account, "redirect_uri": redirect, "challenge": q["code_challenge"]}
    raise web.HTTPFound(redirect + "?" + urlencode({"code": code, "state": q["state"]}))


async def token(request: web.Request) -> web.Response:
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("grant_type") != "refresh_token":
            return oauth_error(400, "invalid_request", "JSON bodies are refresh_token grants")
        return await refresh(request, body)
    if request.content_type != "application/x-www-form-urlencoded":
        return oauth_error(400, "invalid_request", "unsupported content type")
    form = dict(parse_qsl((await request.read()).decode()))
    if form.get("grant_type") != "authorization_code":
        return oauth_error(400, "unsupported_grant_type", "form bodies are authorization_code grants")
    return exchange(state(request), form)


def exchange(st: CodexState, form: dict[str, str]) -> web.Response:
    grant = st.codes.pop(form.get("code", ""), None)
    if form.get("client_id") != CLIENT_ID:
        return oauth_error(401, "invalid_client", "unknown client")
    if grant is None:
        return oauth_error(400, "invalid_grant", "unknown or used authorization code")
    if form.get("redirect_uri") != grant["redirect_uri"]:
        return oauth_error(400, "invalid_grant", "redirect_uri differs from the authorization request")
    if s256(form.get("code_verifier", "")) != grant["challenge"]:
        return oauth_error(400, "invalid_grant", "code_verifier does not match the code_challenge")
    st.logins += 1
    return web.json_response({**st.issue(grant["account"]), "token_type": "Bearer", "expires_in": int(st.access_ttl)})


async def refresh(request: web.Request, body: dict[str, Any]) -> web.Response:
    st = state(request)
    st.refresh_calls += 1
    if body.get("client_id") != CLIENT_ID:
        st.refresh_failures += 1
        return oauth_error(401, "invalid_client", "unknown client")
    if st.refresh_delay:
        await asyncio.sleep(st.refresh_delay)
    account = st.refresh.pop(str(body.get("refresh_token")), None)  # no await from here: rotation is atomic
    if account is None:
        st.refresh_failures += 1
        return oauth_error(401, "refresh_token_reused", "Your refresh token has already been used to generate a "
                           "new access token. Please try signing in again.")
    return web.json_response(st.issue(account))


def check_auth(request: web.Request, st: CodexState) -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    known = st.access.get(value) if scheme == "Bearer" else None
    if known is None:
        raise oc.ApiError(401, "Could not parse your authentication token.", code="invalid_token")
    account, exp = known
    if exp <= time.time():
        raise oc.ApiError(401, "Provided authentication token is expired. Please try signing in again.",
                          code="token_expired")
    if request.headers.get("chatgpt-account-id") != account:
        raise oc.ApiError(403, "chatgpt-account-id is missing or does not match the token.",
                          code="account_mismatch")
    if not request.headers.get("originator"):
        raise oc.ApiError(400, "originator header is required.", code="missing_originator")
    return account


def check_limit(st: CodexState, account: str) -> None:
    until, kind, in_stream = st.limits.get(account, (0.0, "", False))
    left = until - time.time()
    if left > 0:
        error = {"type": kind, "message": "The usage limit has been reached", "plan_type": st.plans.get(account),
                 "resets_at": int(until), "resets_in_seconds": int(left)}
        raise LimitError(error, in_stream)


class LimitError(Exception):
    def __init__(self, error: dict[str, Any], in_stream: bool = False):
        super().__init__(error["message"])
        self.error, self.in_stream = error, in_stream


def check_body(body: dict[str, Any]) -> None:
    if body.get("stream") is not True:
        raise oc.invalid("Stream must be set to true", "stream")
    if body.get("store") is not False:
        raise oc.invalid("Store must be set to false", "store")
    if "instructions" in body and not isinstance(body["instructions"], str):  # Codex 0.171 sends none
        raise oc.invalid("Instructions must be a string", "instructions")
    for name in REFUSED_PARAMS:
        if name in body:
            raise oc.invalid(f"Unsupported parameter: {name}", name)


async def responses(request: web.Request) -> web.StreamResponse:
    st = state(request)
    check_limit(st, check_auth(request, st))
    body = await oc.parse_json_body(request)
    check_body(body)
    ra.validate_request(body, ra.state_of(request))
    try:
        return await ra.respond_normally(request, body)
    except ConnectionError:
        return oc.drop_connection(request)


async def inspect(request: web.Request) -> web.Response:
    st = state(request)
    current: dict[str, str] = {}
    for tok, account in st.refresh.items():
        current[account] = tok  # the newest one of each account (insertion order)
    return web.json_response({
        "refresh_calls": st.refresh_calls, "refresh_failures": st.refresh_failures, "logins": st.logins,
        "current_refresh_token": current, "valid_refresh_tokens": list(st.refresh),
        "valid_access_tokens": [t for t, (_, exp) in st.access.items() if exp > time.time()]})


async def seed(request: web.Request) -> web.Response:
    st, data = state(request), await serving.control_body(request)
    account = data.get("account_id") or f"acct-{secrets.token_hex(4)}"
    if data.get("plan"):
        st.plans[account] = data["plan"]
    tokens = st.issue(account, expired=bool(data.get("expired")))
    when = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return web.json_response({"OPENAI_API_KEY": None, "tokens": {**tokens, "account_id": account},
                              "last_refresh": when})


async def usage_limit(request: web.Request) -> web.Response:
    st, data = state(request), await serving.control_body(request)
    account, wait = data.get("account_id"), data.get("resets_in_seconds")
    if wait is None:
        st.limits.pop(account, None)
    else:
        st.limits[account] = (time.time() + float(wait), data.get("type") or "usage_limit_reached",
                              bool(data.get("in_stream")))
    return web.json_response({"account_id": account, "resets_in_seconds": wait})


async def configure(request: web.Request) -> web.Response:
    st, data = state(request), await serving.control_body(request)
    for name in ("refresh_delay", "access_ttl"):
        if name in data:
            setattr(st, name, float(data[name]))
    return web.json_response({"refresh_delay": st.refresh_delay, "access_ttl": st.access_ttl})


async def expire_access(request: web.Request) -> web.Response:
    return serving.expire_tokens(state(request).access)


def reset(app: web.Application) -> None:
    vars(app[CODEX]).update(vars(CodexState()))


@web.middleware
async def codex_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except LimitError as e:
        if not e.in_stream:
            return web.json_response({"error": e.error}, status=429)
        failed = {"id": "resp_failed", "object": "response", "status": "failed", "error": e.error, "output": []}
        return await ra.stream_reply(request, [ra.lifecycle("created", {**failed, "status": "in_progress"}),
                                               ra.lifecycle("failed", failed)])


def make_app(api_key: str | None, models: list[str], brain: Any = None) -> web.Application:
    """api_key is ignored: auth is the ChatGPT sign-in. brain: scripted answers (responses_api)."""
    app = serving.application(oc.openai_errors, codex_errors)
    app[CODEX] = CodexState()
    app[oc.STATE] = ra.ResponsesState(api_key=None, models=list(models), brain=brain)
    app.router.add_get("/oauth/authorize", authorize)
    app.router.add_post("/oauth/token", token)
    app.router.add_post("/backend-api/codex/responses", responses)
    serving.add_controls(app, "/__codex", inspect, {"seed": seed, "usage_limit": usage_limit, "config": configure,
                                                    "expire_access": expire_access}, reset)
    return app


def main(argv: list[str] | None = None) -> None:
    serving.main(make_app, DEFAULT_MODELS, __doc__, argv)


if __name__ == "__main__":
    main()
