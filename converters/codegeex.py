"""CodeGeeX chat wire format (pure, no I/O). Unofficial and low confidence.

The endpoint is the one CodeGeeX's IDE plugins use: POST
https://codegeex.cn/prod/code/chatCodeSseV3/chat with header ``code-token: <token>``
and a JSON body {user_role, ide, prompt, history: [{query, answer, id}], talkId,
model, machineId, locale}. It answers Server-Sent Events: ``event: add`` whose
data.text is the next fragment, then ``event: finish`` whose data.text is the
whole answer. There is no tool calling, no image input, no usage report.

Only what /work/shared/reference/providers.md says is taken as fact; everything
marked ASSUMED comes from open-source peers (OpenAI adapters for CodeGeeX) or is
our own guess, not from captured traffic.

Choices (encode_request, for a CodeGeeX upstream):
- prompt is the last user turn: the text of the trailing run of user messages
  (several are joined with a blank line). A request that ends with an assistant
  message (prefill) is refused: CodeGeeX cannot continue a reply
  (ConversionError, param "messages").
- history: the messages before it, as alternating turns. Consecutive messages of
  one role are merged (texts joined with a blank line); each user turn and the
  assistant turn after it make one {query, answer, id} item. A conversation that
  starts with an assistant turn gets query "" for it. Item ids are "<talkId>-<n>"
  (n from 0): deterministic, so the same conversation encodes the same way.
- system text (blocks joined with a blank line) is prepended, followed by a
  blank line, to the first turn: the first history query, or the prompt when
  there is no history. That is where the conversation put it; CodeGeeX has no
  system field (ASSUMED: nothing else in the body carries one).
- Text blocks of one message are concatenated as they are (no separator), as
  canonical.text_of does.
- Tools are refused: ConversionError("CodeGeeX has no tool calling ...", "tools")
  when req.tools is non-empty, or the messages hold tool calls or tool results
  (param "messages"). tool_choice without tools is ignored.
- Images are refused (ConversionError, param "messages"): the endpoint takes text.
- Thinking and redacted thinking in history are dropped silently (the model
  never sees its own earlier reasoning anyway).
- max_tokens, temperature, top_p, top_k, stop, seed, presence_penalty,
  frequency_penalty, response_format and reasoning have no field: each one set is
  named in req.dropped.
- user_role 0, ide "VSCode", locale "en" are constants (what peers send; ASSUMED
  to be accepted as they are). talkId and machineId are the caller's: the gateway
  should use a fresh talkId per conversation and one machineId per account.

Responses and streams (StreamDecoder, decode_response):
- The first ``add`` opens the message (MessageStart) and one text block (index 0).
  Empty fragments send nothing but still open the message.
- ``finish`` closes the block and finishes with "stop" (ASSUMED: data.finish_reason
  "length" / "max_tokens", if CodeGeeX ever sends one, becomes "length"). If its
  full text extends what the adds delivered, the missing tail is sent as a last
  TextDelta first; a full text that does not start with the streamed one is
  ignored (what was streamed cannot be taken back). A finish without any add
  sends its whole text.
- data.id / data.model, when present and strings (ASSUMED: peers read them), give
  the message id and model; otherwise the id is "codegeex-<hex>" and the model is
  the one the decoder was made with.
- ``event: error``, or an add / finish whose data is not a JSON object with a
  string "text", ends the stream with StreamError (code "upstream_error";
  status 401 / 429 when the error says so). Events with another name or none are
  ignored (keep-alives). A stream that ends before finish ends with StreamError
  "stream_truncated".
- No usage is reported, so no UsageUpdate is sent.
- decode_response reads a whole SSE body the same way; an error or a truncated
  body gives finish "error" with the message in finish_detail and the text so far.
- decode_error reads {"code", "msg"} (ASSUMED shape; also "message", "error",
  "detail") -> (message, str(code)); other bodies give (their text, None).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from converters import canonical as cn
from converters import jsonio
from converters.pipeline import SSEStreamDecoder

USER_ROLE = 0
IDE = "VSCode"
LOCALE = "en"
FINAL_EVENT = "finish"
_LENGTH_REASONS = frozenset(("length", "max_tokens"))
_DROPPABLE = ("max_tokens", "temperature", "top_p", "top_k", "seed", "presence_penalty",
              "frequency_penalty", "response_format", "reasoning")
NO_TOOLS = "CodeGeeX has no tool calling: the request cannot carry tools, tool calls or tool results."


# --- requests ----------------------------------------------------------------

def _message_text(msg: cn.Message, where: str) -> str:
    parts: list[str] = []
    for b in msg.content:
        if isinstance(b, cn.Text):
            parts.append(b.text)
        elif isinstance(b, (cn.ToolCall, cn.ToolResult)):
            raise cn.ConversionError(NO_TOOLS, where)
        elif isinstance(b, cn.Image):
            raise cn.ConversionError("CodeGeeX takes text only: images are not supported.", where)
        # Thinking / RedactedThinking: dropped
    return "".join(parts)


def _join(texts: list[str]) -> str:
    return "\n\n".join(t for t in texts if t)


def encode_request(req: cn.Request, talk_id: str, machine_id: str) -> dict[str, Any]:
    """Canonical -> CodeGeeX chatCodeSseV3 body (see the module docstring for the choices)."""
    if req.tools:
        raise cn.ConversionError(NO_TOOLS, "tools")
    cn.hosted(req)  # named as dropped
    texts = [_message_text(m, f"messages.{i}") for i, m in enumerate(req.messages)]
    if not req.messages or req.messages[-1].role != "user":
        raise cn.ConversionError("CodeGeeX needs the conversation to end with a user message "
                                 "(it cannot continue an assistant reply).", "messages")
    start = len(req.messages)
    while start > 0 and req.messages[start - 1].role == "user":
        start -= 1
    prompt = _join(texts[start:])

    turns: list[list[Any]] = []  # [query texts, answer texts]
    for msg, text in zip(req.messages[:start], texts[:start], strict=True):
        if msg.role == "user":
            if not turns or turns[-1][1]:
                turns.append([[], []])
            turns[-1][0].append(text)
        else:
            if not turns:
                turns.append([[], []])
            turns[-1][1].append(text)
    history = [{"query": _join(q), "answer": _join(a), "id": f"{talk_id}-{n}"}
               for n, (q, a) in enumerate(turns)]

    system = _join([t.text for t in req.system])
    if system:
        if history:
            history[0]["query"] = _join([system, history[0]["query"]])
        else:
            prompt = _join([system, prompt])
    if not prompt.strip():
        raise cn.ConversionError("CodeGeeX needs a non-empty prompt: the last user message has no text.",
                                 "messages")

    dropped = [name for name in _DROPPABLE if getattr(req, name) is not None]
    if req.stop:
        dropped.append("stop")
    for d in dropped:
        if d not in req.dropped:
            req.dropped.append(d)
    return {"user_role": USER_ROLE, "ide": IDE, "prompt": prompt, "history": history,
            "talkId": talk_id, "model": req.model, "machineId": machine_id, "locale": LOCALE}


# --- errors ------------------------------------------------------------------

def _error_of(obj: Any) -> tuple[str | None, str | None]:
    """(message, code) from an error object in any of the shapes seen or assumed."""
    if not isinstance(obj, dict):
        return None, None
    code = obj.get("code")
    code_s = str(code) if isinstance(code, (int, str)) and not isinstance(code, bool) and code != "" else None
    for key in ("msg", "message", "detail", "text"):
        if isinstance(obj.get(key), str) and obj[key]:
            return obj[key], code_s
    inner = obj.get("error")
    if isinstance(inner, str) and inner:
        return inner, code_s
    if isinstance(inner, dict):
        message, inner_code = _error_of(inner)
        return message, inner_code or code_s
    return None, code_s


def decode_error(status: int, body: bytes) -> tuple[str, str | None]:
    """An error answer -> (message, code). JSON {"code": 401, "msg": "..."} gives
    ("...", "401"); a body that is not such JSON gives (its text, None)."""
    try:
        data = jsonio.loads(body)
    except (ValueError, UnicodeDecodeError):
        data = None
    message, code = _error_of(data)
    if message:
        return message, code
    text = body[:300].decode("utf-8", "replace").strip()
    return text or f"CodeGeeX answered HTTP {status}.", code


def _status_of(code: str | None, message: str) -> int:
    low = message.lower()
    if code == "401" or ("token" in low and ("invalid" in low or "expired" in low)):
        return 401
    if code == "429" or "rate limit" in low or "too many" in low:
        return 429
    return 502


# --- streams -----------------------------------------------------------------

def new_message_id() -> str:
    return "codegeex-" + secrets.token_hex(12)


class StreamDecoder(SSEStreamDecoder):
    """CodeGeeX SSE (event: add / finish / error) -> canonical stream events."""

    final_event = FINAL_EVENT

    def __init__(self, model: str = "") -> None:
        super().__init__()
        self.model = model
        self._started = False
        self._open = False
        self.text = ""  # what the adds delivered

    def _start(self, body: dict[str, Any]) -> list[cn.Event]:
        if self._started:
            return []
        self._started = True
        self._open = True
        mid, model = body.get("id"), body.get("model")
        return [cn.MessageStart(mid if isinstance(mid, str) and mid else new_message_id(),
                                model if isinstance(model, str) and model else self.model, int(time.time())),
                cn.BlockStart(0, cn.Text(""))]

    def _fail(self, message: str, code: str | None = None) -> list[cn.Event]:
        self.finished = True
        return self._close_all() + [cn.StreamError(message, "upstream_error", _status_of(code, message))]

    def _event(self, data: str, name: str | None) -> list[cn.Event]:
        if name == "error":
            try:
                body = jsonio.loads(data)
            except ValueError:
                body = None
            message, code = _error_of(body)
            return self._fail(message or data.strip() or "CodeGeeX sent an error event.", code)
        if name not in ("add", "finish"):
            return []
        try:
            body = jsonio.loads(data)
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return self._fail(f"CodeGeeX sent a malformed '{name}' event: {data[:200]}")
        text = body["text"]
        out = self._start(body)
        if name == "add":
            if text:
                self.text += text
                out.append(cn.TextDelta(0, text))
            return out
        if len(text) > len(self.text) and text.startswith(self.text):
            tail = text[len(self.text):]
            self.text = text
            out.append(cn.TextDelta(0, tail))
        self.finished = True
        reason = body.get("finish_reason")
        finish: cn.FinishReason = "length" if isinstance(reason, str) and reason.lower() in _LENGTH_REASONS \
            else "stop"
        return out + self._close_all() + [cn.Finish(finish)]

    def _close_all(self) -> list[cn.Event]:
        if not self._open:
            return []
        self._open = False
        return [cn.BlockStop(0)]


def decode_response(data: bytes, model: str = "") -> cn.Response:
    """A whole CodeGeeX SSE body -> canonical. Never raises: an error event or a body
    without finish gives finish "error" and the message in finish_detail."""
    decoder = StreamDecoder(model)
    events = decoder.feed(data) + decoder.finish()
    rid, rmodel, created = new_message_id(), model, int(time.time())
    finish: cn.FinishReason = "error"
    detail: str | None = None
    for ev in events:
        if isinstance(ev, cn.MessageStart):
            rid, rmodel, created = ev.id, ev.model, ev.created
        elif isinstance(ev, cn.Finish):
            finish, detail = ev.reason, ev.detail
        elif isinstance(ev, cn.StreamError):
            finish, detail = "error", ev.message
    content: list[cn.Block] = [cn.Text(decoder.text)] if decoder.text else []
    return cn.Response(id=rid, model=rmodel, content=content, finish=finish, created=created,
                       finish_detail=detail)
