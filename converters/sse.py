"""Incremental Server-Sent Events parser and encoder (pure, no I/O).

The parser takes bytes exactly as TCP reads deliver them: an event may be split
at any byte, including between the CR and LF of a CRLF line ending. Each parsed
event keeps the raw bytes it came from, so an event the gateway does not need to
change is forwarded byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Event:
    data: str | None = None  # data lines joined with "\n"; None if the event had none
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)
    raw: bytes = b""

    @property
    def is_comment_only(self) -> bool:
        return self.data is None and self.event is None and self.id is None


class SSEParser:
    """Feed it chunks; it returns the events completed so far."""

    def __init__(self) -> None:
        self._buf = bytearray()  # unconsumed bytes (an incomplete line)
        self._raw = bytearray()  # raw bytes of the event being assembled
        self._cur = Event()
        self._data: list[str] = []
        self._has_fields = False
        self._bom_checked = False

    def feed(self, chunk: bytes) -> list[Event]:
        self._buf += chunk
        if not self._bom_checked and len(self._buf) >= 3:
            self._bom_checked = True
            if self._buf[:3] == b"\xef\xbb\xbf":
                del self._buf[:3]
        return self._drain(final=False)

    def close(self) -> list[Event]:
        """End of stream. A last line without its line end is dropped, as the
        spec says; complete lines of an event that lacks only its blank line are
        kept (and the blank line added to its raw bytes)."""
        events = self._drain(final=True)
        self._buf.clear()
        if self._has_fields or self._cur.comments:
            self._raw += b"\n"
            events.append(self._dispatch())
        return events

    @property
    def pending(self) -> bytes:
        """Bytes received but not yet part of a completed event."""
        return bytes(self._raw + self._buf)

    def _drain(self, final: bool) -> list[Event]:
        events: list[Event] = []
        buf = self._buf
        start = 0
        n = len(buf)
        while start < n:
            cr = buf.find(b"\r", start)
            lf = buf.find(b"\n", start)
            if cr == -1 and lf == -1:
                break
            if cr != -1 and (lf == -1 or cr < lf):
                end = cr
                if cr + 1 < n:
                    nxt = cr + 2 if buf[cr + 1] == 0x0A else cr + 1
                elif final:
                    nxt = cr + 1
                else:
                    break  # a CR at the end of the read: wait to see if LF follows
            else:
                end = lf
                nxt = lf + 1
            line = bytes(buf[start:end])
            self._raw += buf[start:nxt]
            start = nxt
            if not line:
                if self._has_fields or self._cur.comments:
                    events.append(self._dispatch())
                else:
                    self._raw.clear()  # stray blank line
                continue
            self._field(line)
        del buf[:start]
        return events

    def _field(self, line: bytes) -> None:
        text = line.decode("utf-8", errors="replace")
        if text.startswith(":"):
            self._cur.comments.append(text[1:].removeprefix(" "))
            return
        name, sep, value = text.partition(":")
        if sep:
            value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
            self._has_fields = True
        elif name == "event":
            self._cur.event = value
            self._has_fields = True
        elif name == "id":
            if "\0" not in value:
                self._cur.id = value
            self._has_fields = True
        elif name == "retry":
            if value.isdigit():
                self._cur.retry = int(value)
            self._has_fields = True
        # unknown field names are ignored, as the spec says

    def _dispatch(self) -> Event:
        ev = self._cur
        if self._data:
            ev.data = "\n".join(self._data)
        ev.raw = bytes(self._raw)
        self._cur = Event()
        self._data = []
        self._raw.clear()
        self._has_fields = False
        return ev


def encode(data: str | None = None, event: str | None = None, id: str | None = None) -> bytes:
    """One event in wire form, LF line endings."""
    out = []
    if event is not None:
        out.append(f"event: {event}\n")
    if id is not None:
        out.append(f"id: {id}\n")
    if data is not None:
        for line in data.split("\n"):
            out.append(f"data: {line}\n")
    out.append("\n")
    return "".join(out).encode()


def encode_like(ev: Event, data: str) -> bytes:
    """Re-encode `ev` with new data, keeping its event name, id and comments."""
    head = "".join(f": {c}\n" for c in ev.comments).encode()
    return head + encode(data, ev.event, ev.id)
