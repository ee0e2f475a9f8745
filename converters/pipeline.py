"""A stream conversion: a decoder for the upstream's events feeding an encoder for the client's."""

from __future__ import annotations

from typing import Protocol

from converters import canonical as cn
from converters.sse import Event, SSEParser


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

    def _event(self, data: str, name: str | None) -> list[cn.Event]:
        raise NotImplementedError

    def _close_all(self) -> list[cn.Event]:
        raise NotImplementedError
