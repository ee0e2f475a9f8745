"""Strict local double of iFlow's API: signed OpenAI-compatible chat plus the OAuth
login that yields an API key (aiohttp.web).

As a process (from the repository root)::

    python -m tests.upstreams.iflow_api --host 127.0.0.1 --port 0 \\
        [--api-key KEY] [--models qwen3-coder-plus,kimi-k2]

prints exactly one line ``READY <port>`` once listening. In-process, serve
``make_app(api_key, models)`` with any aiohttp runner. Without --api-key no key is
accepted until one is added by the OAuth login (getUserInfo) or POST /__keys: the
signature cannot be checked without a key, so "auth off" does not exist here.

Endpoints (apis.iflow.cn and iflow.cn folded onto one origin):
    POST /v1/chat/completions     signed (see Signature), then validated and answered
                                  exactly like tests/upstreams/openai_compat.py (same
                                  echo / tool-call answers, same scenario models
                                  fault-500, fault-429, sse-torture, ...)
    GET  /v1/models               signed; the configured models, then the scenario models
    GET  /oauth                   authorize page: ?client_id=10009311001&redirect=<uri>
                                  &state=<s>[&loginMethod=phone&type=phone] -> 302 at once
                                  to <redirect>?code=<code>&state=<s> (no login page)
    POST /oauth/token             form grant_type=authorization_code, code, redirect_uri,
                                  client_id, client_secret (any non-empty), and
                                  Authorization: Basic base64(client_id:client_secret)
                                  -> {access_token, refresh_token, expires_in, token_type,
                                  scope}; grant_type=refresh_token, refresh_token,
                                  client_id, client_secret rotates both tokens
    GET  /api/oauth/getUserInfo   ?accessToken=<t> -> {"success": true, "code": "200",
                                  "message": "success", "data": {"apiKey", "email",
                                  "phone", "userId"}}; apiKey is then a chat key
    POST /__keys                  {"api_key": "..."} adds an accepted key (no auth)
    GET  /__state                 keys, models, users, pending codes, live tokens (no auth)
    GET  /__requests              every request received so far (no auth)
    DELETE /__requests            clear that log (no auth)
    anything else                 404 "Invalid URL (METHOD /path)" (OpenAI shape)

Signature (chat and models), checked in this order, errors in OpenAI's
{"error": {message, type, param, code}} shape; every message names the header:
    Authorization     "Bearer <apiKey>"; missing -> 401; a key not accepted -> 401
                      invalid_api_key
    User-Agent        exactly "iFlow-Cli"; else 400 invalid_user_agent
    session-id        "session-" + a lowercase uuid4; else 400 invalid_session_id
    x-iflow-timestamp epoch milliseconds as decimal digits; not digits -> 400
                      invalid_timestamp; more than 5 minutes from now -> 401
                      timestamp_out_of_range (the message hints when it looks like seconds)
    x-iflow-signature lowercase hex of HMAC-SHA256(key=apiKey,
                      msg="iFlow-Cli:<session-id>:<x-iflow-timestamp>"), compared in
                      constant time; missing -> 401 missing_signature, wrong -> 401
                      invalid_signature (``signature()`` below is the formula)
A missing header is reported as missing (400 missing_header, or 401 for Authorization
and the signature). Request bodies must then pass openai_compat's validation; the only
extra parameter accepted is ``chat_template_kwargs`` (an object), which peers send to
iFlow for thinking models. Responses carry model = requested + openai_compat's
SNAPSHOT_SUFFIX, as that double does.

OAuth errors use RFC 6749's {"error", "error_description"} shape: an unknown, used or
expired code, a code issued to another client or redirect_uri, an unknown refresh
token or a wrong client_id -> 400 invalid_grant; a missing form field -> 400
invalid_request; other grant types -> 400 unsupported_grant_type; a missing Basic header
or one that is not base64(client_id:client_secret) of the form -> 401 invalid_client.
GET /oauth with a wrong client_id or no redirect / state -> 400 text page (not a redirect).
getUserInfo with an unknown token -> 401 {"success": false, "code": "401", ...}.

Assumed (the service closed on 2026-04-17, so these come from peer gateways, not from
captures): the ±5-minute window, the status codes / error codes / messages above, the
token lifetime (EXPIRES_IN), token_type "bearer" and scope "read write", the extra
getUserInfo fields ("code", "message", "userId"), getUserInfo's 401 for a bad token,
codes being single-use and 10-minute, and refresh keeping the user's apiKey.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from tests.upstreams import openai_compat, serving
from tests.upstreams.openai_compat import ApiError

DEFAULT_MODELS = ["qwen3-coder-plus", "qwen3-max", "kimi-k2", "glm-4.6", "deepseek-v3.2"]
USER_AGENT = "iFlow-Cli"
CLIENT_ID = "10009311001"
SESSION_ID_PATTERN = re.compile(
    r"^session-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
)
TIMESTAMP_WINDOW_MS = 5 * 60 * 1000
EXPIRES_IN = 172800  # seconds (assumed: 48 h)
CODE_LIFETIME = 600  # seconds
TOKEN_TYPE = "bearer"
SCOPE = "read write"
IFLOW_EXTRA_PARAMS = ("chat_template_kwargs",)
NO_API_KEY = openai_compat.NO_API_KEY


def signature(api_key: str, session_id: str, timestamp: str | int) -> str:
    """x-iflow-signature: hex(HMAC-SHA256(key=apiKey, "iFlow-Cli:<session-id>:<ms>"))."""
    message = f"{USER_AGENT}:{session_id}:{timestamp}".encode()
    return hmac.new(api_key.encode(), message, hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------


@dataclass
class User:
    user_id: str
    api_key: str
    email: str
    phone: str


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    expires_at: float
    user: User


@dataclass
class IFlowState:
    api_keys: list[str]
    models: list[str]
    users: list[User] = field(default_factory=list)
    codes: dict[str, Grant] = field(default_factory=dict)
    access_tokens: dict[str, User] = field(default_factory=dict)
    refresh_tokens: dict[str, User] = field(default_factory=dict)
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    def add_key(self, key: str) -> None:
        if key not in self.api_keys:
            self.api_keys.append(key)

    def new_user(self) -> User:
        n = next(self.counter)
        user = User(
            user_id=f"iflow-user-{n}",
            api_key=f"sk-iflow-{secrets.token_hex(16)}",
            email=f"user{n}@example.com",
            phone=f"138****{n:04d}",
        )
        self.users.append(user)
        self.add_key(user.api_key)
        return user

    def issue_tokens(self, user: User) -> dict[str, Any]:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.access_tokens[access] = user
        self.refresh_tokens[refresh] = user
        return {
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": EXPIRES_IN,
            "token_type": TOKEN_TYPE,
            "scope": SCOPE,
        }


STATE = web.AppKey("iflow_state", IFlowState)


# --------------------------------------------------------------------------
# Signed headers
# --------------------------------------------------------------------------


def header_error(status: int, message: str, code: str, param: str) -> ApiError:
    return ApiError(status, message, type="authentication_error" if status == 401
                    else "invalid_request_error", param=param, code=code)


def missing_header(name: str) -> ApiError:
    status = 401 if name == "x-iflow-signature" else 400
    code = "missing_signature" if status == 401 else "missing_header"
    return header_error(status, f"Missing required header: '{name}'.", code, name)


def check_signed_headers(request: web.Request, state: IFlowState) -> None:
    headers = request.headers
    authorization = headers.get("Authorization")
    if not authorization:
        raise ApiError(401, NO_API_KEY)
    if not authorization.startswith("Bearer ") or not authorization[7:].strip():
        raise header_error(401, "Malformed Authorization header: expected 'Bearer <apiKey>'.",
                           "invalid_api_key", "authorization")
    api_key = authorization[7:]
    if not any(hmac.compare_digest(api_key.encode(), k.encode()) for k in state.api_keys):
        raise header_error(
            401, f"Incorrect API key provided: {openai_compat.mask_key(api_key)}.",
            "invalid_api_key", "authorization")

    user_agent = headers.get("User-Agent")
    if user_agent is None:
        raise missing_header("User-Agent")
    if user_agent != USER_AGENT:
        raise header_error(400, f"Invalid User-Agent {user_agent!r}: expected {USER_AGENT!r}.",
                           "invalid_user_agent", "user-agent")

    session_id = headers.get("session-id")
    if session_id is None:
        raise missing_header("session-id")
    if not SESSION_ID_PATTERN.match(session_id):
        raise header_error(
            400, f"Invalid session-id {session_id!r}: expected 'session-<uuid4>' (lowercase).",
            "invalid_session_id", "session-id")

    timestamp = headers.get("x-iflow-timestamp")
    if timestamp is None:
        raise missing_header("x-iflow-timestamp")
    check_timestamp(timestamp)

    given = headers.get("x-iflow-signature")
    if given is None:
        raise missing_header("x-iflow-signature")
    expected = signature(api_key, session_id, timestamp)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise header_error(
            401, "Invalid x-iflow-signature: expected lowercase hex HMAC-SHA256(apiKey,"
            " 'iFlow-Cli:<session-id>:<x-iflow-timestamp>').",
            "invalid_signature", "x-iflow-signature")


def check_timestamp(timestamp: str) -> None:
    if not timestamp.isascii() or not timestamp.isdigit():
        raise header_error(
            400, f"Invalid x-iflow-timestamp {timestamp!r}: expected epoch milliseconds.",
            "invalid_timestamp", "x-iflow-timestamp")
    now = int(time.time() * 1000)
    skew = int(timestamp) - now
    if abs(skew) <= TIMESTAMP_WINDOW_MS:
        return
    hint = ""
    if abs(int(timestamp) * 1000 - now) <= TIMESTAMP_WINDOW_MS:
        hint = " It looks like seconds; send milliseconds."
    raise header_error(
        401, f"x-iflow-timestamp {timestamp} is {abs(skew) // 1000} s"
        f" {'behind' if skew < 0 else 'ahead of'} server time (allowed: 300 s).{hint}",
        "timestamp_out_of_range", "x-iflow-timestamp")


# --------------------------------------------------------------------------
# Chat and models
# --------------------------------------------------------------------------


def chat_models(state: IFlowState) -> list[str]:
    return [*state.models, *(m for m in openai_compat.SCENARIO_MODELS if m not in state.models)]


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    check_signed_headers(request, state)
    data = [{"id": m, "object": "model", "created": openai_compat.MODEL_CREATED,
             "owned_by": "iflow"} for m in chat_models(state)]
    return web.json_response({"object": "list", "data": data})


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    check_signed_headers(request, state)
    body = await openai_compat.parse_json_body(request)
    extras = {name: body.pop(name) for name in IFLOW_EXTRA_PARAMS if name in body}
    for name, value in extras.items():
        if not isinstance(value, dict):
            raise openai_compat.wrong_type(name, "an object", value)
    openai_compat.validate_chat_request(body, chat_models(state))
    scenario = openai_compat.SCENARIOS.get(body["model"], openai_compat.respond_normally)
    try:
        return await scenario(request, body)
    except ConnectionError:
        return openai_compat.drop_connection(request)


# --------------------------------------------------------------------------
# OAuth
# --------------------------------------------------------------------------


def oauth_error(status: int, error: str, description: str) -> web.Response:
    headers = {"WWW-Authenticate": "Basic"} if status == 401 else None
    return web.json_response({"error": error, "error_description": description},
                             status=status, headers=headers)


async def authorize(request: web.Request) -> web.Response:
    query = request.query
    if query.get("client_id") != CLIENT_ID:
        return web.Response(status=400, text=f"invalid client_id {query.get('client_id')!r}")
    redirect = query.get("redirect", "")
    parts = urlsplit(redirect)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return web.Response(status=400, text=f"invalid redirect {redirect!r}")
    if not query.get("state"):
        return web.Response(status=400, text="missing state")
    state = request.app[STATE]
    code = secrets.token_urlsafe(18)
    state.codes[code] = Grant(CLIENT_ID, redirect, time.time() + CODE_LIFETIME, state.new_user())
    separator = "&" if parts.query else "?"
    location = redirect + separator + urlencode({"code": code, "state": query["state"]})
    raise web.HTTPFound(location)


def basic_credentials(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, colon, secret = decoded.partition(":")
    return (client_id, secret) if colon else None


async def token(request: web.Request) -> web.Response:
    if request.content_type != "application/x-www-form-urlencoded":
        return oauth_error(400, "invalid_request",
                           "body must be application/x-www-form-urlencoded")
    form = await request.post()
    grant_type = form.get("grant_type")
    if grant_type not in ("authorization_code", "refresh_token"):
        if not grant_type:
            return oauth_error(400, "invalid_request", "missing grant_type")
        return oauth_error(400, "unsupported_grant_type", f"unsupported grant_type {grant_type!r}")
    fields = ("code", "redirect_uri") if grant_type == "authorization_code" else ("refresh_token",)
    for name in (*fields, "client_id", "client_secret"):
        if not form.get(name):
            return oauth_error(400, "invalid_request", f"missing {name}")
    client_id, secret = str(form["client_id"]), str(form["client_secret"])
    if basic_credentials(request) != (client_id, secret):
        return oauth_error(401, "invalid_client",
                           "Authorization must be Basic base64(client_id:client_secret)")
    if client_id != CLIENT_ID:
        return oauth_error(400, "invalid_grant", f"unknown client_id {client_id!r}")
    state = request.app[STATE]
    if grant_type == "refresh_token":
        user = state.refresh_tokens.pop(str(form["refresh_token"]), None)
        if user is None:
            return oauth_error(400, "invalid_grant", "unknown or used refresh_token")
        return web.json_response(state.issue_tokens(user))
    grant = state.codes.pop(str(form["code"]), None)
    if grant is None or grant.expires_at < time.time():
        return oauth_error(400, "invalid_grant", "unknown, used or expired code")
    if grant.client_id != client_id or grant.redirect_uri != form["redirect_uri"]:
        return oauth_error(400, "invalid_grant",
                           "code was issued to another client_id or redirect_uri")
    return web.json_response(state.issue_tokens(grant.user))


async def get_user_info(request: web.Request) -> web.Response:
    user = request.app[STATE].access_tokens.get(request.query.get("accessToken", ""))
    if user is None:
        return web.json_response(
            {"success": False, "code": "401", "message": "invalid accessToken", "data": None},
            status=401)
    data = {"apiKey": user.api_key, "email": user.email, "phone": user.phone,
            "userId": user.user_id}
    return web.json_response({"success": True, "code": "200", "message": "success",
                              "data": data})


# --------------------------------------------------------------------------
# Control
# --------------------------------------------------------------------------


async def add_key(request: web.Request) -> web.Response:
    body = await openai_compat.parse_json_body(request)
    key = body.get("api_key")
    if not isinstance(key, str) or not key:
        raise openai_compat.invalid("'api_key' must be a non-empty string", "api_key")
    state = request.app[STATE]
    state.add_key(key)
    return web.json_response({"api_keys": state.api_keys})


async def get_state(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({
        "api_keys": state.api_keys,
        "models": chat_models(state),
        "users": [vars(u) for u in state.users],
        "pending_codes": len(state.codes),
        "access_tokens": len(state.access_tokens),
        "refresh_tokens": len(state.refresh_tokens),
    })


def make_app(api_key: str | None, models: list[str]) -> web.Application:
    app = serving.application(openai_compat.openai_errors)
    app[STATE] = IFlowState(api_keys=[api_key] if api_key else [], models=list(models))
    # openai_compat's answer builders read its own state (the response id counter)
    app[openai_compat.STATE] = openai_compat.UpstreamState(api_key=None, models=list(models))
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/oauth", authorize)
    app.router.add_post("/oauth/token", token)
    app.router.add_get("/api/oauth/getUserInfo", get_user_info)
    app.router.add_post("/__keys", add_key)
    app.router.add_get("/__state", get_state)
    return app


def main(argv: list[str] | None = None) -> None:
    serving.main(make_app, DEFAULT_MODELS, __doc__, argv)


if __name__ == "__main__":
    main()
