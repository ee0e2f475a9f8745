"""mitmweb as an LLM debugger: a real mitmweb with addons/gateway.py, a fill-first pool whose first
member fails (the strict OpenAI double's POST /__fault) and a working second one. What the user
reads: mitmweb's JSON API (/flows, /options) and its flow download filtered the way its search box
filters (/flows/dump?filter=...), plus the request log."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from mitmproxy import io

from tests.e2e.conftest import CLIENT_KEY, UPSTREAM_KEY, closed_port
from tests.harness import ROOT, Gateway, Upstream

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """(gateway, mitmweb origin, web password, upstream a, request log path)."""
    a = Upstream("openai_compat", "--api-key", UPSTREAM_KEY, "--models", "m,s")
    b = Upstream("openai_compat", "--api-key", UPSTREAM_KEY, "--models", "m")
    d = tmp_path_factory.mktemp("debugger")
    password = secrets.token_hex(12)
    oa = lambda pid, up, models: {"id": pid, "type": "openai", "base_url": up.base + "/v1",  # noqa: E731
                                  "api_key": UPSTREAM_KEY, "models": models}
    cfg = {"server": {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 10}},
           "providers": [oa("a", a, ["m"]), oa("b", b, ["m"]), oa("solo", a, ["s"])],
           "routing": {"strategy": "fill-first"}}
    g = Gateway(cfg, d / "proxy.yaml", "--set", "web_open_browser=false", "--set", f"web_port={closed_port()}",
                "--set", f"web_password={password}", tool="mitmweb")
    try:
        origin = g.wait_for(r"Web server listening at (http://[\d.:]+)/").group(1)
        yield g, origin, password, a, d / "llmgate-requests.sqlite"
    finally:
        g.stop()
        a.stop()
        b.stop()


def arm_once(up: Upstream) -> None:
    httpx.post(up.base + "/__fault", json={"scenario": "fault-500", "count": 1}).raise_for_status()


def chat(g: Gateway, model: str, stream: bool = False) -> httpx.Response:
    body = {"model": model, "messages": HELLO, "stream": stream}
    return httpx.post(g.base + "/v1/chat/completions", json=body, headers=AUTH, timeout=20)


def dump(origin: str, password: str, query: str | None = None) -> list:
    """The flows mitmweb holds (those its search `query` finds), as saved flows."""
    r = httpx.get(f"{origin}/flows/dump", params={"token": password, **({"filter": query} if query else {})})
    r.raise_for_status()
    return list(io.FlowReader(BytesIO(r.content)).stream())


def exchange(origin: str, password: str, model: str, providers: int) -> tuple:
    """(the last client flow asking for `model`, its provider flows in attempt order, and what
    mitmweb's search finds by the client flow's marker)."""
    for _ in range(100):
        flows = dump(origin, password)
        clients = [f for f in flows if "llmgate.upstream_of" not in f.metadata
                   and f.request.path == "/v1/chat/completions" and json.loads(f.request.content)["model"] == model]
        ids = clients[-1].metadata.get("llmgate.provider_flows", []) if clients else []
        ups = [f for i in ids for f in flows if f.id == i]
        if len(ids) == providers and len(ups) == providers:
            client = clients[-1]
            return client, ups, dump(origin, password, f"~comment {client.comment.split()[-1]}")
        time.sleep(0.1)
    raise AssertionError(f"no exchange for {model} with {providers} provider flows")


def logged(db: Path, model: str) -> dict:
    """The request log's latest row for `model` (rows are written in batches)."""
    for _ in range(100):
        try:
            with sqlite3.connect(db) as c:
                c.row_factory = sqlite3.Row
                row = c.execute("SELECT * FROM requests WHERE model = ? ORDER BY id DESC", (model,)).fetchone()
        except sqlite3.OperationalError:
            row = None
        if row is not None:
            return dict(row)
        time.sleep(0.1)
    raise AssertionError(f"no request log row for {model}")


def test_failed_over_exchange_shows_every_attempt_linked(web):
    g, origin, password, a, db = web
    arm_once(a)
    r = chat(g, "m")
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "Echo: hello"
    client, ups, found = exchange(origin, password, "m", 2)
    marker = client.comment.split()[-1]
    assert marker == "#x" + client.id[:8]
    assert "[2 attempts, " in client.comment and logged(db, "m")["attempts"] == 2
    assert {f.id for f in found} == {client.id, *(f.id for f in ups)}  # the search finds this exchange only
    failed, served = ups
    for i, f in enumerate(ups, 1):
        assert f.metadata["llmgate.upstream_of"] == client.id and f.comment.startswith(f"upstream of {marker}: ")
        assert f.metadata["llmgate"]["attempt"] == i and f.metadata["llmgate"]["attempts"] == 2
        assert f.request.headers["authorization"] == "[redacted]"
        assert f.response.headers["content-length"] == str(len(f.response.raw_content)), f.response.headers
    why = failed.metadata["llmgate"]["failed_over"]
    assert failed.metadata["llmgate"]["provider"] == "a" and failed.response.status_code == 500
    assert why["status"] >= 500 and why["cooling_s"] is not None and why["error"]
    assert f"failed {why['status']}, cooling {why['cooling_s']} s" in failed.comment
    assert "failed_over" not in served.metadata["llmgate"] and served.metadata["llmgate"]["provider"] == "b"
    assert served.response.status_code == 200 and b"Echo: hello" in served.response.content


def test_only_member_failing_is_one_attempt(web):
    g, origin, password, a, db = web
    arm_once(a)
    r = chat(g, "s")
    assert r.status_code >= 500 and "error" in r.json()
    client, ups, found = exchange(origin, password, "s", 1)
    assert "attempts" not in client.comment, client.comment
    assert logged(db, "s")["attempts"] == 1
    (only,) = ups
    assert only.metadata["llmgate"]["failed_over"]["cooling_s"] is not None and only.response.status_code == 500
    assert {f.id for f in found} == {client.id, only.id}


def test_client_flows_show_the_address_the_client_used(web):
    g, origin, password, _, _ = web
    assert chat(g, "m", stream=True).status_code == 200
    assert httpx.get(g.base + "/health").status_code == 200
    for _ in range(100):
        flows = httpx.get(f"{origin}/flows", params={"token": password}).json()
        if any(f["request"]["path"] == "/health" for f in flows):
            break
        time.sleep(0.1)
    client_side = [f for f in flows if not f["comment"].startswith("upstream of")]
    assert {f["request"]["path"] for f in client_side} >= {"/health", "/v1/chat/completions"}
    for f in client_side:
        assert (f["request"]["scheme"], f["request"]["host"], f["request"]["port"]) == ("http", "127.0.0.1", g.port), f


def test_comment_column_shown_by_default(web):
    _, origin, password, _, _ = web
    options = httpx.get(f"{origin}/options", params={"token": password}).json()
    assert options["web_columns"]["value"][-1] == "comment"
    assert options["web_columns"]["value"][:-1] == options["web_columns"]["default"]


def test_make_web_takes_the_port_and_prints_the_url():
    import subprocess

    out = subprocess.run(["make", "-n", "web", "WEB_PORT=9123"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert "web_port=9123" in out and "http://127.0.0.1:9123/" in out
