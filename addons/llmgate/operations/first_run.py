"""First run: the providers this machine already has, added when proxy.yaml says `auto: true`.

API keys in the environment, local model servers that answer, and coding-CLI logins on disk each
become a provider entry, unless proxy.yaml configures that provider already (same id, or same type
and base URL). The alias `auto` names their first models as one pool, tried in the order found
(fill-first: the first serves, the others take over when it fails), so one client example works
for whoever has any one of them.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from llmgate.providers import PROVIDER_TYPES
from llmgate.settings import PROVIDER_ENTRY, GatewaySettings, ModelRouting, ProviderSettings, entry_error

AUTO_ALIAS = "auto"
PROBE_TIMEOUT = 0.5  # seconds a local server has to answer GET /models (loopback: it answers in ms)
REDETECT_SECONDS = 30.0  # local servers and CLI logins that appear later are picked up this often


@dataclass(frozen=True)
class KeyProvider:
    id: str
    type: str
    base_url: str  # as the provider documents it for its SDK
    model: str  # what `auto` asks it for
    env: tuple[str, ...]  # the variables its SDK reads the key from, first wins


API_KEYS = (
    KeyProvider("openai", "openai", "https://api.openai.com/v1", "gpt-5-mini", ("OPENAI_API_KEY",)),
    KeyProvider("anthropic", "anthropic", "https://api.anthropic.com", "claude-haiku-4-5", ("ANTHROPIC_API_KEY",)),
    KeyProvider("gemini", "gemini", "https://generativelanguage.googleapis.com", "gemini-2.5-flash",
                ("GEMINI_API_KEY", "GOOGLE_API_KEY")),
    KeyProvider("openrouter", "openai", "https://openrouter.ai/api/v1", "openrouter/auto", ("OPENROUTER_API_KEY",)),
    KeyProvider("dashscope", "openai", "https://dashscope-intl.aliyuncs.com/compatible-mode/v1", "qwen-plus",
                ("DASHSCOPE_API_KEY",)),
    KeyProvider("deepseek", "openai", "https://api.deepseek.com/v1", "deepseek-v4-flash", ("DEEPSEEK_API_KEY",)),
    KeyProvider("groq", "openai", "https://api.groq.com/openai/v1", "llama-3.3-70b-versatile", ("GROQ_API_KEY",)),
    KeyProvider("mistral", "openai", "https://api.mistral.ai/v1", "mistral-small-latest", ("MISTRAL_API_KEY",)),
)


@dataclass(frozen=True)
class LocalServer:
    id: str
    name: str
    base_url: str
    key_env: str | None  # an optional key the server may be set to require
    no_models: str  # what to do when it lists no model
    host_env: str | None = None  # the server's own address variable (Ollama's OLLAMA_HOST)


LOCAL_SERVERS = (
    LocalServer("ollama", "Ollama", "http://127.0.0.1:11434/v1", None, "run `ollama pull llama3.2`", "OLLAMA_HOST"),
    LocalServer("lmstudio", "LM Studio", "http://127.0.0.1:1234/v1", "LMSTUDIO_API_KEY", "load a model in LM Studio"),
)


@dataclass(frozen=True)
class Login:
    type: str  # also the entry's id
    model: str
    command: str | None = None  # a CLI on PATH rather than a credentials file
    note: str = ""


LOGINS = (
    Login("qwen", "coder-model"),
    Login("gemini-cli", "gemini-2.5-flash"),
    Login("claude-code", "sonnet", command="claude"),
    Login("kiro", "claude-sonnet-4-5", note="Kiro's terms forbid third-party clients and accounts have been "
          "suspended for it; set `enabled: false` on a kiro entry (or auto: false) to keep it out"),
)

NEXT_STEP = (
    "set an API key and restart, e.g. `export OPENAI_API_KEY=sk-...` (or ANTHROPIC_API_KEY, GEMINI_API_KEY, "
    "OPENROUTER_API_KEY, DASHSCOPE_API_KEY, DEEPSEEK_API_KEY, GROQ_API_KEY, MISTRAL_API_KEY); or start a local "
    "server: `ollama serve` then `ollama pull llama3.2`, or LM Studio's `lms server start`; or log in with a "
    "coding CLI: `.venv/bin/llmgate login qwen`, `.venv/bin/llmgate login gemini`, or Claude Code's `claude`. "
    f"Servers and logins are picked up within {REDETECT_SECONDS:g} s without a restart; or add providers "
    "to proxy.yaml"
)


@dataclass(frozen=True)
class Found:
    entry: dict[str, Any]  # a proxy.yaml provider entry
    source: str  # where it was found: a variable's name, a URL, a file (never a secret)
    model: str | None  # what `auto` asks it for; None: it serves no model yet
    note: str = ""
    key_env: str | None = None  # the variable its api_key came from


def persistent_entry(f: Found) -> dict[str, Any]:
    """A proxy.yaml entry keeping what was found: its key as a ${VAR} reference, never the value."""
    return {**f.entry, "api_key": "${" + f.key_env + "}"} if f.key_env else dict(f.entry)


@dataclass(frozen=True)
class Detection:
    found: tuple[Found, ...] = ()
    unreachable: tuple[str, ...] = ()


def override_var(pid: str) -> str:
    """LLMGATE_<ID>_BASE_URL points an auto-detected provider elsewhere (a proxy, a test double).
    Not the SDKs' own OPENAI_BASE_URL etc.: those often point at this gateway itself."""
    return f"LLMGATE_{pid.upper().replace('-', '_')}_BASE_URL"


def ollama_base(value: str) -> str:
    """OLLAMA_HOST read as Ollama's own CLI reads it (host, host:port or a URL: http and port 11434
    unless said, an explicit http:// or https:// meaning 80 or 443), as its OpenAI-compatible base
    URL. An address to listen on everywhere (0.0.0.0, ::) is reached on loopback."""
    scheme, sep, rest = value.strip().partition("://")
    default_port = {"http": 80, "https": 443}.get(scheme.lower(), 11434) if sep else 11434
    scheme = scheme.lower() if sep else "http"
    hostport, _, path = (rest if sep else value.strip()).partition("/")
    url = urlsplit("//" + hostport)
    try:
        port = url.port or default_port
    except ValueError:  # Ollama, too, falls back to the default port
        port = default_port
    host = url.hostname or "127.0.0.1"
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}" + (f"/{path.strip('/')}" if path.strip("/") else "") + "/v1"


def detect(env: Mapping[str, str] | None = None, home: Path | None = None,
           which: Callable[[str], str | None] = shutil.which, timeout: float = PROBE_TIMEOUT) -> Detection:
    """What this machine has (blocking: at most `timeout` for the local probes, which run together)."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home()) if home is None else home
    found = [*_api_keys(env)]
    unreachable = []
    with ThreadPoolExecutor(len(LOCAL_SERVERS)) as pool:
        for result in pool.map(lambda s: _local(s, env, timeout), LOCAL_SERVERS):
            if isinstance(result, Found):
                found.append(result)
            else:
                unreachable.append(result)
    found += _logins(home, which)
    return Detection(tuple(found), tuple(unreachable))


def _api_keys(env: Mapping[str, str]) -> list[Found]:
    out = []
    for k in API_KEYS:
        var = next((v for v in k.env if env.get(v)), None)
        if var:
            entry = {"id": k.id, "type": k.type, "base_url": env.get(override_var(k.id)) or k.base_url,
                     "api_key": env[var]}
            out.append(Found(entry, var, k.model, key_env=var))
    return out


def _local(s: LocalServer, env: Mapping[str, str], timeout: float) -> Found | str:
    """A Found when the server answers its model list, else why not (one line)."""
    host = env.get(s.host_env) if s.host_env else None
    base = (env.get(override_var(s.id)) or (ollama_base(host) if host else s.base_url)).rstrip("/")
    key = env.get(s.key_env) if s.key_env else None
    try:
        r = httpx.get(base + "/models", timeout=timeout, trust_env=False,
                      headers={"Authorization": f"Bearer {key}"} if key else None)
    except httpx.TimeoutException:
        return f"{s.name} at {base}: no answer within {timeout:g} s"
    except httpx.HTTPError as e:
        return f"{s.name} at {base}: not running ({type(e).__name__})"
    if r.status_code != 200:
        return f"{s.name} at {base}: HTTP {r.status_code}" + (f" (set {s.key_env})" if r.status_code == 401 else "")
    try:
        ids = [m["id"] for m in r.json()["data"] if isinstance(m, dict) and isinstance(m.get("id"), str)]
    except (ValueError, TypeError, KeyError):
        return f"{s.name} at {base}: answers, but not with a model list"
    chat = [m for m in ids if "embed" not in m]
    entry = {"id": s.id, "type": "openai", "base_url": base, **({"api_key": key} if key else {})}
    return Found(entry, f"{base} ({s.name})", chat[0] if chat else None,
                 "" if chat else f"no model yet: {s.no_models}", s.key_env if key else None)


def _logins(home: Path, which: Callable[[str], str | None]) -> list[Found]:
    out = []
    for lg in LOGINS:
        if lg.command:
            path = which(lg.command)
            if path:
                out.append(Found({"id": lg.type, "type": lg.type}, f"`{lg.command}` on PATH ({path})", lg.model,
                                 lg.note))
            continue
        creds = PROVIDER_TYPES[lg.type].credentials or ""
        file = home / creds.removeprefix("~/")
        if file.is_file():
            out.append(Found({"id": lg.type, "type": lg.type}, creds, lg.model, lg.note))
    return out


@dataclass
class Report:
    """What a load added, left to proxy.yaml, or could not reach: for the log and /health."""

    added: list[Found] = field(default_factory=list)
    configured: list[Found] = field(default_factory=list)  # proxy.yaml has these already
    unreachable: list[str] = field(default_factory=list)
    nothing: bool = False  # no provider at all, found or configured

    def source_of(self, pid: str) -> str | None:
        return next((f.source for f in self.added if f.entry["id"] == pid), None)

    def lines(self) -> list[tuple[int, str]]:
        out = []
        for f in self.added:
            to = f"; model `{AUTO_ALIAS}` -> {f.model}" if f.model else ""
            note = f" ({f.note})" if f.note else ""
            level = logging.WARNING if f.note and f.model else logging.INFO
            out.append((level, f"auto: found {f.entry['id']} ({f.entry['type']}) from {f.source}{to}{note}"))
        out += [(logging.INFO, f"auto: {f.source} -> {f.entry['id']}: configured in proxy.yaml already")
                for f in self.configured]
        out += [(logging.INFO, f"auto: unreachable: {u}") for u in self.unreachable]
        if self.nothing:
            out.append((logging.WARNING, f"auto: found no provider on this machine. Next step: {NEXT_STEP}"))
        return out

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "found": [{"id": f.entry["id"], "type": f.entry["type"], "from": f.source, "model": f.model,
                       **({"note": f.note} if f.note else {})} for f in self.added],
            "unreachable": self.unreachable,
        }
        if self.nothing:
            out["next_step"] = NEXT_STEP
        return out


def merge(settings: GatewaySettings, det: Detection) -> tuple[GatewaySettings, Report]:
    """The settings with what was found added (proxy.yaml's own entries and `auto` alias win)."""
    providers = list(settings.providers)
    report = Report(unreachable=list(det.unreachable))
    for f in det.found:
        if _configured(settings.providers, f.entry):
            report.configured.append(f)
            continue
        try:
            providers.append(PROVIDER_ENTRY.validate_python(f.entry))
        except ValidationError as e:  # a bad LLMGATE_*_BASE_URL
            loc, msg = entry_error(e.errors()[0])
            report.unreachable.append(f"{f.entry['id']} from {f.source}: {'.'.join(map(str, loc))}: {msg}")
            continue
        report.added.append(f)
    report.nothing = not providers
    routing = settings.routing
    pool = [f"{f.entry['id']}/{f.model}" for f in report.added if f.model]
    if pool and AUTO_ALIAS not in routing.aliases:
        routing = routing.model_copy(update={
            "aliases": {**routing.aliases, AUTO_ALIAS: pool},
            "models": {AUTO_ALIAS: ModelRouting(strategy="fill-first"), **routing.models},
        })
    return settings.model_copy(update={"providers": providers, "routing": routing}), report


def _configured(providers: list[ProviderSettings], entry: dict[str, Any]) -> bool:
    kind = PROVIDER_TYPES[entry["type"]]
    base = (entry.get("base_url") or kind.default_base_url or "").rstrip("/")
    return any(p.id == entry["id"] or (p.type == entry["type"] and p.base_url == base) for p in providers)
