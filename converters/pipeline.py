"""A stream conversion: a decoder for the upstream's events feeding an encoder for the client's."""

from __future__ import annotations

from typing import Protocol

from converters import canonical as cn


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
