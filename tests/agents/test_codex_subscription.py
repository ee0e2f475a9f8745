"""Real coding-agent CLIs through the gateway to the subscription doubles: Codex CLI (Responses) to
the gateway's `codex` provider, which holds an auth.json with an expired access token and talks to
the strict Codex double (OpenAI's auth server + the Codex backend) as Codex CLI itself would; and
opencode (OpenAI chat) to the `copilot` provider and the Copilot double."""

import json
import os
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.agents.brain import FILES, IMAGE, Brain
from tests.agents.conftest import QUIET, RUN_TIMEOUT, agent_setup, png, run_bounded
from tests.harness import Gateway
from tests.upstreams import codex_backend, copilot_api
from tests.upstreams.serving import ServerThread

pytestmark = pytest.mark.timeout(900)  # the first test may install the CLIs (scripts/agents.sh)
KEY = "sk-agent-codex"


def session(agent: str, gateway: str, key: str, agent_bin: Path, tmp: Path) -> tuple[int | None, str, Path]:
    """One scripted session of a real CLI against the gateway (tests/agents/brain.py): rc, output, home."""
    home = Path(tempfile.mkdtemp(prefix=f"{agent}-", dir=tmp))
    (home / "work").mkdir()
    (home / "work" / IMAGE).write_bytes(png())
    args, env = agent_setup(agent, home, gateway, key)
    env = {"PATH": f"{agent_bin}:{os.environ['PATH']}", "HOME": str(home), "TMPDIR": str(home),
           "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache"),
           "XDG_DATA_HOME": str(home / ".local" / "share"), **QUIET, **env}
    rc, out = run_bounded(args, home / "work", env, RUN_TIMEOUT)
    return rc, out, home


def test_codex_cli_session_on_a_chatgpt_sign_in(agent_bin, versions, tmp_path):
    if versions["codex"].startswith("UNAVAILABLE"):
        pytest.skip(f"codex does not run here: {versions['codex']}")
    with ServerThread(codex_backend.make_app(None, codex_backend.DEFAULT_MODELS, brain=Brain())) as origin:
        auth = httpx.post(f"{origin}/__codex/seed", json={"account_id": "acct-agent", "expired": True}).json()
        (tmp_path / "chatgpt").mkdir()
        (tmp_path / "chatgpt" / "auth.json").write_text(json.dumps(auth))
        cfg = {"server": {"api_keys": [{"name": "codex", "key": KEY}]},
               "providers": [{"id": "chatgpt", "type": "codex", "base_url": origin + "/backend-api/codex",
                              "token_url": origin + "/oauth/token",
                              "credentials": str(tmp_path / "chatgpt" / "auth.json")}],
               "routing": {"aliases": {"gpt-5": "chatgpt/gpt-5.1-codex"}}}
        gateway = Gateway(cfg, tmp_path / "proxy.yaml")
        try:
            rc, out, home = session("codex", gateway.base, KEY, agent_bin, tmp_path)
            seen = [r for r in httpx.get(f"{origin}/__requests").json()
                    if r["path"] == "/backend-api/codex/responses"]
            st = httpx.get(f"{origin}/__codex").json()
        finally:
            gateway.stop()
    tail = "\n".join(out.strip().splitlines()[-25:])
    assert rc == 0 and "DONE" in out, f"rc={rc}\n{tail}"
    assert (home / "work" / "A.txt").read_text() == FILES["A.txt"], tail
    assert st["refresh_calls"] == 1 and st["refresh_failures"] == 0  # the expired sign-in, refreshed once
    assert seen and all(r["headers"]["chatgpt-account-id"] == "acct-agent" and r["body"]["store"] is False
                        for r in seen)
    saved = json.loads((tmp_path / "chatgpt" / "auth.json").read_text())
    assert saved["tokens"]["refresh_token"] == st["current_refresh_token"]["acct-agent"]


def test_opencode_session_on_a_copilot_login(agent_bin, versions, tmp_path):
    """opencode speaks OpenAI chat; the gateway's copilot provider trades the GitHub token and
    sends Copilot's editor headers to the Copilot double."""
    if versions["opencode"].startswith("UNAVAILABLE"):
        pytest.skip(f"opencode does not run here: {versions['opencode']}")
    with ServerThread(copilot_api.make_app(None, copilot_api.DEFAULT_MODELS, brain=Brain())) as origin:
        login = httpx.post(f"{origin}/__copilot/seed", json={"login": "octo"}).json()
        (tmp_path / "copilot.json").write_text(json.dumps(login))
        cfg = {"server": {"api_keys": [{"name": "opencode", "key": "sk-agent-opencode"}]},
               "providers": [{"id": "gh", "type": "copilot", "token_url": origin + "/copilot_internal/v2/token",
                              "credentials": str(tmp_path / "copilot.json"), "models": ["gpt-4.1"]}],
               "routing": {"aliases": {"qwen3-coder-plus": "gh/gpt-4.1"}}}
        gateway = Gateway(cfg, tmp_path / "proxy.yaml")
        try:
            rc, out, home = session("opencode", gateway.base, "sk-agent-opencode", agent_bin, tmp_path)
            seen = [r for r in httpx.get(f"{origin}/__requests").json() if r["path"] == "/chat/completions"]
            trades = httpx.get(f"{origin}/__copilot").json()["trades"]
        finally:
            gateway.stop()
    tail = "\n".join(out.strip().splitlines()[-25:])
    assert rc == 0 and "DONE" in out, f"rc={rc}\n{tail}"
    assert (home / "work" / "A.txt").read_text() == FILES["A.txt"], tail
    assert trades == 1 and seen
    assert all(r["headers"]["copilot-integration-id"] == "vscode-chat" for r in seen)
    assert {r["headers"]["x-initiator"] for r in seen} == {"user", "agent"}  # the tool loop's turns are the agent's
