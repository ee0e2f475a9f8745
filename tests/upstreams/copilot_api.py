"""Strict local double of GitHub Copilot as its editor extensions use it: GitHub's device flow
(github.com/login/device/code, /login/oauth/access_token), the Copilot token trade
(api.github.com/copilot_internal/v2/token) and the Copilot API (api.githubcopilot.com:
/models, /chat/completions, /responses, /v1/messages), in one aiohttp.web app.

    python -m tests.upstreams.copilot_api --port 0 [--models gpt-4.1,...]

prints ``READY <port>``.

Confirmed (GitHub's documentation of the device flow, docs.github.com "Authorizing OAuth
apps"): device code request with client_id and scope; answer device_code, user_code,
verification_uri, expires_in, interval; JSON only when the request says Accept:
application/json (form-encoded otherwise); the poll (client_id, device_code, grant_type
urn:ietf:params:oauth:grant-type:device_code) answers HTTP 200 with error
authorization_pending | slow_down (and a new interval, 5 s more) | expired_token |
access_denied | incorrect_device_code | incorrect_client_credentials |
unsupported_grant_type, or access_token, token_type, scope. GitHub's API answers a bad token
401 {"message": "Bad credentials"}.
From the Copilot clients' public re-implementations (LiteLLM litellm/llms/github_copilot,
Roo-Code packages/types/src/providers/copilot.ts, opencode) rather than official documents,
so ASSUMED: the client id Iv1.b507a08c87ecfe98 and scope read:user; GET
/copilot_internal/v2/token with Authorization "token <GitHub token>" -> {token, expires_at
(epoch s), refresh_in (s), endpoints: {api}}; an account without Copilot -> 404; the Copilot
API wants Authorization: Bearer <Copilot token> and the editor headers (Editor-Version:
"bad request: missing Editor-Version header for IDE auth"; Copilot-Integration-Id), refuses an
expired Copilot token with 401; GET /models -> {data: [{id, capabilities: {type}}]};
rate limits as 429 with Retry-After; a spent premium allowance as 402 quota_exceeded.

Endpoints per model. Confirmed (users' reports of the real service: caozhiyuan/copilot-api
#102 and #113, ericc-ch/copilot-api PR #274, cc-switch #1681, BenedictKing/ccx #273): each
/models entry lists supported_endpoints ("/chat/completions", "/responses", "ws:/responses",
"/v1/messages"); GPT-5.x and codex models may list only /responses, Claude models /v1/messages
and /chat/completions, some models none; a model sent to an endpoint it does not list is
refused with HTTP 400 {"error": {"message": "model \"<id>\" is not accessible via the
<endpoint> endpoint", "code": "unsupported_api_for_model"}} (seen for /chat/completions; ASSUMED
the same for the other two). ASSUMED: /v1/messages speaks Anthropic's Messages API as
api.anthropic.com does (anthropic-version required, Anthropic-shaped validation errors) while
auth and limits stay Copilot's; which model lists which endpoints here (ENDPOINTS; the
messages-only claude-opus-4.5 is a test fixture, real Claude models also list chat).

Answers, validation and scenario models come from the other doubles: chat from
tests.upstreams.openai_compat, /responses from responses_api, /v1/messages from anthropic_api
(the model is echoed as sent).

Control (no auth): GET /__copilot (trades, device_polls, valid Copilot tokens, pending user
codes); POST /__copilot/seed JSON {login?, copilot?: false} -> a credentials file
{"oauth_token"}; POST /__copilot/approve?user_code=&login=, /__copilot/deny?user_code=;
POST /__copilot/limit JSON {login, mode: ok|rate_limited|quota, retry_after?}; POST
/__copilot/config JSON {copilot_ttl, refresh_in, trade_delay, models_delay, poll_interval}; POST
/__copilot/expire (every Copilot token); POST /__copilot/reset.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

from tests.upstreams import anthropic_api as aa
from tests.upstreams import openai_compat as oc
from tests.upstreams import responses_api as ra
from tests.upstreams import serving

CLIENT_ID = "Iv1.b507a08c87ecfe98"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_MODELS = ["gpt-4.1", "gpt-5-mini", "claude-sonnet-4.5", "gpt-5.1-codex", "claude-opus-4.5"]
CHAT, RESPONSES, MESSAGES = "/chat/completions", "/responses", "/v1/messages"
ENDPOINTS = {  # supported_endpoints per model; a model not named here: chat completions only
    "gpt-5-mini": [CHAT, RESPONSES],
    "claude-sonnet-4.5": [CHAT, MESSAGES],
    "gpt-5.1-codex": [RESPONSES, "ws:/responses"],
    "claude-opus-4.5": [MESSAGES],
}
COPILOT = web.AppKey("copilot", object)


@dataclass
class Device:
    device_code: str
    user_code: str
    expires_at: float
    status: str = "pending"  # pending | approved | denied | used
    login: str = ""
    last_poll: float = 0.0


@dataclass
class CopilotState:
    copilot_ttl: float = 1800.0
    refresh_in: float | None = None  # default: ttl - 300 (at least half the ttl)
    trade_delay: float = 0.0
    models_delay: float = 0.0
    poll_interval: float = 5.0
    github: dict[str, tuple[str, bool]] = field(default_factory=dict)  # GitHub token -> (login, has Copilot)
    copilot: dict[str, tuple[str, float]] = field(default_factory=dict)  # Copilot token -> (login, exp)
    devices: dict[str, Device] = field(default_factory=dict)
    limits: dict[str, tuple[str, int]] = field(default_factory=dict)  # login -> (mode, retry_after)
    trades: int = 0
    device_polls: int = 0

    def github_token(self, login: str, copilot: bool = True) -> str:
        tok = "gho_" + secrets.token_hex(18)
        self.github[tok] = (login, copilot)
        return tok


def state(request: web.Request) -> CopilotState:
    return request.app[COPILOT]  # type: ignore[return-value]


async def params(request: web.Request) -> dict[str, str]:
    raw = await request.read()
    if request.content_type == "application/json":
        data = json.loads(raw or b"{}")
        return {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    return dict(parse_qsl(raw.decode()))


def github_answer(request: web.Request, data: dict[str, Any], status: int = 200) -> web.Response:
    """JSON when asked for it, else form-encoded, as GitHub's OAuth endpoints do."""
    if "application/json" in request.headers.get("Accept", ""):
        return web.json_response(data, status=status)
    return web.Response(status=status, text=urlencode(data), content_type="application/x-www-form-urlencoded")


async def device_code(request: web.Request) -> web.Response:
    st, form = state(request), await params(request)
    if form.get("client_id") != CLIENT_ID:
        return github_answer(request, {"error": "Not Found"}, 404)
    dev = Device("dc_" + secrets.token_hex(20), f"{secrets.token_hex(2)}-{secrets.token_hex(2)}".upper(),
                 time.monotonic() + 900)
    st.devices[dev.device_code] = dev
    return github_answer(request, {"device_code": dev.device_code, "user_code": dev.user_code,
                                   "verification_uri": "https://github.com/login/device", "expires_in": 900,
                                   "interval": st.poll_interval})


async def access_token(request: web.Request) -> web.Response:
    st, form = state(request), await params(request)
    st.device_polls += 1

    def error(code: str, **extra: Any) -> web.Response:
        return github_answer(request, {"error": code, "error_description": code.replace("_", " "), **extra})

    if form.get("client_id") != CLIENT_ID:
        return error("incorrect_client_credentials")
    if form.get("grant_type") != DEVICE_GRANT:
        return error("unsupported_grant_type")
    dev = st.devices.get(form.get("device_code", ""))
    if dev is None or dev.status == "used":
        return error("incorrect_device_code")
    now = time.monotonic()
    if now > dev.expires_at:
        return error("expired_token")
    if dev.last_poll and now - dev.last_poll < st.poll_interval * 0.9:
        dev.last_poll = now
        st.poll_interval += 5
        return error("slow_down", interval=st.poll_interval)
    dev.last_poll = now
    if dev.status == "denied":
        return error("access_denied")
    if dev.status == "pending":
        return error("authorization_pending")
    dev.status = "used"
    return github_answer(request, {"access_token": st.github_token(dev.login), "token_type": "bearer",
                                   "scope": "read:user"})


async def copilot_token(request: web.Request) -> web.Response:
    st = state(request)
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    user = st.github.get(value) if scheme.lower() in ("token", "bearer") else None
    if user is None:
        return web.json_response({"message": "Bad credentials",
                                  "documentation_url": "https://docs.github.com/rest"}, status=401)
    if not user[1]:
        return web.json_response({"message": "Not Found"}, status=404)
    if st.trade_delay:
        await asyncio.sleep(st.trade_delay)
    st.trades += 1
    exp = time.time() + st.copilot_ttl
    tok = f"tid={secrets.token_hex(16)};exp={int(exp)};sku=copilot_for_individuals:{secrets.token_hex(16)}"
    st.copilot[tok] = (user[0], exp)
    refresh_in = st.refresh_in if st.refresh_in is not None else max(st.copilot_ttl / 2, st.copilot_ttl - 300)
    base = f"http://{request.host}"
    return web.json_response({"token": tok, "expires_at": int(exp), "refresh_in": int(refresh_in),
                              "endpoints": {"api": base, "proxy": base, "telemetry": base},
                              "sku": "copilot_for_individuals", "chat_enabled": True})


def check_copilot(request: web.Request) -> str:
    st = state(request)
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    known = st.copilot.get(value) if scheme == "Bearer" else None
    if known is None:
        raise oc.ApiError(401, "unauthorized: invalid token", code="unauthorized")
    if known[1] <= time.time():
        raise oc.ApiError(401, "unauthorized: token expired", code="unauthorized")
    if not request.headers.get("Editor-Version"):
        raise oc.ApiError(400, "bad request: missing Editor-Version header for IDE auth")
    if not request.headers.get("Copilot-Integration-Id"):
        raise oc.ApiError(400, "bad request: missing Copilot-Integration-Id header")
    return known[0]


def model_entry(mid: str, kind: str = "chat") -> dict[str, Any]:
    return {"id": mid, "name": mid, "object": "model", "vendor": "double", "version": mid,
            "model_picker_enabled": kind == "chat", "capabilities": {"type": kind, "family": mid,
                                                                     "supports": {"streaming": True,
                                                                                  "tool_calls": True}},
            "supported_endpoints": ENDPOINTS.get(mid, [CHAT]) if kind == "chat" else []}


async def models(request: web.Request) -> web.Response:
    check_copilot(request)
    if delay := state(request).models_delay:
        await asyncio.sleep(delay)
    entries = [model_entry(m) for m in request.app[oc.STATE].models]
    return web.json_response({"object": "list", "data": [*entries, model_entry("text-embedding-3-small",
                                                                                 "embeddings")]})


def check_limit(st: CopilotState, login: str) -> None:
    mode, retry = st.limits.get(login, ("ok", 0))
    if mode == "rate_limited":
        raise oc.ApiError(429, "Sorry, you have been rate-limited. Please wait a moment before trying again.",
                          code="rate_limited", headers={"Retry-After": str(retry)})
    if mode == "quota":
        raise oc.ApiError(402, "You have exceeded your premium request allowance.", code="quota_exceeded",
                          headers={"Retry-After": str(retry)})


def check_endpoint(body: Any, endpoint: str) -> None:
    """A model goes only to the endpoints its /models entry lists (refused as Copilot does)."""
    model = body.get("model") if isinstance(body, dict) else None
    if isinstance(model, str) and endpoint not in ENDPOINTS.get(model, [CHAT]):
        refused = oc.ApiError(400, f'model "{model}" is not accessible via the {endpoint} endpoint',
                              code="unsupported_api_for_model")
        refused.error = {"message": refused.error["message"], "code": refused.error["code"]}  # no type, param
        raise refused


async def chat(request: web.Request) -> web.StreamResponse:
    check_limit(state(request), check_copilot(request))
    body = await oc.parse_json_body(request)
    check_endpoint(body, CHAT)
    compat = request.app[oc.STATE]
    oc.validate_chat_request(body, [*compat.models, *oc.SCENARIO_MODELS])
    scenario = oc.SCENARIOS.get(body["model"], oc.respond_as_sent)
    try:
        return await scenario(request, body)
    except ConnectionError:
        return oc.drop_connection(request)


async def responses(request: web.Request) -> web.StreamResponse:
    check_limit(state(request), check_copilot(request))
    body = await oc.parse_json_body(request)
    check_endpoint(body, RESPONSES)
    ra.validate_request(body, ra.state_of(request))
    try:
        return await ra.respond_normally(request, body)
    except ConnectionError:
        return oc.drop_connection(request)


async def messages(request: web.Request) -> web.StreamResponse:
    check_limit(state(request), check_copilot(request))
    check_endpoint(await oc.parse_json_body(request), MESSAGES)
    try:
        return await aa.create_message(request)  # its checks, answers and scenarios
    except aa.ApiError as e:
        return e.response()


async def inspect(request: web.Request) -> web.Response:
    st = state(request)
    return web.json_response({
        "trades": st.trades, "device_polls": st.device_polls, "poll_interval": st.poll_interval,
        "valid_copilot_tokens": [t for t, (_, exp) in st.copilot.items() if exp > time.time()],
        "pending_user_codes": [d.user_code for d in st.devices.values() if d.status == "pending"]})


async def seed(request: web.Request) -> web.Response:
    st, data = state(request), await serving.control_body(request)
    login = data.get("login") or f"user-{secrets.token_hex(3)}"
    return web.json_response({"oauth_token": st.github_token(login, bool(data.get("copilot", True))),
                              "scope": "read:user"})


def find_device(request: web.Request) -> Device:
    code = request.query.get("user_code")
    for dev in state(request).devices.values():
        if dev.status == "pending" and code in (None, dev.user_code):
            return dev
    raise web.HTTPNotFound(text="no such pending user code")


async def approve(request: web.Request) -> web.Response:
    dev = find_device(request)
    dev.status, dev.login = "approved", request.query.get("login", "octocat")
    return web.json_response({"approved": dev.user_code})


async def deny(request: web.Request) -> web.Response:
    dev = find_device(request)
    dev.status = "denied"
    return web.json_response({"denied": dev.user_code})


async def limit(request: web.Request) -> web.Response:
    st, data = state(request), await serving.control_body(request)
    st.limits[str(data.get("login"))] = (str(data.get("mode", "ok")), int(data.get("retry_after", 60)))
    return web.json_response({"login": data.get("login"), "mode": data.get("mode", "ok")})


async def configure(request: web.Request) -> web.Response:
    st, data = state(request), await serving.control_body(request)
    for name in ("copilot_ttl", "refresh_in", "trade_delay", "models_delay", "poll_interval"):
        if name in data:
            setattr(st, name, None if data[name] is None else float(data[name]))
    return web.json_response({"copilot_ttl": st.copilot_ttl, "refresh_in": st.refresh_in})


async def expire(request: web.Request) -> web.Response:
    return serving.expire_tokens(state(request).copilot)


def reset(app: web.Application) -> None:
    vars(app[COPILOT]).update(vars(CopilotState()))


def make_app(api_key: str | None, models_: list[str], brain: Any = None) -> web.Application:
    """api_key is ignored: auth is the GitHub login. brain: scripted answers (openai_compat)."""
    app = serving.application(oc.openai_errors)
    app[COPILOT] = CopilotState()
    app[oc.STATE] = ra.ResponsesState(api_key=None, models=list(models_), brain=brain)
    app[aa.STATE] = aa.UpstreamState(api_key=None, models=list(models_), brain=brain)
    app.router.add_post("/login/device/code", device_code)
    app.router.add_post("/login/oauth/access_token", access_token)
    app.router.add_get("/copilot_internal/v2/token", copilot_token)
    app.router.add_get("/models", models)
    app.router.add_post("/chat/completions", chat)
    app.router.add_post("/responses", responses)
    app.router.add_post("/v1/messages", messages)
    serving.add_controls(app, "/__copilot", inspect, {"seed": seed, "approve": approve, "deny": deny, "limit": limit,
                                                      "config": configure, "expire": expire}, reset)
    return app


def main(argv: list[str] | None = None) -> None:
    serving.main(make_app, DEFAULT_MODELS, __doc__, argv)


if __name__ == "__main__":
    main()
