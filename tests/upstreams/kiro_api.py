"""Strict local double of Kiro: the AWS CodeWhisperer / Q streaming chat API that Kiro IDE
talks to (q.{region}.amazonaws.com), Kiro's social-login refresh service
(prod.{region}.auth.desktop.kiro.dev) and AWS SSO OIDC's CreateToken (oidc.{region}.amazonaws.com),
folded onto one aiohttp.web origin.

Facts from /work/shared/reference/providers.md ("Kiro"), justlovemaki/AIClient-2-API
src/providers/claude/claude-kiro.js, 2ue/kiro.rs src/kiro/model/*, botocore's sso-oidc service
model, and error bodies quoted in peers' issue trackers (cited where used below).

As a process (from the repository root)::

    python -m tests.upstreams.kiro_api --host 127.0.0.1 --port 0 \\
        [--models auto,claude-sonnet-4.5,...] [--expires-in 3600] \\
        [--duplicate tool|text|none] [--slow-delay 0.3] [--no-tool-calls]

prints exactly one line ``READY <port>`` once listening. In-process, serve
``make_app(Config(...))`` with any aiohttp runner (tests use serving.ServerThread).

Chat (Authorization: Bearer <unexpired accessToken issued here>; missing, unknown or expired ->
403 {"message": "The bearer token included in the request is invalid.", "reason": null} with
header x-amzn-ErrorType: AccessDeniedException -- the real body, hank9999/kiro.rs#116; 403 is
what Kiro answers for a stale token, clients refresh on it):
    POST /generateAssistantResponse   JSON {"conversationState": {...}, "profileArn"?,
        "additionalModelRequestFields"?}. Rejections are 400 {"message": "Improperly formed
        request.", "reason": null} (x-amzn-ErrorType ValidationException), the real body
        (hank9999/kiro.rs#60, decolua/9router#1184): the real service says nothing more, so the
        double's explanation ("<path>: <problem>") travels in the x-double-detail header and in
        GET /__state "last_rejection". Checked, first failure wins:
          - the body is a JSON object; unknown fields at any checked level and JSON null for any
            field are refused (assumed: peers note "the API does not accept null values").
          - conversationState: conversationId (non-empty string), chatTriggerType ("MANUAL",
            "DIAGNOSTIC" or "INLINE_CHAT"), agentTaskType "vibe", currentMessage
            {"userInputMessage": {...}} (nothing else), history? [], agentContinuationId?.
          - userInputMessage: content (a string, never ""), modelId, origin "AI_EDITOR" (all three
            required on the current message; in history only content is), images?
            [{format png|jpeg|gif|webp, source: {bytes: <base64>}}], userIntent?,
            userInputMessageContext? {toolResults?, tools?, editorState?, shellState?, gitState?,
            envState?, diagnostic?, consoleState?, userSettings?, additionalContext?}.
          - tools: [{"toolSpecification": {name (1..64 chars, unique), description (1..10240
            chars), inputSchema: {"json": <object>}}} | {"cachePoint": {"type": "default"}}].
          - toolResults: [{toolUseId, content: [{"text": s} | {"json": v}, ...] (non-empty),
            status? "success"|"error"}], toolUseIds unique.
          - history: [{"userInputMessage": {...}} | {"assistantResponseMessage": {content (never
            ""), toolUses? [{toolUseId, name (1..64), input: <object without "" keys>}],
            messageId?, reasoningContent? ({"reasoningText": {text, signature}} |
            {"redactedContent": <base64>}), supplementaryWebLinks?, references?,
            followupPrompt?}}], each item exactly one of the two; starts with a user message,
            strictly alternates and ends with an assistant message (the current message is the
            next user turn; AIClient-2-API: "history must end with assistantResponseMessage").
          - tool pairing (assumed, Claude's rule): a user turn's toolResults answer exactly the
            toolUses of the assistant turn right before it (every id answered, none extra); a
            request with toolUses / toolResults anywhere must define tools on the current message
            (Bedrock's toolConfig rule; peers always send a placeholder tool).
          - a reasoningText signature must be one this double issued, for exactly that text.
          - additionalModelRequestFields? {thinking? {type enabled|adaptive|disabled, display?,
            budget_tokens?}, output_config? {effort}, reasoning? {effort}} (kiro.rs wire format).
          - profileArn: required for social-auth tokens (seeded "social"), and must be that
            account's (another one -> 403 AccessDeniedException "User is not authorized to make
            this call.", assumed); IdC tokens need none (an IdC profileArn is ignored).
          - modelId (current, and any in history) must be a listed model, dotted:
            claude-sonnet-4.5, not claude-sonnet-4-5 -> 400 {"message": "Invalid model. Please
            select a different model to continue.", "reason": "INVALID_MODEL_ID"}
            (jwadow/kiro-gateway#61).
        Answer: 200, Content-Type application/vnd.amazon.eventstream, x-amzn-RequestId, body
        AWS event-stream frames (see encode_frame), each :message-type "event", :event-type
        <name>, :content-type "application/json", payload the event's JSON:
          messageMetadataEvent {conversationId, utteranceId}
          reasoningContentEvent {text: 8-char piece}..., then {text: "", signature}   (thinking)
          assistantResponseEvent {content: 6-char piece}...                            (text)
          toolUseEvent per tool: {name, toolUseId} then {name, toolUseId, input: 5-char piece
              of '{"tool": <name>, "n": <i>}'}... then {name, toolUseId, stop: true}
          metadataEvent {tokenUsage: {uncachedInputTokens, cacheReadInputTokens: 0,
              cacheWriteInputTokens: 0, outputTokens, totalTokens}}   (kiro.rs MetadataTokenUsage)
          contextUsageEvent {contextUsagePercentage}                   (kiro.rs ContextUsageEvent)
        What is answered: current message with toolResults -> "Tool results: a; b" (each
        result's text / JSON); else tools defined (and config.tool_calls) -> one tool use per
        tool (toolUseId "tooluse_" + 22 chars), no text; else "Echo: <content>" (+ " [k
        image(s)]"). Duplicate (config.duplicate, default "tool"): like the real service
        sometimes does, one fragment event is sent twice in a row, verbatim -- the second input
        fragment of the first tool ("tool") or the second text event ("text"); "none" turns it
        off. A client must drop the repeat, not concatenate it.
        Thinking (documented choice): additionalModelRequestFields.thinking.type "enabled" or
        "adaptive" -> reasoningContentEvent "Thinking about: <content>" first, then a signature
        (replayable in history as reasoningContent.reasoningText). AIClient-2-API's prompt-tag
        style (<thinking_mode>enabled|adaptive</thinking_mode> in the current content or the first
        history user message) -> the text answer starts "<thinking>Thinking about the
        request.</thinking>\\n\\n", as a prompted model writes it. No model id means thinking.
        Usage: uncachedInputTokens = prompt characters (all contents + tools JSON) / 4 + 1;
        outputTokens = words of text and thinking + 5 per tool use.

Models (auth as above):
    GET /ListAvailableModels?origin=AI_EDITOR[&maxResults=1..50][&nextToken=t][&profileArn=arn]
        origin must be AI_EDITOR (else 400 improperly formed); social tokens must pass their
        profileArn (peers: "include profileArn for Desktop Auth only"), IdC ones need not. ->
        {"defaultModel": {"modelId": "auto", ...}, "models": [{modelId, modelName, description,
        supportedInputTypes, tokenLimits {maxInputTokens, maxOutputTokens}, promptCaching
        {supportsPromptCaching, maximumCacheCheckpointsPerRequest,
        minimumTokensPerCacheCheckpoint}, rateMultiplier, rateUnit "Credit"}], "nextToken"?}
        (field names from kiro.rs available_models.rs; values assumed).

Refresh:
    POST /refreshToken   (social; prod.{region}.auth.desktop.kiro.dev) JSON {"refreshToken"} ->
        {accessToken, refreshToken (ROTATED: the old one is dead), expiresIn, profileArn}.
        Unknown, used or IdC refresh token -> 401 {"message": "Invalid refresh token"}; body not a
        JSON object with a string refreshToken -> 400 {"message": "Invalid request"} (assumed).
    POST /token          (IdC; AWS SSO OIDC CreateToken, rest-json) JSON {clientId, clientSecret,
        grantType "refresh_token", refreshToken} -> {accessToken, tokenType "Bearer", expiresIn,
        refreshToken (rotated)}. Errors {"error", "error_description"} with x-amzn-ErrorType, the
        status codes from botocore's sso-oidc model: missing clientId / clientSecret / grantType /
        refreshToken -> 400 invalid_request; another grantType -> 400 unsupported_grant_type;
        unknown clientId, wrong secret or expired registration -> 401 invalid_client; unknown,
        used, social or other-client refresh token -> 400 invalid_grant "Invalid refresh token
        provided" (descriptions assumed).
    Earlier access tokens stay valid until they expire (assumed).

Scenarios (POST /__scenario {"mode": m | null, "times"?: n (then cleared), "models"?: [ids]});
they hit generateAssistantResponse after auth and validation ("suspended" also hits
ListAvailableModels):
    throttling        429 {"message": "Too many requests, please wait before trying again.",
                      "reason": null}, ThrottlingException (message from kirodotdev/Kiro#7766;
                      reason assumed)
    throttling_stream 200: messageMetadataEvent, two text events, then an exception frame
                      (:message-type "exception", :exception-type "ThrottlingException", payload
                      {"message": ...}) and a clean end
    quota             402 {"message": "You have reached the limit.", "reason":
                      "MONTHLY_REQUEST_COUNT"} (chaogei/Kiro-account-manager#27),
                      x-amzn-ErrorType ServiceQuotaExceededException (assumed)
    quota_stream      200 with only an exception frame ServiceQuotaExceededException
                      {"message": "You have reached the limit.", "reason": "MONTHLY_REQUEST_COUNT"}
                      (assumed: the in-stream form of the above)
    suspended         403 AccessDeniedException {"message": "Your User ID (<id>) temporarily is
                      suspended. ...", "reason": "TEMPORARILY_SUSPENDED"} -- do NOT refresh on
                      this one (message kirodotdev/Kiro#6745; reason from peers' checks)
    internal          500 {"message": "Encountered an unexpected error when processing the
                      request, please try again.", "reason": null} (wording assumed)
    error_stream      200: three events, then an error frame (:message-type "error",
                      :error-code "InternalServerException", :error-message ..., empty payload)
    corrupt           the third frame's message CRC is wrong (botocore: ChecksumMismatch)
    cut               two frames, half of the third, then the TCP connection is aborted
    split             the normal body, written one byte per write
    slow              sleeps config.slow_delay (0.3 s) before every frame
    hang              no response headers at all (until the client leaves, at most 120 s)

Control (no auth):
    POST /__seed      {"auth": "social"|"idc", "expired"?: bool, "region"?: "us-east-1",
                      "provider"?: str, "client_expired"?: bool} -> a new account's credentials
                      as Kiro writes ~/.aws/sso/cache/kiro-auth-token.json: {accessToken,
                      refreshToken, expiresAt (ISO-8601, ms, Z), authMethod "social"|"IdC",
                      provider ("Google" | "BuilderId"), region, profileArn (social),
                      clientIdHash (idc; opaque sha1 hex, unique per client)}; idc adds "_client":
                      {clientId, clientSecret, expiresAt} for ~/.aws/sso/cache/<clientIdHash>.json.
                      expired: the access token is already past expiresAt (refused) but the
                      refresh token works.
    GET  /__state     {generate_calls, models_calls, refresh_calls, social_refresh_calls,
                      idc_refresh_calls, refresh_failures, rejected_auth, rejected_requests,
                      last_rejection, scenario, config, accounts: [{id, auth, region, profileArn,
                      clientId, refreshToken (current)}], access_tokens (count valid)}
    POST /__expire_access  {"accessToken"?} expire that access token, or all of them
    POST /__scenario  see above
    GET|POST /__config  read / change models, expires_in, duplicate, tool_calls, slow_delay
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
import secrets
import string
import struct
import time
import uuid
import zlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.upstreams import serving

DEFAULT_MODELS = ["auto", "claude-sonnet-4.5", "claude-sonnet-4", "claude-haiku-4.5",
                  "claude-opus-4.5"]
MODEL_INFO: dict[str, tuple[str, str, float, int]] = {  # name, description, rate, max output
    "auto": ("Auto", "Models chosen by task for optimal usage and consistent quality", 1.0, 64000),
    "claude-sonnet-4.5": ("Claude Sonnet 4.5", "The latest Claude Sonnet model", 1.3, 64000),
    "claude-sonnet-4": ("Claude Sonnet 4", "Hybrid reasoning and coding", 1.3, 64000),
    "claude-haiku-4.5": ("Claude Haiku 4.5", "The latest Claude Haiku model", 0.4, 64000),
    "claude-opus-4.5": ("Claude Opus 4.5", "The latest Claude Opus model", 2.2, 32000),
}
EVENTSTREAM = "application/vnd.amazon.eventstream"
DEFAULT_REGION = "us-east-1"
EXPIRES_IN = 3600
CLIENT_TTL = 90 * 24 * 3600
START_URL = "https://view.awsapps.com/start"
TEXT_PIECE = 6
THINKING_PIECE = 8
JSON_PIECE = 5
TOOL_USE_TOKENS = 5
CONTEXT_WINDOW = 200_000
SLOW_DELAY = 0.3
HANG_SECONDS = 120
MAX_TOOL_NAME = 64
MAX_TOOL_DESCRIPTION = 10240
MAX_LIST_RESULTS = 50
DUPLICATE_CHOICES = ("tool", "text", "none")
IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")
TRIGGER_TYPES = ("MANUAL", "DIAGNOSTIC", "INLINE_CHAT")
THINKING_TYPES = ("enabled", "adaptive", "disabled")
THINKING_TAGS = ("<thinking_mode>enabled</thinking_mode>",
                 "<thinking_mode>adaptive</thinking_mode>")
PROMPTED_THINKING = "<thinking>Thinking about the request.</thinking>\n\n"
ID_CHARS = string.ascii_letters + string.digits
CONTEXT_KEYS = ("toolResults", "tools", "editorState", "shellState", "gitState", "envState",
                "diagnostic", "consoleState", "userSettings", "additionalContext")
ASSISTANT_OPTIONAL = ("toolUses", "messageId", "reasoningContent", "supplementaryWebLinks",
                      "references", "followupPrompt")

BAD_TOKEN = "The bearer token included in the request is invalid."
IMPROPER = "Improperly formed request."
INVALID_MODEL = "Invalid model. Please select a different model to continue."
NOT_AUTHORIZED = "User is not authorized to make this call."
THROTTLED = "Too many requests, please wait before trying again."
LIMIT = "You have reached the limit."
SUSPENDED = (
    "Your User ID ({id}) temporarily is suspended. We've locked your account as a security"
    " precaution. To restore access, please contact our support team to verify your identity:"
    " https://support.aws.amazon.com/#/contacts/kiro"
)
INTERNAL = "Encountered an unexpected error when processing the request, please try again."
BAD_REFRESH = "Invalid refresh token"
BAD_GRANT = "Invalid refresh token provided"

MODES = ("throttling", "throttling_stream", "quota", "quota_stream", "suspended", "internal",
         "error_stream", "corrupt", "cut", "split", "slow", "hang")


# --------------------------------------------------------------------------
# AWS event-stream encoding
# --------------------------------------------------------------------------

def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (total length u32 BE, headers length u32 BE),
    prelude CRC32, headers (name length u8, name, type 7 = string, value length u16 BE,
    value), payload, CRC32 of everything before it."""
    encoded = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += struct.pack(">B", len(raw_name)) + raw_name
        encoded += struct.pack(">BH", 7, len(raw_value)) + raw_value
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event_frame(event_type: str, payload: dict[str, Any]) -> bytes:
    return encode_frame(
        {":message-type": "event", ":event-type": event_type, ":content-type": "application/json"},
        json.dumps(payload, separators=(",", ":")).encode(),
    )


def exception_frame(exception_type: str, payload: dict[str, Any]) -> bytes:
    return encode_frame(
        {":message-type": "exception", ":exception-type": exception_type,
         ":content-type": "application/json"},
        json.dumps(payload, separators=(",", ":")).encode(),
    )


def error_frame(code: str, message: str) -> bytes:
    return encode_frame(
        {":message-type": "error", ":error-code": code, ":error-message": message}, b""
    )


def corrupt(frame: bytes) -> bytes:
    """The same frame with a wrong message CRC."""
    return frame[:-1] + bytes([frame[-1] ^ 0xFF])


# --------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------

@dataclass
class Config:
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    expires_in: int = EXPIRES_IN
    duplicate: str = "tool"
    tool_calls: bool = True
    slow_delay: float = SLOW_DELAY

    def check(self) -> None:
        if not self.models or not all(isinstance(m, str) and m for m in self.models):
            raise ValueError("models must be a non-empty list of ids")
        if not isinstance(self.expires_in, int) or self.expires_in < 1:
            raise ValueError("expires_in must be a positive integer")
        if self.duplicate not in DUPLICATE_CHOICES:
            raise ValueError(f"duplicate must be one of {list(DUPLICATE_CHOICES)}")
        if not isinstance(self.tool_calls, bool):
            raise ValueError("tool_calls must be a boolean")
        if isinstance(self.slow_delay, bool) or not isinstance(self.slow_delay, (int, float)) \
                or self.slow_delay < 0:
            raise ValueError("slow_delay must be a non-negative number")


@dataclass
class Account:
    id: str
    auth: str  # "social" | "idc"
    region: str
    profile_arn: str | None = None
    client_id: str | None = None
    refresh_token: str | None = None  # the current, valid one


@dataclass
class Client:
    client_id: str
    secret: str
    expires_at: float


@dataclass
class Access:
    account: Account
    expires_at: float


class Scenario:
    def __init__(self) -> None:
        self.mode: str | None = None
        self.times: int | None = None
        self.models: list[str] | None = None

    def set(self, mode: str | None, times: int | None, models: list[str] | None) -> None:
        self.mode, self.times, self.models = mode, times, models

    def take(self, applicable: tuple[str, ...], model: str | None) -> str | None:
        """The mode when it applies to this request (using up one of `times`)."""
        mode = self.mode
        if mode is None or mode not in applicable:
            return None
        if self.models is not None and model is not None and model not in self.models:
            return None
        if self.times is not None:
            self.times -= 1
            if self.times <= 0:
                self.set(None, None, None)
        return mode

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "times": self.times, "models": self.models}


class Store:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.scenario = Scenario()
        self.accounts: list[Account] = []
        self.clients: dict[str, Client] = {}
        self.access: dict[str, Access] = {}
        self.refresh: dict[str, Account] = {}
        self.signatures: dict[str, str] = {}  # reasoning signature -> its text
        self.counters: dict[str, int] = dict.fromkeys(
            ("generate_calls", "models_calls", "refresh_calls", "social_refresh_calls",
             "idc_refresh_calls", "refresh_failures", "rejected_auth", "rejected_requests"), 0
        )
        self.last_rejection: str | None = None

    def count(self, name: str) -> None:
        self.counters[name] += 1

    def issue(self, account: Account, expired: bool = False) -> tuple[str, str, float]:
        """New access + refresh tokens; the account's previous refresh token dies."""
        if account.refresh_token is not None:
            self.refresh.pop(account.refresh_token, None)
        access = "aoa" + secrets.token_urlsafe(48)
        refresh = "aor" + secrets.token_urlsafe(48)
        now = time.time()
        expires_at = now - 60 if expired else now + self.config.expires_in
        self.access[access] = Access(account, expires_at)
        self.refresh[refresh] = account
        account.refresh_token = refresh
        return access, refresh, expires_at

    def as_dict(self) -> dict[str, Any]:
        now = time.time()
        return {
            **self.counters,
            "last_rejection": self.last_rejection,
            "scenario": self.scenario.as_dict(),
            "config": asdict(self.config),
            "accounts": [
                {"id": a.id, "auth": a.auth, "region": a.region, "profileArn": a.profile_arn,
                 "clientId": a.client_id, "refreshToken": a.refresh_token}
                for a in self.accounts
            ],
            "access_tokens": sum(1 for a in self.access.values() if a.expires_at > now),
        }


STORE = web.AppKey("store", Store)


def iso(moment: float) -> str:
    stamp = datetime.fromtimestamp(moment, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def random_id(length: int, alphabet: str = ID_CHARS) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

class Reject(Exception):
    """An error answer: JSON body, status, x-amzn-ErrorType, optional explanation."""

    def __init__(self, status: int, body: dict[str, Any], error_type: str,
                 detail: str | None = None) -> None:
        super().__init__(detail or body.get("message"))
        self.status, self.body, self.error_type, self.detail = status, body, error_type, detail


class Invalid(Exception):
    """A validation failure: "<path>: <problem>"."""


def improper(detail: str) -> Reject:
    return Reject(400, {"message": IMPROPER, "reason": None}, "ValidationException", detail)


def bad_token(detail: str) -> Reject:
    return Reject(403, {"message": BAD_TOKEN, "reason": None}, "AccessDeniedException", detail)


@web.middleware
async def aws_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except Reject as error:
        store = request.app[STORE]
        store.last_rejection = f"{error.status} {error.error_type}: {error.detail or ''}".strip()
        store.count("rejected_auth" if error.status == 403 else "rejected_requests")
        headers = {"x-amzn-RequestId": str(uuid.uuid4()), "x-amzn-ErrorType": error.error_type}
        if error.detail:
            headers["x-double-detail"] = error.detail.encode("ascii", "replace").decode()
        return web.json_response(error.body, status=error.status, headers=headers)


def authenticate(request: web.Request) -> Account:
    store = request.app[STORE]
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise bad_token("no Authorization: Bearer header")
    grant = store.access.get(header[len("Bearer "):])
    if grant is None:
        raise bad_token("unknown access token")
    if grant.expires_at <= time.time():
        raise bad_token("access token expired")
    return grant.account


async def read_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        raise improper("body: not valid JSON") from None
    if not isinstance(body, dict):
        raise improper("body: expected a JSON object")
    return body


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------

def obj(value: Any, loc: str, required: tuple[str, ...] = (),
        optional: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"{loc}: expected an object")
    for key in required:
        if key not in value:
            raise Invalid(f"{loc}.{key}: required")
    for key, item in value.items():
        if key not in required and key not in optional:
            raise Invalid(f"{loc}.{key}: unknown field")
        if item is None:
            raise Invalid(f"{loc}.{key}: null is not accepted (omit the field)")
    return value


def text(value: Any, loc: str, *, nonempty: bool = False, max_len: int | None = None,
         choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str):
        raise Invalid(f"{loc}: expected a string")
    if nonempty and not value:
        raise Invalid(f"{loc}: must not be empty")
    if max_len is not None and len(value) > max_len:
        raise Invalid(f"{loc}: {len(value)} characters, at most {max_len} allowed")
    if choices is not None and value not in choices:
        raise Invalid(f"{loc}: must be one of {list(choices)}, got {value!r}")
    return value


def array(value: Any, loc: str, *, nonempty: bool = False) -> list[Any]:
    if not isinstance(value, list):
        raise Invalid(f"{loc}: expected an array")
    if nonempty and not value:
        raise Invalid(f"{loc}: must not be empty")
    return value


def union(value: Any, loc: str, members: tuple[str, ...]) -> str:
    obj(value, loc, (), members)
    if len(value) != 1:
        raise Invalid(f"{loc}: exactly one of {list(members)} expected")
    return next(iter(value))


def base64_bytes(value: Any, loc: str) -> bytes:
    try:
        return base64.b64decode(text(value, loc, nonempty=True), validate=True)
    except binascii.Error:
        raise Invalid(f"{loc}: not valid base64") from None


@dataclass
class Turn:
    role: str  # "user" | "assistant"
    loc: str
    content: str
    model: str | None = None
    images: int = 0
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_results: list[dict[str, Any]] = field(default_factory=list)
    tool_uses: list[dict[str, Any]] = field(default_factory=list)
    has_tools: bool = False


@dataclass
class Parsed:
    conversation_id: str
    model: str
    content: str
    images: int
    tools: list[dict[str, Any]]
    tool_results: list[dict[str, Any]]
    thinking: bool
    prompted_thinking: bool
    prompt_chars: int
    history_models: list[str]


def check_tools(value: Any, loc: str) -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(array(value, loc)):
        at = f"{loc}[{i}]"
        kind = union(item, at, ("toolSpecification", "cachePoint"))
        if kind == "cachePoint":
            point = obj(item["cachePoint"], f"{at}.cachePoint", ("type",))
            text(point["type"], f"{at}.cachePoint.type", choices=("default",))
            continue
        spec = obj(item["toolSpecification"], f"{at}.toolSpecification",
                   ("name", "description", "inputSchema"))
        name = text(spec["name"], f"{at}.toolSpecification.name", nonempty=True,
                    max_len=MAX_TOOL_NAME)
        if name in seen:
            raise Invalid(f"{at}.toolSpecification.name: duplicate tool name {name!r}")
        seen.add(name)
        text(spec["description"], f"{at}.toolSpecification.description", nonempty=True,
             max_len=MAX_TOOL_DESCRIPTION)
        schema = obj(spec["inputSchema"], f"{at}.toolSpecification.inputSchema", ("json",))
        if not isinstance(schema["json"], dict):
            raise Invalid(f"{at}.toolSpecification.inputSchema.json: expected an object")
        specs.append(spec)
    return specs


def check_tool_results(value: Any, loc: str) -> list[dict[str, Any]]:
    results = array(value, loc)
    seen: set[str] = set()
    for i, result in enumerate(results):
        at = f"{loc}[{i}]"
        obj(result, at, ("toolUseId", "content"), ("status",))
        tool_use_id = text(result["toolUseId"], f"{at}.toolUseId", nonempty=True)
        if tool_use_id in seen:
            raise Invalid(f"{at}.toolUseId: duplicate toolUseId {tool_use_id!r}")
        seen.add(tool_use_id)
        if "status" in result:
            text(result["status"], f"{at}.status", choices=("success", "error"))
        for j, part in enumerate(array(result["content"], f"{at}.content", nonempty=True)):
            kind = union(part, f"{at}.content[{j}]", ("text", "json"))
            if kind == "text":
                text(part["text"], f"{at}.content[{j}].text")
    return results


def check_user(value: Any, loc: str, current: bool) -> Turn:
    required = ("content", "modelId", "origin") if current else ("content",)
    optional = ("images", "userInputMessageContext", "userIntent") + (
        () if current else ("modelId", "origin"))
    message = obj(value, loc, required, optional)
    turn = Turn("user", loc, text(message["content"], f"{loc}.content", nonempty=True))
    if "modelId" in message:
        turn.model = text(message["modelId"], f"{loc}.modelId", nonempty=True)
    if "origin" in message:
        text(message["origin"], f"{loc}.origin", choices=("AI_EDITOR",))
    if "userIntent" in message:
        text(message["userIntent"], f"{loc}.userIntent", nonempty=True)
    for i, image in enumerate(array(message.get("images", []), f"{loc}.images")):
        at = f"{loc}.images[{i}]"
        obj(image, at, ("format", "source"))
        text(image["format"], f"{at}.format", choices=IMAGE_FORMATS)
        obj(image["source"], f"{at}.source", ("bytes",))
        base64_bytes(image["source"]["bytes"], f"{at}.source.bytes")
        turn.images += 1
    if "userInputMessageContext" in message:
        at = f"{loc}.userInputMessageContext"
        context = obj(message["userInputMessageContext"], at, (), CONTEXT_KEYS)
        if "tools" in context:
            turn.tools = check_tools(context["tools"], f"{at}.tools")
            turn.has_tools = bool(context["tools"])
        if "toolResults" in context:
            turn.tool_results = check_tool_results(context["toolResults"], f"{at}.toolResults")
    return turn


def check_assistant(value: Any, loc: str, store: Store) -> Turn:
    message = obj(value, loc, ("content",), ASSISTANT_OPTIONAL)
    turn = Turn("assistant", loc, text(message["content"], f"{loc}.content", nonempty=True))
    seen: set[str] = set()
    for i, use in enumerate(array(message.get("toolUses", []), f"{loc}.toolUses")):
        at = f"{loc}.toolUses[{i}]"
        obj(use, at, ("toolUseId", "name", "input"))
        tool_use_id = text(use["toolUseId"], f"{at}.toolUseId", nonempty=True)
        if tool_use_id in seen:
            raise Invalid(f"{at}.toolUseId: duplicate toolUseId {tool_use_id!r}")
        seen.add(tool_use_id)
        text(use["name"], f"{at}.name", nonempty=True, max_len=MAX_TOOL_NAME)
        if not isinstance(use["input"], dict):
            raise Invalid(f"{at}.input: expected an object")
        if "" in use["input"]:
            raise Invalid(f'{at}.input: empty-string keys are not accepted')
        turn.tool_uses.append(use)
    if "reasoningContent" in message:
        at = f"{loc}.reasoningContent"
        kind = union(message["reasoningContent"], at, ("reasoningText", "redactedContent"))
        if kind == "reasoningText":
            reasoning = obj(message["reasoningContent"]["reasoningText"], f"{at}.reasoningText",
                            ("text", "signature"))
            said = text(reasoning["text"], f"{at}.reasoningText.text")
            signature = text(reasoning["signature"], f"{at}.reasoningText.signature",
                             nonempty=True)
            if store.signatures.get(signature) != said:
                raise Invalid(f"{at}.reasoningText.signature: not a signature issued for this text")
        else:
            base64_bytes(message["reasoningContent"]["redactedContent"], f"{at}.redactedContent")
    return turn


def check_pairing(turns: list[Turn]) -> None:
    for previous, turn in itertools.pairwise(turns):
        if previous.role != "assistant" or turn.role != "user":
            continue
        uses = [u["toolUseId"] for u in previous.tool_uses]
        answered = [r["toolUseId"] for r in turn.tool_results]
        for i, tool_use_id in enumerate(answered):
            if tool_use_id not in uses:
                raise Invalid(
                    f"{turn.loc}.userInputMessageContext.toolResults[{i}].toolUseId:"
                    f" {tool_use_id!r} answers no toolUse of the previous assistant message"
                )
        missing = [u for u in uses if u not in answered]
        if missing:
            raise Invalid(f"{turn.loc}: no toolResults for toolUses {missing} of {previous.loc}")
    if turns and turns[0].tool_results:
        raise Invalid(f"{turns[0].loc}.userInputMessageContext.toolResults: nothing to answer")


def check_thinking(value: Any) -> bool:
    fields_ = obj(value, "additionalModelRequestFields", (),
                  ("thinking", "output_config", "reasoning"))
    on = False
    if "thinking" in fields_:
        at = "additionalModelRequestFields.thinking"
        thinking = obj(fields_["thinking"], at, ("type",), ("display", "budget_tokens"))
        on = text(thinking["type"], f"{at}.type", choices=THINKING_TYPES) != "disabled"
        if "display" in thinking:
            text(thinking["display"], f"{at}.display", nonempty=True)
        budget = thinking.get("budget_tokens", 1024)
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
            raise Invalid(f"{at}.budget_tokens: expected a positive integer")
    for key in ("output_config", "reasoning"):
        if key in fields_:
            effort = obj(fields_[key], f"additionalModelRequestFields.{key}", ("effort",))
            text(effort["effort"], f"additionalModelRequestFields.{key}.effort", nonempty=True)
    return on


def validate(body: dict[str, Any], store: Store) -> Parsed:
    """The request's structure and semantics; raises Invalid."""
    obj(body, "body", ("conversationState",), ("profileArn", "additionalModelRequestFields"))
    if "profileArn" in body:
        text(body["profileArn"], "profileArn", nonempty=True)
    thinking = check_thinking(body["additionalModelRequestFields"]) if (
        "additionalModelRequestFields" in body) else False
    state = obj(body["conversationState"], "conversationState",
                ("conversationId", "currentMessage", "chatTriggerType", "agentTaskType"),
                ("history", "agentContinuationId"))
    conversation_id = text(state["conversationId"], "conversationState.conversationId",
                           nonempty=True)
    text(state["chatTriggerType"], "conversationState.chatTriggerType", choices=TRIGGER_TYPES)
    text(state["agentTaskType"], "conversationState.agentTaskType", choices=("vibe",))
    if "agentContinuationId" in state:
        text(state["agentContinuationId"], "conversationState.agentContinuationId", nonempty=True)
    loc = "conversationState.currentMessage"
    obj(state["currentMessage"], loc, ("userInputMessage",))
    current = check_user(state["currentMessage"]["userInputMessage"], f"{loc}.userInputMessage",
                         current=True)
    turns: list[Turn] = []
    for i, item in enumerate(array(state.get("history", []), "conversationState.history")):
        at = f"conversationState.history[{i}]"
        kind = union(item, at, ("userInputMessage", "assistantResponseMessage"))
        expected = "userInputMessage" if i % 2 == 0 else "assistantResponseMessage"
        if kind != expected:
            raise Invalid(f"{at}: expected {expected} (history starts with a user message and"
                          " alternates)")
        turns.append(check_user(item[kind], f"{at}.{kind}", current=False) if i % 2 == 0
                     else check_assistant(item[kind], f"{at}.{kind}", store))
    if turns and turns[-1].role != "assistant":
        raise Invalid("conversationState.history: must end with an assistantResponseMessage")
    turns.append(current)
    check_pairing(turns)
    if any(t.tool_uses or t.tool_results for t in turns) and not current.has_tools:
        raise Invalid(f"{current.loc}.userInputMessageContext.tools: required when the"
                      " conversation holds toolUses or toolResults")
    prompted = any(tag in current.content or tag in turns[0].content for tag in THINKING_TAGS)
    chars = sum(len(t.content) for t in turns) + len(json.dumps(current.tools))
    chars += sum(len(json.dumps(t.tool_results)) + len(json.dumps(t.tool_uses)) for t in turns)
    assert current.model is not None
    return Parsed(
        conversation_id=conversation_id, model=current.model, content=current.content,
        images=current.images, tools=current.tools, tool_results=current.tool_results,
        thinking=thinking, prompted_thinking=prompted, prompt_chars=chars,
        history_models=[t.model for t in turns[:-1] if t.model is not None],
    )


# --------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------

def pieces(value: str, size: int) -> list[str]:
    return [value[i:i + size] for i in range(0, len(value), size)] or [""]


def result_text(result: dict[str, Any]) -> str:
    parts = []
    for part in result["content"]:
        parts.append(part["text"] if "text" in part else json.dumps(part["json"]))
    return "".join(parts)


Event = tuple[str, dict[str, Any]]


def plan(parsed: Parsed, store: Store) -> list[Event]:
    """The events of a normal answer, in order."""
    config = store.config
    events: list[Event] = [("messageMetadataEvent", {
        "conversationId": parsed.conversation_id, "utteranceId": str(uuid.uuid4())})]
    output_words = 0
    if parsed.thinking:
        thought = f"Thinking about: {parsed.content}"
        signature = base64.b64encode(secrets.token_bytes(48)).decode()
        store.signatures[signature] = thought
        events += [("reasoningContentEvent", {"text": p}) for p in pieces(thought, THINKING_PIECE)]
        events.append(("reasoningContentEvent", {"text": "", "signature": signature}))
        output_words += len(thought.split())
    text_events: list[Event] = []
    tool_events: list[Event] = []
    if parsed.tool_results:
        answer = "Tool results: " + "; ".join(result_text(r) for r in parsed.tool_results)
    elif parsed.tools and config.tool_calls:
        answer = ""
        for i, spec in enumerate(parsed.tools):
            head = {"name": spec["name"], "toolUseId": "tooluse_" + random_id(22)}
            arguments = json.dumps({"tool": spec["name"], "n": i})
            tool_events.append(("toolUseEvent", dict(head)))
            tool_events += [("toolUseEvent", {**head, "input": p})
                            for p in pieces(arguments, JSON_PIECE)]
            tool_events.append(("toolUseEvent", {**head, "stop": True}))
            output_words += TOOL_USE_TOKENS
    else:
        answer = f"Echo: {parsed.content}"
        if parsed.images:
            answer += f" [{parsed.images} image(s)]"
    if parsed.prompted_thinking and answer:
        answer = PROMPTED_THINKING + answer
    if answer:
        text_events = [("assistantResponseEvent", {"content": p})
                       for p in pieces(answer, TEXT_PIECE)]
        output_words += len(answer.split())
    if config.duplicate == "text" and text_events:
        at = min(1, len(text_events) - 1)
        text_events.insert(at + 1, text_events[at])
    if config.duplicate == "tool" and tool_events:
        at = 2 if len(tool_events) > 3 else 1  # the second input fragment of the first tool
        tool_events.insert(at + 1, tool_events[at])
    events += text_events + tool_events
    input_tokens = parsed.prompt_chars // 4 + 1
    events.append(("metadataEvent", {"tokenUsage": {
        "uncachedInputTokens": input_tokens, "cacheReadInputTokens": 0,
        "cacheWriteInputTokens": 0, "outputTokens": output_words,
        "totalTokens": input_tokens + output_words}}))
    events.append(("contextUsageEvent", {
        "contextUsagePercentage": round(100 * input_tokens / CONTEXT_WINDOW, 4)}))
    return events


async def write_stream(request: web.Request, frames: list[bytes], mode: str | None,
                       delay: float) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": EVENTSTREAM, "x-amzn-RequestId": str(uuid.uuid4())})
    try:
        await response.prepare(request)
        if mode == "split":
            for byte in b"".join(frames):
                await response.write(bytes([byte]))
        elif mode == "cut":
            for frame in frames[:2]:
                await response.write(frame)
            await response.write(frames[2][: len(frames[2]) // 2])
            await request.writer.drain()
            return drop_connection(request, response)
        else:
            for frame in frames:
                if mode == "slow":
                    await asyncio.sleep(delay)
                await response.write(frame)
        await response.write_eof()
    except ConnectionError:  # the client left mid-stream
        return drop_connection(request, response)
    return response


def drop_connection(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    if request.transport is not None:
        request.transport.abort()
    return response


def http_fault(mode: str, account: Account) -> Reject:
    if mode == "throttling":
        return Reject(429, {"message": THROTTLED, "reason": None}, "ThrottlingException")
    if mode == "quota":
        return Reject(402, {"message": LIMIT, "reason": "MONTHLY_REQUEST_COUNT"},
                      "ServiceQuotaExceededException")
    if mode == "suspended":
        return Reject(403, {"message": SUSPENDED.format(id=account.id),
                            "reason": "TEMPORARILY_SUSPENDED"}, "AccessDeniedException")
    return Reject(500, {"message": INTERNAL, "reason": None}, "InternalServerException")


# --------------------------------------------------------------------------
# Handlers
# --------------------------------------------------------------------------

def check_profile(store: Store, account: Account, profile_arn: str | None, where: str) -> None:
    if account.auth != "social":
        return
    if profile_arn is None:
        raise improper(f"{where}: required for social-auth (Kiro desktop) tokens")
    if profile_arn != account.profile_arn:
        raise Reject(403, {"message": NOT_AUTHORIZED, "reason": None}, "AccessDeniedException",
                     f"{where}: not this token's profile")


async def generate(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE]
    store.count("generate_calls")
    account = authenticate(request)
    body = await read_object(request)
    try:
        parsed = validate(body, store)
    except Invalid as error:
        raise improper(str(error)) from None
    check_profile(store, account, body.get("profileArn"), "profileArn")
    for model in [parsed.model, *parsed.history_models]:
        if model not in store.config.models:
            raise Reject(400, {"message": INVALID_MODEL, "reason": "INVALID_MODEL_ID"},
                         "ValidationException", f"modelId {model!r} is not offered")
    mode = store.scenario.take(MODES, parsed.model)
    if mode in ("throttling", "quota", "suspended", "internal"):
        raise http_fault(mode, account)
    if mode == "hang":
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANG_SECONDS
        while loop.time() < deadline and not (
                request.transport is None or request.transport.is_closing()):
            await asyncio.sleep(0.05)
        return drop_connection(request, web.Response())
    events = plan(parsed, store)
    frames = [event_frame(name, payload) for name, payload in events]
    if mode == "throttling_stream":
        frames = frames[:3] + [exception_frame("ThrottlingException", {"message": THROTTLED})]
    elif mode == "quota_stream":
        frames = [exception_frame("ServiceQuotaExceededException",
                                  {"message": LIMIT, "reason": "MONTHLY_REQUEST_COUNT"})]
    elif mode == "error_stream":
        frames = frames[:3] + [error_frame("InternalServerException", INTERNAL)]
    elif mode == "corrupt":
        frames[2] = corrupt(frames[2])
    return await write_stream(request, frames, mode, store.config.slow_delay)


def model_entry(model_id: str) -> dict[str, Any]:
    name, description, rate, max_output = MODEL_INFO.get(
        model_id, (model_id, f"{model_id} (configured)", 1.0, 64000))
    return {
        "modelId": model_id, "modelName": name, "description": description,
        "supportedInputTypes": ["TEXT", "IMAGE"],
        "tokenLimits": {"maxInputTokens": CONTEXT_WINDOW, "maxOutputTokens": max_output},
        "promptCaching": {"supportsPromptCaching": True, "maximumCacheCheckpointsPerRequest": 4,
                          "minimumTokensPerCacheCheckpoint": 1024},
        "rateMultiplier": rate, "rateUnit": "Credit",
    }


async def list_models(request: web.Request) -> web.Response:
    store = request.app[STORE]
    store.count("models_calls")
    account = authenticate(request)
    query = request.query
    unknown = set(query) - {"origin", "maxResults", "nextToken", "profileArn", "modelProvider"}
    if unknown:
        raise improper(f"query: unknown parameter {min(unknown)!r}")
    if query.get("origin") != "AI_EDITOR":
        raise improper("origin: must be AI_EDITOR")
    check_profile(store, account, query.get("profileArn"), "profileArn (query)")
    try:
        limit = int(query.get("maxResults", MAX_LIST_RESULTS))
        start = int(base64.urlsafe_b64decode(query["nextToken"]).decode()) if (
            "nextToken" in query) else 0
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise improper("maxResults / nextToken: malformed") from None
    if not 1 <= limit <= MAX_LIST_RESULTS or not 0 <= start <= len(store.config.models):
        raise improper("maxResults / nextToken: out of range")
    if store.scenario.take(("suspended",), None):
        raise http_fault("suspended", account)
    page = store.config.models[start:start + limit]
    body: dict[str, Any] = {"defaultModel": model_entry("auto"),
                            "models": [model_entry(m) for m in page]}
    if start + limit < len(store.config.models):
        body["nextToken"] = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
    return web.json_response(body, headers={"x-amzn-RequestId": str(uuid.uuid4())})


async def refresh_social(request: web.Request) -> web.Response:
    store = request.app[STORE]
    store.count("refresh_calls")
    store.count("social_refresh_calls")
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("refreshToken"), str):
        store.count("refresh_failures")
        return web.json_response({"message": "Invalid request"}, status=400)
    account = store.refresh.get(body["refreshToken"])
    if account is None or account.auth != "social":
        store.count("refresh_failures")
        return web.json_response({"message": BAD_REFRESH}, status=401)
    access, refresh, _ = store.issue(account)
    return web.json_response({"accessToken": access, "refreshToken": refresh,
                              "expiresIn": store.config.expires_in,
                              "profileArn": account.profile_arn})


def oidc_error(status: int, error: str, description: str, error_type: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status,
                             headers={"x-amzn-ErrorType": error_type,
                                      "x-amzn-RequestId": str(uuid.uuid4())})


async def create_token(request: web.Request) -> web.Response:
    store = request.app[STORE]
    store.count("refresh_calls")
    store.count("idc_refresh_calls")
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        body = None
    failure = None
    if not isinstance(body, dict):
        failure = oidc_error(400, "invalid_request", "Invalid request body",
                             "InvalidRequestException")
    else:
        missing = [k for k in ("clientId", "clientSecret", "grantType")
                   if not isinstance(body.get(k), str) or not body[k]]
        if missing:
            failure = oidc_error(400, "invalid_request", f"Missing {missing[0]}",
                                 "InvalidRequestException")
        elif body["grantType"] != "refresh_token":
            failure = oidc_error(400, "unsupported_grant_type",
                                 f"Unsupported grant type: {body['grantType']}",
                                 "UnsupportedGrantTypeException")
        elif not isinstance(body.get("refreshToken"), str) or not body["refreshToken"]:
            failure = oidc_error(400, "invalid_request", "Missing refreshToken",
                                 "InvalidRequestException")
    if failure is None:
        assert isinstance(body, dict)
        client = store.clients.get(body["clientId"])
        if client is None or not secrets.compare_digest(client.secret, body["clientSecret"]):
            failure = oidc_error(401, "invalid_client", "Invalid client credentials",
                                 "InvalidClientException")
        elif client.expires_at <= time.time():
            failure = oidc_error(401, "invalid_client", "Client registration has expired",
                                 "InvalidClientException")
        else:
            account = store.refresh.get(body["refreshToken"])
            if account is None or account.client_id != client.client_id:
                failure = oidc_error(400, "invalid_grant", BAD_GRANT, "InvalidGrantException")
            else:
                access, refresh, _ = store.issue(account)
                return web.json_response({"accessToken": access, "tokenType": "Bearer",
                                          "expiresIn": store.config.expires_in,
                                          "refreshToken": refresh},
                                         headers={"x-amzn-RequestId": str(uuid.uuid4())})
    store.count("refresh_failures")
    return failure


# --------------------------------------------------------------------------
# Control
# --------------------------------------------------------------------------

async def control_json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="body must be JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return body


async def seed(request: web.Request) -> web.Response:
    store = request.app[STORE]
    body = await control_json(request)
    auth = body.get("auth", "social")
    if auth not in ("social", "idc"):
        raise web.HTTPBadRequest(text='auth must be "social" or "idc"')
    region = body.get("region", DEFAULT_REGION)
    if not isinstance(region, str) or not region:
        raise web.HTTPBadRequest(text="region must be a string")
    account = Account(str(uuid.uuid4()), auth, region)
    client: Client | None = None
    if auth == "social":
        account.profile_arn = (f"arn:aws:codewhisperer:{region}:{random_id(12, string.digits)}"
                               f":profile/{random_id(12, string.ascii_uppercase + string.digits)}")
    else:
        now = time.time()
        client = Client(random_id(22, ID_CHARS + "-_"), "eyJ" + secrets.token_urlsafe(96),
                        now - 60 if body.get("client_expired") else now + CLIENT_TTL)
        store.clients[client.client_id] = client
        account.client_id = client.client_id
    store.accounts.append(account)
    access, refresh, expires_at = store.issue(account, expired=bool(body.get("expired")))
    creds: dict[str, Any] = {
        "accessToken": access, "refreshToken": refresh, "expiresAt": iso(expires_at),
        "authMethod": "social" if auth == "social" else "IdC",
        "provider": body.get("provider", "Google" if auth == "social" else "BuilderId"),
        "region": region,
    }
    if client is None:
        creds["profileArn"] = account.profile_arn
    else:
        creds["clientIdHash"] = hashlib.sha1(
            json.dumps({"startUrl": START_URL, "clientId": client.client_id}).encode()
        ).hexdigest()
        creds["_client"] = {"clientId": client.client_id, "clientSecret": client.secret,
                            "expiresAt": iso(client.expires_at)}
    return web.json_response(creds)


async def state(request: web.Request) -> web.Response:
    return web.json_response(request.app[STORE].as_dict())


async def expire_access(request: web.Request) -> web.Response:
    store = request.app[STORE]
    body = await control_json(request)
    token = body.get("accessToken")
    targets = [token] if token is not None else list(store.access)
    if token is not None and token not in store.access:
        raise web.HTTPNotFound(text="unknown access token")
    for name in targets:
        store.access[name].expires_at = min(store.access[name].expires_at, time.time() - 1)
    return web.json_response({"expired": len(targets)})


async def scenario(request: web.Request) -> web.Response:
    return serving.set_scenario(request.app[STORE].scenario, await control_json(request), MODES)


async def config_endpoint(request: web.Request) -> web.Response:
    store = request.app[STORE]
    if request.method == "POST":
        store.config = serving.updated_config(store.config, await control_json(request))
    return web.json_response(asdict(store.config))


def make_app(config: Config | None = None) -> web.Application:
    config = config or Config()
    config.check()
    app = serving.application(aws_errors)
    app[STORE] = Store(config)
    app.router.add_post("/generateAssistantResponse", generate)
    app.router.add_get("/ListAvailableModels", list_models)
    app.router.add_post("/refreshToken", refresh_social)
    app.router.add_post("/token", create_token)
    app.router.add_post("/__seed", seed)
    app.router.add_get("/__state", state)
    app.router.add_post("/__expire_access", expire_access)
    app.router.add_post("/__scenario", scenario)
    app.router.add_route("*", "/__config", config_endpoint)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help="comma-separated dotted model ids")
    parser.add_argument("--expires-in", type=int, default=EXPIRES_IN,
                        help="access token lifetime, seconds")
    parser.add_argument("--duplicate", choices=DUPLICATE_CHOICES, default="tool",
                        help="which fragment event to send twice")
    parser.add_argument("--slow-delay", type=float, default=SLOW_DELAY,
                        help="seconds before each frame in the slow scenario")
    parser.add_argument("--no-tool-calls", action="store_true",
                        help="answer with an echo even when tools are defined")
    args = parser.parse_args(argv)
    config = Config(models=[m.strip() for m in args.models.split(",") if m.strip()],
                    expires_in=args.expires_in, duplicate=args.duplicate,
                    tool_calls=not args.no_tool_calls, slow_delay=args.slow_delay)
    try:
        config.check()
    except ValueError as error:
        parser.error(str(error))
    asyncio.run(serving.serve(make_app(config), args.host, args.port))


if __name__ == "__main__":
    main()
