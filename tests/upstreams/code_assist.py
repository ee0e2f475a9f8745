"""Strict local double of Google's Code Assist API (cloudcode-pa.googleapis.com/v1internal,
what Gemini CLI and Antigravity talk to) and of Google's OAuth endpoints, in one aiohttp.web app.

As a process (from the repository root)::

    python -m tests.upstreams.code_assist --host 127.0.0.1 --port 0 \\
        [--flavour gemini-cli|antigravity] [--models a,b] [--expires-in 3599] \\
        [--min-version 1.11.0] [--default-tier free-tier] [--onboard-polls 1]

prints exactly one line ``READY <port>`` once listening. In-process, serve
``make_app(config, store)`` (or ``make_app(flavour="antigravity", ...)``) with any aiohttp
runner; two apps given the same ``Store`` share accounts and tokens, like Antigravity's
daily and prod hosts (one token, two hosts), while each keeps its own settings, scenario
and counters.

OAuth (the paths of accounts.google.com, oauth2.googleapis.com, www.googleapis.com):
    GET  /o/oauth2/v2/auth     client_id, redirect_uri (loopback http only), response_type=code,
                               scope, state?, code_challenge?, code_challenge_method? (S256 or
                               plain), access_type?, login_hint? (an account's email: log in as
                               it). "Logs the user in" at once: 302 to redirect_uri?state=..
                               &code=4/0A..&scope=..&authuser=0&prompt=consent. Bad requests get
                               Google's HTML error page ("Error 400: redirect_uri_mismatch", ...).
    POST /token                form (or JSON) body; client_secret in the body or HTTP Basic.
      grant_type=refresh_token  -> {access_token "ya29.", expires_in, scope, token_type "Bearer",
                               id_token}: NO refresh_token (Google does not rotate them).
      grant_type=authorization_code (code, code_verifier, redirect_uri) -> also refresh_token
                               (only when access_type=offline was asked for).
      Errors (JSON {"error", "error_description"}): unknown grant_type 400
      unsupported_grant_type; no client_id / no secret / missing parameter 400 invalid_request;
      unknown client 401 invalid_client "The OAuth client was not found."; wrong secret 401
      invalid_client "Unauthorized"; unknown, revoked or other-client refresh token 400
      invalid_grant "Token has been expired or revoked." (other client: 400 unauthorized_client);
      unknown code "Malformed auth code.", reused or expired code "Bad Request" (assumed),
      PKCE failure "Invalid code verifier." / "Missing code verifier." (all 400 invalid_grant);
      redirect_uri differing from the authorize request 400 redirect_uri_mismatch.
      Accepted clients (Config.clients): Gemini CLI's and Antigravity's published ids/secrets.
    POST /revoke               token=<refresh or access token> -> 200 {}; a refresh token takes
                               its access tokens with it. Unknown: 400 invalid_token.
    GET  /oauth2/v2/userinfo   (and /oauth2/v1/userinfo) {id, email, verified_email, name, ...}

Code Assist (Authorization: Bearer <unexpired access token from /token or /__seed>, with the
cloud-platform scope; none -> 401 UNAUTHENTICATED CREDENTIALS_MISSING, invalid/expired -> 401
ACCESS_TOKEN_TYPE_UNSUPPORTED with WWW-Authenticate, scope missing -> 403
ACCESS_TOKEN_SCOPE_INSUFFICIENT):
    POST /v1internal:loadCodeAssist   {cloudaicompanionProject?, metadata:{ideType, platform,
                               pluginType, ...}} -> onboarded: {currentTier, allowedTiers:[that tier,
                               isDefault], cloudaicompanionProject}; new user: {allowedTiers:[one
                               isDefault tier]} and no currentTier / project. A project other than
                               the account's -> 403 IAM_PERMISSION_DENIED.
    POST /v1internal:onboardUser      {tierId, cloudaicompanionProject?, metadata} -> a long-running
                               operation {name:"operations/<id>", done:false}. tierId must be the
                               offered tier (400); free-tier with a project -> 400
                               FAILED_PRECONDITION (setup.ts: "Precondition Failed"); standard-tier
                               needs the account's project, without one the operation ends with no
                               cloudaicompanionProject and the account stays new. Calling it again
                               while pending completes the operation (peers poll that way); for an
                               onboarded account it is done at once.
    GET  /v1internal/operations/<id>  done:false for the first `onboard_polls` polls (default 1),
                               then {done:true, response:{@type, cloudaicompanionProject:{id, name}}};
                               the account is onboarded from then on. Another account's -> 404.
    POST /v1internal:generateContent
    POST /v1internal:streamGenerateContent?alt=sse
                               envelope {model, project, user_prompt_id?, request:{<Gemini
                               GenerateContentRequest>, session_id?, labels?}} (+ Antigravity's
                               userAgent, requestType, requestId, enabledCreditTypes). Checks, in
                               order: proto JSON parsing of the whole envelope with gemini_api's
                               parser (paths like 'request.contents[0]'); model given, project given
                               (400 INVALID_ARGUMENT "Request contains an invalid argument." +
                               BadRequest); project is the account's and it is onboarded (403
                               IAM_PERMISSION_DENIED); model in the list (404 NOT_FOUND "Requested
                               entity was not found."); then gemini_api.validate_generate and its
                               thought-signature checks (one signature registry per Store). Answer:
                               {"response": <exactly gemini_api's GenerateContentResponse>,
                               "traceId"} (+ header x-cloudaicompanion-trace-id). Streams: SSE
                               "data: <envelope>\\r\\n\\r\\n" events as gemini_api cuts them, NO
                               [DONE]; without alt=sse one JSON array (as gemini_api). Errors on the
                               SSE path carry Content-Type text/event-stream (as observed from the
                               real service), on the array path they come wrapped in [ ].
    POST /v1internal:countTokens      {"request": {"model": "models/x", "contents": [...]}} ->
                               {"totalTokens": n} (gemini_api's count); no project needed.
    POST /v1internal:retrieveUserQuota {project} -> {buckets:[{remainingFraction, resetTime,
                               tokenType:"REQUESTS", modelId}]}
    POST /v1internal:fetchAvailableModels (antigravity flavour only; else 404) {project?} ->
                               {"models": {"<id>": {displayName, supportsThinking, maxTokens,
                               maxOutputTokens, modelProvider, quotaInfo:{remainingFraction,
                               resetTime}}}}
    anything else              404 with Google's HTML "That's an error." page

Default models: gemini-cli flavour gemini-2.5-pro, gemini-2.5-flash, gemini-2.5-flash-lite,
gemini-3-pro-preview, gemini-3-flash-preview; antigravity flavour gemini-2.5-flash,
gemini-2.5-flash-lite, gemini-3-pro-high, gemini-3-pro-low, gemini-3-flash, claude-sonnet-4-6,
claude-opus-4-6-thinking. Gemini models answer exactly as gemini_api does. Claude models answer
in Gemini content shape (functionCall parts, no signatures); *-thinking ones start every answer
with a signed thought part {"text": "Thinking about: .." (or "" without includeThoughts),
"thought": true, "thoughtSignature"}, and when a request continues a tool loop its last model
content must start with such a part (else 400 with Anthropic's error as a JSON string inside
the message, "messages.<i>.content.0.type: Expected `thinking` or `redacted_thinking`, but found
`tool_use`..."); signatures must be ones issued here ("Invalid `signature` in `thinking` block").

Antigravity flavour (Config.flavour, per app = per host): User-Agent must be
"antigravity/<x.y.z> <os>/<arch>", version >= min_version (default 1.11.0), else 400 "This
version of Antigravity is no longer supported. Please update to receive the latest features!"
(any /v1internal method); the generate envelope must carry userAgent "antigravity", requestType
"agent", requestId "agent-...", request.sessionId (400 INVALID_ARGUMENT + BadRequest listing
them; assumed wording); request.safetySettings is rejected 400 'Unknown name "safetySettings"
at 'request': Cannot find field.' (assumed: peers strip it).

Control (no auth):
    POST /__seed        {"expired"?, "onboarded"? (default true), "project"?, "email"?, "tier"?,
                        "client"? ("gemini-cli" | "antigravity" | a client id; default: the
                        flavour's), "scope"?} -> credentials as Gemini CLI writes them:
                        {access_token, refresh_token, scope, token_type, id_token, expiry_date
                        (epoch ms)}. A known email reuses that account (other fields ignored).
    GET  /__state       counters (token_calls, refresh_calls, code_exchanges, authorize_calls,
                        load_calls, onboard_calls, operation_polls, generate_calls, stream_calls,
                        count_calls, quota_calls, fetch_models_calls, userinfo_calls,
                        rejected_auth, down_hits, ...), scenario, config, accounts.
    POST /__expire_access {"access_token"?} expire one access token, or all of them.
    POST /__scenario    {"mode": <mode> | null, "times"?: n (then cleared), "models"?: [...]}
        quota_exhausted   429 RESOURCE_EXHAUSTED "You have exhausted your capacity on this
                          model. Your quota will reset after 3h2m1s.", ErrorInfo QUOTA_EXHAUSTED
                          (domain cloudcode-pa.googleapis.com, metadata quotaResetDelay "3h2m1s",
                          quotaResetTimeStamp, uiMessage, model), RetryInfo "10921s";
                          fetchAvailableModels / retrieveUserQuota then show remainingFraction 0
        rate_limited      429 RESOURCE_EXHAUSTED ErrorInfo RATE_LIMIT_EXCEEDED, RetryInfo "0.47s"
        capacity          503 UNAVAILABLE "No capacity available for model X on the server",
                          ErrorInfo MODEL_CAPACITY_EXHAUSTED
        quota_stream      a stream answers 200, then the quota_exhausted error object as its only
                          event (the quota ran out as it started); non-stream: the 429 above
        cut / hang        stream cut after two events (non-stream: abort) / no answer at all
            (these six hit generate calls only, after validation, for "models" if given)
        not_allowed       403 PERMISSION_DENIED "Gemini Code Assist for individuals is no longer
                          available for this account." (assumed wording), every method
        validation_required 403 PERMISSION_DENIED ErrorInfo VALIDATION_REQUIRED + Help links
                          (assumed wording), every method
        down / down_close the host is down: every /v1internal request gets 503 UNAVAILABLE
                          "The service is currently unavailable." before auth / has its
                          connection closed (for testing daily -> prod host fallback)
    GET|POST /__config  read / change settings: flavour, models, expires_in, min_version,
                        default_tier, onboard_polls, login_onboarded, clients
    GET  /__requests, DELETE /__requests   the request log (tests/upstreams/serving.py)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import itertools
import json
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from aiohttp import web

from tests.upstreams import gemini_api, serving
from tests.upstreams.gemini_api import ApiError, ParseErrors

GEMINI_CLI_CLIENT = "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com"
ANTIGRAVITY_CLIENT = "1071006060591-tmhssin2h21lcre235vtolojh4g403ep.apps.googleusercontent.com"
CLIENTS = {  # the official CLIs' published installed-app credentials
    GEMINI_CLI_CLIENT: "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",
    ANTIGRAVITY_CLIENT: "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",
}
CLIENT_NAMES = {"gemini-cli": GEMINI_CLI_CLIENT, "antigravity": ANTIGRAVITY_CLIENT}
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
GEMINI_CLI_SCOPES = [
    CLOUD_PLATFORM,
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
]
ANTIGRAVITY_SCOPES = [
    *GEMINI_CLI_SCOPES,
    "https://www.googleapis.com/auth/cclog",
    "https://www.googleapis.com/auth/experimentsandconfigs",
]
FLAVOURS = ("gemini-cli", "antigravity")
DEFAULT_MODELS = [
    "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-3-pro-preview",
    "gemini-3-flash-preview",
]
ANTIGRAVITY_MODELS = [
    "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-3-pro-high", "gemini-3-pro-low",
    "gemini-3-flash", "claude-sonnet-4-6", "claude-opus-4-6-thinking",
]
DISPLAY_NAMES = {
    "gemini-2.5-flash": "Gemini 2.5 Flash",
    "gemini-2.5-flash-lite": "Gemini 2.5 Flash Lite",
    "gemini-2.5-pro": "Gemini 2.5 Pro",
    "gemini-3-pro-high": "Gemini 3 Pro (High)",
    "gemini-3-pro-low": "Gemini 3 Pro (Low)",
    "gemini-3-flash": "Gemini 3 Flash",
    "claude-sonnet-4-6": "Claude Sonnet 4.6",
    "claude-opus-4-6-thinking": "Claude Opus 4.6 (Thinking)",
}
TIERS: dict[str, dict[str, Any]] = {
    "free-tier": {
        "id": "free-tier",
        "name": "Gemini Code Assist for individuals",
        "description": "Gemini Code Assist for individuals (local test double)",
        "userDefinedCloudaicompanionProject": False,
        "privacyNotice": {"showNotice": True, "noticeText": "Test double privacy notice."},
    },
    "standard-tier": {
        "id": "standard-tier",
        "name": "Gemini Code Assist",
        "description": "Gemini Code Assist Standard (local test double)",
        "userDefinedCloudaicompanionProject": True,
        "privacyNotice": {},
    },
}
CA_TYPE = "type.googleapis.com/google.internal.cloud.code.v1internal."
SERVICE = "cloudcode-pa.googleapis.com"
RPC_METHOD = "google.internal.cloud.code.v1internal.CloudCode."
CODE_TTL = 600  # seconds an authorization code stays exchangeable
ANTIGRAVITY_UA = re.compile(
    r"^antigravity/(\d+)\.(\d+)\.(\d+)\S* +[A-Za-z0-9_]+/[A-Za-z0-9_]+$", re.IGNORECASE
)
GENERATE_MODES = ("quota_exhausted", "rate_limited", "capacity", "quota_stream", "cut", "hang")
ACCOUNT_MODES = ("not_allowed", "validation_required")
HOST_MODES = ("down", "down_close")
MODES = (*GENERATE_MODES, *ACCOUNT_MODES, *HOST_MODES)

INVALID_ARGUMENT = "Request contains an invalid argument."
NOT_FOUND = "Requested entity was not found."
PRECONDITION = "Precondition check failed."
MISSING_CREDENTIALS = (
    "Request is missing required authentication credential. Expected OAuth 2 access token,"
    " login cookie or other valid authentication credential. See"
    " https://developers.google.com/identity/sign-in/web/devconsole-project."
)
INSUFFICIENT_SCOPES = "Request had insufficient authentication scopes."
IAM_DENIED = (
    "Permission 'cloudaicompanion.companions.generateChat' denied on resource"
    " '//cloudaicompanion.googleapis.com/projects/{project}/locations/global' (or it may not"
    " exist)."
)
OLD_ANTIGRAVITY = (
    "This version of Antigravity is no longer supported. Please update to receive the latest"
    " features!"
)
QUOTA_EXHAUSTED = (
    "You have exhausted your capacity on this model. Your quota will reset after 3h2m1s."
)
QUOTA_RESET_DELAY, QUOTA_RETRY_DELAY, QUOTA_RESET_SECONDS = "3h2m1s", "10921s", 10921
RATE_LIMITED = "Resource has been exhausted (e.g. check quota)."
RATE_RETRY_DELAY = "0.47s"
NO_CAPACITY = "No capacity available for model {model} on the server"
NOT_ALLOWED = "Gemini Code Assist for individuals is no longer available for this account."
VALIDATION_REQUIRED = "Verify your account to continue using Gemini Code Assist."
VALIDATION_URL = "https://accounts.google.com/signin/continue?sarp=1&scc=1&flowName=test-double"
HOST_DOWN = "The service is currently unavailable."
THINKING_REQUIRED = (
    "messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, but found"
    " `{found}`. When `thinking` is enabled, a final `assistant` message must start with a"
    " thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We"
    " recommend you include thinking blocks from previous turns. To avoid this requirement,"
    " disable `thinking`. Please consult our documentation at"
    " https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)
THINKING_SIGNATURE_MISSING = "messages.{index}.content.0.thinking.signature: Field required"
THINKING_SIGNATURE_INVALID = "messages.{index}.content.{part}: Invalid `signature` in `thinking` block"
OAUTH_ERROR_PAGE = """<!DOCTYPE html>
<html lang=en><meta charset=utf-8><title>Error {status}: {error}</title>
<p><b>Access blocked: Authorization Error</b>
<p>{description}
<p>Error {status}: {error}
"""


# --------------------------------------------------------------------------
# Settings, accounts, tokens
# --------------------------------------------------------------------------


@dataclass
class Config:
    flavour: str = "gemini-cli"
    models: list[str] | None = None  # None: the flavour's defaults
    expires_in: int = 3599  # access token lifetime, seconds
    min_version: str = "1.11.0"  # oldest Antigravity accepted
    default_tier: str = "free-tier"  # the tier a new user is offered
    onboard_polls: int = 1  # operation polls answered done:false
    login_onboarded: bool = True  # accounts created by /o/oauth2/v2/auth
    clients: dict[str, str] = field(default_factory=lambda: dict(CLIENTS))

    def model_list(self) -> list[str]:
        if self.models:
            return list(self.models)
        return list(ANTIGRAVITY_MODELS if self.flavour == "antigravity" else DEFAULT_MODELS)

    def check(self) -> None:
        if self.flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}")
        if self.default_tier not in TIERS:
            raise ValueError(f"default_tier must be one of {list(TIERS)}")
        version_tuple(self.min_version)


@dataclass(eq=False)
class Account:
    email: str
    project: str
    tier: str  # current tier once onboarded, else the one offered
    onboarded: bool
    sub: str = field(default_factory=lambda: str(10**20 + secrets.randbelow(9 * 10**20)))


@dataclass(eq=False)
class Grant:
    """A refresh token."""

    account: Account
    client_id: str
    scope: str
    revoked: bool = False


@dataclass(eq=False)
class AccessToken:
    account: Account
    client_id: str
    scope: str
    expires_at: float
    grant: Grant | None = None
    revoked: bool = False

    def valid(self) -> bool:
        dead = self.revoked or (self.grant is not None and self.grant.revoked)
        return not dead and time.time() < self.expires_at


@dataclass(eq=False)
class AuthCode:
    account: Account
    client_id: str
    redirect_uri: str
    scope: str
    challenge: str | None
    method: str
    offline: bool
    issued_at: float = field(default_factory=time.time)
    used: bool = False


@dataclass(eq=False)
class Operation:
    name: str
    account: Account
    tier: str
    project: str | None  # what onboarding assigns, None: nothing
    polls: int = 0
    done: bool = False


class Store:
    """Accounts, tokens and operations; share one between apps to make them two hosts of
    one service."""

    def __init__(self) -> None:
        self.accounts: list[Account] = []
        self.grants: dict[str, Grant] = {}
        self.tokens: dict[str, AccessToken] = {}
        self.codes: dict[str, AuthCode] = {}
        self.operations: dict[str, Operation] = {}
        self.gemini = gemini_api.UpstreamState(api_key=None, models=[])  # thought signatures
        self.numbers = itertools.count(1)

    def account(self, email: str | None, project: str | None, tier: str, onboarded: bool) -> Account:
        for known in self.accounts:
            if email and known.email == email:
                return known
        n = next(self.numbers)
        made = Account(
            email=email or f"user{n}@example.com",
            project=project or f"test-project-{secrets.token_hex(3)}",
            tier=tier,
            onboarded=onboarded,
        )
        self.accounts.append(made)
        return made

    def grant(self, account: Account, client_id: str, scope: str) -> str:
        token = "1//0" + secrets.token_urlsafe(48)
        self.grants[token] = Grant(account, client_id, scope)
        return token

    def access(self, account: Account, client_id: str, scope: str, lifetime: float,
               grant: Grant | None = None) -> tuple[str, AccessToken]:
        token = "ya29." + secrets.token_urlsafe(64)
        issued = AccessToken(account, client_id, scope, time.time() + lifetime, grant)
        self.tokens[token] = issued
        return token, issued


class Scenario:
    def __init__(self) -> None:
        self.mode: str | None = None
        self.times: int | None = None
        self.models: list[str] | None = None

    def set(self, mode: str | None, times: int | None = None,
            models: list[str] | None = None) -> None:
        self.mode, self.times, self.models = mode, times, models

    def take(self, kinds: tuple[str, ...], model: str | None = None) -> str | None:
        """The mode when it applies to this request (using up one of `times`)."""
        mode = self.mode
        if mode not in kinds:
            return None
        if self.models is not None and model not in self.models:
            return None
        if self.times is not None:
            self.times -= 1
            if self.times <= 0:
                self.set(None)
        return mode

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "times": self.times, "models": self.models}


class Host:
    """One instance: settings, scenario and counters of its own, a Store maybe shared."""

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self.scenario = Scenario()
        self.counts: Counter[str] = Counter()

    def count(self, name: str) -> None:
        self.counts[name] += 1


HOST = web.AppKey("code_assist_host", Host)


def version_tuple(text: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", text.strip())
    if not match:
        raise ValueError(f"not a version: {text!r}")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def id_token(account: Account, client_id: str, lifetime: float) -> str:
    """A JWT-shaped Google ID token (the signature is random bytes: nobody verifies it)."""
    now = int(time.time())
    header = {"alg": "RS256", "kid": "code-assist-double", "typ": "JWT"}
    payload = {
        "iss": "https://accounts.google.com",
        "azp": client_id,
        "aud": client_id,
        "sub": account.sub,
        "email": account.email,
        "email_verified": True,
        "at_hash": b64url(secrets.token_bytes(16)),
        "iat": now,
        "exp": now + int(lifetime),
    }
    parts = [json.dumps(header, separators=(",", ":")), json.dumps(payload, separators=(",", ":"))]
    return ".".join([*(b64url(p.encode()) for p in parts), b64url(secrets.token_bytes(256))])


# --------------------------------------------------------------------------
# OAuth: authorize, token, revoke, userinfo
# --------------------------------------------------------------------------


class OAuthFailure(Exception):
    def __init__(self, status: int, error: str, description: str | None = None) -> None:
        super().__init__(description or error)
        self.status, self.error, self.description = status, error, description

    def response(self) -> web.Response:
        body: dict[str, str] = {"error": self.error}
        if self.description is not None:
            body["error_description"] = self.description
        return web.json_response(body, status=self.status, headers={"Cache-Control": "no-store"})

    def page(self) -> web.Response:
        html = OAUTH_ERROR_PAGE.format(
            status=self.status, error=self.error, description=self.description or ""
        )
        return web.Response(status=self.status, text=html, content_type="text/html")


def is_loopback(uri: str) -> bool:
    try:
        parts = urlsplit(uri)
        return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")
    except ValueError:
        return False


def granted_scope(requested: list[str]) -> str:
    scopes = list(dict.fromkeys(requested))
    identity = {"email", "profile", "https://www.googleapis.com/auth/userinfo.email",
                "https://www.googleapis.com/auth/userinfo.profile"}
    if identity & set(scopes) and "openid" not in scopes:
        scopes.append("openid")
    return " ".join(scopes)


def valid_scope(scope: str) -> bool:
    return scope in ("openid", "email", "profile") or scope.startswith(
        "https://www.googleapis.com/auth/"
    )


async def authorize(request: web.Request) -> web.Response:
    host = request.app[HOST]
    host.count("authorize_calls")
    query = request.query
    try:
        client_id = query.get("client_id", "")
        if client_id not in host.config.clients:
            raise OAuthFailure(401, "invalid_client", "The OAuth client was not found.")
        redirect_uri = query.get("redirect_uri")
        if not redirect_uri:
            raise OAuthFailure(400, "invalid_request", "Missing required parameter: redirect_uri")
        if not is_loopback(redirect_uri):
            raise OAuthFailure(
                400, "redirect_uri_mismatch",
                "You can't sign in to this app because it doesn't comply with Google's OAuth 2.0"
                " policy. redirect_uri must be a loopback http address for this client.",
            )
        if query.get("response_type") != "code":
            raise OAuthFailure(400, "invalid_request", "Invalid response_type: only code.")
        requested = query.get("scope", "").split()
        if not requested:
            raise OAuthFailure(400, "invalid_request", "Missing required parameter: scope")
        bad = [s for s in requested if not valid_scope(s)]
        if bad:
            raise OAuthFailure(
                400, "invalid_scope", f"Some requested scopes were invalid. {{invalid={bad}}}"
            )
        challenge = query.get("code_challenge")
        method = query.get("code_challenge_method", "plain" if challenge else "")
        if challenge is not None and method not in ("S256", "plain"):
            raise OAuthFailure(400, "invalid_request", "Invalid code_challenge_method.")
        if method and challenge is None:
            raise OAuthFailure(400, "invalid_request", "Missing code_challenge.")
    except OAuthFailure as failure:
        return failure.page()
    onboarded = host.config.login_onboarded
    tier = "standard-tier" if onboarded else host.config.default_tier
    account = host.store.account(query.get("login_hint"), None, tier, onboarded)
    scope = granted_scope(requested)
    code = "4/0A" + secrets.token_urlsafe(48)
    host.store.codes[code] = AuthCode(
        account, client_id, redirect_uri, scope, challenge, method,
        offline=query.get("access_type") == "offline",
    )
    answer = [("code", code), ("scope", scope), ("authuser", "0"), ("prompt", "consent")]
    if "state" in query:
        answer.insert(0, ("state", query["state"]))
    joiner = "&" if urlsplit(redirect_uri).query else "?"
    return web.Response(status=302, headers={"Location": redirect_uri + joiner + urlencode(answer)})


async def read_form(request: web.Request) -> dict[str, str]:
    raw = await request.read()
    if request.content_type == "application/json":
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise OAuthFailure(400, "invalid_request", "Invalid JSON payload.") from None
        if not isinstance(data, dict):
            raise OAuthFailure(400, "invalid_request", "Invalid JSON payload.")
        return {str(k): str(v) for k, v in data.items() if v is not None}
    return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


def client_credentials(request: web.Request, form: dict[str, str]) -> tuple[str, str | None]:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip()).decode()
            client_id, _, secret = decoded.partition(":")
            return client_id, secret
        except (binascii.Error, UnicodeDecodeError):
            raise OAuthFailure(401, "invalid_client", "Unauthorized") from None
    return form.get("client_id", ""), form.get("client_secret")


def check_client(host: Host, client_id: str, secret: str | None) -> None:
    if not client_id:
        raise OAuthFailure(400, "invalid_request", "Could not determine client ID from request.")
    if client_id not in host.config.clients:
        raise OAuthFailure(401, "invalid_client", "The OAuth client was not found.")
    if not secret:
        raise OAuthFailure(400, "invalid_request", "client_secret is missing.")
    if secret != host.config.clients[client_id]:
        raise OAuthFailure(401, "invalid_client", "Unauthorized")


def token_answer(host: Host, account: Account, client_id: str, scope: str,
                 grant_token: str | None, grant: Grant | None) -> dict[str, Any]:
    lifetime = host.config.expires_in
    access, _ = host.store.access(account, client_id, scope, lifetime, grant)
    answer: dict[str, Any] = {"access_token": access, "expires_in": lifetime}
    if grant_token is not None:
        answer["refresh_token"] = grant_token
    answer.update(
        scope=scope, token_type="Bearer", id_token=id_token(account, client_id, lifetime)
    )
    return answer


async def token(request: web.Request) -> web.Response:
    host = request.app[HOST]
    host.count("token_calls")
    try:
        form = await read_form(request)
        grant_type = form.get("grant_type", "")
        if grant_type == "refresh_token":
            host.count("refresh_calls")
        elif grant_type == "authorization_code":
            host.count("code_exchanges")
        else:
            raise OAuthFailure(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        client_id, secret = client_credentials(request, form)
        check_client(host, client_id, secret)
        if grant_type == "refresh_token":
            answer = refresh_grant(host, form, client_id)
        else:
            answer = code_grant(host, form, client_id)
    except OAuthFailure as failure:
        host.count("token_failures")
        return failure.response()
    return web.json_response(answer, headers={"Cache-Control": "no-store"})


def refresh_grant(host: Host, form: dict[str, str], client_id: str) -> dict[str, Any]:
    refresh_token = form.get("refresh_token")
    if not refresh_token:
        raise OAuthFailure(400, "invalid_request", "Missing required parameter: refresh_token")
    grant = host.store.grants.get(refresh_token)
    if grant is None or grant.revoked:
        raise OAuthFailure(400, "invalid_grant", "Token has been expired or revoked.")
    if grant.client_id != client_id:
        raise OAuthFailure(400, "unauthorized_client", "Unauthorized")
    return token_answer(host, grant.account, client_id, grant.scope, None, grant)


def pkce_ok(code: AuthCode, verifier: str) -> bool:
    if not re.fullmatch(r"[A-Za-z0-9._~-]{43,128}", verifier):
        return False
    if code.method == "S256":
        return b64url(hashlib.sha256(verifier.encode()).digest()) == code.challenge
    return verifier == code.challenge


def code_grant(host: Host, form: dict[str, str], client_id: str) -> dict[str, Any]:
    value = form.get("code")
    if not value:
        raise OAuthFailure(400, "invalid_request", "Missing required parameter: code")
    redirect_uri = form.get("redirect_uri")
    if not redirect_uri:
        raise OAuthFailure(400, "invalid_request", "Missing required parameter: redirect_uri")
    code = host.store.codes.get(value)
    if code is None:
        raise OAuthFailure(400, "invalid_grant", "Malformed auth code.")
    if code.used or time.time() - code.issued_at > CODE_TTL or code.client_id != client_id:
        raise OAuthFailure(400, "invalid_grant", "Bad Request")
    if redirect_uri != code.redirect_uri:
        raise OAuthFailure(400, "redirect_uri_mismatch", "Bad Request")
    if code.challenge is not None:
        verifier = form.get("code_verifier")
        if not verifier:
            raise OAuthFailure(400, "invalid_grant", "Missing code verifier.")
        if not pkce_ok(code, verifier):
            raise OAuthFailure(400, "invalid_grant", "Invalid code verifier.")
    code.used = True
    grant_token = host.store.grant(code.account, client_id, code.scope) if code.offline else None
    grant = host.store.grants.get(grant_token) if grant_token else None
    return token_answer(host, code.account, client_id, code.scope, grant_token, grant)


async def revoke(request: web.Request) -> web.Response:
    host = request.app[HOST]
    host.count("revoke_calls")
    try:
        form = await read_form(request)
    except OAuthFailure as failure:
        return failure.response()
    value = form.get("token") or request.query.get("token", "")
    grant = host.store.grants.get(value)
    access = host.store.tokens.get(value)
    if grant is not None and not grant.revoked:
        grant.revoked = True
    elif access is not None and access.valid():
        access.revoked = True
    else:
        return OAuthFailure(400, "invalid_token", "Token expired or revoked").response()
    return web.json_response({})


async def userinfo(request: web.Request) -> web.Response:
    host = request.app[HOST]
    host.count("userinfo_calls")
    account = authenticate(request, "userinfo", scope=None).account
    name = account.email.split("@")[0]
    return gemini_api.json_response({
        "id": account.sub,
        "email": account.email,
        "verified_email": True,
        "name": name.title(),
        "given_name": name.title(),
        "picture": "https://lh3.googleusercontent.com/a/default-user=s96-c",
    })


# --------------------------------------------------------------------------
# Code Assist: errors, auth, request parsing
# --------------------------------------------------------------------------


def api_error(code: int, message: str, details: list[dict[str, Any]] | None = None,
              status: str | None = None, headers: dict[str, str] | None = None) -> ApiError:
    error = ApiError(code, message, details)
    if status:
        error.error["status"] = status
    error.headers = headers or {}  # type: ignore[attr-defined]
    return error


def cloudcode_info(reason: str, **metadata: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": SERVICE,
    }
    if metadata:
        info["metadata"] = metadata
    return info


def google_info(reason: str, method: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"method": method, "service": SERVICE},
    }


def retry_info(delay: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


def bad_request(*violations: tuple[str, str]) -> ApiError:
    detail = {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": f, "description": d} for f, d in violations],
    }
    return api_error(400, INVALID_ARGUMENT, [detail])


def permission_denied(project: str) -> ApiError:
    info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "IAM_PERMISSION_DENIED",
        "domain": "cloudaicompanion.googleapis.com",
        "metadata": {
            "permission": "cloudaicompanion.companions.generateChat",
            "resource": f"projects/{project}/locations/global",
        },
    }
    return api_error(403, IAM_DENIED.format(project=project), [info])


def not_found() -> ApiError:
    return api_error(404, NOT_FOUND)


def rpc_method(name: str) -> str:
    if name == "userinfo":
        return "google.identity.oauth2.v2.UserInfo.Get"
    if name == "getOperation":
        return "google.longrunning.Operations.GetOperation"
    return RPC_METHOD + name[0].upper() + name[1:]


def authenticate(request: web.Request, method: str, scope: str | None = CLOUD_PLATFORM) -> AccessToken:
    host = request.app[HOST]
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        host.count("rejected_auth")
        raise api_error(
            401, MISSING_CREDENTIALS, [google_info("CREDENTIALS_MISSING", rpc_method(method))],
            headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
        )
    issued = host.store.tokens.get(value.strip())
    if issued is None or not issued.valid():
        host.count("rejected_auth")
        raise api_error(
            401, gemini_api.BEARER_TOKEN,
            [google_info("ACCESS_TOKEN_TYPE_UNSUPPORTED", rpc_method(method))],
            headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/",'
                     ' error="invalid_token"'},
        )
    if scope and scope not in issued.scope.split():
        raise api_error(
            403, INSUFFICIENT_SCOPES,
            [google_info("ACCESS_TOKEN_SCOPE_INSUFFICIENT", rpc_method(method))],
            headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/",'
                     f' error="insufficient_scope", scope="{CLOUD_PLATFORM}"'},
        )
    return issued


def check_antigravity_client(request: web.Request, config: Config) -> None:
    match = ANTIGRAVITY_UA.match(request.headers.get("User-Agent", "").strip())
    if match is None:
        raise api_error(400, OLD_ANTIGRAVITY)
    version = tuple(int(g) for g in match.groups())
    if version < version_tuple(config.min_version):
        raise api_error(400, OLD_ANTIGRAVITY)


def account_error(mode: str) -> ApiError:
    if mode == "not_allowed":
        return api_error(403, NOT_ALLOWED)
    help_links = {
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [
            {"description": "Verify your account", "url": VALIDATION_URL},
            {"description": "Learn more", "url": "https://support.google.com/gemini"},
        ],
    }
    info = cloudcode_info("VALIDATION_REQUIRED", validation_link=VALIDATION_URL)
    return api_error(403, VALIDATION_REQUIRED, [info, help_links])


# Small proto messages of the setup calls: name -> (kind, type name, enum values or fields)
Spec = dict[str, tuple[str, str, Any]]
IDE_TYPES = [
    "IDE_UNSPECIFIED", "VSCODE", "INTELLIJ", "VSCODE_CLOUD_WORKSTATION",
    "INTELLIJ_CLOUD_WORKSTATION", "CLOUD_SHELL", "GEMINI_CLI", "ANTIGRAVITY",
]
PLATFORMS = [
    "PLATFORM_UNSPECIFIED", "DARWIN_AMD64", "DARWIN_ARM64", "LINUX_AMD64", "LINUX_ARM64",
    "WINDOWS_AMD64",
]
PLUGIN_TYPES = ["PLUGIN_UNSPECIFIED", "CLOUD_CODE", "GEMINI", "AIPLUGIN_INTELLIJ", "AIPLUGIN_STUDIO"]
STRING = ("string", "TYPE_STRING", None)
CLIENT_METADATA: Spec = {
    "ideType": ("enum", "ClientMetadata.IdeType", IDE_TYPES),
    "ideVersion": STRING,
    "pluginVersion": STRING,
    "platform": ("enum", "ClientMetadata.Platform", PLATFORMS),
    "updateChannel": STRING,
    "duetProject": STRING,
    "pluginType": ("enum", "ClientMetadata.PluginType", PLUGIN_TYPES),
    "ideName": STRING,
}
METADATA = ("message", "ClientMetadata", CLIENT_METADATA)
LOAD_REQUEST: Spec = {"cloudaicompanionProject": STRING, "metadata": METADATA}
ONBOARD_REQUEST: Spec = {"tierId": STRING, "cloudaicompanionProject": STRING, "metadata": METADATA}
QUOTA_REQUEST: Spec = {"project": STRING, "userAgent": STRING}
MODELS_REQUEST: Spec = {"project": STRING}
ENVELOPE: Spec = {
    "model": STRING,
    "project": STRING,
    "userPromptId": STRING,
    "request": ("request", "GenerateContentRequest", None),
    "userAgent": STRING,
    "requestType": STRING,
    "requestId": STRING,
    "enabledCreditTypes": ("strings", "TYPE_STRING", None),
}
COUNT_ENVELOPE: Spec = {"request": ("request", "GenerateContentRequest", None)}


def root_message(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise gemini_api.invalid(
            'Invalid JSON payload received. Unknown name "": Root element must be a message.'
        )
    return body


def parse_fields(value: dict[str, Any], spec: Spec, path: str, errors: ParseErrors,
                 special: Callable[[str, Any, str], Any] | None = None) -> dict[str, Any]:
    """A canonical copy (camelCase keys) of a small message, problems into `errors`."""
    names = {alias: name for name in spec for alias in (name, gemini_api.snake(name))}
    result: dict[str, Any] = {}
    for key, item in value.items():
        name = names.get(key)
        if name is None:
            errors.unknown_name(key, path, "Cannot find field.")
            continue
        if item is None:
            continue
        kind, type_name, extra = spec[name]
        at = gemini_api.join_path(path, gemini_api.snake(name))
        shown = gemini_api.compact(item)
        if kind == "string":
            if not isinstance(item, str):
                errors.invalid_value(at, type_name, shown)
                continue
        elif kind == "strings":
            items = item if isinstance(item, list) else [item]
            if not all(isinstance(x, str) for x in items):
                errors.invalid_value(at, type_name, shown)
                continue
            item = items
        elif kind == "enum":
            if isinstance(item, str) and item.upper() in extra:
                item = item.upper()
            elif not (isinstance(item, int) and not isinstance(item, bool) and item >= 0):
                errors.invalid_value(at, CA_TYPE + type_name, shown)
                continue
        elif kind == "message":
            if not isinstance(item, dict):
                errors.invalid_value(at, CA_TYPE + type_name, shown)
                continue
            item = parse_fields(item, extra, at, errors)
        elif special is not None:
            item = special(key, item, at)
        result[name] = item
    return result


def parse_setup(body: Any, spec: Spec) -> dict[str, Any]:
    errors = ParseErrors()
    parsed = parse_fields(root_message(body), spec, "", errors)
    errors.raise_if_any()
    return parsed


@dataclass
class Envelope:
    fields: dict[str, Any]
    request: dict[str, Any]  # the canonical GenerateContentRequest
    session_id: str | None = None
    labels: dict[str, str] | None = None


def parse_envelope(body: Any, spec: Spec, antigravity: bool) -> Envelope:
    """Proto JSON parsing of a whole Code Assist envelope, all problems at once."""
    errors = ParseErrors()
    extras: dict[str, Any] = {}

    def inner(key: str, item: Any, at: str) -> Any:
        if not isinstance(item, dict):
            errors.invalid_value(at, gemini_api.TYPE_PREFIX + "GenerateContentRequest",
                                 gemini_api.compact(item))
            return {}
        item = dict(item)
        for name in ("session_id", "sessionId"):
            if name in item:
                value = item.pop(name)
                if value is not None and not isinstance(value, str):
                    errors.invalid_value(f"{at}.session_id", "TYPE_STRING", gemini_api.compact(value))
                elif value is not None:
                    extras["session_id"] = value
        if "labels" in item:
            labels = item.pop("labels")
            if labels is not None and not (
                isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values())
            ):
                errors.invalid_value(f"{at}.labels", "TYPE_STRING", gemini_api.compact(labels))
            elif labels is not None:
                extras["labels"] = labels
        if antigravity:
            for name in ("safetySettings", "safety_settings"):
                if name in item:
                    item.pop(name)
                    errors.unknown_name(name, at, "Cannot find field.")
        return gemini_api.parse_message(item, "GenerateContentRequest", at, errors)

    parsed = parse_fields(root_message(body), spec, "", errors, special=inner)
    errors.raise_if_any()
    return Envelope(parsed, parsed.get("request", {}), extras.get("session_id"),
                    extras.get("labels"))


# --------------------------------------------------------------------------
# Code Assist: setup methods
# --------------------------------------------------------------------------


def operation_json(op: Operation) -> dict[str, Any]:
    body: dict[str, Any] = {"name": op.name, "done": op.done}
    if op.done:
        response: dict[str, Any] = {"@type": CA_TYPE + "OnboardUserResponse"}
        if op.project:
            response["cloudaicompanionProject"] = {"id": op.project, "name": op.project}
        body["response"] = response
    return body


def complete(op: Operation) -> None:
    op.done = True
    if op.project:
        op.account.onboarded = True
        op.account.tier = op.tier


async def load_code_assist(request: web.Request, host: Host, access: AccessToken) -> web.Response:
    host.count("load_calls")
    body = parse_setup(await gemini_api.read_json(request), LOAD_REQUEST)
    account = access.account
    project = body.get("cloudaicompanionProject")
    if project and project != account.project:
        raise permission_denied(project)
    tier = TIERS[account.tier]
    answer: dict[str, Any] = {}
    if account.onboarded:
        answer["currentTier"] = tier
    answer["allowedTiers"] = [{**tier, "isDefault": True}]
    if account.onboarded:
        answer["cloudaicompanionProject"] = account.project
    return gemini_api.json_response(answer)


async def onboard_user(request: web.Request, host: Host, access: AccessToken) -> web.Response:
    host.count("onboard_calls")
    body = parse_setup(await gemini_api.read_json(request), ONBOARD_REQUEST)
    account = access.account
    tier_id = body.get("tierId")
    if not tier_id:
        raise bad_request(("tier_id", "tier_id is required"))
    if tier_id != account.tier:
        raise bad_request(("tier_id", f"tier {tier_id} is not allowed for this user"))
    project = body.get("cloudaicompanionProject")
    if tier_id == "free-tier" and project:
        raise api_error(400, PRECONDITION, status="FAILED_PRECONDITION")
    if project and project != account.project:
        raise permission_denied(project)
    store = host.store
    pending = next(
        (op for op in store.operations.values() if op.account is account and not op.done), None
    )
    if pending is not None:
        complete(pending)
        return gemini_api.json_response(operation_json(pending))
    assigned = account.project if (tier_id == "free-tier" or project or account.onboarded) else None
    op = Operation(f"operations/{secrets.token_hex(8)}", account, tier_id, assigned)
    store.operations[op.name] = op
    if account.onboarded or host.config.onboard_polls <= 0:
        complete(op)
    return gemini_api.json_response(operation_json(op))


async def get_operation(request: web.Request) -> web.Response:
    host = request.app[HOST]
    access = authenticate(request, "getOperation")
    account_scenario(request, host)
    host.count("operation_polls")
    op = host.store.operations.get(f"operations/{request.match_info['op']}")
    if op is None or op.account is not access.account:
        raise not_found()
    op.polls += 1
    if not op.done and op.polls > host.config.onboard_polls:
        complete(op)
    return gemini_api.json_response(operation_json(op))


def iso(seconds_from_now: float) -> str:
    moment = datetime.fromtimestamp(time.time() + seconds_from_now, UTC)
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def quota_of(host: Host, model: str) -> dict[str, Any]:
    scenario = host.scenario
    exhausted = scenario.mode == "quota_exhausted" and (
        scenario.models is None or model in scenario.models
    )
    if exhausted:
        return {"remainingFraction": 0, "resetTime": iso(QUOTA_RESET_SECONDS)}
    return {"remainingFraction": 1, "resetTime": iso(5 * 3600)}


async def retrieve_user_quota(request: web.Request, host: Host, access: AccessToken) -> web.Response:
    host.count("quota_calls")
    body = parse_setup(await gemini_api.read_json(request), QUOTA_REQUEST)
    project = body.get("project")
    if not project:
        raise bad_request(("project", "project is required"))
    if project != access.account.project or not access.account.onboarded:
        raise permission_denied(project)
    buckets = [
        {**quota_of(host, m), "tokenType": "REQUESTS", "modelId": m}
        for m in host.config.model_list()
    ]
    return gemini_api.json_response({"buckets": buckets})


def is_claude(model: str) -> bool:
    return model.startswith("claude")


def claude_thinking(model: str) -> bool:
    return is_claude(model) and "thinking" in model


async def fetch_available_models(request: web.Request, host: Host,
                                 access: AccessToken) -> web.Response:
    host.count("fetch_models_calls")
    body = parse_setup(await gemini_api.read_json(request), MODELS_REQUEST)
    project = body.get("project")
    if project and project != access.account.project:
        raise permission_denied(project)
    models: dict[str, Any] = {}
    for model in host.config.model_list():
        claude = is_claude(model)
        models[model] = {
            "displayName": DISPLAY_NAMES.get(model) or " ".join(
                w.capitalize() for w in model.split("-")
            ),
            "supportsThinking": claude_thinking(model) or gemini_api.is_thinking_model(model),
            "maxTokens": 200000 if claude else gemini_api.INPUT_TOKEN_LIMIT,
            "maxOutputTokens": 64000 if claude else gemini_api.OUTPUT_TOKEN_LIMIT,
            "modelProvider": "MODEL_PROVIDER_ANTHROPIC" if claude else "MODEL_PROVIDER_GOOGLE",
            "quotaInfo": quota_of(host, model),
        }
    return gemini_api.json_response({"models": models})


# --------------------------------------------------------------------------
# Code Assist: generation
# --------------------------------------------------------------------------


def claude_invalid(message: str) -> ApiError:
    inner = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": message},
        "request_id": "req_vrtx_" + secrets.token_urlsafe(18),
    }
    return api_error(400, json.dumps(inner, separators=(",", ":")))


def check_claude_history(store: Store, model: str, contents: list[dict[str, Any]]) -> None:
    """Anthropic's rules as Antigravity passes them on: signatures must be genuine, and with
    thinking on, the last assistant turn of a tool loop must start with a thinking block."""
    for i, content in enumerate(contents):
        for j, part in enumerate(content.get("parts", [])):
            signature = part.get("thoughtSignature")
            if signature is not None and (
                gemini_api.decode_bytes(signature) not in store.gemini.signatures
            ):
                raise claude_invalid(THINKING_SIGNATURE_INVALID.format(index=i, part=j))
    if not claude_thinking(model):
        return
    last_model = max(
        (i for i, c in enumerate(contents) if gemini_api.role_of(c) == "model"), default=-1
    )
    if last_model <= gemini_api.current_turn_start(contents):
        return
    parts = contents[last_model].get("parts") or [{}]
    first = parts[0]
    if first.get("thought"):
        if not first.get("thoughtSignature"):
            raise claude_invalid(THINKING_SIGNATURE_MISSING.format(index=last_model))
        return
    found = "tool_use" if "functionCall" in first else "text"
    raise claude_invalid(THINKING_REQUIRED.format(index=last_model, found=found))


def claude_answer(store: Store, model: str, body: dict[str, Any]) -> gemini_api.Answer:
    answer = gemini_api.build_answer(store.gemini, model, body)  # no thinking: not "gemini-"
    if not claude_thinking(model):
        return answer
    user = gemini_api.last_user_content(body["contents"])
    text = "Thinking about: " + gemini_api.content_text(user)
    shown = gemini_api.thinking_config(body).get("includeThoughts")
    thought = {
        "text": text if shown else "",
        "thought": True,
        "thoughtSignature": store.gemini.issue_signature(),
    }
    return gemini_api.Answer(
        [thought, *answer.parts], answer.finish_reason, answer.candidates_tokens, len(text.split())
    )


def build_reply(store: Store, model: str, body: dict[str, Any]) -> gemini_api.Reply:
    if is_claude(model):
        answer = claude_answer(store, model, body)
    else:
        answer = gemini_api.build_answer(store.gemini, model, body)
    return gemini_api.make_reply(store.gemini, model, body, answer)


def check_antigravity_envelope(envelope: Envelope) -> None:
    problems: list[tuple[str, str]] = []
    found = envelope.fields
    if found.get("userAgent") != "antigravity":
        problems.append(("user_agent", 'user_agent must be "antigravity"'))
    if found.get("requestType") != "agent":
        problems.append(("request_type", 'request_type must be "agent"'))
    if not str(found.get("requestId", "")).startswith("agent-"):
        problems.append(("request_id", 'request_id must start with "agent-"'))
    if not envelope.session_id:
        problems.append(("request.session_id", "session_id is required"))
    if problems:
        raise bad_request(*problems)


def quota_error(mode: str, model: str) -> ApiError:
    if mode == "quota_exhausted":
        info = cloudcode_info(
            "QUOTA_EXHAUSTED", uiMessage="true", model=model, quotaResetDelay=QUOTA_RESET_DELAY,
            quotaResetTimeStamp=iso(QUOTA_RESET_SECONDS),
        )
        return api_error(429, QUOTA_EXHAUSTED, [info, retry_info(QUOTA_RETRY_DELAY)])
    if mode == "rate_limited":
        info = cloudcode_info("RATE_LIMIT_EXCEEDED", model=model)
        return api_error(429, RATE_LIMITED, [info, retry_info(RATE_RETRY_DELAY)])
    info = cloudcode_info("MODEL_CAPACITY_EXHAUSTED", model=model)
    return api_error(503, NO_CAPACITY.format(model=model), [info])


async def generate(request: web.Request, host: Host, access: AccessToken) -> web.StreamResponse:
    method = request.match_info["method"]
    stream = method == "streamGenerateContent"
    sse = stream and request.query.get("alt") == "sse"
    host.count("stream_calls" if stream else "generate_calls")
    antigravity = host.config.flavour == "antigravity"
    envelope = parse_envelope(await gemini_api.read_json(request), ENVELOPE, antigravity)
    model = envelope.fields.get("model")
    project = envelope.fields.get("project")
    missing = [(n, f"{n} is required") for n, v in (("model", model), ("project", project)) if not v]
    if "request" not in envelope.fields:
        missing.append(("request", "request is required"))
    if missing:
        raise bad_request(*missing)
    assert isinstance(model, str) and isinstance(project, str)
    if antigravity:
        check_antigravity_envelope(envelope)
    account = access.account
    if project != account.project or not account.onboarded:
        raise permission_denied(project)
    if model not in host.config.model_list():
        raise not_found()
    body = envelope.request
    gemini_api.validate_generate(body, model, "GenerateContentRequest")
    if is_claude(model):
        check_claude_history(host.store, model, body["contents"])
    else:
        gemini_api.check_signatures(host.store.gemini, model, body["contents"])
    mode = host.scenario.take(GENERATE_MODES, model)
    call = gemini_api.Call(request, model, body, stream, sse)
    if mode in ("quota_exhausted", "rate_limited", "capacity") or (mode == "quota_stream" and not stream):
        raise quota_error("quota_exhausted" if mode == "quota_stream" else mode, model)
    if mode == "quota_stream":
        return await gemini_api.send_reply(call, [{"error": quota_error("quota_exhausted", model).error}])
    if mode == "hang":
        return await gemini_api.fault_hang(call)
    if mode == "cut" and not stream:
        return gemini_api.drop_connection(request)
    reply = build_reply(host.store, model, body)
    trace = secrets.token_hex(8)
    headers = {"x-cloudaicompanion-trace-id": trace}
    if not stream:
        response = gemini_api.json_response(
            {"response": gemini_api.complete_body(reply), "traceId": trace}
        )
        response.headers.update(headers)
        return response
    events = gemini_api.stream_bodies(reply)
    writer = gemini_api.EventWriter(call)
    writer.response.headers.update(headers)
    try:
        await writer.open()
        for event in events[:2] if mode == "cut" else events:
            await writer.send({"response": event, "traceId": trace})
        if mode == "cut":
            return gemini_api.drop_connection(request, writer.response)
        return await writer.close()
    except ConnectionError:  # the client left mid-stream
        return gemini_api.drop_connection(request, writer.response)


async def count_tokens(request: web.Request, host: Host, access: AccessToken) -> web.Response:
    host.count("count_calls")
    envelope = parse_envelope(await gemini_api.read_json(request), COUNT_ENVELOPE, False)
    if "request" not in envelope.fields:
        raise bad_request(("request", "request is required"))
    body = envelope.request
    name = body.get("model", "")
    if not name:
        raise gemini_api.invalid("* CountTokensRequest.model: model is not specified\n")
    if not name.startswith("models/"):
        raise gemini_api.invalid("* CountTokensRequest.model: unexpected model name format\n")
    if name.removeprefix("models/") not in host.config.model_list():
        raise not_found()
    gemini_api.check_roles(body.get("contents", []))
    problems = gemini_api.Problems("CountTokensRequest")
    gemini_api.check_contents(body, problems)
    problems.raise_if_any()
    text_tokens, image_tokens = gemini_api.prompt_tokens(body)
    return gemini_api.json_response({"totalTokens": text_tokens + image_tokens})


Handler = Callable[[web.Request, Host, AccessToken], Any]
METHODS: dict[str, Handler] = {
    "loadCodeAssist": load_code_assist,
    "onboardUser": onboard_user,
    "generateContent": generate,
    "streamGenerateContent": generate,
    "countTokens": count_tokens,
    "retrieveUserQuota": retrieve_user_quota,
    "fetchAvailableModels": fetch_available_models,
}


def account_scenario(request: web.Request, host: Host) -> None:
    if host.config.flavour == "antigravity":
        check_antigravity_client(request, host.config)
    mode = host.scenario.take(ACCOUNT_MODES)
    if mode:
        raise account_error(mode)


async def v1internal(request: web.Request) -> web.StreamResponse:
    host = request.app[HOST]
    method = request.match_info["method"]
    handler = METHODS.get(method)
    if handler is None or (
        method == "fetchAvailableModels" and host.config.flavour != "antigravity"
    ):
        raise web.HTTPNotFound()
    access = authenticate(request, method)
    account_scenario(request, host)
    return await handler(request, host, access)


# --------------------------------------------------------------------------
# Middlewares
# --------------------------------------------------------------------------


@web.middleware
async def google_errors(request: web.Request, handler: Callable) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        text = json.dumps({"error": error.error}, indent=2)
        kind = "application/json"
        if request.path.endswith(":streamGenerateContent"):
            if request.query.get("alt") == "sse":
                kind = "text/event-stream"  # what the real service labels them
            else:
                text = f"[{text}\n]"
        return web.Response(status=error.status, text=text, content_type=kind,
                            headers=getattr(error, "headers", None))
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        page = gemini_api.HTML_404.format(path=request.path)
        return web.Response(status=404, text=page, content_type="text/html")


@web.middleware
async def host_down(request: web.Request, handler: Callable) -> web.StreamResponse:
    if request.path.startswith("/v1internal"):
        host = request.app[HOST]
        mode = host.scenario.take(HOST_MODES)
        if mode:
            host.count("down_hits")
            if mode == "down_close":
                return gemini_api.drop_connection(request)
            raise api_error(503, HOST_DOWN)
    return await handler(request)


# --------------------------------------------------------------------------
# Control endpoints
# --------------------------------------------------------------------------


async def control_json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise web.HTTPBadRequest(text="body must be JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return body


async def seed(request: web.Request) -> web.Response:
    host = request.app[HOST]
    body = await control_json(request)
    client = body.get("client") or host.config.flavour
    client_id = CLIENT_NAMES.get(client, client)
    if client_id not in host.config.clients:
        raise web.HTTPBadRequest(text=f"unknown client {client!r}")
    onboarded = bool(body.get("onboarded", True))
    tier = body.get("tier") or ("standard-tier" if onboarded else host.config.default_tier)
    if tier not in TIERS:
        raise web.HTTPBadRequest(text=f"tier must be one of {list(TIERS)}")
    account = host.store.account(body.get("email"), body.get("project"), tier, onboarded)
    default_scopes = ANTIGRAVITY_SCOPES if client_id == ANTIGRAVITY_CLIENT else GEMINI_CLI_SCOPES
    scope = body.get("scope") or granted_scope(default_scopes)
    refresh_token = host.store.grant(account, client_id, scope)
    lifetime = -60 if body.get("expired") else host.config.expires_in
    access, issued = host.store.access(
        account, client_id, scope, lifetime, host.store.grants[refresh_token]
    )
    return web.json_response({
        "access_token": access,
        "refresh_token": refresh_token,
        "scope": scope,
        "token_type": "Bearer",
        "id_token": id_token(account, client_id, host.config.expires_in),
        "expiry_date": int(issued.expires_at * 1000),
    })


async def state(request: web.Request) -> web.Response:
    host = request.app[HOST]
    answer: dict[str, Any] = {
        name: host.counts[name] for name in (
            "token_calls", "refresh_calls", "code_exchanges", "token_failures",
            "authorize_calls", "revoke_calls", "userinfo_calls", "load_calls", "onboard_calls",
            "operation_polls", "generate_calls", "stream_calls", "count_calls", "quota_calls",
            "fetch_models_calls", "rejected_auth", "down_hits",
        )
    }
    answer["scenario"] = host.scenario.as_dict()
    answer["config"] = asdict(host.config)
    answer["accounts"] = [
        {"email": a.email, "project": a.project, "tier": a.tier, "onboarded": a.onboarded}
        for a in host.store.accounts
    ]
    answer["valid_access_tokens"] = sum(1 for t in host.store.tokens.values() if t.valid())
    return web.json_response(answer)


async def expire_access(request: web.Request) -> web.Response:
    body = await control_json(request)
    tokens = request.app[HOST].store.tokens
    chosen = [tokens[body["access_token"]]] if body.get("access_token") in tokens else (
        [] if body.get("access_token") else list(tokens.values())
    )
    expired = 0
    for issued in chosen:
        if issued.valid():
            expired += 1
        issued.expires_at = min(issued.expires_at, time.time() - 1)
    return web.json_response({"expired": expired})


async def scenario(request: web.Request) -> web.Response:
    return serving.set_scenario(request.app[HOST].scenario, await control_json(request), MODES)


async def config_endpoint(request: web.Request) -> web.Response:
    host = request.app[HOST]
    if request.method == "POST":
        host.config = serving.updated_config(host.config, await control_json(request))
    return web.json_response(asdict(host.config))


# --------------------------------------------------------------------------
# App and command line
# --------------------------------------------------------------------------


def make_app(config: Config | None = None, store: Store | None = None,
             **settings: Any) -> web.Application:
    """`settings` are Config fields, e.g. make_app(flavour="antigravity", expires_in=5)."""
    config = config or Config(**settings)
    config.check()
    store = store or Store()
    app = serving.application(google_errors, host_down)
    app[HOST] = Host(config, store)
    app[gemini_api.STATE] = store.gemini  # what gemini_api.Call reads
    app.router.add_get("/o/oauth2/v2/auth", authorize)
    app.router.add_post("/token", token)
    app.router.add_post("/revoke", revoke)
    app.router.add_get("/oauth2/{version:v[12]}/userinfo", userinfo)
    app.router.add_post("/v1internal:{method:[A-Za-z]+}", v1internal)
    app.router.add_get("/v1internal/operations/{op:[A-Za-z0-9_-]+}", get_operation)
    app.router.add_post("/__seed", seed)
    app.router.add_get("/__state", state)
    app.router.add_post("/__expire_access", expire_access)
    app.router.add_post("/__scenario", scenario)
    app.router.add_get("/__config", config_endpoint)
    app.router.add_post("/__config", config_endpoint)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--flavour", choices=FLAVOURS, default="gemini-cli")
    parser.add_argument("--models", default=None,
                        help="comma-separated model ids (default: the flavour's list)")
    parser.add_argument("--expires-in", type=int, default=3599, help="access token lifetime (s)")
    parser.add_argument("--min-version", default="1.11.0", help="oldest Antigravity accepted")
    parser.add_argument("--default-tier", choices=list(TIERS), default="free-tier")
    parser.add_argument("--onboard-polls", type=int, default=1,
                        help="operation polls answered done:false")
    args = parser.parse_args(argv)
    models = [m.strip() for m in (args.models or "").split(",") if m.strip()] or None
    settings = Config(
        flavour=args.flavour, models=models, expires_in=args.expires_in,
        min_version=args.min_version, default_tier=args.default_tier,
        onboard_polls=args.onboard_polls,
    )
    asyncio.run(serving.serve(make_app(settings), args.host, args.port))


if __name__ == "__main__":
    main()
