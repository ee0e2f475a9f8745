"""Anthropic Messages wire format (pure, no I/O): requests, responses, streams, errors.

decode_* turn Anthropic JSON into the canonical model, encode_* the reverse;
StreamDecoder reads an Anthropic SSE stream, StreamEncoder writes one.

Choices the format forces (encode_request, for an Anthropic upstream):
- Turns alternate user/assistant: consecutive same-role messages are merged. A
  conversation that starts with an assistant turn is refused (ConversionError,
  param messages.N.role): nothing is invented to go before it.
- Tool results travel in user turns as tool_result blocks, placed before the other
  blocks of that turn (Anthropic requires them first).
- Thinking blocks are replayed only in assistant turns and only with a signature
  (Anthropic rejects unsigned thinking); redacted thinking is replayed as is.
  Signatures from another provider (Gemini) cannot be told apart and are sent.
- Tool-call ids outside ^[a-zA-Z0-9_-]+$ are rewritten deterministically (the
  same id always gives the same new id, in calls and in their results, in every
  request of a conversation): unsafe characters become "_" and a hash of the
  original id is appended.
- Reasoning: budget_tokens is used as given (at least 1024, Anthropic's minimum);
  an effort maps to a budget (minimal/none -> off, low 1024, medium 8192,
  high 24576, xhigh/max 32768); a Reasoning with neither is {"type": "adaptive"}.
  max_tokens (default 4096) is raised to budget + max_tokens when it does not
  exceed the budget. Thinking is left off when Anthropic would refuse it: with a
  forced tool_choice (any / tool), or when the request continues a tool loop whose
  assistant turn (since the last user message that is not tool results) does not
  start with a (signed) thinking block. With thinking on,
  temperature (unless 1), top_k and top_p below 0.95 are dropped, as Anthropic
  requires. Whatever is dropped is named in req.dropped.
- response_format json_object / json_schema: Anthropic has no JSON mode that works
  on every model, so the request gets a last system block telling the model to
  answer with one JSON object only (and, for json_schema, the schema itself).
- temperature is clamped to Anthropic's range [0, 1]; top_p next to it is dropped for the
  models that refuse both (thinking.anthropic_one_sampler); seed, presence_penalty and
  frequency_penalty have no Anthropic equivalent and are dropped.
- tool_choice is sent only with tools; parallel_tool_calls=False becomes
  disable_parallel_tool_use. Trailing whitespace of a final assistant (prefill)
  text is removed (Anthropic refuses it); empty text blocks are left out.

Responses and streams (for an Anthropic client):
- Message ids are "msg_..." (the canonical id prefixed when it lacks it).
- Thinking from an upstream that does not sign its thoughts (Gemini signs the calls, whose
  signatures ride in the tool_use ids; OpenAI-compatible reasoning_content) has signature "".
- Usage: Anthropic's input_tokens excludes cache reads and writes; canonical
  input_tokens includes them (input + cache_read + cache_creation), with
  cached_tokens = cache reads and cache_write_tokens = cache creation.
- stop_reason: stop -> end_turn ("tool_use" when tool calls were sent: some
  upstreams say "stop" after calls), length -> max_tokens, stop_sequence,
  tool_calls -> tool_use, content_filter -> refusal; pause_turn and
  model_context_window_exceeded survive a round trip through finish_detail.
  stop_sequence is always null (the canonical model does not carry which one).
- The stream encoder sends exactly one message_start, blocks one at a time with
  contiguous indexes (a block that starts while another is open is held back
  until that one stops), no empty text blocks, signatures as one signature_delta
  just before the thinking block's stop, and message_delta with cumulative usage
  including input_tokens (other upstreams may only know it at the end).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import secrets
import time
from typing import Any, TypeGuard

from converters import call_ids, jsonio
from converters import canonical as cn
from converters.pipeline import SSERelabel, SSEStreamDecoder
from converters.shapes import arr, obj, string
from converters.sse import encode
from converters.thinking import anthropic_one_sampler

DEFAULT_MAX_TOKENS = 4096
MIN_BUDGET = 1024
_EFFORT_BUDGET = {"none": 0, "minimal": 0, "low": 1024, "medium": 8192, "high": 24576,
                  "xhigh": 32768, "max": 32768}
_SAFE_ID = re.compile(r"[a-zA-Z0-9_-]+")
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")

_STOP_IN: dict[str, cn.FinishReason] = {"end_turn": "stop", "max_tokens": "length", "stop_sequence": "stop_sequence",
            "tool_use": "tool_calls", "pause_turn": "stop", "refusal": "content_filter",
            "model_context_window_exceeded": "length"}
_STOP_OUT = {"stop": "end_turn", "stop_sequence": "stop_sequence", "length": "max_tokens",
             "tool_calls": "tool_use", "content_filter": "refusal", "error": "end_turn"}
_PLAIN_STOPS = {"end_turn", "max_tokens", "stop_sequence", "tool_use"}

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                403: "permission_error", 404: "not_found_error", 429: "rate_limit_error",
                500: "api_error", 502: "api_error", 503: "overloaded_error", 504: "timeout_error",
                529: "overloaded_error"}
_ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
                 "permission_error": 403, "not_found_error": 404, "rate_limit_error": 429,
                 "timeout_error": 504, "api_error": 502, "overloaded_error": 529}
ERROR_TYPES = frozenset(_ERROR_STATUS)  # the error.type values Anthropic clients know
_DROPPED_FIELDS = ("service_tier", "container", "mcp_servers", "context_management", "inference_geo",
                   "speed", "diagnostics", "cache_control")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _count(v: Any) -> int:
    return v if _is_int(v) and v > 0 else 0


def _opt_dict(v: Any, param: str) -> dict | None:
    if v is None or isinstance(v, dict):
        return v
    raise cn.ConversionError(f"'{param}' must be an object.", param)


# --- Anthropic request -> canonical ------------------------------------------

def decode_request(data: dict[str, Any]) -> cn.Request:
    """An Anthropic Messages request body -> canonical. Raises only cn.ConversionError."""
    if not isinstance(data, dict):
        raise cn.ConversionError("The request body must be a JSON object.")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise cn.ConversionError("Missing required parameter: 'model'.", "model")
    max_tokens = data.get("max_tokens")
    if max_tokens is None:
        raise cn.ConversionError("Missing required parameter: 'max_tokens'.", "max_tokens")
    if not _is_int(max_tokens) or max_tokens < 1:
        raise cn.ConversionError("'max_tokens' must be a positive integer.", "max_tokens")
    raw = data.get("messages")
    if not isinstance(raw, list) or not raw:
        raise cn.ConversionError("'messages' must be a non-empty array.", "messages")

    names: dict[str, str] = {}  # tool_use id -> tool name, to name tool results
    messages: list[cn.Message] = []
    for i, m in enumerate(raw):
        where = f"messages.{i}"
        if not isinstance(m, dict):
            raise cn.ConversionError("Each message must be an object.", where)
        role = m.get("role")
        if role not in ("user", "assistant"):
            raise cn.ConversionError(f"Unsupported message role {role!r}: use 'user' or 'assistant'.",
                                     f"{where}.role")
        messages.append(cn.Message(role, _blocks(m.get("content"), f"{where}.content", names)))

    req = cn.Request(model=model, messages=messages, system=_system(data.get("system")), max_tokens=max_tokens)
    for name in ("temperature", "top_p"):
        v = data.get(name)
        if v is not None and not _is_num(v):
            raise cn.ConversionError(f"'{name}' must be a number.", name)
        setattr(req, name, v)
    top_k = data.get("top_k")
    if top_k is not None and not _is_int(top_k):
        raise cn.ConversionError("'top_k' must be an integer.", "top_k")
    req.top_k = top_k
    stop = data.get("stop_sequences")
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)):
        raise cn.ConversionError("'stop_sequences' must be an array of strings.", "stop_sequences")
    req.stop = list(stop or [])
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise cn.ConversionError("'stream' must be a boolean.", "stream")
    req.stream = stream is True
    req.include_usage = True  # Anthropic streams always carry usage
    metadata = _opt_dict(data.get("metadata"), "metadata") or {}
    user = metadata.get("user_id")
    if user is not None and not isinstance(user, str):
        raise cn.ConversionError("'metadata.user_id' must be a string.", "metadata.user_id")
    req.user = user

    tools = data.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise cn.ConversionError("'tools' must be an array.", "tools")
    for i, t in enumerate(tools or ()):
        _tool(t, f"tools.{i}", req)
    req.tool_choice, disable_parallel = _tool_choice(data.get("tool_choice"))
    if disable_parallel:
        req.parallel_tool_calls = False

    dropped: list[str] = []
    output_config = _opt_dict(data.get("output_config"), "output_config") or {}
    req.reasoning = _thinking(data.get("thinking"), output_config.get("effort"), dropped)
    fmt = output_config.get("format") if output_config.get("format") is not None else data.get("output_format")
    req.response_format = _output_format(fmt)
    dropped += [k for k in _DROPPED_FIELDS if data.get(k) is not None]
    req.dropped = sorted(set(dropped))
    return req


def _system(system: Any) -> list[cn.Text]:
    if system is None:
        return []
    if isinstance(system, str):
        return [cn.Text(system)] if system else []
    if not isinstance(system, list):
        raise cn.ConversionError("'system' must be a string or an array of text blocks.", "system")
    out = []
    for k, b in enumerate(system):
        if not isinstance(b, dict) or b.get("type") != "text" or not isinstance(b.get("text"), str):
            raise cn.ConversionError("System blocks must be text blocks.", f"system.{k}")
        out.append(cn.Text(b["text"], _opt_dict(b.get("cache_control"), f"system.{k}.cache_control")))
    return out


def _blocks(content: Any, where: str, names: dict[str, str]) -> list[cn.Block]:
    if isinstance(content, str):
        return [cn.Text(content)] if content else []
    if not isinstance(content, list):
        raise cn.ConversionError("content must be a string or an array of content blocks.", where)
    return [_block(b, f"{where}.{k}", names) for k, b in enumerate(content)]


def _block(b: Any, where: str, names: dict[str, str]) -> cn.Block:
    if not isinstance(b, dict):
        raise cn.ConversionError("Each content block must be an object.", where)
    kind = b.get("type")
    cache = _opt_dict(b.get("cache_control"), f"{where}.cache_control")
    if kind == "text":
        if not isinstance(b.get("text"), str):
            raise cn.ConversionError("A text block needs 'text'.", f"{where}.text")
        return cn.Text(b["text"], cache)
    if kind == "image":
        return _image(b, where, cache)
    if kind == "tool_use":
        call_id, name, args = b.get("id"), b.get("name"), b.get("input", {})
        if not isinstance(call_id, str) or not call_id or not isinstance(name, str):
            raise cn.ConversionError("A tool_use block needs 'id' and 'name'.", where)
        if not isinstance(args, dict):
            raise cn.ConversionError("tool_use 'input' must be an object.", f"{where}.input")
        names[call_id] = name
        return cn.ToolCall(call_id, name, _dumps(args), call_ids.signature_of(call_id), cache)
    if kind == "tool_result":
        call_id = b.get("tool_use_id")
        if not isinstance(call_id, str) or not call_id:
            raise cn.ConversionError("A tool_result block needs 'tool_use_id'.", f"{where}.tool_use_id")
        is_error = b.get("is_error", False)
        if not isinstance(is_error, bool):
            raise cn.ConversionError("'is_error' must be a boolean.", f"{where}.is_error")
        return cn.ToolResult(call_id, _result_content(b.get("content"), f"{where}.content"), is_error,
                             names.get(call_id), cache)
    if kind == "thinking":
        text, sig = b.get("thinking"), b.get("signature")
        if not isinstance(text, str) or (sig is not None and not isinstance(sig, str)):
            raise cn.ConversionError("A thinking block needs 'thinking' and 'signature' strings.", where)
        return cn.Thinking(text, sig or None)
    if kind == "redacted_thinking":
        if not isinstance(b.get("data"), str):
            raise cn.ConversionError("A redacted_thinking block needs 'data'.", f"{where}.data")
        return cn.RedactedThinking(b["data"])
    raise cn.ConversionError(f"Content block type {kind!r} is not supported for this provider.", f"{where}.type")


def _image(b: dict[str, Any], where: str, cache: dict | None) -> cn.Image:
    src = obj(b.get("source"))
    kind = src.get("type")
    if kind == "base64" and isinstance(src.get("data"), str):
        media = src.get("media_type")
        return cn.Image(media if isinstance(media, str) else "", src["data"], cache_control=cache)
    if kind == "url" and isinstance(src.get("url"), str):
        return cn.Image(url=src["url"], cache_control=cache)
    raise cn.ConversionError("Images must have a base64 or url source.", f"{where}.source")


def _result_content(content: Any, where: str) -> list[cn.Text | cn.Image]:
    if content is None:
        return []
    if isinstance(content, str):
        return [cn.Text(content)] if content else []
    if not isinstance(content, list):
        raise cn.ConversionError("tool_result content must be a string or an array of blocks.", where)
    out: list[cn.Text | cn.Image] = []
    for k, b in enumerate(content):
        kind = b.get("type") if isinstance(b, dict) else None
        if kind not in ("text", "image"):
            raise cn.ConversionError(f"tool_result content type {kind!r} is not supported for this provider.",
                                     f"{where}.{k}.type")
        block = _block(b, f"{where}.{k}", {})
        assert isinstance(block, (cn.Text, cn.Image))
        out.append(block)
    return out


# Anthropic-defined client tools (the client runs them; only their schema is Anthropic's own)
_CLIENT_TOOLS = {
    "bash": {"type": "object", "properties": {
        "command": {"type": "string", "description": "The bash command to run."},
        "restart": {"type": "boolean", "description": "Restart the bash session."}}},
    "text_editor": {"type": "object", "properties": {
        "command": {"type": "string", "enum": ["view", "create", "str_replace", "insert", "undo_edit"]},
        "path": {"type": "string"}, "file_text": {"type": "string"}, "old_str": {"type": "string"},
        "new_str": {"type": "string"}, "insert_line": {"type": "integer"}, "insert_text": {"type": "string"},
        "view_range": {"type": "array", "items": {"type": "integer"}}}, "required": ["command", "path"]},
}


def _tool(t: Any, where: str, req: cn.Request) -> None:
    """A custom tool, an Anthropic-defined client tool (bash, text editor: kept, with their
    schema), or a server tool (web search, code execution, ...: a cn.HostedTool)."""
    if not isinstance(t, dict):
        raise cn.ConversionError("Each tool must be an object.", where)
    kind = t.get("type")
    if kind not in (None, "custom"):
        if not isinstance(kind, str):
            raise cn.ConversionError("A tool's 'type' must be a string.", f"{where}.type")
        base = re.sub(r"_\d{8}$", "", kind)
        if base in _CLIENT_TOOLS and isinstance(t.get("name"), str):
            req.tools.append(cn.Tool(t["name"], f"The {base.replace('_', ' ')} tool.", _CLIENT_TOOLS[base]))
        else:
            req.hosted_tools.append(cn.HostedTool(base, {k: v for k, v in t.items() if k not in ("type", "name")}))
        return
    name, desc = t.get("name"), t.get("description")
    if not isinstance(name, str) or not name:
        raise cn.ConversionError("A tool needs a 'name'.", f"{where}.name")
    if desc is not None and not isinstance(desc, str):
        raise cn.ConversionError("A tool's 'description' must be a string.", f"{where}.description")
    schema = _opt_dict(t.get("input_schema"), f"{where}.input_schema")
    req.tools.append(cn.Tool(name, desc, schema, _opt_dict(t.get("cache_control"), f"{where}.cache_control")))


def _tool_choice(choice: Any) -> tuple[cn.ToolChoice | None, bool]:
    if choice is None:
        return None, False
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in ("auto", "any", "tool", "none"):
        raise cn.ConversionError("tool_choice.type must be auto, any, tool or none.", "tool_choice")
    disable = choice.get("disable_parallel_tool_use", False)
    if not isinstance(disable, bool):
        raise cn.ConversionError("'disable_parallel_tool_use' must be a boolean.",
                                 "tool_choice.disable_parallel_tool_use")
    if kind == "tool":
        if not isinstance(choice.get("name"), str) or not choice["name"]:
            raise cn.ConversionError("tool_choice of type 'tool' needs a 'name'.", "tool_choice.name")
        return cn.ToolChoice("tool", choice["name"]), disable
    modes: dict[str, cn.ToolChoiceMode] = {"auto": "auto", "any": "required", "none": "none"}
    return cn.ToolChoice(modes[kind]), disable


def _thinking(thinking: Any, effort: Any, dropped: list[str]) -> cn.Reasoning | None:
    if effort is not None and not isinstance(effort, str):
        raise cn.ConversionError("'output_config.effort' must be a string.", "output_config.effort")
    if thinking is not None and not isinstance(thinking, dict):
        raise cn.ConversionError("'thinking' must be an object.", "thinking")
    kind = thinking.get("type") if thinking is not None else None
    if thinking is None or kind == "disabled":
        if effort:
            dropped.append("output_config.effort")
        return None
    include = thinking.get("display") != "omitted"
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not _is_int(budget) or budget < 0:
            raise cn.ConversionError("thinking.budget_tokens must be a non-negative integer.",
                                     "thinking.budget_tokens")
        if effort:
            dropped.append("output_config.effort")
        return cn.Reasoning(budget_tokens=budget, include_thoughts=include)
    if kind == "adaptive":
        return cn.Reasoning(effort=effort or None, include_thoughts=include)
    raise cn.ConversionError("thinking.type must be enabled, adaptive or disabled.", "thinking.type")


def _output_format(fmt: Any) -> cn.ResponseFormat | None:
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise cn.ConversionError("output_config.format must be {type: json_schema, schema}.",
                                 "output_config.format")
    return cn.ResponseFormat("json_schema", fmt["schema"])


# --- canonical -> Anthropic request ------------------------------------------

def safe_tool_id(call_id: str) -> str:
    """`call_id` if Anthropic accepts it, else a stable rewrite of it."""
    if _SAFE_ID.fullmatch(call_id):
        return call_id
    digest = hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    base = _UNSAFE.sub("_", call_id)[:48]
    return f"{base}_{digest}" if base.strip("_") else f"toolu_{digest}"


def encode_request(req: cn.Request) -> dict[str, Any]:
    """Canonical -> Anthropic Messages request body (see the module docstring for the choices)."""
    messages = _turns(req)
    body: dict[str, Any] = {"model": req.model, "messages": messages}
    dropped: list[str] = []

    system = [_text_out(t) for t in req.system if t.text]
    instruction = _format_instruction(req.response_format)
    if instruction:
        system.append({"type": "text", "text": instruction})
    if system:
        body["system"] = system

    tools = [_tool_out(t) for t in req.tools] + [_web_search_out(h) for h in cn.hosted(req, ("web_search",))]
    if tools:
        body["tools"] = tools
        choice = _choice_out(req.tool_choice, req.parallel_tool_calls)
        if choice:
            body["tool_choice"] = choice

    for name in ("max_tokens", "top_k"):
        if getattr(req, name) is not None and not _is_int(getattr(req, name)):
            raise cn.ConversionError(f"'{name}' must be an integer.", name)
    for name in ("temperature", "top_p"):
        if getattr(req, name) is not None and not _is_num(getattr(req, name)):
            raise cn.ConversionError(f"'{name}' must be a number.", name)

    budget = _budget(req.reasoning)
    if budget and req.tool_choice and req.tool_choice.mode in ("required", "tool"):
        budget = None
        dropped.append("reasoning (Anthropic refuses thinking with a forced tool_choice)")
    if budget and _unthought_tool_loop(messages):
        budget = None
        dropped.append("reasoning (the tool loop's assistant turn has no signed thinking)")

    max_tokens = req.max_tokens if req.max_tokens and req.max_tokens > 0 else DEFAULT_MAX_TOKENS
    if isinstance(budget, int) and max_tokens <= budget:
        max_tokens += budget
    body["max_tokens"] = max_tokens
    if budget:
        thinking: dict[str, Any] = {"type": "adaptive"} if budget == "adaptive" else \
            {"type": "enabled", "budget_tokens": budget}
        if req.reasoning and not req.reasoning.include_thoughts:
            thinking["display"] = "omitted"
        body["thinking"] = thinking

    if req.temperature is not None:
        t = min(max(float(req.temperature), 0.0), 1.0)
        if budget and t != 1.0:
            dropped.append("temperature")
        else:
            body["temperature"] = req.temperature if t == req.temperature else t
    if req.top_p is not None:
        if (budget and req.top_p < 0.95) or ("temperature" in body and anthropic_one_sampler(req.model)):
            dropped.append("top_p")
        else:
            body["top_p"] = req.top_p
    if req.top_k is not None:
        if budget:
            dropped.append("top_k")
        else:
            body["top_k"] = req.top_k
    if req.stop:
        body["stop_sequences"] = list(req.stop)
    if req.user:
        body["metadata"] = {"user_id": req.user}
    if req.stream:
        body["stream"] = True
    for name in ("seed", "presence_penalty", "frequency_penalty"):
        if getattr(req, name) is not None:
            dropped.append(name)
    for d in dropped:
        if d not in req.dropped:
            req.dropped.append(d)
    return body


WEB_SEARCH_TOOL = "web_search_20250305"
_WEB_SEARCH_KEYS = ("max_uses", "allowed_domains", "blocked_domains", "user_location")


def _web_search_out(h: cn.HostedTool) -> dict[str, Any]:
    """Anthropic's web search server tool, with the settings it shares with the client's
    (Responses keeps allowed_domains under `filters`)."""
    config = {**h.config, **(h.config.get("filters") or {})}
    out: dict[str, Any] = {"type": WEB_SEARCH_TOOL, "name": "web_search"}
    out.update({k: config[k] for k in _WEB_SEARCH_KEYS if config.get(k)})
    return out


def _text_out(t: cn.Text) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "text", "text": t.text}
    if t.cache_control:
        out["cache_control"] = t.cache_control
    return out


def _image_out(img: cn.Image, where: str) -> dict[str, Any]:
    if img.data is not None:
        src = {"type": "base64", "media_type": img.media_type or "image/png", "data": img.data}
    elif img.url:
        src = {"type": "url", "url": img.url}
    else:
        raise cn.ConversionError("An image has neither data nor a URL.", where)
    out: dict[str, Any] = {"type": "image", "source": src}
    if img.cache_control:
        out["cache_control"] = img.cache_control
    return out


def _tool_use_out(c: cn.ToolCall, where: str) -> dict[str, Any]:
    try:
        args = jsonio.loads(c.arguments or "{}")
    except ValueError:
        raise cn.ConversionError(f"Tool call {c.id} has arguments that are not JSON.", where) from None
    out: dict[str, Any] = {"type": "tool_use", "id": safe_tool_id(c.id), "name": c.name,
                           "input": args if isinstance(args, dict) else {"value": args}}
    if c.cache_control:
        out["cache_control"] = c.cache_control
    return out


def _tool_result_out(r: cn.ToolResult, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "tool_result", "tool_use_id": safe_tool_id(r.call_id)}
    parts = [p for p in r.content if not (isinstance(p, cn.Text) and not p.text)]
    if len(parts) == 1 and isinstance(parts[0], cn.Text) and not parts[0].cache_control:
        out["content"] = parts[0].text
    elif parts:
        out["content"] = [_text_out(p) if isinstance(p, cn.Text) else _image_out(p, where) for p in parts]
    if r.is_error:
        out["is_error"] = True
    if r.cache_control:
        out["cache_control"] = r.cache_control
    return out


def _turns(req: cn.Request) -> list[dict[str, Any]]:
    turns: list[tuple[str, list[dict], list[dict], int]] = []  # role, tool results, other blocks, first index
    for i, m in enumerate(req.messages):
        where = f"messages.{i}"
        results: list[dict] = []
        rest: list[dict] = []
        for b in m.content:
            if isinstance(b, cn.ToolResult):
                if m.role != "user":
                    raise cn.ConversionError("Tool results must be in a user turn.", where)
                results.append(_tool_result_out(b, where))
            elif isinstance(b, cn.Text):
                if b.text:
                    rest.append(_text_out(b))
            elif isinstance(b, cn.Image):
                if m.role != "user":
                    raise cn.ConversionError("Anthropic takes images only in user turns.", where)
                rest.append(_image_out(b, where))
            elif isinstance(b, cn.ToolCall):
                if m.role != "assistant":
                    raise cn.ConversionError("Tool calls must be in an assistant turn.", where)
                rest.append(_tool_use_out(b, where))
            elif isinstance(b, cn.Thinking):
                if m.role == "assistant" and b.signature:
                    rest.append({"type": "thinking", "thinking": b.text, "signature": b.signature})
            elif isinstance(b, cn.RedactedThinking):
                if m.role == "assistant":
                    rest.append({"type": "redacted_thinking", "data": b.data})
        if not results and not rest:
            continue
        if turns and turns[-1][0] == m.role:
            turns[-1][1].extend(results)
            turns[-1][2].extend(rest)
        else:
            turns.append((m.role, results, rest, i))
    if not turns:
        raise cn.ConversionError("The conversation has no content to send.", "messages")
    if turns[0][0] != "user":
        raise cn.ConversionError("Anthropic requires the conversation to start with a user message.",
                                 f"messages.{turns[0][3]}.role")
    out: list[dict[str, Any]] = [{"role": role, "content": results + rest} for role, results, rest, _ in turns]
    last = out[-1]
    if last["role"] == "assistant":  # prefill: no trailing whitespace allowed
        blocks = last["content"]
        if blocks[-1]["type"] == "text":
            blocks[-1] = {**blocks[-1], "text": blocks[-1]["text"].rstrip()}
            if not blocks[-1]["text"]:
                blocks.pop()
        if not blocks:
            out.pop()
    return out


def _unthought_tool_loop(messages: list[dict[str, Any]]) -> bool:
    """The request continues a tool loop whose assistant turn does not start with thinking.

    The turn is everything after the last user message that is not tool results;
    Anthropic wants its first assistant message to start with a thinking block."""
    if messages[-1]["role"] != "user" or messages[-1]["content"][0]["type"] != "tool_result":
        return False
    first_assistant = None
    for m in reversed(messages):
        if m["role"] == "assistant":
            first_assistant = m
        elif m["content"][0]["type"] != "tool_result":
            break
    return first_assistant is not None and \
        first_assistant["content"][0]["type"] not in ("thinking", "redacted_thinking")


def _budget(r: cn.Reasoning | None) -> int | str | None:
    """Thinking budget in tokens, "adaptive", or None for no thinking."""
    if r is None:
        return None
    if r.budget_tokens is not None:
        return max(r.budget_tokens, MIN_BUDGET) if r.budget_tokens > 0 else None
    if r.effort is None:
        return "adaptive"
    if r.effort not in _EFFORT_BUDGET:
        raise cn.ConversionError(f"Unknown reasoning effort {r.effort!r}.", "reasoning_effort")
    return _EFFORT_BUDGET[r.effort] or None


def _format_instruction(rf: cn.ResponseFormat | None) -> str | None:
    if rf is None or rf.type == "text":
        return None
    text = "Respond with a single JSON object only: no prose, no Markdown code fences."
    if rf.type == "json_schema" and rf.schema:
        text += " The object must conform to this JSON Schema:\n" + _dumps(rf.schema)
    return text


def _tool_out(t: cn.Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": t.name}
    if t.description:
        out["description"] = t.description
    out["input_schema"] = t.parameters if t.parameters else {"type": "object", "properties": {}}
    if t.cache_control:
        out["cache_control"] = t.cache_control
    return out


def _choice_out(choice: cn.ToolChoice | None, parallel: bool | None) -> dict[str, Any] | None:
    if choice is None:
        out: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif choice.mode == "tool":
        out = {"type": "tool", "name": choice.name}
    else:
        out = {"type": {"auto": "auto", "required": "any", "none": "none"}[choice.mode]}
    if out and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


# --- responses ---------------------------------------------------------------

def usage_of(u: Any) -> cn.Usage:
    """Anthropic usage -> canonical (input_tokens there excludes cache reads and writes)."""
    u = u if isinstance(u, dict) else {}
    read, write = _count(u.get("cache_read_input_tokens")), _count(u.get("cache_creation_input_tokens"))
    details = u.get("output_tokens_details")
    thinking = _count(details.get("thinking_tokens")) if isinstance(details, dict) else 0
    return cn.Usage(input_tokens=_count(u.get("input_tokens")) + read + write,
                    output_tokens=_count(u.get("output_tokens")), cached_tokens=read,
                    reasoning_tokens=thinking, cache_write_tokens=write)


def usage_dict(u: cn.Usage) -> dict[str, Any]:
    read, write = u.cached_tokens, u.cache_write_tokens
    out: dict[str, Any] = {"input_tokens": max(0, u.input_tokens - read - write), "output_tokens": u.output_tokens,
                           "cache_creation_input_tokens": write, "cache_read_input_tokens": read}
    if u.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": u.reasoning_tokens}
    return out


def finish_of(stop_reason: Any) -> tuple[cn.FinishReason, str | None]:
    """Anthropic stop_reason -> (canonical finish, detail kept for the unusual reasons)."""
    if stop_reason is None:
        return "stop", None
    if not isinstance(stop_reason, str):
        return "stop", None
    return _STOP_IN.get(stop_reason, "stop"), None if stop_reason in _PLAIN_STOPS else stop_reason


def stop_reason_of(finish: cn.FinishReason, detail: str | None, has_tool_calls: bool) -> str:
    if detail and _STOP_IN.get(detail) == finish and detail not in _PLAIN_STOPS:
        return detail  # pause_turn, refusal, model_context_window_exceeded
    if finish == "stop" and has_tool_calls:
        return "tool_use"
    if finish == "tool_calls" and not has_tool_calls:
        return "end_turn"
    return _STOP_OUT.get(finish, "end_turn")


def message_id(canonical_id: str) -> str:
    if canonical_id.startswith("msg_"):
        return canonical_id
    return "msg_" + (canonical_id or secrets.token_hex(12))


def decode_response(body: dict[str, Any]) -> cn.Response:
    """An Anthropic Message -> canonical. Lenient: never raises; unknown blocks are skipped.

    An error body ({"type": "error"}) gives an empty response with finish "error"."""
    body = body if isinstance(body, dict) else {}
    blocks: list[cn.Block] = []
    for b in arr(body.get("content")):
        block = _response_block(b) if isinstance(b, dict) else None
        if block is not None:
            blocks.append(block)
    finish, detail = finish_of(body.get("stop_reason"))
    if body.get("type") == "error":
        err = obj(body.get("error"))
        finish, detail = "error", str(err.get("message") or err.get("type") or "error")
    rid, model = body.get("id"), body.get("model")
    return cn.Response(id=rid if isinstance(rid, str) and rid else message_id(""),
                       model=model if isinstance(model, str) else "", content=blocks, finish=finish,
                       usage=usage_of(body.get("usage")), created=int(time.time()), finish_detail=detail)


def _response_block(b: dict[str, Any]) -> cn.Block | None:
    kind = b.get("type")
    if kind == "text" and isinstance(b.get("text"), str):
        return cn.Text(b["text"])
    if kind == "thinking":
        text, sig = b.get("thinking"), b.get("signature")
        return cn.Thinking(text if isinstance(text, str) else "", sig if isinstance(sig, str) and sig else None)
    if kind == "redacted_thinking" and isinstance(b.get("data"), str):
        return cn.RedactedThinking(b["data"])
    if kind == "tool_use" and isinstance(b.get("id"), str) and isinstance(b.get("name"), str):
        args = b.get("input")
        return cn.ToolCall(b["id"], b["name"], _dumps(args if isinstance(args, dict) else {}))
    return None  # server tool blocks and anything newer


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        args = jsonio.loads(arguments or "{}")
    except ValueError:
        return {}  # the upstream produced broken JSON (often a call cut off by max_tokens)
    return args if isinstance(args, dict) else {"value": args}


def _content_out(b: cn.Block) -> dict[str, Any] | None:
    if isinstance(b, cn.Text):
        return {"type": "text", "text": b.text} if b.text else None
    if isinstance(b, cn.Thinking):
        return {"type": "thinking", "thinking": b.text, "signature": b.signature or ""}
    if isinstance(b, cn.RedactedThinking):
        return {"type": "redacted_thinking", "data": b.data}
    if isinstance(b, cn.ToolCall):
        return {"type": "tool_use", "id": b.id, "name": b.name, "input": _tool_input(b.arguments)}
    return None


def encode_response(r: cn.Response, model: str) -> dict[str, Any]:
    """Canonical -> Anthropic Message, carrying the client's model name."""
    content = [c for c in (_content_out(b) for b in r.content) if c is not None]
    has_calls = any(c["type"] == "tool_use" for c in content)
    return {"id": message_id(r.id), "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason_of(r.finish, r.finish_detail, has_calls),
            "stop_sequence": None, "usage": usage_dict(r.usage)}


# --- token counting and model lists ------------------------------------------

_COUNTED = ("model", "messages", "system", "tools", "tool_choice", "thinking")


def count_request(req: cn.Request) -> dict[str, Any]:
    """Canonical -> a POST /v1/messages/count_tokens body (the fields that endpoint takes).
    Tool results whose call is not in the request count as text: Gemini CLI counts a turn of
    tool results on its own, and the endpoint refuses a tool_result without its tool_use."""
    calls = {b.id for m in req.messages for b in m.content if isinstance(b, cn.ToolCall)}
    messages = [cn.Message(m.role, [c for b in m.content for c in _counted(b, calls)]) for m in req.messages]
    body = encode_request(dataclasses.replace(req, messages=messages))
    return {k: body[k] for k in _COUNTED if k in body}


def _counted(b: cn.Block, calls: set[str]) -> list[cn.Block]:
    if not isinstance(b, cn.ToolResult) or b.call_id in calls:
        return [b]
    return [cn.Text(cn.text_of(b.content) or "(tool result)"), *(c for c in b.content if isinstance(c, cn.Image))]


def count_of(body: Any) -> int:
    """{"input_tokens": n} -> n; anything else raises ValueError."""
    n = body.get("input_tokens") if isinstance(body, dict) else None
    if not isinstance(n, int) or isinstance(n, bool):
        raise ValueError("expected {\"input_tokens\": <int>}")
    return n


def model_entry(model: str) -> dict[str, Any]:
    return {"type": "model", "id": model, "display_name": model, "created_at": "1970-01-01T00:00:00Z"}


def model_list(models: list[str]) -> dict[str, Any]:
    """GET /v1/models in Anthropic's shape (one page holding everything)."""
    return {"data": [model_entry(m) for m in models], "has_more": False,
            "first_id": models[0] if models else None, "last_id": models[-1] if models else None}


# --- errors ------------------------------------------------------------------

def error_type(status: int) -> str:
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def decode_error(status: int, body: bytes) -> tuple[str, str | None]:
    """Anthropic error JSON -> (message, error type). Non-JSON bodies give (text, None)."""
    try:
        err = jsonio.loads(body).get("error")
    except (ValueError, UnicodeDecodeError, AttributeError):
        err = None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        kind = err.get("type")
        return err["message"], kind if isinstance(kind, str) else None
    return body[:300].decode("utf-8", "replace").strip(), None


# --- streams -----------------------------------------------------------------

class StreamDecoder(SSEStreamDecoder):
    """Anthropic SSE -> canonical stream events.

    Anthropic block indexes are mapped to canonical ones (server-tool blocks are
    skipped). Usage from message_start is reported at once (UsageUpdate), the
    final usage and Finish at message_stop; a stream that ends before
    message_stop ends with StreamError "stream_truncated"."""

    final_event = "message_stop"

    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self._index: dict[int, int] = {}  # Anthropic index -> canonical index
        self._kind: dict[int, str] = {}  # Anthropic index -> block type
        self._open: list[int] = []  # Anthropic indexes started and not stopped
        self._start_input: dict[int, str] = {}  # tool input given whole at block start
        self._had_json: set[int] = set()
        self._next = 0
        self._usage: dict[str, Any] = {}
        self._stop: Any = None

    def _event(self, data: str, name: str | None) -> list[cn.Event]:
        try:
            body = jsonio.loads(data)
        except ValueError:
            return self._malformed(data)
        if not isinstance(body, dict):
            return []
        kind = body.get("type") if isinstance(body.get("type"), str) else name
        if kind == "ping":
            return []
        if kind == "error":
            self.finished = True
            err = obj(body.get("error"))
            etype = string(err.get("type"), "upstream_error")
            message = string(err.get("message"), str(err or body))
            return self._close_all() + [cn.StreamError(message, etype, _ERROR_STATUS.get(etype, 502))]
        out: list[cn.Event] = []
        if kind == "message_start":
            msg = obj(body.get("message"))
            if self._started:
                return []
            self._started = True
            mid, model = msg.get("id"), msg.get("model")
            out.append(cn.MessageStart(mid if isinstance(mid, str) and mid else message_id(""),
                                       model if isinstance(model, str) else "", int(time.time())))
            if isinstance(msg.get("usage"), dict):
                self._merge_usage(msg["usage"])
                out.append(cn.UsageUpdate(usage_of(self._usage)))
            return out
        if not self._started:
            self._started = True
            out.append(cn.MessageStart(message_id(""), "", int(time.time())))
        index = body.get("index")
        if kind == "content_block_start" and _is_int(index):
            out += self._block_start(index, body.get("content_block"))
        elif kind == "content_block_delta" and _is_int(index) and index in self._open:
            out += self._delta(index, body.get("delta"))
        elif kind == "content_block_stop" and _is_int(index) and index in self._open:
            out += self._block_stop(index)
        elif kind == "message_delta":
            delta = obj(body.get("delta"))
            if delta.get("stop_reason") is not None:
                self._stop = delta["stop_reason"]
            if isinstance(body.get("usage"), dict):
                self._merge_usage(body["usage"])
        elif kind == "message_stop":
            self.finished = True
            finish, detail = finish_of(self._stop)
            out += self._close_all() + [cn.UsageUpdate(usage_of(self._usage)), cn.Finish(finish, detail)]
        return out

    def _merge_usage(self, usage: dict[str, Any]) -> None:
        self._usage.update({k: v for k, v in usage.items() if v is not None})  # cumulative counts

    def _block_start(self, index: int, cb: Any) -> list[cn.Event]:
        if index in self._index or not isinstance(cb, dict):
            return []
        kind = cb.get("type")
        text = cb.get("text") if kind == "text" else cb.get("thinking")
        text = text if isinstance(text, str) else ""
        block: cn.Text | cn.ToolCall | cn.Thinking | cn.RedactedThinking
        if kind == "text":
            block = cn.Text("")
        elif kind == "thinking":
            block = cn.Thinking("")
        elif kind == "redacted_thinking" and isinstance(cb.get("data"), str):
            block = cn.RedactedThinking(cb["data"])
        elif kind == "tool_use" and isinstance(cb.get("id"), str) and isinstance(cb.get("name"), str):
            block = cn.ToolCall(cb["id"], cb["name"], "", call_ids.signature_of(cb["id"]))
            if isinstance(cb.get("input"), dict) and cb["input"]:
                self._start_input[index] = _dumps(cb["input"])
        else:
            return []  # server_tool_use, web_search_tool_result, ...: not expressible
        c = self._index[index] = self._next
        self._next += 1
        self._kind[index] = kind
        self._open.append(index)
        out: list[cn.Event] = [cn.BlockStart(c, block)]
        if text and kind == "text":
            out.append(cn.TextDelta(c, text))
        elif text:
            out.append(cn.ThinkingDelta(c, text))
        if kind == "thinking" and isinstance(cb.get("signature"), str) and cb["signature"]:
            out.append(cn.SignatureDelta(c, cb["signature"]))
        return out

    def _delta(self, index: int, delta: Any) -> list[cn.Event]:
        if not isinstance(delta, dict):
            return []
        c, kind, dtype = self._index[index], self._kind[index], delta.get("type")
        if dtype == "text_delta" and kind == "text" and isinstance(delta.get("text"), str) and delta["text"]:
            return [cn.TextDelta(c, delta["text"])]
        if dtype == "thinking_delta" and kind == "thinking" and isinstance(delta.get("thinking"), str) \
                and delta["thinking"]:
            return [cn.ThinkingDelta(c, delta["thinking"])]
        if dtype == "signature_delta" and kind == "thinking" and isinstance(delta.get("signature"), str) \
                and delta["signature"]:
            return [cn.SignatureDelta(c, delta["signature"])]
        if dtype == "input_json_delta" and kind == "tool_use" and isinstance(delta.get("partial_json"), str) \
                and delta["partial_json"]:
            self._had_json.add(index)
            return [cn.ArgumentsDelta(c, delta["partial_json"])]
        return []  # citations_delta and anything newer

    def _block_stop(self, index: int) -> list[cn.Event]:
        self._open.remove(index)
        c = self._index[index]
        out: list[cn.Event] = []
        if index in self._start_input and index not in self._had_json:
            out.append(cn.ArgumentsDelta(c, self._start_input[index]))
        return out + [cn.BlockStop(c)]

    def _close_all(self) -> list[cn.Event]:
        out: list[cn.Event] = []
        for index in list(self._open):
            out += self._block_stop(index)
        return out


def _event_bytes(payload: dict[str, Any]) -> bytes:
    return encode(_dumps(payload), payload["type"])


class StreamEncoder:
    """Canonical stream events -> Anthropic Messages SSE bytes.

    The wire carries one block at a time: a block that starts while another is
    open is held (with its events) until the open one stops. Text and thinking
    blocks go on the wire at their first content, so no empty text block is
    ever sent. Deltas that do not fit their block's type are dropped."""

    def __init__(self, model: str):
        self.model = model
        self.id = message_id(secrets.token_hex(12))
        self._started = False  # message_start sent
        self._pending = False  # MessageStart seen, message_start not yet sent
        self._usage: cn.Usage | None = None
        self.closed = False
        self._next = 0  # next wire index
        self._cur: int | None = None  # canonical index owning the wire
        self._blocks: dict[int, cn.Text | cn.ToolCall | cn.Thinking | cn.RedactedThinking] = {}
        self._wire: dict[int, int] = {}  # canonical index -> wire index, once on the wire
        self._sig: dict[int, str] = {}  # pending signature per thinking block
        self._held: dict[int, list[cn.Event]] = {}
        self._done: set[int] = set()
        self._tool_used = False

    def encode(self, events: list[cn.Event]) -> bytes:
        out = b"".join(self._one(e) for e in events)
        if self._pending and not self._started and not self.closed:
            out += self._start()
        return out

    def _start(self) -> bytes:
        self._started, self._pending = True, False
        usage = usage_dict(self._usage) if self._usage else {"input_tokens": 0}
        usage["output_tokens"] = 0
        return _event_bytes({"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": usage}})

    def _one(self, e: cn.Event) -> bytes:
        if self.closed:
            return b""
        if isinstance(e, cn.MessageStart):
            if not self._started and not self._pending:
                self.id, self._pending = message_id(e.id), True
            return b""
        if isinstance(e, cn.UsageUpdate):
            self._usage = e.usage
            return b""
        if isinstance(e, cn.StreamError):
            self.closed = True
            return _event_bytes({"type": "error", "error": {"type": self._error_type(e), "message": e.message}})
        if isinstance(e, cn.Finish) and e.reason == "error":
            return self._one(cn.StreamError(f"The upstream stopped the response: {e.detail}.", "api_error"))
        out = b"" if self._started else self._start()
        if isinstance(e, cn.Finish):
            return out + self._finish(e)
        if isinstance(e, cn.BlockStart):
            return out + self._block_start(e)
        index = e.index
        if index in self._held:
            self._held[index].append(e)
            return out
        if index not in self._blocks and isinstance(e, (cn.TextDelta, cn.ThinkingDelta)):
            # a delta without a BlockStart: open the block it implies
            block = cn.Text("") if isinstance(e, cn.TextDelta) else cn.Thinking("")
            out += self._block_start(cn.BlockStart(index, block))
            return out + self._one(e)
        if index != self._cur:
            return out  # unknown, finished or (impossible) misrouted block
        if isinstance(e, cn.BlockStop):
            return out + self._stop_current()
        return out + self._delta(e)

    def _error_type(self, e: cn.StreamError) -> str:
        if e.code in _ERROR_STATUS:
            return e.code
        if e.status in (503, 529) or "overloaded" in e.code:
            return "overloaded_error"
        return "api_error"

    def _block_start(self, e: cn.BlockStart) -> bytes:
        if e.index in self._blocks:
            return b""  # a second start for the same block
        self._blocks[e.index] = e.block
        if self._cur is not None or self._held:
            self._held[e.index] = []
            return b""
        return self._open(e.index)

    def _open(self, index: int) -> bytes:
        """Make `index` the current block; blocks with content go on the wire now."""
        self._cur = index
        b = self._blocks[index]
        if isinstance(b, cn.ToolCall):
            self._tool_used = True
            out = self._wire_start(index, {"type": "tool_use", "id": b.id, "name": b.name, "input": {}})
            return out + (self._delta(cn.ArgumentsDelta(index, b.arguments)) if b.arguments else b"")
        if isinstance(b, cn.RedactedThinking):
            return self._wire_start(index, {"type": "redacted_thinking", "data": b.data})
        if isinstance(b, cn.Thinking):
            out = self._delta(cn.ThinkingDelta(index, b.text)) if b.text else b""
            return out + (self._delta(cn.SignatureDelta(index, b.signature)) if b.signature else b"")
        return self._delta(cn.TextDelta(index, b.text)) if b.text else b""

    def _wire_start(self, index: int, block: dict[str, Any]) -> bytes:
        self._wire[index] = self._next
        self._next += 1
        return _event_bytes({"type": "content_block_start", "index": self._wire[index], "content_block": block})

    def _delta(self, e: cn.Event) -> bytes:
        index = e.index  # type: ignore[union-attr]
        b = self._blocks[index]
        if isinstance(e, cn.TextDelta) and isinstance(b, cn.Text) and e.text:
            delta: dict[str, Any] = {"type": "text_delta", "text": e.text}
        elif isinstance(e, cn.ThinkingDelta) and isinstance(b, cn.Thinking) and e.text:
            delta = {"type": "thinking_delta", "thinking": e.text}
        elif isinstance(e, cn.ArgumentsDelta) and isinstance(b, cn.ToolCall) and e.json:
            delta = {"type": "input_json_delta", "partial_json": e.json}
        elif isinstance(e, cn.SignatureDelta) and isinstance(b, cn.Thinking) and e.signature:
            self._sig[index] = e.signature  # sent once, just before the block's stop
            return self._ensure_wire(index, b)
        else:
            return b""
        out = self._ensure_wire(index, b)
        return out + _event_bytes({"type": "content_block_delta", "index": self._wire[index], "delta": delta})

    def _ensure_wire(self, index: int, b: Any) -> bytes:
        if index in self._wire:
            return b""
        if isinstance(b, cn.Thinking):
            return self._wire_start(index, {"type": "thinking", "thinking": "", "signature": ""})
        return self._wire_start(index, {"type": "text", "text": ""})

    def _stop_current(self) -> bytes:
        index = self._cur
        assert index is not None
        out = b""
        if index in self._wire:
            wire = self._wire[index]
            if index in self._sig:
                out += _event_bytes({"type": "content_block_delta", "index": wire,
                                     "delta": {"type": "signature_delta", "signature": self._sig.pop(index)}})
            out += _event_bytes({"type": "content_block_stop", "index": wire})
        self._done.add(index)
        self._cur = None
        while self._cur is None and self._held:  # replay the next held block
            nxt = next(iter(self._held))
            events = self._held.pop(nxt)
            out += self._open(nxt)
            for ev in events:
                out += self._one(ev)
        return out

    def _finish(self, e: cn.Finish) -> bytes:
        out = b""
        while self._cur is not None:
            out += self._stop_current()
        self.closed = True
        usage = usage_dict(self._usage) if self._usage else {"output_tokens": 0}
        return out + _event_bytes({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason_of(e.reason, e.detail, self._tool_used), "stop_sequence": None},
            "usage": usage,
        }) + _event_bytes({"type": "message_stop"})


class StreamRelabel(SSERelabel):
    """Anthropic SSE passed through to an Anthropic client; only message_start's model changes."""

    final_event = "message_stop"

    def _watch(self, name: str | None, data: dict) -> bool:
        kind = data.get("type")
        if kind == "message_stop":
            self.finished = True
        elif kind == "error":
            self.errored = True
        elif kind == "message_start" and isinstance(data.get("message"), dict):
            return self._rename(data["message"], "model")
        return False

    def _error(self, message: str, code: str) -> bytes:
        kind = code if code in _ERROR_STATUS else "overloaded_error" if "overloaded" in code else "api_error"
        return _event_bytes({"type": "error", "error": {"type": kind, "message": message}})
