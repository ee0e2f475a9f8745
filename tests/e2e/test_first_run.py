"""First run as a newcomer meets it: the shipped proxy.yaml, a throwaway HOME, and the README's
first example, run as written (only the port changed)."""

import json
import re
import shutil
import urllib.error
import urllib.request

import pytest

from llmgate.operations.first_run import API_KEYS, LOCAL_SERVERS
from tests.e2e.conftest import closed_port
from tests.harness import ROOT, Gateway, Upstream

KEY = "sk-upstream-first-run-0123"


def readme_example() -> str:
    """The python block after "Then point any OpenAI client at it" in README.md."""
    text = (ROOT / "README.md").read_text()
    after = text.split("Then point any OpenAI client at it", 1)[1]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)


def health(gw: Gateway) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(gw.base + "/health", timeout=20) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


@pytest.fixture
def newcomer(tmp_path, monkeypatch):
    """A machine with nothing on it: empty HOME, no key variables, no CLI on PATH, local servers'
    ports closed (whatever runs on this machine's 11434 or 1234 stays out of the test)."""
    home, bindir = tmp_path / "home", tmp_path / "bin"
    home.mkdir()
    bindir.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", str(bindir))
    for k in API_KEYS:
        for var in k.env:
            monkeypatch.delenv(var, raising=False)
    for s in LOCAL_SERVERS:
        monkeypatch.setenv(f"LLMGATE_{s.id.upper()}_BASE_URL", f"http://127.0.0.1:{closed_port()}/v1")
    started = []

    def start() -> Gateway:
        work = tmp_path / "work"
        work.mkdir()
        shutil.copy(ROOT / "proxy.yaml", work / "proxy.yaml")  # beside it: the state and request log
        started.append(Gateway((work / "proxy.yaml").read_text(), work / "proxy.yaml"))
        return started[-1]
    yield start
    for g in started:
        g.stop()


def test_one_api_key_and_the_readme_example_works(newcomer, monkeypatch, capsys):
    up = Upstream("openai_compat", "--api-key", KEY, "--models", "gpt-5-mini")
    try:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("LLMGATE_OPENAI_BASE_URL", up.base + "/v1")
        gw = newcomer()
        gw.wait_for(r"auto: found openai \(openai\) from OPENAI_API_KEY; model `auto` -> gpt-5-mini")
        gw.wait_for(r"auto: unreachable: Ollama at http://127\.0\.0\.1:\d+/v1: not running")
        exec(readme_example().replace("127.0.0.1:8143", f"127.0.0.1:{gw.port}"), {})
        assert capsys.readouterr().out == "Echo: hi\n"
        (sent,) = [r for r in up.received() if r["path"].endswith("/chat/completions")]
        assert sent["body"]["model"] == "gpt-5-mini"
        status, body = health(gw)
        assert status == 200 and body["status"] == "ok"
        (p,) = body["providers"]
        assert p["id"] == "openai" and p["auto_detected"] == "OPENAI_API_KEY" and p["state"] == "ok"
        assert body["auto"]["found"] == [{"id": "openai", "type": "openai", "from": "OPENAI_API_KEY",
                                          "model": "gpt-5-mini"}]
        assert "next_step" not in body["auto"]
        assert KEY not in gw.output and KEY not in json.dumps(body)
    finally:
        up.stop()


def test_nothing_found_says_the_next_step(newcomer):
    gw = newcomer()
    gw.wait_for(r"auto: found no provider on this machine\. Next step: set an API key and restart, "
                r"e\.g\. `export OPENAI_API_KEY=sk-\.\.\.`")
    assert "auto: unreachable: LM Studio at" in gw.output
    status, body = health(gw)
    assert status == 503 and body["status"] == "unavailable" and body["providers"] == []
    assert body["auto"]["found"] == [] and len(body["auto"]["unreachable"]) == 2
    assert "ollama serve" in body["auto"]["next_step"]
