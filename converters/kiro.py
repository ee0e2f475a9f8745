"""Kiro wire format: Claude through AWS CodeWhisperer / Q generateAssistantResponse. Pure, no I/O.

encode_request builds the conversationState body; StreamDecoder reads the answer, an AWS
binary event stream (application/vnd.amazon.eventstream), frame by frame with botocore's
EventStreamBuffer (which checks both CRCs); decode_response reads a whole one;
decode_error reads AWS JSON errors. Facts are from /work/shared/reference/providers.md;
what comes from open-source peers (AIClient-2-API, kiro.rs, kiro-gateway) and not from
those facts is marked PEER.

Model ids (model_id): names with a "." are Kiro ids already and are kept; otherwise an
8-digit date suffix is dropped and the first "-N-M" version pair (1-2 digits each) is
joined with a dot: claude-sonnet-4-5 -> claude-sonnet-4.5, claude-haiku-4-5-20251001 ->
claude-haiku-4.5, claude-3-7-sonnet -> claude-3.7-sonnet; claude-sonnet-4 is unchanged.

Requests (encode_request):
- Messages become turns; consecutive messages of one role are merged (texts joined with a
  blank line) and messages with nothing Kiro can carry (thinking only) are left out first.
  The current message is the last user turn, everything before it is history, which then
  strictly alternates user / assistant and starts with a user turn.
- A conversation that starts with an assistant turn gets an empty user turn before it; one
  that ends with an assistant turn (a prefill Kiro cannot continue) keeps that turn in
  history and gets the current message "Continue".
- Content is never empty: an empty user or assistant text becomes "." (a neutral
  placeholder; PEER: longer ones such as "Tool results provided." are parroted by the model).
- No system role: the system text (blocks joined with a blank line) is prepended, followed by
  a blank line, to the first user turn (history[0], or the current message if there is no
  history). With reasoning asked for (a budget, or an effort other than none / minimal),
  "<thinking_mode>enabled</thinking_mode><max_thinking_length>N</max_thinking_length>" goes
  before it (PEER convention; N is budget_tokens, else low 1024 / medium 8192 / high 24576 /
  xhigh, max 32768, else 20000, clamped to 1024..32768); the model then thinks in
  <thinking> tags, which the decoder splits off.
- Thinking and redacted thinking blocks are not sent: Kiro has no field for them.
- Tool results go in their user turn's userInputMessageContext.toolResults as
  {toolUseId, content: [{text}], status: success | error}: the last user turn's ones in
  currentMessage, earlier ones in their history turn. Texts of a result are joined with
  "\\n"; an empty result is sent as "." too. Images inside results join the turn's images.
- Images (user turns only) are {"format": png | jpeg | gif | webp, "source": {"bytes":
  <base64>}}; remote URLs and other media types are refused (ConversionError): the
  converter does no I/O.
- Tools go in currentMessage.userInputMessageContext.tools as toolSpecification {name,
  description, inputSchema: {json}}. Names longer than 64 characters become their first 51
  characters + "_" + 12 hex digits of their SHA-256 (deterministic, in tool specs and history
  tool uses alike); tool_names(req) gives {short: original} for the decoder. Descriptions are
  cut at 9216 characters; an empty one becomes the tool's name; no schema becomes
  {"type": "object", "properties": {}}.
- Assistant tool calls become toolUses {toolUseId, name, input: <object>} (arguments that
  are not a JSON object are wrapped as {"value": ...}; arguments that are not JSON are refused).
- Kiro has no field for max_tokens, temperature, top_p, top_k, stop, seed, presence_penalty,
  frequency_penalty, response_format, tool_choice (other than auto) or parallel_tool_calls:
  each one set is named in req.dropped.

Streams (StreamDecoder, decode_response):
- Frames are read with headers :message-type (event | error | exception), :event-type,
  :exception-type / :error-code, and a JSON payload, flat or wrapped as {"<event-type>": {...}}.
  Payloads that are not JSON objects, and unknown events (messageMetadataEvent,
  followupPromptEvent, ...), are skipped.
- MessageStart (id "kiro-<hex>") comes with the first frame that is not an error.
- assistantResponseEvent.content is text. A "<thinking>" tag at the start of a text run
  (nothing but whitespace before it since the message began or since the last tool call or
  reasoning block) opens a Thinking block; it ends at the first "</thinking>" not touching a
  quote or backtick (the model quoting the tag). Tags split across events are recognised:
  text that may be the start of a tag is held back until the next event decides. One newline
  after the open tag and the newlines after the close tag are dropped. Identical consecutive
  text events are kept (some peers drop them; real text repeats too often, e.g. in code).
  Events carrying followupPrompt are suggestions, not answer text, and are skipped.
- reasoningContentEvent {text, signature?, redactedContent?} is native thinking: text
  extends the open reasoning block, a signature is sent with SignatureDelta and ends the
  block, redactedContent is a RedactedThinking block of its own.
- toolUseEvent {toolUseId, name, input, stop?}: one ToolCall block per toolUseId (an event
  without toolUseId continues the open call); a new id closes the previous call, stop closes
  its call, the end of the stream closes whatever is open. Names are mapped back through
  `names` ({short: original}). Input fragments are appended exactly once. Kiro is known to
  repeat tool input (PEER reports; the exact pattern is not in the facts), so two forms are
  handled: the input so far re-sent (the whole input again, typically with stop, or the
  cumulative input instead of the next fragment), and the same event sent twice. A
  fragment that begins with everything received so far for the call is a re-send, and only
  what it adds is appended (nothing, if it adds nothing); a fragment equal to the previous
  one is dropped when appending it would make the arguments invalid JSON (a faithful
  continuation never does). A repeat that keeps the JSON valid (a digit, or a word
  inside a string, sent twice) is indistinguishable from real output and is kept, and once
  the arguments are invalid JSON anyway, fragments are appended unchecked. An input given as
  a JSON object (some Kiro versions, PEER) is the whole input: used when nothing came before,
  dropped otherwise. Events for a call already closed are re-sends and are dropped. (A real
  fragment that happens to begin with everything before it, e.g. {"a": then {"a": 1}} for
  {"a": {"a": 1}}, is taken for a re-send: a self-similar case accepted for that rule.)
- Usage: a tokenUsage object (metadataEvent, or any event carrying one) gives
  input_tokens = uncachedInputTokens (or inputTokens) + cacheReadInputTokens +
  cacheWriteInputTokens, cached_tokens = cacheReadInputTokens, cache_write_tokens =
  cacheWriteInputTokens, output_tokens = outputTokens. Until one arrives,
  contextUsageEvent.contextUsagePercentage gives an estimate: input_tokens = percentage of
  `context_window` (200000; None turns it off). meteringEvent credits are not tokens and are
  ignored. Each is sent as a UsageUpdate when it arrives.
- Errors end the stream with StreamError after closing the open blocks: exception frames
  (:exception-type) and error frames (:error-code) give "rate_limited" 429 for
  ThrottlingException, "quota_exhausted" 429 for ServiceQuotaExceededException or a
  MONTHLY_REQUEST_COUNT reason, else "upstream_error" 502; invalidStateEvent gives
  "upstream_error" 502; a CRC or framing error "stream_corrupt" 502.
- The event stream has no closing event: finish() ends a clean stream with
  Finish("tool_calls" if any tool call was made, else "stop"). A stream that ends inside a
  frame, or carries no frame at all, ends with StreamError "stream_truncated".
- decode_response runs StreamDecoder over a whole body and collect() over its events; it
  never raises: an error gives finish "error" with the message in finish_detail (callers that
  need the error's code run the two themselves and read StreamDecoder.error).

Errors (decode_error): {"__type": "...#ThrottlingException", "message"} or {"message",
"reason"} -> (message, code); the code is "rate_limited" / "quota_exhausted" as above (and
"rate_limited" for a 429 that names nothing else), otherwise the AWS error type when there is
one, else None. A reason is appended to the message in parentheses.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import replace
from typing import Any

from botocore.eventstream import EventStreamBuffer

from converters import canonical as cn
from converters import jsonio

ORIGIN = "AI_EDITOR"
AGENT_TASK_TYPE = "vibe"
CHAT_TRIGGER_TYPE = "MANUAL"
PLACEHOLDER = "."
CONTINUE = "Continue"
MAX_TOOL_NAME = 64
MAX_DESCRIPTION = 9216
CONTEXT_WINDOW = 200_000
THINKING_OPEN = "<thinking>"
THINKING_CLOSE = "</thinking>"
_QUOTES = frozenset("`\"'")
_HASH_DIGITS = 12
_DATE = re.compile(r"-\d{8}$")
_VERSION = re.compile(r"-(\d{1,2})-(\d{1,2})(?=-|$)")
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                  "image/webp": "webp"}
_EFFORT_BUDGET = {"low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768, "max": 32768}
_DEFAULT_BUDGET = 20000
_MIN_BUDGET, _MAX_BUDGET = 1024, 32768
_DROPPABLE = ("max_tokens", "temperature", "top_p", "top_k", "seed", "presence_penalty",
              "frequency_penalty", "response_format", "parallel_tool_calls")
_ERROR_CODES = {"ThrottlingException": ("rate_limited", 429),
                "ServiceQuotaExceededException": ("quota_exhausted", 429)}
_QUOTA_REASONS = frozenset(("MONTHLY_REQUEST_COUNT",))
_FEED_SLICE = 64 * 1024


def _dumps(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


# --- model ids and tool names ------------------------------------------------

def model_id(name: str) -> str:
    """Gateway model name -> Kiro model id (the rule is in the module docstring)."""
    if "." in name:
        return name
    return _VERSION.sub(r"-\1.\2", _DATE.sub("", name), count=1)


def short_tool_name(name: str) -> str:
    """A tool name Kiro accepts (at most 64 characters), the same for the same name."""
    if len(name) <= MAX_TOOL_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_DIGITS]
    return f"{name[:MAX_TOOL_NAME - _HASH_DIGITS - 1]}_{digest}"


def tool_names(req: cn.Request) -> dict[str, str]:
    """{short name: original} for every tool name of the request that had to be shortened."""
    names = [t.name for t in req.tools]
    names += [b.name for m in req.messages for b in m.content if isinstance(b, cn.ToolCall)]
    return {short_tool_name(n): n for n in names if len(n) > MAX_TOOL_NAME}


# --- canonical -> Kiro request -----------------------------------------------

class _Turn:
    __slots__ = ("role", "texts", "images", "results", "calls")

    def __init__(self, role: str):
        self.role = role
        self.texts: list[str] = []
        self.images: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []

    def empty(self) -> bool:
        return not (any(self.texts) or self.images or self.results or self.calls)

    def extend(self, other: _Turn) -> None:
        self.texts += other.texts
        self.images += other.images
        self.results += other.results
        self.calls += other.calls

    def text(self) -> str:
        return "\n\n".join(t for t in self.texts if t)


def _image(img: cn.Image, where: str) -> dict[str, Any]:
    if img.data is None:
        raise cn.ConversionError("Kiro takes images as inline data only; send a data:<mime>;base64,... "
                                 "URL instead of a remote URL.", where)
    media = (img.media_type or "image/png").lower()
    fmt = _IMAGE_FORMATS.get(media)
    if fmt is None:
        raise cn.ConversionError(f"Kiro takes PNG, JPEG, GIF and WebP images, not {media}.", where)
    return {"format": fmt, "source": {"bytes": img.data}}


def _tool_result(r: cn.ToolResult, turn: _Turn, where: str) -> dict[str, Any]:
    text = "\n".join(b.text for b in r.content if isinstance(b, cn.Text) and b.text)
    turn.images += [_image(b, where) for b in r.content if isinstance(b, cn.Image)]
    return {"toolUseId": r.call_id, "content": [{"text": text or PLACEHOLDER}],
            "status": "error" if r.is_error else "success"}


def _tool_use(c: cn.ToolCall, where: str) -> dict[str, Any]:
    try:
        args = jsonio.loads(c.arguments or "{}")
    except ValueError:
        raise cn.ConversionError(f"Tool call {c.id} has arguments that are not JSON.", where) from None
    return {"toolUseId": c.id, "name": short_tool_name(c.name),
            "input": args if isinstance(args, dict) else {"value": args}}


def _turn(m: cn.Message, where: str) -> _Turn:
    turn = _Turn(m.role)
    for b in m.content:
        if isinstance(b, cn.Text):
            turn.texts.append(b.text)
        elif isinstance(b, cn.Image):
            if m.role != "user":
                raise cn.ConversionError("Kiro takes images only in user turns.", where)
            turn.images.append(_image(b, where))
        elif isinstance(b, cn.ToolResult):
            if m.role != "user":
                raise cn.ConversionError("Tool results must be in a user turn.", where)
            turn.results.append(_tool_result(b, turn, where))
        elif isinstance(b, cn.ToolCall):
            if m.role != "assistant":
                raise cn.ConversionError("Tool calls must be in an assistant turn.", where)
            turn.calls.append(_tool_use(b, where))
        # Thinking / RedactedThinking: not sent
    return turn


def _turns(req: cn.Request) -> list[_Turn]:
    turns: list[_Turn] = []
    for i, m in enumerate(req.messages):
        turn = _turn(m, f"messages.{i}")
        if turn.empty():
            continue
        if turns and turns[-1].role == turn.role:
            turns[-1].extend(turn)
        else:
            turns.append(turn)
    if not turns:
        raise cn.ConversionError("The conversation has no content to send.", "messages")
    if turns[0].role != "user":
        turns.insert(0, _Turn("user"))
    if turns[-1].role != "user":
        cont = _Turn("user")
        cont.texts.append(CONTINUE)
        turns.append(cont)
    return turns


def thinking_budget(r: cn.Reasoning | None) -> int | None:
    """The max_thinking_length to ask Kiro for, or None for no thinking."""
    if r is None:
        return None
    if r.budget_tokens is not None:
        return None if r.budget_tokens <= 0 else max(_MIN_BUDGET, min(_MAX_BUDGET, r.budget_tokens))
    if r.effort in ("none", "minimal"):
        return None
    return _EFFORT_BUDGET.get(r.effort or "", _DEFAULT_BUDGET)


def _spec(t: cn.Tool) -> dict[str, Any]:
    return {"toolSpecification": {
        "name": short_tool_name(t.name),
        "description": (t.description or t.name)[:MAX_DESCRIPTION],
        "inputSchema": {"json": t.parameters if t.parameters else {"type": "object", "properties": {}}},
    }}


def _user_message(turn: _Turn, model: str, first_text: str | None = None) -> dict[str, Any]:
    text = turn.text()
    if first_text:
        text = f"{first_text}\n\n{text}" if text else first_text
    msg: dict[str, Any] = {"content": text or PLACEHOLDER, "modelId": model, "origin": ORIGIN}
    if turn.images:
        msg["images"] = turn.images
    if turn.results:
        msg["userInputMessageContext"] = {"toolResults": turn.results}
    return msg


def _assistant_message(turn: _Turn) -> dict[str, Any]:
    msg: dict[str, Any] = {"content": turn.text() or PLACEHOLDER}
    if turn.calls:
        msg["toolUses"] = turn.calls
    return msg


def encode_request(req: cn.Request, conversation_id: str, profile_arn: str | None = None) -> dict[str, Any]:
    """Canonical -> generateAssistantResponse body (the choices are in the module docstring)."""
    model = model_id(req.model)
    cn.hosted(req)  # Kiro runs no tools itself: hosted ones are named as dropped
    turns = _turns(req)
    preamble = [t.text for t in req.system if t.text]
    budget = thinking_budget(req.reasoning)
    if budget is not None:
        preamble.insert(0, f"<thinking_mode>enabled</thinking_mode><max_thinking_length>{budget}"
                           "</max_thinking_length>")
    first = "\n\n".join(preamble) or None

    history: list[dict[str, Any]] = []
    for i, turn in enumerate(turns[:-1]):
        if turn.role == "user":
            history.append({"userInputMessage": _user_message(turn, model, first if i == 0 else None)})
        else:
            history.append({"assistantResponseMessage": _assistant_message(turn)})
    current = _user_message(turns[-1], model, first if len(turns) == 1 else None)
    if req.tools:
        current.setdefault("userInputMessageContext", {})["tools"] = [_spec(t) for t in req.tools]

    state: dict[str, Any] = {"agentTaskType": AGENT_TASK_TYPE, "chatTriggerType": CHAT_TRIGGER_TYPE,
                             "conversationId": conversation_id,
                             "currentMessage": {"userInputMessage": current}}
    if history:
        state["history"] = history
    body: dict[str, Any] = {"conversationState": state}
    if profile_arn:
        body["profileArn"] = profile_arn

    dropped = [name for name in _DROPPABLE if getattr(req, name) is not None]
    if req.stop:
        dropped.append("stop")
    if req.tool_choice is not None and req.tool_choice.mode != "auto":
        dropped.append("tool_choice")
    for d in dropped:
        if d not in req.dropped:
            req.dropped.append(d)
    return body


# --- errors ------------------------------------------------------------------

def _short_type(kind: str) -> str:
    """"com.amazon...#ThrottlingException:http://..." -> "ThrottlingException"."""
    return kind.rsplit("#", 1)[-1].split(":", 1)[0].strip()


def classify(kind: str | None, reason: str | None = None, status: int | None = None) -> tuple[str, int]:
    """(gateway error code, HTTP status) for an AWS error type and reason."""
    if reason in _QUOTA_REASONS:
        return "quota_exhausted", 429
    if kind and _short_type(kind) in _ERROR_CODES:
        return _ERROR_CODES[_short_type(kind)]
    if status == 429:
        return "rate_limited", 429
    return "upstream_error", 502


def decode_error(status: int, body: bytes) -> tuple[str, str | None]:
    """An AWS JSON error -> (message, code); see the module docstring."""
    try:
        data = jsonio.loads(body)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        text = body[:300].decode("utf-8", "replace").strip()
        return text or f"Kiro answered HTTP {status}.", "rate_limited" if status == 429 else None
    kind = data.get("__type") if isinstance(data.get("__type"), str) else None
    reason = data.get("reason") if isinstance(data.get("reason"), str) and data.get("reason") else None
    message = next((data[k] for k in ("message", "Message", "errorMessage") if isinstance(data.get(k), str)
                    and data[k]), None)
    message = message or (_short_type(kind) if kind else f"Kiro answered HTTP {status}.")
    if reason:
        message += f" ({reason})"
    code, _ = classify(kind, reason, status)
    if code != "upstream_error":
        return message, code
    return message, _short_type(kind) if kind else None


# --- the event stream ----------------------------------------------------------

_VALUE, _ARR_FIRST, _OBJ_FIRST, _KEY, _COLON, _AFTER, _STR, _ESC, _HEX, _NUM, _LIT, _BAD = range(12)
_WS = frozenset(" \t\r\n")
_NUM_CHARS = frozenset("0123456789+-.eE")
_HEX_CHARS = frozenset("0123456789abcdefABCDEF")
_LITERALS = {"t": "rue", "f": "alse", "n": "ull"}
_STR_RUN = re.compile(r'[^"\\]*')


class JsonPrefix:
    """Whether text seen so far can still begin a valid JSON document (lenient inside strings)."""

    __slots__ = ("stack", "state", "key", "rest")

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.state = _VALUE
        self.key = False  # the string being read is an object key
        self.rest: str | int = ""  # literal letters still due / hex digits still due

    def copy(self) -> JsonPrefix:
        c = JsonPrefix()
        c.stack, c.state, c.key, c.rest = self.stack[:], self.state, self.key, self.rest
        return c

    @property
    def complete(self) -> bool:
        return not self.stack and self.state in (_AFTER, _NUM)

    def feed(self, text: str) -> bool:
        """Read more text; False (for good) once it cannot be JSON any more."""
        i, n = 0, len(text)
        while i < n and self.state != _BAD:
            if self.state == _STR:
                run = _STR_RUN.match(text, i)  # always matches (possibly empty)
                i = run.end() if run else i
                if i < n:
                    if text[i] == '"':
                        self.state = _COLON if self.key else _AFTER
                    else:
                        self.state = _ESC
                    i += 1
                continue
            self._char(text[i])
            i += 1
        return self.state != _BAD

    def _char(self, c: str) -> None:  # noqa: C901 - one state machine
        st = self.state
        if st == _ESC:
            self.state, self.rest = (_HEX, 4) if c == "u" else (_STR, "")
            return
        if st == _HEX:
            if c not in _HEX_CHARS:
                self.state = _BAD
                return
            self.rest = int(self.rest) - 1
            if self.rest == 0:
                self.state = _STR
            return
        if st == _LIT:
            rest = str(self.rest)
            if c != rest[0]:
                self.state = _BAD
                return
            self.rest = rest[1:]
            if not self.rest:
                self.state = _AFTER
            return
        if st == _NUM:
            if c in _NUM_CHARS:
                return
            st = self.state = _AFTER
        if c in _WS:
            return
        if st in (_VALUE, _ARR_FIRST):
            if st == _ARR_FIRST and c == "]":
                self.stack.pop()
                self.state = _AFTER
            elif c in "{[":
                self.stack.append(c)
                self.state = _OBJ_FIRST if c == "{" else _ARR_FIRST
            elif c == '"':
                self.state, self.key = _STR, False
            elif c == "-" or c.isdigit():
                self.state = _NUM
            elif c in _LITERALS:
                self.state, self.rest = _LIT, _LITERALS[c]
            else:
                self.state = _BAD
        elif st in (_OBJ_FIRST, _KEY):
            if c == '"':
                self.state, self.key = _STR, True
            elif c == "}" and st == _OBJ_FIRST:
                self.stack.pop()
                self.state = _AFTER
            else:
                self.state = _BAD
        elif st == _COLON:
            self.state = _VALUE if c == ":" else _BAD
        elif st == _AFTER:
            top = self.stack[-1] if self.stack else None
            if c == "," and top is not None:
                self.state = _KEY if top == "{" else _VALUE
            elif (c == "}" and top == "{") or (c == "]" and top == "["):
                self.stack.pop()
            else:
                self.state = _BAD


class _Call:
    __slots__ = ("id", "index", "pieces", "size", "last", "json", "closed")

    def __init__(self, call_id: str, index: int):
        self.id = call_id
        self.index = index
        self.pieces: list[str] = []  # the arguments so far
        self.size = 0
        self.last: str | None = None
        self.json: JsonPrefix | None = JsonPrefix()  # None once the arguments are not JSON anyway
        self.closed = False

    def fragment(self, raw: Any) -> str:
        """What of this input is new (see the module docstring for the rule)."""
        if raw is None:
            return ""
        if not isinstance(raw, str):
            if _has_text(self.args()):
                return ""  # the whole input as an object, after fragments: a re-send
            raw = _dumps(raw)
        if not raw:
            return ""
        if len(raw) >= self.size and _has_text(args := self.args()) and raw.startswith(args):
            frag = raw[self.size:]  # the input so far re-sent (whole or cumulative): what it adds
            if not frag:
                return ""
        elif raw == self.last and self.json is not None and not self.json.copy().feed(raw):
            return ""  # the same event again: appending it would break the JSON
        else:
            frag = raw
        if self.json is not None:
            trial = self.json.copy()
            self.json = trial if trial.feed(frag) else None  # None: broken JSON, passed on as it is
        self.pieces.append(frag)
        self.size += len(frag)
        self.last = raw
        return frag

    def args(self) -> str:
        if len(self.pieces) > 1:
            self.pieces[:] = ["".join(self.pieces)]
        return self.pieces[0] if self.pieces else ""


def _has_text(s: str) -> bool:
    return bool(s) and not s.isspace()


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def _str(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v if isinstance(v, str) else "" if v is None else str(v)


def new_message_id() -> str:
    return "kiro-" + secrets.token_hex(12)


def _partial_tag(text: str, tag: str) -> int:
    """Length of the longest end of text that is a proper beginning of tag."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-k:]):
            return k
    return 0


class StreamDecoder:
    """Kiro's AWS event stream -> canonical stream events (choices in the module docstring).

    feed() takes the body in chunks split anywhere; finish() ends it. `error` is the
    StreamError that ended the stream, if one did."""

    def __init__(self, names: dict[str, str] | None = None, model: str = "", thinking_tags: bool = True,
                 context_window: int | None = CONTEXT_WINDOW):
        self.names = names or {}
        self.model = model
        self.thinking_tags = thinking_tags
        self.context_window = context_window
        self.id = new_message_id()
        self.created = int(time.time())
        self.done = False
        self.error: cn.StreamError | None = None
        self._buf = EventStreamBuffer()
        self._pending = 0  # bytes fed and not yet part of a whole frame
        self._frames = 0
        self._started = False
        self._next = 0
        self._flow: tuple[int, str] | None = None  # open text / thinking block: (index, text|thinking|reasoning)
        self._calls: dict[str, _Call] = {}
        self._tool: _Call | None = None  # the open tool call
        self._mode = "start"  # text run: start (undecided) | text | thinking
        self._hold = ""  # text not yet sent (may be part of a tag)
        self._strip_nl = False
        self._last_thought = ""  # last character sent in the tag-thinking block
        self._usage = cn.Usage()
        self._token_usage = False

    # -- bytes and frames --

    def feed(self, chunk: bytes) -> list[cn.Event]:
        out: list[cn.Event] = []
        view = memoryview(chunk)
        for start in range(0, len(view), _FEED_SLICE):  # botocore copies its whole buffer per frame
            if self.done:
                break
            piece = bytes(view[start:start + _FEED_SLICE])
            self._buf.add_data(piece)
            self._pending += len(piece)
            out += self._drain()
        return out

    def _drain(self) -> list[cn.Event]:
        out: list[cn.Event] = []
        while not self.done:
            try:
                msg = next(self._buf)
            except StopIteration:
                break
            except Exception as e:  # noqa: BLE001 - ChecksumMismatch, bad lengths or headers, struct/UTF-8 errors
                detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                return out + self._fail(f"The Kiro event stream is corrupt ({detail}).", "stream_corrupt", 502)
            self._pending -= msg.prelude.total_length
            self._frames += 1
            out += self._frame(msg.headers, msg.payload)
        return out

    def finish(self) -> list[cn.Event]:
        if self.done:
            return []
        if self._pending > 0:
            return self._fail(f"The Kiro event stream ended inside a frame ({self._pending} bytes of it "
                              "arrived).", "stream_truncated", 502)
        if not self._frames:
            return self._fail("The Kiro event stream ended before any event.", "stream_truncated", 502)
        self.done = True
        out = self._start() + self._close_all()
        return out + [cn.Finish("tool_calls" if self._calls else "stop")]

    def _fail(self, message: str, code: str, status: int) -> list[cn.Event]:
        self.done = True
        self.error = cn.StreamError(message, code, status)
        return self._close_all() + [self.error]

    def _frame(self, headers: dict[str, Any], payload: bytes) -> list[cn.Event]:
        kind = _str(headers.get(":message-type")) or "event"
        if kind == "exception":
            etype = _str(headers.get(":exception-type")) or "UnknownException"
            message, reason = self._error_payload(payload)
            return self._error(etype, message, reason)
        if kind == "error":
            etype = _str(headers.get(":error-code")) or "UnknownError"
            message, reason = self._error_payload(payload)
            return self._error(etype, _str(headers.get(":error-message")) or message, reason)
        if kind != "event":
            return []
        name = _str(headers.get(":event-type"))
        try:
            body = jsonio.loads(payload) if payload else {}
        except (ValueError, UnicodeDecodeError):
            return self._start()
        if isinstance(body, dict) and isinstance(body.get(name), dict) and len(body) == 1:
            body = body[name]  # {"<event-type>": {...}}
        if not isinstance(body, dict):
            return self._start()
        out = self._start()
        if name == "assistantResponseEvent":
            if isinstance(body.get("content"), str) and "followupPrompt" not in body:
                out += self._text(body["content"])
        elif name == "reasoningContentEvent":
            out += self._reasoning(body)
        elif name == "toolUseEvent":
            out += self._tool_use(body)
        elif name == "contextUsageEvent":
            out += self._context_usage(body.get("contextUsagePercentage"))
        elif name == "invalidStateEvent":
            reason, message = _str(body.get("reason")), _str(body.get("message"))
            text = ": ".join(t for t in (reason, message) if t) or "no reason given"
            return out + self._fail(f"Kiro reported an invalid state: {text}", "upstream_error", 502)
        if isinstance(body.get("tokenUsage"), dict):
            out += self._token_usage_of(body["tokenUsage"])
        return out

    @staticmethod
    def _error_payload(payload: bytes) -> tuple[str, str | None]:
        text = payload.decode("utf-8", "replace").strip()
        try:
            body = jsonio.loads(text)
        except ValueError:
            return text, None
        if not isinstance(body, dict):
            return text, None
        message = next((body[k] for k in ("message", "Message", "errorMessage") if isinstance(body.get(k), str)),
                       text)
        reason = body.get("reason") if isinstance(body.get("reason"), str) and body.get("reason") else None
        return message, reason

    def _error(self, etype: str, message: str, reason: str | None) -> list[cn.Event]:
        code, status = classify(etype, reason)
        text = f"{_short_type(etype)}: {message}" if message else _short_type(etype)
        if reason:
            text += f" ({reason})"
        return self._fail(text, code, status)

    def _start(self) -> list[cn.Event]:
        if self._started:
            return []
        self._started = True
        return [cn.MessageStart(self.id, self.model, self.created)]

    # -- blocks --

    def _open_flow(self, kind: str) -> list[cn.Event]:
        out = self._close_flow()
        index = self._next
        self._next += 1
        self._flow = (index, kind)
        return out + [cn.BlockStart(index, cn.Text("") if kind == "text" else cn.Thinking(""))]

    def _close_flow(self) -> list[cn.Event]:
        if self._flow is None:
            return []
        index, self._flow = self._flow[0], None
        return [cn.BlockStop(index)]

    def _emit(self, kind: str, text: str) -> list[cn.Event]:
        if not text:
            return []
        out = [] if self._flow is not None and self._flow[1] == kind else self._open_flow(kind)
        index = self._flow[0]  # type: ignore[index]
        if kind == "text":
            return out + [cn.TextDelta(index, text)]
        if kind == "thinking":
            self._last_thought = text[-1]
        return out + [cn.ThinkingDelta(index, text)]

    def _close_tool(self) -> list[cn.Event]:
        if self._tool is None:
            return []
        call, self._tool = self._tool, None
        call.closed = True
        return [cn.BlockStop(call.index)]

    def _flush(self) -> list[cn.Event]:
        """The end of a text run: send what was held back and close the text / thinking block."""
        out = self._scan(final=True) if self._hold else []
        out += self._close_flow()
        self._mode, self._hold, self._strip_nl = "start", "", False
        return out

    def _close_all(self) -> list[cn.Event]:
        return self._flush() + self._close_tool()

    # -- text and thinking tags --

    def _text(self, content: str) -> list[cn.Event]:
        if not content:
            return []
        out = self._close_flow() if self._flow is not None and self._flow[1] == "reasoning" else []
        if not self.thinking_tags:
            return out + self._emit("text", content)
        self._hold += content
        return out + self._scan(final=False)

    def _scan(self, final: bool) -> list[cn.Event]:
        out: list[cn.Event] = []
        while True:
            if self._mode == "start":
                stripped = self._hold.lstrip()
                if stripped.startswith(THINKING_OPEN):
                    self._hold = stripped[len(THINKING_OPEN):]
                    self._mode, self._strip_nl, self._last_thought = "thinking", True, ""
                    out += self._open_flow("thinking")
                    continue
                if not final and THINKING_OPEN.startswith(stripped):
                    return out  # nothing but whitespace, or the start of the tag: wait
                self._mode = "text"
                continue
            if self._mode == "text":
                text, self._hold = self._hold, ""
                if self._strip_nl:
                    text = text.lstrip("\r\n")
                    if not text:
                        return out
                    self._strip_nl = False
                return out + self._emit("text", text)
            if self._strip_nl:  # thinking: one newline after the open tag
                if self._hold.startswith("\r\n"):
                    self._hold = self._hold[2:]
                elif self._hold.startswith("\n"):
                    self._hold = self._hold[1:]
                elif not self._hold:
                    return out
                self._strip_nl = False
            pos, safe = self._close_tag(final)
            out += self._emit("thinking", self._hold[:safe])
            if pos is None:
                self._hold = self._hold[safe:]
                return out
            self._hold = self._hold[pos + len(THINKING_CLOSE):]
            out += self._close_flow()
            self._mode, self._strip_nl = "text", True

    def _close_tag(self, final: bool) -> tuple[int | None, int]:
        """(where the real close tag is, or None; how much of the held text is thinking to send now)."""
        hold, start = self._hold, 0
        while True:
            i = hold.find(THINKING_CLOSE, start)
            if i < 0:
                return None, len(hold) if final else len(hold) - _partial_tag(hold, THINKING_CLOSE)
            j = i + len(THINKING_CLOSE)
            if j == len(hold) and not final:
                return None, i  # the next character decides whether it is quoted
            before = hold[i - 1] if i else self._last_thought
            after = hold[j] if j < len(hold) else ""
            if before in _QUOTES or after in _QUOTES:
                start = i + 1
                continue
            return i, i

    # -- native reasoning --

    def _reasoning(self, body: dict[str, Any]) -> list[cn.Event]:
        out: list[cn.Event] = []
        if self._flow is None or self._flow[1] != "reasoning":
            out += self._flush()
        redacted = body.get("redactedContent")
        if isinstance(redacted, str) and redacted:
            out += self._close_flow()
            index = self._next
            self._next += 1
            out += [cn.BlockStart(index, cn.RedactedThinking(redacted)), cn.BlockStop(index)]
        text, sig = body.get("text"), body.get("signature")
        if isinstance(text, str) and text:
            if self._flow is None:
                out += self._open_flow("reasoning")
            out.append(cn.ThinkingDelta(self._flow[0], text))  # type: ignore[index]
        if isinstance(sig, str) and sig:
            if self._flow is None:
                out += self._open_flow("reasoning")
            out.append(cn.SignatureDelta(self._flow[0], sig))  # type: ignore[index]
            out += self._close_flow()
        return out

    # -- tool calls --

    def _tool_use(self, body: dict[str, Any]) -> list[cn.Event]:
        tid = body.get("toolUseId")
        if not isinstance(tid, str) or not tid:
            if self._tool is None:
                return []
            tid = self._tool.id
        out: list[cn.Event] = []
        call = self._calls.get(tid)
        if call is None:
            out += self._flush() + self._close_tool()
            name = _str(body.get("name"))
            call = self._calls[tid] = self._tool = _Call(tid, self._next)
            self._next += 1
            out.append(cn.BlockStart(call.index, cn.ToolCall(tid, self.names.get(name, name), "")))
        elif call.closed:
            return []  # re-sent after the call was closed
        elif self._flow is not None:
            out += self._flush()
        frag = call.fragment(body.get("input"))
        if frag:
            out.append(cn.ArgumentsDelta(call.index, frag))
        if body.get("stop") is True:
            out += self._close_tool()
        return out

    # -- usage --

    def _token_usage_of(self, tu: dict[str, Any]) -> list[cn.Event]:
        read, write = _int(tu.get("cacheReadInputTokens")), _int(tu.get("cacheWriteInputTokens"))
        base = tu.get("uncachedInputTokens") if "uncachedInputTokens" in tu else tu.get("inputTokens")
        self._usage = cn.Usage(input_tokens=_int(base) + read + write, output_tokens=_int(tu.get("outputTokens")),
                               cached_tokens=read, cache_write_tokens=write)
        self._token_usage = True
        return [cn.UsageUpdate(replace(self._usage))]

    def _context_usage(self, pct: Any) -> list[cn.Event]:
        if self._token_usage or self.context_window is None or isinstance(pct, bool) \
                or not isinstance(pct, (int, float)) or not 0 < pct <= 100:
            return []
        self._usage = cn.Usage(input_tokens=round(pct * self.context_window / 100))
        return [cn.UsageUpdate(replace(self._usage))]


def collect(events: list[cn.Event], model: str = "") -> cn.Response:
    """Decoder events -> one Response; a StreamError gives finish "error" (message in finish_detail)."""
    rid, created, usage = new_message_id(), int(time.time()), cn.Usage()
    finish: cn.FinishReason = "error"
    detail: str | None = None
    blocks: list[cn.Block] = []
    parts: dict[int, list[str]] = {}  # block index -> text / argument pieces
    sigs: dict[int, list[str]] = {}
    by_index: dict[int, cn.Block] = {}
    for e in events:
        if isinstance(e, cn.MessageStart):
            rid, created, model = e.id, e.created, e.model or model
        elif isinstance(e, cn.BlockStart):
            b = e.block
            block: cn.Block
            if isinstance(b, cn.Text):
                block = cn.Text("")
            elif isinstance(b, cn.Thinking):
                block = cn.Thinking("", b.signature)
            elif isinstance(b, cn.ToolCall):
                block = cn.ToolCall(b.id, b.name, "")
            else:
                block = cn.RedactedThinking(b.data)
            by_index[e.index] = block
            parts[e.index] = [b.arguments if isinstance(b, cn.ToolCall) else getattr(b, "text", "")]
            blocks.append(block)
        elif isinstance(e, (cn.TextDelta, cn.ThinkingDelta)) and e.index in parts:
            parts[e.index].append(e.text)
        elif isinstance(e, cn.ArgumentsDelta) and e.index in parts:
            parts[e.index].append(e.json)
        elif isinstance(e, cn.SignatureDelta):
            sigs.setdefault(e.index, []).append(e.signature)
        elif isinstance(e, cn.UsageUpdate):
            usage = e.usage
        elif isinstance(e, cn.Finish):
            finish, detail = e.reason, e.detail
        elif isinstance(e, cn.StreamError):
            finish, detail = "error", e.message
    for index, block in by_index.items():
        joined = "".join(parts[index])
        if isinstance(block, cn.ToolCall):
            block.arguments = joined
        elif isinstance(block, (cn.Text, cn.Thinking)):
            block.text = joined
        if isinstance(block, cn.Thinking) and index in sigs:
            block.signature = (block.signature or "") + "".join(sigs[index])
    return cn.Response(id=rid, model=model, content=blocks, finish=finish, usage=usage, created=created,
                       finish_detail=detail)


def decode_response(data: bytes, names: dict[str, str] | None = None, model: str = "") -> cn.Response:
    """A whole Kiro event-stream body -> canonical. Never raises (see the module docstring)."""
    decoder = StreamDecoder(names, model)
    return collect(decoder.feed(data) + decoder.finish(), model)
