"""Claude Code CLI (`claude -p --output-format stream-json`) as a model backend (pure, no I/O).

prompt_of turns an Anthropic Messages request into what the CLI takes: one text
prompt (sent on stdin) and a system prompt. StreamJsonDecoder reads the CLI's
stdout and yields canonical stream events.

The prompt (prompt_of):
- A request holding one user message is sent as that message's text, unchanged.
- Anything longer is flattened into a transcript: a header line explaining it,
  then one paragraph per message, "Human: ..." or "Assistant: ...", separated by
  blank lines, in order (consecutive same-role messages stay separate paragraphs).
  The last paragraph is usually the user's turn, so the prompt ends with the
  question to answer. A final assistant message (a prefill) stays the last
  paragraph; the CLI cannot be made to continue it verbatim.
- Text blocks of a message are joined with blank lines. Tool calls become
  `[tool call <id>: <name> <input JSON>]`, tool results
  `[tool result <id>: <text>]` (`[tool result <id> (error): ...]` when is_error).
- Thinking and redacted-thinking blocks are dropped (the CLI cannot replay them).
- Images, documents and any other block type are refused (cn.ConversionError,
  param messages.N.content.M): the CLI reads only text on stdin, and dropping
  them would answer a question the caller did not ask.
- system (a string or text blocks, joined with blank lines) is returned apart,
  None when absent or empty. tools, tool_choice, temperature, max_tokens and the
  other sampling fields are not part of the prompt (the CLI has no flags for them).

The stream (StreamJsonDecoder), one JSON object per line:
- {"type":"system","subtype":"init",...} names the session and model; other
  system lines (hooks, retries, compaction) are ignored.
- With --include-partial-messages, {"type":"stream_event","event":{...}} wraps
  each raw Messages-API stream event (message_start, content_block_start/delta/
  stop, message_delta, message_stop); their text and thinking deltas (and
  thinking signatures) are passed on as they come. The CLI still prints the
  complete {"type":"assistant"} lines afterwards; those of a message already
  seen as stream events are skipped.
- Without partial messages each {"type":"assistant","message":{...}} line (the
  CLI prints one per content block, several lines sharing a message id) gives
  its blocks whole: BlockStart with the full text, then BlockStop. Messages
  whose model is "<synthetic>" are the CLI's own notices (e.g. the text of an
  API error, which the result line repeats) and are skipped.
- The CLI runs its own tools in an agent loop: its tool_use blocks (and
  input_json_delta), the {"type":"user"} tool_result lines and everything a
  sub-agent says (parent_tool_use_id set) are skipped, not reported. The
  assistant messages of every turn of the loop become successive blocks of one
  answer.
- {"type":"result"} ends the stream: its usage (cumulative over the loop,
  Anthropic's shape) becomes a UsageUpdate and total_cost_usd is kept in
  cost_usd. is_error true, or a subtype other than "success" (error_max_turns,
  error_during_execution, ...), gives a StreamError (status and code read from
  an "API Error: <status> ..." text when there is one, else 502); otherwise
  Finish (length when the last message stopped at max_tokens, else stop). A
  successful result with no text seen (e.g. lines lost) gives its `result`
  text as one block. Lines after the result, blank lines and lines that are not
  JSON objects are ignored.
- finish() at the end of stdout closes whatever is open; a stream that ended
  without a result gets a StreamError.
"""

from __future__ import annotations

import json
import re
from typing import Any

from converters import anthropic, jsonio
from converters import canonical as cn
from converters.shapes import arr, obj

TRANSCRIPT_HEADER = ("The conversation so far is below as a transcript. Reply as the Assistant to the "
                     "last Human turn; write only the reply, without a role label.")

SYNTHETIC = "<synthetic>"  # the model of assistant messages the CLI writes itself (error notices)
_ROLE_LABEL = {"user": "Human", "assistant": "Assistant"}
_API_ERROR = re.compile(r"API Error:\s*(\d{3})")
_STATUS_CODES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error",
                 500: "api_error", 502: "api_error", 503: "overloaded_error", 504: "timeout_error",
                 529: "overloaded_error"}


# --- the prompt ----------------------------------------------------------------

def _text_of_system(system: Any) -> str | None:
    if system is None:
        return None
    if isinstance(system, str):
        return system.strip() or None
    if not isinstance(system, list):
        raise cn.ConversionError("system must be a string or a list of text blocks", "system")
    parts = []
    for i, b in enumerate(system):
        if not isinstance(b, dict) or b.get("type") != "text" or not isinstance(b.get("text"), str):
            raise cn.ConversionError("system blocks must be text blocks", f"system.{i}")
        parts.append(b["text"])
    return "\n\n".join(p for p in parts if p.strip()) or None


def _result_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise cn.ConversionError("tool_result content must be a string or a list of blocks", where)
    parts = []
    for i, b in enumerate(content):
        if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str):
            parts.append(b["text"])
        else:
            kind = b.get("type") if isinstance(b, dict) else type(b).__name__
            raise cn.ConversionError(f"Claude Code takes text only; a tool result holds a {kind} block",
                                     f"{where}.{i}")
    return "\n\n".join(parts)


def _block_text(b: Any, where: str) -> str | None:
    """One content block as transcript text; None when it is dropped."""
    if not isinstance(b, dict):
        raise cn.ConversionError("content blocks must be objects", where)
    kind = b.get("type")
    if kind == "text":
        if not isinstance(b.get("text"), str):
            raise cn.ConversionError("text blocks need a text string", where)
        return b["text"]
    if kind in ("thinking", "redacted_thinking"):
        return None
    if kind == "tool_use":
        args = json.dumps(b.get("input", {}), ensure_ascii=False, separators=(",", ":"))
        return f"[tool call {b.get('id', '')}: {b.get('name', '')} {args}]"
    if kind == "tool_result":
        flag = " (error)" if b.get("is_error") else ""
        return f"[tool result {b.get('tool_use_id', '')}{flag}: {_result_text(b.get('content'), where + '.content')}]"
    raise cn.ConversionError(f"Claude Code takes text only; {kind!r} blocks cannot be sent to it", where)


def _message_text(m: Any, i: int) -> tuple[str, str]:
    where = f"messages.{i}"
    if not isinstance(m, dict) or m.get("role") not in _ROLE_LABEL:
        raise cn.ConversionError("each message needs a role of user or assistant", f"{where}.role")
    content = m.get("content")
    if isinstance(content, str):
        return m["role"], content
    if not isinstance(content, list):
        raise cn.ConversionError("message content must be a string or a list of blocks", f"{where}.content")
    parts = [t for j, b in enumerate(content) if (t := _block_text(b, f"{where}.content.{j}")) is not None]
    return m["role"], "\n\n".join(p for p in parts if p)


def prompt_of(body: dict) -> tuple[str, str | None]:
    """An Anthropic Messages request body -> (prompt for the CLI's stdin, system prompt or None)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages:
        raise cn.ConversionError("messages must be a non-empty list", "messages")
    system = _text_of_system(body.get("system"))
    turns = [_message_text(m, i) for i, m in enumerate(messages)]
    if len(turns) == 1 and turns[0][0] == "user":
        prompt = turns[0][1]
    else:
        prompt = "\n\n".join([TRANSCRIPT_HEADER] + [f"{_ROLE_LABEL[role]}: {text}" for role, text in turns])
    if not prompt.strip():
        raise cn.ConversionError("the conversation holds no text to send", "messages")
    return prompt, system


# --- the stream ------------------------------------------------------------------

def error_of_result(result: dict[str, Any]) -> cn.StreamError:
    """A failed result line -> StreamError; an "API Error: 429 ..." text keeps its status."""
    text = result.get("result")
    errors = result.get("errors")
    if not isinstance(text, str) or not text.strip():
        if isinstance(errors, list) and errors:
            text = "; ".join(str(e) for e in errors)
        else:
            text = str(result.get("subtype") or "error")
    text = text.strip()[:2000]
    m = _API_ERROR.search(text)
    status = int(m.group(1)) if m else 502
    if status not in _STATUS_CODES:
        status = 502
    return cn.StreamError(f"Claude Code failed: {text}", _STATUS_CODES[status], status)


class StreamJsonDecoder:
    """Claude Code CLI stream-json lines (bytes, in any chunking) -> canonical events."""

    def __init__(self) -> None:
        self._buf = b""
        self.done = False  # a result line was read (or finish() was called)
        self.started = False  # MessageStart sent
        self.session_id: str | None = None
        self.model: str | None = None  # the model the CLI reports (init / messages)
        self.cost_usd: float | None = None
        self.result: dict[str, Any] | None = None
        self._next = 0  # next canonical block index
        self._open: dict[Any, int] = {}  # stream_event block index -> canonical index (current message)
        self._kind: dict[int, str] = {}  # canonical index -> "text" | "thinking"
        self._partial_ids: set[str] = set()  # messages seen as stream events
        self._partial_current: str | None = None
        self._stop_reason: str | None = None
        self._content_seen = False

    def feed(self, data: bytes) -> list[cn.Event]:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        out: list[cn.Event] = []
        for line in lines:
            out += self._line(line)
        return out

    def finish(self, message: str | None = None) -> list[cn.Event]:
        """End of stdout. Without a result line the stream fails with `message` (or a default)."""
        out = self._line(self._buf) if self._buf.strip() else []
        self._buf = b""
        if self.done:
            return out
        self.done = True
        out += self._close_all()
        out.append(cn.StreamError(message or "The Claude Code CLI stopped without a result.", "api_error", 502))
        return out

    # -- lines --

    def _line(self, raw: bytes) -> list[cn.Event]:
        if self.done or not raw.strip():
            return []
        try:
            obj = jsonio.loads(raw)
        except ValueError:
            return []  # not stream-json (a warning printed to stdout)
        if not isinstance(obj, dict) or obj.get("parent_tool_use_id"):
            return []  # a sub-agent's messages
        kind = obj.get("type")
        if kind == "system":
            if obj.get("subtype") == "init":
                self.session_id = obj.get("session_id") if isinstance(obj.get("session_id"), str) else None
                self.model = obj.get("model") if isinstance(obj.get("model"), str) else self.model
            return []
        if kind == "stream_event" and isinstance(obj.get("event"), dict):
            return self._event(obj["event"])
        if kind == "assistant" and isinstance(obj.get("message"), dict):
            return self._assistant(obj["message"])
        if kind == "result":
            return self._result(obj)
        return []  # user (tool results), control messages, anything newer

    def _start(self, mid: Any, model: Any) -> list[cn.Event]:
        if self.started:
            return []
        self.started = True
        if isinstance(model, str) and model:
            self.model = model
        return [cn.MessageStart(id=mid if isinstance(mid, str) else "", model=self.model or "")]

    def _new_block(self, block: cn.Text | cn.Thinking) -> int:
        index = self._next
        self._next += 1
        self._kind[index] = "text" if isinstance(block, cn.Text) else "thinking"
        self._content_seen = True
        return index

    # -- partial messages --

    def _event(self, e: dict[str, Any]) -> list[cn.Event]:
        kind = e.get("type")
        if kind == "message_start":
            msg = obj(e.get("message"))
            mid = msg.get("id")
            out = self._close_all()
            first = not self.started
            out += self._start(mid, msg.get("model"))
            if first and isinstance(msg.get("usage"), dict):
                out.append(cn.UsageUpdate(anthropic.usage_of(msg["usage"])))
            self._partial_current = mid if isinstance(mid, str) else None
            if self._partial_current:
                self._partial_ids.add(self._partial_current)
            return out
        if kind == "content_block_start":
            cb = obj(e.get("content_block"))
            wire = e.get("index")
            out = self._start("", None)
            if cb.get("type") == "text":
                index = self._new_block(cn.Text(""))
                self._open[wire] = index
                out.append(cn.BlockStart(index, cn.Text("")))
                if isinstance(cb.get("text"), str) and cb["text"]:
                    out.append(cn.TextDelta(index, cb["text"]))
            elif cb.get("type") == "thinking":
                index = self._new_block(cn.Thinking(""))
                self._open[wire] = index
                out.append(cn.BlockStart(index, cn.Thinking("")))
                if isinstance(cb.get("thinking"), str) and cb["thinking"]:
                    out.append(cn.ThinkingDelta(index, cb["thinking"]))
            return out  # tool_use, server tools, redacted thinking: the CLI's own business
        if kind == "content_block_delta":
            at = self._open.get(e.get("index"))
            delta = obj(e.get("delta"))
            if at is None:
                return []
            dk = delta.get("type")
            if dk == "text_delta" and isinstance(delta.get("text"), str) and delta["text"]:
                return [cn.TextDelta(at, delta["text"])]
            if dk == "thinking_delta" and isinstance(delta.get("thinking"), str) and delta["thinking"]:
                return [cn.ThinkingDelta(at, delta["thinking"])]
            if dk == "signature_delta" and isinstance(delta.get("signature"), str) and delta["signature"]:
                return [cn.SignatureDelta(at, delta["signature"])]
            return []
        if kind == "content_block_stop":
            closed = self._open.pop(e.get("index"), None)
            return [cn.BlockStop(closed)] if closed is not None else []
        if kind == "message_delta":
            delta = obj(e.get("delta"))
            if isinstance(delta.get("stop_reason"), str):
                self._stop_reason = delta["stop_reason"]
            return []
        if kind == "message_stop":
            return self._close_all()
        return []

    def _close_all(self) -> list[cn.Event]:
        out: list[cn.Event] = [cn.BlockStop(i) for i in self._open.values()]
        self._open.clear()
        return out

    # -- whole messages --

    def _assistant(self, msg: dict[str, Any]) -> list[cn.Event]:
        mid = msg.get("id")
        if isinstance(mid, str) and mid in self._partial_ids:
            return []  # already streamed
        if msg.get("model") == SYNTHETIC:
            return []  # the CLI's own notice (an API error), repeated in the result
        out = self._start(mid, msg.get("model"))
        if isinstance(msg.get("stop_reason"), str):
            self._stop_reason = msg["stop_reason"]
        content = arr(msg.get("content"))
        for b in content:
            if not isinstance(b, dict):
                continue
            if b.get("type") == "text" and isinstance(b.get("text"), str) and b["text"]:
                block: cn.Text | cn.Thinking = cn.Text(b["text"])
            elif b.get("type") == "thinking" and isinstance(b.get("thinking"), str):
                sig = b.get("signature")
                block = cn.Thinking(b["thinking"], sig if isinstance(sig, str) and sig else None)
            else:
                continue  # tool_use and anything else
            index = self._new_block(block)
            out += [cn.BlockStart(index, block), cn.BlockStop(index)]
        return out

    # -- the end --

    def _result(self, r: dict[str, Any]) -> list[cn.Event]:
        self.done = True
        self.result = r
        cost = r.get("total_cost_usd")
        if isinstance(cost, (int, float)) and not isinstance(cost, bool):
            self.cost_usd = float(cost)
        out = self._close_all()
        out += self._start("", None)
        if isinstance(r.get("usage"), dict):
            out.append(cn.UsageUpdate(anthropic.usage_of(r["usage"])))
        if r.get("is_error") or r.get("subtype", "success") != "success":
            out.append(error_of_result(r))
            return out
        text = r.get("result")
        if not self._content_seen and isinstance(text, str) and text:
            index = self._new_block(cn.Text(text))
            out += [cn.BlockStart(index, cn.Text(text)), cn.BlockStop(index)]
        out.append(cn.Finish("length" if self._stop_reason == "max_tokens" else "stop"))
        return out


def collect(events: list[cn.Event], model: str) -> cn.Response | cn.StreamError:
    """A whole stream of decoder events -> one canonical Response, or its StreamError."""
    rid, usage = "", cn.Usage()
    blocks: list[cn.Block] = []
    finish: cn.FinishReason = "stop"
    texts: dict[int, cn.Text | cn.Thinking] = {}
    for e in events:
        if isinstance(e, cn.StreamError):
            return e
        if isinstance(e, cn.MessageStart):
            rid = rid or e.id
        elif isinstance(e, cn.BlockStart) and isinstance(e.block, (cn.Text, cn.Thinking)):
            src = e.block
            block = cn.Text(src.text) if isinstance(src, cn.Text) else cn.Thinking(src.text, src.signature)
            texts[e.index] = block
            blocks.append(block)
        elif isinstance(e, cn.TextDelta) and isinstance(texts.get(e.index), cn.Text):
            texts[e.index].text += e.text
        elif isinstance(e, cn.ThinkingDelta) and isinstance(texts.get(e.index), cn.Thinking):
            texts[e.index].text += e.text
        elif isinstance(e, cn.SignatureDelta) and isinstance(thinking := texts.get(e.index), cn.Thinking):
            thinking.signature = e.signature
        elif isinstance(e, cn.UsageUpdate):
            usage = e.usage
        elif isinstance(e, cn.Finish):
            finish = e.reason
    return cn.Response(id=rid, model=model, content=blocks, finish=finish, usage=usage)
