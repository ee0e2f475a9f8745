"""Strict local double of CodeGeeX's chat endpoint (unofficial API; aiohttp.web).

As a process (from the repository root)::

    python -m tests.upstreams.codegeex_api --host 127.0.0.1 --port 0 \\
        [--token T [--token T2 ...]] [--models codegeex-4,claude-sonnet-4]

prints exactly one line ``READY <port>`` once listening. In-process, serve
``make_app(tokens, models)`` (tokens: one string, a list, or None) with any aiohttp
runner, e.g. tests.upstreams.serving.ServerThread.

Endpoints (codegeex.cn folded onto one origin):
    POST /prod/code/chatCodeSseV3/chat  code-token checked, body validated (below),
                                        answered with SSE (below)
    GET  /prod/v3/chat/model            code-token checked; the model list:
                                        {"options": [{"id", "name", "description":
                                        {"zh", "en"}, "host"}], "default": <first model>,
                                        "promote": null, "ip": "127.0.0.1"}
    GET  /__requests                    every request received so far (no auth)
    DELETE /__requests                  clear that log (no auth)
    anything else                       404 {"code": 404, "msg": "Not Found: METHOD /path"}

Auth: header ``code-token``. Missing or empty -> 401; with tokens configured, one
that is not among them -> 401; without any configured token every non-empty
token is accepted. Errors are JSON {"code": <status>, "msg": "..."} with that
HTTP status.

Chat body (JSON object; anything else -> 400):
    required  user_role (integer), ide (non-empty string), prompt (string with
              non-whitespace text), history (array), talkId (non-empty string),
              model (string, a known model), machineId (string), locale (string)
    optional  what peers send: ide_version, plugin_version, user_id (strings),
              agent (null or string), candidates (null or an object of the strings
              candidate_msg_id, candidate_type, selected_candidate)
    history items: objects with query and answer (strings) and optionally id
              (string); nothing else
    any other field, at the top or in an item -> 400 "unknown field ..."; a
    model neither configured nor a scenario -> 400 "model ... is not supported".

Answer: 200 text/event-stream, "Echo: <prompt>" in fragments of TEXT_PIECE
characters, each ``event: add\\ndata: {"text": <fragment>}\\n\\n``, then
``event: finish\\ndata: {"text": <full answer>}\\n\\n``; the connection then closes.

Scenario models (always accepted and listed; auth and validation apply first):
    fault-cut        two add events, then the TCP connection is aborted
    fault-error      one add event, then ``event: error\\ndata: {"code": 500,
                     "msg": "..."}`` and a clean end (no finish)
    fault-no-finish  every add event, then a clean end without finish

ASSUMED (from open-source peers or guessed, not from captured traffic): the
model-list path and shape (from a Go peer's /prod/v3/chat/model), the default
model names, the error body {"code", "msg"} and its statuses, the optional
fields, the error event's shape, a 200 whose body is entirely SSE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.upstreams import serving

CHAT_PATH = "/prod/code/chatCodeSseV3/chat"
MODELS_PATH = "/prod/v3/chat/model"
DEFAULT_MODELS = ["codegeex-4", "codegeex-chat-pro", "claude-sonnet-4"]
SCENARIO_MODELS = ["fault-cut", "fault-error", "fault-no-finish"]
TEXT_PIECE = 4
ERROR_EVENT = {"code": 500, "msg": "The model service is busy, please try again later."}

REQUIRED: dict[str, str] = {  # field -> kind
    "user_role": "integer", "ide": "string", "prompt": "string", "history": "array",
    "talkId": "string", "model": "string", "machineId": "string", "locale": "string",
}
OPTIONAL_STRINGS = ("ide_version", "plugin_version", "user_id")
OPTIONAL = frozenset((*OPTIONAL_STRINGS, "agent", "candidates"))
CANDIDATE_FIELDS = ("candidate_msg_id", "candidate_type", "selected_candidate")
HISTORY_FIELDS = frozenset(("query", "answer", "id"))


@dataclass
class CodeGeeXState:
    tokens: list[str]
    models: list[str]


STATE = web.AppKey("codegeex_state", CodeGeeXState)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> web.Response:
        return web.json_response({"code": self.status, "msg": self.message}, status=self.status)


def bad(message: str) -> ApiError:
    return ApiError(400, message)


# --------------------------------------------------------------------------
# Auth and validation
# --------------------------------------------------------------------------


def check_token(request: web.Request) -> None:
    token = request.headers.get("code-token", "").strip()
    if not token:
        raise ApiError(401, "Missing code-token: please log in to CodeGeeX.")
    state = request.app[STATE]
    if state.tokens and token not in state.tokens:
        raise ApiError(401, "Invalid or expired code-token: please log in again.")


def all_models(state: CodeGeeXState) -> list[str]:
    return [*state.models, *(m for m in SCENARIO_MODELS if m not in state.models)]


def is_kind(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    return isinstance(value, list)


def validate(body: Any, models: list[str]) -> None:
    if not isinstance(body, dict):
        raise bad("The request body must be a JSON object.")
    for name in body:
        if name not in REQUIRED and name not in OPTIONAL:
            raise bad(f"unknown field {name!r}")
    for name, kind in REQUIRED.items():
        if name not in body:
            raise bad(f"missing required field {name!r}")
        if not is_kind(body[name], kind):
            raise bad(f"field {name!r} must be {'an' if kind[0] in 'ai' else 'a'} {kind}")
    for name in ("ide", "talkId"):
        if not body[name]:
            raise bad(f"field {name!r} must not be empty")
    if not body["prompt"].strip():
        raise bad("field 'prompt' must not be empty")
    if body["model"] not in models:
        raise bad(f"model {body['model']!r} is not supported")
    for name in OPTIONAL_STRINGS:
        if name in body and not isinstance(body[name], str):
            raise bad(f"field {name!r} must be a string")
    if "agent" in body and body["agent"] is not None and not isinstance(body["agent"], str):
        raise bad("field 'agent' must be null or a string")
    check_candidates(body.get("candidates"))
    for i, item in enumerate(body["history"]):
        check_history_item(item, i)


def check_candidates(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise bad("field 'candidates' must be null or an object")
    for name, v in value.items():
        if name not in CANDIDATE_FIELDS:
            raise bad(f"unknown field 'candidates.{name}'")
        if not isinstance(v, str):
            raise bad(f"field 'candidates.{name}' must be a string")


def check_history_item(item: Any, i: int) -> None:
    where = f"history[{i}]"
    if not isinstance(item, dict):
        raise bad(f"{where} must be an object")
    for name in item:
        if name not in HISTORY_FIELDS:
            raise bad(f"unknown field '{where}.{name}'")
    for name in ("query", "answer"):
        if name not in item:
            raise bad(f"missing required field '{where}.{name}'")
    for name in HISTORY_FIELDS:
        if name in item and not isinstance(item[name], str):
            raise bad(f"field '{where}.{name}' must be a string")


async def parse_body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad("The request body is not valid JSON.") from None


# --------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------


def sse(event: str, payload: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def answer_of(body: dict[str, Any]) -> str:
    return f"Echo: {body['prompt']}"


def add_events(text: str) -> list[bytes]:
    return [sse("add", {"text": text[i:i + TEXT_PIECE]}) for i in range(0, len(text), TEXT_PIECE)]


async def open_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream;charset=UTF-8",
                                           "Cache-Control": "no-cache"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    return response


async def send_all(request: web.Request, response: web.StreamResponse, frames: list[bytes]) -> None:
    for frame in frames:
        await response.write(frame)
        await request.writer.drain()


def drop_connection(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    if request.transport is not None:
        request.transport.abort()
    return response


Scenario = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


async def respond_normally(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    text = answer_of(body)
    response = await open_stream(request)
    await send_all(request, response, [*add_events(text), sse("finish", {"text": text})])
    await response.write_eof()
    return response


async def fault_cut(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    response = await open_stream(request)
    await send_all(request, response, add_events(answer_of(body))[:2])
    return drop_connection(request, response)


async def fault_error(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    response = await open_stream(request)
    await send_all(request, response, [*add_events(answer_of(body))[:1], sse("error", ERROR_EVENT)])
    await response.write_eof()
    return response


async def fault_no_finish(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    response = await open_stream(request)
    await send_all(request, response, add_events(answer_of(body)))
    await response.write_eof()
    return response


SCENARIOS: dict[str, Scenario] = {
    "fault-cut": fault_cut,
    "fault-error": fault_error,
    "fault-no-finish": fault_no_finish,
}


# --------------------------------------------------------------------------
# Handlers and app
# --------------------------------------------------------------------------


async def chat(request: web.Request) -> web.StreamResponse:
    check_token(request)
    body = await parse_body(request)
    validate(body, all_models(request.app[STATE]))
    scenario = SCENARIOS.get(body["model"], respond_normally)
    try:
        return await scenario(request, body)
    except ConnectionError:  # the client left mid-stream
        if request.transport is not None:
            request.transport.abort()
        return web.Response()


async def list_models(request: web.Request) -> web.Response:
    check_token(request)
    models = all_models(request.app[STATE])
    options = [{"id": m, "name": m, "description": {"zh": m, "en": m}, "host": ""} for m in models]
    return web.json_response({"options": options, "default": models[0] if models else "",
                              "promote": None, "ip": "127.0.0.1"})


@web.middleware
async def codegeex_errors(request: web.Request, handler: Callable) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return error.response()
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return ApiError(404, f"Not Found: {request.method} {request.path}").response()


def make_app(tokens: str | list[str] | None, models: list[str] | None = None) -> web.Application:
    app = serving.application(codegeex_errors)
    token_list = [tokens] if isinstance(tokens, str) else list(tokens or [])
    app[STATE] = CodeGeeXState(tokens=token_list,
                               models=list(DEFAULT_MODELS if models is None else models))
    app.router.add_post(CHAT_PATH, chat)
    app.router.add_get(MODELS_PATH, list_models)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", action="append", default=[],
                        help="an accepted code-token (repeatable); omit to accept any non-empty one")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help="comma-separated model ids (scenario models are always added)")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    asyncio.run(serving.serve(make_app(args.token, models), args.host, args.port))


if __name__ == "__main__":
    main()
