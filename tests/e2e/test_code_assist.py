"""Gemini CLI (Code Assist) and Antigravity accounts through the gateway: the openai SDK as
client, the strict Code Assist double (with Google's token endpoint) as upstream."""

import json
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import CLIENT_KEY
from tests.harness import Gateway
from tests.upstreams import code_assist, serving

HELLO = [{"role": "user", "content": "hello there"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]


@pytest.fixture(scope="module")
def hosts():
    """gemini-cli's host, and Antigravity's daily and prod hosts (one service: a shared store)."""
    store = code_assist.Store()
    with serving.ServerThread(code_assist.make_app()) as gcli, \
            serving.ServerThread(code_assist.make_app(flavour="antigravity", store=store)) as daily, \
            serving.ServerThread(code_assist.make_app(flavour="antigravity", store=store)) as prod:
        yield {"gcli": gcli, "daily": daily, "prod": prod}


def call(base: str, path: str, body: dict | None = None) -> dict:
    r = httpx.post(base + path, json=body or {}) if body is not None else httpx.get(base + path)
    r.raise_for_status()
    return r.json()


def seed(base: str, path, **kw) -> dict:
    creds = call(base, "/__seed", kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(creds))
    return creds


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tmp_path_factory.mktemp("code-assist")


@pytest.fixture(scope="module")
def gateway(hosts, files, tmp_path_factory):
    cfg = {
        "server": {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 10}},
        "providers": [
            {"id": "gcli", "type": "gemini-cli", "base_url": hosts["gcli"], "token_url": hosts["gcli"] + "/token",
             "credentials": str(files / "gcli.json")},
            {"id": "agy", "type": "antigravity", "base_url": hosts["daily"], "fallback_urls": [hosts["prod"]],
             "token_url": hosts["daily"] + "/token", "credentials": str(files / "agy" / "*.json")},
        ],
    }
    g = Gateway(cfg, tmp_path_factory.mktemp("ca-gw") / "proxy.yaml")
    yield g
    g.stop()


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


@pytest.fixture
def gcli(hosts, files, gateway):
    call(hosts["gcli"], "/__scenario", {"mode": None})
    httpx.post(gateway.base + "/admin/reset", json={"provider": "gcli"}).raise_for_status()  # no cooldowns left over
    return hosts["gcli"]


def test_new_account_is_onboarded_then_served(client, gcli, files):
    """An expired token and a user without a tier: refresh, loadCodeAssist, onboardUser, poll."""
    before = seed(gcli, files / "gcli.json", expired=True, onboarded=False)
    r = client.chat.completions.create(model="gcli/gemini-2.5-flash", messages=HELLO)
    assert r.choices[0].message.content == "Echo: hello there"
    st = call(gcli, "/__state")
    assert st["refresh_calls"] == 1 and st["onboard_calls"] == 1 and st["operation_polls"] >= 1
    on_disk = json.loads((files / "gcli.json").read_text())
    assert on_disk["refresh_token"] == before["refresh_token"]  # Google does not rotate it: kept
    assert on_disk["access_token"] != before["access_token"] and on_disk["expiry_date"] > time.time() * 1000
    # the project is remembered: no second discovery
    stream = client.chat.completions.create(model="gcli/gemini-2.5-flash", messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: hello there"
    assert call(gcli, "/__state")["load_calls"] == st["load_calls"]


def test_envelope_and_tools(client, gcli, files):
    seed(gcli, files / "gcli.json")
    httpx.delete(gcli + "/__requests")
    r = client.chat.completions.create(model="gcli/gemini-2.5-pro", messages=HELLO, tools=TOOLS)
    assert r.choices[0].finish_reason == "tool_calls"
    sent = [q for q in httpx.get(gcli + "/__requests").json() if q["path"] == "/v1internal:generateContent"][-1]
    assert sent["headers"]["user-agent"].startswith("GeminiCLI/")
    assert sent["body"]["model"] == "gemini-2.5-pro" and sent["body"]["project"]
    assert sent["body"]["request"]["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"


@pytest.mark.parametrize("mode, error, status, code", [
    ("quota_exhausted", openai.RateLimitError, 429, "quota_exhausted"),
    ("rate_limited", openai.RateLimitError, 429, "rate_limited"),
    ("capacity", openai.InternalServerError, 503, "model_capacity_exhausted"),
    ("not_allowed", openai.PermissionDeniedError, 403, "account_not_allowed"),
])
def test_google_quota_answers_are_named(client, gcli, files, mode, error, status, code):
    seed(gcli, files / "gcli.json")
    call(gcli, "/__scenario", {"mode": mode})
    with pytest.raises(error) as e:
        client.chat.completions.create(model="gcli/gemini-2.5-flash", messages=HELLO)
    assert e.value.status_code == status and e.value.body["code"] == code
    assert str(files / "gcli.json") in e.value.body["message"]  # which account
    if mode == "quota_exhausted":
        assert e.value.response.headers["retry-after"] == "10921"  # quotaResetDelay 3h2m1s


def test_antigravity_falls_back_from_daily_to_prod(client, hosts, files):
    seed(hosts["daily"], files / "agy" / "one.json")
    call(hosts["daily"], "/__scenario", {"mode": "down_close"})
    try:
        r = client.chat.completions.create(model="agy/gemini-3-flash", messages=HELLO)
    finally:
        call(hosts["daily"], "/__scenario", {"mode": None})
    assert r.choices[0].message.content == "Echo: hello there"
    assert call(hosts["prod"], "/__state")["generate_calls"] >= 1
    sent = [q for q in httpx.get(hosts["prod"] + "/__requests").json()
            if q["path"] == "/v1internal:generateContent"][-1]
    assert sent["headers"]["user-agent"].startswith("antigravity/")
    assert sent["body"]["requestType"] == "agent" and sent["body"]["requestId"].startswith("agent-")


def test_admin_test_falls_back_from_daily_to_prod_like_traffic(gateway, hosts, files):
    """The admin test makes the same provider call as traffic: a host that is down gives way to the
    next one (it used to try base_url only, and reported a working provider as failing)."""
    seed(hosts["daily"], files / "agy" / "one.json")
    before = call(hosts["prod"], "/__state")["generate_calls"]
    call(hosts["daily"], "/__scenario", {"mode": "down_close"})
    try:
        r = httpx.post(gateway.base + "/admin/providers/agy/test", json={"model": "gemini-3-flash"}, timeout=30)
    finally:
        call(hosts["daily"], "/__scenario", {"mode": None})
    assert r.status_code == 200 and r.json()["ok"] is True and r.json()["status"] == 200, r.text
    assert call(hosts["prod"], "/__state")["generate_calls"] == before + 1


def test_antigravity_claude_thinking_tool_loop(client, hosts, files):
    """Claude via Antigravity signs its thought parts; the next turn of the tool loop must start
    with that signed thought (the double refuses it otherwise), which an OpenAI chat client
    cannot carry: the gateway remembers it."""
    seed(hosts["daily"], files / "agy" / "one.json")
    model = "agy/claude-opus-4-6-thinking"
    r = client.chat.completions.create(model=model, messages=HELLO, tools=TOOLS, reasoning_effort="medium")
    calls = r.choices[0].message.tool_calls
    assert calls
    messages = [*HELLO, r.choices[0].message.model_dump(exclude_none=True),
                *({"role": "tool", "tool_call_id": c.id, "content": "sunny"} for c in calls)]
    r2 = client.chat.completions.create(model=model, messages=messages, tools=TOOLS, reasoning_effort="medium")
    assert r2.choices[0].message.content.startswith("Tool results: ")


def test_antigravity_terms_are_warned_about_on_first_use(client, gateway, hosts, files):
    seed(hosts["daily"], files / "agy" / "one.json")
    client.chat.completions.create(model="agy/gemini-3-flash", messages=HELLO)
    warnings = [line for line in gateway.lines if "Antigravity's terms forbid third-party clients" in line]
    assert len(warnings) == 1
