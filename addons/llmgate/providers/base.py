"""What the gateway needs to know about a kind of provider."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from llmgate.credentials.store import RefreshFailed


@dataclass(frozen=True)
class ProviderKind:
    type: str
    wire: str  # the wire format it speaks, a module name in converters/
    chat_url: Callable[[str, str, bool], str]  # (base_url, upstream model, stream) -> URL
    models_path: str | None  # appended to base_url; None: no list endpoint
    auth_headers: Callable[[str], dict[str, str]]  # api key -> headers
    parse_models: Callable[[Any], list[str]]  # models endpoint JSON -> model ids
    default_headers: dict[str, str] = field(default_factory=dict)
    count_url: Callable[[str, str], str] | None = None  # (base_url, model) -> token-count URL, if it has one
    embed_url: Callable[[str, str], str] | None = None  # (base_url, model) -> embeddings URL, if it has one
    default_base_url: str | None = None  # when proxy.yaml gives none
    fallback_urls: tuple[str, ...] = ()  # hosts tried after the default base_url fails
    default_models: tuple[str, ...] = ()  # the official CLI's built-in list (kinds without a list endpoint)
    # subscription kinds: (ProviderSettings, Runtime) -> the provider's accounts (llmgate/credentials/accounts.py),
    # which put credentials, envelopes and signatures on each upstream request
    accounts: Callable[[Any, Any], Any] | None = None
    credentials: str | None = None  # default credentials file (a glob may name several accounts)
    stream_type: str = "text/event-stream"  # the content type of its streamed answers
    reauth_statuses: tuple[int, ...] = (401,)  # answers that mean "refresh the token and try again"
    # proxy.yaml fields this kind takes beyond the common ones (settings.KIND_FIELDS names them)
    config_fields: tuple[str, ...] = ()
    # headers its accounts set that carry a credential (auth_headers' own are counted already)
    secret_headers: tuple[str, ...] = ()
    # upstreams that only stream (Codex's backend): the streamed answer to a request the client
    # did not stream -> the JSON answer (its accounts ask for a stream either way)
    collect: Callable[[bytes], bytes] | None = None
    # kinds whose models differ in wire format (Copilot): the models endpoint's JSON -> facts per model
    # id (the catalog keeps them), and (upstream model, its facts or None, the client's wire) -> the kind
    # as it serves that model. None for the rest: one wire format, nothing looked up per request.
    model_info: Callable[[Any], dict[str, Any]] | None = None
    for_model: Callable[[str, Any, str], ProviderKind] | None = None
    # what else a login needs from beside its credentials file, added to the credentials that go to the
    # shared store (server.state), so that every host has it: (file, its JSON) -> the JSON to store;
    # `bundled` names the keys it adds (left out when the store's tokens are written back to the file)
    bundle: Callable[[Path, dict[str, Any]], dict[str, Any]] | None = None
    bundled: tuple[str, ...] = ()

    def secret_header_names(self) -> frozenset[str]:
        """Lowercased names of every header that carries this kind's credentials: redacted in flows."""
        return frozenset(h.lower() for h in (*self.auth_headers("probe"), *self.secret_headers))

    def headers(self, api_key: str | None, accept: str = "application/json") -> dict[str, str]:
        """What every request to this kind carries before the entry's own headers: JSON body,
        no compression (streams are rewritten chunk by chunk), the kind's headers, the key."""
        return {"Content-Type": "application/json", "Accept": accept, "Accept-Encoding": "identity",
                **self.default_headers, **(self.auth_headers(api_key) if api_key else {})}


async def call_token_endpoint(session: aiohttp.ClientSession, method: str, url: str, where: str,
                              **request: Any) -> tuple[int, Any]:
    """A subscription kind's own call for a token (its request's `method`, `url` and aiohttp
    keywords; 30 s at most): (status, the JSON answer or None). RefreshFailed, naming `where`,
    when it cannot be reached."""
    try:
        async with session.request(method, url, timeout=aiohttp.ClientTimeout(total=30), **request) as resp:
            status, text = resp.status, await resp.read()
    except (aiohttp.ClientError, TimeoutError) as e:
        raise RefreshFailed(f"{where} unreachable: {type(e).__name__}") from None
    try:
        return status, json.loads(text)
    except ValueError:
        return status, None
