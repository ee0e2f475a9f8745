"""The local Claude Code CLI as a backend, through mitmdump: the openai and anthropic SDKs as
clients, a fake `claude` executable (tests/fake_claude) on PATH emitting stream-json."""

import os
import time

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import CLIENT_KEY
from tests.harness import ROOT, Gateway

FAKE = ROOT / "tests" / "fake_claude"
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{FAKE}:{old}"  # the gateway process inherits it
    try:
        cfg = {"server": {"api_keys": [CLIENT_KEY]},
               "providers": [{"id": "cc", "type": "claude-code"},
                             {"id": "nocli", "type": "claude-code", "command": "/nonexistent/claude",
                              "models": ["nocli-model"]}]}
        g = Gateway(cfg, tmp_path_factory.mktemp("cc") / "proxy.yaml")
    finally:
        os.environ["PATH"] = old
    yield g
    g.stop()


def test_opus_sonnet_haiku_route_here_for_every_client(gateway):
    oai = openai.OpenAI(base_url=gateway.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)
    r = oai.chat.completions.create(model="sonnet", messages=HELLO)
    assert r.choices[0].message.content == "Echo: hello there" and r.model == "sonnet"
    stream = oai.chat.completions.create(model="haiku", messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: hello there"
    ac = anthropic.Anthropic(base_url=gateway.base, api_key=CLIENT_KEY, max_retries=0)
    with ac.messages.stream(model="opus", max_tokens=100, messages=HELLO) as s:
        msg = s.get_final_message()
    assert msg.content[0].text == "Echo: hello there" and msg.model == "opus"


def test_missing_cli_is_unavailable_in_health_with_the_reason(gateway):
    body = httpx.get(gateway.base + "/health").json()
    states = {p["id"]: p for p in body["providers"]}
    assert states["cc"]["state"] == "ok"
    assert states["nocli"]["state"] == "unavailable" and "/nonexistent/claude" in states["nocli"]["error"]
    oai = openai.OpenAI(base_url=gateway.base + "/v1", api_key=CLIENT_KEY, max_retries=0)
    with pytest.raises(openai.APIStatusError) as e:
        oai.chat.completions.create(model="nocli-model", messages=HELLO)
    assert e.value.status_code == 503


def test_the_cli_is_killed_when_the_client_leaves(tmp_path):
    pidfile = tmp_path / "pid"
    saved = dict(os.environ)
    os.environ.update(PATH=f"{FAKE}:{saved.get('PATH', '')}", FAKE_CLAUDE_MODE="slow",
                      FAKE_CLAUDE_PIDFILE=str(pidfile), FAKE_CLAUDE_STEPS="300")  # ~60 s unless killed
    try:
        g = Gateway({"providers": [{"id": "cc", "type": "claude-code"}]}, tmp_path / "proxy.yaml")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        with httpx.stream("POST", g.base + "/v1/chat/completions", timeout=30,
                          json={"model": "sonnet", "messages": HELLO, "stream": True}) as r:
            assert r.status_code == 200
            next(r.iter_raw())  # the answer has begun: the CLI is running
            pid = int(pidfile.read_text())
            os.kill(pid, 0)
        # the client left: the CLI goes within the grace period
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the CLI (pid {pid}) outlived its client")
    finally:
        g.stop()
