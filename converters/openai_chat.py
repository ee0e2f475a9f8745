"""OpenAI Chat Completions wire format (pure, no I/O).

The models are tolerant: unknown fields are allowed and kept, so a request that
goes to an OpenAI-compatible upstream passes through with only its model name
changed. Validation here is what the gateway itself must know to route and
stream a request; the upstream validates the rest.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from converters import call_ids, jsonio
from converters import canonical as cn
from converters.json_limits import exceeds
from converters.pipeline import relabel_all, relabel_body, splice_model
from converters.shapes import arr, integer, obj, string
from converters.sse import Event, SSEParser, encode, encode_like, not_json
from converters.thinking import OPENAI_SAMPLING, openai_refuses_sampling


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Message(_Open):
    role: str = Field(min_length=1)


class StreamOptions(_Open):
    include_usage: bool | None = None


class ChatRequest(_Open):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None


MAX_DEPTH = 128  # JSON nesting levels a request body may have (agents' tool schemas stay near 20)


class RequestError(ValueError):
    """The client's request body is unusable; `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def parse_request(body: bytes, max_depth: int = MAX_DEPTH,
                  max_values: int | None = None) -> tuple[dict[str, Any], ChatRequest]:
    """Decode and validate a chat completion request body.

    Returns the raw JSON object (to forward) and the validated view of it.
    """
    data = parse_json_object(body, max_depth, max_values)
    try:
        req = ChatRequest.model_validate(data)
    except ValidationError as e:
        raise RequestError(*describe_validation_error(e)) from None
    return data, req


def parse_json_object(body: bytes, max_depth: int = MAX_DEPTH, max_values: int | None = None) -> dict[str, Any]:
    if not body:
        raise RequestError("The request body is empty; expected a JSON object.")
    # a body with fewer brackets than the depth limit, or fewer bytes than values allowed, is
    # within both without counting (each value or nesting level takes a byte of its own)
    within = body.count(b"[") + body.count(b"{") <= max_depth and (max_values is None or len(body) < max_values)
    broken = None if within else exceeds(body, max_depth, max_values)
    if broken == "depth":
        raise RequestError(f"The request body nests JSON more than {max_depth} levels deep.")
    if broken == "values":
        raise RequestError(f"The request body holds more than {max_values} JSON values (server.limits.max_values).")
    try:
        data = jsonio.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"The request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise RequestError("The request body must be a JSON object.")
    return data


def describe_validation_error(e: ValidationError) -> tuple[str, str]:
    err = e.errors()[0]
    param = ".".join(str(p) for p in err["loc"]) or "body"
    if err["type"] == "missing":
        return f"Missing required parameter: '{param}'.", param
    return f"Invalid value for '{param}': {err['msg']}.", param


def dumps(obj: Any) -> bytes:
    """Compact JSON, as OpenAI itself sends it."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def with_model(data: dict[str, Any], body: bytes, model: str) -> bytes:
    """The request body with `model` replaced and every other byte kept (the original bytes
    if unchanged). `data` is `body` parsed."""
    if data.get("model") == model:
        return body
    spliced = _splice_top_level(body, "model", model)
    return spliced if spliced is not None else dumps({**data, "model": model})


_JSON = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")


def _skip(text: str, i: int) -> int:
    m = _WS.match(text, i)  # always matches (possibly empty)
    return m.end() if m else i


def _splice_top_level(body: bytes, key: str, value: str) -> bytes | None:
    """`body` (a JSON object) with the value of its top-level `key` replaced in place; None if
    the key is absent or repeated, or the body is not what json.loads accepted."""
    try:
        text = body.decode("utf-8")
        i = _skip(text, 0)
        if text[i:i + 1] != "{":
            return None
        i = _skip(text, i + 1)
        spans = []
        while text[i:i + 1] != "}":
            name, i = _JSON.raw_decode(text, i)
            i = _skip(text, i)
            if text[i:i + 1] != ":":
                return None
            i = _skip(text, i + 1)
            _, end = _JSON.raw_decode(text, i)
            if name == key:
                spans.append((i, end))
            i = _skip(text, end)
            if text[i:i + 1] == ",":
                i = _skip(text, i + 1)
            elif text[i:i + 1] != "}":
                return None
    except (ValueError, UnicodeDecodeError):
        return None
    if len(spans) != 1:
        return None
    start, end = spans[0]
    return (text[:start] + json.dumps(value, ensure_ascii=False) + text[end:]).encode()


def rename_model(body: bytes, model: str) -> bytes:
    """A response body (completion or chunk JSON) with the client's model name."""
    return relabel_body(body, model)


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


def chunk_finished(chunk: dict[str, Any]) -> bool:
    """True if a stream chunk carries a finish_reason on any choice."""
    for choice in chunk.get("choices") or ():
        if isinstance(choice, dict) and choice.get("finish_reason"):
            return True
    return False


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def model_entry(model: str, owner: str) -> dict:
    return {"id": model, "object": "model", "created": 0, "owned_by": owner}


def model_list(models: list[tuple[str, str]]) -> dict:
    """GET /v1/models body from (model id, owner) pairs."""
    return {"object": "list", "data": [model_entry(m, owner) for m, owner in models]}


class StreamRelabel:
    """OpenAI chat SSE -> the same SSE, with the client's model name in every chunk.

    Events are forwarded as whole events, byte for byte unless the model name
    changes. The end of the stream is checked: a stream that stops before a
    finish_reason or [DONE] ends with an error event, never as a silent stop.
    """

    def __init__(self, model: str):
        self.model = model
        self._parser = SSEParser()
        self.finished = False  # a finish_reason was seen
        self.done = False  # [DONE] was seen
        self.errored = False  # the upstream sent an error event
        self.usage: dict | None = None

    def feed(self, chunk: bytes) -> bytes:
        return relabel_all(self._parser.feed(chunk), self._event)

    def finish(self) -> bytes:
        """Upstream ended cleanly. Returns the remaining bytes for the client."""
        out = b"".join(self._event(ev) for ev in self._parser.close())
        if self.done or self.errored:
            return out
        if self.finished:
            return out + b"data: [DONE]\n\n"
        return out + self.error_event(
            "The upstream stream ended before the response was complete (no finish_reason).",
            "stream_truncated",
        )

    def fail(self, message: str, code: str = "upstream_error") -> bytes:
        """Upstream broke off; a half-received event is dropped."""
        if self.done or self.errored:
            return b""
        return self.error_event(message, code)

    def error_event(self, message: str, code: str) -> bytes:
        self.errored = True
        return encode(dumps(error_body(message, "upstream_error", code)).decode())

    def _event(self, ev: Event) -> bytes:
        if ev.data is None:
            return ev.raw
        if ev.data.strip() == "[DONE]":
            self.done = True
            return ev.raw
        try:
            data = jsonio.loads(ev.data)
        except ValueError:
            raise not_json(ev.data) from None
        if not isinstance(data, dict):
            return ev.raw
        if "error" in data:
            self.errored = True
        if chunk_finished(data):
            self.finished = True
        if data.get("usage"):
            self.usage = data["usage"]
        if "model" in data and data["model"] != self.model:
            spliced = splice_model(ev.raw, "model", data["model"], self.model)
            if spliced is not None:
                return spliced
            data["model"] = self.model
            return encode_like(ev, dumps(data).decode())
        return ev.raw


# --- canonical conversion ----------------------------------------------------
# (requests from OpenAI clients, responses and streams back to them)

_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[^,]*)?;base64,(.*)$", re.S)
_FINISH_TO_OPENAI = {"stop": "stop", "stop_sequence": "stop", "length": "length",
                     "tool_calls": "tool_calls", "content_filter": "content_filter", "error": "stop"}
_IGNORED = {"user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier",
            "logit_bias", "logprobs", "top_logprobs", "modalities", "prediction", "audio", "verbosity",
            "web_search_options", "stream_options"}


def _typed(value: Any, types: type | tuple[type, ...], param: str, what: str) -> Any:
    """`value` if it is None or of `types`, else a ConversionError naming the field."""
    types = types if isinstance(types, tuple) else (types,)
    if value is None or (isinstance(value, types) and (bool in types or not isinstance(value, bool))):
        return value
    raise cn.ConversionError(f"'{param}' must be {what}.", param)


def decode_request(data: dict[str, Any]) -> cn.Request:
    """An OpenAI chat request (already parsed by parse_request) -> canonical.

    Any shape of input gives a canonical request or a ConversionError naming the field."""
    system: list[cn.Text] = []
    messages: list[cn.Message] = []
    calls: dict[str, str] = {}  # tool call id -> name, for naming tool results
    for i, m in enumerate(data["messages"]):
        role, where = m.get("role"), f"messages.{i}"
        if role in ("system", "developer"):
            system += [b for b in _content(m.get("content"), where) if isinstance(b, cn.Text)]
        elif role == "user":
            _append(messages, "user", _content(m.get("content"), where))
        elif role == "assistant":
            blocks: list[cn.Block] = []
            reasoning = _typed(m.get("reasoning_content"), str, f"{where}.reasoning_content", "a string")
            if reasoning:
                blocks.append(cn.Thinking(reasoning))
            blocks += _content(m.get("content"), where)
            tool_calls = _typed(m.get("tool_calls"), list, f"{where}.tool_calls", "an array")
            for j, tc in enumerate(tool_calls or ()):
                blocks.append(_tool_call(tc, f"{where}.tool_calls.{j}", f"call_{i}_{j}", calls))
            _append(messages, "assistant", blocks)
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str):
                raise cn.ConversionError("A tool message needs tool_call_id.", f"{where}.tool_call_id")
            content = [b for b in _content(m.get("content"), where) if isinstance(b, (cn.Text, cn.Image))]
            _append(messages, "user", [cn.ToolResult(call_id, content, name=calls.get(call_id))])
        else:
            raise cn.ConversionError(f"Unsupported message role {role!r}.", f"{where}.role")

    req = cn.Request(model=data["model"], messages=messages, system=system)
    req.stream = data.get("stream") is True
    options = _typed(data.get("stream_options"), dict, "stream_options", "an object") or {}
    req.include_usage = options.get("include_usage") is True
    req.max_tokens = _typed(data.get("max_completion_tokens") or data.get("max_tokens"), int, "max_tokens",
                            "an integer")
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        setattr(req, name, _typed(data.get(name), (int, float), name, "a number"))
    req.seed = _typed(data.get("seed"), int, "seed", "an integer")
    req.top_k = _typed(data.get("top_k"), int, "top_k", "an integer")
    stop = data.get("stop")
    req.stop = [stop] if isinstance(stop, str) else _typed(stop, list, "stop", "a string or an array") or []
    if not all(isinstance(x, str) for x in req.stop):
        raise cn.ConversionError("'stop' must hold strings.", "stop")
    if data.get("n", 1) not in (1, None):
        raise cn.ConversionError("Only n=1 is supported by this provider.", "n")
    tools = _typed(data.get("tools"), list, "tools", "an array") or []
    req.tools = [_tool(t, i) for i, t in enumerate(tools)]
    req.tool_choice = _tool_choice(data.get("tool_choice"))
    req.parallel_tool_calls = _typed(data.get("parallel_tool_calls"), bool, "parallel_tool_calls", "a boolean")
    req.response_format = _response_format(data.get("response_format"))
    effort = _typed(data.get("reasoning_effort"), str, "reasoning_effort", "a string")
    if effort:
        req.reasoning = cn.Reasoning(effort=effort)
    req.user = data.get("user") if isinstance(data.get("user"), str) else None
    req.dropped = sorted(k for k in data if k in _IGNORED and k != "stream_options")
    return req


def _tool_call(tc: Any, where: str, fallback_id: str, calls: dict[str, str]) -> cn.ToolCall:
    fn = tc.get("function") if isinstance(tc, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise cn.ConversionError("Each tool call needs function.name.", where)
    args = fn.get("arguments")
    if not isinstance(args, str):  # some clients send the object itself
        args = "{}" if args is None else json.dumps(args, ensure_ascii=False, separators=(",", ":"))
    call_id = tc.get("id") if isinstance(tc.get("id"), str) and tc.get("id") else fallback_id
    calls[call_id] = fn["name"]
    return cn.ToolCall(call_id, fn["name"], args, call_ids.signature_of(call_id))


def _append(messages: list[cn.Message], role: cn.Role, blocks: list[cn.Block]) -> None:
    if messages and messages[-1].role == role:  # tool results after tool results, etc.
        messages[-1].content.extend(blocks)
    else:
        messages.append(cn.Message(role, list(blocks)))


def _content(content: Any, where: str) -> list[cn.Block]:
    if content is None:
        return []
    if isinstance(content, str):
        return [cn.Text(content)] if content else []
    if not isinstance(content, list):
        raise cn.ConversionError("content must be a string or an array of parts.", f"{where}.content")
    out: list[cn.Block] = []
    for k, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = _typed(part.get("text"), str, f"{where}.content.{k}.text", "a string")
            cc = part.get("cache_control")
            out.append(cn.Text(text or "", cc if isinstance(cc, dict) else None))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                raise cn.ConversionError("An image_url part needs image_url.url.", f"{where}.content.{k}.image_url")
            m = _DATA_URL.match(url)
            out.append(cn.Image(m.group(1) or "image/png", m.group(3)) if m else cn.Image(url=url))
        else:
            raise cn.ConversionError(f"Content part type {kind!r} is not supported for this provider.",
                                     f"{where}.content.{k}.type")
    return out


def _tool(t: Any, i: int) -> cn.Tool:
    fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise cn.ConversionError("Only function tools with a name are supported.", f"tools.{i}")
    description = fn.get("description") if isinstance(fn.get("description"), str) else None
    params = fn.get("parameters") if isinstance(fn.get("parameters"), dict) else None
    return cn.Tool(fn["name"], description, params)


def _tool_choice(choice: Any) -> cn.ToolChoice | None:
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        return cn.ToolChoice(choice)
    if isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        return cn.ToolChoice("tool", choice["function"]["name"])
    raise cn.ConversionError("tool_choice must be auto, none, required or a named function.", "tool_choice")


def _response_format(rf: Any) -> cn.ResponseFormat | None:
    if rf is None:
        return None
    kind = rf.get("type") if isinstance(rf, dict) else None
    if kind in ("text", "json_object"):
        return cn.ResponseFormat(kind)
    if kind == "json_schema":
        js = rf.get("json_schema")
        if not isinstance(js, dict) or not isinstance(js.get("schema", {}), dict):
            raise cn.ConversionError("response_format.json_schema needs a schema object.", "response_format")
        return cn.ResponseFormat("json_schema", js.get("schema"), js.get("name"), js.get("strict"))
    raise cn.ConversionError("response_format.type must be text, json_object or json_schema.",
                             "response_format")


def usage_dict(u: cn.Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }


def encode_response(r: cn.Response, model: str) -> dict[str, Any]:
    """Canonical -> OpenAI chat.completion, carrying the client's model name."""
    message: dict[str, Any] = {"role": "assistant", "content": cn.text_of(r.content) or None}
    thinking = "".join(b.text for b in r.content if isinstance(b, cn.Thinking))
    if thinking:
        message["reasoning_content"] = thinking
    calls = [b for b in r.content if isinstance(b, cn.ToolCall)]
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    message["refusal"] = None
    return {
        "id": _chat_id(r.id), "object": "chat.completion", "created": r.created or int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": _FINISH_TO_OPENAI[r.finish]}],
        "usage": usage_dict(r.usage),
    }


def _chat_id(upstream_id: str) -> str:
    return upstream_id if upstream_id.startswith("chatcmpl-") else f"chatcmpl-{upstream_id}"


class StreamEncoder:
    """Canonical stream events -> OpenAI chat.completion.chunk SSE bytes."""

    def __init__(self, model: str, include_usage: bool):
        self.model = model
        self.include_usage = include_usage
        self.id = "chatcmpl-gateway"
        self.created = int(time.time())
        self._tool_index: dict[int, int] = {}  # canonical block index -> OpenAI tool_calls index
        self._usage: cn.Usage | None = None
        self._started = False
        self.closed = False

    def encode(self, events: list[cn.Event]) -> bytes:
        return b"".join(self._one(e) for e in events)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        body: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                "model": self.model,
                                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if self.include_usage:
            body["usage"] = None
        return b"data: " + dumps(body) + b"\n\n"

    def _one(self, e: cn.Event) -> bytes:
        if self.closed:
            return b""
        if isinstance(e, cn.MessageStart):
            self.id, self.created = _chat_id(e.id), e.created or self.created
            self._started = True
            return self._chunk({"role": "assistant", "content": ""})
        out = b"" if self._started or isinstance(e, cn.StreamError) else self._one(cn.MessageStart(self.id, ""))
        if isinstance(e, cn.TextDelta):
            return out + self._chunk({"content": e.text}) if e.text else out
        if isinstance(e, cn.ThinkingDelta):
            return out + self._chunk({"reasoning_content": e.text}) if e.text else out
        if isinstance(e, cn.BlockStart) and isinstance(e.block, cn.ToolCall):
            k = self._tool_index[e.index] = len(self._tool_index)
            return out + self._chunk({"tool_calls": [{"index": k, "id": e.block.id, "type": "function",
                                                      "function": {"name": e.block.name, "arguments": ""}}]})
        if isinstance(e, cn.ArgumentsDelta) and e.index in self._tool_index:
            return out + self._chunk({"tool_calls": [{"index": self._tool_index[e.index],
                                                      "function": {"arguments": e.json}}]})
        if isinstance(e, cn.UsageUpdate):
            self._usage = e.usage
            return out
        if isinstance(e, cn.Finish) and e.reason == "error":
            return out + self._one(cn.StreamError(f"The upstream stopped the response: {e.detail}.", "upstream_error"))
        if isinstance(e, cn.Finish):
            self.closed = True
            out += self._chunk({}, _FINISH_TO_OPENAI[e.reason])
            if self.include_usage:
                body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [], "usage": usage_dict(self._usage or cn.Usage())}
                out += b"data: " + dumps(body) + b"\n\n"
            return out + b"data: [DONE]\n\n"
        if isinstance(e, cn.StreamError):
            self.closed = True
            return out + encode(dumps(error_body(e.message, "upstream_error", e.code)).decode())
        return out  # block start/stop of text and thinking, signatures: nothing to say in this format


# --- canonical -> OpenAI chat (for OpenAI-compatible upstreams) ---------------
# Thinking is not replayed (OpenAI-compatible servers have no field for it in
# requests); max_tokens rather than max_completion_tokens, which more servers know (but
# OpenAI's reasoning models, which refuse it, get max_completion_tokens and none of the sampling
# parameters they refuse: thinking.openai_refuses_sampling); top_k, which OpenAI lacks, is dropped.

_EFFORT_OF_BUDGET = ((1024, "low"), (8192, "medium"))
_FINISH_FROM_OPENAI: dict[str, cn.FinishReason] = {"stop": "stop", "length": "length", "tool_calls": "tool_calls",
                       "function_call": "tool_calls", "content_filter": "content_filter"}


def encode_request(req: cn.Request) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if req.system:
        messages.append({"role": "system", "content": "\n\n".join(t.text for t in req.system)})
    for m in req.messages:
        messages += _assistant_message(m) if m.role == "assistant" else _user_messages(m)
    body: dict[str, Any] = {"model": req.model, "messages": messages}
    cn.hosted(req)  # no hosted tools in chat completions: all named as dropped
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    refused = openai_refuses_sampling(req.model, req.reasoning.effort if req.reasoning else None)
    for name in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "user",
                 "parallel_tool_calls"):
        if getattr(req, name) is None:
            continue
        if refused and name in OPENAI_SAMPLING:
            req.dropped.append(name)
        else:
            body[name] = getattr(req, name)
    if req.max_tokens is not None:  # reasoning models refuse max_tokens
        body["max_completion_tokens" if refused else "max_tokens"] = req.max_tokens
    if req.stop:
        body["stop"] = req.stop
    if req.tools:
        body["tools"] = [{"type": "function", "function": {
            "name": t.name, **({"description": t.description} if t.description else {}),
            "parameters": t.parameters or {"type": "object", "properties": {}}}} for t in req.tools]
    if req.tool_choice:
        tc = req.tool_choice
        body["tool_choice"] = ({"type": "function", "function": {"name": tc.name}} if tc.mode == "tool"
                               else tc.mode)
    rf = req.response_format
    if rf and rf.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif rf and rf.type == "json_schema":
        js: dict[str, Any] = {"name": rf.name or "response", "schema": rf.schema or {"type": "object"}}
        if rf.strict is not None:
            js["strict"] = rf.strict
        body["response_format"] = {"type": "json_schema", "json_schema": js}
    if req.reasoning:
        effort = req.reasoning.effort
        if effort is None and req.reasoning.budget_tokens is not None:
            effort = next((e for limit, e in _EFFORT_OF_BUDGET if req.reasoning.budget_tokens <= limit), "high")
        if effort:
            body["reasoning_effort"] = effort
    if req.top_k is not None:
        req.dropped.append("top_k")
    return body


def _image_part(img: cn.Image) -> dict[str, Any]:
    url = img.url if img.data is None else f"data:{img.media_type or 'image/png'};base64,{img.data}"
    return {"type": "image_url", "image_url": {"url": url}}


def _parts(blocks: list[cn.Block]) -> str | list[dict[str, Any]]:
    parts = [{"type": "text", "text": b.text} if isinstance(b, cn.Text) else _image_part(b)
             for b in blocks if isinstance(b, (cn.Text, cn.Image))]
    if all(p["type"] == "text" for p in parts):  # separate blocks stay apart, as system blocks do
        return "\n\n".join(p["text"] for p in parts if p["text"])
    return parts


def _user_messages(m: cn.Message) -> list[dict[str, Any]]:
    """Tool results first (OpenAI wants them right after the calls), then the rest of the turn."""
    out: list[dict[str, Any]] = []
    extra_images: list[cn.Block] = []
    for b in m.content:
        if isinstance(b, cn.ToolResult):
            text = cn.text_of(b.content) or ("(error)" if b.is_error else "")
            out.append({"role": "tool", "tool_call_id": b.call_id,
                        "content": f"Error: {text}" if b.is_error and not text.startswith("Error") else text})
            extra_images += [c for c in b.content if isinstance(c, cn.Image)]
    rest = extra_images + [b for b in m.content if isinstance(b, (cn.Text, cn.Image))]
    if rest:
        out.append({"role": "user", "content": _parts(rest)})
    return out


def _assistant_message(m: cn.Message) -> list[dict[str, Any]]:
    msg: dict[str, Any] = {"role": "assistant", "content": cn.text_of(m.content) or None}
    calls = [b for b in m.content if isinstance(b, cn.ToolCall)]
    if calls:
        msg["tool_calls"] = [{"id": c.id, "type": "function",
                              "function": {"name": c.name, "arguments": c.arguments or "{}"}} for c in calls]
    elif msg["content"] is None:
        msg["content"] = ""
    return [msg]


def _usage_of(u: Any) -> cn.Usage:
    if not isinstance(u, dict):
        return cn.Usage()
    details_in = u.get("prompt_tokens_details") or {}
    details_out = u.get("completion_tokens_details") or {}
    return cn.Usage(
        input_tokens=u.get("prompt_tokens") or 0, output_tokens=u.get("completion_tokens") or 0,
        cached_tokens=(details_in.get("cached_tokens") or 0) if isinstance(details_in, dict) else 0,
        reasoning_tokens=(details_out.get("reasoning_tokens") or 0) if isinstance(details_out, dict) else 0,
    )


def _finish_from(reason: Any, has_calls: bool) -> cn.FinishReason:
    if has_calls and reason in ("stop", None, "tool_calls", "function_call"):
        return "tool_calls"
    return _FINISH_FROM_OPENAI.get(reason, "stop") if reason else "stop"


def decode_response(body: dict[str, Any]) -> cn.Response:
    """An OpenAI chat.completion -> canonical (lenient: never raises on odd shapes)."""
    choices = arr(body.get("choices"))
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    msg = obj(choice.get("message"))
    blocks: list[cn.Block] = []
    if isinstance(msg.get("reasoning_content"), str) and msg["reasoning_content"]:
        blocks.append(cn.Thinking(msg["reasoning_content"]))
    if isinstance(msg.get("content"), str) and msg["content"]:
        blocks.append(cn.Text(msg["content"]))
    for tc in msg.get("tool_calls") or () if isinstance(msg.get("tool_calls"), list) else ():
        fn = tc.get("function") if isinstance(tc, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            args = fn.get("arguments")
            blocks.append(cn.ToolCall(str(tc.get("id") or call_ids.new_call_id()), fn["name"],
                                      args if isinstance(args, str) else json.dumps(args or {})))
    has_calls = any(isinstance(b, cn.ToolCall) for b in blocks)
    return cn.Response(id=str(body.get("id") or "chatcmpl-gateway"), model=str(body.get("model") or ""),
                       content=blocks, finish=_finish_from(choice.get("finish_reason"), has_calls),
                       usage=_usage_of(body.get("usage")),
                       created=integer(body.get("created")))


class StreamDecoder:
    """OpenAI chat.completion.chunk SSE -> canonical events.

    The finish comes at [DONE] (or a clean end after a finish_reason), so the
    usage chunk that include_usage adds after the finish chunk is not missed."""

    def __init__(self) -> None:
        self._sse = SSEParser()
        self._started = False
        self._open: tuple[int, str] | None = None  # (canonical index, "text" | "thinking" | "tool:<n>")
        self._tools: dict[int, int] = {}  # OpenAI tool_calls index -> canonical block index
        self._next = 0
        self._reason: Any = None
        self._calls = False
        self.finished = False

    def feed(self, chunk: bytes) -> list[cn.Event]:
        return [e for ev in self._sse.feed(chunk) for e in self._event(ev.data)]

    def finish(self) -> list[cn.Event]:
        out = [e for ev in self._sse.close() for e in self._event(ev.data)]
        if self.finished:
            return out
        if self._reason:
            return out + self._end()
        self.finished = True
        return out + self._close() + [cn.StreamError(
            "The upstream stream ended before the response was complete (no finish_reason).", "stream_truncated")]

    def _end(self) -> list[cn.Event]:
        self.finished = True
        return self._close() + [cn.Finish(_finish_from(self._reason, self._calls))]

    def _event(self, data: str | None) -> list[cn.Event]:
        if data is None or self.finished:
            return []
        if data.strip() == "[DONE]":
            return self._end() if self._started else []
        try:
            body = jsonio.loads(data)
        except ValueError:
            self.finished = True  # not JSON: an error, never a normal stop
            return self._close() + [cn.StreamError("The upstream " + not_json(data).message, "upstream_malformed")]
        if not isinstance(body, dict):
            return []
        if body.get("error"):
            err = body["error"]
            self.finished = True
            message = err.get("message") if isinstance(err, dict) else str(err)
            return self._close() + [cn.StreamError(str(message), "upstream_error")]
        out: list[cn.Event] = []
        if not self._started:
            self._started = True
            out.append(cn.MessageStart(str(body.get("id") or "chatcmpl-gateway"), str(body.get("model") or ""),
                                       integer(body.get("created"))))
        choices = arr(body.get("choices"))
        choice = choices[0] if choices and isinstance(choices[0], dict) else {}
        delta = obj(choice.get("delta"))
        if isinstance(delta.get("reasoning_content"), str) and delta["reasoning_content"]:
            out += self._text("thinking", delta["reasoning_content"])
        if isinstance(delta.get("content"), str) and delta["content"]:
            out += self._text("text", delta["content"])
        for tc in delta.get("tool_calls") or () if isinstance(delta.get("tool_calls"), list) else ():
            if isinstance(tc, dict):
                out += self._tool(tc)
        if choice.get("finish_reason"):
            self._reason = choice["finish_reason"]
        if isinstance(body.get("usage"), dict):
            out.append(cn.UsageUpdate(_usage_of(body["usage"])))
        return out

    def _text(self, kind: str, text: str) -> list[cn.Event]:
        out: list[cn.Event] = []
        if self._open is None or self._open[1] != kind:
            out += self._close()
            self._open = (self._next, kind)
            self._next += 1
            out.append(cn.BlockStart(self._open[0], cn.Thinking("") if kind == "thinking" else cn.Text("")))
        index = self._open[0]
        return out + [cn.ThinkingDelta(index, text) if kind == "thinking" else cn.TextDelta(index, text)]

    def _tool(self, tc: dict[str, Any]) -> list[cn.Event]:
        n = integer(tc.get("index"))
        fn = obj(tc.get("function"))
        out: list[cn.Event] = []
        if n not in self._tools:
            out += self._close()
            index = self._tools[n] = self._next
            self._next += 1
            self._open = (index, f"tool:{n}")
            self._calls = True
            call_id = string(tc.get("id")) or call_ids.new_call_id()
            out.append(cn.BlockStart(index, cn.ToolCall(call_id, str(fn.get("name") or ""), "")))
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            out.append(cn.ArgumentsDelta(self._tools[n], args))
        return out

    def _close(self) -> list[cn.Event]:
        if self._open is None:
            return []
        index, self._open = self._open[0], None
        return [cn.BlockStop(index)]
