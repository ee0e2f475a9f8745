"""Strict local double of the Anthropic Messages API (aiohttp.web).

As a process (from the repository root)::

    python -m tests.upstreams.anthropic_api --host 127.0.0.1 --port 0 \\
        [--api-key KEY] [--models claude-sonnet-4-5,claude-haiku-4-5]

prints exactly one line ``READY <port>`` once listening. In-process, serve
``make_app(api_key, models)`` with any aiohttp runner.

Endpoints (the paths of api.anthropic.com):
    POST /v1/messages               stream or not; SSE "event: <type>\\ndata: <json>\\n\\n"
    POST /v1/messages/count_tokens  -> {"input_tokens": n} (no max_tokens / stream here)
    GET  /v1/models                 configured models plus the scenario models, as
                                    {data: [{type, id, display_name, created_at}],
                                    has_more, first_id, last_id}; ?limit= ?after_id= ?before_id=
    GET  /v1/models/<id>            one of them, or 404 not_found_error "model: <id>"
    GET  /__requests                every request received so far (no auth)
    DELETE /__requests              clear that log (no auth)
    anything else                   404 not_found_error "Not Found"

Errors: {"type": "error", "error": {"type", "message"}}; every response carries
a request-id header. Auth (only when --api-key is given): x-api-key, or
Authorization: Bearer (what the SDK's auth_token sends); missing or wrong ->
401 authentication_error "invalid x-api-key". Then every /v1 call needs the
anthropic-version header (400 otherwise); anthropic-beta is accepted (see the log), and
these betas unlock fields that are otherwise "Extra inputs are not permitted":
    context-management-2025-06-27    top-level context_management
    advanced-tool-use-2025-11-20     tools' defer_loading
    prompt-caching-scope-2026-01-05  cache_control {"type": "ephemeral", "scope": "global"}
    cache-diagnosis-2026-04-07       top-level diagnostics {"previous_message_id": id | null}
Confirmed (Claude Code 2.1.332's bundle sends each field only beside its beta and drops it
when that beta is refused; real 400s quoted in public trackers): "system.1.cache_control.
ephemeral.scope: Extra inputs are not permitted" (an extra key in cache_control is located
under its tag, "ephemeral") and "diagnostics: Extra inputs are not permitted" without the
beta. Assumed: scope is also accepted on message blocks and tools, and a scope other than
"global" is refused as an extra input; the shape of diagnostics is not checked.

Validation, first failure only, in pydantic's words ("<loc>: <problem>"):
 1. structure: required fields ("max_tokens: Field required"), unknown fields
    ("<loc>.<field>: Extra inputs are not permitted", at every level), types,
    literals ("messages.0.role: Input should be 'user' or 'assistant'"), ranges,
    content-block tags; a block's loc names its tag ("messages.1.content.0.tool_use.id").
    Empty text -> "messages: text content blocks must be non-empty"; base64 image
    data must decode and, if its magic bytes are known, match media_type.
 2. unknown model -> 404 not_found_error "model: <id>".
 3. semantics: max_tokens above the model's output limit; first message from the
    user; strict user/assistant alternation; tool_use / tool_result pairing (the
    results must open the next user message); unique tool names; tool_choice needs
    tools (and a known name); temperature and top_p never together (Claude 4.5 and
    Opus 4.1 refuse both); thinking: budget_tokens < max_tokens, temperature 1 only,
    no top_k, top_p >= 0.95, no forced tool_choice, and a last assistant message
    with tool_use must start with thinking / redacted_thinking; at most 4
    cache_control breakpoints.
 4. thinking signatures: every signature this double issues is random base64 tied
    to its thinking text; a thinking block whose signature was never issued, or
    whose text was changed, -> "messages.<i>.content.<j>: Invalid `signature` in
    `thinking` block". redacted_thinking data must likewise be data this double issued.
Messages that are approximations (no capture of the real text to copy): invalid
JSON, bad base64, blocks in the wrong role, the unknown tool_choice name.

Scripted answers: make_app(..., brain=f) asks f("anthropic", body) first; a plan it returns
(.text, or .calls as [(tool name, arguments)]) is the answer, None falls back to the rules
below. tests/agents/brain.py drives the real coding-agent CLIs this way.

Normal models answer "Echo: <text of the last user message>" (+ " [k image(s)]"),
or "Tool results: a; b" when that message holds only tool_result blocks, or, when
custom tools are defined, tool_choice is not none and that message has text, one
tool_use per tool (tool_choice tool: that one; disable_parallel_tool_use: the
first) with id "toolu_" + 24 alphanumerics and input {"tool": name, "n": i}.
Thinking (enabled or adaptive) puts {"thinking": "Thinking about: <text>",
"signature"} first; with Anthropic's documented trigger string
ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_... in the user text it is a
redacted_thinking block instead. A stop sequence in the answer cuts it there
(stop_reason stop_sequence); more words than max_tokens cut it to max_tokens
words (stop_reason max_tokens). The response model is the requested id.

Usage: input tokens are prompt characters / 4 + 1 (tools, system, messages);
output tokens are words (+ 5 per tool_use). cache_control breakpoints create a
cache entry for their prefix (tools, system, messages, in that order; per model;
no minimum length): new -> cache_creation_input_tokens, seen before ->
cache_read_input_tokens, and input_tokens is what is left.

Streams: message_start (empty content, output_tokens 1), ping, then per block
content_block_start / deltas / content_block_stop: text as 4-character
text_delta, thinking as 8-character thinking_delta then one signature_delta,
redacted_thinking whole in its start event, tool_use with input {} then
input_json_delta fragments ("" first, then 5 characters each); message_delta
{stop_reason, stop_sequence} with usage {output_tokens}; message_stop.

Scenario models (always listed; auth and validation still apply first; on
count_tokens they count normally):
    fault-overloaded   529 overloaded_error "Overloaded"
    fault-429          429 rate_limit_error, retry-after: 7, anthropic-ratelimit-* headers
    fault-500          500 api_error
    fault-stream-error stream: message_start, two deltas, then an `error` event
                       (overloaded_error) and a clean end; non-stream: 529
    fault-stream-overloaded  stream: 200, then an `error` event (overloaded_error) as
                       the first event and a clean end; non-stream: 529
    fault-cut          stream: events through the second delta, then TCP abort;
                       non-stream: abort at once
    fault-hang         never sends response headers (gives up after 120 s)
    fault-slow-stream  sleeps 0.3 s before each content_block_delta
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import secrets
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

from aiohttp import web

from tests.upstreams import serving

DEFAULT_MODELS = ["claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"]
MODEL_CREATED_AT = "2025-09-29T00:00:00Z"
OUTPUT_LIMITS = {"claude-opus-4-1": 32000}  # max_tokens ceiling; others DEFAULT_OUTPUT_LIMIT
DEFAULT_OUTPUT_LIMIT = 64000
CREATE_PARAMS = frozenset(
    "model messages max_tokens system metadata stop_sequences stream temperature top_p"
    " top_k tools tool_choice thinking service_tier container mcp_servers output_config".split()
)
COUNT_PARAMS = frozenset(
    "model messages system tools tool_choice thinking mcp_servers output_config".split()
)
ROLES = ("user", "assistant")
MESSAGE_BLOCKS = (
    "text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"
)
RESULT_BLOCKS = ("text", "image", "document")
BLOCK_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # required, optional
    "text": (("text",), ("cache_control", "citations")),
    "image": (("source",), ("cache_control",)),
    "document": (("source",), ("cache_control", "citations", "context", "title")),
    "tool_use": (("id", "name", "input"), ("cache_control",)),
    "tool_result": (("tool_use_id",), ("content", "is_error", "cache_control")),
    "thinking": (("signature", "thinking"), ()),
    "redacted_thinking": (("data",), ()),
}
ASSISTANT_ONLY = ("tool_use", "thinking", "redacted_thinking")
USER_ONLY = ("tool_result", "image", "document")
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
IMAGE_MAGIC = {
    b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"
}
TOOL_FIELDS = (
    "type", "name", "description", "input_schema", "cache_control", "strict", "input_examples"
)
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
SERVER_TOOL_TYPE = re.compile(r"^[a-z_]+_\d{8}$")  # any versioned type is accepted
SERVER_TOOL_EXAMPLES = (  # what an unknown tool type is told to use
    "custom", "bash_20250124", "code_execution_20250825", "memory_20250818",
    "text_editor_20250728", "web_fetch_20250910", "web_search_20250305",
)
TOOL_CHOICES = ("auto", "any", "tool", "none")
THINKING_TYPES = ("enabled", "disabled", "adaptive")
MIN_THINKING_BUDGET = 1024
MAX_BREAKPOINTS = 4
IMAGE_TOKENS = 1600
TOOL_USE_TOKENS = 5
TEXT_PIECE = 4  # characters of answer text per text_delta
THINKING_PIECE = 8  # characters of thinking per thinking_delta
JSON_PIECE = 5  # characters of tool input per input_json_delta
HANG_SECONDS = 120
SLOW_DELTA_DELAY = 0.3
CUT_AFTER_DELTAS = 2
ALPHANUMERIC = string.ascii_letters + string.digits
REDACTED_TRIGGER = (
    "ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_46C9A13E193C177646C7398A98432ECCCE4C1253"
)

EXTRA = "Extra inputs are not permitted"
BAD_JSON = "There was an issue with your request body: it is not valid JSON."
EMPTY_TEXT = "text content blocks must be non-empty"
EMPTY_MESSAGE = (
    "all messages must have non-empty content except for the optional final assistant message"
)
TRAILING_WHITESPACE = "messages: final assistant content cannot end with trailing whitespace"
SYSTEM_ROLE = (
    'Unexpected role "system". The Messages API accepts a top-level `system` parameter,'
    ' not "system" as an input message role.'
)
FIRST_ROLE = 'messages: first message must use the "user" role'
ALTERNATE = (
    'messages: roles must alternate between "user" and "assistant", but found multiple'
    ' "{role}" roles in a row'
)
UNEXPECTED_RESULT = (
    "{loc}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each"
    " `tool_result` block must have a corresponding `tool_use` block in the previous message."
)
MISSING_RESULTS = (
    "{loc}: `tool_use` ids were found without `tool_result` blocks immediately after:"
    " {ids}. Each `tool_use` block must have a corresponding `tool_result` block in the"
    " next message."
)
WRONG_ROLE_BLOCK = "{loc}.type: `{type}` blocks are only allowed in `{role}` messages"
THINKING_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
MISSING_THINKING = (
    "{loc}.type: Expected `thinking` or `redacted_thinking`, but found `{found}`. When"
    " `thinking` is enabled, a final `assistant` message must start with a thinking block"
    " (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend"
    " you include thinking blocks from previous turns. To avoid this requirement, disable"
    f" `thinking`. Please consult our documentation at {THINKING_DOCS}"
)
BUDGET_TOO_BIG = (
    "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our"
    f" documentation at {THINKING_DOCS}#max-tokens-and-context-window-size"
)
THINKING_CONSIDERATIONS = (
    f" Please consult our documentation at {THINKING_DOCS}"
    "#important-considerations-when-using-extended-thinking"
)
THINKING_TEMPERATURE = (
    "`temperature` may only be set to 1 when thinking is enabled." + THINKING_CONSIDERATIONS
)
THINKING_TOP_K = "`top_k` must be unset when thinking is enabled." + THINKING_CONSIDERATIONS
THINKING_TOP_P = (
    "`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled."
    + THINKING_CONSIDERATIONS
)
THINKING_FORCED_TOOL = "Thinking may not be enabled when tool_choice forces tool use."
TEMPERATURE_AND_TOP_P = (
    "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
)
CHOICE_WITHOUT_TOOLS = "tool_choice may only be specified while providing tools."
DUPLICATE_TOOLS = "tools: Tool names must be unique."
TOO_MANY_BREAKPOINTS = "A maximum of {max} blocks with cache_control may be provided. Found {n}."
RATE_LIMITS = {"requests": 50, "tokens": 40000, "input-tokens": 30000, "output-tokens": 8000}
RATE_LIMITED = (
    "This request would exceed the rate limit for your organization of 50 requests per"
    " minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can"
    " see the response headers for current usage. Please reduce the prompt length or the"
    " maximum tokens requested, or try again later. You may also contact sales at"
    " https://www.anthropic.com/contact-sales to discuss your options for a rate limit"
    " increase."
)


# --------------------------------------------------------------------------
# State and errors
# --------------------------------------------------------------------------


@dataclass
class UpstreamState:
    api_key: str | None
    models: list[str]
    thoughts: dict[str, str] = field(default_factory=dict)  # signature -> thinking text
    redactions: set[str] = field(default_factory=set)  # redacted_thinking data issued
    cached_prefixes: set[str] = field(default_factory=set)  # sha256 of model + prefix
    brain: Callable[[str, dict], Any] | None = None  # scripted answers (see the module doc)

    def issue_signature(self, thinking: str) -> str:
        signature = base64.b64encode(secrets.token_bytes(96)).decode()
        self.thoughts[signature] = thinking
        return signature

    def issue_redaction(self) -> str:
        data = base64.b64encode(secrets.token_bytes(120)).decode()
        self.redactions.add(data)
        return data


STATE = web.AppKey("anthropic_api_state", UpstreamState)


class ApiError(Exception):
    """An error answered in Anthropic's {"type": "error", "error": {...}} shape."""

    def __init__(
        self, status: int, type: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = {"type": type, "message": message}
        self.headers = headers or {}

    def response(self) -> web.Response:
        body = {"type": "error", "error": self.error}
        return web.json_response(body, status=self.status, headers=self.headers)


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


def bad(loc: str, problem: str) -> ApiError:
    return invalid(f"{loc}: {problem}" if loc else problem)


def at(loc: str, key: str | int) -> str:
    return f"{loc}.{key}" if loc else str(key)


def model_not_found(model: str) -> ApiError:
    return ApiError(404, "not_found_error", f"model: {model}")


def random_id(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(ALPHANUMERIC) for _ in range(length))


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------
# Auth and headers
# --------------------------------------------------------------------------


def check_headers(request: web.Request, api_key: str | None) -> None:
    if api_key is not None:
        bearer = request.headers.get("Authorization", "")
        given = request.headers.get("x-api-key") or bearer.removeprefix("Bearer ") or None
        if given != api_key:
            raise ApiError(401, "authentication_error", "invalid x-api-key")
    if not request.headers.get("anthropic-version"):
        raise invalid("anthropic-version: header is required")


async def read_json(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise invalid(BAD_JSON) from None


# --------------------------------------------------------------------------
# Structural validation, pydantic style: the first problem, "<loc>: <message>"
# --------------------------------------------------------------------------


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "string": (lambda v: isinstance(v, str), "Input should be a valid string"),
    "integer": (is_int, "Input should be a valid integer"),
    "number": (is_number, "Input should be a valid number"),
    "boolean": (lambda v: isinstance(v, bool), "Input should be a valid boolean"),
    "list": (lambda v: isinstance(v, list), "Input should be a valid list"),
    "dict": (lambda v: isinstance(v, dict), "Input should be a valid dictionary"),
    "object": (
        lambda v: isinstance(v, dict),
        "Input should be a valid dictionary or object to extract fields from",
    ),
}


def expect(value: Any, kind: str, loc: str) -> Any:
    test, problem = KINDS[kind]
    if not test(value):
        raise bad(loc, problem)
    return value


def fields(obj: Any, loc: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    """`obj` is an object with every required key and no key beyond the two lists."""
    expect(obj, "object", loc)
    for key in required:
        if key not in obj:
            raise bad(at(loc, key), "Field required")
    for key in obj:
        if key not in required and key not in optional:
            raise bad(at(loc, key), EXTRA)
    return obj


def one_of(value: Any, options: tuple[str, ...], loc: str) -> str:
    if not isinstance(value, str) or value not in options:
        quoted = [f"'{o}'" for o in options]
        listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
        raise bad(loc, f"Input should be {listed}")
    return value


def tag_of(obj: Any, loc: str, tags: tuple[str, ...]) -> str:
    """The `type` of a member of a tagged union, checked like pydantic does."""
    expect(obj, "object", loc)
    if "type" not in obj:
        raise bad(loc, "Unable to extract tag using discriminator 'type'")
    tag = obj["type"]
    if not isinstance(tag, str) or tag not in tags:
        expected = ", ".join(f"'{t}'" for t in tags)
        raise bad(
            loc,
            f"Input tag '{tag}' found using 'type' does not match any of the expected"
            f" tags: {expected}",
        )
    return tag


def in_range(value: float, loc: str, low: float | None = None, high: float | None = None) -> None:
    if low is not None and value < low:
        raise bad(loc, f"Input should be greater than or equal to {low}")
    if high is not None and value > high:
        raise bad(loc, f"Input should be less than or equal to {high}")


def optional_field(body: dict, key: str, kind: str) -> Any:
    """body[key] if present (and of the right kind), else None."""
    return expect(body[key], kind, key) if key in body else None


def without_beta_fields(body: Any, request: web.Request) -> Any:
    """The body without the fields its anthropic-beta header unlocks (what Claude Code sends:
    context_management, defer_loading, cache_control scope, diagnostics), for the checks that know none of them."""
    betas = {b.strip() for b in request.headers.get("anthropic-beta", "").split(",")}
    if not isinstance(body, dict):
        return body
    body = dict(body)
    if "context-management-2025-06-27" in betas:
        body.pop("context_management", None)
    if "advanced-tool-use-2025-11-20" in betas and isinstance(body.get("tools"), list):
        body["tools"] = [{k: v for k, v in t.items() if k != "defer_loading"} if isinstance(t, dict) else t
                         for t in body["tools"]]
    if "cache-diagnosis-2026-04-07" in betas:
        body.pop("diagnostics", None)
    if "prompt-caching-scope-2026-01-05" in betas:
        body = without_global_scope(body)
    return body


def without_global_scope(body: dict) -> dict:
    """The body with scope "global" taken out of the cache_control of system blocks, message
    blocks (and the blocks inside a tool_result) and tools."""
    out = dict(body)
    for key in ("system", "tools"):
        if isinstance(body.get(key), list):
            out[key] = [unscoped(b) for b in body[key]]
    if isinstance(body.get("messages"), list):
        out["messages"] = [{**m, "content": [unscoped(b) for b in m["content"]]}
                           if isinstance(m, dict) and isinstance(m.get("content"), list) else m
                           for m in body["messages"]]
    return out


def unscoped(block: Any) -> Any:
    if not isinstance(block, dict):
        return block
    out = dict(block)
    if isinstance(block.get("content"), list):  # a tool_result's blocks
        out["content"] = [unscoped(b) for b in block["content"]]
    cc = block.get("cache_control")
    if isinstance(cc, dict) and cc.get("scope") == "global":
        out["cache_control"] = {k: v for k, v in cc.items() if k != "scope"}
    return out


def validate_create(body: Any) -> None:
    check_top_level(body, CREATE_PARAMS, ("model", "messages", "max_tokens"))
    in_range(expect(body["max_tokens"], "integer", "max_tokens"), "max_tokens", low=1)
    check_prompt(body)
    check_metadata(body)
    check_stop_sequences(body)
    optional_field(body, "stream", "boolean")
    check_sampling(body)
    check_extras(body)


def validate_count(body: Any) -> None:
    check_top_level(body, COUNT_PARAMS, ("model", "messages"))
    check_prompt(body)
    check_extras(body)


def check_top_level(body: Any, allowed: frozenset[str], required: tuple[str, ...]) -> None:
    fields(body, "", required, tuple(sorted(allowed)))
    expect(body["model"], "string", "model")


def check_prompt(body: dict) -> None:
    """What create and count_tokens share: messages, system, tools, thinking."""
    check_messages(body["messages"])
    check_system(body)
    check_tools(body)
    check_tool_choice(body)
    check_thinking(body)


def check_messages(messages: Any) -> None:
    expect(messages, "list", "messages")
    for i, message in enumerate(messages):
        check_message(message, f"messages.{i}", final=i == len(messages) - 1)


def check_message(message: Any, loc: str, final: bool) -> None:
    fields(message, loc, ("role", "content"))
    if message["role"] == "system":
        raise invalid(SYSTEM_ROLE)
    role = one_of(message["role"], ROLES, at(loc, "role"))
    content = message["content"]
    may_be_empty = final and role == "assistant"
    if isinstance(content, str):
        if not content and not may_be_empty:
            raise bad(loc, EMPTY_MESSAGE)
        return
    expect(content, "list", at(loc, "content"))
    if not content and not may_be_empty:
        raise bad(loc, EMPTY_MESSAGE)
    for j, block in enumerate(content):
        check_block(block, f"{loc}.content.{j}", MESSAGE_BLOCKS)


def check_block(block: Any, loc: str, tags: tuple[str, ...]) -> str:
    tag = tag_of(block, loc, tags)
    required, optional = BLOCK_FIELDS[tag]
    inner = at(loc, tag)
    fields(block, inner, required, ("type", *optional))
    BLOCK_CHECKS[tag](block, inner)
    if block.get("cache_control") is not None:
        check_cache_control(block["cache_control"], at(inner, "cache_control"))
    return tag


def check_text_block(block: dict, loc: str) -> None:
    if not expect(block["text"], "string", at(loc, "text")):
        raise bad(loc.split(".")[0], EMPTY_TEXT)
    if block.get("citations") is not None:
        expect(block["citations"], "list", at(loc, "citations"))


def check_image_block(block: dict, loc: str) -> None:
    source_loc = at(loc, "source")
    kind = tag_of(block["source"], source_loc, ("base64", "url"))
    source_loc = at(source_loc, kind)
    if kind == "url":
        fields(block["source"], source_loc, ("url",), ("type",))
        expect(block["source"]["url"], "string", at(source_loc, "url"))
        return
    source = fields(block["source"], source_loc, ("media_type", "data"), ("type",))
    media_type = one_of(source["media_type"], IMAGE_TYPES, at(source_loc, "media_type"))
    data = decode_base64(expect(source["data"], "string", at(source_loc, "data")))
    if data is None:
        raise bad(at(source_loc, "data"), "Invalid base64 data")
    actual = sniff_image(data)
    if actual and actual != media_type:
        raise bad(
            source_loc,
            f"The image was specified using the {media_type} media type, but the image"
            f" appears to be a {actual} image",
        )


def decode_base64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def sniff_image(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in IMAGE_MAGIC.items() if data.startswith(magic)), None)


def check_document_block(block: dict, loc: str) -> None:
    source_loc = at(loc, "source")
    kind = tag_of(block["source"], source_loc, ("base64", "text", "url", "content"))
    required = {"base64": ("media_type", "data"), "text": ("media_type", "data")}
    fields(block["source"], at(source_loc, kind), required.get(kind, (kind,)), ("type",))
    for key in ("title", "context"):
        if block.get(key) is not None:
            expect(block[key], "string", at(loc, key))


def check_tool_use_block(block: dict, loc: str) -> None:
    check_tool_id(block["id"], at(loc, "id"))
    expect(block["name"], "string", at(loc, "name"))
    expect(block["input"], "dict", at(loc, "input"))


def check_tool_id(value: Any, loc: str) -> None:
    if not TOOL_ID.match(expect(value, "string", loc)):
        raise bad(loc, f"String should match pattern '{TOOL_ID.pattern}'")


def check_tool_result_block(block: dict, loc: str) -> None:
    check_tool_id(block["tool_use_id"], at(loc, "tool_use_id"))
    if "is_error" in block:
        expect(block["is_error"], "boolean", at(loc, "is_error"))
    content = block.get("content")
    if content is None or isinstance(content, str):
        return
    expect(content, "list", at(loc, "content"))
    for k, part in enumerate(content):
        check_block(part, f"{loc}.content.{k}", RESULT_BLOCKS)


def check_thinking_block(block: dict, loc: str) -> None:
    expect(block["thinking"], "string", at(loc, "thinking"))
    expect(block["signature"], "string", at(loc, "signature"))


def check_redacted_thinking_block(block: dict, loc: str) -> None:
    expect(block["data"], "string", at(loc, "data"))


BLOCK_CHECKS: dict[str, Callable[[dict, str], None]] = {
    "text": check_text_block,
    "image": check_image_block,
    "document": check_document_block,
    "tool_use": check_tool_use_block,
    "tool_result": check_tool_result_block,
    "thinking": check_thinking_block,
    "redacted_thinking": check_redacted_thinking_block,
}


def check_cache_control(value: Any, loc: str) -> None:
    fields(value, loc, ("type",), tuple(value) if isinstance(value, dict) else ())
    one_of(value["type"], ("ephemeral",), at(loc, "type"))
    fields(value, at(loc, "ephemeral"), (), ("type", "ttl"))  # the API names extras under the tag
    if "ttl" in value:
        one_of(value["ttl"], ("5m", "1h"), at(loc, "ttl"))


def check_system(body: dict) -> None:
    system = body.get("system")
    if "system" not in body or isinstance(system, str):
        return
    expect(system, "list", "system")
    for i, block in enumerate(system):
        loc = f"system.{i}"
        fields(block, loc, ("type", "text"), ("cache_control", "citations"))
        one_of(block["type"], ("text",), at(loc, "type"))
        check_text_block(block, loc)
        if block.get("cache_control") is not None:
            check_cache_control(block["cache_control"], at(loc, "cache_control"))


def check_metadata(body: dict) -> None:
    if "metadata" not in body:
        return
    metadata = fields(body["metadata"], "metadata", (), ("user_id",))
    if metadata.get("user_id") is not None:
        expect(metadata["user_id"], "string", "metadata.user_id")


def check_stop_sequences(body: dict) -> None:
    for i, item in enumerate(optional_field(body, "stop_sequences", "list") or []):
        expect(item, "string", f"stop_sequences.{i}")


def check_sampling(body: dict) -> None:
    for name in ("temperature", "top_p"):
        value = optional_field(body, name, "number")
        if value is not None:
            in_range(value, name, 0, 1)
    top_k = optional_field(body, "top_k", "integer")
    if top_k is not None:
        in_range(top_k, "top_k", low=0)


def check_tools(body: dict) -> None:
    for i, tool in enumerate(optional_field(body, "tools", "list") or []):
        check_tool(tool, f"tools.{i}")


def check_tool(tool: Any, loc: str) -> None:
    expect(tool, "object", loc)
    kind = tool.get("type") or "custom"
    if kind != "custom":
        check_server_tool(tool, loc, kind)
        return
    loc = at(loc, "custom")
    fields(tool, loc, ("name", "input_schema"), TOOL_FIELDS)
    name = expect(tool["name"], "string", at(loc, "name"))
    if not TOOL_NAME.match(name):
        raise bad(at(loc, "name"), f"String should match pattern '{TOOL_NAME.pattern}'")
    if "description" in tool:
        expect(tool["description"], "string", at(loc, "description"))
    schema = expect(tool["input_schema"], "object", at(loc, "input_schema"))
    if "type" not in schema:
        raise bad(at(loc, "input_schema.type"), "Field required")
    one_of(schema["type"], ("object",), at(loc, "input_schema.type"))
    if tool.get("cache_control") is not None:
        check_cache_control(tool["cache_control"], at(loc, "cache_control"))


def check_server_tool(tool: dict, loc: str, kind: Any) -> None:
    """Tools Anthropic runs (web search, bash, ...): a versioned type and a name."""
    if not isinstance(kind, str) or not SERVER_TOOL_TYPE.match(kind):
        tag_of(tool, loc, SERVER_TOOL_EXAMPLES)
    fields(tool, at(loc, kind), ("name",), tuple(tool))
    expect(tool["name"], "string", at(loc, f"{kind}.name"))


def check_tool_choice(body: dict) -> None:
    if "tool_choice" not in body:
        return
    choice = body["tool_choice"]
    kind = tag_of(choice, "tool_choice", TOOL_CHOICES)
    loc = at("tool_choice", kind)
    parallel = () if kind == "none" else ("disable_parallel_tool_use",)
    fields(choice, loc, ("name",) if kind == "tool" else (), ("type", *parallel))
    if kind == "tool":
        expect(choice["name"], "string", at(loc, "name"))
    if "disable_parallel_tool_use" in choice:
        flag = "disable_parallel_tool_use"
        expect(choice[flag], "boolean", at(loc, flag))


def check_thinking(body: dict) -> None:
    if "thinking" not in body:
        return
    thinking = body["thinking"]
    kind = tag_of(thinking, "thinking", THINKING_TYPES)
    loc = at("thinking", kind)
    if kind == "disabled":
        fields(thinking, loc, (), ("type",))
        return
    required = ("budget_tokens",) if kind == "enabled" else ()
    fields(thinking, loc, required, ("type", "display"))
    if kind == "enabled":
        budget = expect(thinking["budget_tokens"], "integer", at(loc, "budget_tokens"))
        in_range(budget, at(loc, "budget_tokens"), low=MIN_THINKING_BUDGET)
    if thinking.get("display") is not None:
        one_of(thinking["display"], ("summarized", "omitted"), at(loc, "display"))


def check_extras(body: dict) -> None:
    """The top-level fields this double accepts but does not act on."""
    if "service_tier" in body:
        one_of(body["service_tier"], ("auto", "standard_only"), "service_tier")
    container = body.get("container")
    if container is not None and not isinstance(container, (str, dict)):
        raise bad("container", KINDS["string"][1])
    for i, server in enumerate(optional_field(body, "mcp_servers", "list") or []):
        expect(server, "object", f"mcp_servers.{i}")
    if "output_config" in body:
        fields(body["output_config"], "output_config", (), ("effort", "format"))


# --------------------------------------------------------------------------
# Semantic checks (after the model is known)
# --------------------------------------------------------------------------


def blocks_of(message: dict) -> list[dict]:
    content = message["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def tool_use_ids(message: dict) -> list[str]:
    return [b["id"] for b in blocks_of(message) if b["type"] == "tool_use"]


def leading_result_ids(message: dict) -> list[str]:
    """tool_use_ids of the tool_result blocks that open the message."""
    ids = []
    for block in blocks_of(message):
        if block["type"] != "tool_result":
            break
        ids.append(block["tool_use_id"])
    return ids


def thinking_on(body: dict) -> bool:
    return (body.get("thinking") or {}).get("type") in ("enabled", "adaptive")


def validate_semantics(state: UpstreamState, body: dict, model: str) -> None:
    if "max_tokens" in body:
        check_output_limit(body["max_tokens"], model)
    check_conversation(body["messages"])
    check_tool_definitions(body)
    check_sampling_rules(body)
    check_thinking_rules(body)
    check_breakpoints(body)
    check_signatures(state, body["messages"])


def check_output_limit(max_tokens: int, model: str) -> None:
    limit = OUTPUT_LIMITS.get(model, DEFAULT_OUTPUT_LIMIT)
    if max_tokens > limit:
        raise invalid(
            f"max_tokens: {max_tokens} > {limit}, which is the maximum allowed number of"
            f" output tokens for {model}"
        )


def check_conversation(messages: list[dict]) -> None:
    if messages and messages[0]["role"] != "user":
        raise invalid(FIRST_ROLE)
    for i, message in enumerate(messages):
        if i and message["role"] == messages[i - 1]["role"]:
            raise invalid(ALTERNATE.format(role=message["role"]))
        check_block_roles(message, f"messages.{i}")
        if message["role"] == "assistant":
            check_results_follow(messages, i)
        else:
            check_results_answer(messages, i)
    check_no_trailing_whitespace(messages)


def check_block_roles(message: dict, loc: str) -> None:
    if message["role"] == "assistant":
        wrong, role = USER_ONLY, "user"
    else:
        wrong, role = ASSISTANT_ONLY, "assistant"
    for j, block in enumerate(blocks_of(message)):
        if block["type"] in wrong:
            where = f"{loc}.content.{j}"
            raise invalid(WRONG_ROLE_BLOCK.format(loc=where, type=block["type"], role=role))


def check_results_follow(messages: list[dict], i: int) -> None:
    """Every tool_use of assistant message i is answered at the start of message i + 1."""
    answered = leading_result_ids(messages[i + 1]) if i + 1 < len(messages) else []
    missing = [id for id in tool_use_ids(messages[i]) if id not in answered]
    if missing:
        raise invalid(MISSING_RESULTS.format(loc=f"messages.{i}", ids=", ".join(missing)))


def check_results_answer(messages: list[dict], i: int) -> None:
    """Every tool_result of user message i answers a tool_use of message i - 1."""
    asked = tool_use_ids(messages[i - 1]) if i else []
    for j, block in enumerate(blocks_of(messages[i])):
        if block["type"] == "tool_result" and block["tool_use_id"] not in asked:
            loc = f"messages.{i}.content.{j}"
            raise invalid(UNEXPECTED_RESULT.format(loc=loc, id=block["tool_use_id"]))


def check_no_trailing_whitespace(messages: list[dict]) -> None:
    if not messages or messages[-1]["role"] != "assistant":
        return
    blocks = blocks_of(messages[-1])
    last = blocks[-1] if blocks else {}
    if last.get("type") == "text" and last["text"] != last["text"].rstrip():
        raise invalid(TRAILING_WHITESPACE)


def check_tool_definitions(body: dict) -> None:
    names = [t["name"] for t in body.get("tools") or []]
    if len(names) != len(set(names)):
        raise invalid(DUPLICATE_TOOLS)
    choice = body.get("tool_choice")
    if choice is None:
        return
    if not names:
        raise invalid(CHOICE_WITHOUT_TOOLS)
    if choice["type"] == "tool" and choice["name"] not in names:
        raise invalid(f"tool_choice.tool.name: Tool '{choice['name']}' not found in `tools`")


def check_sampling_rules(body: dict) -> None:
    if "temperature" in body and "top_p" in body:
        raise invalid(TEMPERATURE_AND_TOP_P)


def check_thinking_rules(body: dict) -> None:
    if not thinking_on(body):
        return
    budget = body["thinking"].get("budget_tokens")
    if budget is not None and "max_tokens" in body and budget >= body["max_tokens"]:
        raise invalid(BUDGET_TOO_BIG)
    if body.get("temperature", 1) != 1:
        raise invalid(THINKING_TEMPERATURE)
    if "top_k" in body:
        raise invalid(THINKING_TOP_K)
    if body.get("top_p", 1) < 0.95:
        raise invalid(THINKING_TOP_P)
    if (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
        raise invalid(THINKING_FORCED_TOOL)
    check_thinking_leads(body["messages"])


def check_thinking_leads(messages: list[dict]) -> None:
    """The last assistant message, if it calls tools, must open with its thinking."""
    assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not assistants or not tool_use_ids(messages[assistants[-1]]):
        return
    i = assistants[-1]
    first = blocks_of(messages[i])[0]["type"]
    if first not in ("thinking", "redacted_thinking"):
        raise invalid(MISSING_THINKING.format(loc=f"messages.{i}.content.0", found=first))


def breakpoint_count(body: dict) -> int:
    blocks = [*(body.get("tools") or [])]
    if isinstance(body.get("system"), list):
        blocks += body["system"]
    for message in body["messages"]:
        for block in blocks_of(message):
            blocks.append(block)
            if block["type"] == "tool_result" and isinstance(block.get("content"), list):
                blocks += block["content"]
    return sum(1 for b in blocks if b.get("cache_control") is not None)


def check_breakpoints(body: dict) -> None:
    count = breakpoint_count(body)
    if count > MAX_BREAKPOINTS:
        raise invalid(TOO_MANY_BREAKPOINTS.format(max=MAX_BREAKPOINTS, n=count))


def check_signatures(state: UpstreamState, messages: list[dict]) -> None:
    for i, message in enumerate(messages):
        for j, block in enumerate(blocks_of(message)):
            loc = f"messages.{i}.content.{j}"
            if block["type"] == "thinking":
                if state.thoughts.get(block["signature"]) != block["thinking"]:
                    raise invalid(f"{loc}: Invalid `signature` in `thinking` block")
            elif block["type"] == "redacted_thinking" and block["data"] not in state.redactions:
                raise invalid(f"{loc}: Invalid `data` in `redacted_thinking` block")


# --------------------------------------------------------------------------
# Answer generation
# --------------------------------------------------------------------------


@dataclass
class Answer:
    content: list[dict[str, Any]]
    stop_reason: str
    stop_sequence: str | None
    output_tokens: int


@dataclass
class Reply:
    """Everything a (streamed or not) response needs."""

    id: str
    model: str
    answer: Answer
    prompt_usage: dict[str, Any]

    @property
    def usage(self) -> dict[str, Any]:
        return {
            **self.prompt_usage,
            "output_tokens": self.answer.output_tokens,
            "service_tier": "standard",
        }


def last_user_message(messages: list[dict]) -> dict:
    users = [m for m in messages if m["role"] == "user"]
    return users[-1] if users else {"role": "user", "content": []}


def text_of(blocks: list[dict]) -> str:
    return "".join(b["text"] for b in blocks if b["type"] == "text")


def result_text(block: dict) -> str:
    content = block.get("content")
    if isinstance(content, list):
        return text_of(content)
    return content or ""


def answer_text(message: dict) -> str:
    blocks = blocks_of(message)
    text = text_of(blocks)
    results = [b for b in blocks if b["type"] == "tool_result"]
    if results and not text:
        return "Tool results: " + "; ".join(result_text(b) for b in results)
    images = sum(1 for b in blocks if b["type"] == "image")
    return f"Echo: {text}" + (f" [{images} image(s)]" if images else "")


def planned_tool_uses(body: dict, message: dict) -> list[dict[str, Any]]:
    tools = [t for t in body.get("tools") or [] if t.get("type") in (None, "custom")]
    choice = body.get("tool_choice") or {"type": "auto"}
    if not tools or choice["type"] == "none" or not text_of(blocks_of(message)):
        return []
    if choice["type"] == "tool":
        tools = [t for t in tools if t["name"] == choice["name"]]
    if choice.get("disable_parallel_tool_use"):
        tools = tools[:1]
    return [tool_use(i, t["name"]) for i, t in enumerate(tools)]


def tool_use(index: int, name: str) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": random_id("toolu_", 24),
        "name": name,
        "input": {"tool": name, "n": index},
    }


def thinking_block(state: UpstreamState, message: dict, fallback: str) -> dict[str, Any]:
    text = text_of(blocks_of(message))
    if REDACTED_TRIGGER in text:
        return {"type": "redacted_thinking", "data": state.issue_redaction()}
    thinking = f"Thinking about: {text or fallback}"
    return {"type": "thinking", "thinking": thinking, "signature": state.issue_signature(thinking)}


def cut_text(text: str, body: dict) -> tuple[str, str, str | None]:
    """(text, stop_reason, stop_sequence) after stop sequences and max_tokens."""
    hits = [(text.find(s), s) for s in body.get("stop_sequences") or [] if s and s in text]
    if hits:
        index, sequence = min(hits)
        return text[:index], "stop_sequence", sequence
    words = list(re.finditer(r"\S+", text))
    if len(words) > body["max_tokens"]:
        return text[: words[body["max_tokens"] - 1].end()], "max_tokens", None
    return text, "end_turn", None


def word_count(text: str) -> int:
    return len(text.split())


def build_answer(state: UpstreamState, body: dict) -> Answer:
    message = last_user_message(body["messages"])
    text = answer_text(message)
    content: list[dict[str, Any]] = []
    if thinking_on(body):
        content.append(thinking_block(state, message, text))
    tokens = word_count(content[0].get("thinking", "")) if content else 0
    plan = state.brain("anthropic", body) if state.brain else None
    if plan is not None:
        text = plan.text or ""
        uses = [{"type": "tool_use", "id": random_id("toolu_", 24), "name": name, "input": args}
                for name, args in plan.calls]
    else:
        uses = planned_tool_uses(body, message)
    if uses:
        return Answer(content + uses, "tool_use", None, tokens + TOOL_USE_TOKENS * len(uses))
    text, stop_reason, stop_sequence = cut_text(text, body)
    if text:
        content.append({"type": "text", "text": text})
    return Answer(content, stop_reason, stop_sequence, tokens + word_count(text))


# --------------------------------------------------------------------------
# Prompt tokens and prompt caching
# --------------------------------------------------------------------------


@dataclass
class Segment:
    """One cacheable piece of the prompt: a tool, a system block, a content block."""

    key: str
    chars: int
    cache_control: dict | None


def without_cache_control(item: dict) -> dict:
    return {k: v for k, v in item.items() if k != "cache_control"}


def block_chars(block: dict) -> int:
    if block["type"] == "text":
        return len(block["text"])
    if block["type"] == "thinking":
        return len(block["thinking"])
    if block["type"] == "image":
        return 4 * IMAGE_TOKENS
    return len(compact(without_cache_control(block)))


def segment(kind: str, item: dict, chars: int) -> Segment:
    key = compact([kind, without_cache_control(item)])
    return Segment(key, chars, item.get("cache_control"))


def prompt_segments(body: dict) -> list[Segment]:
    """The prompt in cache order: tools, system, messages."""
    segments = [segment("tool", t, len(compact(t))) for t in body.get("tools") or []]
    system = body.get("system")
    if isinstance(system, str) and system:
        system = [{"type": "text", "text": system}]
    segments += [segment("system", b, len(b["text"])) for b in system or []]
    for message in body["messages"]:
        segments += [segment(message["role"], b, block_chars(b)) for b in blocks_of(message)]
    return segments


def prompt_tokens(body: dict) -> int:
    return sum(s.chars for s in prompt_segments(body)) // 4 + 1


def prefix_hash(model: str, segments: list[Segment]) -> str:
    text = "\n".join([model, *(s.key for s in segments)])
    return hashlib.sha256(text.encode()).hexdigest()


def prompt_usage(state: UpstreamState, body: dict) -> dict[str, Any]:
    """input / cache read / cache creation tokens; remembers the prefixes it caches."""
    segments = prompt_segments(body)
    marks = [i for i, s in enumerate(segments) if s.cache_control is not None]
    hashes = {i: prefix_hash(body["model"], segments[: i + 1]) for i in marks}
    chars = [total // 4 for total in accumulate(s.chars for s in segments)]
    read = max((chars[i] for i in marks if hashes[i] in state.cached_prefixes), default=0)
    created = ttl = 0
    if marks and hashes[marks[-1]] not in state.cached_prefixes:
        created = chars[marks[-1]] - read
        ttl = segments[marks[-1]].cache_control.get("ttl", "5m")
    state.cached_prefixes.update(hashes.values())
    return {
        "input_tokens": prompt_tokens(body) - read - created,
        "cache_creation_input_tokens": created,
        "cache_read_input_tokens": read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": created if ttl == "5m" else 0,
            "ephemeral_1h_input_tokens": created if ttl == "1h" else 0,
        },
    }


def make_reply(state: UpstreamState, body: dict) -> Reply:
    return Reply(
        id=random_id("msg_01", 22),
        model=body["model"],
        answer=build_answer(state, body),
        prompt_usage=prompt_usage(state, body),
    )


# --------------------------------------------------------------------------
# Response bodies and stream events
# --------------------------------------------------------------------------

Event = tuple[str, dict[str, Any]]


def message_body(reply: Reply) -> dict[str, Any]:
    return {
        "id": reply.id,
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": reply.answer.content,
        "stop_reason": reply.answer.stop_reason,
        "stop_sequence": reply.answer.stop_sequence,
        "usage": reply.usage,
    }


def event(name: str, **fields: Any) -> Event:
    return name, {"type": name, **fields}


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def text_stream(block: dict) -> tuple[dict, list[dict]]:
    deltas = [{"type": "text_delta", "text": p} for p in pieces(block["text"], TEXT_PIECE)]
    return {"type": "text", "text": ""}, deltas


def thinking_stream(block: dict) -> tuple[dict, list[dict]]:
    deltas = [
        {"type": "thinking_delta", "thinking": p}
        for p in pieces(block["thinking"], THINKING_PIECE)
    ]
    deltas.append({"type": "signature_delta", "signature": block["signature"]})
    return {"type": "thinking", "thinking": "", "signature": ""}, deltas


def redacted_thinking_stream(block: dict) -> tuple[dict, list[dict]]:
    return block, []


def tool_use_stream(block: dict) -> tuple[dict, list[dict]]:
    fragments = ["", *pieces(compact(block["input"]), JSON_PIECE)]
    deltas = [{"type": "input_json_delta", "partial_json": f} for f in fragments]
    return {**block, "input": {}}, deltas


BLOCK_STREAMS: dict[str, Callable[[dict], tuple[dict, list[dict]]]] = {
    "text": text_stream,
    "thinking": thinking_stream,
    "redacted_thinking": redacted_thinking_stream,
    "tool_use": tool_use_stream,
}


def block_events(index: int, block: dict) -> list[Event]:
    start, deltas = BLOCK_STREAMS[block["type"]](block)
    return [
        event("content_block_start", index=index, content_block=start),
        *(event("content_block_delta", index=index, delta=d) for d in deltas),
        event("content_block_stop", index=index),
    ]


def stream_events(reply: Reply) -> list[Event]:
    start_usage = {**reply.usage, "output_tokens": 1}
    start = {
        **message_body(reply),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    events = [event("message_start", message=start), event("ping")]
    for index, block in enumerate(reply.answer.content):
        events += block_events(index, block)
    delta = {"stop_reason": reply.answer.stop_reason, "stop_sequence": reply.answer.stop_sequence}
    usage = {"output_tokens": reply.answer.output_tokens}
    events.append(event("message_delta", delta=delta, usage=usage))
    events.append(event("message_stop"))
    return events


def through_deltas(events: list[Event], count: int) -> list[Event]:
    """The events up to and including the count-th content_block_delta."""
    seen = 0
    for i, (name, _) in enumerate(events):
        seen += name == "content_block_delta"
        if seen == count:
            return events[: i + 1]
    return events[:-2]


def sse_event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {compact(payload)}\n\n".encode()


# --------------------------------------------------------------------------
# Writing responses
# --------------------------------------------------------------------------


async def open_stream(request: web.Request) -> web.StreamResponse:
    headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    response = web.StreamResponse(headers=headers)
    response.enable_chunked_encoding()
    await response.prepare(request)
    return response


async def send_events(
    request: web.Request, response: web.StreamResponse, events: list[Event], delay: float = 0.0
) -> None:
    for name, payload in events:
        if delay and name == "content_block_delta":
            await asyncio.sleep(delay)
        await response.write(sse_event(name, payload))
        await request.writer.drain()


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


async def stream_reply(
    request: web.Request, events: list[Event], delay: float = 0.0
) -> web.StreamResponse:
    response = await open_stream(request)
    await send_events(request, response, events, delay)
    await response.write_eof()
    return response


async def respond_normally(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    reply = make_reply(request.app[STATE], body)
    if not body.get("stream"):
        return web.json_response(message_body(reply))
    return await stream_reply(request, stream_events(reply))


def overloaded() -> ApiError:
    return ApiError(529, "overloaded_error", "Overloaded")


async def fault_overloaded(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    raise overloaded()


def rate_limit_headers() -> dict[str, str]:
    reset = (datetime.now(UTC) + timedelta(seconds=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = {"retry-after": "7"}
    for name, limit in RATE_LIMITS.items():
        headers[f"anthropic-ratelimit-{name}-limit"] = str(limit)
        headers[f"anthropic-ratelimit-{name}-remaining"] = "0"
        headers[f"anthropic-ratelimit-{name}-reset"] = reset
    return headers


async def fault_429(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    raise ApiError(429, "rate_limit_error", RATE_LIMITED, rate_limit_headers())


async def fault_500(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    raise ApiError(500, "api_error", "Internal server error")


async def fault_stream_error(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    if not body.get("stream"):
        raise overloaded()
    events = through_deltas(stream_events(make_reply(request.app[STATE], body)), CUT_AFTER_DELTAS)
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    return await stream_reply(request, [*events, ("error", error)])


async def fault_stream_overloaded(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    if not body.get("stream"):
        raise overloaded()
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    return await stream_reply(request, [("error", error)])


async def fault_cut(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    if not body.get("stream"):
        return drop_connection(request)
    events = stream_events(make_reply(request.app[STATE], body))
    response = await open_stream(request)
    await send_events(request, response, through_deltas(events, CUT_AFTER_DELTAS))
    return drop_connection(request, response)


async def fault_hang(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_SECONDS
    while not client_gone(request) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return drop_connection(request)


async def fault_slow_stream(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    if not body.get("stream"):
        return await respond_normally(request, body)
    events = stream_events(make_reply(request.app[STATE], body))
    return await stream_reply(request, events, delay=SLOW_DELTA_DELAY)


SCENARIOS: dict[str, Scenario] = {
    "fault-overloaded": fault_overloaded,
    "fault-429": fault_429,
    "fault-500": fault_500,
    "fault-stream-error": fault_stream_error,
    "fault-stream-overloaded": fault_stream_overloaded,
    "fault-cut": fault_cut,
    "fault-hang": fault_hang,
    "fault-slow-stream": fault_slow_stream,
}
SCENARIO_MODELS = list(SCENARIOS)


# --------------------------------------------------------------------------
# HTTP handlers, middlewares, app
# --------------------------------------------------------------------------


def all_models(state: UpstreamState) -> list[str]:
    return [*state.models, *(m for m in SCENARIO_MODELS if m not in state.models)]


def require_model(state: UpstreamState, model: str) -> None:
    if model not in all_models(state):
        raise model_not_found(model)


def display_name(model: str) -> str:
    """claude-sonnet-4-5 -> "Claude Sonnet 4.5"."""
    words: list[str] = []
    for word in model.split("-"):
        if word.isdigit() and len(word) <= 2 and words and words[-1][-1].isdigit():
            words[-1] += f".{word}"
        else:
            words.append(word.capitalize())
    return " ".join(words)


def model_entry(model: str) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model,
        "display_name": display_name(model),
        "created_at": MODEL_CREATED_AT,
    }


def page_limit(request: web.Request) -> int:
    raw = request.query.get("limit", "20")
    if not raw.lstrip("-").isdigit():
        raise bad("limit", "Input should be a valid integer, unable to parse string as an integer")
    limit = int(raw)
    in_range(limit, "limit", 1, 1000)
    return limit


def model_page(models: list[str], request: web.Request) -> tuple[list[str], bool]:
    limit = page_limit(request)
    before, after = request.query.get("before_id"), request.query.get("after_id")
    if before in models:
        end = models.index(before)
        return models[max(0, end - limit) : end], end > limit
    start = models.index(after) + 1 if after in models else 0
    return models[start : start + limit], len(models) > start + limit


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    check_headers(request, state.api_key)
    ids, has_more = model_page(all_models(state), request)
    return web.json_response({
        "data": [model_entry(m) for m in ids],
        "has_more": has_more,
        "first_id": ids[0] if ids else None,
        "last_id": ids[-1] if ids else None,
    })


async def get_model(request: web.Request) -> web.Response:
    state = request.app[STATE]
    check_headers(request, state.api_key)
    model = request.match_info["model"]
    require_model(state, model)
    return web.json_response(model_entry(model))


async def create_message(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    check_headers(request, state.api_key)
    body = await read_json(request)
    validate_create(without_beta_fields(body, request))
    require_model(state, body["model"])
    validate_semantics(state, body, body["model"])
    scenario = SCENARIOS.get(body["model"], respond_normally)
    try:
        return await scenario(request, body)
    except ConnectionError:  # the client left mid-stream
        return drop_connection(request)


async def count_tokens(request: web.Request) -> web.Response:
    state = request.app[STATE]
    check_headers(request, state.api_key)
    body = await read_json(request)
    validate_count(without_beta_fields(body, request))
    require_model(state, body["model"])
    validate_semantics(state, body, body["model"])
    return web.json_response({"input_tokens": prompt_tokens(body)})


@web.middleware
async def anthropic_errors(request: web.Request, handler: Callable) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return error.response()
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return ApiError(404, "not_found_error", "Not Found").response()


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["request-id"] = random_id("req_011C", 20)


def make_app(api_key: str | None, models: list[str], brain: Callable | None = None) -> web.Application:
    app = serving.application(anthropic_errors)
    app[STATE] = UpstreamState(api_key=api_key, models=list(models), brain=brain)
    app.on_response_prepare.append(add_request_id)
    app.router.add_post("/v1/messages", create_message)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    return app


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    serving.main(make_app, DEFAULT_MODELS, __doc__, argv)


if __name__ == "__main__":
    main()
