"""Configured secrets never leave the gateway: scrubbed from what clients get (bodies,
streams, headers) and from what flows and the request log record.

An upstream may echo a key ("Incorrect API key provided: sk-...", an HTML error page, a
debugging echo service). Every configured secret is replaced by "[redacted]": provider
api_keys and secret header values, the access/refresh tokens of the subscription accounts
loaded now, the client and admin keys. Secrets shorter than MIN_SECRET characters are not
scrubbed: replacing such short strings would mangle ordinary text.

Cost (bench/bench.py): the check that finds nothing is the hot path. Small data (stream
chunks) is searched with the one regex; larger bodies with a substring test per secret
(`in` is a fast C search, where a regex of many unrelated secrets tries each at every
position). Streams keep back, between chunks, only a tail that may begin a secret, so a
secret split across two chunks is caught without buffering; a chunk that ends in a byte
no secret has (SSE events end in a newline) is checked in constant time.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from mitmproxy import http

from llmgate.providers import PROVIDER_TYPES
from llmgate.request_path.relay import StreamTransform
from llmgate.request_path.upstream import proxy_secrets

MIN_SECRET = 8
SMALL = 512  # bytes up to which one regex search beats a substring test per secret
REDACTED = b"[redacted]"
CREDENTIAL_WORDS = ("token", "key", "secret")  # access_token, refreshToken, apiKey (iFlow), clientSecret (Kiro)
# headers that carry a credential whatever the provider, and those each kind declares its own
# (ProviderKind.secret_header_names: its key's header and what its accounts set)
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"}).union(
    *(kind.secret_header_names() for kind in PROVIDER_TYPES.values()))


class Redactor:
    """One compiled matcher for a fixed set of secrets."""

    def __init__(self, secrets: Iterable[str]):
        kept = sorted({s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET}, key=len, reverse=True)
        self.secrets = tuple(s.encode("utf-8", "surrogateescape") for s in kept)
        self._rx = re.compile(b"|".join(re.escape(s) for s in self.secrets)) if self.secrets else None
        # for streams: what a chunk may end with that is the start of a secret
        inner = sorted({b for s in self.secrets for b in s[:-1]})  # a cut secret ends in one of these
        self._inner = frozenset(inner)
        self._run = re.compile(b"[" + b"".join(re.escape(bytes([b])) for b in inner) + b"]+\\Z") if inner else None
        self._prefixes = frozenset(s[:k] for s in self.secrets for k in range(1, len(s)))
        self._hold = max((len(s) for s in self.secrets), default=1) - 1

    def __bool__(self) -> bool:
        return self._rx is not None

    def bytes(self, data: bytes) -> bytes:
        if self._rx is None:
            return data
        if len(data) <= SMALL:
            if self._rx.search(data) is None:
                return data
        elif all(data.find(s) == -1 for s in self.secrets):  # find: `in` raises and clears a TypeError first
            return data
        return self._rx.sub(REDACTED, data)

    def text(self, text: str) -> str:
        if self._rx is None:
            return text
        return self.bytes(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")

    def partial_tail(self, data: builtins.bytes) -> int:  # `bytes` is a method here
        """Where a secret that `data` ends in the middle of begins (len(data) if none)."""
        if not data or data[-1] not in self._inner:
            return len(data)
        run = self._run.search(data, max(0, len(data) - self._hold)) if self._run else None  # trailing secret bytes
        for i in range(run.start() if run else len(data), len(data)):
            if data[i:] in self._prefixes:
                return i
        return len(data)


class Scrubbing:
    """A stream transform whose output has the secrets scrubbed, also across chunk boundaries."""

    __slots__ = ("_inner", "_r", "_carry")

    def __init__(self, inner: StreamTransform, redactor: Redactor):
        self._inner = inner
        self._r = redactor
        self._carry = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._carry + self._inner.feed(chunk)
        data = self._r.bytes(data)
        cut = self._r.partial_tail(data)
        self._carry = data[cut:]
        return data[:cut]

    def finish(self) -> bytes:
        return self._flush(self._inner.finish())

    def fail(self, message: str, code: str = "upstream_error") -> bytes:
        return self._flush(self._inner.fail(message, code))

    def _flush(self, tail: bytes) -> bytes:
        data, self._carry = self._carry + tail, b""
        return self._r.bytes(data)


def secrets_of(rt: Any) -> list[str]:
    """Every secret the gateway holds now (see the module doc)."""
    settings = rt.settings
    found = [k for k, _ in settings.server.key_ids()] + list(settings.server.admin_keys)
    for p in settings.providers:
        found.append(p.api_key or "")
        found += [v for k, v in p.headers.items() if k.lower() in SECRET_HEADERS or _credential_name(k, "auth")]
    for data in _credentials(rt):
        nested = [kv for v in data.values() if isinstance(v, dict) for kv in v.items()]  # Codex: {"tokens": {...}}
        found += [v for k, v in [*data.items(), *nested] if isinstance(v, str) and _credential_name(k)]
    # the URLs' passwords: the accounts' proxies, the request log's PostgreSQL and the shared state's Redis
    return (found + proxy_secrets(settings, *(data.get("proxy_url") for data in _credentials(rt)))
            + url_passwords(settings.log.database) + url_passwords(settings.server.state))


def url_passwords(url: str | None) -> list[str]:
    """A store URL's passwords: in its userinfo, or as libpq's ?password= (and sslpassword=) parameters."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        userinfo = parts.password or ""
        query = [v for k, vs in parse_qs(parts.query).items() if k.endswith("password") for v in vs]
        return [p for p in (userinfo, unquote(userinfo), *query) if p]
    except ValueError:
        return []


def _credential_name(name: str, *more: str) -> bool:
    name = name.lower()
    return any(w in name for w in CREDENTIAL_WORDS + more)


def _credentials(rt: Any) -> list[dict]:
    """The credentials data of the subscription accounts loaded now."""
    out = []
    for _, accounts in list(rt._accounts.values()):
        for a in getattr(accounts, "accounts", ()):
            creds = getattr(a, "creds", None)
            if creds is not None and isinstance(creds.data, dict):
                out.append(creds.data)
    return out


class Secrets:
    """The current Redactor of a runtime, rebuilt when the config or a loaded token changes."""

    def __init__(self, rt: Any):
        self.rt = rt
        self._stamp: tuple = ()
        self._redactor = Redactor(())

    def current(self) -> Redactor:
        # identities are enough: a reload makes new settings, a refresh or re-read new token data.
        # Asked several times per request: with no subscription accounts, one identity check
        rt, stamp = self.rt, self._stamp
        creds = _credentials(rt) if rt._accounts else []
        if not stamp or stamp[0] is not rt.settings or len(stamp) != len(creds) + 1 or \
                any(a is not b for a, b in zip(creds, stamp[1:], strict=True)):
            self._redactor, self._stamp = Redactor(secrets_of(rt)), (rt.settings, *creds)
        return self._redactor

    def stream(self, transform: StreamTransform) -> StreamTransform:
        r = self.current()
        return Scrubbing(transform, r) if r else transform


def scrub_message(r: Redactor, m: http.Message) -> None:
    """A request's or response's headers and body, as recorded or sent (identity-encoded bodies
    only: the gateway asks upstreams for identity and writes its own bodies plain)."""
    if not r:
        return
    fields = m.headers.fields
    joined = b"\n".join(v for _, v in fields)  # one search for all of them
    if r.bytes(joined) is not joined:
        m.headers.fields = tuple((k, r.bytes(v)) for k, v in fields)
    if m.raw_content and "content-encoding" not in m.headers:
        scrubbed = r.bytes(m.raw_content)
        if scrubbed is not m.raw_content:
            m.content = scrubbed  # Content-Length follows


class Redaction:
    """Addon: scrubs each answer the gateway set before it is logged, recorded or sent.
    Streams are scrubbed as they pass (Secrets.stream, in the relay's transform)."""

    def __init__(self, rt: Any):
        self.rt = rt

    def response(self, flow: http.HTTPFlow) -> None:
        if flow.response is None or flow.response.stream or not flow.live:
            return  # streams are scrubbed as they pass; provider-side flows by flow_record
        scrub_message(self.rt.secrets.current(), flow.response)
