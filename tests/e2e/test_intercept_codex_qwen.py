"""Intercept mode end to end with the real Codex CLI and Qwen Code (tests/e2e/test_intercept.py
does Claude Code and Gemini CLI, and holds the scaffolding used here): each CLI keeps its own
login and base URL, is given HTTPS_PROXY and the gateway's CA as README "Intercept mode" says
(Codex: CODEX_CA_CERTIFICATE, Qwen Code: NODE_EXTRA_CA_CERTS), and talks to local TLS doubles
of its vendor hosts. Codex signed in with an API key (api.openai.com, Responses) and with a
ChatGPT auth.json (chatgpt.com/backend-api/codex); Qwen Code with a DashScope API key
(compatible-mode, OpenAI chat). For each, a model an intercept rule names is answered by the
gateway's provider, another reaches the vendor double byte for byte with the CLI's own auth.
Qwen Code's Qwen OAuth login (portal.qwen.ai) is not run: Qwen Code 0.24 refuses it itself ("Qwen
OAuth free tier was discontinued on 2026-04-15") before any call."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import zstandard
from aiohttp import web

from tests.agents.conftest import SETTINGS, run_bounded
from tests.agents.conftest import agent_bin as agent_bin  # the fixture: the CLIs, installed by scripts/agents.sh
from tests.e2e.conftest import closed_port
from tests.e2e.test_intercept import (
    ROUTED_TEXT,
    RUN_TIMEOUT,
    UPSTREAM_KEY,
    VENDOR_TEXT,
    TlsDouble,
    answer,
    cli_env,
    flows,
    log_rows,
)
from tests.e2e.test_intercept import vendor_ca as vendor_ca  # the fixture: a CA for the doubles
from tests.harness import ROOT, Gateway
from tests.upstreams import codex_backend, openai_compat, qwen_portal, responses_api, serving
from tests.upstreams.serving import ServerThread

OPENAI_KEY = "sk-proj-vendor-cli-key-0123456789"  # the CLIs' own
DASHSCOPE_KEY = "sk-dashscope-vendor-key-0123456789"
CHATGPT_ACCOUNT = "acct-intercept"
DASHSCOPE = "dashscope.aliyuncs.com"
ROUTED = "routed-model"  # what the gateway's provider serves the routed calls as


def dashscope_app() -> web.Application:
    """DashScope's OpenAI-compatible mode with an API key: the OpenAI chat double's checks after
    the DashScope extras Qwen Code sends (as the Qwen portal double takes them)."""
    app = web.Application(middlewares=[openai_compat.openai_errors])
    app[openai_compat.STATE] = openai_compat.UpstreamState(
        api_key=DASHSCOPE_KEY, models=["qwen3-coder-plus", "qwen3-coder-flash"], brain=answer(VENDOR_TEXT))

    async def chat(request: web.Request) -> web.StreamResponse:
        state = request.app[openai_compat.STATE]
        openai_compat.check_auth(request, state.api_key)
        body = qwen_portal.strip_qwen_extras(await openai_compat.parse_json_body(request))
        qwen_portal.check_cache_control(body)
        openai_compat.validate_chat_request(body, state.models)
        return await openai_compat.respond_normally(request, body)

    app.router.add_post("/compatible-mode/v1/chat/completions", chat)
    return app


def chatgpt_app() -> web.Application:
    """The Codex double, plus the account check Codex 0.171 makes before its first turn with a
    ChatGPT sign-in ("workspace routing discovery", codex-rs app-server account processor: GET
    /backend-api/wham/accounts/check -> accounts[{id, workspace_backend_origin,
    account_routing_override}]; without it Codex stops with "workspace routing discovery failed")."""
    app = codex_backend.make_app(None, codex_backend.DEFAULT_MODELS, brain=answer(VENDOR_TEXT))

    async def accounts_check(request: web.Request) -> web.Response:
        return web.json_response({"accounts": [{"id": CHATGPT_ACCOUNT, "workspace_backend_origin": "https://chatgpt.com",
                                                "account_routing_override": "NO_CONSTRAINT"}]})

    app.router.add_get("/backend-api/wham/accounts/check", accounts_check)
    return app


@pytest.fixture(scope="module")
def stack(vendor_ca, tmp_path_factory):
    ca_file, issue = vendor_ca
    doubles = {
        "api.openai.com": TlsDouble(responses_api.make_app(OPENAI_KEY, ["gpt-5", "gpt-5-mini"], brain=answer(VENDOR_TEXT)),
                                    *issue("api.openai.com")),
        "chatgpt.com": TlsDouble(chatgpt_app(), *issue("chatgpt.com")),
        DASHSCOPE: TlsDouble(dashscope_app(), *issue(DASHSCOPE)),
    }
    for d in doubles.values():
        d.__enter__()
    provider = ServerThread(openai_compat.make_app(UPSTREAM_KEY, [ROUTED], brain=answer(ROUTED_TEXT)))
    tmp = tmp_path_factory.mktemp("intercept-cq")
    cfg = {
        "providers": [{"id": "up", "type": "openai", "base_url": provider.__enter__() + "/v1",
                       "api_key": UPSTREAM_KEY, "models": [ROUTED]}],
        "intercept": {
            "hosts": list(doubles),
            "rules": [{"host": "api.openai.com", "model": "gpt-5-mini", "route": f"up/{ROUTED}"},
                      {"host": "chatgpt.com", "model": "gpt-5.1-codex-mini", "route": f"up/{ROUTED}"},
                      {"host": DASHSCOPE, "model": "qwen3-coder-flash", "route": f"up/{ROUTED}"}],
        },
    }
    mapping = ",".join(f"{h}={d.port}" for h, d in doubles.items())
    gw = Gateway(cfg, tmp / "proxy.yaml", "--mode", f"regular@{closed_port()}",
                 "-s", str(ROOT / "tests" / "e2e" / "vendor_hosts.py"),
                 "--set", f"test_vendor_hosts={mapping}", "--set", f"confdir={tmp / 'mitmproxy'}",
                 "--set", f"ssl_verify_upstream_trusted_ca={ca_file}", "--set", f"save_stream_file={tmp / 'flows'}")
    proxy_port = int(gw.wait_for(r"HTTP\(S\) proxy listening at 127\.0\.0\.1:(\d+)").group(1))
    gw.port = int(gw.wait_for(r"reverse proxy to \S+ listening at 127\.0\.0\.1:(\d+)").group(1))
    gw.base = f"http://127.0.0.1:{gw.port}"
    auth = httpx.post(f"https://127.0.0.1:{doubles['chatgpt.com'].port}/__codex/seed",
                      json={"account_id": CHATGPT_ACCOUNT}, verify=False).json()
    yield {"gw": gw, "proxy": proxy_port, "doubles": doubles, "provider": provider, "tmp": tmp,
           "ca": tmp / "mitmproxy" / "mitmproxy-ca-cert.pem", "chatgpt_auth": auth}
    gw.stop()
    for d in (*doubles.values(), provider):
        d.__exit__(None, None, None)


CODEX_CONFIG = """check_for_update_on_startup = false
model_provider = "openai_http"

[model_providers.openai_http]  # README "Intercept mode": OpenAI's own, over HTTPS only
name = "OpenAI"
base_url = "{base}"
wire_api = "responses"
requires_openai_auth = true
supports_websockets = false

[analytics]
enabled = false
"""


def codex(home: Path, model: str, s: dict, chatgpt: bool) -> tuple[list[str], dict[str, str]]:
    """Codex signed in with an API key or a ChatGPT auth.json, configured as README says so that
    its turns go over HTTPS (a websocket is passed on, never routed); Codex (Rust) trusts the CA
    named by CODEX_CA_CERTIFICATE besides its built-in roots (codex-rs custom_ca.rs)."""
    (home / ".codex").mkdir()
    base = "https://chatgpt.com/backend-api/codex" if chatgpt else "https://api.openai.com/v1"
    (home / ".codex" / "config.toml").write_text(CODEX_CONFIG.format(base=base))
    env = {"CODEX_HOME": str(home / ".codex"), "CODEX_CA_CERTIFICATE": str(s["ca"])}
    if chatgpt:
        (home / ".codex" / "auth.json").write_text(json.dumps(s["chatgpt_auth"]))
    else:
        env["CODEX_API_KEY"] = OPENAI_KEY  # codex exec reads this one, not OPENAI_API_KEY
    return ["codex", "exec", "--skip-git-repo-check", "-m", model, "Say hello."], env


def qwen(home: Path, model: str) -> tuple[list[str], dict[str, str]]:
    """Qwen Code with a DashScope API key (its OpenAI-compatible auth)."""
    (home / ".qwen").mkdir()
    (home / ".qwen" / "settings.json").write_text(
        json.dumps({**SETTINGS, "security": {"auth": {"selectedType": "openai"}}}))
    return (["qwen", "-p", "Say hello."],
            {"OPENAI_BASE_URL": f"https://{DASHSCOPE}/compatible-mode/v1", "OPENAI_API_KEY": DASHSCOPE_KEY,
             "OPENAI_MODEL": model})


def run_cli(agent: str, model: str, agent_bin: Path, s: dict) -> tuple[int | None, str]:
    home = s["tmp"] / f"{agent}-{model}"
    (home / "work").mkdir(parents=True)
    if agent == "qwen":
        args, extra = qwen(home, model)
    else:
        args, extra = codex(home, model, s, chatgpt=agent == "codex-chatgpt")
    return run_bounded(args, home / "work", {**cli_env(agent_bin, home, s), **extra}, RUN_TIMEOUT)


COMBOS = [("codex", "gpt-5-mini"), ("codex", "gpt-5"), ("codex-chatgpt", "gpt-5.1-codex-mini"),
          ("codex-chatgpt", "gpt-5.1-codex"), ("qwen", "qwen3-coder-flash"), ("qwen", "qwen3-coder-plus")]


@pytest.fixture(scope="module")
def runs(stack, agent_bin) -> dict[tuple[str, str], tuple[int | None, str]]:
    with ThreadPoolExecutor(3) as pool:
        futures = {c: pool.submit(run_cli, *c, agent_bin, stack) for c in COMBOS}
        return {c: f.result() for c, f in futures.items()}


def vendor_calls(s: dict, host: str, path: str, model: str) -> list[tuple[str, dict[str, str], bytes]]:
    """The calls for this model the vendor double got, bodies decoded (Codex compresses with zstd)."""
    calls = [(p, h, decoded(h, body)) for p, h, body in s["doubles"][host].raw if p.startswith(path)]
    return [c for c in calls if f'"{model}"'.encode() in c[2]]


def decoded(headers: dict[str, str], body: bytes) -> bytes:
    if headers.get("content-encoding") == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    return body


def routed_models(s: dict) -> list[str]:
    return [r["body"]["model"] for r in s["provider"].app[serving.REQUEST_LOG] if r["body"]]


def recorded_bodies(s: dict, host: str) -> set[bytes]:
    return {bytes(f.request.raw_content or b"") for f in flows(s) if f.request.host == host}


CASES = {  # agent: (routed model, passed model, host, path, the CLI's own auth header)
    "codex": ("gpt-5-mini", "gpt-5", "api.openai.com", "/v1/responses", ("authorization", f"Bearer {OPENAI_KEY}")),
    "codex-chatgpt": ("gpt-5.1-codex-mini", "gpt-5.1-codex", "chatgpt.com", "/backend-api/codex/responses",
                      ("chatgpt-account-id", CHATGPT_ACCOUNT)),
    "qwen": ("qwen3-coder-flash", "qwen3-coder-plus", DASHSCOPE, "/compatible-mode/v1/chat/completions",
             ("authorization", f"Bearer {DASHSCOPE_KEY}")),
}


@pytest.mark.parametrize("agent", CASES)
def test_a_routed_call_is_answered_by_the_gateways_provider(stack, runs, agent):
    routed, _, host, path, _ = CASES[agent]
    rc, out = runs[(agent, routed)]
    assert rc == 0 and ROUTED_TEXT in out, out[-3000:]
    assert not vendor_calls(stack, host, path, routed), "a routed call reached the vendor"
    assert ROUTED in routed_models(stack), "the provider double saw no routed call"


@pytest.mark.parametrize("agent", CASES)
def test_a_passed_call_reaches_the_vendor_with_the_clis_own_auth(stack, runs, agent):
    _, passed, host, path, (name, value) = CASES[agent]
    rc, out = runs[(agent, passed)]
    calls = vendor_calls(stack, host, path, passed)
    assert calls, f"the vendor double saw no call\n{out[-3000:]}"
    assert all(h.get(name) == value for _, h, _ in calls), "the CLI's own auth did not arrive"
    if agent == "codex-chatgpt":
        token = stack["chatgpt_auth"]["tokens"]["access_token"]
        assert all(h.get("authorization") == f"Bearer {token}" for _, h, _ in calls)
    assert rc == 0 and VENDOR_TEXT in out, out[-3000:]


def test_the_vendor_gets_the_bytes_the_cli_sent(stack, runs):
    """Bodies as the CLI sent them; Codex's zstd body to chatgpt.com arrives compressed, and is
    kept decoded in the flow only once sent."""
    for host, path, model in (("api.openai.com", "/v1/responses", "gpt-5"),
                              ("chatgpt.com", "/backend-api/codex/responses", "gpt-5.1-codex"),
                              (DASHSCOPE, "/compatible-mode/v1/chat/completions", "qwen3-coder-plus")):
        calls = vendor_calls(stack, host, path, model)
        assert calls and {body for _, _, body in calls} <= recorded_bodies(stack, host), host
    codex_calls = vendor_calls(stack, "chatgpt.com", "/backend-api/codex/responses", "gpt-5.1-codex")
    assert all(h.get("content-encoding") == "zstd" for _, h, _ in codex_calls)


def test_request_log_shows_passed_and_routed_calls_without_keys(stack, runs):
    rows = log_rows(stack, {model for combo in COMBOS for model in combo[1:]})
    passed = {(r["account"], r["model"]) for r in rows if r["provider"] == "passthrough"}
    assert {("api.openai.com", "gpt-5"), ("chatgpt.com", "gpt-5.1-codex"), (DASHSCOPE, "qwen3-coder-plus")} <= passed
    routed = {r["model"] for r in rows if r["provider"] == "up"}
    assert {"gpt-5-mini", "gpt-5.1-codex-mini", "qwen3-coder-flash"} <= routed, rows
    secrets = (OPENAI_KEY, DASHSCOPE_KEY, stack["chatgpt_auth"]["tokens"]["access_token"])
    dump = json.dumps(rows) + json.dumps(stack["provider"].app[serving.REQUEST_LOG])
    dump += "".join(str(f.request.headers) for f in flows(stack))
    assert not [s for s in secrets if s in dump], "a CLI's credential was kept or sent elsewhere"
