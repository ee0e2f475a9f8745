"""Real coding-agent CLIs to Copilot models served on one endpoint only: Codex CLI (Responses) to a
responses-only model, Claude Code (Messages) to a messages-only one, and opencode (OpenAI chat) to
each, through the gateway's `copilot` provider and the strict Copilot double, which refuses a
model on an endpoint its models list does not name."""

import json
from pathlib import Path

import httpx
import pytest

from tests.agents.brain import FILES, Brain
from tests.agents.test_codex_subscription import session
from tests.harness import Gateway
from tests.upstreams import copilot_api
from tests.upstreams.serving import ServerThread

pytestmark = pytest.mark.timeout(900)  # the first test may install the CLIs (scripts/agents.sh)
KEY = "sk-agent-copilot"
# each CLI's own model name (tests/agents/conftest.agent_setup), routed to a Copilot model
CLI_MODEL = {"codex": "gpt-5", "claude": "claude-sonnet-4-5", "opencode": "qwen3-coder-plus"}


@pytest.mark.parametrize("agent, model, endpoint", [
    ("codex", "gpt-5.1-codex", "/responses"),  # passed through
    ("claude", "claude-opus-4.5", "/v1/messages"),  # passed through
    ("opencode", "gpt-5.1-codex", "/responses"),  # converted both ways
    ("opencode", "claude-opus-4.5", "/v1/messages"),
])
def test_agent_session_on_a_single_endpoint_copilot_model(agent_bin, versions, tmp_path, agent, model, endpoint):
    if versions[agent].startswith("UNAVAILABLE"):
        pytest.skip(f"{agent} does not run here: {versions[agent]}")
    with ServerThread(copilot_api.make_app(None, copilot_api.DEFAULT_MODELS, brain=Brain())) as origin:
        login = httpx.post(f"{origin}/__copilot/seed", json={"login": "octo"}).json()
        (tmp_path / "copilot.json").write_text(json.dumps(login))
        cfg = {"server": {"api_keys": [{"name": agent, "key": KEY}]},
               "providers": [{"id": "gh", "type": "copilot", "token_url": origin + "/copilot_internal/v2/token",
                              "credentials": str(tmp_path / "copilot.json")}],
               "routing": {"aliases": {CLI_MODEL[agent]: f"gh/{model}"}}}
        gateway = Gateway(cfg, tmp_path / "proxy.yaml")
        try:
            rc, out, home = session(agent, gateway.base, KEY, agent_bin, tmp_path)
            seen = [r for r in httpx.get(f"{origin}/__requests").json() if r["method"] == "POST"
                    and r["path"] in ("/chat/completions", "/responses", "/v1/messages")]
        finally:
            gateway.stop()
    tail = "\n".join(out.strip().splitlines()[-25:])
    assert rc == 0 and "DONE" in out, f"rc={rc}\n{tail}"
    assert (Path(home) / "work" / "A.txt").read_text() == FILES["A.txt"], tail
    assert seen and {r["path"] for r in seen} == {endpoint}
    assert all(r["body"]["model"] == model for r in seen)
    assert {r["headers"]["x-initiator"] for r in seen} == {"user", "agent"}  # the tool loop's turns are the agent's
