"""What coding agents really send, through a real gateway to strict doubles (issue 13):
Codex's namespace + hosted web_search tools, Claude Code's thinking budget, and Codex hanging
up the moment it reads response.completed."""

import json
import time

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import CLIENT_KEY, responses_stream_then_hang_up
from tests.harness import Gateway, Upstream

ANTHROPIC_KEY = "sk-ant-test-key-0123456789"
GEMINI_KEY = "AIza-test-key-0123456789"
FN = {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"],
      "additionalProperties": False}
CODEX_TOOLS = [
    {"type": "function", "name": "shell", "description": "Run a command.", "strict": False, "parameters": FN},
    {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.", "tools": [
        {"type": "function", "name": "spawn_agent", "description": "Start one.", "strict": False, "parameters": FN}]},
    {"type": "web_search", "external_web_access": True},
]


@pytest.fixture(scope="module")
def ups():
    a = Upstream("anthropic_api", "--api-key", ANTHROPIC_KEY)
    g = Upstream("gemini_api", "--api-key", GEMINI_KEY)
    yield a, g
    a.stop()
    g.stop()


@pytest.fixture(scope="module")
def gateway(ups, tmp_path_factory):
    a, g = ups
    cfg = {"server": {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 5}},
           "providers": [{"id": "claude", "type": "anthropic", "base_url": a.base, "api_key": ANTHROPIC_KEY},
                         {"id": "gem", "type": "gemini", "base_url": g.base, "api_key": GEMINI_KEY}]}
    gw = Gateway(cfg, tmp_path_factory.mktemp("agents") / "proxy.yaml")
    yield gw
    gw.stop()


def codex(gateway):
    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


@pytest.mark.parametrize("stream", [False, True])
def test_codex_namespace_and_web_search_reach_anthropic(gateway, ups, stream):
    ups[0].clear()
    raw = codex(gateway).responses.with_raw_response.create(
        model="claude/claude-sonnet-4-5", input="spawn an agent", tools=CODEX_TOOLS, stream=stream)
    assert raw.http_response.status_code == 200 and "x-llmgate-dropped-tools" not in raw.headers
    r = raw.parse()
    items = [e.item for e in r if e.type == "response.output_item.done"] if stream else r.output
    calls = {(i.name, i.namespace) for i in items if i.type == "function_call"}
    assert ("spawn_agent", "multi_agent_v1") in calls and ("shell", None) in calls
    sent = [x for x in ups[0].received() if "tools" in json.dumps(x)][-1]
    tools = sent["body"]["tools"] if "body" in sent else sent["tools"]
    assert {"type": "web_search_20250305", "name": "web_search"} in tools
    assert "multi_agent_v1__spawn_agent" in {t.get("name") for t in tools}


def test_codex_web_search_is_dropped_for_gemini_with_a_header(gateway):
    raw = codex(gateway).responses.with_raw_response.create(
        model="gem/gemini-2.5-flash", input="hi", tools=CODEX_TOOLS)
    assert raw.http_response.status_code == 200
    assert raw.headers["x-llmgate-dropped-tools"] == "web_search"


@pytest.mark.parametrize("model, field, value", [
    ("gem/gemini-2.5-flash", "thinkingBudget", 24576), ("gem/gemini-2.5-pro", "thinkingBudget", 31999),
    ("gem/gemini-3-pro-preview", "thinkingLevel", "high")])
def test_claude_codes_thinking_budget_fits_gemini(gateway, ups, model, field, value):
    ups[1].clear()
    c = anthropic.Anthropic(base_url=gateway.base, api_key=CLIENT_KEY, max_retries=0, timeout=20)
    m = c.messages.create(model=model, max_tokens=32000, thinking={"type": "enabled", "budget_tokens": 31999},
                          messages=[{"role": "user", "content": "hello"}])
    assert m.content
    sent = [x for x in ups[1].received() if "generationConfig" in json.dumps(x)][-1]
    body = sent.get("body", sent)
    assert body["generationConfig"]["thinkingConfig"][field] == value


def test_a_client_hanging_up_after_the_terminal_event_is_a_success(gateway):
    responses_stream_then_hang_up(gateway.port, "claude/claude-sonnet-4-5", reset=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = httpx.get(gateway.base + "/admin/requests", params={"limit": 1}).json()["requests"]
        if rows and rows[0]["endpoint"] == "responses" and rows[0]["stream"]:
            break
        time.sleep(0.2)
    (row,) = rows
    assert (row["status"], row["error"]) == (200, None)
    metrics = httpx.get(gateway.base + "/metrics").text
    assert "client_gone" not in metrics
