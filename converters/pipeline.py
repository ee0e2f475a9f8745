"""A stream conversion: a decoder for the upstream's events feeding an encoder for the client's."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Protocol

from converters import canonical as cn
from converters import jsonio
from converters.sse import Event, SSEParser, StreamFault, encode_like, not_json


class StreamDecoder(Protocol):
    def feed(self, chunk: bytes) -> list[cn.Event]: ...
    def finish(self) -> list[cn.Event]: ...


class StreamEncoder(Protocol):
    def encode(self, events: list[cn.Event]) -> bytes: ...


class Converting:
    """feed/finish/fail, as the relay's stream transform expects."""

    def __init__(self, decoder: StreamDecoder, encoder: StreamEncoder):
        self.decoder = decoder
        self.encoder = encoder

    def feed(self, chunk: bytes) -> bytes:
        return self.encoder.encode(self.decoder.feed(chunk))

    def finish(self) -> bytes:
        return self.encoder.encode(self.decoder.finish())

    def fail(self, message: str, code: str = "upstream_error") -> bytes:
        return self.encoder.encode([cn.StreamError(message, code)])


class SSEStreamDecoder:
    """The loop the SSE stream decoders share: parse events, hand each to _event until the
    stream has finished, and end a stream that stops early with a stream_truncated error.

    Subclasses set `final_event` (named in that error) and implement
    _event(data, event_name) and _close_all()."""

    final_event = "its final event"

    def __init__(self) -> None:
        self._sse = SSEParser()
        self.finished = False

    def feed(self, chunk: bytes) -> list[cn.Event]:
        return self._dispatch(self._sse.feed(chunk))

    def finish(self) -> list[cn.Event]:
        out = self._dispatch(self._sse.close())
        if not self.finished:
            self.finished = True
            out += self._close_all()
            out.append(cn.StreamError("The upstream stream ended before the response was complete "
                                      f"(no {self.final_event}).", "stream_truncated"))
        return out

    def _dispatch(self, events: list[Event]) -> list[cn.Event]:
        out: list[cn.Event] = []
        for ev in events:
            if ev.data and not self.finished:
                out += self._event(ev.data, ev.event)
        return out

    def _malformed(self, data: str) -> list[cn.Event]:
        """An event that is not JSON: the stream ends with an error, never as a normal stop."""
        self.finished = True
        return self._close_all() + [cn.StreamError("The upstream " + not_json(data).message, "upstream_malformed")]

    def _event(self, data: str, name: str | None) -> list[cn.Event]:
        raise NotImplementedError

    def _close_all(self) -> list[cn.Event]:
        raise NotImplementedError


class SSERelabel:
    """Same wire format on both sides (passthrough): every event goes on byte for byte,
    except that the model name becomes the one the client asked for.

    The end is checked as in the converting path: a stream that stops before its
    final event ends with an error event in the format's own shape. Subclasses set
    `final_event` and implement _watch(name, data) -> True if data was renamed,
    _error(message, code) -> the format's error event bytes."""

    final_event = "its final event"

    def __init__(self, model: str):
        self.model = model
        self._sse = SSEParser()
        self.finished = False  # the upstream's final event was seen
        self.errored = False  # an error event went to the client
        self._was: tuple[str, object] = ("", None)  # (key, old value) _rename replaced in this event

    def feed(self, chunk: bytes) -> bytes:
        return relabel_all(self._sse.feed(chunk), self._pass)

    def finish(self) -> bytes:
        out = b"".join(self._pass(ev) for ev in self._sse.close())
        if self.finished or self.errored:
            return out + self._end()
        return out + self.fail("The upstream stream ended before the response was complete "
                               f"(no {self.final_event}).", "stream_truncated")

    def fail(self, message: str, code: str = "upstream_error") -> bytes:
        if self.finished or self.errored:
            return self._end()
        self.errored = True
        return self._error(message, code) + self._end()

    def _pass(self, ev: Event) -> bytes:
        if ev.data is None:
            return self._frame(ev, None)
        try:
            data = jsonio.loads(ev.data)
        except ValueError:
            raise not_json(ev.data) from None
        if not isinstance(data, dict):
            return self._frame(ev, None)
        self._was = ("", None)
        return self._frame(ev, data if self._watch(ev.event, data) else None)

    def _rename(self, obj: dict, key: str) -> bool:
        """Give obj[key] (obj: the event's data or a dict in it) the client's model name.
        True if that changed the event; the old value is kept for splicing (_spliced)."""
        old = obj.get(key)
        if old == self.model:
            return False
        self._was = (key, old)
        obj[key] = self.model
        return True

    def _spliced(self, raw: bytes) -> bytes | None:
        """`raw` with the value _rename replaced, every other byte kept; None if unsafe."""
        return splice_model(raw, *self._was, self.model)

    def _frame(self, ev: Event, renamed: dict | None) -> bytes:
        """The event for the client: its raw bytes, with the model spliced in or re-encoded when renamed."""
        if renamed is None:
            return ev.raw
        spliced = self._spliced(ev.raw)
        if spliced is not None:
            return spliced
        return encode_like(ev, json.dumps(renamed, ensure_ascii=False, separators=(",", ":")))

    def _end(self) -> bytes:
        return b""

    def _watch(self, name: str | None, data: dict) -> bool:
        raise NotImplementedError

    def _error(self, message: str, code: str) -> bytes:
        raise NotImplementedError


def relabel_all(events: list[Event], relabel: Callable[[Event], bytes]) -> bytes:
    """The relabelled events of one read; a StreamFault carries those made before it."""
    out: list[bytes] = []
    try:
        for ev in events:
            out.append(relabel(ev))
    except StreamFault as f:
        f.before = b"".join(out)
        raise
    return b"".join(out)


def splice_model(raw: bytes, key: str, old: object, new: str) -> bytes | None:
    """`raw` (an event's bytes) with the JSON member `"key":old` (or `"key": old`) set to `new`,
    every other byte kept. None (re-encode instead) unless `"key"` occurs once in `raw`, unescaped.

    Why a byte search is safe: inside a JSON string every quote is escaped, so a `"key"` not
    preceded by a backslash and followed by a colon is a member name, never content."""
    if not isinstance(old, str):
        return None
    name, members = _members(key, old, new)
    if raw.count(name) != 1:
        return None
    for member, renamed in members:
        i = raw.find(member)
        if i > 0 and raw[i - 1] != 0x5C:  # 0x5C: a backslash
            return raw[:i] + renamed + raw[i + len(member):]
    return None


@functools.lru_cache(maxsize=256)
def _members(key: str, old: str, new: str) -> tuple[bytes, tuple[tuple[bytes, bytes], ...]]:
    """`"key"`, and the spellings of `"key":old` splice_model looks for with their replacements
    (a stream names the same model in every event: built once, not per event)."""
    name = json.dumps(key).encode()
    was, now = (json.dumps(v, ensure_ascii=False).encode() for v in (old, new))
    return name, tuple((name + sep + was, name + sep + now) for sep in (b":", b": "))


def relabel_body(body: bytes, model: str, key: str = "model") -> bytes:
    """A passed-through JSON response with the client's model name under `key`.

    Raises ValueError for a body that is not JSON (an HTML page from a proxy in between is
    no answer); JSON that is not an object, or has no such key, is returned unchanged."""
    data = jsonio.loads(body)
    if not isinstance(data, dict) or key not in data or data[key] == model:
        return body
    spliced = splice_model(body, key, data[key], model)  # every other byte as the upstream sent it
    if spliced is not None:
        return spliced
    data[key] = model
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
