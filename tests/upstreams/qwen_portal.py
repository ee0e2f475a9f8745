"""Strict local double of Qwen Code's OAuth service (chat.qwen.ai) and the Qwen portal
chat endpoint (portal.qwen.ai), in one aiohttp.web app.

Facts from QwenLM/qwen-code packages/core/src/qwen/qwenOAuth2.ts and
core/openaiContentGenerator/provider/dashscope.ts; see also
/work/shared/reference/providers.md, "Qwen Code".

As a process (from the repository root)::

    python -m tests.upstreams.qwen_portal --host 127.0.0.1 --port 0 \\
        [--models coder-model,vision-model] [--client-id ID] [--poll-interval 2]
        [--access-ttl 3600] [--device-ttl 600] [--auto-approve-after N]
        [--refresh-delay 0] [--resource-url '{host}'] [--api-key IGNORED]

prints exactly one line ``READY <port>`` once listening. Every flag but
--host/--port/--models/--api-key also reads an environment variable, used when
the flag is absent (and by ``make_app(api_key, models)`` in-process):
QWEN_DOUBLE_CLIENT_ID, QWEN_DOUBLE_POLL_INTERVAL, QWEN_DOUBLE_ACCESS_TTL,
QWEN_DOUBLE_DEVICE_TTL, QWEN_DOUBLE_AUTO_APPROVE_AFTER, QWEN_DOUBLE_REFRESH_DELAY,
QWEN_DOUBLE_RESOURCE_URL. In-process, prefer ``make_app(None, models,
options=QwenOptions(...))``. --api-key is ignored: chat auth is always an access
token issued by this server.

OAuth endpoints (form bodies only: Content-Type application/x-www-form-urlencoded,
each parameter at most once; errors are 400 {"error", "error_description"}):
    POST /api/v1/oauth2/device/code
        client_id (must equal the configured one, default
        f0304373b74a44d2b584a3fb70ca9e56, else invalid_client), scope (space-separated,
        each of openid profile email model.completion, else invalid_scope),
        code_challenge (43 base64url chars) and code_challenge_method=S256 (else
        invalid_request) -> 200 {device_code, user_code, verification_uri,
        verification_uri_complete, expires_in}; no "interval", like the real service.
    POST /api/v1/oauth2/token
        grant_type=urn:ietf:params:oauth:grant-type:device_code, client_id,
        device_code, code_verifier. Checked in this order: unknown device code ->
        invalid_grant; SHA-256(code_verifier) base64url (no padding) != the
        code_challenge -> invalid_grant; past its expires_in -> expired_token; a poll
        sooner than poll_interval after the previous one (the first poll may come at
        once) -> 429 slow_down; denied -> access_denied; not approved ->
        authorization_pending; approved -> 200 {access_token, refresh_token,
        token_type: "Bearer", expires_in, resource_url, scope}; a used code ->
        invalid_grant.
        grant_type=refresh_token, refresh_token, client_id. After the refresh delay,
        the token is checked and rotated atomically: success returns a new
        refresh_token (same shape as above) and the old one is dead from then on
        (reuse -> invalid_grant "Refresh token expired or invalid"). So of several
        concurrent refreshes with one token exactly one wins. Reuse does not revoke
        the newer tokens (assumed). Earlier access tokens stay valid until they
        expire (assumed).
        Other grant types -> unsupported_grant_type.
    resource_url is the --resource-url template with {host} = the request's Host
    (default "{host}", i.e. "127.0.0.1:<port>"). Note: qwen-code turns a schemeless
    resource_url into "https://<resource_url>/v1"; use --resource-url 'http://{host}'
    for a client that follows it literally against this plain-HTTP server.

Chat endpoint:
    POST /v1/chat/completions   checks, in order: Authorization "Bearer <token>" with a
        token issued here and not expired -> else 401 {"error": {"message": "Invalid
        access token or token expired", "type": "invalid_request_error", "param": null,
        "code": "invalid_api_key"}}; headers User-Agent starting "QwenCode/",
        X-DashScope-AuthType "qwen-oauth", X-DashScope-CacheControl "enable",
        X-DashScope-UserAgent present -> else 400 naming the header; the quota mode
        (below); then openai_compat's validation (JSON body, known params, models,
        messages, tools, ...) after removing the DashScope extras qwen-code sends
        (preserve_thinking, vl_high_resolution_images, enable_thinking: booleans;
        thinking_budget: integer); cache_control, on content parts and tools, must be
        {"type": "ephemeral"}; a system message anywhere but first -> 400 "System
        message must be at the beginning". Answers like openai_compat (echo, tool
        calls, streaming with stream_options.include_usage), but "model" is echoed as
        sent. Models: --models (default coder-model, vision-model) plus
        openai_compat's fault-* / sse-torture scenario models.
    GET /v1/models              404 (the portal has no model list), like any other
                                unknown path: 404 "Invalid URL (METHOD /path)".

Quota modes (POST /__oauth/quota?mode=...&retry_after=60):
    ok            normal answers
    exhausted     429 {"error": {"code": "insufficient_quota", "message": "Free allocated
                  quota exceeded.", "type": "insufficient_quota"}}, Retry-After header
    discontinued  403 {"error": {"code": "access_denied", "type": "access_denied",
                  "message": "Qwen OAuth free tier has been discontinued for this
                  account. ..."}} -- wording and type ASSUMED, not observed.

Control / inspection (no auth):
    GET  /__oauth              {"refresh_calls", "refresh_failures", "device_polls",
                               "issued": {"device_codes", "access_tokens",
                               "refresh_tokens"}, "valid_access_tokens": [...],
                               "valid_refresh_tokens": [...], "current_refresh_token"
                               (the newest valid one, or null), "pending_user_codes",
                               "quota", "config"}
    POST /__oauth/approve?user_code=U   approve (no user_code: the newest pending code);
                                        unknown -> 404
    POST /__oauth/deny?user_code=U      deny: its polls answer access_denied
    POST /__oauth/expire_device?user_code=U   expire it (no user_code: all) -> expired_token
    POST /__oauth/expire_access        invalidate every access token issued so far
    POST /__oauth/seed                 a fresh credential set, as qwen-code stores it in
                                       ~/.qwen/oauth_creds.json: {access_token,
                                       refresh_token, token_type, resource_url,
                                       expiry_date (epoch ms)}; JSON body {"expired": true}
                                       -> the access token is already expired (expiry_date
                                       in the past, refused by chat) but the refresh
                                       token works
    POST /__oauth/quota?mode=ok|exhausted|discontinued[&retry_after=S]
    POST /__oauth/config               JSON body with any of refresh_delay, poll_interval,
                                       access_ttl, device_ttl, auto_approve_after (null =
                                       off) -> the whole config
    POST /__oauth/reset                forget grants, tokens, counters; quota back to ok
    GET  /__requests, DELETE /__requests   serving's request log (control calls are
                                       logged too); form requests also get "form": {...}

auto_approve_after N: the first N polls of a device code are pending, poll N+1 gets
the tokens (slow_down answers do not count); unset = approve only via /__oauth/approve.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import json
import os
import re
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

from aiohttp import web

from tests.upstreams import openai_compat as oc
from tests.upstreams import serving

DEFAULT_MODELS = ["coder-model", "vision-model"]
CLIENT_ID = "f0304373b74a44d2b584a3fb70ca9e56"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SCOPES = frozenset(("openid", "profile", "email", "model.completion"))
FORM = "application/x-www-form-urlencoded"
CHALLENGE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")
QWEN_EXTRAS = {  # DashScope-only body fields qwen-code sends: kind
    "preserve_thinking": "a boolean",
    "vl_high_resolution_images": "a boolean",
    "enable_thinking": "a boolean",
    "thinking_budget": "an integer",
}
REQUIRED_HEADERS = ("User-Agent", "X-DashScope-AuthType", "X-DashScope-CacheControl",
                    "X-DashScope-UserAgent")
INVALID_TOKEN = "Invalid access token or token expired"
DISCONTINUED = ("Qwen OAuth free tier has been discontinued for this account. Use an"
                " Alibaba Cloud Model Studio (DashScope) API key instead.")
QUOTA_MODES = ("ok", "exhausted", "discontinued")
USER_CODE_ALPHABET = string.ascii_uppercase + string.digits
ENV = {  # option: environment variable
    "client_id": "QWEN_DOUBLE_CLIENT_ID",
    "poll_interval": "QWEN_DOUBLE_POLL_INTERVAL",
    "access_ttl": "QWEN_DOUBLE_ACCESS_TTL",
    "device_ttl": "QWEN_DOUBLE_DEVICE_TTL",
    "auto_approve_after": "QWEN_DOUBLE_AUTO_APPROVE_AFTER",
    "refresh_delay": "QWEN_DOUBLE_REFRESH_DELAY",
    "resource_url": "QWEN_DOUBLE_RESOURCE_URL",
}


# --------------------------------------------------------------------------
# Options and state
# --------------------------------------------------------------------------


@dataclass
class QwenOptions:
    client_id: str = CLIENT_ID
    poll_interval: float = 2.0  # seconds between device polls before slow_down
    access_ttl: float = 3600.0  # seconds; expires_in is its integer part
    device_ttl: float = 600.0  # device code lifetime (expires_in)
    auto_approve_after: int | None = None
    refresh_delay: float = 0.0  # seconds every refresh grant sleeps first
    resource_url: str = "{host}"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> QwenOptions:
        environ = os.environ if environ is None else environ
        options = cls()
        for name, variable in ENV.items():
            if environ.get(variable, "") != "":
                setattr(options, name, CONVERT[name](environ[variable]))
        return options


CONVERT: dict[str, Callable[[str], Any]] = {
    "client_id": str, "poll_interval": float, "access_ttl": float, "device_ttl": float,
    "auto_approve_after": int, "refresh_delay": float, "resource_url": str,
}


@dataclass
class DeviceGrant:
    device_code: str
    user_code: str
    scope: str
    code_challenge: str
    expires_at: float  # time.monotonic()
    status: str = "pending"  # pending | approved | denied | used
    last_poll: float | None = None
    polls: int = 0  # polls that were not slow_down


@dataclass
class QwenState:
    options: QwenOptions
    grants: dict[str, DeviceGrant] = field(default_factory=dict)  # by device_code
    access_tokens: dict[str, float] = field(default_factory=dict)  # token: expiry (epoch s)
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # valid token: scope
    refresh_calls: int = 0
    refresh_failures: int = 0
    device_polls: int = 0
    issued: dict[str, int] = field(default_factory=lambda: {
        "device_codes": 0, "access_tokens": 0, "refresh_tokens": 0})
    quota: str = "ok"
    retry_after: int = 60
    serial: itertools.count = field(default_factory=lambda: itertools.count(1))

    def reset(self) -> None:
        fresh = QwenState(self.options)
        for name in ("grants", "access_tokens", "refresh_tokens", "refresh_calls",
                     "refresh_failures", "device_polls", "issued", "quota", "retry_after"):
            setattr(self, name, getattr(fresh, name))

    def valid_access_tokens(self) -> list[str]:
        now = time.time()
        return [t for t, expiry in self.access_tokens.items() if expiry > now]

    def token(self, prefix: str) -> str:
        return f"{prefix}{next(self.serial)}_{secrets.token_urlsafe(18)}"

    def issue(self, scope: str, expired: bool = False) -> tuple[str, str, float]:
        """A new access + refresh token pair; returns them and the access expiry."""
        access, refresh = self.token("qat_"), self.token("qrt_")
        ttl = self.options.access_ttl
        expiry = time.time() + (-60.0 if expired else ttl)
        self.access_tokens[access] = expiry
        self.refresh_tokens[refresh] = scope
        self.issued["access_tokens"] += 1
        self.issued["refresh_tokens"] += 1
        return access, refresh, expiry


QWEN = web.AppKey("qwen_portal_state", QwenState)


class OAuthError(Exception):
    """An error answered in RFC 6749's {"error", "error_description"} shape."""

    def __init__(self, error: str, description: str | None = None, status: int = 400) -> None:
        super().__init__(error)
        self.status = status
        self.body: dict[str, str] = {"error": error}
        if description:
            self.body["error_description"] = description

    def response(self) -> web.Response:
        return web.json_response(self.body, status=self.status,
                                 headers={"Cache-Control": "no-store"})


# --------------------------------------------------------------------------
# OAuth helpers
# --------------------------------------------------------------------------


async def parse_form(request: web.Request) -> dict[str, str]:
    if request.content_type != FORM:
        raise OAuthError("invalid_request",
                         f"Content-Type must be {FORM}, got '{request.content_type}'")
    try:
        text = (await request.read()).decode()
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "Malformed form body") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise OAuthError("invalid_request", f"Parameter '{key}' repeated")
        form[key] = value
    return form


def required(form: dict[str, str], key: str) -> str:
    if not form.get(key):
        raise OAuthError("invalid_request", f"Missing required parameter '{key}'")
    return form[key]


def check_client(state: QwenState, form: dict[str, str]) -> None:
    if required(form, "client_id") != state.options.client_id:
        raise OAuthError("invalid_client", "Unknown client_id")


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def resource_url(state: QwenState, request: web.Request) -> str:
    return state.options.resource_url.replace("{host}", request.host)


def token_body(state: QwenState, request: web.Request, access: str, refresh: str,
               scope: str) -> dict[str, Any]:
    return {"access_token": access, "refresh_token": refresh, "token_type": "Bearer",
            "expires_in": int(state.options.access_ttl),
            "resource_url": resource_url(state, request), "scope": scope}


def find_grant(state: QwenState, request: web.Request, pending_only: bool = True) -> DeviceGrant:
    user_code = request.query.get("user_code")
    grants = [g for g in state.grants.values()
              if (user_code is None or g.user_code == user_code)
              and (not pending_only or g.status == "pending")]
    if not grants:
        raise OAuthError("not_found", f"No pending device code {user_code or ''}".strip(),
                         status=404)
    return grants[-1]


# --------------------------------------------------------------------------
# OAuth handlers
# --------------------------------------------------------------------------


async def device_code(request: web.Request) -> web.Response:
    state = request.app[QWEN]
    form = await parse_form(request)
    check_client(state, form)
    scopes = required(form, "scope").split()
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise OAuthError("invalid_scope", f"Unknown scope: {' '.join(unknown)}")
    challenge = form.get("code_challenge")
    if not challenge or form.get("code_challenge_method") != "S256":
        raise OAuthError("invalid_request",
                         "PKCE required: code_challenge and code_challenge_method=S256")
    if not CHALLENGE_PATTERN.match(challenge):
        raise OAuthError("invalid_request", "code_challenge must be 43 base64url characters")
    code = secrets.token_urlsafe(32)
    user_code = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(8))
    user_code = f"{user_code[:4]}-{user_code[4:]}"
    state.grants[code] = DeviceGrant(code, user_code, " ".join(scopes), challenge,
                                     time.monotonic() + state.options.device_ttl)
    state.issued["device_codes"] += 1
    verification = f"http://{request.host}/authorize"
    return web.json_response({
        "device_code": code,
        "user_code": user_code,
        "verification_uri": verification,
        "verification_uri_complete": f"{verification}?user_code={quote(user_code)}&client=qwen-code",
        "expires_in": int(state.options.device_ttl),
    })


async def token(request: web.Request) -> web.Response:
    state = request.app[QWEN]
    form = await parse_form(request)
    grant_type = required(form, "grant_type")
    if grant_type == DEVICE_GRANT:
        return poll_device(state, request, form)
    if grant_type == "refresh_token":
        return await refresh(state, request, form)
    raise OAuthError("unsupported_grant_type", f"Unsupported grant_type '{grant_type}'")


def poll_device(state: QwenState, request: web.Request, form: dict[str, str]) -> web.Response:
    state.device_polls += 1
    check_client(state, form)
    grant = state.grants.get(required(form, "device_code"))
    if grant is None:
        raise OAuthError("invalid_grant", "Unknown device_code")
    if s256(required(form, "code_verifier")) != grant.code_challenge:
        raise OAuthError("invalid_grant", "code_verifier does not match code_challenge")
    if grant.status == "used":
        raise OAuthError("invalid_grant", "device_code already used")
    now = time.monotonic()
    if now >= grant.expires_at:
        raise OAuthError("expired_token", "The device code has expired")
    previous, grant.last_poll = grant.last_poll, now
    if previous is not None and now - previous < state.options.poll_interval:
        raise OAuthError("slow_down", "Polling too frequently", status=429)
    grant.polls += 1
    if grant.status == "denied":
        raise OAuthError("access_denied", "The user denied the authorization request")
    after = state.options.auto_approve_after
    if grant.status == "pending" and after is not None and grant.polls > after:
        grant.status = "approved"
    if grant.status != "approved":
        raise OAuthError("authorization_pending", "The authorization request is still pending")
    grant.status = "used"
    access, refresh_token, _ = state.issue(grant.scope)
    return web.json_response(token_body(state, request, access, refresh_token, grant.scope),
                             headers={"Cache-Control": "no-store"})


async def refresh(state: QwenState, request: web.Request, form: dict[str, str]) -> web.Response:
    state.refresh_calls += 1
    try:
        old = required(form, "refresh_token")
        check_client(state, form)
        if state.options.refresh_delay > 0:
            await asyncio.sleep(state.options.refresh_delay)
        # no await from here on: check + rotate is atomic
        scope = state.refresh_tokens.pop(old, None)
        if scope is None:
            raise OAuthError("invalid_grant", "Refresh token expired or invalid")
    except OAuthError:
        state.refresh_failures += 1
        raise
    access, new, _ = state.issue(scope)
    return web.json_response(token_body(state, request, access, new, scope),
                             headers={"Cache-Control": "no-store"})


# --------------------------------------------------------------------------
# Chat
# --------------------------------------------------------------------------


def check_token(state: QwenState, request: web.Request) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    expiry = state.access_tokens.get(value.strip()) if scheme.lower() == "bearer" else None
    if expiry is None or expiry <= time.time():
        raise oc.ApiError(401, INVALID_TOKEN, code="invalid_api_key")


def check_headers(request: web.Request) -> None:
    headers = request.headers
    user_agent = headers.get("User-Agent", "")
    if not user_agent.startswith("QwenCode/"):
        raise header_error("User-Agent", "must start with 'QwenCode/'", user_agent)
    if headers.get("X-DashScope-AuthType") != "qwen-oauth":
        raise header_error("X-DashScope-AuthType", "must be 'qwen-oauth'",
                           headers.get("X-DashScope-AuthType"))
    if headers.get("X-DashScope-CacheControl") != "enable":
        raise header_error("X-DashScope-CacheControl", "must be 'enable'",
                           headers.get("X-DashScope-CacheControl"))
    if not headers.get("X-DashScope-UserAgent"):
        raise header_error("X-DashScope-UserAgent", "is required", None)


def header_error(name: str, rule: str, got: str | None) -> oc.ApiError:
    shown = "missing" if got is None else f"got '{got}'"
    return oc.ApiError(400, f"Header {name} {rule} ({shown}).", param=name,
                       code="invalid_header")


def check_quota(state: QwenState) -> None:
    if state.quota == "exhausted":
        raise QuotaError(429, {"code": "insufficient_quota",
                               "message": "Free allocated quota exceeded.",
                               "type": "insufficient_quota"},
                         {"Retry-After": str(state.retry_after)})
    if state.quota == "discontinued":
        raise QuotaError(403, {"code": "access_denied", "message": DISCONTINUED,
                               "type": "access_denied"}, {})


class QuotaError(Exception):
    def __init__(self, status: int, error: dict[str, str], headers: dict[str, str]) -> None:
        super().__init__(error["message"])
        self.status, self.error, self.headers = status, error, headers

    def response(self) -> web.Response:
        return web.json_response({"error": self.error}, status=self.status,
                                 headers=self.headers)


def strip_qwen_extras(body: dict[str, Any]) -> dict[str, Any]:
    """Type-check and remove the DashScope-only fields openai_compat does not know."""
    for name, kind in QWEN_EXTRAS.items():
        oc.optional(body, name, "", kind)
    return {k: v for k, v in body.items() if k not in QWEN_EXTRAS}


def check_cache_control(body: dict[str, Any]) -> None:
    places: list[tuple[str, Any]] = []
    for i, message in enumerate(body.get("messages") or []):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            places += [(f"messages[{i}].content[{j}]", p) for j, p in enumerate(content)]
    places += [(f"tools[{i}]", t) for i, t in enumerate(body.get("tools") or [])]
    for path, item in places:
        if isinstance(item, dict) and "cache_control" in item:
            if item["cache_control"] != {"type": "ephemeral"}:
                raise oc.invalid(f"Invalid '{path}.cache_control': expected"
                                 " {\"type\": \"ephemeral\"}.", f"{path}.cache_control")


def check_system_first(body: dict[str, Any]) -> None:
    for i, message in enumerate(body["messages"]):
        if i and message["role"] == "system":
            raise oc.invalid("System message must be at the beginning.", f"messages[{i}].role")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[QWEN]
    check_token(state, request)
    check_headers(request)
    check_quota(state)
    body = await oc.parse_json_body(request)
    body = strip_qwen_extras(body)
    check_cache_control(body)
    compat = request.app[oc.STATE]
    oc.validate_chat_request(body, [*compat.models, *oc.SCENARIO_MODELS])
    check_system_first(body)
    scenario = oc.SCENARIOS.get(body["model"], oc.respond_as_sent)
    try:
        return await scenario(request, body)
    except ConnectionError:
        return oc.drop_connection(request)


# --------------------------------------------------------------------------
# Control endpoints
# --------------------------------------------------------------------------


async def inspect(request: web.Request) -> web.Response:
    state = request.app[QWEN]
    refresh_tokens = list(state.refresh_tokens)
    return web.json_response({
        "refresh_calls": state.refresh_calls,
        "refresh_failures": state.refresh_failures,
        "device_polls": state.device_polls,
        "issued": dict(state.issued),
        "valid_access_tokens": state.valid_access_tokens(),
        "valid_refresh_tokens": refresh_tokens,
        "current_refresh_token": refresh_tokens[-1] if refresh_tokens else None,
        "pending_user_codes": [g.user_code for g in state.grants.values()
                               if g.status == "pending"],
        "quota": state.quota,
        "config": asdict(state.options),
    })


async def approve(request: web.Request) -> web.Response:
    grant = find_grant(request.app[QWEN], request)
    grant.status = "approved"
    return web.json_response({"approved": grant.user_code})


async def deny(request: web.Request) -> web.Response:
    grant = find_grant(request.app[QWEN], request)
    grant.status = "denied"
    return web.json_response({"denied": grant.user_code})


async def expire_device(request: web.Request) -> web.Response:
    state = request.app[QWEN]
    user_code = request.query.get("user_code")
    grants = [g for g in state.grants.values() if user_code in (None, g.user_code)]
    if user_code and not grants:
        find_grant(state, request, pending_only=False)  # raises 404
    for grant in grants:
        grant.expires_at = time.monotonic() - 1
    return web.json_response({"expired": [g.user_code for g in grants]})


async def expire_access(request: web.Request) -> web.Response:
    state = request.app[QWEN]
    now = time.time() - 1
    count = len(state.valid_access_tokens())
    for access in state.access_tokens:
        state.access_tokens[access] = min(state.access_tokens[access], now)
    return web.json_response({"expired": count})


async def seed(request: web.Request) -> web.Response:
    state = request.app[QWEN]
    raw = await request.read()
    try:
        options = json.loads(raw) if raw.strip() else {}
    except ValueError:
        options = None
    if not isinstance(options, dict):
        raise OAuthError("invalid_request", "Body must be a JSON object")
    access, refresh_token, expiry = state.issue(" ".join(sorted(SCOPES)),
                                                expired=bool(options.get("expired")))
    return web.json_response({
        "access_token": access,
        "refresh_token": refresh_token,
        "token_type": "Bearer",
        "resource_url": resource_url(state, request),
        "expiry_date": int(expiry * 1000),
    })


async def set_quota(request: web.Request) -> web.Response:
    state = request.app[QWEN]
    mode = request.query.get("mode", "")
    if mode not in QUOTA_MODES:
        raise OAuthError("invalid_request", f"mode must be one of {', '.join(QUOTA_MODES)}")
    try:
        retry_after = int(request.query.get("retry_after", state.retry_after))
    except ValueError:
        raise OAuthError("invalid_request", "retry_after must be an integer") from None
    state.quota, state.retry_after = mode, retry_after
    return web.json_response({"quota": mode, "retry_after": state.retry_after})


async def configure(request: web.Request) -> web.Response:
    state = request.app[QWEN]
    try:
        changes = await request.json()
    except ValueError:
        changes = None
    allowed = set(CONVERT) - {"client_id", "resource_url"}
    if not isinstance(changes, dict) or set(changes) - allowed:
        raise OAuthError("invalid_request", f"JSON object with keys among {sorted(allowed)}")
    try:
        converted = {name: None if value is None and name == "auto_approve_after"
                     else CONVERT[name](str(value)) for name, value in changes.items()}
    except ValueError as error:
        raise OAuthError("invalid_request", str(error)) from None
    for name, value in converted.items():
        setattr(state.options, name, value)
    return web.json_response(asdict(state.options))


def reset(app: web.Application) -> None:
    app[QWEN].reset()


# --------------------------------------------------------------------------
# Middlewares, app
# --------------------------------------------------------------------------


@web.middleware
async def errors(request: web.Request, handler: Callable) -> web.StreamResponse:
    try:
        return await handler(request)
    except (OAuthError, QuotaError) as error:
        return error.response()


@web.middleware
async def log_forms(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Adds the parsed form to the entry serving.request_log just appended (no await
    in between), since that log keeps JSON bodies only."""
    log = request.app[serving.REQUEST_LOG]
    if request.content_type == FORM and request.path != "/__requests" and log:
        entry = log[-1]
        try:
            entry["form"] = dict(parse_qsl((await request.read()).decode(),
                                           keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            entry["form"] = None
    return await handler(request)


def make_app(api_key: str | None, models: list[str], *,
             options: QwenOptions | None = None) -> web.Application:
    """api_key is ignored (auth is OAuth); options default to QwenOptions.from_env()."""
    del api_key
    app = serving.application(log_forms, oc.openai_errors, errors)
    app[QWEN] = QwenState(options or QwenOptions.from_env())
    app[oc.STATE] = oc.UpstreamState(api_key=None, models=list(models))
    app.router.add_post("/api/v1/oauth2/device/code", device_code)
    app.router.add_post("/api/v1/oauth2/token", token)
    app.router.add_post("/v1/chat/completions", chat_completions)
    serving.add_controls(app, "/__oauth", inspect, {
        "approve": approve, "deny": deny, "expire_device": expire_device,
        "expire_access": expire_access, "seed": seed, "quota": set_quota, "config": configure,
    }, reset)
    return app


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = serving.arg_parser(DEFAULT_MODELS, __doc__, api_key_help="ignored: auth is OAuth")
    parser.add_argument("--client-id")
    parser.add_argument("--poll-interval", type=float, help="seconds (default 2)")
    parser.add_argument("--access-ttl", type=float, help="seconds (default 3600)")
    parser.add_argument("--device-ttl", type=float, help="seconds (default 600)")
    parser.add_argument("--auto-approve-after", type=int, help="polls (default: never)")
    parser.add_argument("--refresh-delay", type=float, help="seconds (default 0)")
    parser.add_argument("--resource-url", help="template, {host} = Host header")
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> QwenOptions:
    options = QwenOptions.from_env()
    for name in CONVERT:
        if getattr(args, name) is not None:
            setattr(options, name, getattr(args, name))
    return options


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    app = make_app(args.api_key, serving.models_of(args), options=options_from(args))
    asyncio.run(serving.serve(app, args.host, args.port))


if __name__ == "__main__":
    main()
