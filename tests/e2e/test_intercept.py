"""Intercept mode end to end: the real Claude Code and Gemini CLIs, started with HTTPS_PROXY
pointing at the gateway in mitmproxy's regular mode and its CA trusted (NODE_EXTRA_CA_CERTS), as
README "Intercept mode" says. The vendor hosts are connected to local TLS doubles by a test-only
second script (tests/e2e/vendor_hosts.py), which plays DNS; the doubles' certificates come from
a test CA the gateway is told to trust for upstreams. Calls an intercept rule matches must be
answered by the gateway's provider (an OpenAI-compatible double), the others must reach the
vendor double byte for byte with the CLI's own key; hosts not listed are tunnelled untouched."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import zstandard
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mitmproxy import certs, io

from llmgate.addons.accounting import terminal_sent
from tests.agents.brain import Plan
from tests.agents.conftest import QUIET, SETTINGS, run_bounded
from tests.agents.conftest import agent_bin as agent_bin  # the fixture: the CLIs, installed by scripts/agents.sh
from tests.e2e.conftest import closed_port
from tests.harness import ROOT, Gateway
from tests.upstreams import anthropic_api, gemini_api, openai_compat, serving
from tests.upstreams.serving import ServerThread

ANTHROPIC_KEY = "sk-ant-vendor-cli-key-0123456789"  # the CLIs' own vendor keys
GEMINI_KEY = "AIzaVendorCliKey0123456789"
UPSTREAM_KEY = "gateway-provider-key-0123"
CLIENT_KEY = "sk-gateway-client-key"  # server.api_keys: not asked of intercepted calls
ROUTED_TEXT = "ROUTED-BY-GATEWAY"
VENDOR_TEXT = "ANSWERED-BY-VENDOR"
ANTHROPIC_ROUTED = "claude-sonnet-4-5-20250929"  # a rule sends it to the gateway's `anthropic` provider
RUN_TIMEOUT = 90  # seconds one CLI session may take (tests/agents uses the same)


class TlsDouble(ServerThread):
    """A provider double served over TLS with a certificate for its vendor host, keeping every
    request as it arrived (path, headers, raw body: compressed if it came so). A zstd body (Codex
    compresses its calls to chatgpt.com) is decoded for the double here: aiohttp needs a package
    this venv does not have for that."""

    def __init__(self, app: web.Application, cert: Path, key: Path):
        self.raw: list[tuple[str, dict[str, str], bytes]] = []

        @web.middleware
        async def tap(request: web.Request, handler):
            raw = await request.read()
            self.raw.append((request.path_qs, {k.lower(): v for k, v in request.headers.items()}, raw))
            if request.headers.get("content-encoding") == "zstd":
                request._read_bytes = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
            return await handler(request)

        app.middlewares.insert(0, tap)
        super().__init__(app)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5, auto_decompress=False)
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.tls.load_cert_chain(cert, key)

    async def _start(self) -> int:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.tls).start()
        return self.runner.addresses[0][1]


def answer(text: str):
    return lambda wire, body: Plan(text=text)


@pytest.fixture(scope="module")
def vendor_ca(tmp_path_factory) -> tuple[Path, Callable[[str], tuple[Path, Path]]]:
    """A CA for the doubles (the gateway trusts it for upstreams) and a cert/key maker."""
    folder = tmp_path_factory.mktemp("vendor-ca")
    store = certs.CertStore.from_store(folder, "vendor", 2048)

    def issue(host: str) -> tuple[Path, Path]:
        entry = store.get_cert(host, [x509.DNSName(host)])
        cert, key = folder / f"{host}.pem", folder / f"{host}.key"
        cert.write_bytes(entry.cert.to_pem())
        key.write_bytes(entry.privatekey.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
        return cert, key

    return folder / "vendor-ca-cert.pem", issue


@pytest.fixture(scope="module")
def stack(vendor_ca, tmp_path_factory):
    ca_file, issue = vendor_ca
    doubles = {
        "api.anthropic.com": TlsDouble(anthropic_api.make_app(ANTHROPIC_KEY, anthropic_api.DEFAULT_MODELS,
                                                              brain=answer(VENDOR_TEXT)), *issue("api.anthropic.com")),
        "generativelanguage.googleapis.com": TlsDouble(
            gemini_api.make_app(GEMINI_KEY, gemini_api.DEFAULT_MODELS, brain=answer(VENDOR_TEXT)),
            *issue("generativelanguage.googleapis.com")),
        "elsewhere.test": TlsDouble(web.Application(), *issue("elsewhere.test")),  # not an LLM host
    }
    for d in doubles.values():
        d.__enter__()
    provider = ServerThread(openai_compat.make_app(UPSTREAM_KEY, ["qwen3-coder-plus", "gemini-2.5-flash"],
                                                   brain=answer(ROUTED_TEXT)))
    anthropic_up = ServerThread(anthropic_api.make_app(UPSTREAM_KEY, [ANTHROPIC_ROUTED], brain=answer(ROUTED_TEXT)))
    tmp = tmp_path_factory.mktemp("intercept")
    cfg = {
        "server": {"api_keys": [CLIENT_KEY]},
        "providers": [{"id": "up", "type": "openai", "base_url": provider.__enter__() + "/v1",
                       "api_key": UPSTREAM_KEY, "models": ["qwen3-coder-plus", "gemini-2.5-flash"]},
                      {"id": "ant", "type": "anthropic", "base_url": anthropic_up.__enter__(), "api_key": UPSTREAM_KEY,
                       "models": [ANTHROPIC_ROUTED]}],
        "intercept": {
            "hosts": ["api.anthropic.com", "generativelanguage.googleapis.com"],
            "rules": [{"host": "api.anthropic.com", "model": "claude-haiku-*", "route": "up/qwen3-coder-plus"},
                      {"host": "api.anthropic.com", "model": ANTHROPIC_ROUTED, "provider": "ant"},
                      {"host": "generativelanguage.googleapis.com", "model": "gemini-2.5-flash", "provider": "up"}],
        },
    }
    mapping = ",".join(f"{h}={d.port}" for h, d in doubles.items())
    # beside the harness's reverse listener (two cannot both take port 0)
    gw = Gateway(cfg, tmp / "proxy.yaml", "--mode", f"regular@{closed_port()}",
                 "-s", str(ROOT / "tests" / "e2e" / "vendor_hosts.py"),
                 "--set", f"test_vendor_hosts={mapping}", "--set", f"confdir={tmp / 'mitmproxy'}",
                 "--set", f"ssl_verify_upstream_trusted_ca={ca_file}", "--set", f"save_stream_file={tmp / 'flows'}")
    proxy_port = int(gw.wait_for(r"HTTP\(S\) proxy listening at 127\.0\.0\.1:(\d+)").group(1))
    gw.port = int(gw.wait_for(r"reverse proxy to \S+ listening at 127\.0\.0\.1:(\d+)").group(1))
    gw.base = f"http://127.0.0.1:{gw.port}"
    yield {"gw": gw, "proxy": proxy_port, "doubles": doubles, "provider": provider, "tmp": tmp,
           "ca": tmp / "mitmproxy" / "mitmproxy-ca-cert.pem", "anthropic_up": anthropic_up}
    gw.stop()
    for d in (*doubles.values(), provider, anthropic_up):
        d.__exit__(None, None, None)


def cli_env(agent_bin: Path, home: Path, s: dict) -> dict[str, str]:
    """README "Intercept mode": the proxy and its CA; nothing else about the CLI changes."""
    return {"PATH": f"{agent_bin}:{os.environ['PATH']}", "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"), "TMPDIR": str(home), **QUIET,
            "HTTPS_PROXY": f"http://127.0.0.1:{s['proxy']}", "NODE_EXTRA_CA_CERTS": str(s["ca"])}


def run_cli(agent: str, model: str, agent_bin: Path, s: dict) -> tuple[int | None, str]:
    home = s["tmp"] / f"{agent}-{model}"
    (home / "work").mkdir(parents=True)
    env = cli_env(agent_bin, home, s)
    if agent == "claude":
        args = ["claude", "-p", "Say hello.", "--model", model]
        env["ANTHROPIC_API_KEY"] = ANTHROPIC_KEY
    else:
        (home / ".gemini").mkdir()
        (home / ".gemini" / "settings.json").write_text(
            json.dumps({**SETTINGS, "security": {"auth": {"selectedType": "gemini-api-key"}}}))
        args = ["gemini", "-p", "Say hello.", "-m", model]
        env["GEMINI_API_KEY"] = GEMINI_KEY
    return run_bounded(args, home / "work", env, RUN_TIMEOUT)


@pytest.fixture(scope="module")
def runs(stack, agent_bin) -> dict[tuple[str, str], tuple[int | None, str]]:
    """Each CLI once with a model a rule routes and once with one that passes through."""
    combos = [("claude", "claude-haiku-4-5"), ("claude", "claude-sonnet-4-5"), ("claude", ANTHROPIC_ROUTED),
              ("gemini", "gemini-2.5-flash"), ("gemini", "gemini-2.5-pro")]
    with ThreadPoolExecutor(4) as pool:
        futures = {c: pool.submit(run_cli, *c, agent_bin, stack) for c in combos}
        return {c: f.result() for c, f in futures.items()}


def log_rows(s: dict, models: set[str]) -> list[dict]:
    """The gateway's request log (through its reverse listener beside the proxy one), once it
    holds a row for each of these models (its writes are batched)."""
    rows: list[dict] = []
    for _ in range(40):
        rows = httpx.get(s["gw"].base + "/admin/requests", params={"limit": 1000}).json()["requests"]
        if models <= {r["model"] for r in rows}:
            break
        time.sleep(0.25)
    return rows


def vendor_calls(s: dict, host: str, marker: str) -> list[tuple[str, dict[str, str], bytes]]:
    return [r for r in s["doubles"][host].raw if marker.encode() in r[2] or marker in r[0]]


def test_claude_code_routed_call_is_answered_by_the_gateways_provider(stack, runs):
    rc, out = runs[("claude", "claude-haiku-4-5")]
    assert rc == 0 and ROUTED_TEXT in out, out[-2000:]
    got = [r for r in stack["provider"].app[serving.REQUEST_LOG]
           if r["body"] and r["body"].get("model") == "qwen3-coder-plus"]
    assert got, "the provider double saw no routed call"
    assert all(r["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}" for r in got)
    everything = json.dumps(stack["provider"].app[serving.REQUEST_LOG])
    assert ANTHROPIC_KEY not in everything and GEMINI_KEY not in everything, "a vendor key reached another provider"
    assert not vendor_calls(stack, "api.anthropic.com", "claude-haiku-4-5"), "a routed call reached the vendor"


def test_claude_code_unrouted_call_reaches_the_vendor_unchanged(stack, runs):
    rc, out = runs[("claude", "claude-sonnet-4-5")]
    assert rc == 0 and VENDOR_TEXT in out, out[-2000:]
    calls = [r for r in vendor_calls(stack, "api.anthropic.com", '"claude-sonnet-4-5"') if "/v1/messages" in r[0]]
    assert calls, "the vendor double saw no call"
    assert all(h.get("x-api-key") == ANTHROPIC_KEY for _, h, _ in calls), "the CLI's own key did not arrive"
    # the strict double accepted what the current CLI sends with its betas (anthropic_api's docstring)
    assert any(b'"scope":"global"' in body and b'"diagnostics":' in body
               and "prompt-caching-scope-2026-01-05" in h["anthropic-beta"]
               and "cache-diagnosis-2026-04-07" in h["anthropic-beta"] for _, h, body in calls)
    recorded = {bytes(f.request.raw_content) for f in flows(stack)
                if f.request.host == "api.anthropic.com" and b'"claude-sonnet-4-5"' in (f.request.raw_content or b"")}
    assert {body for _, _, body in calls} <= recorded, "the vendor got other bytes than the CLI sent"


def test_claude_code_routed_to_an_anthropic_provider_keeps_its_betas(stack, runs):
    """The strict Anthropic double behind the gateway accepts what Claude Code sends its vendor
    (cache_control scope, diagnostics) because the gateway forwards anthropic-beta with it."""
    rc, out = runs[("claude", ANTHROPIC_ROUTED)]
    assert rc == 0 and ROUTED_TEXT in out, out[-2000:]
    got = [r for r in stack["anthropic_up"].app[serving.REQUEST_LOG]
           if r["path"] == "/v1/messages" and (r["body"] or {}).get("model") == ANTHROPIC_ROUTED]
    assert got and all(r["headers"]["x-api-key"] == UPSTREAM_KEY for r in got)
    assert any('"scope": "global"' in json.dumps(r["body"]) and "diagnostics" in r["body"]
               and "prompt-caching-scope-2026-01-05" in r["headers"]["anthropic-beta"]
               and "cache-diagnosis-2026-04-07" in r["headers"]["anthropic-beta"] for r in got)
    assert not vendor_calls(stack, "api.anthropic.com", ANTHROPIC_ROUTED), "a routed call reached the vendor"


def test_gemini_cli_routed_and_passed_through(stack, runs):
    rc, out = runs[("gemini", "gemini-2.5-flash")]
    assert rc == 0 and ROUTED_TEXT in out, out[-2000:]
    assert not vendor_calls(stack, "generativelanguage.googleapis.com", "models/gemini-2.5-flash:")
    assert any(r["body"] and r["body"].get("model") == "gemini-2.5-flash"
               for r in stack["provider"].app[serving.REQUEST_LOG]), "the provider double saw no routed call"
    rc, out = runs[("gemini", "gemini-2.5-pro")]
    assert rc == 0 and VENDOR_TEXT in out, out[-2000:]
    calls = vendor_calls(stack, "generativelanguage.googleapis.com", "models/gemini-2.5-pro:")
    assert calls and all(h.get("x-goog-api-key") == GEMINI_KEY for _, h, _ in calls)
    recorded = {bytes(f.request.raw_content) for f in flows(stack) if "gemini-2.5-pro:" in f.request.path}
    assert {body for _, _, body in calls} <= recorded


def test_request_log_and_flows_show_the_intercepted_calls_without_their_keys(stack, runs):
    rows = log_rows(stack, {"claude-sonnet-4-5", "gemini-2.5-pro", "claude-haiku-4-5", "gemini-2.5-flash"})
    passed = {r["model"] for r in rows if r["provider"] == "passthrough"}
    routed = {r["model"] for r in rows if r["provider"] == "up"}
    assert {"claude-sonnet-4-5", "gemini-2.5-pro"} <= passed, rows
    assert {"claude-haiku-4-5", "gemini-2.5-flash"} <= routed, rows
    hosts = {r["account"] for r in rows if r["provider"] == "passthrough"}
    assert hosts <= {"api.anthropic.com", "generativelanguage.googleapis.com"} and len(hosts) == 2
    assert all(r["status"] == 200 for r in rows if r["model"] in passed | routed), rows
    assert any(r["stream"] and r["completion_tokens"] for r in rows if r["provider"] == "passthrough"), rows
    recorded = flows(stack)
    vendor = [f for f in recorded if f.request.host in ("api.anthropic.com", "generativelanguage.googleapis.com")]
    assert vendor and all(f.request.port == 443 for f in vendor)
    dump = b"".join(bytes(str(f.request.headers), "utf-8") + (f.request.raw_content or b"") for f in recorded)
    assert ANTHROPIC_KEY.encode() not in dump and GEMINI_KEY.encode() not in dump
    streamed = [f for f in vendor if "(passthrough)" in f.comment and f.response
                and "event-stream" in f.response.headers.get("content-type", "")]
    assert streamed and all(terminal_sent(f.response.content) for f in streamed), "a passed-on stream not kept whole"


def flows(s: dict) -> list:
    with open(s["tmp"] / "flows", "rb") as f:
        return [f for f in io.FlowReader(f).stream() if hasattr(f, "request")]


def test_other_hosts_are_tunnelled_without_tls_interception(stack):
    """A CONNECT to a host not in intercept.hosts meets that server's own certificate; one to a
    vendor host meets the gateway's CA."""
    assert issuer_via_proxy(stack, "elsewhere.test") == "vendor"
    assert issuer_via_proxy(stack, "api.anthropic.com") == "mitmproxy"


@contextlib.contextmanager
def tunnel(proxy_port: int, host: str) -> Iterator[ssl.SSLSocket]:
    """A CONNECT through the proxy and TLS inside it, whatever certificate it meets."""
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as sock:
        sock.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 200"), head
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with ctx.wrap_socket(sock, server_hostname=host) as tls:
            yield tls


def issuer_via_proxy(s: dict, host: str) -> str:
    with tunnel(s["proxy"], host) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    issuer = certs.Cert.from_pem(ssl.DER_cert_to_PEM_cert(der).encode()).issuer
    return dict(issuer).get("O", "") if issuer else ""


def test_the_reverse_listener_beside_keeps_its_client_keys(stack):
    r = httpx.get(stack["gw"].base + "/v1/models")
    assert r.status_code == 401
    r = httpx.get(stack["gw"].base + "/v1/models", headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    assert r.status_code == 200 and "qwen3-coder-plus" in r.text


def test_a_busy_tunnel_outlives_the_gateways_client_timeouts(vendor_ca, tmp_path):
    """The client limits (idle, header and body timeouts) are the gateway API's: a tunnel to
    another host (git, a download, a websocket) is the CLI's own and lasts as long as it is used."""
    other = TlsDouble(web.Application(), *vendor_ca[1]("elsewhere.test"))
    other.__enter__()
    gw = Gateway({"server": {"limits": {"header_timeout": 0.5, "idle_timeout": 0.5}}}, tmp_path / "proxy.yaml",
                 "--mode", f"regular@{closed_port()}", "-s", str(ROOT / "tests" / "e2e" / "vendor_hosts.py"),
                 "--set", f"test_vendor_hosts=elsewhere.test={other.port}", "--set", f"confdir={tmp_path / 'mitm'}")
    try:
        port = int(gw.wait_for(r"HTTP\(S\) proxy listening at 127\.0\.0\.1:(\d+)").group(1))
        with tunnel(port, "elsewhere.test") as tls:
            for _ in range(6):  # 3 s of use, six times the timeouts
                tls.sendall(b"GET /x HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n")
                got = b""
                while b"\r\n\r\n" not in got or not got.endswith(b"Not Found"):
                    chunk = tls.recv(4096)
                    assert chunk, f"the tunnel was cut: {got!r}\n{gw.output[-2000:]}"
                    got += chunk
                assert got.startswith(b"HTTP/1.1 404")
                time.sleep(0.5)
    finally:
        gw.stop()
        other.__exit__(None, None, None)
