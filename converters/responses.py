"""OpenAI Responses API wire format (POST /v1/responses; what Codex CLI speaks). Pure, no I/O.

decode_request / encode_response / StreamEncoder face a Responses client;
encode_request / decode_response / StreamDecoder face a Responses upstream.

Choices the format forces:
- The gateway stores nothing: `previous_response_id`, `conversation`, `prompt` templates,
  `item_reference` items and `background` are refused with a 400 naming the parameter; the
  client must send the whole conversation in `input` (Codex does, with store: false).
  `store`, `metadata`, `user`, `truncation`, `include`, ... are accepted and dropped
  (listed in Request.dropped); upstream requests always carry store: false. temperature and
  top_p are dropped (and named) for OpenAI reasoning models that refuse them
  (thinking.openai_refuses_sampling).
- Function and custom tools, and namespace tools (Codex's multi_agent_v1: function/custom tools
  grouped under a name). Other providers see each namespace member as a function named
  "<namespace>__<name>" (Codex's own flat spelling, made fit for 64-char [A-Za-z0-9_-] names);
  calls come back as items with `name` and `namespace` split again, as the Responses API and
  Codex have them. Hosted tools (web_search, file_search, code_interpreter, image_generation,
  computer_use_preview, mcp, local_shell, ...) become cn.HostedTool: mapped where the target has
  an equivalent, else dropped and named (Request.dropped_tools); their past call items in the
  input are skipped. A custom tool (free-form input, e.g. Codex's
  apply_patch) goes to other providers as a function taking {"input": string}, its grammar
  told in that parameter's description; its calls come back as custom_tool_call items with
  the unwrapped input, streamed as one custom_tool_call_input delta when the call is complete
  (the upstream's JSON fragments cannot be unwrapped before). custom_tool_call(_output)
  input items become tool calls and results.
- Reasoning items: the summary parts become one Thinking block (parts joined with a blank
  line). encrypted_content is kept in Thinking.encrypted_content and only ever sent back to a
  Responses upstream. A signature from another provider (Anthropic/Gemini thinking) travels to
  the client inside encrypted_content as "llmgate.sig:<signature>" (redacted thinking as
  "llmgate.redacted:<data>") and comes back out of it, so a Responses client such as Codex
  round-trips it without knowing. Thinking without encrypted_content is not replayed upstream
  (OpenAI rejects reasoning items it cannot verify); reasoning item ids are not sent either
  (with store: false they name nothing).
- reasoning.summary only switches summaries on ("auto"/"concise"/"detailed") or off; its
  level is not kept. Upstream requests ask for "auto".
- Function tools without `strict` are sent with strict: false (the Responses API defaults to
  true, which rejects most real-world schemas).
- Function call outputs carry no error flag in this format: is_error is lost upstream.
- Errors inside a stream are one `response.failed` event (Codex reads only that one; the
  `error` event is ignored by it). error.code is one the openai SDK knows: rate limits ->
  "rate_limit_exceeded" (Codex retries after the delay in the message), a code the SDK lists
  (or "context_length_exceeded", which Codex handles) passes through, anything else ->
  "server_error" (Codex retries). Nothing follows it.
- A response is never empty (peer gateways answered 200 with no body): with no text and no
  call, the output still holds one assistant message with empty text. Usage always carries
  input/output token details, reasoning tokens included. In streams, message and reasoning
  items are announced at their first content, so an upstream's empty text block is no item.
- Responses that end with finish "error" (e.g. Gemini MALFORMED_FUNCTION_CALL) are status
  "failed" with error.code "server_error"; length / content_filter are "incomplete" with
  incomplete_details.reason max_output_tokens / content_filter.
- Stream item ids are derived from the response id ("msg_<id>_<n>", "rs_...", "fc_..."): stable
  for any byte chunking, unique as long as the upstream's response ids are.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from converters import call_ids, jsonio
from converters import canonical as cn
from converters.pipeline import SSERelabel, SSEStreamDecoder
from converters.shapes import obj, string
from converters.thinking import openai_refuses_sampling

SIG_PREFIX = "llmgate.sig:"
REDACTED_PREFIX = "llmgate.redacted:"

_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[^,]*)?;base64,(.*)$", re.S)
_DROPPED = ("store", "metadata", "user", "truncation", "include", "service_tier", "prompt_cache_key",
            "prompt_cache_retention", "safety_identifier", "max_tool_calls", "top_logprobs", "stream_options",
            "context_management", "client_metadata")
_STATELESS = {
    "previous_response_id": "previous_response_id is not supported: send the full conversation in input",
    "conversation": "conversation is not supported: this gateway stores no conversations; send the full "
                    "conversation in input",
    "prompt": "prompt (stored prompt templates) is not supported: send instructions and input instead",
}
_EFFORTS = (("minimal", 0), ("low", 1024), ("medium", 8192))  # budget_tokens upper bounds -> effort
# error.code values the openai SDK's ResponseError accepts (+ one Codex handles specially)
_SDK_ERROR_CODES = {
    "server_error", "rate_limit_exceeded", "invalid_prompt", "data_residency_mismatch", "bio_policy",
    "misalignment_policy_violation", "vector_store_timeout", "invalid_image", "invalid_image_format",
    "invalid_base64_image", "invalid_image_url", "image_too_large", "image_too_small", "image_parse_error",
    "image_content_policy_violation", "invalid_image_mode", "image_file_too_large",
    "unsupported_image_media_type", "empty_image_file", "failed_to_download_image", "image_file_not_found",
    "context_length_exceeded",
}
_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
                404: "invalid_request_error", 408: "timeout_error", 413: "invalid_request_error",
                429: "rate_limit_error"}  # as llmgate.errors renders OpenAI errors


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI error JSON, as /v1/responses answers non-2xx statuses."""
    kind = _ERROR_TYPES.get(status) or ("upstream_error" if status in (502, 504) else
                                        "server_error" if status >= 500 else "invalid_request_error")
    if code is None:
        code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# --- Responses request -> canonical ------------------------------------------

def decode_request(data: Any) -> cn.Request:
    """A POST /v1/responses body -> canonical. Anything malformed raises cn.ConversionError."""
    if not isinstance(data, dict):
        raise cn.ConversionError("The request body must be a JSON object.")
    for key, message in _STATELESS.items():
        if data.get(key) not in (None, "", {}):
            raise cn.ConversionError(message, key)
    if data.get("background") is True:
        raise cn.ConversionError("background responses are not supported: this gateway stores no responses.",
                                 "background")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise cn.ConversionError("Missing required parameter: 'model'.", "model")

    system: list[cn.Text] = []
    instructions = data.get("instructions")
    if isinstance(instructions, str):
        if instructions:
            system.append(cn.Text(instructions))
    elif instructions is not None:
        raise cn.ConversionError("instructions must be a string.", "instructions")

    messages: list[cn.Message] = []
    raw = data.get("input")
    if isinstance(raw, str):
        items: list[Any] = [{"type": "message", "role": "user", "content": raw}]
    elif isinstance(raw, list):
        items = raw
    elif raw is None:
        raise cn.ConversionError("Missing required parameter: 'input'.", "input")
    else:
        raise cn.ConversionError("input must be a string or an array of items.", "input")
    calls: dict[str, str] = {}  # call_id -> function name, to name tool results
    for i, item in enumerate(items):
        _input_item(item, f"input.{i}", system, messages, calls)

    req = cn.Request(model=model, messages=messages, system=system)
    req.stream = _opt(data, "stream", bool) or False
    req.include_usage = True  # Responses streams always end with usage
    req.max_tokens = _opt(data, "max_output_tokens", int)
    req.temperature = _opt(data, "temperature", float)
    req.top_p = _opt(data, "top_p", float)
    req.parallel_tool_calls = _opt(data, "parallel_tool_calls", bool)
    _tools(_opt(data, "tools", list) or [], req)
    req.tool_choice = _tool_choice(data.get("tool_choice"))
    text = _opt(data, "text", dict) or {}
    req.response_format = _text_format(text.get("format"))
    req.reasoning = _reasoning(data.get("reasoning"))
    user = data.get("user")
    req.user = user if isinstance(user, str) else None
    req.dropped = sorted(k for k in _DROPPED if data.get(k) is not None)
    if text.get("verbosity") is not None:
        req.dropped.append("text.verbosity")
    return req


_KINDS = {bool: "a boolean", int: "an integer", float: "a number", list: "an array", dict: "an object"}


def _opt(data: dict, key: str, kind: type) -> Any:
    """data[key] if absent/null or of the kind (an int is a number too; a bool is never one)."""
    value = data.get(key)
    if value is None:
        return None
    accepted = (int, float) if kind is float else kind
    if isinstance(value, accepted) and not (kind is not bool and isinstance(value, bool)):
        return value
    raise cn.ConversionError(f"Invalid value for '{key}': expected {_KINDS[kind]}.", key)


def _str(d: dict, key: str, where: str) -> str:
    value = d.get(key)
    if not isinstance(value, str):
        raise cn.ConversionError(f"Invalid or missing '{key}': expected a string.", f"{where}.{key}")
    return value


def _append(messages: list[cn.Message], role: str, blocks: list[cn.Block]) -> None:
    if not blocks:
        return
    if messages and messages[-1].role == role:
        messages[-1].content.extend(blocks)
    else:
        messages.append(cn.Message(role, list(blocks)))  # type: ignore[arg-type]


def _input_item(item: Any, where: str, system: list[cn.Text], messages: list[cn.Message],
                calls: dict[str, str]) -> None:
    if not isinstance(item, dict):
        raise cn.ConversionError("Each input item must be an object.", where)
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        role = item.get("role")
        blocks = _content(item.get("content"), where)
        if role in ("system", "developer"):
            system.extend(b for b in blocks if isinstance(b, cn.Text))
        elif role in ("user", "assistant"):
            _append(messages, role, blocks)
        else:
            raise cn.ConversionError(f"Unsupported message role {role!r}.", f"{where}.role")
    elif kind == "function_call":
        call_id = _str(item, "call_id", where)
        name = _member_name(item, where)
        arguments = item.get("arguments")
        if isinstance(arguments, dict):  # lenient: an object instead of its JSON text
            arguments = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
        elif arguments is not None and not isinstance(arguments, str):
            raise cn.ConversionError("function_call arguments must be a JSON string.", f"{where}.arguments")
        calls[call_id] = name
        call = cn.ToolCall(call_id, name, arguments or "{}", signature=call_ids.signature_of(call_id))
        _append(messages, "assistant", [call])
    elif kind == "custom_tool_call":
        call_id = _str(item, "call_id", where)
        name = _member_name(item, where)
        calls[call_id] = name
        raw = item.get("input")
        if not isinstance(raw, str):
            raise cn.ConversionError("custom_tool_call input must be a string.", f"{where}.input")
        arguments = json.dumps({"input": raw}, ensure_ascii=False, separators=(",", ":"))
        _append(messages, "assistant", [cn.ToolCall(call_id, name, arguments)])
    elif kind in ("function_call_output", "custom_tool_call_output"):
        call_id = _str(item, "call_id", where)
        output = item.get("output")
        if isinstance(output, str):
            content: list[cn.Text | cn.Image] = [cn.Text(output)] if output else []
        elif isinstance(output, list):
            content = [b for b in _content(output, where, "output") if isinstance(b, (cn.Text, cn.Image))]
        else:
            raise cn.ConversionError(f"{kind} output must be a string or an array of parts.",
                                     f"{where}.output")
        _append(messages, "user", [cn.ToolResult(call_id, content, name=calls.get(call_id))])
    elif kind == "reasoning":
        _append(messages, "assistant", [_reasoning_block(item, where)])
    elif isinstance(kind, str) and kind.endswith(("_call", "_call_output")):
        pass  # a hosted tool's past call (web_search_call, ...): the provider's own, nothing to replay
    elif kind == "item_reference":
        raise cn.ConversionError("item_reference is not supported: this gateway stores no items; send the "
                                 "items themselves in input.", f"{where}.type")
    else:
        raise cn.ConversionError(f"Input item type {kind!r} is not supported by this gateway (only messages, "
                                 "function and custom tool calls, their outputs, and reasoning items).",
                                 f"{where}.type")


def _reasoning_block(item: dict, where: str) -> cn.Thinking | cn.RedactedThinking:
    texts: list[str] = []
    summary = item.get("summary")
    if summary is not None and not isinstance(summary, list):
        raise cn.ConversionError("reasoning summary must be an array.", f"{where}.summary")
    for k, part in enumerate(summary or ()):
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise cn.ConversionError("Each summary part needs a text.", f"{where}.summary.{k}")
        texts.append(part["text"])
    if not texts and isinstance(item.get("content"), list):  # raw reasoning_text (open-weight models)
        texts = [p["text"] for p in item["content"] if isinstance(p, dict) and isinstance(p.get("text"), str)]
    encrypted = item.get("encrypted_content")
    if encrypted is not None and not isinstance(encrypted, str):
        raise cn.ConversionError("encrypted_content must be a string.", f"{where}.encrypted_content")
    text = "\n\n".join(texts)
    if encrypted and encrypted.startswith(REDACTED_PREFIX):
        return cn.RedactedThinking(encrypted[len(REDACTED_PREFIX):])
    if encrypted and encrypted.startswith(SIG_PREFIX):
        return cn.Thinking(text, signature=encrypted[len(SIG_PREFIX):])
    return cn.Thinking(text, encrypted_content=encrypted or None)


def _content(content: Any, where: str, key: str = "content") -> list[cn.Block]:
    if content is None:
        return []
    if isinstance(content, str):
        return [cn.Text(content)] if content else []
    if not isinstance(content, list):
        raise cn.ConversionError(f"{key} must be a string or an array of parts.", f"{where}.{key}")
    out: list[cn.Block] = []
    for k, part in enumerate(content):
        at = f"{where}.{key}.{k}"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            out.append(cn.Text(_str(part, "text", at)))
        elif kind == "refusal":
            out.append(cn.Text(_str(part, "refusal", at)))
        elif kind == "input_image":
            url = part.get("image_url")
            if isinstance(url, dict):  # tolerate the chat shape {"url": ...}
                url = url.get("url")
            if not isinstance(url, str) or not url:
                raise cn.ConversionError("input_image needs an image_url (file_id images are not supported: "
                                         "this gateway stores no files).", f"{at}.image_url")
            m = _DATA_URL.match(url)
            out.append(cn.Image(m.group(1) or "image/png", m.group(3)) if m else cn.Image(url=url))
        else:
            raise cn.ConversionError(f"Content part type {kind!r} is not supported by this gateway.", f"{at}.type")
    return out


def _freeform_tool(t: dict, where: str) -> cn.Tool:
    """A custom tool as a function taking {"input": string}; its format told in the description."""
    name = _str(t, "name", where)
    description = t.get("description") if isinstance(t.get("description"), str) else ""
    fmt = obj(t.get("format"))
    about = "The raw input for the tool, as free-form text (not JSON)."
    if fmt.get("type") == "grammar" and isinstance(fmt.get("definition"), str):
        about = (f"The raw input for the tool. It must match this {fmt.get('syntax') or 'lark'} grammar:\n"
                 + fmt["definition"])
    params = {"type": "object", "properties": {"input": {"type": "string", "description": about}},
              "required": ["input"], "additionalProperties": False}
    return cn.Tool(name, description=description or None, parameters=params, strict=False)


def freeform_input(arguments: str) -> str:
    """A freeform tool's call arguments ({"input": "..."}) -> the raw input its client expects."""
    try:
        value = jsonio.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get("input"), str):
        return value["input"]
    return arguments


_NAME_LIMIT = 64  # function names: OpenAI, Anthropic and Gemini all take 64 chars of [A-Za-z0-9_-]
_NOT_NAME = re.compile(r"[^A-Za-z0-9_-]")
_WEB_SEARCH = ("web_search", "web_search_preview")  # and dated spellings: web_search_2025_08_26, ...
_HOSTED_CHOICES = (*_WEB_SEARCH, "file_search", "code_interpreter", "image_generation", "computer_use_preview",
                   "computer_use", "mcp", "local_shell", "shell", "web_search_preview_2025_03_11")


def flat_name(namespace: str, name: str) -> str:
    """A namespace member's function name for other providers: Codex's "<namespace>__<name>",
    with other characters replaced and, past the limit, cut and made unique by a hash suffix."""
    flat = _NOT_NAME.sub("_", f"{namespace.rstrip('_')}__{name.lstrip('_')}")
    if len(flat) <= _NAME_LIMIT:
        return flat
    return f"{flat[:_NAME_LIMIT - 9]}_{hashlib.sha256(flat.encode()).hexdigest()[:8]}"


def _member_name(item: dict, where: str) -> str:
    """A call item's tool name, flattened when it names a namespace."""
    name = _str(item, "name", where)
    namespace = item.get("namespace")
    return flat_name(namespace, name) if isinstance(namespace, str) and namespace else name


def _tools(tools: list, req: cn.Request) -> None:
    for i, t in enumerate(tools):
        kind = t.get("type") if isinstance(t, dict) else None
        if kind == "namespace":
            _namespace(t, i, req)
        elif kind in ("function", "custom"):
            req.tools.append(_tool(t, f"tools.{i}"))
            if kind == "custom":
                req.freeform_tools.append(req.tools[-1].name)
        elif isinstance(kind, str) and kind:
            web = kind in _WEB_SEARCH or kind.startswith(tuple(k + "_2" for k in _WEB_SEARCH))
            config = {k: v for k, v in t.items() if k != "type"}
            req.hosted_tools.append(cn.HostedTool("web_search" if web else kind, config))
        else:
            raise cn.ConversionError("Each tool needs a string 'type'.", f"tools.{i}.type")


def _namespace(t: dict, i: int, req: cn.Request) -> None:
    namespace = _str(t, "name", f"tools.{i}")
    members = t.get("tools")
    if not isinstance(members, list):
        raise cn.ConversionError("A namespace tool's 'tools' must be an array.", f"tools.{i}.tools")
    about = t.get("description") if isinstance(t.get("description"), str) else ""
    for j, m in enumerate(members):
        where = f"tools.{i}.tools.{j}"
        if not isinstance(m, dict) or m.get("type") not in ("function", "custom"):
            raise cn.ConversionError("Namespace members must be function or custom tools.", f"{where}.type")
        tool = _tool(m, where)
        flat = flat_name(namespace, tool.name)
        req.namespaced[flat] = (namespace, tool.name)
        tool.name = flat
        if about:  # the namespace's description is what groups its members for the model
            tool.description = f"[{namespace}: {about}] {tool.description or ''}".strip()
        req.tools.append(tool)
        if m["type"] == "custom":
            req.freeform_tools.append(flat)


def _tool(t: dict, where: str) -> cn.Tool:
    if t.get("type") == "custom":
        return _freeform_tool(t, where)
    name = _str(t, "name", where)
    description = t.get("description")
    if description is not None and not isinstance(description, str):
        raise cn.ConversionError("Tool description must be a string.", f"{where}.description")
    params = t.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise cn.ConversionError("Tool parameters must be a JSON Schema object.", f"{where}.parameters")
    strict = t.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise cn.ConversionError("Tool strict must be a boolean.", f"{where}.strict")
    return cn.Tool(name, description=description, parameters=params, strict=strict)


def _tool_choice(choice: Any) -> cn.ToolChoice | None:
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        return cn.ToolChoice(choice)
    if isinstance(choice, dict) and choice.get("type") in ("function", "custom") \
            and isinstance(choice.get("name"), str):
        return cn.ToolChoice("tool", _member_name(choice, "tool_choice"))
    if isinstance(choice, dict) and isinstance(choice.get("type"), str) and choice["type"] in _HOSTED_CHOICES:
        return None  # a hosted tool forced: the provider may not have it, so the model chooses
    raise cn.ConversionError("tool_choice must be auto, none, required or {type: function, name}.", "tool_choice")


def _text_format(fmt: Any) -> cn.ResponseFormat | None:
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("text", "json_object"):
        return cn.ResponseFormat(kind)
    if kind == "json_schema":
        schema, name, strict = fmt.get("schema"), fmt.get("name"), fmt.get("strict")
        if not isinstance(schema, dict):
            raise cn.ConversionError("text.format.schema must be a JSON Schema object.", "text.format.schema")
        return cn.ResponseFormat("json_schema", schema, name if isinstance(name, str) else None,
                                 strict if isinstance(strict, bool) else None)
    raise cn.ConversionError("text.format.type must be text, json_object or json_schema.", "text.format")


def _reasoning(r: Any) -> cn.Reasoning | None:
    if r is None:
        return None
    if not isinstance(r, dict):
        raise cn.ConversionError("reasoning must be an object.", "reasoning")
    effort, summary = r.get("effort"), r.get("summary", r.get("generate_summary"))
    if effort is not None and not isinstance(effort, str):
        raise cn.ConversionError("reasoning.effort must be a string.", "reasoning.effort")
    if summary is not None and not isinstance(summary, str):
        raise cn.ConversionError("reasoning.summary must be a string.", "reasoning.summary")
    if effort is None and summary is None:
        return None
    return cn.Reasoning(effort=effort, include_thoughts=summary not in (None, "none"))


# --- canonical -> Responses request (for a Responses upstream) ----------------

def encode_request(req: cn.Request) -> dict[str, Any]:
    items: list[dict[str, Any]] = [_message("developer", [t]) for t in req.system[1:]]
    for m in req.messages:
        items += _items(m)
    body: dict[str, Any] = {"model": req.model}
    if req.system:
        body["instructions"] = req.system[0].text
    body["input"] = items
    tools = [_tool_param(t) for t in req.tools] + [{"type": "web_search"} for _ in cn.hosted(req, ("web_search",))]
    if tools:
        body["tools"] = tools
    if req.tool_choice:
        c = req.tool_choice
        body["tool_choice"] = {"type": "function", "name": c.name} if c.mode == "tool" else c.mode
    if req.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.max_tokens is not None:
        body["max_output_tokens"] = req.max_tokens
    refused = openai_refuses_sampling(req.model, req.reasoning.effort if req.reasoning else None)
    for name in ("temperature", "top_p"):
        if getattr(req, name) is not None:
            if refused:
                req.dropped.append(name)
            else:
                body[name] = getattr(req, name)
    rf = req.response_format
    if rf:
        fmt: dict[str, Any] = {"type": rf.type}
        if rf.type == "json_schema":
            fmt.update(name=rf.name or "response", schema=rf.schema or {"type": "object"})
            if rf.strict is not None:
                fmt["strict"] = rf.strict
        body["text"] = {"format": fmt}
    if req.reasoning:
        r = req.reasoning
        effort = r.effort or _effort_of(r.budget_tokens)
        reasoning: dict[str, Any] = {}
        if effort:
            reasoning["effort"] = effort
        if r.include_thoughts:
            reasoning["summary"] = "auto"
        body["reasoning"] = reasoning
        body["include"] = ["reasoning.encrypted_content"]  # store is false: the blob is the only memory
    body["store"] = False
    body["stream"] = req.stream
    for name in ("top_k", "seed", "presence_penalty", "frequency_penalty"):
        if getattr(req, name) is not None and name not in req.dropped:
            req.dropped.append(name)
    if req.stop and "stop" not in req.dropped:
        req.dropped.append("stop")
    return body


def _effort_of(budget: int | None) -> str | None:
    if budget is None:
        return None
    for effort, bound in _EFFORTS:
        if budget <= bound:
            return effort
    return "high"


def _tool_param(t: cn.Tool) -> dict[str, Any]:
    d: dict[str, Any] = {"type": "function", "name": t.name}
    if t.description:
        d["description"] = t.description
    d["parameters"] = t.parameters if t.parameters is not None else {"type": "object", "properties": {}}
    d["strict"] = bool(t.strict)
    return d


def _image_url(img: cn.Image) -> str:
    if img.data is not None:
        return f"data:{img.media_type or 'image/png'};base64,{img.data}"
    return img.url or ""


def _message(role: str, blocks: list[cn.Text | cn.Image]) -> dict[str, Any]:
    if role == "assistant":
        parts = [{"type": "output_text", "text": b.text, "annotations": []} for b in blocks if isinstance(b, cn.Text)]
    else:
        parts = [{"type": "input_text", "text": b.text} if isinstance(b, cn.Text)
                 else {"type": "input_image", "image_url": _image_url(b), "detail": "auto"} for b in blocks]
    return {"type": "message", "role": role, "content": parts}


def _items(m: cn.Message) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    pending: list[cn.Text | cn.Image] = []

    def flush() -> None:
        if pending:
            out.append(_message(m.role, pending[:]))
            pending.clear()

    for b in m.content:
        if isinstance(b, (cn.Text, cn.Image)):
            if not (m.role == "assistant" and isinstance(b, cn.Image)):
                pending.append(b)
        elif isinstance(b, cn.ToolCall):
            flush()
            out.append({"type": "function_call", "call_id": b.id, "name": b.name, "arguments": b.arguments or "{}"})
        elif isinstance(b, cn.ToolResult):
            flush()
            if all(isinstance(c, cn.Text) for c in b.content):
                output: Any = cn.text_of(b.content)
            else:
                output = [{"type": "input_text", "text": c.text} if isinstance(c, cn.Text)
                          else {"type": "input_image", "image_url": _image_url(c), "detail": "auto"}
                          for c in b.content]
            out.append({"type": "function_call_output", "call_id": b.call_id, "output": output})
        elif isinstance(b, cn.Thinking) and b.encrypted_content:
            flush()
            out.append(_reasoning_param(b.text, b.encrypted_content))
        # thinking without encrypted_content (other providers'), redacted thinking: not replayed
    flush()
    return out


def _reasoning_param(text: str, encrypted: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "reasoning", "summary": [{"type": "summary_text", "text": text}] if text else []}
    if encrypted:
        item["encrypted_content"] = encrypted
    return item


# --- canonical -> Responses response (to a client) ---------------------------

def response_id(upstream_id: str) -> str:
    return upstream_id if upstream_id.startswith("resp_") else f"resp_{upstream_id}"


def _item_id(prefix: str, rid: str, n: int) -> str:
    return f"{prefix}_{rid.removeprefix('resp_')}_{n}"


def usage_dict(u: cn.Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens,
                                 "cache_write_tokens": getattr(u, "cache_write_tokens", 0)},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens,
    }


def _blob(b: cn.Thinking | cn.RedactedThinking) -> str | None:
    """What a client gets in encrypted_content for a thinking block."""
    if isinstance(b, cn.RedactedThinking):
        return REDACTED_PREFIX + b.data
    if b.encrypted_content:
        return b.encrypted_content
    return SIG_PREFIX + b.signature if b.signature else None


def _text_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status,
            "content": [_output_text(text)]}


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _reasoning_item(item_id: str, text: str, blob: str | None, status: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"id": item_id, "type": "reasoning",
                            "summary": [{"type": "summary_text", "text": text}] if text else []}
    if blob:
        item["encrypted_content"] = blob
    if status:
        item["status"] = status
    return item


def _call_item(item_id: str, call: cn.ToolCall, arguments: str, status: str,
               freeform: bool = False, namespaced: Mapping[str, tuple[str, str]] = {}) -> dict[str, Any]:
    """A function_call (or custom_tool_call) item; a namespace member's call named as
    {"name": member, "namespace": namespace}, as the Responses API sends it."""
    item: dict[str, Any] = {"id": item_id, "type": "custom_tool_call" if freeform else "function_call",
                            "call_id": call.id, "name": call.name}
    if call.name in namespaced:
        item["namespace"], item["name"] = namespaced[call.name]
    if freeform:
        item["input"] = freeform_input(arguments) if arguments else ""
    else:
        item["arguments"] = arguments
    item["status"] = status
    return item


def _ending(finish: cn.FinishReason, detail: str | None) -> tuple[str, dict | None, dict | None]:
    """(status, incomplete_details, error) for a finish reason."""
    if finish == "length":
        return "incomplete", {"reason": "max_output_tokens"}, None
    if finish == "content_filter":
        return "incomplete", {"reason": "content_filter"}, None
    if finish == "error":
        return "failed", None, {"code": "server_error",
                                "message": f"The upstream stopped the response: {detail or 'unknown reason'}."}
    return "completed", None, None


def response_object(rid: str, model: str, created: float, status: str, output: list[dict[str, Any]],
                    usage: cn.Usage | None, incomplete: dict | None = None, error: dict | None = None) -> dict:
    """A Response object with every field the openai SDK requires (echo fields at their defaults)."""
    return {
        "id": rid, "object": "response", "created_at": created, "status": status, "background": False,
        "error": error, "incomplete_details": incomplete, "instructions": None, "max_output_tokens": None,
        "metadata": {}, "model": model, "output": output, "parallel_tool_calls": True,
        "previous_response_id": None, "reasoning": {"effort": None, "summary": None}, "store": False,
        "temperature": None, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
        "top_p": None, "truncation": "disabled", "usage": usage_dict(usage) if usage else None, "user": None,
    }


def encode_response(r: cn.Response, model: str, freeform: Collection[str] = (),
                    namespaced: Mapping[str, tuple[str, str]] = {}) -> dict[str, Any]:
    """Canonical -> a Response object carrying the client's model name. Never empty.
    Calls of the `freeform` tools are custom_tool_call items."""
    rid = response_id(r.id)
    status, incomplete, error = _ending(r.finish, r.finish_detail)
    item_status = "incomplete" if status == "incomplete" else "completed"
    output: list[dict[str, Any]] = []
    answered = False
    for b in r.content:
        n = len(output)
        if isinstance(b, cn.Text):
            output.append(_text_item(_item_id("msg", rid, n), b.text, item_status))
            answered = True
        elif isinstance(b, (cn.Thinking, cn.RedactedThinking)):
            output.append(_reasoning_item(_item_id("rs", rid, n), getattr(b, "text", ""), _blob(b)))
        elif isinstance(b, cn.ToolCall):
            output.append(_call_item(_item_id("fc", rid, n), b, b.arguments, "completed", b.name in freeform,
                                     namespaced))
            answered = True
    if not answered:
        output.append(_text_item(_item_id("msg", rid, len(output)), "", item_status))
    return response_object(rid, model, r.created or int(time.time()), status, output, r.usage, incomplete, error)


# --- Responses response -> canonical (from an upstream) ----------------------

def _int(x: Any) -> int:
    return x if isinstance(x, int) and not isinstance(x, bool) else 0


def _ts(x: Any) -> int:
    """A created_at timestamp; now if absent or absurd."""
    if isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < 1e11:
        return int(x)
    return int(time.time())


def usage_of(u: Any) -> cn.Usage:
    if not isinstance(u, dict):
        return cn.Usage()
    inp = obj(u.get("input_tokens_details"))
    out = obj(u.get("output_tokens_details"))
    usage = cn.Usage(input_tokens=_int(u.get("input_tokens")), output_tokens=_int(u.get("output_tokens")),
                     cached_tokens=_int(inp.get("cached_tokens")), reasoning_tokens=_int(out.get("reasoning_tokens")))
    if hasattr(usage, "cache_write_tokens"):
        usage.cache_write_tokens = _int(inp.get("cache_write_tokens"))
    return usage


def _list(x: Any) -> list:
    return x if isinstance(x, list) else []


def _texts(parts: Any, *keys: str) -> list[str]:
    out = []
    for p in _list(parts):
        if isinstance(p, dict):
            for k in keys:
                if isinstance(p.get(k), str):
                    out.append(p[k])
                    break
    return out


def _message_text(item: dict) -> str:
    return "".join(_texts([p for p in _list(item.get("content")) if isinstance(p, dict)
                           and p.get("type") in ("output_text", "refusal")], "text", "refusal"))


def _summary_text(item: dict) -> str:
    return "\n\n".join(_texts(item.get("summary"), "text") or _texts(item.get("content"), "text"))


def _finish_of(status: Any, incomplete: Any, has_calls: bool) -> tuple[cn.FinishReason, str | None]:
    if status == "incomplete":
        reason = incomplete.get("reason") if isinstance(incomplete, dict) else None
        return ("content_filter" if reason == "content_filter" else "length"), reason
    if status in (None, "completed"):
        return ("tool_calls" if has_calls else "stop"), None
    return "error", str(status)


def decode_response(body: Any) -> cn.Response:
    """A Response object from a Responses upstream -> canonical. Never raises: a body that is no
    Response object is a response that finished with "error"."""
    if not isinstance(body, dict):
        return cn.Response(f"resp_{int(time.time() * 1000)}", "", [], "error", created=int(time.time()),
                           finish_detail="the upstream's body is not a Response object")
    blocks: list[cn.Block] = []
    for item in _list(body.get("output")):
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            text = _message_text(item)
            if blocks and isinstance(blocks[-1], cn.Text):
                blocks[-1].text += text
            else:
                blocks.append(cn.Text(text))
        elif kind == "reasoning":
            blob = item.get("encrypted_content")
            blocks.append(cn.Thinking(_summary_text(item), encrypted_content=blob if isinstance(blob, str) and blob
                                      else None))
        elif kind == "function_call":
            call_id = str(item.get("call_id") or item.get("id") or call_ids.new_call_id())
            blocks.append(cn.ToolCall(call_id, str(item.get("name") or ""), str(item.get("arguments") or "{}"),
                                      signature=call_ids.signature_of(call_id)))
    has_calls = any(isinstance(b, cn.ToolCall) for b in blocks)
    finish, detail = _finish_of(body.get("status"), body.get("incomplete_details"), has_calls)
    if finish == "error" and isinstance(body.get("error"), dict):
        detail = str(body["error"].get("message") or detail)
    return cn.Response(id=str(body.get("id") or f"resp_{int(time.time() * 1000)}"), model=str(body.get("model") or ""),
                       content=blocks, finish=finish, usage=usage_of(body.get("usage")),
                       created=_ts(body.get("created_at")), finish_detail=detail)


# --- canonical stream -> Responses SSE (to a client) -------------------------

@dataclass(slots=True)
class _Item:
    kind: str  # message | reasoning | function_call
    output_index: int = -1  # assigned when announced (output_item.added)
    item_id: str = ""
    text: str = ""  # message text, reasoning summary or call arguments so far
    call: cn.ToolCall | None = None
    blob: str | None = None  # encrypted_content / wrapped signature (reasoning)
    signature: str = ""
    part_open: bool = False  # reasoning: summary part 0 announced
    freeform: bool = False  # function_call of a custom tool: a custom_tool_call item

    @property
    def announced(self) -> bool:
        return self.output_index >= 0


def _client_error_code(code: str, status: int) -> str:
    if code in ("rate_limit_exceeded", "slow_down", "resource_exhausted", "quota_exhausted") or status == 429:
        return "rate_limit_exceeded"
    return code if code in _SDK_ERROR_CODES else "server_error"


class StreamEncoder:
    """Canonical stream events -> Responses SSE: `event: <type>\\ndata: <json>\\n\\n`, sequence numbers from 0."""

    def __init__(self, model: str, freeform: Collection[str] = (), namespaced: Mapping[str, tuple[str, str]] = {}):
        self.model = model
        self.freeform = frozenset(freeform)  # custom tools: their calls' input is sent whole, at the end
        self.namespaced = namespaced  # flat name -> (namespace, name)
        self.id = "resp_gateway"
        self.created = int(time.time())
        self._seq = 0
        self._started = False
        self.closed = False
        self._open: dict[int, _Item] = {}  # canonical block index -> open item
        self._done: dict[int, dict[str, Any]] = {}  # output_index -> finished item
        self._next_output = 0
        self._answered = False  # a message or function call was output
        self._usage: cn.Usage | None = None

    def encode(self, events: list[cn.Event]) -> bytes:
        return b"".join(self._one(e) for e in events)

    def _ev(self, kind: str, **fields: Any) -> bytes:
        body = {"type": kind, **fields, "sequence_number": self._seq}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + dumps(body) + b"\n\n"

    def _response(self, status: str, output: list[dict], incomplete: dict | None = None,
                  error: dict | None = None, usage: cn.Usage | None = None) -> dict:
        return response_object(self.id, self.model, self.created, status, output, usage, incomplete, error)

    def _start(self, e: cn.MessageStart | None = None) -> bytes:
        self._started = True
        if e is not None:
            self.id = response_id(e.id or "gateway")
            self.created = e.created or self.created
        return (self._ev("response.created", response=self._response("in_progress", []))
                + self._ev("response.in_progress", response=self._response("in_progress", [])))

    def _one(self, e: cn.Event) -> bytes:
        if self.closed:
            return b""
        if isinstance(e, cn.MessageStart):
            return b"" if self._started else self._start(e)
        out = b"" if self._started else self._start()
        if isinstance(e, cn.BlockStart):
            return out + self._block_start(e.index, e.block)
        if isinstance(e, cn.TextDelta):
            if e.index not in self._open:
                out += self._block_start(e.index, cn.Text(""))
            return out + self._text_delta(self._open[e.index], e.text)
        if isinstance(e, cn.ThinkingDelta):
            if e.index not in self._open:
                out += self._block_start(e.index, cn.Thinking(""))
            return out + self._thinking_delta(self._open[e.index], e.text)
        if isinstance(e, cn.SignatureDelta):
            item = self._open.get(e.index)
            if item and item.kind == "reasoning":
                item.signature += e.signature
            return out
        if isinstance(e, cn.ArgumentsDelta):
            item = self._open.get(e.index)
            if item and item.kind == "function_call" and e.json:
                item.text += e.json
                if item.freeform:
                    return out
                out += self._ev("response.function_call_arguments.delta", item_id=item.item_id,
                                output_index=item.output_index, delta=e.json)
            return out
        if isinstance(e, cn.BlockStop):
            item = self._open.pop(e.index, None)
            if item and e.encrypted_content:
                item.blob = e.encrypted_content
            return out + (self._close(item) if item else b"")
        if isinstance(e, cn.UsageUpdate):
            self._usage = e.usage
            return out
        if isinstance(e, cn.Finish):
            return out + self._finish(e)
        if isinstance(e, cn.StreamError):
            return out + self._fail(e.message, _client_error_code(e.code, e.status))
        return out

    def _block_start(self, index: int, block: Any) -> bytes:
        """Function calls are announced at once; messages and reasoning items at their first content
        (an upstream's empty text block is no item at all)."""
        if index in self._open:
            return b""
        if isinstance(block, cn.ToolCall):
            item = self._open[index] = _Item("function_call", call=block, freeform=block.name in self.freeform)
            out = self._announce(item)
            if item.freeform:  # its input is JSON-wrapped upstream: unwrapped once complete
                item.text = block.arguments
                return out
            if block.arguments:
                item.text = block.arguments
                out += self._ev("response.function_call_arguments.delta", item_id=item.item_id,
                                output_index=item.output_index, delta=block.arguments)
            return out
        if isinstance(block, cn.RedactedThinking):
            item = self._open[index] = _Item("reasoning", blob=_blob(block))
            return self._announce(item)
        if isinstance(block, cn.Thinking):
            item = self._open[index] = _Item("reasoning", blob=block.encrypted_content,
                                             signature=block.signature or "")
            return self._thinking_delta(item, block.text)
        item = self._open[index] = _Item("message")
        return self._text_delta(item, block.text if isinstance(block, cn.Text) else "")

    def _announce(self, item: _Item) -> bytes:
        n = item.output_index = self._next_output
        self._next_output += 1
        if item.kind == "function_call":
            self._answered = True
            item.item_id = _item_id("fc", self.id, n)
            return self._ev("response.output_item.added", output_index=n,
                            item=_call_item(item.item_id, item.call, "", "in_progress",  # type: ignore[arg-type]
                                            item.freeform, self.namespaced))
        if item.kind == "reasoning":
            item.item_id = _item_id("rs", self.id, n)
            return self._ev("response.output_item.added", output_index=n, item=_reasoning_item(item.item_id, "", None))
        self._answered = True
        item.item_id = _item_id("msg", self.id, n)
        return (self._ev("response.output_item.added", output_index=n,
                         item={"id": item.item_id, "type": "message", "role": "assistant", "status": "in_progress",
                               "content": []})
                + self._ev("response.content_part.added", item_id=item.item_id, output_index=n, content_index=0,
                           part=_output_text("")))

    def _text_delta(self, item: _Item, text: str) -> bytes:
        if not text or item.kind != "message":
            return b""
        out = b"" if item.announced else self._announce(item)
        item.text += text
        return out + self._ev("response.output_text.delta", item_id=item.item_id, output_index=item.output_index,
                              content_index=0, delta=text, logprobs=[])

    def _thinking_delta(self, item: _Item, text: str) -> bytes:
        if not text or item.kind != "reasoning":
            return b""
        out = b"" if item.announced else self._announce(item)
        if not item.part_open:
            item.part_open = True
            out += self._ev("response.reasoning_summary_part.added", item_id=item.item_id,
                            output_index=item.output_index, summary_index=0,
                            part={"type": "summary_text", "text": ""})
        item.text += text
        return out + self._ev("response.reasoning_summary_text.delta", item_id=item.item_id,
                              output_index=item.output_index, summary_index=0, delta=text)

    def _final_item(self, item: _Item, status: str) -> dict[str, Any]:
        if item.kind == "message":
            return _text_item(item.item_id, item.text, status)
        if item.kind == "function_call":
            return _call_item(item.item_id, item.call, item.text, status, item.freeform,  # type: ignore[arg-type]
                              self.namespaced)
        blob = item.blob or (SIG_PREFIX + item.signature if item.signature else None)
        return _reasoning_item(item.item_id, item.text, blob, None if status == "completed" else status)

    def _close(self, item: _Item, status: str = "completed") -> bytes:
        out = b""
        if not item.announced:
            if item.kind == "message" or not (item.blob or item.signature):
                return b""  # nothing was said: no item
            out += self._announce(item)  # a reasoning item with only a signature / encrypted content
        at = {"item_id": item.item_id, "output_index": item.output_index}
        if item.kind == "message":
            out += self._ev("response.output_text.done", **at, content_index=0, text=item.text, logprobs=[])
            out += self._ev("response.content_part.done", **at, content_index=0, part=_output_text(item.text))
        elif item.freeform:
            raw = freeform_input(item.text)
            out += self._ev("response.custom_tool_call_input.delta", **at, delta=raw)
            out += self._ev("response.custom_tool_call_input.done", **at, input=raw)
        elif item.kind == "function_call":
            out += self._ev("response.function_call_arguments.done", **at, arguments=item.text)
        elif item.part_open:
            out += self._ev("response.reasoning_summary_text.done", **at, summary_index=0, text=item.text)
            out += self._ev("response.reasoning_summary_part.done", **at, summary_index=0,
                            part={"type": "summary_text", "text": item.text})
        final = self._final_item(item, status)
        self._done[item.output_index] = final
        return out + self._ev("response.output_item.done", output_index=item.output_index, item=final)

    def _close_all(self, status: str) -> bytes:
        items = sorted(self._open.values(), key=lambda i: i.output_index if i.announced else 1 << 30)
        self._open.clear()
        return b"".join(self._close(i, status) for i in items)

    def _finish(self, e: cn.Finish) -> bytes:
        status, incomplete, error = _ending(e.reason, e.detail)
        if error:
            return self._fail(error["message"], error["code"])
        item_status = "incomplete" if status == "incomplete" else "completed"
        out = self._close_all(item_status)
        if not self._answered:  # never an empty response (pitfall 5)
            item = _Item("message")
            out += self._announce(item) + self._close(item, item_status)
        self.closed = True
        output = [self._done[k] for k in sorted(self._done)]
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return out + self._ev(kind, response=self._response(status, output, incomplete, None,
                                                            self._usage or cn.Usage()))

    def _fail(self, message: str, code: str) -> bytes:
        self.closed = True
        done = dict(self._done)
        for item in self._open.values():
            if item.announced:
                done[item.output_index] = self._final_item(item, "incomplete")
        output = [done[k] for k in sorted(done)]
        return self._ev("response.failed", response=self._response(
            "failed", output, None, {"code": code, "message": message}, self._usage))


# --- Responses SSE -> canonical stream (from an upstream) --------------------

@dataclass(slots=True)
class _Block:
    index: int  # canonical block index
    kind: str
    text: str = ""
    blob_sent: bool = False


class StreamDecoder(SSEStreamDecoder):
    """Responses SSE -> canonical events. Items map to blocks one to one (message -> Text,
    reasoning -> Thinking, function_call -> ToolCall); other item types are skipped. A stream
    that ends before response.completed / incomplete / failed ends with StreamError
    "stream_truncated"."""

    final_event = "response.completed"

    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self._blocks: dict[int, _Block] = {}  # output_index -> open block
        self._next = 0
        self._calls = False
        self._usage = cn.Usage()

    def _event(self, data: str, name: str | None) -> list[cn.Event]:
        try:
            body = jsonio.loads(data)
        except ValueError:
            return self._malformed(data)
        if not isinstance(body, dict):
            return []
        kind = body.get("type") or name
        out: list[cn.Event] = []
        resp = obj(body.get("response"))
        if not self._started and kind != "error":
            self._started = True
            out.append(cn.MessageStart(str(resp.get("id") or f"resp_{int(time.time() * 1000)}"),
                                       str(resp.get("model") or ""), _ts(resp.get("created_at"))))
        index = body.get("output_index")
        block = self._blocks.get(index) if isinstance(index, int) else None
        delta = body.get("delta") if isinstance(body.get("delta"), str) else ""
        if kind == "response.output_item.added" and isinstance(body.get("item"), dict) and isinstance(index, int):
            out += self._open(index, body["item"])
        elif kind in ("response.output_text.delta", "response.refusal.delta"):
            if block and block.kind == "message" and delta:
                block.text += delta
                out.append(cn.TextDelta(block.index, delta))
        elif kind == "response.reasoning_summary_part.added":
            if block and block.kind == "reasoning" and block.text and body.get("summary_index"):
                block.text += "\n\n"
                out.append(cn.ThinkingDelta(block.index, "\n\n"))
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            if block and block.kind == "reasoning" and delta:
                block.text += delta
                out.append(cn.ThinkingDelta(block.index, delta))
        elif kind == "response.function_call_arguments.delta":
            if block and block.kind == "function_call" and delta:
                block.text += delta
                out.append(cn.ArgumentsDelta(block.index, delta))
        elif kind == "response.output_item.done" and isinstance(body.get("item"), dict) and isinstance(index, int):
            out += self._done(index, body["item"])
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self.finished = True
            out += self._close_all()
            if kind == "response.failed":
                err = obj(resp.get("error"))
                code = string(err.get("code"), "upstream_error")
                out.append(cn.StreamError(str(err.get("message") or "The upstream response failed."), code,
                                          429 if code == "rate_limit_exceeded" else 502))
                return out
            if isinstance(resp.get("usage"), dict):
                self._usage = usage_of(resp["usage"])
            out.append(cn.UsageUpdate(self._usage))
            finish, detail = _finish_of(resp.get("status") or kind.removeprefix("response."),
                                        resp.get("incomplete_details"), self._calls)
            out.append(cn.Finish(finish, detail))
        elif kind == "error":
            self.finished = True
            code = string(body.get("code"), "upstream_error")
            out += self._close_all()
            out.append(cn.StreamError(str(body.get("message") or "The upstream sent an error."), code,
                                      429 if code == "rate_limit_exceeded" else 502))
        return out

    def _open(self, index: int, item: dict) -> list[cn.Event]:
        kind = item.get("type")
        if index in self._blocks or kind not in ("message", "reasoning", "function_call"):
            return []
        block = _Block(self._next, kind)
        self._next += 1
        self._blocks[index] = block
        if kind == "message":
            return [cn.BlockStart(block.index, cn.Text(""))]
        if kind == "reasoning":
            blob = item.get("encrypted_content") if isinstance(item.get("encrypted_content"), str) else None
            block.blob_sent = bool(blob)
            return [cn.BlockStart(block.index, cn.Thinking("", encrypted_content=blob or None))]
        self._calls = True
        call_id = str(item.get("call_id") or item.get("id") or call_ids.new_call_id())
        call = cn.ToolCall(call_id, str(item.get("name") or ""), "", signature=call_ids.signature_of(call_id))
        out: list[cn.Event] = [cn.BlockStart(block.index, call)]
        if isinstance(item.get("arguments"), str) and item["arguments"]:
            block.text = item["arguments"]
            out.append(cn.ArgumentsDelta(block.index, item["arguments"]))
        return out

    def _done(self, index: int, item: dict) -> list[cn.Event]:
        out = self._open(index, item) if index not in self._blocks else []
        block = self._blocks.pop(index, None)
        if block is None:
            return out
        if block.kind == "message":
            final = _message_text(item)
        elif block.kind == "reasoning":
            final = _summary_text(item)
        else:
            final = string(item.get("arguments"))
        rest = final[len(block.text):] if final.startswith(block.text) else ""
        if rest:  # an upstream that sends the item whole, without (all) deltas
            delta: dict[str, Callable[[int, str], cn.Event]] = {
                "message": cn.TextDelta, "reasoning": cn.ThinkingDelta, "function_call": cn.ArgumentsDelta}
            out.append(delta[block.kind](block.index, rest))
        blob = item.get("encrypted_content") if block.kind == "reasoning" and not block.blob_sent else None
        out.append(cn.BlockStop(block.index, blob if isinstance(blob, str) and blob else None))
        return out

    def _close_all(self) -> list[cn.Event]:
        out: list[cn.Event] = [cn.BlockStop(b.index) for _, b in sorted(self._blocks.items())]
        self._blocks.clear()
        return out


class StreamRelabel(SSERelabel):
    """Responses SSE passed through to a Responses client; the model inside each event's
    response object becomes the client's. A broken stream ends with response.failed."""

    final_event = "response.completed"

    def __init__(self, model: str):
        super().__init__(model)
        self._rid = "resp_gateway"
        self._created = int(time.time())
        self._seq = 0

    def _watch(self, name: str | None, data: dict) -> bool:
        kind = data.get("type")
        if isinstance(data.get("sequence_number"), int):
            self._seq = data["sequence_number"] + 1
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            self.finished = True
        elif kind == "error":
            self.errored = True
        resp = data.get("response")
        if not isinstance(resp, dict):
            return False
        self._rid = resp.get("id") or self._rid
        self._created = resp.get("created_at") or self._created
        return self._rename(resp, "model")

    def _error(self, message: str, code: str) -> bytes:
        error = {"code": _client_error_code(code, 502), "message": message}
        body = {"type": "response.failed", "sequence_number": self._seq,
                "response": response_object(self._rid, self.model, self._created, "failed", [], None, None, error)}
        return b"event: response.failed\ndata: " + dumps(body) + b"\n\n"
