"""Strict local double of the OpenAI Chat Completions API (aiohttp.web).

As a process (from the repository root)::

    python -m tests.upstreams.openai_compat --host 127.0.0.1 --port 0 \\
        [--api-key KEY] [--models gpt-4o,gpt-4o-mini]

prints exactly one line ``READY <port>`` once listening. In-process, serve
``make_app(api_key, models)`` with any aiohttp runner.

Endpoints:
    GET  /v1/models            configured models, the scenario models, then the
                               embedding models
    POST /v1/chat/completions  validated like api.openai.com, OpenAI error JSON
    POST /v1/embeddings        validated like api.openai.com (see Embeddings)
    GET  /__requests           every request received so far (no auth)
    DELETE /__requests         clear that log (no auth)
    POST /__fault              arm a fault override (no auth; see Fault override)
    DELETE /__fault            disarm it (no auth)
    anything else              404 "Invalid URL (METHOD /path)"

Normal models answer "Echo: <last user text>", or "Tool results: a; b" after
tool messages, or call every defined tool in parallel when the last message is
from the user. The response ``model`` is the requested one + SNAPSHOT_SUFFIX.

Scenario models (always available; auth and validation still apply first):
    fault-hang         never sends response headers (gives up after 120 s)
    fault-500          500 server_error
    fault-429          429 rate_limit_exceeded with Retry-After: 7
    fault-502-html     502 text/html page, like a broken reverse proxy
    fault-cut          stream: role + two content chunks, then TCP abort;
                       non-stream: abort before sending anything
    fault-no-finish    stream ends cleanly but without finish_reason / [DONE];
                       non-stream: finish_reason is null
    fault-slow-stream  sleeps 0.3 s before each content chunk
    fault-processing-error  stream: OpenRouter's keepalive comments (": OPENROUTER PROCESSING",
                       0.1 s apart), then as the first event a chunk carrying
                       "error": {"code": 502, "message": "Provider returned error"} and
                       finish_reason "error" (OpenRouter's mid-stream error), then the end;
                       non-stream: 502 with that error
    fault-processing-slow  stream: those comments every 0.2 s for 1.5 s, then the normal stream
    sse-torture        valid but hostile SSE: CRLF, comments, id: fields, one
                       event split over two data: lines, one byte per write

Embeddings: EMBEDDING_MODELS are always available (like scenario models); any
configured model whose id contains "embedding" is one too. Chat completions on
one -> 404 "This is not a chat model ..."; embeddings on a chat model -> 403
"You are not allowed to generate embeddings from this model". Rules: known
params only (model input encoding_format dimensions user); input is a
non-empty string, an array of 1..2048 non-empty strings, a token array, or an
array of token arrays; empty strings -> 400 "'$.input' is invalid. ...";
encoding_format float | base64 (little-endian float32, what the openai SDK
decodes; the SDK asks for base64 by default); dimensions >= 1, at most the
model's native size, refused by text-embedding-ada-002. Vectors are
deterministic: unit-length, from SHA-256 of the text (or token ids), float32
precision, 8 values unless `dimensions` asks for more or fewer (a shorter one
is a prefix of a longer one, renormalized). usage.prompt_tokens: per input,
characters // 4 + 1 (token arrays: their length). The model is echoed as sent.
fault-hang, fault-500, fault-429, fault-502-html and fault-cut answer
/v1/embeddings with their (non-stream) fault too.

Scripted answers: make_app(..., brain=f) asks f(wire, body) first ("openai"); a plan it
returns (.text, or .calls as [(tool name, arguments)]) is the answer, None falls back to the
rules above. tests/agents/brain.py drives the real coding-agent CLIs this way.

Fault override (for pools of several doubles serving the same model name, where
one of them must fail, and later recover, without a model name of its own):
POST /__fault {"scenario": <scenario model>, "count": n, "retry_after": s}
makes the next n chat completions, whatever their model, run that scenario
(after auth and validation, which still apply); without "count" every one
does until DELETE /__fault. "retry_after" (whole seconds >= 0) replaces
fault-429's Retry-After: 7. A bad body -> 400 in OpenAI's error shape; the
answer is the armed override as JSON ({"scenario": null, ...} once disarmed).
Both calls are recorded in /__requests like any other request. Embeddings
ignore the override.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import math
import re
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.upstreams import serving

SNAPSHOT_SUFFIX = "-2024-08-06"
MODEL_CREATED = 1700000000
DEFAULT_MODELS = ["gpt-4o", "gpt-4o-mini"]
KNOWN_PARAMS = frozenset(
    "model messages stream stream_options temperature top_p n max_tokens"
    " max_completion_tokens stop presence_penalty frequency_penalty logit_bias"
    " logprobs top_logprobs user tools tool_choice parallel_tool_calls"
    " response_format seed reasoning_effort metadata store modalities prediction"
    " audio service_tier prompt_cache_key safety_identifier verbosity"
    " web_search_options functions function_call".split()
)
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
TOOL_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]+$")
TOOL_NAME_MAX = 64
NUMBER_RANGES = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "presence_penalty": (-2, 2),
    "frequency_penalty": (-2, 2),
}
INTEGER_PARAMS = ("n", "max_tokens", "max_completion_tokens", "seed", "top_logprobs")
TEXT_PIECE = 4  # characters of answer text per stream chunk
ARGS_PIECE = 5  # characters of tool arguments per stream chunk
HANG_SECONDS = 120
SLOW_CHUNK_DELAY = 0.3
PROCESSING = b": OPENROUTER PROCESSING\n\n"
PROCESSING_SECONDS = 1.5
FAULT_429_RETRY_AFTER = 7  # seconds, unless a fault override says otherwise
TORTURE_BYTE_DELAY = 0.0005

TOOL_WITHOUT_CALL = (
    "Invalid parameter: messages with role 'tool' must be a response to a "
    "preceeding message with 'tool_calls'."
)
BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means"
    " you aren't using your HTTP library correctly. The OpenAI API expects a JSON"
    " payload, but what was sent was not valid JSON.)"
)
NO_API_KEY = (
    "You didn't provide an API key. You need to provide your API key in an "
    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
HTML_502 = "<html><body><h1>502 Bad Gateway</h1></body></html>"
NOT_CHAT_MODEL = (
    "This is not a chat model and thus not supported in the v1/chat/completions"
    " endpoint. Did you mean to use v1/completions?"
)
NOT_EMBEDDING_MODEL = "You are not allowed to generate embeddings from this model"
BAD_EMBEDDING_INPUT = (
    "'$.input' is invalid. Please check the API reference:"
    " https://platform.openai.com/docs/api-reference."
)
EMBEDDING_MODELS = {  # id: native vector size
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
FIXED_SIZE_EMBEDDING_MODELS = ("text-embedding-ada-002",)  # no `dimensions`
EMBEDDING_PARAMS = frozenset(("model", "input", "encoding_format", "dimensions", "user"))
EMBEDDING_FORMATS = ("float", "base64")
MAX_EMBEDDING_INPUTS = 2048
EMBEDDING_SIZE = 8  # values per vector unless `dimensions` says otherwise


# --------------------------------------------------------------------------
# State and errors
# --------------------------------------------------------------------------


@dataclass
class UpstreamState:
    api_key: str | None
    models: list[str]
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))
    fault: FaultOverride | None = None
    brain: Callable[[str, dict], Any] | None = None  # scripted answers (see the module doc)


@dataclass
class FaultOverride:
    """POST /__fault: the scenario the next `count` chat completions run (None: all)."""

    scenario: str
    count: int | None = None
    retry_after: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "count": self.count, "retry_after": self.retry_after}


STATE = web.AppKey("openai_compat_state", UpstreamState)


class ApiError(Exception):
    """An error answered in OpenAI's {"error": {...}} shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = {"message": message, "type": type, "param": param, "code": code}
        self.headers = headers or {}

    def response(self) -> web.Response:
        return web.json_response(
            {"error": self.error}, status=self.status, headers=self.headers
        )


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def missing(param: str) -> ApiError:
    return invalid(
        f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
    )


def describe(value: Any) -> str:
    """JSON type of `value`, phrased like OpenAI's validation messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def wrong_type(param: str, expected: str, value: Any) -> ApiError:
    return invalid(
        f"Invalid type for '{param}': expected {expected}, "
        f"but got {describe(value)} instead.",
        param,
        "invalid_type",
    )


def bad_value(param: str, value: Any, allowed: tuple[str, ...]) -> ApiError:
    options = ", ".join(f"'{a}'" for a in allowed)
    return invalid(
        f"Invalid value: '{value}'. Supported values are: {options}.",
        param,
        "invalid_value",
    )


def empty_array(param: str) -> ApiError:
    return invalid(
        f"Invalid '{param}': empty array. Expected an array with minimum length 1,"
        " but got an empty array instead.",
        param,
        "empty_array",
    )


KINDS: dict[str, Callable[[Any], bool]] = {
    "a string": lambda v: isinstance(v, str),
    "a boolean": lambda v: isinstance(v, bool),
    "an object": lambda v: isinstance(v, dict),
    "an array": lambda v: isinstance(v, list),
    "an integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "a number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def require(obj: dict, key: str, path: str, kind: str) -> Any:
    """Return obj[key]; raise OpenAI's error if it is missing or not `kind`."""
    if key not in obj:
        raise missing(f"{path}.{key}" if path else key)
    if obj[key] is None:
        raise wrong_type(f"{path}.{key}" if path else key, kind, None)
    return optional(obj, key, path, kind)


def optional(obj: dict, key: str, path: str, kind: str) -> Any:
    """Return obj.get(key); raise OpenAI's error if present and not `kind`."""
    value = obj.get(key)
    if value is not None and not KINDS[kind](value):
        raise wrong_type(f"{path}.{key}" if path else key, kind, value)
    return value


# --------------------------------------------------------------------------
# Request validation
# --------------------------------------------------------------------------


def check_auth(request: web.Request, api_key: str | None) -> None:
    if api_key is None:
        return
    header = request.headers.get("Authorization")
    if not header:
        raise ApiError(401, NO_API_KEY)
    if header != f"Bearer {api_key}":
        given = header.removeprefix("Bearer ")
        raise ApiError(
            401,
            f"Incorrect API key provided: {mask_key(given)}. You can find your API"
            " key at https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )


def mask_key(key: str) -> str:
    return key if len(key) < 8 else f"{key[:3]}{'*' * 8}{key[-4:]}"


async def parse_json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise invalid(
            f"Unsupported content type: '{request.content_type}'. This API method"
            " only accepts 'application/json' requests."
        )
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise invalid(BAD_JSON) from None
    if not isinstance(body, dict):
        raise invalid(BAD_JSON)
    return body


def validate_chat_request(body: dict[str, Any], models: list[str]) -> None:
    check_known_params(body)
    check_model(body, models)
    check_messages(body)
    check_stream(body)
    check_sampling(body)
    check_tools(body)


def check_known_params(body: dict[str, Any]) -> None:
    for name in body:
        if name not in KNOWN_PARAMS:
            raise invalid(f"Unrecognized request argument supplied: {name}")


def check_model(body: dict[str, Any], models: list[str]) -> None:
    if body.get("model") is None:
        raise invalid("you must provide a model parameter")
    model = require(body, "model", "", "a string")
    if model not in models:
        raise ApiError(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    if is_embedding_model(model):
        raise ApiError(404, NOT_CHAT_MODEL, param="model")


def check_messages(body: dict[str, Any]) -> None:
    messages = require(body, "messages", "", "an array")
    if not messages:
        raise empty_array("messages")
    for i, message in enumerate(messages):
        check_message(f"messages[{i}]", message)
    check_tool_pairing(messages)


def check_message(path: str, message: Any) -> None:
    if not isinstance(message, dict):
        raise wrong_type(path, "an object", message)
    role = require(message, "role", path, "a string")
    if role not in ROLES:
        raise bad_value(f"{path}.role", role, ROLES)
    optional(message, "name", path, "a string")
    ROLE_CHECKS[role](path, message)


def check_plain_message(path: str, message: dict) -> None:
    """system / developer: text only."""
    check_content(f"{path}.content", require_content(message, path), ("text",))


def check_user_message(path: str, message: dict) -> None:
    parts = ("text", "image_url", "input_audio", "file")
    check_content(f"{path}.content", require_content(message, path), parts)


def check_assistant_message(path: str, message: dict) -> None:
    tool_calls = optional(message, "tool_calls", path, "an array")
    if tool_calls is not None:
        if not tool_calls:
            raise empty_array(f"{path}.tool_calls")
        for j, call in enumerate(tool_calls):
            check_tool_call(f"{path}.tool_calls[{j}]", call)
    content = message.get("content")
    if content is None and (tool_calls or message.get("function_call")):
        return
    check_content(f"{path}.content", content, ("text", "refusal"))


def check_tool_message(path: str, message: dict) -> None:
    require(message, "tool_call_id", path, "a string")
    check_content(f"{path}.content", require_content(message, path), ("text",))


def check_function_message(path: str, message: dict) -> None:
    require(message, "name", path, "a string")
    optional(message, "content", path, "a string")


ROLE_CHECKS: dict[str, Callable[[str, dict], None]] = {
    "system": check_plain_message,
    "developer": check_plain_message,
    "user": check_user_message,
    "assistant": check_assistant_message,
    "tool": check_tool_message,
    "function": check_function_message,
}


def require_content(message: dict, path: str) -> Any:
    if "content" not in message:
        raise missing(f"{path}.content")
    return message["content"]


def check_content(path: str, content: Any, part_types: tuple[str, ...]) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise wrong_type(path, "one of a string or array of objects", content)
    if not content:
        raise empty_array(path)
    for j, part in enumerate(content):
        check_content_part(f"{path}[{j}]", part, part_types)


def check_content_part(path: str, part: Any, part_types: tuple[str, ...]) -> None:
    if not isinstance(part, dict):
        raise wrong_type(path, "an object", part)
    part_type = require(part, "type", path, "a string")
    if part_type not in part_types:
        raise bad_value(f"{path}.type", part_type, part_types)
    if part_type in ("text", "refusal"):
        require(part, part_type, path, "a string")
    elif part_type == "image_url":
        image = require(part, "image_url", path, "an object")
        require(image, "url", f"{path}.image_url", "a string")
        detail = optional(image, "detail", f"{path}.image_url", "a string")
        if detail is not None and detail not in ("auto", "low", "high"):
            raise bad_value(f"{path}.image_url.detail", detail, ("auto", "low", "high"))
    elif part_type == "input_audio":
        audio = require(part, "input_audio", path, "an object")
        require(audio, "data", f"{path}.input_audio", "a string")
        require(audio, "format", f"{path}.input_audio", "a string")
    else:
        require(part, "file", path, "an object")


def check_tool_call(path: str, call: Any) -> None:
    if not isinstance(call, dict):
        raise wrong_type(path, "an object", call)
    require(call, "id", path, "a string")
    if require(call, "type", path, "a string") != "function":
        raise bad_value(f"{path}.type", call["type"], ("function",))
    function = require(call, "function", path, "an object")
    require(function, "name", f"{path}.function", "a string")
    require(function, "arguments", f"{path}.function", "a string")


def check_tool_pairing(messages: list[dict]) -> None:
    """Each tool message answers the assistant tool_calls right before it,
    and every such call gets an answer before the conversation moves on."""
    call_ids: set[str] | None = None  # ids the current tool messages may answer
    unanswered: set[str] = set()
    assistant_index = 0
    for i, message in enumerate(messages):
        if message["role"] == "tool":
            if call_ids is None:
                raise invalid(TOOL_WITHOUT_CALL, f"messages.[{i}].role")
            call_id = message["tool_call_id"]
            if call_id not in call_ids:
                raise invalid(
                    f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in"
                    " 'tool_calls' of previous message.",
                    f"messages.[{i}].tool_call_id",
                )
            unanswered.discard(call_id)
            continue
        check_all_answered(unanswered, assistant_index)
        calls = message.get("tool_calls") if message["role"] == "assistant" else None
        call_ids = {c["id"] for c in calls or []} or None
        unanswered = set(call_ids or ())
        assistant_index = i
    check_all_answered(unanswered, assistant_index)


def check_all_answered(unanswered: set[str], assistant_index: int) -> None:
    if unanswered:
        raise invalid(
            "An assistant message with 'tool_calls' must be followed by tool"
            " messages responding to each 'tool_call_id'. The following"
            f" tool_call_ids did not have response messages: {', '.join(sorted(unanswered))}",
            f"messages.[{assistant_index}].role",
        )


def check_stream(body: dict[str, Any]) -> None:
    stream = optional(body, "stream", "", "a boolean")
    options = optional(body, "stream_options", "", "an object")
    if options is None:
        return
    if stream is not True:
        raise invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    optional(options, "include_usage", "stream_options", "a boolean")


def check_sampling(body: dict[str, Any]) -> None:
    for name, (low, high) in NUMBER_RANGES.items():
        value = optional(body, name, "", "a number")
        if value is not None:
            check_range(name, value, low, high)
    for name in INTEGER_PARAMS:
        optional(body, name, "", "an integer")
    if body.get("n", 1) not in (None, 1):
        raise invalid(
            f"Invalid 'n': this test upstream only supports n=1, got {body['n']}.",
            "n",
            "invalid_value",
        )


def check_range(name: str, value: float, low: float, high: float) -> None:
    if value > high:
        raise invalid(
            f"Invalid '{name}': decimal above maximum value. Expected a value <="
            f" {high}, but got {value} instead.",
            name,
            "decimal_above_max_value",
        )
    if value < low:
        raise invalid(
            f"Invalid '{name}': decimal below minimum value. Expected a value >="
            f" {low}, but got {value} instead.",
            name,
            "decimal_below_min_value",
        )


def check_tools(body: dict[str, Any]) -> None:
    tools = optional(body, "tools", "", "an array")
    if tools is None:
        for name in ("tool_choice", "parallel_tool_calls"):
            if body.get(name) is not None:
                raise invalid(
                    f"Invalid value for '{name}': '{name}' is only allowed when"
                    " 'tools' are specified.",
                    name,
                )
        return
    if not tools:
        raise empty_array("tools")
    for i, tool in enumerate(tools):
        check_tool(f"tools[{i}]", tool)
    optional(body, "parallel_tool_calls", "", "a boolean")
    check_tool_choice(body.get("tool_choice"), [t["function"]["name"] for t in tools])


def check_tool(path: str, tool: Any) -> None:
    if not isinstance(tool, dict):
        raise wrong_type(path, "an object", tool)
    if require(tool, "type", path, "a string") != "function":
        raise bad_value(f"{path}.type", tool["type"], ("function",))
    function = require(tool, "function", path, "an object")
    name = require(function, "name", f"{path}.function", "a string")
    check_tool_name(f"{path}.function.name", name)
    optional(function, "description", f"{path}.function", "a string")
    optional(function, "parameters", f"{path}.function", "an object")
    optional(function, "strict", f"{path}.function", "a boolean")


def check_tool_name(param: str, name: str) -> None:
    if len(name) > TOOL_NAME_MAX:
        raise invalid(
            f"Invalid '{param}': string too long. Expected a string with maximum"
            f" length {TOOL_NAME_MAX}, but got a string with length {len(name)} instead.",
            param,
            "string_above_max_length",
        )
    if not TOOL_NAME_PATTERN.match(name):
        raise invalid(
            f"Invalid '{param}': string does not match pattern. Expected a string"
            f" that matches the pattern '{TOOL_NAME_PATTERN.pattern}'.",
            param,
            "invalid_value",
        )


def check_tool_choice(choice: Any, tool_names: list[str]) -> None:
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise bad_value("tool_choice", choice, ("none", "auto", "required"))
        return
    if not isinstance(choice, dict):
        raise wrong_type("tool_choice", "one of a string or object", choice)
    if require(choice, "type", "tool_choice", "a string") != "function":
        raise bad_value("tool_choice.type", choice["type"], ("function",))
    function = require(choice, "function", "tool_choice", "an object")
    name = require(function, "name", "tool_choice.function", "a string")
    if name not in tool_names:
        raise invalid(
            f"Invalid value for 'tool_choice': function '{name}' is not in 'tools'.",
            "tool_choice",
        )


# --------------------------------------------------------------------------
# Answer generation
# --------------------------------------------------------------------------


@dataclass
class Answer:
    text: str | None
    tool_calls: list[dict[str, Any]]

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"

    @property
    def completion_tokens(self) -> int:
        if self.tool_calls:
            return 5 * len(self.tool_calls)
        return len((self.text or "").split())


@dataclass
class Reply:
    """Everything a (streamed or not) response needs."""

    id: str
    created: int
    model: str
    answer: Answer
    usage: dict[str, Any]
    include_usage: bool


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if p.get("type") == "text")
    return ""


def build_answer(body: dict[str, Any]) -> Answer:
    messages = body["messages"]
    calls = planned_tool_calls(body)
    if calls:
        return Answer(None, calls)
    if messages[-1]["role"] == "tool":
        return Answer("Tool results: " + "; ".join(trailing_tool_texts(messages)), [])
    users = [m for m in messages if m["role"] == "user"]
    return Answer("Echo: " + (message_text(users[-1]) if users else ""), [])


def trailing_tool_texts(messages: list[dict[str, Any]]) -> list[str]:
    texts: list[str] = []
    for message in reversed(messages):
        if message["role"] != "tool":
            break
        texts.insert(0, message_text(message))
    return texts


def planned_tool_calls(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools or choice == "none" or body["messages"][-1]["role"] != "user":
        return []
    if isinstance(choice, dict):
        tools = [t for t in tools if t["function"]["name"] == choice["function"]["name"]]
    if body.get("parallel_tool_calls") is False:
        tools = tools[:1]
    return [tool_call(i, t["function"]["name"]) for i, t in enumerate(tools)]


def tool_call(index: int, name: str) -> dict[str, Any]:
    return {
        "id": f"call_{index}_{name}",
        "type": "function",
        "function": {"name": name, "arguments": compact({"tool": name, "n": index})},
    }


def usage_for(body: dict[str, Any], answer: Answer) -> dict[str, Any]:
    prompt = sum(len(message_text(m)) for m in body["messages"]) // 4 + 1
    completion = answer.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def scripted_answer(state: UpstreamState, body: dict[str, Any]) -> Answer | None:
    plan = state.brain("openai", body) if state.brain else None
    if plan is None:
        return None
    calls = [{"id": f"call_{i}_{name}", "type": "function",
              "function": {"name": name, "arguments": compact(args)}}
             for i, (name, args) in enumerate(plan.calls)]
    return Answer(None if calls else plan.text, calls)


def make_reply(state: UpstreamState, body: dict[str, Any]) -> Reply:
    answer = scripted_answer(state, body) or build_answer(body)
    return Reply(
        id=f"chatcmpl-test{next(state.counter)}",
        created=int(time.time()),
        model=body["model"] + SNAPSHOT_SUFFIX,
        answer=answer,
        usage=usage_for(body, answer),
        include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
    )


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# --------------------------------------------------------------------------
# Response bodies
# --------------------------------------------------------------------------


def completion_body(reply: Reply, finish_reason: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.answer.text,
        "refusal": None,
        "annotations": [],
    }
    if reply.answer.tool_calls:
        message["tool_calls"] = reply.answer.tool_calls
    return {
        "id": reply.id,
        "object": "chat.completion",
        "created": reply.created,
        "model": reply.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": reply.usage,
        "service_tier": "default",
        "system_fingerprint": "fp_test",
    }


def chunk(reply: Reply, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": reply.id,
        "object": "chat.completion.chunk",
        "created": reply.created,
        "model": reply.model,
        "service_tier": "default",
        "system_fingerprint": "fp_test",
        "choices": [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        ],
    }
    if reply.include_usage:
        payload["usage"] = None
    return payload


def role_chunk(reply: Reply) -> dict[str, Any]:
    return chunk(reply, {"role": "assistant", "content": ""})


def content_chunks(reply: Reply) -> list[dict[str, Any]]:
    """The answer itself: text pieces, or tool call headers + argument pieces."""
    text = reply.answer.text or ""
    chunks = [
        chunk(reply, {"content": text[i : i + TEXT_PIECE]})
        for i in range(0, len(text), TEXT_PIECE)
    ]
    for index, call in enumerate(reply.answer.tool_calls):
        header = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
        chunks.append(chunk(reply, {"tool_calls": [{"index": index, **header}]}))
        arguments = call["function"]["arguments"]
        for i in range(0, len(arguments), ARGS_PIECE):
            fragment = {"index": index, "function": {"arguments": arguments[i : i + ARGS_PIECE]}}
            chunks.append(chunk(reply, {"tool_calls": [fragment]}))
    return chunks


def closing_chunks(reply: Reply) -> list[dict[str, Any]]:
    chunks = [chunk(reply, {}, reply.answer.finish_reason)]
    if reply.include_usage:
        chunks.append({**chunk(reply, {}), "choices": [], "usage": reply.usage})
    return chunks


def full_stream(reply: Reply) -> list[dict[str, Any]]:
    return [role_chunk(reply), *content_chunks(reply), *closing_chunks(reply)]


def sse_event(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else compact(payload)
    return f"data: {data}\n\n".encode()


def torture_encoding(payloads: list[dict[str, Any]]) -> bytes:
    """Valid SSE written the hard way: CRLF endings, `: keep-alive` comments
    (a comment-only block first, then a comment line opening every later
    event), `id:` fields, and event #1 split over two `data:` lines that
    re-join with "\\n" (JSON whitespace), the second without the optional space.

    No comment-only block follows an `id:` field: the openai SDK (3.x) keeps
    the last event id and then dispatches such blocks as empty events."""
    lines = [": keep-alive", ""]
    for n, payload in enumerate(payloads):
        if n:
            lines.append(": keep-alive")
        if n % 2 == 0:
            lines.append(f"id: {n}")
        data = compact(payload)
        if n == 1:
            head, tail = data.split(",", 1)
            lines += [f"data: {head},", f"data:{tail}"]
        else:
            lines.append(f"data: {data}")
        lines.append("")
    lines += [": keep-alive", "data: [DONE]", ""]
    return ("\r\n".join(lines) + "\r\n").encode()


# --------------------------------------------------------------------------
# Writing responses
# --------------------------------------------------------------------------


async def open_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    return response


async def send(request: web.Request, response: web.StreamResponse, data: bytes) -> None:
    await response.write(data)
    await request.writer.drain()


async def send_events(
    request: web.Request, response: web.StreamResponse, payloads: list[dict[str, Any]]
) -> None:
    for payload in payloads:
        await send(request, response, sse_event(payload))


def client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def drop_connection(
    request: web.Request, response: web.StreamResponse | None = None
) -> web.StreamResponse:
    """Abort the TCP connection. aiohttp then fails to write whatever we return
    (no headers, or no terminating chunk) and swallows that ConnectionError."""
    if request.transport is not None:
        request.transport.abort()
    return response or web.Response()


# --------------------------------------------------------------------------
# Scenarios: each takes (request, body) and returns the response
# --------------------------------------------------------------------------

Scenario = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


async def respond_normally(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    return await send_reply(request, body, make_reply(request.app[STATE], body))


async def respond_as_sent(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """respond_normally, but the model is echoed as sent (as Copilot and the Qwen portal do)."""
    reply = make_reply(request.app[STATE], body)
    reply.model = body["model"]
    return await send_reply(request, body, reply)


async def send_reply(request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
    if not body.get("stream"):
        return web.json_response(completion_body(reply, reply.answer.finish_reason))
    response = await open_stream(request)
    await send_events(request, response, full_stream(reply))
    await send(request, response, sse_event("[DONE]"))
    await response.write_eof()
    return response


async def fault_hang(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    deadline = asyncio.get_running_loop().time() + HANG_SECONDS
    while not client_gone(request) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    return drop_connection(request)


async def fault_500(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    raise ApiError(
        500, "The server had an error while processing your request.", type="server_error"
    )


async def fault_429(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    raise ApiError(
        429,
        "Rate limit reached for requests",
        type="requests",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(request.get(RETRY_AFTER, FAULT_429_RETRY_AFTER))},
    )


async def fault_502_html(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    return web.Response(status=502, text=HTML_502, content_type="text/html")


async def fault_cut(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    if not body.get("stream"):
        return drop_connection(request)
    reply = make_reply(request.app[STATE], body)
    response = await open_stream(request)
    await send_events(request, response, [role_chunk(reply), *content_chunks(reply)[:2]])
    return drop_connection(request, response)


async def fault_no_finish(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    reply = make_reply(request.app[STATE], body)
    if not body.get("stream"):
        return web.json_response(completion_body(reply, None))
    response = await open_stream(request)
    await send_events(request, response, [role_chunk(reply), *content_chunks(reply)])
    await response.write_eof()
    return response


async def fault_slow_stream(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    if not body.get("stream"):
        return await respond_normally(request, body)
    reply = make_reply(request.app[STATE], body)
    response = await open_stream(request)
    await send_events(request, response, [role_chunk(reply)])
    for payload in content_chunks(reply):
        await asyncio.sleep(SLOW_CHUNK_DELAY)
        await send_events(request, response, [payload])
    await send_events(request, response, closing_chunks(reply))
    await send(request, response, sse_event("[DONE]"))
    await response.write_eof()
    return response


PROVIDER_ERROR = {"code": 502, "message": "Provider returned error"}


async def fault_processing_error(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    if not body.get("stream"):
        return web.json_response({"error": PROVIDER_ERROR}, status=502)
    reply = make_reply(request.app[STATE], body)
    response = await open_stream(request)
    for _ in range(2):
        await send(request, response, PROCESSING)
        await asyncio.sleep(0.1)
    await send_events(request, response, [{**chunk(reply, {"content": ""}, "error"), "error": PROVIDER_ERROR}])
    await response.write_eof()
    return response


async def fault_processing_slow(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    if not body.get("stream"):
        return await respond_normally(request, body)
    reply = make_reply(request.app[STATE], body)
    response = await open_stream(request)
    deadline = asyncio.get_running_loop().time() + PROCESSING_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        await send(request, response, PROCESSING)
        await asyncio.sleep(0.2)
    await send_events(request, response, full_stream(reply))
    await send(request, response, sse_event("[DONE]"))
    await response.write_eof()
    return response


async def sse_torture(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    if not body.get("stream"):
        return await respond_normally(request, body)
    data = torture_encoding(full_stream(make_reply(request.app[STATE], body)))
    response = await open_stream(request)
    for i in range(len(data)):
        await send(request, response, data[i : i + 1])
        await asyncio.sleep(TORTURE_BYTE_DELAY)
    await response.write_eof()
    return response


SCENARIOS: dict[str, Scenario] = {
    "fault-hang": fault_hang,
    "fault-500": fault_500,
    "fault-429": fault_429,
    "fault-502-html": fault_502_html,
    "fault-cut": fault_cut,
    "fault-no-finish": fault_no_finish,
    "fault-slow-stream": fault_slow_stream,
    "fault-processing-error": fault_processing_error,
    "fault-processing-slow": fault_processing_slow,
    "sse-torture": sse_torture,
}
SCENARIO_MODELS = list(SCENARIOS)
EMBEDDING_SCENARIOS = ("fault-hang", "fault-500", "fault-429", "fault-502-html", "fault-cut")


# --------------------------------------------------------------------------
# Embeddings: validation and vectors
# --------------------------------------------------------------------------


def is_embedding_model(model: str) -> bool:
    return "embedding" in model


def validate_embeddings_request(body: dict[str, Any], models: list[str]) -> None:
    for name in body:
        if name not in EMBEDDING_PARAMS:
            raise invalid(f"Unrecognized request argument supplied: {name}")
    model = check_embedding_model(body, models)
    check_embedding_input(body)
    encoding = optional(body, "encoding_format", "", "a string")
    if encoding is not None and encoding not in EMBEDDING_FORMATS:
        raise bad_value("encoding_format", encoding, EMBEDDING_FORMATS)
    check_dimensions(body, model)
    optional(body, "user", "", "a string")


def check_embedding_model(body: dict[str, Any], models: list[str]) -> str:
    if body.get("model") is None:
        raise invalid("you must provide a model parameter")
    model = require(body, "model", "", "a string")
    if model in EMBEDDING_SCENARIOS:
        return model
    if model not in models:
        raise ApiError(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    if not is_embedding_model(model):
        raise ApiError(403, NOT_EMBEDDING_MODEL)
    return model


def is_token_array(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)
    )


def check_embedding_input(body: dict[str, Any]) -> None:
    if body.get("input") is None:
        raise missing("input")
    value = body["input"]
    if isinstance(value, str):
        if not value:
            raise invalid(BAD_EMBEDDING_INPUT)
        return
    if not isinstance(value, list):
        raise invalid(
            "Invalid type for 'input': expected one of a string, an array of strings, an"
            " array of integers or an array of arrays of integers, but got"
            f" {describe(value)} instead.",
            "input",
            "invalid_type",
        )
    if not value:
        raise empty_array("input")
    if is_token_array(value):
        return
    if len(value) > MAX_EMBEDDING_INPUTS:
        raise invalid(
            "Invalid 'input': array too long. Expected an array with maximum length"
            f" {MAX_EMBEDDING_INPUTS}, but got an array with length {len(value)} instead.",
            "input",
            "array_above_max_length",
        )
    strings = all(isinstance(v, str) and v for v in value)
    if not strings and not all(is_token_array(v) for v in value):
        raise invalid(BAD_EMBEDDING_INPUT)


def check_dimensions(body: dict[str, Any], model: str) -> None:
    dimensions = optional(body, "dimensions", "", "an integer")
    if dimensions is None:
        return
    if model in FIXED_SIZE_EMBEDDING_MODELS:
        raise invalid("This model does not support specifying dimensions.")
    if dimensions < 1:
        raise invalid(
            "Invalid 'dimensions': integer below minimum value. Expected a value >= 1,"
            f" but got {dimensions} instead.",
            "dimensions",
            "integer_below_min_value",
        )
    native = EMBEDDING_MODELS.get(model, EMBEDDING_MODELS["text-embedding-3-large"])
    if dimensions > native:
        raise invalid(
            f"Invalid value for 'dimensions' = {dimensions}. Must be less than or equal"
            f" to {native}.",
            "dimensions",
        )


def embedding_inputs(value: str | list) -> list[str | list[int]]:
    if isinstance(value, str) or is_token_array(value):
        return [value]
    return list(value)


def float32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def embedding_vector(item: str | list[int], size: int = EMBEDDING_SIZE) -> list[float]:
    """Unit length, float32 precision, from SHA-256 of the text (or token ids).

    The raw values for a size are a prefix of those for any larger size."""
    key = item if isinstance(item, str) else "tokens:" + compact(item)
    raw: list[float] = []
    block = 0
    while len(raw) < size:
        digest = hashlib.sha256(f"{block}:{key}".encode()).digest()
        raw += [(byte - 127.5) / 127.5 for byte in digest]
        block += 1
    raw = raw[:size]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [float32(v / norm) for v in raw]


def encode_embedding(values: list[float]) -> str:
    """What the API sends for encoding_format=base64: little-endian float32."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def embedding_tokens(item: str | list[int]) -> int:
    return len(item) // 4 + 1 if isinstance(item, str) else len(item)


def embeddings_body(body: dict[str, Any]) -> dict[str, Any]:
    inputs = embedding_inputs(body["input"])
    size = body.get("dimensions") or EMBEDDING_SIZE
    base64_wanted = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(inputs):
        vector = embedding_vector(item, size)
        embedding: Any = encode_embedding(vector) if base64_wanted else vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(embedding_tokens(item) for item in inputs)
    return {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# --------------------------------------------------------------------------
# HTTP handlers, middlewares, app
# --------------------------------------------------------------------------


def all_models(state: UpstreamState) -> list[str]:
    extra = [*SCENARIO_MODELS, *EMBEDDING_MODELS]
    return [*state.models, *(m for m in extra if m not in state.models)]


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    check_auth(request, state.api_key)
    data = [
        {"id": m, "object": "model", "created": MODEL_CREATED, "owned_by": "test-upstream"}
        for m in all_models(state)
    ]
    return web.json_response({"object": "list", "data": data})


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    check_auth(request, state.api_key)
    body = await parse_json_body(request)
    validate_chat_request(body, all_models(state))
    scenario = SCENARIOS.get(body["model"], respond_normally)
    if (fault := take_fault(state)) is not None:
        scenario = SCENARIOS[fault.scenario]
        if fault.retry_after is not None:
            request[RETRY_AFTER] = fault.retry_after
    try:
        return await scenario(request, body)
    except ConnectionError:  # the client left mid-stream (e.g. the SDK stops at [DONE])
        return drop_connection(request)


async def embeddings(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    check_auth(request, state.api_key)
    body = await parse_json_body(request)
    validate_embeddings_request(body, all_models(state))
    if body["model"] in EMBEDDING_SCENARIOS:
        return await SCENARIOS[body["model"]](request, body)
    return web.json_response(embeddings_body(body))


RETRY_AFTER = web.RequestKey("openai_compat_retry_after", float)  # fault-429's Retry-After from the override


def take_fault(state: UpstreamState) -> FaultOverride | None:
    """The armed override for this request, counting it down (disarmed after the last)."""
    fault = state.fault
    if fault is None:
        return None
    if fault.count is not None:
        fault.count -= 1
        if fault.count <= 0:
            state.fault = None
    return fault


async def arm_fault(request: web.Request) -> web.Response:
    body = await parse_json_body(request)
    unknown = sorted(set(body) - {"scenario", "count", "retry_after"})
    if unknown:
        raise invalid(f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0])
    scenario = body.get("scenario")
    if scenario not in SCENARIOS:
        raise invalid(f"'scenario' must be one of: {', '.join(SCENARIO_MODELS)}", param="scenario")
    for name, low in (("count", 1), ("retry_after", 0)):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise invalid(f"'{name}' must be an integer >= {low}", param=name)
    state = request.app[STATE]
    state.fault = FaultOverride(scenario, body.get("count"), body.get("retry_after"))
    return web.json_response(state.fault.as_json())


async def disarm_fault(request: web.Request) -> web.Response:
    request.app[STATE].fault = None
    return web.json_response({"scenario": None, "count": None, "retry_after": None})


@web.middleware
async def openai_errors(request: web.Request, handler: Callable) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return error.response()
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        message = f"Invalid URL ({request.method} {request.path})"
        return ApiError(404, message).response()


def make_app(api_key: str | None, models: list[str], brain: Callable | None = None) -> web.Application:
    app = serving.application(openai_errors)
    app[STATE] = UpstreamState(api_key=api_key, models=list(models), brain=brain)
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/__fault", arm_fault)
    app.router.add_delete("/__fault", disarm_fault)
    return app


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    serving.main(make_app, DEFAULT_MODELS, __doc__, argv)


if __name__ == "__main__":
    main()
