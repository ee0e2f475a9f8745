"""mitmweb as an LLM debugger: a real mitmweb with addons/gateway.py, a fill-first pool whose first
member fails (the strict OpenAI double's POST /__fault) and a working second one. What the user
reads: mitmweb's JSON API (/flows, /options) and its flow download filtered the way its search box
filters (/flows/dump?filter=...), plus the request log."""

from __future__ import annotations

import json
import re
import secrets
import shutil
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


def logged(db: Path, model: str, key_id: str = "%") -> dict:
    """The request log's latest row for `model` (rows are written in batches)."""
    for _ in range(100):
        try:
            with sqlite3.connect(db) as c:
                c.row_factory = sqlite3.Row
                row = c.execute("SELECT * FROM requests WHERE model = ? AND key_id LIKE ? ORDER BY id DESC",
                                (model, key_id)).fetchone()
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


def replay_via_api(origin: str, password: str, flow_id: str) -> None:
    """What mitmweb's Replay button sends: POST /flows/{id}/replay, its XSRF cookie echoed in a header."""
    xsrf = secrets.token_hex(16)  # tornado's double submit: any value, the same in both
    r = httpx.post(f"{origin}/flows/{flow_id}/replay", params={"token": password},
                   cookies={"_mitmproxy_xsrf": xsrf}, headers={"X-XSRFToken": xsrf})
    r.raise_for_status()


def replayed(origin: str, password: str, flow_id: str) -> io.http.HTTPFlow:
    """The flow once its replay has an answer and its provider flows are in mitmweb."""
    for _ in range(150):
        flows = dump(origin, password)
        (f,) = [x for x in flows if x.id == flow_id]
        ids = f.metadata.get("llmgate.provider_flows", [])
        if f.is_replay == "request" and f.response is not None and all(any(x.id == i for x in flows) for i in ids):
            return f
        time.sleep(0.1)
    raise AssertionError(f"flow {flow_id} was not replayed")


@pytest.mark.parametrize("stream", [False, True])
def test_replay_through_the_rest_api_is_served_as_the_operators(web, stream):
    g, origin, password, a, db = web
    arm_once(a)  # the original fails (the only member: tried even while cooling); its replay is served
    assert chat(g, "s", stream=stream).status_code == 500
    client, (old_up,), _ = exchange(origin, password, "s", 1)
    assert client.request.headers["authorization"] == "[redacted]" and client.response.status_code == 500
    replay_via_api(origin, password, client.id)
    f = replayed(origin, password, client.id)
    assert f.response.status_code == 200, f.response.content
    text = b"".join(re.findall(rb'"content": ?"([^"]*)"', f.response.content))  # a stream's pieces, or the message
    assert text == b"Echo: hello" and f.metadata["llmgate"].get("stream") == ("complete" if stream else None)
    tokens = "" if stream else r", \d+\+\d+ tokens"  # the stream asked for no usage
    assert re.fullmatch(rf"-> solo / s \(listed\) \[replay{tokens}\] #x{client.id[:8]}", f.comment), f.comment
    assert f.metadata["llmgate_key"] == "replay" and f.request.headers["authorization"] == "[redacted]"
    (up_id,) = f.metadata["llmgate.provider_flows"]
    (up,) = [u for u in dump(origin, password) if u.id == up_id]
    assert up_id != old_up.id and up.metadata["llmgate.upstream_of"] == client.id
    assert up.response.status_code == 200 and up.request.headers["authorization"] == "[redacted]"
    row = logged(db, "s", key_id="replay")
    assert (row["key_id"], row["status"], row["attempts"], row["provider"]) == ("replay", 200, 1, "solo")


def test_replay_from_mitmweb_page(web):
    """In headless Chromium: pick the failed client flow in mitmweb's list, press Replay, see a 200
    and the new comment in the list."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    g, origin, password, a, db = web
    arm_once(a)
    assert chat(g, "s").status_code == 500
    client, _, _ = exchange(origin, password, "s", 1)
    mark = "#x" + client.id[:8]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(f"{origin}/?token={password}")
            row = page.locator("tr", has=page.locator("td.col-comment", has_text=mark)).filter(
                has_not_text="upstream of")
            sync_api.expect(row.locator("td.col-status")).to_have_text("500")
            row.click()
            page.click("button[title='[r]eplay flow']")
            sync_api.expect(row.locator("td.col-status")).to_have_text("200", timeout=15000)
            sync_api.expect(row.locator("td.col-comment")).to_have_text(
                re.compile(rf"^-> solo / s \(listed\) \[replay, \d+\+\d+ tokens\] {mark}$"))
        finally:
            browser.close()
    assert logged(db, "s", key_id="replay")["status"] == 200
