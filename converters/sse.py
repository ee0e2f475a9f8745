"""Incremental Server-Sent Events parser and encoder (pure, no I/O).

The parser takes bytes exactly as TCP reads deliver them: an event may be split
at any byte, including between the CR and LF of a CRLF line ending. Each parsed
event keeps the raw bytes it came from, so an event the gateway does not need to
change is forwarded byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_EVENT = 16 << 20  # bytes of one event (or one line) held while it is incomplete


class StreamFault(ValueError):
    """An upstream stream that cannot go on: an event too large to hold, or one that is not
    what the format allows (invalid JSON). The relay ends the client's stream with an error
    event of the client's format. The message follows the upstream's name ("sent ...").
    `before`: output already made from the same read."""

    def __init__(self, message: str, code: str = "upstream_malformed"):
        super().__init__(message)
        self.message = message
        self.code = code
        self.before = b""


def not_json(data: str) -> StreamFault:
    return StreamFault(f"sent a stream event that is not valid JSON: {data[:80]!r}.")


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
    """Feed it chunks; it returns the events completed so far. An incomplete event that
    has grown past max_event bytes raises StreamFault at the next feed or close."""

    def __init__(self, max_event: int = MAX_EVENT) -> None:
        self.max_event = max_event
        self._buf = bytearray()  # unconsumed bytes (an incomplete line)
        self._scan = 0  # where the search for a line end resumes in _buf (none before it)
        self._raw = bytearray()  # raw bytes of the event being assembled
        self._cur = Event()
        self._data: list[str] = []
        self._has_fields = False
        self._bom_checked = False

    def feed(self, chunk: bytes) -> list[Event]:
        self._check_size()
        if self._bom_checked and not self._buf and not self._raw and not self._has_fields \
                and not self._cur.comments and chunk.find(b"\r") == -1:  # find, not `in`: see _single_lines
            return self._single_lines(chunk)
        self._buf += chunk
        if not self._bom_checked and len(self._buf) >= 3:
            self._bom_checked = True
            if self._buf[:3] == b"\xef\xbb\xbf":
                del self._buf[:3]
        return self._drain(final=False)

    def _single_lines(self, chunk: bytes) -> list[Event]:
        """The common case, at an event boundary: events of one `data:` line each, LF endings.
        Parsed without the line loop (most of a relay's parsing cost); the rest goes to it."""
        events: list[Event] = []
        start = 0
        while (end := chunk.find(b"\n\n", start)) != -1:
            line = chunk[start:end]
            # find, not `in`: CPython 3.12's `bytes in bytes` first reads the needle as an integer,
            # raising and clearing a TypeError, ~3x the cost of the search (several per chunk)
            if not line.startswith(b"data:") or line.find(b"\n") != -1:
                break
            value = line[6:] if line[5:6] == b" " else line[5:]
            events.append(Event(data=value.decode("utf-8", errors="replace"), raw=chunk[start:end + 2]))
            start = end + 2
        if start < len(chunk):
            self._buf += chunk[start:]
            events += self._drain(final=False)
        return events

    def close(self) -> list[Event]:
        """End of stream. A last line without its line end is dropped, as the
        spec says; complete lines of an event that lacks only its blank line are
        kept (and the blank line added to its raw bytes)."""
        self._check_size()
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

    def _check_size(self) -> None:
        if len(self._buf) + len(self._raw) > self.max_event:
            raise StreamFault(f"sent a stream event larger than the gateway's limit of "
                              f"{self.max_event >> 20} MiB.", "upstream_event_too_large")

    def _drain(self, final: bool) -> list[Event]:
        events: list[Event] = []
        buf = self._buf
        start = 0
        n = len(buf)
        scan = self._scan  # a long line arriving in many reads is searched once, not once per read
        while start < n:
            cr = buf.find(b"\r", max(start, scan))
            lf = buf.find(b"\n", max(start, scan))
            if cr == -1 and lf == -1:
                scan = n
                break
            if cr != -1 and (lf == -1 or cr < lf):
                end = cr
                if cr + 1 < n:
                    nxt = cr + 2 if buf[cr + 1] == 0x0A else cr + 1
                elif final:
                    nxt = cr + 1
                else:
                    scan = cr
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
        self._scan = max(0, scan - start)
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
