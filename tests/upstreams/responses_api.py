"""Strict local double of the OpenAI Responses API, as Codex CLI uses it (aiohttp.web).

As a process (from the repository root)::

    python -m tests.upstreams.responses_api --host 127.0.0.1 --port 0 \\
        [--api-key KEY] [--models gpt-5,gpt-5-mini,gpt-4.1,o4-mini]

prints exactly one line ``READY <port>`` once listening. In-process, serve
``make_app(api_key, models)`` with any aiohttp runner.

Endpoints:
    GET  /v1/models       configured models plus the scenario models
    POST /v1/responses    validated like api.openai.com, OpenAI error JSON
    GET  /__requests      every request received so far (no auth)
    DELETE /__requests    clear that log (no auth)
    anything else         404 "Invalid URL (METHOD /path)"

Auth, JSON parsing, the error shape, the request log and the 404 come from
tests.upstreams.openai_compat. Validation (400 unless noted):
    unknown top-level, reasoning.*, text.* or input item keys -> "Unknown
    parameter: '<path>'." (code unknown_parameter); unknown model -> 404
    model_not_found; wrong types / enum values as in openai_compat;
    max_output_tokens >= 16; temperature / top_p on o* and gpt-5* models ->
    "Unsupported parameter: 'temperature' is not supported with this model.";
    reasoning.effort on other models (except scenario models) likewise;
    input items: message (user/system/developer: input_text, input_image,
    input_file; assistant: output_text, refusal), function_call,
    function_call_output (call_id must belong to an earlier function_call:
    "No tool call found for function call output with call_id <id>."; a call
    without an output is accepted), reasoning (encrypted_content must be one
    this double issued, code invalid_encrypted_content; without it, its id
    must be an item of a stored response); function tools: name pattern,
    strict defaults to true and then needs additionalProperties false and
    every property required (code invalid_function_parameters), the same for
    text.format json_schema with strict true; json_object needs the word
    "json" in the input; previous_response_id must name a response this
    double answered with store true (the default) -> its input and output are
    prepended to this input; otherwise "Previous response with id '<id>' not
    found.". Hosted tools (web_search, file_search, ...) are accepted, echoed
    and never called; background is accepted and ignored (answers are
    synchronous); client_metadata (Codex CLI's installation and turn ids) is accepted, and so
    is a message item's internal_chat_message_metadata_passthrough (Codex CLI 0.171 sends it
    to api.openai.com on every message; assumed accepted there, since Codex works).

Scripted answers: make_app(..., brain=f) asks f("responses", body) first; a plan it returns
(.text, or .calls as [(tool name, arguments)]) is the answer, None falls back to the rules
below. tests/agents/brain.py drives the real coding-agent CLIs this way.

Normal models answer "Echo: <last user text>", or "Tool results: a; b" when
the input ends with function_call_output items, or call every function tool
in parallel (call_id "call_<random>", arguments {"tool": name, "n": i}) when
the last input item is a user message and tool_choice is not "none"
(parallel_tool_calls false: the first only; tool_choice {"type": "function",
"name"}: that one). text.format json_schema -> compact JSON built from the
schema, json_object -> {"echo": text}.
Reasoning models (names starting with "o" or "gpt-5"; effort defaults to
medium, as on the real service) put a reasoning item first: summary
[{"summary_text", "Thinking about: <subject>"}] when reasoning.summary is set,
encrypted_content when include has "reasoning.encrypted_content", and
REASONING_TOKENS[effort] reasoning tokens. Scenario models reason only when
reasoning.effort is given.
Tokens: input = characters // 4 + 1, output = words of the text (5 per call)
+ reasoning tokens. When that exceeds max_output_tokens the text is cut to the
words that fit (calls are dropped whole, never cut), status "incomplete",
incomplete_details {"reason": "max_output_tokens"}. The response ``model`` is
the requested one.

Streams: SSE "event: <type>\\ndata: <json>\\n\\n", sequence_number 0, 1, ...;
response.created, response.in_progress, per output item
response.output_item.added, then (reasoning) reasoning_summary_part.added,
reasoning_summary_text.delta, .done, reasoning_summary_part.done;
(message) content_part.added, output_text.delta (4 characters each),
output_text.done, content_part.done; (function_call)
function_call_arguments.delta (5 characters each), .done; then
response.output_item.done; finally response.completed or
response.incomplete with the whole Response. No [DONE].

Scenario models (always available; auth and validation still apply first):
    fault-429          429 rate_limit_exceeded, Retry-After: 7, "... Please try again in 7s."
    fault-500          500 server_error
    fault-failed       stream: up to two text deltas, then response.failed with
                       error {code server_error, message}; non-stream: HTTP 200
                       with a Response of status "failed" and that error
    fault-cut          stream: up to two text deltas, then TCP abort;
                       non-stream: abort before sending anything
    fault-hang         never sends response headers (gives up after 120 s)
    fault-empty        HTTP 200 with an empty body (stream or not)
    fault-slow-stream  sleeps 0.3 s before each output_text.delta
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import web

from tests.upstreams import serving
from tests.upstreams.openai_compat import (
    MODEL_CREATED,
    SLOW_CHUNK_DELAY,
    STATE,
    ApiError,
    UpstreamState,
    bad_value,
    check_auth,
    check_range,
    check_tool_name,
    compact,
    drop_connection,
    fault_500,
    fault_hang,
    invalid,
    missing,
    open_stream,
    openai_errors,
    optional,
    parse_json_body,
    require,
    send,
    wrong_type,
)

DEFAULT_MODELS = ["gpt-5", "gpt-5-mini", "gpt-4.1", "o4-mini"]
KNOWN_PARAMS = frozenset(
    "model input instructions tools tool_choice parallel_tool_calls"
    " max_output_tokens temperature top_p text reasoning stream store metadata"
    " user truncation include previous_response_id prompt_cache_key"
    " service_tier safety_identifier background client_metadata".split()
)
REASONING_MODEL_PREFIXES = ("o", "gpt-5")
EFFORTS = ("minimal", "low", "medium", "high")
SUMMARIES = ("auto", "concise", "detailed")
REASONING_TOKENS = {"minimal": 2, "low": 4, "medium": 8, "high": 16}
DEFAULT_EFFORT = "medium"
ROLES = ("user", "assistant", "system", "developer")
INPUT_PARTS = ("input_text", "input_image", "input_file")
ASSISTANT_PARTS = ("output_text", "refusal")
IMAGE_DETAILS = ("low", "high", "auto")
ITEM_STATUSES = ("in_progress", "completed", "incomplete")
ITEM_KEYS = {
    "message": {"type", "role", "content", "id", "status", "internal_chat_message_metadata_passthrough"},
    "function_call": {"type", "call_id", "name", "arguments", "id", "status"},
    "function_call_output": {"type", "call_id", "output", "id", "status"},
    "reasoning": {"type", "id", "summary", "encrypted_content", "content", "status"},
}
PART_KEYS = {
    "input_text": {"type", "text"},
    "input_image": {"type", "image_url", "file_id", "detail"},
    "input_file": {"type", "file_id", "file_data", "file_url", "filename"},
    "output_text": {"type", "text", "annotations", "logprobs"},
    "refusal": {"type", "refusal"},
}
HOSTED_TOOLS = {  # type -> (required key, kind); None: nothing required
    "web_search": None,
    "web_search_preview": None,
    "local_shell": None,
    "image_generation": None,
    "custom": ("name", "a string"),
    "namespace": ("name", "a string"),  # function tools grouped under a name (Codex CLI 0.17x)
    "file_search": ("vector_store_ids", "an array"),
    "code_interpreter": ("container", "an object"),
}
TOOL_TYPES = ("function", *HOSTED_TOOLS)
TOOL_CHOICES = ("none", "auto", "required")
FORMAT_TYPES = ("text", "json_object", "json_schema")
VERBOSITIES = ("low", "medium", "high")
INCLUDABLE = (
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
    "message.input_image.image_url",
    "web_search_call.action.sources",
    "file_search_call.results",
    "code_interpreter_call.outputs",
    "computer_call_output.output.image_url",
)
TRUNCATIONS = ("auto", "disabled")
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")
MIN_OUTPUT_TOKENS = 16
METADATA_MAX_KEYS = 16
SCHEMA_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TEXT_PIECE = 4  # characters of text per output_text / summary delta
ARGS_PIECE = 5  # characters of arguments per function_call_arguments delta
CALL_TOKENS = 5  # output tokens per function call
FAULT_DELTAS = 2  # deltas sent before fault-failed / fault-cut strike
ENCRYPTED_PREFIX = "gAAAAAB"  # what OpenAI's (Fernet) blobs start with

SERVER_ERROR = (
    "The server had an error processing your request. Sorry about that! You can"
    " retry your request, or contact us through our help center at"
    " help.openai.com if you keep seeing this error."
)
NOT_PERSISTED = (
    "Item with id '{id}' not found. Items are not persisted when `store` is set"
    " to false. Try again with `store` set to true, or remove this item from"
    " your input."
)


# --------------------------------------------------------------------------
# State and small helpers
# --------------------------------------------------------------------------


@dataclass
class ResponsesState(UpstreamState):
    """openai_compat's state (key, models, request log) plus what a
    Responses server remembers: stored conversations and issued blobs."""

    stored: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # resp id -> items
    stored_items: dict[str, dict[str, Any]] = field(default_factory=dict)  # item id -> item
    issued: dict[str, str] = field(default_factory=dict)  # encrypted_content -> rs id


def state_of(request: web.Request) -> ResponsesState:
    return cast(ResponsesState, request.app[STATE])


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def new_blob() -> str:
    return ENCRYPTED_PREFIX + base64.urlsafe_b64encode(os.urandom(48)).decode()


def unknown_parameter(param: str) -> ApiError:
    return invalid(f"Unknown parameter: '{param}'.", param, "unknown_parameter")


def unsupported_parameter(param: str) -> ApiError:
    return invalid(f"Unsupported parameter: '{param}' is not supported with this model.", param)


def check_keys(obj: dict, allowed: set[str] | frozenset[str], path: str) -> None:
    for key in obj:
        if key not in allowed:
            raise unknown_parameter(f"{path}.{key}" if path else key)


def require_object(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise wrong_type(path, "an object", value)
    return value


def choice(obj: dict, key: str, path: str, allowed: tuple[str, ...]) -> Any:
    """obj.get(key), which must be null or one of `allowed`."""
    value = optional(obj, key, path, "a string")
    if value is not None and value not in allowed:
        raise bad_value(f"{path}.{key}" if path else key, value, allowed)
    return value


def is_reasoning_model(model: str) -> bool:
    return model.startswith(REASONING_MODEL_PREFIXES)


# --------------------------------------------------------------------------
# Request validation
# --------------------------------------------------------------------------


def validate_request(body: dict[str, Any], state: ResponsesState) -> None:
    check_keys(body, KNOWN_PARAMS, "")
    check_model(body, all_models(state))
    check_scalars(body)
    check_sampling(body)
    check_reasoning(body)
    check_text(body)
    check_include(body)
    check_tools(body)
    check_previous_response(body, state)
    check_input(body)
    conversation = conversation_of(body, state)
    check_tool_outputs(conversation)
    check_reasoning_items(body, state)
    check_json_mentioned(body, conversation)


def check_model(body: dict[str, Any], models: list[str]) -> None:
    model = require(body, "model", "", "a string")
    if model not in models:
        raise ApiError(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )


def check_scalars(body: dict[str, Any]) -> None:
    for name in ("instructions", "user", "prompt_cache_key", "safety_identifier"):
        optional(body, name, "", "a string")
    for name in ("stream", "store", "background", "parallel_tool_calls"):
        optional(body, name, "", "a boolean")
    choice(body, "truncation", "", TRUNCATIONS)
    choice(body, "service_tier", "", SERVICE_TIERS)
    check_metadata(optional(body, "metadata", "", "an object") or {})
    limit = optional(body, "max_output_tokens", "", "an integer")
    if limit is not None and limit < MIN_OUTPUT_TOKENS:
        raise invalid(
            "Invalid 'max_output_tokens': integer below minimum value. Expected a value"
            f" >= {MIN_OUTPUT_TOKENS}, but got {limit} instead.",
            "max_output_tokens",
            "integer_below_min_value",
        )


def check_metadata(metadata: dict) -> None:
    if len(metadata) > METADATA_MAX_KEYS:
        raise invalid(
            f"Invalid 'metadata': too many properties. Expected an object with at most"
            f" {METADATA_MAX_KEYS} properties, but got an object with {len(metadata)}"
            " properties instead.",
            "metadata",
            "object_above_max_properties",
        )
    for key in metadata:
        optional(metadata, key, "metadata", "a string")


def check_sampling(body: dict[str, Any]) -> None:
    for name, high in (("temperature", 2), ("top_p", 1)):
        value = optional(body, name, "", "a number")
        if value is None:
            continue
        if is_reasoning_model(body["model"]):
            raise unsupported_parameter(name)
        check_range(name, value, 0, high)


def check_reasoning(body: dict[str, Any]) -> None:
    reasoning = optional(body, "reasoning", "", "an object")
    if reasoning is None:
        return
    check_keys(reasoning, {"effort", "summary"}, "reasoning")
    effort = choice(reasoning, "effort", "reasoning", EFFORTS)
    choice(reasoning, "summary", "reasoning", SUMMARIES)
    model = body["model"]
    if effort is not None and not (is_reasoning_model(model) or model in SCENARIOS):
        raise unsupported_parameter("reasoning.effort")


def check_text(body: dict[str, Any]) -> None:
    text = optional(body, "text", "", "an object")
    if text is None:
        return
    check_keys(text, {"format", "verbosity"}, "text")
    verbosity = choice(text, "verbosity", "text", VERBOSITIES)
    model = body["model"]
    if verbosity not in (None, "medium") and not is_reasoning_model(model) and model not in SCENARIOS:
        raise invalid(
            f"Unsupported value: '{verbosity}' is not supported with the '{model}' model."
            " Supported values are: 'medium'.",
            "text.verbosity",
            "unsupported_value",
        )
    fmt = optional(text, "format", "text", "an object")
    if fmt is not None:
        check_format(fmt)


def check_format(fmt: dict) -> None:
    kind = require(fmt, "type", "text.format", "a string")
    if kind not in FORMAT_TYPES:
        raise bad_value("text.format.type", kind, FORMAT_TYPES)
    if kind != "json_schema":
        check_keys(fmt, {"type"}, "text.format")
        return
    check_keys(fmt, {"type", "name", "schema", "strict", "description"}, "text.format")
    name = require(fmt, "name", "text.format", "a string")
    if not SCHEMA_NAME.match(name):
        raise invalid(
            "Invalid 'text.format.name': string does not match pattern. Expected a"
            f" string that matches the pattern '{SCHEMA_NAME.pattern}'.",
            "text.format.name",
            "invalid_value",
        )
    schema = require(fmt, "schema", "text.format", "an object")
    optional(fmt, "description", "text.format", "a string")
    if optional(fmt, "strict", "text.format", "a boolean"):
        problem = strict_schema_problem(schema)
        if problem:
            raise invalid(
                f"Invalid schema for response_format '{name}': {problem}",
                "text.format.schema",
                "invalid_json_schema",
            )


def check_include(body: dict[str, Any]) -> None:
    include = optional(body, "include", "", "an array") or []
    for i, entry in enumerate(include):
        if not isinstance(entry, str):
            raise wrong_type(f"include[{i}]", "a string", entry)
        if entry not in INCLUDABLE:
            raise bad_value(f"include[{i}]", entry, INCLUDABLE)


def check_tools(body: dict[str, Any]) -> None:
    tools = optional(body, "tools", "", "an array") or []
    for i, tool in enumerate(tools):
        check_tool(f"tools[{i}]", tool)
    check_tool_choice(body.get("tool_choice"), function_names(body))


def check_tool(path: str, tool: Any) -> None:
    require_object(tool, path)
    kind = require(tool, "type", path, "a string")
    if kind not in TOOL_TYPES:
        raise bad_value(f"{path}.type", kind, TOOL_TYPES)
    if kind != "function":
        needed = HOSTED_TOOLS[kind]
        if needed:
            require(tool, needed[0], path, needed[1])
        return
    name = require(tool, "name", path, "a string")
    check_tool_name(f"{path}.name", name)
    optional(tool, "description", path, "a string")
    parameters = optional(tool, "parameters", path, "an object")
    strict = optional(tool, "strict", path, "a boolean")
    if strict is not False and parameters is not None:  # strict defaults to true
        problem = strict_schema_problem(parameters)
        if problem:
            raise invalid(
                f"Invalid schema for function '{name}': {problem}",
                f"{path}.parameters",
                "invalid_function_parameters",
            )


def strict_schema_problem(schema: Any, context: tuple[str, ...] = ()) -> str | None:
    """What structured outputs (strict mode) refuses in `schema`, in OpenAI's words."""
    if not isinstance(schema, dict):
        return None
    types = schema.get("type")
    types = types if isinstance(types, list) else [types]
    if "object" in types or "properties" in schema:
        problem = strict_object_problem(schema, context)
        if problem:
            return problem
    children: list[tuple[tuple[str, ...], Any]] = []
    children += [(("properties", k), v) for k, v in (schema.get("properties") or {}).items()]
    if "items" in schema:
        children.append((("items",), schema["items"]))
    for key in ("anyOf", "$defs", "definitions"):
        group = schema.get(key) or []
        pairs = enumerate(group) if isinstance(group, list) else group.items()
        children += [((key, str(k)), v) for k, v in pairs]
    for suffix, child in children:
        problem = strict_schema_problem(child, context + suffix)
        if problem:
            return problem
    return None


def strict_object_problem(schema: dict, context: tuple[str, ...]) -> str | None:
    if schema.get("additionalProperties") is not False:
        return (
            f"In context={context!r}, 'additionalProperties' is required to be"
            " supplied and to be false."
        )
    required = schema.get("required")
    required = required if isinstance(required, list) else []
    for key in schema.get("properties") or {}:
        if key not in required:
            return (
                f"In context={context!r}, 'required' is required to be supplied and"
                f" to be an array including every key in properties. Missing '{key}'."
            )
    return None


def function_names(body: dict[str, Any]) -> list[str]:
    return [t["name"] for t in body.get("tools") or [] if t["type"] == "function"]


def check_tool_choice(tool_choice: Any, names: list[str]) -> None:
    if tool_choice is None:
        return
    if isinstance(tool_choice, str):
        if tool_choice not in TOOL_CHOICES:
            raise bad_value("tool_choice", tool_choice, TOOL_CHOICES)
        return
    if not isinstance(tool_choice, dict):
        raise wrong_type("tool_choice", "one of a string or object", tool_choice)
    kind = require(tool_choice, "type", "tool_choice", "a string")
    if kind not in TOOL_TYPES:
        raise bad_value("tool_choice.type", kind, TOOL_TYPES)
    if kind == "function":
        name = require(tool_choice, "name", "tool_choice", "a string")
        if name not in names:
            raise invalid(f"Tool choice '{name}' not found in 'tools' parameter.", "tool_choice")


def check_previous_response(body: dict[str, Any], state: ResponsesState) -> None:
    previous = optional(body, "previous_response_id", "", "a string")
    if previous is not None and previous not in state.stored:
        raise invalid(
            f"Previous response with id '{previous}' not found.",
            "previous_response_id",
            "previous_response_not_found",
        )


def check_input(body: dict[str, Any]) -> None:
    if "input" not in body:
        raise missing("input")
    value = body["input"]
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise wrong_type("input", "one of a string or array of objects", value)
    for i, item in enumerate(value):
        check_item(f"input[{i}]", item)


def check_item(path: str, item: Any) -> None:
    require_object(item, path)
    if "type" not in item and "role" not in item:
        raise missing(f"{path}.type")
    kind = require(item, "type", path, "a string") if "type" in item else "message"
    if kind not in ITEM_CHECKS:
        raise bad_value(f"{path}.type", kind, tuple(ITEM_CHECKS))
    check_keys(item, ITEM_KEYS[kind], path)
    optional(item, "id", path, "a string")
    choice(item, "status", path, ITEM_STATUSES)
    ITEM_CHECKS[kind](path, item)


def check_message_item(path: str, item: dict) -> None:
    role = require(item, "role", path, "a string")
    if role not in ROLES:
        raise bad_value(f"{path}.role", role, ROLES)
    content = item.get("content")
    if "content" not in item:
        raise missing(f"{path}.content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise wrong_type(f"{path}.content", "one of a string or array of objects", content)
    allowed = ASSISTANT_PARTS if role == "assistant" else INPUT_PARTS
    for j, part in enumerate(content):
        check_part(f"{path}.content[{j}]", part, allowed)


def check_part(path: str, part: Any, allowed: tuple[str, ...]) -> None:
    require_object(part, path)
    kind = require(part, "type", path, "a string")
    if kind not in allowed:
        raise bad_value(f"{path}.type", kind, allowed)
    check_keys(part, PART_KEYS[kind], path)
    if kind in ("input_text", "output_text"):
        require(part, "text", path, "a string")
        optional(part, "annotations", path, "an array")
    elif kind == "refusal":
        require(part, "refusal", path, "a string")
    elif kind == "input_image":
        check_image_part(path, part)
    else:
        for key in ("file_id", "file_data", "file_url", "filename"):
            optional(part, key, path, "a string")


def check_image_part(path: str, part: dict) -> None:
    url = optional(part, "image_url", path, "a string")
    file_id = optional(part, "file_id", path, "a string")
    if url is None and file_id is None:
        raise missing(f"{path}.image_url")
    choice(part, "detail", path, IMAGE_DETAILS)


def check_call_item(path: str, item: dict) -> None:
    for key in ("call_id", "name", "arguments"):
        require(item, key, path, "a string")


def check_output_item(path: str, item: dict) -> None:
    require(item, "call_id", path, "a string")
    if "output" not in item:
        raise missing(f"{path}.output")
    output = item["output"]
    if isinstance(output, str):
        return
    if not isinstance(output, list):
        raise wrong_type(f"{path}.output", "one of a string or array of objects", output)
    for j, part in enumerate(output):
        check_part(f"{path}.output[{j}]", part, INPUT_PARTS)


def check_reasoning_item(path: str, item: dict) -> None:
    summary = require(item, "summary", path, "an array")
    for j, part in enumerate(summary):
        require_object(part, f"{path}.summary[{j}]")
        kind = require(part, "type", f"{path}.summary[{j}]", "a string")
        if kind != "summary_text":
            raise bad_value(f"{path}.summary[{j}].type", kind, ("summary_text",))
        require(part, "text", f"{path}.summary[{j}]", "a string")
    optional(item, "encrypted_content", path, "a string")
    optional(item, "content", path, "an array")
    if item.get("encrypted_content") is None:
        require(item, "id", path, "a string")


ITEM_CHECKS: dict[str, Callable[[str, dict], None]] = {
    "message": check_message_item,
    "function_call": check_call_item,
    "function_call_output": check_output_item,
    "reasoning": check_reasoning_item,
}


def check_tool_outputs(conversation: list[dict[str, Any]]) -> None:
    """Each function_call_output answers a function_call earlier in the conversation."""
    calls: set[str] = set()
    for item in conversation:
        if item["type"] == "function_call":
            calls.add(item["call_id"])
        elif item["type"] == "function_call_output" and item["call_id"] not in calls:
            raise invalid(
                "No tool call found for function call output with call_id"
                f" {item['call_id']}.",
                "input",
            )


def check_reasoning_items(body: dict[str, Any], state: ResponsesState) -> None:
    for item in input_items(body):
        if item["type"] != "reasoning":
            continue
        blob = item.get("encrypted_content")
        if blob is None:
            if item["id"] not in state.stored_items:
                raise invalid(NOT_PERSISTED.format(id=item["id"]), "input")
        elif blob not in state.issued:
            raise unverifiable(item, blob)


def unverifiable(item: dict, blob: str) -> ApiError:
    what = f"for item {item['id']}" if item.get("id") else f"{blob[:4]}...{blob[-4:]}"
    return invalid(
        f"The encrypted content {what} could not be verified.",
        code="invalid_encrypted_content",
    )


def check_json_mentioned(body: dict[str, Any], conversation: list[dict[str, Any]]) -> None:
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") != "json_object":
        return
    texts = [body.get("instructions") or ""] + [
        message_text(item) for item in conversation if item["type"] == "message"
    ]
    if not any("json" in t.lower() for t in texts):
        raise invalid(
            "Response input messages must contain the word 'json' in some form to use"
            " 'text.format' of type 'json_object'.",
            "input",
        )


# --------------------------------------------------------------------------
# Conversation
# --------------------------------------------------------------------------


def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """`input` as a list of typed items (a string is one user message)."""
    value = body["input"]
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return [{"type": "message", **item} if "type" not in item else item for item in value]


def conversation_of(body: dict[str, Any], state: ResponsesState) -> list[dict[str, Any]]:
    previous = body.get("previous_response_id")
    history = state.stored[previous] if previous else []
    return [*history, *input_items(body)]


def parts_text(parts: Any) -> str:
    if isinstance(parts, str):
        return parts
    return "".join(p.get("text", "") for p in parts if p.get("type") in ("input_text", "output_text"))


def message_text(item: dict[str, Any]) -> str:
    return parts_text(item.get("content") or "")


def item_text(item: dict[str, Any]) -> str:
    kind = item["type"]
    if kind == "message":
        return message_text(item)
    if kind == "function_call":
        return item["name"] + item["arguments"]
    if kind == "function_call_output":
        return parts_text(item["output"])
    if kind == "reasoning":
        return "".join(part.get("text", "") for part in item.get("summary") or [])
    return ""


def is_user_message(item: dict[str, Any]) -> bool:
    return item["type"] == "message" and item["role"] == "user"


def last_user_text(conversation: list[dict[str, Any]]) -> str:
    users = [item for item in conversation if is_user_message(item)]
    return message_text(users[-1]) if users else ""


def trailing_outputs(conversation: list[dict[str, Any]]) -> list[str]:
    texts: list[str] = []
    for item in reversed(conversation):
        if item["type"] != "function_call_output":
            break
        texts.insert(0, parts_text(item["output"]))
    return texts


# --------------------------------------------------------------------------
# Answer generation
# --------------------------------------------------------------------------


@dataclass
class Reply:
    """Everything a (streamed or not) response needs."""

    id: str
    created_at: int
    body: dict[str, Any]
    conversation: list[dict[str, Any]]
    output: list[dict[str, Any]]
    status: str  # completed | incomplete
    usage: dict[str, Any]


def effort_of(body: dict[str, Any]) -> str | None:
    effort = (body.get("reasoning") or {}).get("effort")
    if effort is None and is_reasoning_model(body["model"]):
        return DEFAULT_EFFORT
    return effort


def subject_of(conversation: list[dict[str, Any]]) -> str:
    outputs = trailing_outputs(conversation)
    return "Tool results: " + "; ".join(outputs) if outputs else last_user_text(conversation)


def answer_text(body: dict[str, Any], conversation: list[dict[str, Any]]) -> str:
    outputs = trailing_outputs(conversation)
    text = "Tool results: " + "; ".join(outputs) if outputs else "Echo: " + last_user_text(conversation)
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        return compact(sample_json(fmt["schema"], fmt["schema"], text))
    if fmt.get("type") == "json_object":
        return compact({"echo": text})
    return text


def sample_json(schema: Any, root: dict, text: str) -> Any:
    """A value matching `schema` (the subset structured outputs allows)."""
    if not isinstance(schema, dict):
        return text
    if "$ref" in schema:
        target: Any = root
        for key in schema["$ref"].removeprefix("#/").split("/"):
            target = target.get(key, {}) if key else target
        return sample_json(target, root, text)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if schema.get("anyOf"):
        return sample_json(schema["anyOf"][0], root, text)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        return {k: sample_json(v, root, text) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [sample_json(schema.get("items", {}), root, text)]
    return {"integer": 1, "number": 1.5, "boolean": True, "null": None}.get(kind, text)


def planned_calls(body: dict[str, Any], conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = function_names(body)
    tool_choice = body.get("tool_choice")
    if not names or tool_choice == "none" or not conversation or not is_user_message(conversation[-1]):
        return []
    if isinstance(tool_choice, dict):
        if tool_choice["type"] != "function":
            return []
        names = [tool_choice["name"]]
    if body.get("parallel_tool_calls") is False:
        names = names[:1]
    return [call_item(i, name) for i, name in enumerate(names)]


def call_item(index: int, name: str) -> dict[str, Any]:
    return {
        "id": new_id("fc"),
        "type": "function_call",
        "status": "completed",
        "arguments": compact({"tool": name, "n": index}),
        "call_id": "call_" + secrets.token_hex(12),
        "name": name,
    }


def message_item(text: str, status: str) -> dict[str, Any]:
    return {
        "id": new_id("msg"),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [output_text(text)],
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_item(state: ResponsesState, body: dict[str, Any], subject: str) -> dict[str, Any]:
    item: dict[str, Any] = {"id": new_id("rs"), "type": "reasoning", "summary": []}
    if (body.get("reasoning") or {}).get("summary"):
        item["summary"] = [{"type": "summary_text", "text": f"Thinking about: {subject}"}]
    if "reasoning.encrypted_content" in (body.get("include") or []):
        item["encrypted_content"] = blob = new_blob()
        state.issued[blob] = item["id"]
    return item


def fit_answer(
    text: str, calls: list[dict[str, Any]], budget: int | None
) -> tuple[list[dict[str, Any]], int, bool]:
    """Output items (message or calls) within `budget` output tokens:
    (items, tokens used, whether anything was cut)."""
    if calls:
        kept = calls if budget is None else calls[: budget // CALL_TOKENS]
        return kept, CALL_TOKENS * len(kept), len(kept) < len(calls)
    words = text.split()
    if budget is None or len(words) <= budget:
        return [message_item(text, "completed")], max(len(words), 1), False
    if budget == 0:
        return [], 0, True
    return [message_item(" ".join(words[:budget]), "incomplete")], budget, True


def make_reply(state: ResponsesState, body: dict[str, Any]) -> Reply:
    conversation = conversation_of(body, state)
    effort = effort_of(body)
    reasoning_tokens = REASONING_TOKENS[effort] if effort else 0
    output = [reasoning_item(state, body, subject_of(conversation))] if effort else []
    limit = body.get("max_output_tokens")
    budget = None if limit is None else max(limit - reasoning_tokens, 0)
    plan = state.brain("responses", body) if state.brain else None
    if plan is not None:
        calls = [dict(call_item(i, name), arguments=compact(args)) for i, (name, args) in enumerate(plan.calls)]
        text = plan.text or ""
    else:
        calls, text = planned_calls(body, conversation), answer_text(body, conversation)
    items, visible, cut = fit_answer(text, calls, budget)
    output += items
    return Reply(
        id=new_id("resp"),
        created_at=int(time.time()),
        body=body,
        conversation=conversation,
        output=output,
        status="incomplete" if cut else "completed",
        usage=usage_for(body, conversation, visible, reasoning_tokens),
    )


def usage_for(
    body: dict[str, Any], conversation: list[dict[str, Any]], visible: int, reasoning: int
) -> dict[str, Any]:
    characters = len(body.get("instructions") or "") + sum(len(item_text(i)) for i in conversation)
    input_tokens = characters // 4 + 1
    output_tokens = visible + reasoning
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }


def remember(state: ResponsesState, reply: Reply) -> None:
    """store (default true): keep the conversation for previous_response_id."""
    if reply.body.get("store") is False:
        return
    state.stored[reply.id] = [*reply.conversation, *reply.output]
    for item in reply.output:
        state.stored_items[item["id"]] = item


# --------------------------------------------------------------------------
# Response bodies
# --------------------------------------------------------------------------


def echoed_tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool["type"] != "function":
        return tool
    return {
        "type": "function",
        "name": tool["name"],
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict") is not False,
    }


def echoed_reasoning(body: dict[str, Any]) -> dict[str, Any]:
    return {"effort": effort_of(body), "summary": (body.get("reasoning") or {}).get("summary")}


def echoed_text(body: dict[str, Any]) -> dict[str, Any]:
    text = body.get("text") or {}
    fmt = dict(text.get("format") or {"type": "text"})
    if fmt["type"] == "json_schema":
        fmt.setdefault("strict", False)
        fmt.setdefault("description", None)
    return {"format": fmt, "verbosity": text.get("verbosity") or "medium"}


def none_to(value: Any, default: Any) -> Any:
    return default if value is None else value


def response_body(
    reply: Reply,
    status: str,
    output: list[dict[str, Any]] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Response object; `output` defaults to the reply's (finished) output.
    Usage is only there once finished (completed / incomplete / failed)."""
    body = reply.body
    finished = status in ("completed", "incomplete", "failed")
    tier = body.get("service_tier")
    return {
        "id": reply.id,
        "object": "response",
        "created_at": reply.created_at,
        "status": status,
        "background": bool(body.get("background")),
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": body["model"],
        "output": reply.output if output is None else output,
        "parallel_tool_calls": none_to(body.get("parallel_tool_calls"), True),
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": echoed_reasoning(body),
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": "default" if tier in (None, "auto") else tier,
        "store": none_to(body.get("store"), True),
        "temperature": none_to(body.get("temperature"), 1.0),
        "text": echoed_text(body),
        "tool_choice": none_to(body.get("tool_choice"), "auto"),
        "tools": [echoed_tool(t) for t in body.get("tools") or []],
        "top_logprobs": 0,
        "top_p": none_to(body.get("top_p"), 1.0),
        "truncation": body.get("truncation") or "disabled",
        "usage": reply.usage if finished else None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def failed_error() -> dict[str, Any]:
    return {"code": "server_error", "message": SERVER_ERROR}


# --------------------------------------------------------------------------
# Stream events (without sequence_number; numbered when sent)
# --------------------------------------------------------------------------


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def lifecycle(kind: str, response: dict[str, Any]) -> dict[str, Any]:
    return {"type": f"response.{kind}", "response": response}


def item_event(kind: str, index: int, item: dict[str, Any]) -> dict[str, Any]:
    return {"type": f"response.output_item.{kind}", "output_index": index, "item": item}


def message_events(index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
    text = item["content"][0]["text"]
    at = {"item_id": item["id"], "output_index": index, "content_index": 0}
    return [
        item_event("added", index, {**item, "status": "in_progress", "content": []}),
        {"type": "response.content_part.added", **at, "part": output_text("")},
        *(
            {"type": "response.output_text.delta", **at, "delta": piece, "logprobs": []}
            for piece in pieces(text, TEXT_PIECE)
        ),
        {"type": "response.output_text.done", **at, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **at, "part": output_text(text)},
        item_event("done", index, item),
    ]


def call_events(index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
    at = {"item_id": item["id"], "output_index": index}
    arguments = item["arguments"]
    return [
        item_event("added", index, {**item, "status": "in_progress", "arguments": ""}),
        *(
            {"type": "response.function_call_arguments.delta", **at, "delta": piece}
            for piece in pieces(arguments, ARGS_PIECE)
        ),
        {"type": "response.function_call_arguments.done", **at, "arguments": arguments},
        item_event("done", index, item),
    ]


def reasoning_events(index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
    events = [item_event("added", index, {"id": item["id"], "type": "reasoning", "summary": []})]
    for j, part in enumerate(item["summary"]):
        at = {"item_id": item["id"], "output_index": index, "summary_index": j}
        text = part["text"]
        events += [
            {"type": "response.reasoning_summary_part.added", **at,
             "part": {"type": "summary_text", "text": ""}},
            *(
                {"type": "response.reasoning_summary_text.delta", **at, "delta": piece}
                for piece in pieces(text, TEXT_PIECE)
            ),
            {"type": "response.reasoning_summary_text.done", **at, "text": text},
            {"type": "response.reasoning_summary_part.done", **at,
             "part": {"type": "summary_text", "text": text}},
        ]
    return [*events, item_event("done", index, item)]


ITEM_EVENTS: dict[str, Callable[[int, dict[str, Any]], list[dict[str, Any]]]] = {
    "message": message_events,
    "function_call": call_events,
    "reasoning": reasoning_events,
}


def opening_events(reply: Reply) -> list[dict[str, Any]]:
    started = response_body(reply, "in_progress", output=[])
    return [lifecycle("created", started), lifecycle("in_progress", started)]


def output_events(reply: Reply) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for index, item in enumerate(reply.output):
        events += ITEM_EVENTS[item["type"]](index, item)
    return events


def closing_event(reply: Reply) -> dict[str, Any]:
    return lifecycle(reply.status, response_body(reply, reply.status))


def full_stream(reply: Reply) -> list[dict[str, Any]]:
    return [*opening_events(reply), *output_events(reply), closing_event(reply)]


def until_deltas(events: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The events up to and including the `count`-th text or arguments delta."""
    taken: list[dict[str, Any]] = []
    for event in events:
        taken.append(event)
        if event["type"].endswith(("output_text.delta", "arguments.delta")):
            count -= 1
            if count == 0:
                break
    return taken


def sse_event(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {compact(event)}\n\n".encode()


def numbered(events: list[dict[str, Any]], start: int = 0) -> list[dict[str, Any]]:
    return [{**event, "sequence_number": start + n} for n, event in enumerate(events)]


async def send_events(
    request: web.Request,
    response: web.StreamResponse,
    events: list[dict[str, Any]],
    delay_deltas: float = 0.0,
) -> None:
    for event in numbered(events):
        if delay_deltas and event["type"] == "response.output_text.delta":
            await asyncio.sleep(delay_deltas)
        await send(request, response, sse_event(event))


# --------------------------------------------------------------------------
# Scenarios: each takes (request, body) and returns the response
# --------------------------------------------------------------------------

Scenario = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


async def stream_reply(
    request: web.Request, events: list[dict[str, Any]], delay_deltas: float = 0.0
) -> web.StreamResponse:
    response = await open_stream(request)
    await send_events(request, response, events, delay_deltas)
    await response.write_eof()
    return response


async def respond_normally(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    state = state_of(request)
    reply = make_reply(state, body)
    remember(state, reply)
    if not body.get("stream"):
        return web.json_response(response_body(reply, reply.status))
    return await stream_reply(request, full_stream(reply))


async def fault_429(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    raise ApiError(
        429,
        f"Rate limit reached for {body['model']} in organization org-test on requests"
        " per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 7s. Visit"
        " https://platform.openai.com/account/rate-limits to learn more.",
        type="requests",
        code="rate_limit_exceeded",
        headers={"Retry-After": "7"},
    )


async def fault_failed(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    reply = make_reply(state_of(request), body)
    failed = response_body(reply, "failed", output=[], error=failed_error())
    if not body.get("stream"):
        return web.json_response(failed)
    events = [*opening_events(reply), *until_deltas(output_events(reply), FAULT_DELTAS)]
    return await stream_reply(request, [*events, lifecycle("failed", failed)])


async def fault_cut(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    if not body.get("stream"):
        return drop_connection(request)
    reply = make_reply(state_of(request), body)
    response = await open_stream(request)
    events = [*opening_events(reply), *until_deltas(output_events(reply), FAULT_DELTAS)]
    await send_events(request, response, events)
    return drop_connection(request, response)


async def fault_empty(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    content_type = "text/event-stream" if body.get("stream") else "application/json"
    return web.Response(status=200, body=b"", content_type=content_type)


async def fault_slow_stream(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    if not body.get("stream"):
        return await respond_normally(request, body)
    reply = make_reply(state_of(request), body)
    return await stream_reply(request, full_stream(reply), delay_deltas=SLOW_CHUNK_DELAY)


SCENARIOS: dict[str, Scenario] = {
    "fault-429": fault_429,
    "fault-500": fault_500,
    "fault-failed": fault_failed,
    "fault-cut": fault_cut,
    "fault-hang": fault_hang,
    "fault-empty": fault_empty,
    "fault-slow-stream": fault_slow_stream,
}
SCENARIO_MODELS = list(SCENARIOS)


# --------------------------------------------------------------------------
# HTTP handlers, app
# --------------------------------------------------------------------------


def all_models(state: UpstreamState) -> list[str]:
    return [*state.models, *(m for m in SCENARIO_MODELS if m not in state.models)]


async def list_models(request: web.Request) -> web.Response:
    state = state_of(request)
    check_auth(request, state.api_key)
    data = [
        {"id": m, "object": "model", "created": MODEL_CREATED, "owned_by": "test-upstream"}
        for m in all_models(state)
    ]
    return web.json_response({"object": "list", "data": data})


async def create_response(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    check_auth(request, state.api_key)
    body = await parse_json_body(request)
    validate_request(body, state)
    scenario = SCENARIOS.get(body["model"], respond_normally)
    try:
        return await scenario(request, body)
    except ConnectionError:  # the client left mid-stream
        return drop_connection(request)


def make_app(api_key: str | None, models: list[str], brain: Callable | None = None) -> web.Application:
    app = serving.application(openai_errors)
    app[STATE] = ResponsesState(api_key=api_key, models=list(models), brain=brain)
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/v1/responses", create_response)
    return app


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    serving.main(make_app, DEFAULT_MODELS, __doc__, argv)


if __name__ == "__main__":
    main()
