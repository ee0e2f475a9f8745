"""The real Codex CLI through the gateway to a ChatGPT sign-in: Codex CLI speaks Responses to the
gateway, whose `codex` provider holds an auth.json (expired access token) and talks to the strict
Codex double (OpenAI's auth server + the Codex backend) as Codex CLI itself would."""

import json
import os
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.agents.brain import FILES, IMAGE, Brain
from tests.agents.conftest import QUIET, RUN_TIMEOUT, agent_setup, png, run_bounded
from tests.harness import Gateway
from tests.upstreams import codex_backend
from tests.upstreams.serving import ServerThread

pytestmark = pytest.mark.timeout(600)
KEY = "sk-agent-codex"


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
            home = Path(tempfile.mkdtemp(prefix="codex-chatgpt-", dir=tmp_path))
            (home / "work").mkdir()
            (home / "work" / IMAGE).write_bytes(png())
            args, env = agent_setup("codex", home, gateway.base, KEY)
            env = {"PATH": f"{agent_bin}:{os.environ['PATH']}", "HOME": str(home), "TMPDIR": str(home),
                   "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache"),
                   **QUIET, **env}
            start = time.monotonic()
            rc, out = run_bounded(args, home / "work", env, RUN_TIMEOUT)
            seconds = time.monotonic() - start
            seen = [r for r in httpx.get(f"{origin}/__requests").json()
                    if r["path"] == "/backend-api/codex/responses"]
            st = httpx.get(f"{origin}/__codex").json()
        finally:
            gateway.stop()
    tail = "\n".join(out.strip().splitlines()[-25:])
    assert rc == 0 and "DONE" in out, f"rc={rc} after {seconds:.0f} s\n{tail}"
    assert (home / "work" / "A.txt").read_text() == FILES["A.txt"], tail
    assert st["refresh_calls"] == 1 and st["refresh_failures"] == 0  # the expired sign-in, refreshed once
    assert seen and all(r["headers"]["chatgpt-account-id"] == "acct-agent" and r["body"]["store"] is False
                        for r in seen)
    saved = json.loads((tmp_path / "chatgpt" / "auth.json").read_text())
    assert saved["tokens"]["refresh_token"] == st["current_refresh_token"]["acct-agent"]
