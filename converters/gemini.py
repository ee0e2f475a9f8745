"""Gemini generateContent wire format (public API; Code Assist wraps the same body). Pure.

Choices the format forces:
- Gemini has no tool-call ids: ids are synthesised and carry the call's
  thoughtSignature (converters/call_ids.py); results are matched to calls by name.
- Function calls without a signature (history made by another model) get, for
  Gemini 3 models, the documented placeholder signature Gemini 3 accepts for them.
- Remote image URLs are refused with a 400 (the API only takes inline data or
  Files-API URIs; the converter does no I/O): send images as data: URLs.
- Tool results become functionResponse {"name", "response": {"content": text}}
  ({"error": text} for error results); their images follow as inlineData parts.
- Thinking from other providers is not replayed (its signatures mean nothing to Gemini).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from converters import call_ids
from converters import canonical as cn
from converters.gemini_schema import to_gemini_schema
from converters.sse import SSEParser

SKIP_SIGNATURE = "skip_thought_signature_validator"  # Google's documented placeholder
_EFFORT_BUDGET = {"minimal": 0, "low": 1024, "medium": 8192, "high": 24576}
_FINISH = {
    "STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter", "LANGUAGE": "error", "MALFORMED_FUNCTION_CALL": "error",
    "UNEXPECTED_TOOL_CALL": "error", "OTHER": "error", "FINISH_REASON_UNSPECIFIED": "error",
}
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
           504: "DEADLINE_EXCEEDED"}


def model_path(model: str) -> str:
    return model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"


# --- canonical -> Gemini request ---------------------------------------------

def encode_request(req: cn.Request) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": _contents(req)}
    if req.system:
        body["systemInstruction"] = {"parts": [{"text": t.text} for t in req.system]}
    if req.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t) for t in req.tools]}]
    if req.tool_choice:
        body["toolConfig"] = {"functionCallingConfig": _calling_config(req.tool_choice)}
    config = _generation_config(req)
    if config:
        body["generationConfig"] = config
    return body


def _contents(req: cn.Request) -> list[dict[str, Any]]:
    names = {b.id: b.name for m in req.messages for b in m.content if isinstance(b, cn.ToolCall)}
    placeholder = SKIP_SIGNATURE if "gemini-3" in req.model else None
    contents: list[dict[str, Any]] = []
    for i, m in enumerate(req.messages):
        parts: list[dict[str, Any]] = []
        for b in m.content:
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
            args = json.loads(b.arguments or "{}")
        except ValueError:
            raise cn.ConversionError(f"Tool call {b.id} has arguments that are not JSON.", where) from None
        part = {"functionCall": {"name": b.name, "args": args if isinstance(args, dict) else {"value": args}}}
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
    params = to_gemini_schema(t.parameters) if t.parameters else None
    if params and params.get("properties"):
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
    if r:
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
        err = json.loads(body).get("error")
    except (ValueError, AttributeError):
        err = None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return err["message"], err.get("status")
    return body[:300].decode("utf-8", "replace").strip(), None


def retry_delay(body: bytes) -> int | None:
    """Whole seconds from a google.rpc.RetryInfo retryDelay ("7s", "0.47s") or quotaResetDelay."""
    try:
        details = json.loads(body)["error"].get("details") or []
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


class StreamDecoder:
    """Gemini SSE (alt=sse, no [DONE]) -> canonical stream events.

    Text and thought parts extend the open block of their kind; each functionCall
    is a block of its own (Gemini sends calls whole, never in fragments)."""

    def __init__(self) -> None:
        self._sse = SSEParser()
        self._started = False
        self._open: tuple[int, type] | None = None  # (index, block type) of the open text/thinking block
        self._next = 0
        self._calls = False
        self.finished = False
        self._usage = cn.Usage()

    def feed(self, chunk: bytes) -> list[cn.Event]:
        out: list[cn.Event] = []
        for ev in self._sse.feed(chunk):
            if ev.data and not self.finished:
                out += self._event(ev.data)
        return out

    def finish(self) -> list[cn.Event]:
        out: list[cn.Event] = []
        for ev in self._sse.close():
            if ev.data and not self.finished:
                out += self._event(ev.data)
        if not self.finished:
            out += self._close_block()
            out.append(cn.StreamError("The upstream stream ended before the response was complete "
                                      "(no finishReason).", "stream_truncated"))
            self.finished = True
        return out

    def _event(self, data: str) -> list[cn.Event]:
        try:
            body = json.loads(data)
        except ValueError:
            return []
        if not isinstance(body, dict):
            return []
        body = body.get("response", body) if "candidates" not in body else body
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
            out.append(cn.SignatureDelta(index, part["thoughtSignature"]))
        return out

    def _close_block(self) -> list[cn.Event]:
        if self._open is None:
            return []
        index, self._open = self._open[0], None
        return [cn.BlockStop(index)]
