"""First run detection (llmgate/operations/first_run.py): a fake environment and home, and local servers on
loopback playing Ollama and LM Studio; the merge into the settings; ConfigWatch's re-detection."""

import asyncio
import json
import logging
import socket
import threading

import pytest
from aiohttp import web
from mitmproxy.test import taddons

from llmgate.addons.config_watch import ConfigWatch
from llmgate.operations import first_run
from llmgate.operations.first_run import Detection, Found, detect, merge
from llmgate.runtime import Runtime
from llmgate.settings import parse_settings

SECRET = "sk-test-secret-0123456789"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """An aiohttp app on loopback in its own thread (detect() is blocking, as the watcher calls it)."""

    def __init__(self, handler):
        app = web.Application()
        app.router.add_get("/v1/models", handler)
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def server(request):
    servers = []

    def start(handler):
        servers.append(LocalServer(handler))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


def models(*ids, status=200):
    async def handler(request):
        return web.json_response({"object": "list", "data": [{"id": i, "object": "model"} for i in ids]},
                                 status=status)
    return handler


def nowhere(**env) -> dict:
    """An environment whose local servers are closed ports, plus `env`."""
    return {"LLMGATE_OLLAMA_BASE_URL": f"http://127.0.0.1:{closed_port()}/v1",
            "LLMGATE_LMSTUDIO_BASE_URL": f"http://127.0.0.1:{closed_port()}/v1", **env}


def no_cli(_):
    return None


class TestDetect:
    def test_api_keys_from_the_environment(self, tmp_path):
        env = nowhere(OPENAI_API_KEY=SECRET, GOOGLE_API_KEY="g-key", OPENROUTER_API_KEY="or-key", GROQ_API_KEY="")
        found = {f.entry["id"]: f for f in detect(env, tmp_path, no_cli).found}
        assert set(found) == {"openai", "gemini", "openrouter"}  # an empty variable is no key
        assert found["openai"].entry == {"id": "openai", "type": "openai", "base_url": "https://api.openai.com/v1",
                                         "api_key": SECRET}
        assert found["openai"].source == "OPENAI_API_KEY" and found["gemini"].source == "GOOGLE_API_KEY"
        assert found["gemini"].entry["base_url"] == "https://generativelanguage.googleapis.com"
        assert found["openrouter"].entry["type"] == "openai" and found["openrouter"].model == "openrouter/auto"

    def test_gemini_api_key_wins_over_google_api_key(self, tmp_path):
        env = nowhere(GEMINI_API_KEY="gem", GOOGLE_API_KEY="goo")
        (f,) = detect(env, tmp_path, no_cli).found
        assert f.source == "GEMINI_API_KEY" and f.entry["api_key"] == "gem"

    def test_base_url_override(self, tmp_path):
        env = nowhere(OPENAI_API_KEY=SECRET, LLMGATE_OPENAI_BASE_URL="http://127.0.0.1:9/v1")
        (f,) = detect(env, tmp_path, no_cli).found
        assert f.entry["base_url"] == "http://127.0.0.1:9/v1"

    def test_local_server_that_answers(self, tmp_path, server):
        ollama = server(models("nomic-embed-text:latest", "llama3.2:latest", "qwen3:8b"))
        env = nowhere(LLMGATE_OLLAMA_BASE_URL=ollama.base)
        det = detect(env, tmp_path, no_cli)
        (f,) = det.found
        assert f.entry == {"id": "ollama", "type": "openai", "base_url": ollama.base}
        assert f.model == "llama3.2:latest"  # the first chat model, not the embedding one
        assert ollama.base in f.source and "Ollama" in f.source
        (lmstudio,) = det.unreachable
        assert lmstudio.startswith("LM Studio at http://127.0.0.1:") and "not running" in lmstudio

    def test_local_server_without_models_is_found_but_not_in_the_pool(self, tmp_path, server):
        ollama = server(models())
        (f,) = detect(nowhere(LLMGATE_OLLAMA_BASE_URL=ollama.base), tmp_path, no_cli).found
        assert f.model is None and "ollama pull" in f.note

    def test_local_server_refusing_or_hanging(self, tmp_path, server):
        lm = server(models("x", status=401))
        release = threading.Event()

        async def hang(request):
            await asyncio.get_running_loop().run_in_executor(None, release.wait, 5)
            return web.json_response({"data": []})
        ollama = server(hang)
        try:
            det = detect(nowhere(LLMGATE_LMSTUDIO_BASE_URL=lm.base, LLMGATE_OLLAMA_BASE_URL=ollama.base), tmp_path,
                         no_cli, timeout=0.2)
        finally:
            release.set()
        assert det.found == ()
        assert det.unreachable == (f"Ollama at {ollama.base}: no answer within 0.2 s",
                                   f"LM Studio at {lm.base}: HTTP 401 (set LMSTUDIO_API_KEY)")

    def test_lmstudio_key_is_sent_and_kept(self, tmp_path, server):
        async def needs_key(request):
            if request.headers.get("Authorization") != "Bearer lm-key":
                return web.json_response({"error": "no"}, status=401)
            return web.json_response({"data": [{"id": "qwen3-coder-30b"}]})
        lm = server(needs_key)
        (f,) = detect(nowhere(LLMGATE_LMSTUDIO_BASE_URL=lm.base, LMSTUDIO_API_KEY="lm-key"), tmp_path, no_cli).found
        assert f.entry["api_key"] == "lm-key" and f.model == "qwen3-coder-30b"

    def test_not_a_model_list(self, tmp_path, server):
        async def html(request):
            return web.Response(text="<html>hello</html>", content_type="text/html")
        other = server(html)
        det = detect(nowhere(LLMGATE_OLLAMA_BASE_URL=other.base), tmp_path, no_cli)
        assert f"Ollama at {other.base}: answers, but not with a model list" in det.unreachable

    def test_cli_logins_on_disk_and_on_path(self, tmp_path):
        for rel in (".qwen/oauth_creds.json", ".aws/sso/cache/kiro-auth-token.json"):
            (tmp_path / rel).parent.mkdir(parents=True)
            (tmp_path / rel).write_text("{}")
        (tmp_path / ".gemini").mkdir()  # a folder without the credentials file is no login
        det = detect(nowhere(), tmp_path, lambda c: "/opt/bin/claude" if c == "claude" else None)
        found = {f.entry["id"]: f for f in det.found}
        assert list(found) == ["qwen", "claude-code", "kiro"]
        assert found["qwen"].entry == {"id": "qwen", "type": "qwen"} and found["qwen"].model == "coder-model"
        assert found["qwen"].source == "~/.qwen/oauth_creds.json"
        assert "/opt/bin/claude" in found["claude-code"].source
        assert "terms forbid third-party clients" in found["kiro"].note

    def test_nothing(self, tmp_path):
        det = detect(nowhere(), tmp_path, no_cli)
        assert det.found == () and len(det.unreachable) == 2


def settings(text="auto: true"):
    return parse_settings(text)[0]


def key_found(pid="openai", base="https://api.openai.com/v1", model="gpt-5-mini"):
    return Found({"id": pid, "type": "openai", "base_url": base, "api_key": SECRET}, "OPENAI_API_KEY", model)


class TestMerge:
    def test_adds_providers_and_the_auto_pool(self):
        ollama = Found({"id": "ollama", "type": "openai", "base_url": "http://127.0.0.1:11434/v1"},
                       "http://127.0.0.1:11434/v1 (Ollama)", "llama3.2")
        empty = Found({"id": "lmstudio", "type": "openai", "base_url": "http://127.0.0.1:1234/v1"}, "x", None)
        merged, report = merge(settings(), Detection((key_found(), ollama, empty), ("nope",)))
        assert [p.id for p in merged.providers] == ["openai", "ollama", "lmstudio"]
        assert merged.provider("openai").api_key == SECRET
        assert merged.routing.aliases["auto"] == ["openai/gpt-5-mini", "ollama/llama3.2"]
        assert merged.routing.for_model("auto").strategy == "fill-first"
        assert report.source_of("ollama") == ollama.source and report.source_of("nope") is None
        assert not report.nothing and "next_step" not in report.health()

    def test_configured_providers_win(self):
        mine = settings("auto: true\nproviders: [{id: oai, type: openai, base_url: 'https://api.openai.com/v1'},"
                        " {id: ollama, type: anthropic, base_url: 'http://h'}]\n"
                        "routing: {aliases: {auto: oai/gpt-4o}}")
        ollama = Found({"id": "ollama", "type": "openai", "base_url": "http://127.0.0.1:11434/v1"}, "o", "m")
        merged, report = merge(mine, Detection((key_found(), ollama)))
        assert [p.id for p in merged.providers] == ["oai", "ollama"]  # same type+URL, same id: skipped
        assert merged.provider("ollama").type == "anthropic"
        assert merged.routing.aliases == {"auto": "oai/gpt-4o"}  # the user's own alias stays
        assert [f.entry["id"] for f in report.configured] == ["openai", "ollama"]
        assert any("configured in proxy.yaml already" in line for _, line in report.lines())

    def test_a_bad_override_is_reported_not_fatal(self):
        merged, report = merge(settings(), Detection((key_found(base="not a url"),)))
        assert merged.providers == [] and report.nothing
        assert report.unreachable == ["openai from OPENAI_API_KEY: base_url: must not contain spaces, line breaks "
                                      "or control characters"]

    def test_nothing_found_says_what_to_do(self):
        merged, report = merge(settings(), Detection((), ("Ollama at u: not running (ConnectError)",)))
        assert report.nothing and merged.routing.aliases == {}
        (level, line), = [x for x in report.lines() if x[0] == logging.WARNING]
        assert "found no provider" in line and "export OPENAI_API_KEY=" in line and "ollama serve" in line
        assert "llmgate login qwen" in line
        assert report.health()["next_step"] == first_run.NEXT_STEP
        assert report.health()["unreachable"] == ["Ollama at u: not running (ConnectError)"]

    def test_reports_never_carry_the_key(self):
        _, report = merge(settings(), Detection((key_found(),)))
        text = json.dumps(report.health()) + "".join(line for _, line in report.lines())
        assert SECRET not in text and "OPENAI_API_KEY" in text

    def test_kiro_is_found_with_a_warning(self):
        kiro = Found({"id": "kiro", "type": "kiro"}, "~/.aws/sso/cache/kiro-auth-token.json", "claude-sonnet-4-5",
                     "Kiro's terms forbid third-party clients")
        _, report = merge(settings(), Detection((kiro,)))
        assert report.lines() == [(logging.WARNING, "auto: found kiro (kiro) from ~/.aws/sso/cache/kiro-auth-token.json"
                                   "; model `auto` -> claude-sonnet-4-5 (Kiro's terms forbid third-party clients)")]


class FakeDetect:
    def __init__(self, *found):
        self.found, self.calls = list(found), 0

    def __call__(self):
        self.calls += 1
        return Detection(tuple(self.found))


class TestConfigWatch:
    def run(self, text, tmp_path, detect, test):
        cfg = tmp_path / "proxy.yaml"
        cfg.write_text(text)
        now = [0.0]
        rt = Runtime()
        cw = ConfigWatch(rt, clock=lambda: now[0], detect=detect)
        with taddons.context(cw) as tctx:
            tctx.configure(cw, gateway_config=str(cfg))
            test(rt, cw, now)

    def test_auto_off_detects_nothing(self, tmp_path):
        det = FakeDetect(key_found())
        self.run("providers: []", tmp_path, det, lambda rt, cw, now: None)
        assert det.calls == 0

    def test_later_logins_are_picked_up_without_a_restart(self, tmp_path, caplog):
        det = FakeDetect()

        def test(rt, cw, now):
            assert rt.settings.providers == [] and rt.first_run.nothing
            det.found.append(Found({"id": "qwen", "type": "qwen"}, "~/.qwen/oauth_creds.json", "coder-model"))
            now[0] = first_run.REDETECT_SECONDS - 1
            asyncio.run(cw.check())
            assert rt.settings.providers == []  # not yet due
            now[0] = first_run.REDETECT_SECONDS
            with caplog.at_level(logging.INFO, "llmgate"):
                asyncio.run(cw.check())
            assert [p.id for p in rt.settings.providers] == ["qwen"]
            assert rt.settings.routing.aliases == {"auto": ["qwen/coder-model"]}
            assert "auto: found qwen (qwen) from ~/.qwen/oauth_creds.json" in caplog.text
        with caplog.at_level(logging.INFO, "llmgate"):
            self.run("auto: true", tmp_path, det, test)
        assert "auto: found no provider on this machine. Next step:" in caplog.text
        assert det.calls == 2

    def test_admin_edits_reuse_the_last_detection(self, tmp_path):
        det = FakeDetect(key_found())

        def test(rt, cw, now):
            cw._running = True
            cw._apply()
            assert [p.id for p in rt.settings.providers] == ["openai"]
        self.run("auto: true", tmp_path, det, test)
        assert det.calls == 1
