"""Management parity (issue 15): one provider, the default provider, reload now, model names
(routing.aliases), request bodies, through the admin API of a real gateway and the installed
`llmgate` command."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time

import httpx
import pytest

from tests.e2e.conftest import UPSTREAM_KEY, closed_port
from tests.e2e.test_cli import as_json, failed, llmgate, ok, poll
from tests.harness import Gateway

ADMIN_KEY = "adm-mgmt-secret"
CLIENT_KEY = "sk-mgmt-123"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}

CONFIG = """\
# management e2e (top comment)
server:
  api_keys: [{client_key}]
  admin_keys: [{admin_key}]
  timeouts: {{connect: 3, read: 10}}
log:
  capture_bodies: true

providers:
  # the local double
  - id: up
    type: openai
    base_url: {up}/v1
    api_key: {up_key}
    models: [gpt-4o-mini]

  # nothing listens there
  - id: dead
    type: openai
    base_url: http://127.0.0.1:{closed}/v1
    models: [dead-model]

# routing comment
routing:
  max_attempts: 1   # one try
  # after routing
"""
COMMENTS = ("# management e2e (top comment)", "  # the local double", "  # nothing listens there",
            "# routing comment", "  max_attempts: 1   # one try", "  # after routing")


@pytest.fixture(scope="module")
def gw(upstream, tmp_path_factory):
    path = tmp_path_factory.mktemp("mgmt") / "proxy.yaml"
    g = Gateway(CONFIG.format(client_key=CLIENT_KEY, admin_key=ADMIN_KEY, up=upstream.base, up_key=UPSTREAM_KEY,
                              closed=closed_port()), path)
    yield g
    g.stop()


def admin(gw, method: str, path: str, body=None, **headers) -> httpx.Response:
    h = {**AUTH, "Content-Type": "application/json", **headers}
    return httpx.request(method, gw.base + path, headers=h, content=None if body is None else json.dumps(body),
                         timeout=30)


def chat(gw, model: str) -> httpx.Response:
    return httpx.post(gw.base + "/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                      json={"model": model, "messages": [{"role": "user", "content": "hi there"}]}, timeout=30)


def code(r: httpx.Response) -> str:
    return r.json()["error"]["code"]


def comments_kept(gw) -> str:
    text = gw.config_path.read_text()
    for c in COMMENTS:
        assert c in text, text
    return text


def cli(gw, *args: str) -> subprocess.CompletedProcess:
    env = {"LLMGATE_URL": gw.base, "LLMGATE_ADMIN_KEY": ADMIN_KEY, "LLMGATE_CONFIG": str(gw.config_path)}
    return llmgate(*args, env=env)


# ------------------------------------------------------------------------------- one provider


def test_get_one_provider_as_the_list_describes_it(gw):
    listed = {p["id"]: p for p in admin(gw, "GET", "/admin/providers").json()["providers"]}
    for pid in ("up", "dead"):
        r = admin(gw, "GET", f"/admin/providers/{pid}")
        assert r.status_code == 200, r.text
        assert r.json() == {"provider": listed[pid]}
    assert UPSTREAM_KEY not in admin(gw, "GET", "/admin/providers/up").text
    r = admin(gw, "GET", "/admin/providers/ghost")
    assert r.status_code == 404 and code(r) == "provider_not_found"
    r = admin(gw, "PUT", "/admin/providers/up", {})
    assert r.status_code == 405 and "GET" in r.headers["allow"]

    got = as_json(cli(gw, "providers", "get", "up", "--json"))
    assert got == {"provider": listed["up"]}
    failed(cli(gw, "providers", "get", "ghost"), "ghost")


# ------------------------------------------------------------------------------- default provider


def test_default_provider_is_written_and_applied_at_once(gw, upstream):
    assert chat(gw, "qwen3-coder-30b").status_code == 404  # no provider lists it, no default
    before = gw.config_path.read_text()
    for body, headers, status, err in (
            ({"provider": "ghost"}, {}, 404, "provider_not_found"),
            ({"provider": 3}, {}, 400, "invalid_request"),
            ({"provider": "${HOME}"}, {}, 400, "invalid_request"),
            ({"provider": "up"}, {"Content-Type": "text/plain"}, 415, "unsupported_media_type")):
        r = admin(gw, "POST", "/admin/default", body, **headers)
        assert (r.status_code, code(r)) == (status, err), r.text
    assert gw.config_path.read_text() == before  # refused: the file as it was

    r = admin(gw, "POST", "/admin/default", {"provider": "up"})
    assert r.status_code == 200 and r.json() == {"default": "up", "config": str(gw.config_path)}
    assert "  default: up\n" in comments_kept(gw)
    upstream.clear()
    assert chat(gw, "qwen3-coder-30b").status_code == 200  # at once: no waiting for the file watcher
    assert upstream.received()[-1]["body"]["model"] == "qwen3-coder-30b"

    p = ok(cli(gw, "set", "dead"))
    assert f"default provider dead at the gateway {gw.base} (written to {gw.config_path})" in p.stdout
    assert "  default: dead\n" in comments_kept(gw)
    assert chat(gw, "qwen3-coder-30b").status_code >= 500
    failed(cli(gw, "set", "ghost"), "ghost")

    r = admin(gw, "POST", "/admin/default", {"provider": None})
    assert r.status_code == 200 and r.json()["default"] is None
    assert "default:" not in comments_kept(gw)
    assert chat(gw, "qwen3-coder-30b").status_code == 404


def test_set_default_without_a_gateway_edits_the_file(tmp_path):
    cfg = tmp_path / "proxy.yaml"
    cfg.write_text("providers:\n  # mine\n  - {id: a, type: openai, base_url: 'http://127.0.0.1:9/v1'}\n# end\n")
    p = ok(llmgate("set", "a", "--url", f"http://127.0.0.1:{closed_port()}", "--config", str(cfg)))
    assert f"default provider a in {cfg}" in p.stdout
    assert cfg.read_text().endswith("# end\nrouting:\n  default: a\n") and "  # mine\n" in cfg.read_text()


# ------------------------------------------------------------------------------- reload


def test_reload_now_answers_the_result(gw):
    good = gw.config_path.read_text()
    try:
        gw.config_path.write_text(good.replace("models: [gpt-4o-mini]", "models: 7"))
        r = admin(gw, "POST", "/admin/reload")
        assert r.status_code == 200
        out = r.json()
        assert out["applied"] is False and "providers[0].models" in out["error"]
        assert out["config"] == str(gw.config_path) and out["providers"] == 2
        assert chat(gw, "gpt-4o-mini").status_code == 200  # the last good config serves
        failed(cli(gw, "reload"), "kept its last good config", "providers[0].models")

        gw.config_path.write_text(good.replace("models: [gpt-4o-mini]", "models: [gpt-4o-mini, qwen3-coder-30b]"))
        r = admin(gw, "POST", "/admin/reload")
        assert r.json() == {"applied": True, "error": None, "config": str(gw.config_path), "providers": 2}
        assert chat(gw, "qwen3-coder-30b").status_code == 200  # applied by the time the answer came
        assert f"reloaded {gw.config_path} at the gateway {gw.base}: 2 provider(s)" in ok(cli(gw, "reload")).stdout
        assert admin(gw, "POST", "/admin/reload", **{"Content-Type": "text/plain"}).status_code == 415
    finally:
        gw.config_path.write_text(good)
        admin(gw, "POST", "/admin/reload")


# ------------------------------------------------------------------------------- model names


def test_model_names_api(gw, upstream):
    def routed(name: str) -> str:
        upstream.clear()
        r = chat(gw, name)
        assert r.status_code == 200 and r.json()["model"] == name, r.text
        return upstream.received()[-1]["body"]["model"]

    assert chat(gw, "team").status_code == 404
    bad = ({"name": "team", "targets": []}, {"name": "", "targets": ["up/x"]}, {"name": "team", "targets": [1]},
           {"name": "team", "targets": ["${HOME}/x"]}, {"name": "team", "targets": ["up/x"], "extra": 1})
    for body in bad:
        r = admin(gw, "POST", "/admin/models", body)
        assert r.status_code == 400 and code(r) == "invalid_request", (body, r.text)
    assert admin(gw, "POST", "/admin/models", {"name": "team", "targets": ["up/gpt-4o-mini"]},
                 **{"Content-Type": "text/plain"}).status_code == 415

    r = admin(gw, "POST", "/admin/models", {"name": "team", "targets": ["up/gpt-4o-mini"]})
    assert r.status_code == 201 and r.json() == {"model": {"name": "team", "targets": ["up/gpt-4o-mini"]}}
    assert "  aliases:\n    team: [up/gpt-4o-mini]\n  # after routing\n" in comments_kept(gw)
    assert routed("team") == "gpt-4o-mini"
    assert code(admin(gw, "POST", "/admin/models", {"name": "team", "targets": ["up/x"]})) == "duplicate_model"

    r = admin(gw, "POST", "/admin/models/team/link", {"target": "up/qwen3-coder-30b"})
    assert r.json() == {"model": {"name": "team", "targets": ["up/gpt-4o-mini", "up/qwen3-coder-30b"]}}
    assert admin(gw, "GET", "/admin/models/team").json() == r.json()
    assert {"name": "team", "targets": ["up/gpt-4o-mini", "up/qwen3-coder-30b"]} in admin(
        gw, "GET", "/admin/models").json()["models"]
    r = admin(gw, "POST", "/admin/models/team/unlink", {"target": "up/gpt-4o-mini"})
    assert r.json() == {"model": {"name": "team", "targets": ["up/qwen3-coder-30b"]}}
    assert "    team: [up/qwen3-coder-30b]\n" in comments_kept(gw)
    assert routed("team") == "qwen3-coder-30b"

    r = admin(gw, "POST", "/admin/models/team/unlink", {"target": "up/qwen3-coder-30b"})
    assert r.status_code == 409 and code(r) == "last_target"
    r = admin(gw, "POST", "/admin/models/team/unlink", {"target": "up/nothing"})
    assert r.status_code == 404 and code(r) == "model_not_found"
    r = admin(gw, "POST", "/admin/models/team/link", {"target": "${HOME}"})
    assert r.status_code == 400
    for method, path in (("GET", "/admin/models/ghost"), ("DELETE", "/admin/models/ghost"),
                         ("POST", "/admin/models/ghost/link")):
        r = admin(gw, method, path, {"target": "up/x"})
        assert r.status_code == 404 and code(r) == "model_not_found", r.text
    assert admin(gw, "PATCH", "/admin/models/team", {}).status_code == 405

    r = admin(gw, "DELETE", "/admin/models/team")
    assert r.status_code == 200 and r.json() == {"removed": "team"}
    assert "aliases" not in comments_kept(gw)
    assert chat(gw, "team").status_code == 404


def test_model_names_cli(gw, upstream):
    p = ok(cli(gw, "models", "add", "crew", "up/gpt-4o-mini"))
    assert f"added model crew: up/gpt-4o-mini at the gateway {gw.base}" in p.stdout
    assert chat(gw, "crew").status_code == 200
    p = ok(cli(gw, "models", "link", "crew", "up/qwen3-coder-30b"))
    assert "linked model crew: up/gpt-4o-mini, up/qwen3-coder-30b" in p.stdout
    assert as_json(cli(gw, "models", "unlink", "crew", "up/gpt-4o-mini", "--json")) == {
        "model": {"name": "crew", "targets": ["up/qwen3-coder-30b"]}}
    upstream.clear()
    assert chat(gw, "crew").status_code == 200 and upstream.received()[-1]["body"]["model"] == "qwen3-coder-30b"
    assert "crew" in {m["id"] for m in as_json(cli(gw, "models", "--json"))["models"]}
    failed(cli(gw, "models", "unlink", "crew", "up/qwen3-coder-30b"), "only target")
    failed(cli(gw, "models", "add", "crew", "up/x"), "crew")
    assert f"removed model crew at the gateway {gw.base}" in ok(cli(gw, "models", "remove", "crew")).stdout
    assert chat(gw, "crew").status_code == 404
    failed(cli(gw, "models", "remove", "crew"), "crew")
    comments_kept(gw)


def test_model_names_cli_without_a_gateway(tmp_path):
    cfg = tmp_path / "proxy.yaml"
    cfg.write_text("providers:\n  - {id: a, type: openai, base_url: 'http://127.0.0.1:9/v1'}\n"
                   "routing:\n  aliases:\n    # kept\n    old: a/m0\n")
    off = ("--url", f"http://127.0.0.1:{closed_port()}", "--config", str(cfg))
    assert f"added model new: a/m1 in {cfg}" in ok(llmgate("models", "add", "new", "a/m1", *off)).stdout
    ok(llmgate("models", "link", "old", "a/m2", *off))
    assert cfg.read_text().endswith("    # kept\n    old: [a/m0, a/m2]\n    new: [a/m1]\n")
    ok(llmgate("models", "remove", "new", *off))
    assert cfg.read_text().endswith("    # kept\n    old: [a/m0, a/m2]\n")


# ------------------------------------------------------------------------------- request bodies


def test_request_with_captured_bodies(gw):
    start = time.time()
    assert chat(gw, "gpt-4o-mini").status_code == 200

    def newest():
        rows = admin(gw, "GET", "/admin/requests?limit=5").json()["requests"]
        return next((r for r in rows if r["ts"] >= start - 1 and r["model"] == "gpt-4o-mini"), None)

    row = poll(newest, timeout=10)
    assert row, "the request was not logged"
    r = admin(gw, "GET", f"/admin/requests/{row['id']}")
    assert r.status_code == 200
    got = r.json()["request"]
    assert {k: got[k] for k in row} == row
    assert json.loads(got["request_body"])["messages"][0]["content"] == "hi there"
    assert "Echo: hi there" in got["response_body"]
    assert UPSTREAM_KEY not in r.text and CLIENT_KEY not in r.text
    for rid in ("999999999", "abc", "99999999999999999999999"):
        r = admin(gw, "GET", f"/admin/requests/{rid}")
        assert r.status_code == 404 and code(r) == "request_not_found", r.text
    assert admin(gw, "DELETE", f"/admin/requests/{row['id']}").status_code == 405

    rows = as_json(cli(gw, "history", "--bodies", "--limit", "1", "--json"))["requests"]
    assert rows[0]["id"] == row["id"] and "Echo: hi there" in rows[0]["response_body"]
    out = ok(cli(gw, "history", "--bodies", "--limit", "1")).stdout
    assert f"--- request {row['id']}" in out and "request body:" in out and '"hi there"' in out


def test_history_bodies_without_a_gateway(tmp_path):
    from llmgate.operations.request_log import SCHEMA

    db = sqlite3.connect(tmp_path / "llmgate-requests.sqlite")
    db.executescript(SCHEMA)
    db.execute("INSERT INTO requests (ts, model, status, request_body, response_body) VALUES (?, 'm', 200, ?, ?)",
               (time.time(), b'{"q": 1}', b'{"a": 2}'))
    db.execute("INSERT INTO requests (ts, model, status) VALUES (?, 'm', 200)", (time.time() + 1,))
    db.commit()
    db.close()
    (tmp_path / "proxy.yaml").write_text("providers: []\n")
    p = ok(llmgate("history", "--bodies", "--url", f"http://127.0.0.1:{closed_port()}", "--config",
                   str(tmp_path / "proxy.yaml")))
    assert "(no bodies: log.capture_bodies was off)" in p.stdout
    assert 'request body:\n{"q": 1}\nresponse body:\n{"a": 2}' in p.stdout


# ------------------------------------------------------------------------------- version


def test_version(gw):
    p = ok(llmgate("--version"))
    assert p.stdout.strip() == f"llmgate {admin(gw, 'GET', '/admin/status').json()['version']}"
