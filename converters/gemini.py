"""Gemini generateContent wire format (public API; Code Assist wraps the same body). Pure.

encode_request / decode_response / StreamDecoder face a Gemini upstream (choices below);
decode_request / encode_response / StreamEncoder face a Gemini client (google-genai SDK,
Gemini CLI; choices with them, further down), wrap_code_assist & co. the Code Assist envelope.

Choices the format forces:
- Gemini has no tool-call ids: ids are synthesised and carry the call's
  thoughtSignature (converters/call_ids.py); results are matched to calls by name.
- Function calls without a signature (history made by another model) get, for
  Gemini 3 models, the documented placeholder signature Gemini 3 accepts for them.
- Remote image URLs are refused with a 400 (the API only takes inline data or
  Files-API URIs; the converter does no I/O): send images as data: URLs.
- Tool results become functionResponse {"name", "response": {"content": text}}
  ({"error": text} for error results); their images follow as inlineData parts.
- Tool parameters go as Gemini's Schema (converters/gemini_schema.py), except for a tool with
  a free-form object parameter, which that Schema refuses: its JSON Schema goes as
  parametersJsonSchema instead.
- Thinking is not replayed to the public Gemini API (a signature from another provider
  would be refused). For Code Assist (encode_request(req, replay_thinking=True)), signed
  thinking goes back as thought parts with their thoughtSignature: Antigravity's Claude models
  refuse a tool loop whose model turn lost its signed thought, and Gemini CLI replays its
  thoughts the same way.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from typing import Any

from converters import call_ids, jsonio
from converters import canonical as cn
from converters.gemini_schema import open_object, to_gemini_schema
from converters.pipeline import SSERelabel, SSEStreamDecoder
from converters.shapes import string

SKIP_SIGNATURE = "skip_thought_signature_validator"  # Google's documented placeholder
_EFFORT_BUDGET = {"minimal": 0, "low": 1024, "medium": 8192, "high": 24576}
_FINISH: dict[str, cn.FinishReason] = {
    "STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter", "LANGUAGE": "error", "MALFORMED_FUNCTION_CALL": "error",
    "UNEXPECTED_TOOL_CALL": "error", "OTHER": "error", "FINISH_REASON_UNSPECIFIED": "error",
}
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
           504: "DEADLINE_EXCEEDED"}
STATUS_NAMES = frozenset((  # google.rpc.Code names, as error.status carries them
    "INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE", "UNAUTHENTICATED", "PERMISSION_DENIED",
    "NOT_FOUND", "ABORTED", "ALREADY_EXISTS", "RESOURCE_EXHAUSTED", "CANCELLED", "DATA_LOSS", "UNKNOWN",
    "INTERNAL", "NOT_IMPLEMENTED", "UNAVAILABLE", "DEADLINE_EXCEEDED",
))


def model_path(model: str) -> str:
    return model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"


# --- canonical -> Gemini request ---------------------------------------------

def encode_request(req: cn.Request, replay_thinking: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": _contents(req, replay_thinking)}
    if req.system:
        body["systemInstruction"] = {"parts": [{"text": t.text} for t in req.system]}
    # Gemini refuses a built-in tool beside function declarations ("Tool use with function calling
    # is unsupported"): web search is mapped only when there are none
    search = cn.hosted(req, () if req.tools else ("web_search",))
    if req.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t) for t in req.tools]}]
    elif search:
        body["tools"] = [{"googleSearch": {}}]
    if req.tool_choice:
        body["toolConfig"] = {"functionCallingConfig": _calling_config(req.tool_choice)}
    config = _generation_config(req)
    if config:
        body["generationConfig"] = config
    return body


def _contents(req: cn.Request, replay_thinking: bool = False) -> list[dict[str, Any]]:
    names = {b.id: b.name for m in req.messages for b in m.content if isinstance(b, cn.ToolCall)}
    placeholder = SKIP_SIGNATURE if "gemini-3" in req.model else None
    contents: list[dict[str, Any]] = []
    for i, m in enumerate(req.messages):
        parts: list[dict[str, Any]] = []
        for b in m.content:
            if replay_thinking and m.role == "assistant" and isinstance(b, cn.Thinking) and b.signature:
                parts.append({"text": b.text, "thought": True, "thoughtSignature": b.signature})
                continue
            parts += _parts(b, names, f"messages.{i}", placeholder)
        if not parts:
            continue
        role = "model" if m.role == "assistant" else "user"
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"] += parts
        else:
            contents.append({"role": role, "parts": parts})
    if not contents:
        raise cn.ConversionError("The conversation has no content to send.", "messages")
    return contents


def _parts(b: cn.Block, names: dict[str, str], where: str, placeholder: str | None) -> list[dict[str, Any]]:
    if isinstance(b, cn.Text):
        return [{"text": b.text}] if b.text else []
    if isinstance(b, cn.Image):
        return [_inline(b, where)]
    if isinstance(b, cn.ToolCall):
        try:
            args = jsonio.loads(b.arguments or "{}")
        except ValueError:
            raise cn.ConversionError(f"Tool call {b.id} has arguments that are not JSON.", where) from None
        part: dict[str, Any] = {"functionCall": {"name": b.name,
                                                 "args": args if isinstance(args, dict) else {"value": args}}}
        if b.signature or placeholder:
            part["thoughtSignature"] = b.signature or placeholder
        return [part]
    if isinstance(b, cn.ToolResult):
        name = b.name or names.get(b.call_id)
        if not name:
            raise cn.ConversionError(f"Tool result for unknown call {b.call_id!r}: Gemini needs the "
                                     "function's name, so the call must be in the conversation.", where)
        text = cn.text_of(b.content)
        response = {"error" if b.is_error else "content": text}
        return [{"functionResponse": {"name": name, "response": response}}] + [
            _inline(img, where) for img in b.content if isinstance(img, cn.Image)]
    return []  # thinking: not replayed to Gemini


def _inline(img: cn.Image, where: str) -> dict[str, Any]:
    if img.data is None:
        raise cn.ConversionError("Gemini providers take images as inline data only; send a "
                                 "data:<mime>;base64,... URL instead of a remote URL.", where)
    return {"inlineData": {"mimeType": img.media_type or "image/png", "data": img.data}}


def _declaration(t: cn.Tool) -> dict[str, Any]:
    d: dict[str, Any] = {"name": t.name}
    if t.description:
        d["description"] = t.description
    source = t.parameters or {}
    params = to_gemini_schema(source) if source else None
    if params and open_object(params):  # a free-form object Gemini's Schema cannot say
        d["parametersJsonSchema"] = {k: v for k, v in source.items() if k != "$schema"}
    elif params and params.get("properties"):
        d["parameters"] = params
    return d


def _calling_config(choice: cn.ToolChoice) -> dict[str, Any]:
    if choice.mode == "tool":
        return {"mode": "ANY", "allowedFunctionNames": [choice.name]}
    return {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice.mode]}


def _generation_config(req: cn.Request) -> dict[str, Any]:
    c: dict[str, Any] = {}
    for src, dst in (("max_tokens", "maxOutputTokens"), ("temperature", "temperature"), ("top_p", "topP"),
                     ("top_k", "topK"), ("seed", "seed"), ("presence_penalty", "presencePenalty"),
                     ("frequency_penalty", "frequencyPenalty")):
        value = getattr(req, src)
        if value is not None:
            c[dst] = value
    if req.stop:
        c["stopSequences"] = req.stop[:5]
    rf = req.response_format
    if rf and rf.type in ("json_object", "json_schema"):
        c["responseMimeType"] = "application/json"
        if rf.type == "json_schema" and rf.schema:
            c["responseSchema"] = to_gemini_schema(rf.schema)
    r = req.reasoning
    if r and r.level:  # fitted to a Gemini 3 model (converters/thinking.py)
        c["thinkingConfig"] = {"includeThoughts": r.include_thoughts, "thinkingLevel": r.level}
    elif r:
        budget = r.budget_tokens if r.budget_tokens is not None else _EFFORT_BUDGET.get(r.effort or "", None)
        thinking: dict[str, Any] = {"includeThoughts": r.include_thoughts and budget != 0}
        if budget is not None:
            thinking["thinkingBudget"] = budget
        c["thinkingConfig"] = thinking
    return c


# --- Gemini response -> canonical --------------------------------------------

def usage_of(meta: dict[str, Any] | None) -> cn.Usage:
    m = meta or {}
    thoughts = m.get("thoughtsTokenCount") or 0
    return cn.Usage(
        input_tokens=m.get("promptTokenCount") or 0,
        output_tokens=(m.get("candidatesTokenCount") or 0) + thoughts,
        cached_tokens=m.get("cachedContentTokenCount") or 0,
        reasoning_tokens=thoughts,
    )


def finish_of(reason: str | None, has_calls: bool) -> cn.FinishReason:
    if reason in (None, "STOP") and has_calls:
        return "tool_calls"
    return _FINISH.get(reason or "STOP", "error")


def _candidate(body: dict[str, Any]) -> dict[str, Any]:
    cands = body.get("candidates") or []
    return cands[0] if cands and isinstance(cands[0], dict) else {}


def decode_response(body: dict[str, Any]) -> cn.Response:
    """A GenerateContentResponse (unwrapped from Code Assist's {response}) -> canonical."""
    body = body.get("response", body) if "candidates" not in body else body
    if not isinstance(body, dict):
        body = {}
    cand = _candidate(body)
    blocks: list[cn.Block] = []
    for part in (cand.get("content") or {}).get("parts") or ():
        if not isinstance(part, dict):
            continue
        if "functionCall" in part:
            fc = part["functionCall"] or {}
            blocks.append(cn.ToolCall(call_ids.new_call_id(part.get("thoughtSignature")), fc.get("name", ""),
                                      json.dumps(fc.get("args") or {}, ensure_ascii=False, separators=(",", ":")),
                                      part.get("thoughtSignature")))
        elif part.get("thought"):
            blocks.append(cn.Thinking(part.get("text") or "", part.get("thoughtSignature")))
        elif isinstance(part.get("inlineData"), dict):
            data = part["inlineData"]
            blocks.append(cn.Image(data.get("mimeType") or "", data.get("data")))
        elif "text" in part:
            if blocks and isinstance(blocks[-1], cn.Text):
                blocks[-1].text += part["text"]
            else:
                blocks.append(cn.Text(part["text"]))
    reason = cand.get("finishReason")
    if not cand and (body.get("promptFeedback") or {}).get("blockReason"):
        reason = "SAFETY"
    has_calls = any(isinstance(b, cn.ToolCall) for b in blocks)
    return cn.Response(
        id=body.get("responseId") or f"gemini-{int(time.time() * 1000)}", model=body.get("modelVersion") or "",
        content=blocks, finish=finish_of(reason, has_calls), usage=usage_of(body.get("usageMetadata")),
        created=int(time.time()), finish_detail=reason if reason not in (None, "STOP") else None,
    )


def decode_error(status: int, body: bytes) -> tuple[str, str | None]:
    """Google error JSON -> (message, status name). Non-JSON bodies give (text, None)."""
    try:
        err = jsonio.loads(body).get("error")
    except (ValueError, AttributeError):
        err = None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return err["message"], err.get("status")
    return body[:300].decode("utf-8", "replace").strip(), None


def retry_delay(body: bytes) -> int | None:
    """Whole seconds from a google.rpc.RetryInfo retryDelay ("7s", "0.47s") or quotaResetDelay."""
    try:
        details = jsonio.loads(body)["error"].get("details") or []
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    for d in details:
        if not isinstance(d, dict):
            continue
        raw = d.get("retryDelay") or (d.get("metadata") or {}).get("quotaResetDelay")
        if isinstance(raw, str) and raw.endswith("s"):
            try:
                return max(1, math.ceil(float(raw[:-1])))
            except ValueError:
                pass
    return None


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}}


def count_request(req: cn.Request) -> dict[str, Any]:
    """Canonical -> a :countTokens body counting everything generateContent would send."""
    return {"generateContentRequest": {"model": model_path(req.model), **encode_request(req)}}


def count_of(body: Any) -> int:
    """{"totalTokens": n} -> n (absent means 0, as proto3 JSON omits zeros); else ValueError."""
    if not isinstance(body, dict):
        raise ValueError("expected a CountTokensResponse object")
    n = body.get("totalTokens", 0)
    if not isinstance(n, int) or isinstance(n, bool):
        raise ValueError("totalTokens is not an integer")
    return n


def count_body_of(data: Any) -> Any:
    """A :countTokens request's content: its generateContentRequest, else the request itself
    ({"contents": [...]})."""
    if isinstance(data, dict) and isinstance(data.get("generateContentRequest"), dict):
        return data["generateContentRequest"]
    return data


_CLIENT_METHODS = ["generateContent", "streamGenerateContent", "countTokens"]


def model_entry(model: str) -> dict[str, Any]:
    return {"name": model_path(model), "version": "gateway", "displayName": model,
            "supportedGenerationMethods": _CLIENT_METHODS}


def model_list(models: list[str]) -> dict[str, Any]:
    """GET /v1beta/models in Gemini's shape (one page holding everything)."""
    return {"models": [model_entry(m) for m in models]}


class StreamDecoder(SSEStreamDecoder):
    """Gemini SSE (alt=sse, no [DONE]) -> canonical stream events.

    Text and thought parts extend the open block of their kind; each functionCall
    is a block of its own (Gemini sends calls whole, never in fragments)."""

    final_event = "finishReason"

    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self._open: tuple[int, type] | None = None  # (index, block type) of the open text/thinking block
        self._next = 0
        self._calls = False
        self._usage = cn.Usage()

    def _event(self, data: str, name: str | None = None) -> list[cn.Event]:
        try:
            body = jsonio.loads(data)
        except ValueError:
            return self._malformed(data)
        if not isinstance(body, dict):
            return []
        body = body.get("response", body) if "candidates" not in body else body
        if not isinstance(body, dict):  # {"response": null}: nothing to say
            return []
        if isinstance(body.get("error"), dict):
            self.finished = True
            err = body["error"]
            return self._close_block() + [cn.StreamError(str(err.get("message") or err), "upstream_error")]
        out: list[cn.Event] = []
        if not self._started:
            self._started = True
            out.append(cn.MessageStart(body.get("responseId") or f"gemini-{int(time.time() * 1000)}",
                                       body.get("modelVersion") or "", int(time.time())))
        cand = _candidate(body)
        for part in (cand.get("content") or {}).get("parts") or ():
            if isinstance(part, dict):
                out += self._part(part)
        if body.get("usageMetadata"):
            self._usage = usage_of(body["usageMetadata"])
        reason = cand.get("finishReason")
        if not cand and (body.get("promptFeedback") or {}).get("blockReason"):
            reason = "SAFETY"
        if reason:
            self.finished = True
            out += self._close_block()
            out.append(cn.UsageUpdate(self._usage))
            out.append(cn.Finish(finish_of(reason, self._calls), reason if reason != "STOP" else None))
        return out

    def _part(self, part: dict[str, Any]) -> list[cn.Event]:
        if "functionCall" in part:
            fc = part["functionCall"] or {}
            sig = part.get("thoughtSignature")
            call = cn.ToolCall(call_ids.new_call_id(sig), fc.get("name", ""), "", sig)
            index = self._next
            self._next += 1
            self._calls = True
            args = json.dumps(fc.get("args") or {}, ensure_ascii=False, separators=(",", ":"))
            return self._close_block() + [cn.BlockStart(index, call), cn.ArgumentsDelta(index, args),
                                          cn.BlockStop(index)]
        kind = cn.Thinking if part.get("thought") else cn.Text
        text = part.get("text") or ""
        out: list[cn.Event] = []
        if self._open is None or self._open[1] is not kind:
            out += self._close_block()
            self._open = (self._next, kind)
            self._next += 1
            out.append(cn.BlockStart(self._open[0], kind("")))
        index = self._open[0]
        if text:
            out.append(cn.ThinkingDelta(index, text) if kind is cn.Thinking else cn.TextDelta(index, text))
        if part.get("thoughtSignature") and kind is cn.Thinking:
            # a signature ends its thinking block: the next thought part starts a new one
            out.append(cn.SignatureDelta(index, part["thoughtSignature"]))
            out += self._close_block()
        return out

    def _close_block(self) -> list[cn.Event]:
        if self._open is None:
            return []
        index, self._open = self._open[0], None
        return [cn.BlockStop(index)]

    _close_all = _close_block


# =============================================================================
# The client-side half: Gemini clients (google-genai SDK, Gemini CLI) in front of
# any backend. decode_request reads their GenerateContentRequest; encode_response
# and StreamEncoder answer them.
#
# Choices:
# - Keys are read in camelCase and snake_case alike at every level the format
#   defines (the google-genai SDK sends thinking_config, parameters_json_schema,
#   property_ordering, max_items ... in snake_case); user data (args, function
#   responses, JSON schemas' property names) is never renamed.
# - thoughtSignature and inlineData values the Python SDK re-encodes as URL-safe
#   base64 are turned back into standard base64 (same bytes): Anthropic compares
#   signatures as strings, and data: URLs want standard base64.
# - Call ids: a functionCall's `id` if the client sent one, else a synthesised one
#   (call_ids.new_call_id(thoughtSignature)). A functionResponse is matched by its
#   `id` when that names a call, else by name: the most recent model turn with an
#   unanswered call of that name, earliest such call first (parallel calls of one
#   function are answered in order). An unmatched response gets a fresh id.
# - functionResponse.response: {"content"|"output"|"result": "<text>"} alone gives
#   that text, {"error": ...} an error result, anything else its JSON text.
#   functionResponse.parts (inline images) join the result.
# - Consecutive thought parts form one Thinking block until a part carries a
#   signature (streams deliver the signature on a last, empty thought part);
#   consecutive text parts of a model turn are one Text block.
# - `parameters` (Gemini's OpenAPI-subset Schema) becomes JSON Schema (types
#   lower-cased, nullable -> a "null" type, snake keywords camelCased) so that
#   OpenAI/Anthropic backends accept it; `parametersJsonSchema` /
#   `responseJsonSchema` are used as given. to_gemini_schema turns both back.
# - thinkingConfig: budget 0 -> no reasoning (req.reasoning None: a backend is
#   never asked for reasoning the client turned off, but a Gemini backend then
#   uses its default); budget -1 (dynamic) -> no budget; thinkingLevel -> effort;
#   includeThoughts is kept. Only includeThoughts: false and nothing else -> None.
# - toolConfig: ANY with one allowed name -> that tool; ANY with several ->
#   required (the restriction is dropped and named); VALIDATED -> auto.
# - Built-in tools (googleSearch, codeExecution, urlContext, ...) are hosted tools: mapped
#   where the target has one (web search), else dropped and named in a response header.
# - Refused (ConversionError naming the parameter): candidateCount > 1, response
#   MIME types other than text/plain and application/json, executableCode /
#   codeExecutionResult / toolCall parts. Dropped and named in req.dropped:
#   safetySettings, cachedContent, responseModalities other than ["TEXT"],
#   mediaResolution and any other unknown field.
# - fileData becomes Image(url=fileUri): backends that take only inline data (a
#   Gemini API key backend included: it does not know another project's files)
#   refuse it with a 400.
# - Responses: parts are thinking {text, thought: true, thoughtSignature?}, text,
#   and {functionCall: {id, name, args}, thoughtSignature?}; redacted thinking
#   has no Gemini form and is left out. An empty answer has one empty text part
#   (the SDKs' chat sessions drop turns without parts). finishReason: STOP,
#   MAX_TOKENS, SAFETY (or the upstream's own Gemini content-filter reason), and
#   for errors the upstream's Gemini reason if it is one, else OTHER with a
#   finishMessage. usageMetadata omits zero thoughts/cached counts, as Gemini does.
# - Streams (alt=sse): "data: <GenerateContentResponse>\r\n\r\n", no [DONE]. Each
#   text/thinking delta is one event with one part; a thinking signature rides on
#   the last thought part of the same encode() batch or comes as an empty thought
#   part; a tool call is sent whole when its block stops. finishReason and
#   usageMetadata go on the last content event of the batch that finishes, else
#   on an event with one empty text part. A StreamError becomes
#   {"error": {code, message, status}} and ends the stream. StreamEncoder(model,
#   sse=False) writes the JSON-array form instead (streamGenerateContent without
#   alt=sse), code_assist=True wraps each event in {"response": ...}.
# =============================================================================

_URL_TO_STD = str.maketrans("-_", "+/")
_URLSAFE_B64 = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_MAX_SCHEMA_DEPTH = 64
_RESULT_KEYS = ("content", "output", "result")
_PART_EXTRAS = {"thought", "thoughtSignature", "partMetadata", "videoMetadata", "mediaResolution"}
_GEMINI_REASONS = {"STOP", "MAX_TOKENS", "SAFETY", "RECITATION", "LANGUAGE", "OTHER", "BLOCKLIST",
                   "PROHIBITED_CONTENT", "SPII", "MALFORMED_FUNCTION_CALL", "IMAGE_SAFETY",
                   "UNEXPECTED_TOOL_CALL", "IMAGE_PROHIBITED_CONTENT", "NO_IMAGE", "IMAGE_RECITATION",
                   "IMAGE_OTHER"}
_CAMEL: dict[str, str] = {}


def _camel(key: str) -> str:
    """thinking_config -> thinkingConfig; camelCase keys are returned unchanged."""
    out = _CAMEL.get(key)
    if out is None:
        head, *rest = key.split("_")
        out = head + "".join(p[:1].upper() + p[1:] for p in rest) if rest and head else key
        if len(_CAMEL) < 4096:
            _CAMEL[key] = out
    return out


def _keys(d: dict[str, Any]) -> dict[str, Any]:
    """A format object with its keys in camelCase (a non-null value wins over a null one)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = _camel(k) if isinstance(k, str) else k
        if v is not None or name not in out:
            out[name] = v
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _obj(v: Any, param: str) -> dict[str, Any]:
    """An object's camelCase view ({} for null), or a ConversionError naming `param`."""
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise cn.ConversionError(f"'{param}' must be an object.", param)
    return _keys(v)


def _arr(v: Any, param: str) -> list:
    if v is None:
        return []
    if not isinstance(v, list):
        raise cn.ConversionError(f"'{param}' must be an array.", param)
    return v


def _opt_str(v: Any, param: str) -> str | None:
    if v is None or isinstance(v, str):
        return v
    raise cn.ConversionError(f"'{param}' must be a string.", param)


def _opt_int(v: Any, param: str) -> int | None:
    if v is None or _is_int(v):
        return v
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():  # the Python SDK sends topK as 40.0
        return int(v)
    raise cn.ConversionError(f"'{param}' must be an integer.", param)


def _opt_num(v: Any, param: str) -> int | float | None:
    if v is None or _is_num(v):
        return v
    raise cn.ConversionError(f"'{param}' must be a number.", param)


def _std_base64(value: str) -> str:
    """URL-safe base64 (as the Python SDK re-encodes bytes) -> standard base64; anything else unchanged."""
    if value == SKIP_SIGNATURE or ("-" not in value and "_" not in value) or not _URLSAFE_B64.fullmatch(value):
        return value
    return value.translate(_URL_TO_STD)


def _dumps(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


# --- Gemini request -> canonical ---------------------------------------------

def decode_request(data: Any, model: str) -> cn.Request:
    """A GenerateContentRequest (`model` from the URL path) -> canonical. Raises only cn.ConversionError."""
    if not isinstance(data, dict):
        raise cn.ConversionError("The request body must be a JSON object.")
    body = _keys(data)
    name = model.removeprefix("models/") if isinstance(model, str) else ""
    contents = body.pop("contents", None)
    if contents is None:
        raise cn.ConversionError("Missing required parameter: 'contents'.", "contents")
    if not isinstance(contents, list) or not contents:
        raise cn.ConversionError("'contents' must be a non-empty array of Content objects.", "contents")
    req = cn.Request(model=name, messages=_messages(contents),
                     system=_system_instruction(body.pop("systemInstruction", None)))
    req.include_usage = True  # Gemini streams always carry usageMetadata
    dropped: list[str] = []
    req.tools = _client_tools(body.pop("tools", None), dropped, req.hosted_tools)
    req.tool_choice = _client_tool_choice(body.pop("toolConfig", None), dropped)
    _client_generation_config(req, body.pop("generationConfig", None), dropped)
    for key in ("model", "sessionId", "userPromptId"):  # envelope leftovers (Code Assist), nothing to honour
        body.pop(key, None)
    dropped += [k for k, v in body.items() if v is not None]  # safetySettings, cachedContent, labels...
    req.dropped = sorted(set(dropped))
    return req


def _system_instruction(si: Any) -> list[cn.Text]:
    if si is None:
        return []
    if isinstance(si, str):
        return [cn.Text(si)] if si else []
    if isinstance(si, dict):
        d = _keys(si)
        parts = d.get("parts") if "parts" in d else [si]
    else:
        parts = si
    out: list[cn.Text] = []
    for k, part in enumerate(_arr(parts, "systemInstruction.parts")):
        where = f"systemInstruction.parts.{k}"
        if isinstance(part, str):
            text: Any = part
        elif isinstance(part, dict):
            p = _keys(part)
            text = p.get("text")
            if not isinstance(text, str) and any(v is not None for key, v in p.items() if key not in _PART_EXTRAS):
                raise cn.ConversionError("systemInstruction takes text parts only.", where)
        else:
            raise cn.ConversionError("systemInstruction parts must be objects.", where)
        if isinstance(text, str) and text:
            out.append(cn.Text(text))
    return out


class _Calls:
    """The function calls of a conversation, to give each functionResponse its call's id."""

    def __init__(self) -> None:
        self.turns: list[list[list]] = []  # per model turn: [id, name, answered]
        self.ids: dict[str, list] = {}

    def new_turn(self) -> None:
        self.turns.append([])

    def add(self, call_id: str, name: str) -> None:
        entry = [call_id, name, False]
        if not self.turns:
            self.turns.append([])
        self.turns[-1].append(entry)
        self.ids.setdefault(call_id, entry)

    def answer(self, call_id: str | None, name: str | None) -> tuple[str, str | None]:
        """(call id, name) for a response."""
        entry = self.ids.get(call_id) if call_id else None
        if entry is None and name is not None:
            for turn in reversed(self.turns):
                entry = next((e for e in turn if e[1] == name and not e[2]), None)
                if entry is not None:
                    break
        if entry is None:
            return call_id or call_ids.new_call_id(), name
        entry[2] = True
        return entry[0], name or entry[1]


def _messages(contents: list) -> list[cn.Message]:
    messages: list[cn.Message] = []
    calls = _Calls()
    for i, c in enumerate(contents):
        where = f"contents.{i}"
        content = _obj(c, where)
        role = content.get("role") or "user"
        if role == "model":
            kind = "assistant"
            calls.new_turn()
        elif role in ("user", "function", "tool"):
            kind = "user"
        else:
            raise cn.ConversionError(f"Unsupported content role {role!r}: use 'user' or 'model'.", f"{where}.role")
        blocks: list[cn.Block] = []
        for k, part in enumerate(_arr(content.get("parts"), f"{where}.parts")):
            _part_in(part, f"{where}.parts.{k}", kind == "assistant", blocks, calls)
        if not blocks:
            continue
        if messages and messages[-1].role == kind:
            messages[-1].content.extend(blocks)
        else:
            messages.append(cn.Message(kind, blocks))  # type: ignore[arg-type]
    return messages


def _part_in(raw: Any, where: str, model_turn: bool, blocks: list[cn.Block], calls: _Calls) -> None:
    if isinstance(raw, str):  # lenient: a bare string is a text part
        raw = {"text": raw}
    part = _obj(raw, where)
    sig = _opt_str(part.get("thoughtSignature"), f"{where}.thoughtSignature")
    sig = _std_base64(sig) if sig else None
    if part.get("functionCall") is not None:
        fc = _obj(part["functionCall"], f"{where}.functionCall")
        name = fc.get("name")
        if not isinstance(name, str) or not name:
            raise cn.ConversionError("A functionCall needs a name.", f"{where}.functionCall.name")
        args = fc.get("args")
        if args is not None and not isinstance(args, dict):
            raise cn.ConversionError("functionCall args must be an object.", f"{where}.functionCall.args")
        call_id = _opt_str(fc.get("id"), f"{where}.functionCall.id") or call_ids.new_call_id(sig)
        calls.add(call_id, name)
        blocks.append(cn.ToolCall(call_id, name, _dumps(args or {}), sig))
    elif part.get("functionResponse") is not None:
        blocks.append(_function_response(part["functionResponse"], f"{where}.functionResponse", calls))
    elif part.get("inlineData") is not None:
        blocks.append(_inline_data(part["inlineData"], f"{where}.inlineData"))
    elif part.get("fileData") is not None:
        fd = _obj(part["fileData"], f"{where}.fileData")
        uri = fd.get("fileUri")
        if not isinstance(uri, str) or not uri:
            raise cn.ConversionError("fileData needs a fileUri.", f"{where}.fileData.fileUri")
        blocks.append(cn.Image(_opt_str(fd.get("mimeType"), f"{where}.fileData.mimeType") or "", url=uri))
    elif part.get("text") is not None or part.get("thought"):
        text = _opt_str(part.get("text"), f"{where}.text") or ""
        if part.get("thought") is True:
            last = blocks[-1] if blocks else None
            if isinstance(last, cn.Thinking) and last.signature is None:
                last.text += text
                last.signature = sig
            else:
                blocks.append(cn.Thinking(text, sig))
        elif text:
            if model_turn and blocks and isinstance(blocks[-1], cn.Text):
                blocks[-1].text += text
            else:
                blocks.append(cn.Text(text))
    else:
        other = next((k for k, v in part.items() if v is not None and k not in _PART_EXTRAS), None)
        if other is not None:
            raise cn.ConversionError(f"Part type {other!r} is not supported through this gateway.",
                                     f"{where}.{other}")


def _inline_data(raw: Any, where: str) -> cn.Image:
    blob = _obj(raw, where)
    data = blob.get("data")
    if not isinstance(data, str):
        raise cn.ConversionError("inlineData needs base64 data.", f"{where}.data")
    mime = _opt_str(blob.get("mimeType"), f"{where}.mimeType") or ""
    return cn.Image(mime, data.translate(_URL_TO_STD))


def _function_response(raw: Any, where: str, calls: _Calls) -> cn.ToolResult:
    fr = _obj(raw, where)
    name = _opt_str(fr.get("name"), f"{where}.name")
    fid = _opt_str(fr.get("id"), f"{where}.id")
    if not name and not fid:
        raise cn.ConversionError("A functionResponse needs the function's name.", f"{where}.name")
    call_id, name = calls.answer(fid, name or None)
    response = fr.get("response")
    content: list[cn.Text | cn.Image] = []
    is_error = False
    if isinstance(response, dict):
        if "error" in response and response["error"] is not None:
            is_error = True
            err = response["error"]
            rest = {k: v for k, v in response.items() if k != "error"}
            text = err if isinstance(err, str) and not rest else _dumps(response)
        elif len(response) == 1 and next(iter(response)) in _RESULT_KEYS and isinstance(
                next(iter(response.values())), str):
            text = next(iter(response.values()))
        else:
            text = _dumps(response) if response else ""
    elif response is None:
        text = ""
    else:
        raise cn.ConversionError("functionResponse response must be an object.", f"{where}.response")
    if text:
        content.append(cn.Text(text))
    for k, p in enumerate(_arr(fr.get("parts"), f"{where}.parts")):
        pp = _obj(p, f"{where}.parts.{k}")
        if pp.get("inlineData") is not None:
            content.append(_inline_data(pp["inlineData"], f"{where}.parts.{k}.inlineData"))
        elif pp.get("fileData") is not None:
            fd = _obj(pp["fileData"], f"{where}.parts.{k}.fileData")
            uri = fd.get("fileUri")
            if not isinstance(uri, str) or not uri:
                raise cn.ConversionError("fileData needs a fileUri.", f"{where}.parts.{k}.fileData.fileUri")
            content.append(cn.Image(string(fd.get("mimeType")), url=uri))
    return cn.ToolResult(call_id, content, is_error, name)


_HOSTED = {"googleSearch": "web_search", "google_search": "web_search", "googleSearchRetrieval": "web_search",
           "google_search_retrieval": "web_search", "codeExecution": "code_execution",
           "code_execution": "code_execution"}


def _client_tools(raw: Any, dropped: list[str], hosted: list[cn.HostedTool]) -> list[cn.Tool]:
    """Function declarations; built-in tools (googleSearch, codeExecution, urlContext, ...) go to
    `hosted` (mapped where the target has one, else dropped and named)."""
    out: list[cn.Tool] = []
    for i, t in enumerate(_arr(raw, "tools")):
        tool = _obj(t, f"tools.{i}")
        for key, value in tool.items():
            if value is None:
                continue
            if key not in ("functionDeclarations", "function_declarations"):
                hosted.append(cn.HostedTool(_HOSTED.get(key, key), value if isinstance(value, dict) else {}))
                continue
            for j, d in enumerate(_arr(value, f"tools.{i}.functionDeclarations")):
                out.append(_client_declaration(d, f"tools.{i}.functionDeclarations.{j}", dropped))
    return out


def _client_declaration(raw: Any, where: str, dropped: list[str]) -> cn.Tool:
    d = _obj(raw, where)
    name = d.get("name")
    if not isinstance(name, str) or not name:
        raise cn.ConversionError("A function declaration needs a name.", f"{where}.name")
    description = _opt_str(d.get("description"), f"{where}.description")
    params: dict | None = None
    if d.get("parametersJsonSchema") is not None:
        params = d["parametersJsonSchema"]
        if not isinstance(params, dict):
            raise cn.ConversionError("parametersJsonSchema must be a JSON Schema object.",
                                     f"{where}.parametersJsonSchema")
    elif d.get("parameters") is not None:
        params = _json_schema(d["parameters"], f"{where}.parameters")
    for key in ("response", "responseJsonSchema", "behavior"):
        if d.get(key) is not None:
            dropped.append(f"{where}.{key}")
    return cn.Tool(name, description or None, params)


def _json_schema(schema: Any, where: str, depth: int = 0) -> dict:
    """Gemini's Schema (OpenAPI subset, upper-case types, nullable) -> JSON Schema."""
    if not isinstance(schema, dict):
        raise cn.ConversionError("A schema must be an object.", where)
    if depth > _MAX_SCHEMA_DEPTH:
        raise cn.ConversionError("The schema is nested too deeply.", where)
    out: dict[str, Any] = {}
    nullable = False
    for k, v in schema.items():
        key = _camel(k) if isinstance(k, str) else k
        if v is None:
            continue
        if key == "type":
            if isinstance(v, str):
                if v.upper() != "TYPE_UNSPECIFIED":
                    out["type"] = v.lower()
            elif isinstance(v, list):
                out["type"] = [x.lower() if isinstance(x, str) else x for x in v]
            else:
                out["type"] = v
        elif key == "nullable":
            nullable = v is True
        elif key == "properties" and isinstance(v, dict):
            out["properties"] = {name: _json_schema(s, f"{where}.properties", depth + 1) for name, s in v.items()}
        elif key in ("items", "not", "additionalProperties") and isinstance(v, dict):
            out[key] = _json_schema(v, f"{where}.{key}", depth + 1)
        elif key in ("anyOf", "oneOf", "allOf") and isinstance(v, list):
            out[key] = [_json_schema(s, f"{where}.{key}", depth + 1) for s in v]
        else:
            out[key] = v
    if nullable:
        t = out.get("type")
        if isinstance(t, str):
            out["type"] = [t, "null"]
        elif isinstance(t, list) and "null" not in t:
            out["type"] = t + ["null"]
        elif isinstance(out.get("anyOf"), list):
            out["anyOf"] = out["anyOf"] + [{"type": "null"}]
    return out


def _client_tool_choice(raw: Any, dropped: list[str]) -> cn.ToolChoice | None:
    config = _obj(raw, "toolConfig")
    for key, v in config.items():
        if key != "functionCallingConfig" and v is not None:
            dropped.append(f"toolConfig.{key}")
    fcc = _obj(config.get("functionCallingConfig"), "toolConfig.functionCallingConfig")
    where = "toolConfig.functionCallingConfig"
    mode = _opt_str(fcc.get("mode"), f"{where}.mode")
    names = _arr(fcc.get("allowedFunctionNames"), f"{where}.allowedFunctionNames")
    if not all(isinstance(n, str) for n in names):
        raise cn.ConversionError("allowedFunctionNames must hold strings.", f"{where}.allowedFunctionNames")
    mode = (mode or "").upper()
    if mode in ("", "MODE_UNSPECIFIED"):
        choice = None
    elif mode in ("AUTO", "VALIDATED"):
        choice = cn.ToolChoice("auto")
    elif mode == "NONE":
        choice = cn.ToolChoice("none")
    elif mode == "ANY":
        choice = cn.ToolChoice("tool", names[0]) if len(names) == 1 else cn.ToolChoice("required")
    else:
        raise cn.ConversionError(f"Unknown function calling mode {mode!r}.", f"{where}.mode")
    if names and not (choice and choice.mode == "tool"):
        dropped.append(f"{where}.allowedFunctionNames")
    return choice


def _client_generation_config(req: cn.Request, raw: Any, dropped: list[str]) -> None:
    where = "generationConfig"
    gc = _obj(raw, where)
    req.max_tokens = _opt_int(gc.pop("maxOutputTokens", None), f"{where}.maxOutputTokens")
    req.temperature = _opt_num(gc.pop("temperature", None), f"{where}.temperature")
    req.top_p = _opt_num(gc.pop("topP", None), f"{where}.topP")
    req.top_k = _opt_int(gc.pop("topK", None), f"{where}.topK")
    req.seed = _opt_int(gc.pop("seed", None), f"{where}.seed")
    req.presence_penalty = _opt_num(gc.pop("presencePenalty", None), f"{where}.presencePenalty")
    req.frequency_penalty = _opt_num(gc.pop("frequencyPenalty", None), f"{where}.frequencyPenalty")
    stop = _arr(gc.pop("stopSequences", None), f"{where}.stopSequences")
    if not all(isinstance(s, str) for s in stop):
        raise cn.ConversionError("stopSequences must hold strings.", f"{where}.stopSequences")
    req.stop = list(stop)
    count = _opt_int(gc.pop("candidateCount", None), f"{where}.candidateCount")
    if count is not None and count > 1:
        raise cn.ConversionError("Only candidateCount 1 is supported through this gateway.",
                                 f"{where}.candidateCount")
    mime = _opt_str(gc.pop("responseMimeType", None), f"{where}.responseMimeType")
    json_schema, schema = gc.pop("responseJsonSchema", None), gc.pop("responseSchema", None)
    if mime and mime.split(";")[0].strip().lower() == "application/json":
        if json_schema is not None:
            if not isinstance(json_schema, dict):
                raise cn.ConversionError("responseJsonSchema must be a JSON Schema object.",
                                         f"{where}.responseJsonSchema")
            req.response_format = cn.ResponseFormat("json_schema", json_schema)
        elif schema is not None:
            req.response_format = cn.ResponseFormat("json_schema", _json_schema(schema, f"{where}.responseSchema"))
        else:
            req.response_format = cn.ResponseFormat("json_object")
    elif mime and mime.split(";")[0].strip().lower() != "text/plain":
        raise cn.ConversionError(f"responseMimeType {mime!r} is not supported through this gateway "
                                 "(text/plain or application/json).", f"{where}.responseMimeType")
    elif json_schema is not None or schema is not None:
        dropped.append(f"{where}.{'responseJsonSchema' if json_schema is not None else 'responseSchema'}")
    req.reasoning = _client_thinking(gc.pop("thinkingConfig", None), f"{where}.thinkingConfig")
    if gc.get("responseModalities") is not None and gc["responseModalities"] in (["TEXT"], ["text"]):
        gc.pop("responseModalities")
    dropped += [f"{where}.{k}" for k, v in gc.items() if v is not None]


def _client_thinking(raw: Any, where: str) -> cn.Reasoning | None:
    tc = _obj(raw, where)
    if not tc:
        return None
    include = tc.get("includeThoughts")
    if include is not None and not isinstance(include, bool):
        raise cn.ConversionError("includeThoughts must be a boolean.", f"{where}.includeThoughts")
    budget = _opt_int(tc.get("thinkingBudget"), f"{where}.thinkingBudget")
    level = _opt_str(tc.get("thinkingLevel"), f"{where}.thinkingLevel")
    if budget is not None and budget < -1:
        raise cn.ConversionError("thinkingBudget must be -1 (dynamic), 0 (off) or a token count.",
                                 f"{where}.thinkingBudget")
    if budget == 0:
        return None
    effort = level.lower() if level and level.upper() != "THINKING_LEVEL_UNSPECIFIED" else None
    if effort is not None and effort not in ("minimal", "low", "medium", "high"):
        raise cn.ConversionError(f"Unknown thinkingLevel {level!r}.", f"{where}.thinkingLevel")
    if budget is not None and budget > 0:
        return cn.Reasoning(budget_tokens=budget, include_thoughts=include is True)
    if effort is None and include is not True:
        return None  # only includeThoughts: false (or dynamic budget without thoughts): the backend's default
    return cn.Reasoning(effort=effort, include_thoughts=include is True)


# --- canonical -> Gemini response (to a client) -------------------------------

def usage_metadata(u: cn.Usage) -> dict[str, Any]:
    meta: dict[str, Any] = {"promptTokenCount": u.input_tokens,
                            "candidatesTokenCount": max(0, u.output_tokens - u.reasoning_tokens),
                            "totalTokenCount": u.total_tokens}
    if u.reasoning_tokens:
        meta["thoughtsTokenCount"] = u.reasoning_tokens
    if u.cached_tokens:
        meta["cachedContentTokenCount"] = u.cached_tokens
    return meta


def finish_reason_of(finish: cn.FinishReason, detail: str | None) -> str:
    if finish == "length":
        return "MAX_TOKENS"
    if finish == "content_filter":
        return detail if detail in _GEMINI_REASONS and _FINISH.get(detail) == "content_filter" else "SAFETY"
    if finish == "error":
        return detail if detail in _GEMINI_REASONS and detail != "STOP" else "OTHER"
    return "STOP"


def _candidate_out(parts: list[dict[str, Any]], finish: str | None = None,
                   detail: str | None = None) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
    if finish:
        cand["finishReason"] = finish
        if finish == "OTHER" and detail:
            cand["finishMessage"] = f"The upstream stopped the response: {detail}."
    cand["index"] = 0
    return cand


def _call_part(call: cn.ToolCall, arguments: str) -> dict[str, Any]:
    try:
        args = jsonio.loads(arguments) if arguments.strip() else {}
    except ValueError:
        args = {}
    fc: dict[str, Any] = {"id": call.id, "name": call.name, "args": args if isinstance(args, dict) else {"value": args}}
    part: dict[str, Any] = {"functionCall": fc}
    if call.signature:
        part["thoughtSignature"] = call.signature
    return part


def _response_parts(blocks: list[cn.Block]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for b in blocks:
        if isinstance(b, cn.Thinking) and (b.text or b.signature):
            part: dict[str, Any] = {"text": b.text, "thought": True}
            if b.signature:
                part["thoughtSignature"] = b.signature
            parts.append(part)
        elif isinstance(b, cn.Text) and b.text:
            parts.append({"text": b.text})
        elif isinstance(b, cn.ToolCall):
            parts.append(_call_part(b, b.arguments))
        elif isinstance(b, cn.Image) and b.data is not None:
            parts.append({"inlineData": {"mimeType": b.media_type or "image/png", "data": b.data}})
    return parts or [{"text": ""}]


def encode_response(r: cn.Response, model: str) -> dict[str, Any]:
    """Canonical -> GenerateContentResponse carrying the client's model name."""
    return {
        "candidates": [_candidate_out(_response_parts(r.content), finish_reason_of(r.finish, r.finish_detail),
                                      r.finish_detail)],
        "usageMetadata": usage_metadata(r.usage),
        "modelVersion": model,
        "responseId": r.id,
    }


class StreamEncoder:
    """Canonical stream events -> Gemini streamGenerateContent output.

    sse=True (alt=sse): "data: <json>\\r\\n\\r\\n" per event, no [DONE];
    sse=False: one JSON array, "[" + events joined by ",\\r\\n" + "]".
    code_assist=True wraps each response in {"response": ...} (Code Assist clients)."""

    def __init__(self, model: str, sse: bool = True, code_assist: bool = False):
        self.model = model
        self.sse = sse
        self.code_assist = code_assist
        self.id = f"gemini-{secrets.token_hex(8)}"
        self._calls: dict[int, list] = {}  # open tool-call blocks: index -> [ToolCall, argument fragments]
        self._usage = cn.Usage()
        self._sent = 0
        self.closed = False

    def encode(self, events: list[cn.Event]) -> bytes:
        if self.closed:
            return b""
        batch: list[tuple[int | None, dict[str, Any]]] = []  # (block index of its part, response)
        for e in events:
            if self.closed:
                break
            self._one(e, batch)
        out = b"".join(self._frame(body) for _, body in batch)
        if self.closed and not self.sse:
            out += b"]" if self._sent else b"[]"
        return out

    def _frame(self, body: dict[str, Any]) -> bytes:
        if self.code_assist and "error" not in body:
            body = {"response": body}
        data = _dumps(body).encode()
        self._sent += 1
        if self.sse:
            return b"data: " + data + b"\r\n\r\n"
        return (b"[" if self._sent == 1 else b",\r\n") + data

    def _response(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        return {"candidates": [_candidate_out(parts)], "modelVersion": self.model, "responseId": self.id}

    def _one(self, e: cn.Event, batch: list[tuple[int | None, dict[str, Any]]]) -> None:
        if isinstance(e, cn.MessageStart):
            if e.id and not self._sent and not batch:
                self.id = e.id
        elif isinstance(e, cn.UsageUpdate):
            self._usage = e.usage
        elif isinstance(e, cn.BlockStart):
            b = e.block
            if isinstance(b, cn.ToolCall):
                call = cn.ToolCall(b.id, b.name, "", b.signature)  # a copy: signatures may still arrive
                self._calls[e.index] = [call, [b.arguments] if b.arguments else []]
            elif isinstance(b, cn.Thinking) and (b.text or b.signature):
                part: dict[str, Any] = {"text": b.text, "thought": True}
                if b.signature:
                    part["thoughtSignature"] = b.signature
                batch.append((e.index, self._response([part])))
            elif isinstance(b, cn.Text) and b.text:
                batch.append((e.index, self._response([{"text": b.text}])))
        elif isinstance(e, cn.TextDelta):
            if e.text:
                batch.append((e.index, self._response([{"text": e.text}])))
        elif isinstance(e, cn.ThinkingDelta):
            if e.text:
                batch.append((e.index, self._response([{"text": e.text, "thought": True}])))
        elif isinstance(e, cn.SignatureDelta):
            self._signature(e, batch)
        elif isinstance(e, cn.ArgumentsDelta):
            if e.index in self._calls:
                self._calls[e.index][1].append(e.json)
        elif isinstance(e, cn.BlockStop):
            if e.index in self._calls:
                batch.append((e.index, self._response([self._flush_call(e.index)])))
        elif isinstance(e, cn.Finish):
            self._finish(e, batch)
        elif isinstance(e, cn.StreamError):
            self.closed = True
            status = e.status if isinstance(e.status, int) else 502
            batch.append((None, {"error": {"code": status, "message": e.message,
                                           "status": _STATUS.get(status, "UNKNOWN")}}))

    def _signature(self, e: cn.SignatureDelta, batch: list[tuple[int | None, dict[str, Any]]]) -> None:
        if not e.signature:
            return
        if e.index in self._calls:
            self._calls[e.index][0].signature = e.signature
            return
        if batch and batch[-1][0] == e.index:
            part = batch[-1][1]["candidates"][0]["content"]["parts"][-1]
            if part.get("thought") and "thoughtSignature" not in part:
                part["thoughtSignature"] = e.signature
                return
        batch.append((e.index, self._response([{"text": "", "thought": True, "thoughtSignature": e.signature}])))

    def _flush_call(self, index: int) -> dict[str, Any]:
        call, fragments = self._calls.pop(index)
        return _call_part(call, "".join(fragments))

    def _finish(self, e: cn.Finish, batch: list[tuple[int | None, dict[str, Any]]]) -> None:
        for index in list(self._calls):  # calls whose block never stopped
            batch.append((index, self._response([self._flush_call(index)])))
        self.closed = True
        if batch and "candidates" in batch[-1][1]:
            body = batch[-1][1]
        else:
            body = self._response([{"text": ""}])
            batch.append((None, body))
        reason = finish_reason_of(e.reason, e.detail)
        body["candidates"][0] = _candidate_out(body["candidates"][0]["content"]["parts"], reason, e.detail)
        body["usageMetadata"] = usage_metadata(self._usage)


# --- Code Assist envelope (Gemini CLI / Antigravity upstreams) ----------------

def wrap_code_assist(body: dict[str, Any], model: str, project: str, user_prompt_id: str | None = None,
                     session_id: str | None = None) -> dict[str, Any]:
    """A GenerateContentRequest -> the v1internal:generateContent envelope."""
    out: dict[str, Any] = {"model": model.removeprefix("models/"), "project": project}
    if user_prompt_id is not None:
        out["user_prompt_id"] = user_prompt_id
    request = dict(body)
    if session_id is not None:
        request["session_id"] = session_id
    out["request"] = request
    return out


def unwrap_code_assist_request(data: Any) -> tuple[dict[str, Any], str, str | None]:
    """A Code Assist envelope -> (GenerateContentRequest, model, project). Raises only cn.ConversionError."""
    if not isinstance(data, dict):
        raise cn.ConversionError("The request body must be a JSON object.")
    body, model, project = data.get("request"), data.get("model"), data.get("project")
    if not isinstance(body, dict):
        raise cn.ConversionError("A Code Assist request needs a 'request' object.", "request")
    if not isinstance(model, str) or not model:
        raise cn.ConversionError("Missing required parameter: 'model'.", "model")
    if project is not None and not isinstance(project, str):
        raise cn.ConversionError("'project' must be a string.", "project")
    return body, model.removeprefix("models/"), project


def wrap_code_assist_response(body: dict[str, Any]) -> dict[str, Any]:
    return {"response": body}


class StreamRelabel(SSERelabel):
    """Gemini SSE passed through to a Gemini client, modelVersion set to the client's model.

    The upstream is always asked for alt=sse; a client that called streamGenerateContent
    without it (sse=False) gets the same responses framed as one JSON array."""

    final_event = "finishReason"

    def __init__(self, model: str, sse: bool = True):
        super().__init__(model)
        self.sse = sse
        self._sent = 0
        self._closed = False

    def _watch(self, name: str | None, data: dict) -> bool:
        if "error" in data:
            self.errored = True
            return False
        cands = data.get("candidates")
        if (isinstance(cands, list) and any(isinstance(c, dict) and c.get("finishReason") for c in cands)) \
                or (not cands and (data.get("promptFeedback") or {}).get("blockReason")):
            self.finished = True
        return "modelVersion" in data and self._rename(data, "modelVersion")

    def _frame(self, ev: Any, renamed: dict | None) -> bytes:
        if self.sse:
            return super()._frame(ev, renamed)
        if ev.data is None:
            return b""
        self._sent += 1
        data = ev.data.encode()
        if renamed is not None:
            data = self._spliced(data) or _dumps(renamed).encode()
        return (b"[" if self._sent == 1 else b",\r\n") + data

    def _end(self) -> bytes:
        if self.sse or self._closed:
            return b""
        self._closed = True
        return b"]" if self._sent else b"[]"

    def _error(self, message: str, code: str) -> bytes:
        status = 504 if code == "upstream_timeout" else 502
        body = _dumps({"error": {"code": status, "message": message, "status": _STATUS[status]}}).encode()
        if self.sse:
            return b"data: " + body + b"\r\n\r\n"
        self._sent += 1
        return (b"[" if self._sent == 1 else b",\r\n") + body
