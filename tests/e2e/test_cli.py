"""The installed `llmgate` command against a running gateway (its /admin API) and offline (the
config file and the SQLite request log directly)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import UPSTREAM_KEY, closed_port
from tests.harness import BIN, Gateway

ADMIN_KEY = "adm-e2e-secret"
CLIENT_KEY = "sk-alice-123"
ENV_VAR = "LLMGATE_CLI_E2E_UPSTREAM_KEY"

CONFIG = """\
# llmgate e2e config for the CLI (top comment)
server:
  api_keys: [{{name: alice, key: {client_key}}}]
  admin_keys: [{admin_key}]
  timeouts: {{connect: 3, read: 10}}

providers:
  # the local double
  - id: up
    type: openai
    base_url: {up}/v1
    api_key: ${{{env_var}}}   # from the environment
    models: [gpt-4o-mini]

  # nothing listens there
  - id: dead
    type: openai
    base_url: http://127.0.0.1:{closed}/v1
    models: [dead-model]

  # - id: example
  #   type: openai

routing:
  max_attempts: 1
"""


def llmgate(*args: str, env: dict | None = None, stdin: str | None = None, cwd: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    full = {**os.environ, "COLUMNS": "250", **(env or {})}
    for name in ("LLMGATE_URL", "LLMGATE_ADMIN_KEY", "LLMGATE_CONFIG"):
        if env is None or name not in env:
            full.pop(name, None)
    return subprocess.run([str(BIN / "llmgate"), *args], capture_output=True, text=True, env=full, input=stdin,
                          cwd=cwd, timeout=timeout)


def ok(p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    assert "Traceback" not in p.stderr
    return p


def failed(p: subprocess.CompletedProcess, *words: str) -> str:
    """Exit code 1 and exactly one line on stderr, naming `words`."""
    assert p.returncode == 1, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    for w in words:
        assert w.lower() in lines[0].lower(), lines[0]
    return lines[0]


def as_json(p: subprocess.CompletedProcess):
    return json.loads(ok(p).stdout)


# =============================================================================== online


@pytest.fixture(scope="module")
def gw(upstream, tmp_path_factory):
    os.environ[ENV_VAR] = UPSTREAM_KEY  # the gateway interpolates ${VAR} from its environment
    path = tmp_path_factory.mktemp("cli-gw") / "proxy.yaml"
    text = CONFIG.format(client_key=CLIENT_KEY, admin_key=ADMIN_KEY, up=upstream.base, env_var=ENV_VAR,
                         closed=closed_port())
    g = Gateway(text, path)
    try:
        r = httpx.get(g.base + "/admin/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        if r.status_code == 404:
            pytest.skip("the gateway has no admin API yet (GET /admin/status: 404)")
        yield g
    finally:
        g.stop()
        os.environ.pop(ENV_VAR, None)


@pytest.fixture
def run(gw):
    """llmgate against the running gateway (URL and admin key from the environment, as a user sets them)."""
    base_env = {"LLMGATE_URL": gw.base, "LLMGATE_ADMIN_KEY": ADMIN_KEY}

    def call(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
        return llmgate(*args, "--config", str(gw.config_path), env={**base_env, **(env or {})}, **kw)

    return call


def chat(gw, model: str) -> httpx.Response:
    return httpx.post(gw.base + "/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}]}, timeout=30)


def poll(predicate, timeout: float = 6.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def test_status(run, gw):
    st = as_json(run("status", "--json"))
    assert st["running"] is True and st["providers"] == 2
    assert Path(st["config"]) == gw.config_path
    assert st["request_log"].endswith("llmgate-requests.sqlite")
    out = ok(run("status")).stdout
    assert f"gateway running at {gw.base}" in out and str(gw.config_path) in out


def test_providers_list_table_and_json(run):
    data = as_json(run("providers", "list", "--json"))
    by_id = {p["id"]: p for p in data["providers"]}
    assert list(by_id) == ["up", "dead"]
    assert by_id["up"]["api_key"] == "set" and by_id["dead"]["api_key"] is None
    assert by_id["up"]["models"] == ["gpt-4o-mini"] and by_id["up"]["enabled"] is True
    assert UPSTREAM_KEY not in json.dumps(data)
    table = ok(run("providers", "list")).stdout
    header, *rows = table.strip().splitlines()
    assert header.split()[:4] == ["ID", "TYPE", "ENABLED", "STATE"]
    assert rows[0].split()[:3] == ["up", "openai", "yes"] and rows[1].split()[:3] == ["dead", "openai", "yes"]
    assert "gpt-4o-mini" in rows[0] and UPSTREAM_KEY not in table


def test_provider_lifecycle_applies_at_once_and_keeps_the_file(run, gw):
    assert chat(gw, "qwen3-coder-30b").status_code == 404  # no provider serves it yet

    # add: the gateway writes proxy.yaml and serves the new model without a restart
    p = ok(run("providers", "add", "--id", "extra", "--type", "openai", "--base-url", gw_upstream(gw) + "/v1",
               "--api-key", "${" + ENV_VAR + "}", "--models", "qwen3-coder-30b"))
    assert f"added provider extra at the gateway {gw.base}" in p.stdout  # names what it changed
    assert f"wrote {gw.config_path}" in p.stderr  # ${VAR}: the file, not the API
    assert poll(lambda: chat(gw, "qwen3-coder-30b").status_code == 200), "the new provider is not served"
    text = gw.config_path.read_text()
    assert "  - id: extra\n" in text and "api_key: ${" + ENV_VAR + "}\n" in text  # written as given
    assert UPSTREAM_KEY not in text
    for comment in ("# llmgate e2e config for the CLI (top comment)", "  # the local double",
                    "   # from the environment", "  # nothing listens there", "  # - id: example"):
        assert comment in text
    assert text.index("id: extra") < text.index("# - id: example")

    # edit
    changed = as_json(run("providers", "edit", "extra", "--set", "weight=3", "--models",
                          "qwen3-coder-30b,gpt-4o-mini", "--json"))
    assert changed["provider"]["id"] == "extra"
    assert "qwen3-coder-30b" in changed["provider"]["models"]
    text = gw.config_path.read_text()
    assert "weight: 3" in text and "models: [qwen3-coder-30b, gpt-4o-mini]" in text

    # disable: the model is no longer routable
    p = ok(run("providers", "disable", "extra"))
    assert "disabled provider extra" in p.stdout
    assert "enabled: false" in gw.config_path.read_text()
    assert poll(lambda: chat(gw, "qwen3-coder-30b").status_code == 404), "a disabled provider is still routed"
    listed = {x["id"]: x for x in as_json(run("providers", "list", "--json"))["providers"]}
    assert listed["extra"]["enabled"] is False and listed["extra"]["state"] == "disabled"

    # enable
    assert as_json(run("providers", "enable", "extra", "--json"))["provider"]["enabled"] is True
    assert poll(lambda: chat(gw, "qwen3-coder-30b").status_code == 200)

    # remove
    p = ok(run("providers", "remove", "extra"))
    assert "removed provider extra" in p.stdout
    text = gw.config_path.read_text()
    assert "extra" not in text and "# - id: example" in text and "# nothing listens there" in text
    assert poll(lambda: chat(gw, "qwen3-coder-30b").status_code == 404)
    assert [x["id"] for x in as_json(run("providers", "list", "--json"))["providers"]] == ["up", "dead"]


def gw_upstream(gw) -> str:
    import re

    return re.search(r"base_url: (http://127\.0\.0\.1:\d+)/v1\n    api_key", gw.config_path.read_text()).group(1)


def test_provider_test_ok_and_not_ok(run):
    r = as_json(run("providers", "test", "up", "--json"))
    assert r["ok"] is True and r["provider"] == "up" and r["model"] == "gpt-4o-mini" and r["status"] == 200
    assert "provider up ok: model gpt-4o-mini, status 200" in ok(run("providers", "test", "up")).stdout
    p = run("providers", "test", "dead")
    failed(p, "provider dead not ok", "dead-model")
    p = run("providers", "test", "dead", "--json")
    assert p.returncode == 1 and json.loads(p.stdout)["ok"] is False


def test_history_and_stats_after_requests(run, gw):
    start = time.time()
    assert chat(gw, "gpt-4o-mini").status_code == 200
    assert chat(gw, "gpt-4o-mini").status_code == 200
    assert chat(gw, "dead-model").status_code >= 500

    def rows(*args: str) -> list[dict]:
        return as_json(run("history", "--json", *args))["requests"]

    assert poll(lambda: len([r for r in rows() if r["ts"] >= start - 1]) >= 3, timeout=10)
    mine = [r for r in rows("--since", "2m") if r["ts"] >= start - 1]
    assert [r["model"] for r in mine[:3]] == ["dead-model", "gpt-4o-mini", "gpt-4o-mini"]  # newest first
    assert all(r["key_id"] == "alice" for r in mine)
    assert "request_body" not in mine[0]
    dead = rows("--provider", "dead")
    assert dead and all(r["provider"] == "dead" and r["error"] for r in dead)
    assert all(r["model"] == "gpt-4o-mini" for r in rows("--model", "gpt-4o-mini"))
    assert all(r["status"] == 200 for r in rows("--status", "200"))
    assert len(rows("--key", "alice", "--limit", "1")) == 1
    assert rows("--key", "nobody") == []
    assert rows("--since", "2999-01-01T00:00:00+00:00") == []

    table = ok(run("history", "--limit", "3")).stdout
    assert table.splitlines()[0].split()[:4] == ["TIME", "KEY", "MODEL", "PROVIDER"]
    assert "dead-model" in table and "alice" in table

    stats = as_json(run("stats", "--json"))
    assert stats["by"] == "provider"
    by = {r["key"]: r for r in stats["rows"]}
    assert by["up"]["requests"] >= 2 and by["dead"]["errors"] >= 1
    assert by["up"]["prompt_tokens"] > 0 and by["up"]["avg_latency_ms"] > 0
    assert {r["key"] for r in as_json(run("stats", "--by", "key", "--json"))["rows"]} >= {"alice"}
    assert {r["key"] for r in as_json(run("stats", "--by", "model", "--since", "1h", "--json"))["rows"]} >= {
        "gpt-4o-mini", "dead-model"}
    days = as_json(run("stats", "--by", "day", "--json"))["rows"]
    assert len(days[0]["key"]) == 10 and days[0]["key"].count("-") == 2
    table = ok(run("stats", "--by", "model")).stdout
    assert table.splitlines()[0].split()[:3] == ["MODEL", "REQUESTS", "ERRORS"] and "gpt-4o-mini" in table


def test_models(run):
    data = as_json(run("models", "--json"))
    by = {m["id"]: m for m in data["models"]}
    assert by["gpt-4o-mini"]["providers"] == ["up"] and by["dead-model"]["providers"] == ["dead"]
    assert by["gpt-4o-mini"]["routable"] >= 1
    out = ok(run("models")).stdout
    assert out.splitlines()[0].split()[:2] == ["MODEL", "PROVIDERS"] and "gpt-4o-mini" in out


def test_online_errors_are_one_line(run, gw):
    failed(run("providers", "edit", "ghost", "--base-url", "http://x/v1"), "ghost")
    failed(run("providers", "add", "--id", "up", "--type", "openai", "--base-url", "http://x/v1"), "up", "409")
    line = failed(run("providers", "add", "--id", "nourl", "--type", "openai"), "base_url")
    assert "400" in line
    failed(run("providers", "remove", "ghost"), "ghost", "404")
    failed(run("providers", "list", env={"LLMGATE_ADMIN_KEY": "wrong"}), "admin key", "401")
    failed(run("history", "--limit", "0"), "--limit")
    failed(run("history", "--since", "someday"), "--since")
    failed(run("providers", "edit", "up"), "nothing to change")
    assert "dead" in gw.config_path.read_text()  # refused edits changed nothing


def test_add_from_json_stdin(run, gw):
    entry = {"id": "fromjson", "type": "openai", "base_url": gw_upstream(gw) + "/v1", "models": ["fj-model"],
             "headers": {"X-Title": "cli"}}
    out = as_json(run("providers", "add", "--from-json", "-", "--json", stdin=json.dumps(entry)))
    assert out["provider"]["id"] == "fromjson"
    assert "headers: {X-Title: cli}" in gw.config_path.read_text()
    ok(run("providers", "remove", "fromjson"))


# =============================================================================== offline

OFFLINE_CONFIG = """\
# offline config
providers:
  # first provider
  - id: one
    type: openai
    base_url: http://127.0.0.1:9/v1
    api_key: ${ONE_KEY}   # beside the key

  # second provider
  - id: two
    type: openai
    base_url: http://127.0.0.1:10/v1
    models: [m2]

routing:
  aliases: {best: two/m2}
"""

SCHEMA = """
CREATE TABLE requests (
  id INTEGER PRIMARY KEY, ts REAL NOT NULL, key_id TEXT, inbound TEXT, endpoint TEXT, model TEXT,
  provider TEXT, account TEXT, upstream_model TEXT, attempts INTEGER, status INTEGER, stream INTEGER,
  latency_ms REAL, ttft_ms REAL, prompt_tokens INTEGER, completion_tokens INTEGER, cached_tokens INTEGER,
  reasoning_tokens INTEGER, error TEXT, request_body BLOB, response_body BLOB
);
"""


@pytest.fixture
def offline(tmp_path):
    cfg = tmp_path / "proxy.yaml"
    cfg.write_text(OFFLINE_CONFIG)
    now = time.time()
    db = sqlite3.connect(tmp_path / "llmgate-requests.sqlite")
    db.executescript(SCHEMA)
    rows = [  # ts, key, model, provider, status, latency, prompt, completion, error
        (now - 3 * 86400, "alice", "m1", "one", 200, 100.0, 10, 5, None),
        (now - 60, "alice", "m1", "one", 200, 300.0, 20, 7, None),
        (now - 30, "bob", "m2", "two", 502, 50.0, None, None, "upstream_error"),
        (now - 10, None, "m2", "two", 200, 200.0, 30, 9, None),
    ]
    db.executemany("INSERT INTO requests (ts, key_id, inbound, endpoint, model, provider, status, stream, latency_ms,"
                   " prompt_tokens, completion_tokens, error, request_body) VALUES (?, ?, 'openai-chat', 'chat', ?, ?,"
                   " ?, 0, ?, ?, ?, ?, x'00')",
                   [(ts, k, m, p, s, lat, pt, ct, e) for ts, k, m, p, s, lat, pt, ct, e in rows])
    db.commit()
    db.close()

    def call(*args: str, **kw) -> subprocess.CompletedProcess:
        return llmgate(*args, "--url", f"http://127.0.0.1:{closed_port()}", "--config", str(cfg), **kw)

    call.cfg = cfg
    return call


def test_offline_status(offline):
    p = offline("status")
    assert p.returncode == 1 and "gateway not running" in p.stdout
    p = offline("status", "--json")
    assert p.returncode == 1
    st = json.loads(p.stdout)
    assert st["running"] is False and st["providers"] == 2 and st["requests_logged"] == 4


def test_offline_providers_list(offline):
    data = as_json(offline("providers", "list", "--json"))
    assert data["running"] is False
    assert [(p["id"], p["api_key"], p["models"], p["state"]) for p in data["providers"]] == [
        ("one", "set", None, "unknown"), ("two", None, ["m2"], "unknown")]
    p = ok(offline("providers", "list"))
    assert "gateway not running" in p.stderr
    assert [ln.split()[0] for ln in p.stdout.strip().splitlines()] == ["ID", "one", "two"]


def test_offline_edits_keep_comments(offline):
    cfg: Path = offline.cfg
    p = ok(offline("providers", "add", "--id", "three", "--type", "anthropic", "--base-url",
                   "https://api.anthropic.com", "--api-key", "${ANTHROPIC_API_KEY}", "--models", "c1,c2"))
    assert f"gateway not running: edited {cfg}" in p.stdout and f"added provider three in {cfg}" in p.stdout
    ok(offline("providers", "edit", "one", "--base-url", "http://127.0.0.1:11/v1", "--set", "weight=2"))
    ok(offline("providers", "disable", "two"))
    ok(offline("providers", "enable", "two"))
    out = as_json(offline("providers", "edit", "three", "--unset", "models", "--json"))
    assert out["provider"] == {"id": "three", "type": "anthropic", "base_url": "https://api.anthropic.com",
                               "api_key": "${ANTHROPIC_API_KEY}"}
    text = cfg.read_text()
    for comment in ("# offline config", "  # first provider", "${ONE_KEY}   # beside the key", "  # second provider"):
        assert comment in text
    assert "base_url: http://127.0.0.1:11/v1" in text and "weight: 2" in text and "enabled: true" in text
    assert "api_key: ${ANTHROPIC_API_KEY}" in text
    ok(offline("providers", "remove", "three"))
    ok(offline("providers", "edit", "one", "--base-url", "http://127.0.0.1:9/v1", "--unset", "weight"))
    ok(offline("providers", "edit", "two", "--unset", "enabled"))
    assert cfg.read_text() == OFFLINE_CONFIG
    assert os.listdir(cfg.parent) == ["proxy.yaml", "llmgate-requests.sqlite"] or sorted(os.listdir(cfg.parent)) \
        == ["llmgate-requests.sqlite", "proxy.yaml"]


def test_offline_add_from_json_file(offline, tmp_path):
    f = tmp_path / "entry.json"
    f.write_text(json.dumps({"id": "j", "type": "qwen"}))
    out = as_json(offline("providers", "add", "--from-json", str(f), "--json"))
    assert out["provider"] == {"id": "j", "type": "qwen"} and out["running"] is False
    assert "  - id: j\n    type: qwen\n" in offline.cfg.read_text()


def test_offline_errors_are_one_line_and_change_nothing(offline):
    before = offline.cfg.read_text()
    failed(offline("providers", "add", "--id", "one", "--type", "openai", "--base-url", "http://x/v1"), "one",
           "exists")
    failed(offline("providers", "add", "--id", "x", "--type", "openai"), "base_url", "Field required")
    failed(offline("providers", "add", "--id", "x", "--type", "warp", "--base-url", "http://x/v1"), "type", "warp")
    failed(offline("providers", "edit", "one", "--base-url", "ftp://nope"), "base_url")
    failed(offline("providers", "edit", "ghost", "--set", "weight=2"), "ghost")
    failed(offline("providers", "remove", "ghost"), "ghost")
    failed(offline("providers", "add", "--from-json", "/no/such/file.json"), "file.json")
    failed(offline("providers", "add", "--from-json", "-", stdin="{not json"), "not valid JSON")
    failed(offline("providers", "list", "--bogus"), "--bogus")
    failed(offline("providers", "test", "one"), "needs the running gateway")
    assert offline.cfg.read_text() == before


def test_offline_without_config_or_log(tmp_path):
    closed = f"http://127.0.0.1:{closed_port()}"
    failed(llmgate("providers", "list", "--url", closed, "--config", str(tmp_path / "nope.yaml")), "nope.yaml")
    failed(llmgate("history", "--url", closed, "--config", str(tmp_path / "nope.yaml")), "no request log")


def test_offline_history_reads_the_log(offline):
    data = as_json(offline("history", "--json"))
    assert data["running"] is False
    rows = data["requests"]
    assert [r["model"] for r in rows] == ["m2", "m2", "m1", "m1"]  # newest first
    assert "request_body" not in rows[0] and "response_body" not in rows[0]
    assert [r["provider"] for r in as_json(offline("history", "--provider", "one", "--json"))["requests"]] == [
        "one", "one"]
    assert [r["key_id"] for r in as_json(offline("history", "--key", "bob", "--json"))["requests"]] == ["bob"]
    assert [r["status"] for r in as_json(offline("history", "--status", "502", "--json"))["requests"]] == [502]
    assert len(as_json(offline("history", "--model", "m1", "--json"))["requests"]) == 2
    assert len(as_json(offline("history", "--since", "1h", "--json"))["requests"]) == 3
    assert len(as_json(offline("history", "--limit", "1", "--json"))["requests"]) == 1
    p = ok(offline("history"))
    assert "gateway not running" in p.stderr
    assert p.stdout.splitlines()[0].split()[:4] == ["TIME", "KEY", "MODEL", "PROVIDER"] and "upstream_error" in p.stdout


def test_offline_stats_group_like_the_api(offline):
    by_provider = {r["key"]: r for r in as_json(offline("stats", "--json"))["rows"]}
    assert by_provider["one"] == {"key": "one", "requests": 2, "errors": 0, "prompt_tokens": 30,
                                  "completion_tokens": 12, "cached_tokens": 0, "reasoning_tokens": 0,
                                  "avg_latency_ms": 200.0}
    assert by_provider["two"]["errors"] == 1 and by_provider["two"]["requests"] == 2
    keys = {r["key"]: r["requests"] for r in as_json(offline("stats", "--by", "key", "--json"))["rows"]}
    assert keys == {"alice": 2, "bob": 1, "-": 1}
    recent = {r["key"]: r["requests"] for r in as_json(offline("stats", "--by", "model", "--since", "1h",
                                                                     "--json"))["rows"]}
    assert recent == {"m1": 1, "m2": 2}
    days = as_json(offline("stats", "--by", "day", "--json"))["rows"]
    assert sum(r["requests"] for r in days) == 4 and len(days) >= 2
    assert ok(offline("stats", "--by", "model")).stdout.splitlines()[0].split()[:2] == ["MODEL", "REQUESTS"]


def test_offline_log_db_option_and_log_file_setting(offline, tmp_path):
    other = tmp_path / "elsewhere.sqlite"
    os.replace(tmp_path / "llmgate-requests.sqlite", other)
    failed(offline("history"), "no request log")
    assert len(as_json(offline("history", "--log-db", str(other), "--json"))["requests"]) == 4
    offline.cfg.write_text(OFFLINE_CONFIG + f"log:\n  file: {other}\n")
    assert len(as_json(offline("history", "--json"))["requests"]) == 4


def test_offline_models(offline):
    data = as_json(offline("models", "--json"))
    by = {m["id"]: m["providers"] for m in data["models"]}
    assert by["m2"] == ["two"] and by["best"] == ["alias: two/m2"] and "(discovered from one)" in by


def test_usage_errors_are_one_line():
    failed(llmgate("stats", "--by", "week"), "--by")
    failed(llmgate("history", "--limit", "many"), "--limit")
    failed(llmgate("nosuchcommand"), "nosuchcommand")
    assert ok(llmgate("--help")).stdout.count("providers") >= 1
    assert "login" in ok(llmgate("--help")).stdout
