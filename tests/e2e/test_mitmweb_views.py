"""What a user sees in mitmweb: a real mitmweb with addons/gateway.py, the openai SDK streaming
through it to a strict Gemini double, and headless Chromium (Debian's, driven by playwright)
opening both flows. The response pane must read like the exchange: the assembled answer, not
raw SSE frames.

Needs the Python package `playwright` (its driver only: no browser download) and a Chromium
at /usr/bin/chromium (Debian package `chromium`); skipped with the reason when either is missing.
"""

import secrets
import shutil
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import CLIENT_KEY, closed_port
from tests.harness import Gateway, Upstream

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")

GEMINI_KEY = "AIza-test-gemini-key-0123456789"
ANSWER = "Echo: hello there"


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """(gateway, mitmweb origin, web password) with one streamed exchange done."""
    up = Upstream("gemini_api", "--api-key", GEMINI_KEY, "--models", "gemini-2.5-flash")
    password = secrets.token_hex(12)
    cfg = {"server": {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 5}},
           "providers": [{"id": "gem", "type": "gemini", "base_url": up.base, "api_key": GEMINI_KEY}]}
    g = Gateway(cfg, tmp_path_factory.mktemp("web") / "proxy.yaml", "--set", "web_open_browser=false",
                "--set", f"web_port={closed_port()}", "--set", f"web_password={password}", tool="mitmweb")
    try:
        origin = g.wait_for(r"Web server listening at (http://[\d.:]+)/").group(1)
        client = openai.OpenAI(base_url=g.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)
        chunks = client.chat.completions.create(
            model="gemini-2.5-flash", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}])
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
        yield g, origin, password
    finally:
        g.stop()
        up.stop()


def flows_of(origin: str, password: str) -> tuple[dict, dict]:
    """(client flow, provider-side flow), once mitmweb holds both."""
    for _ in range(100):
        flows = httpx.get(f"{origin}/flows", params={"token": password}).json()
        if len(flows) >= 2:
            break
        time.sleep(0.1)
    client = next(f for f in flows if f["request"]["path"] == "/v1/chat/completions")
    provider = next(f for f in flows if ":streamGenerateContent" in f["request"]["path"])
    return client, provider


def test_json_api_picks_the_llm_views(web):
    _, origin, password = web
    client, provider = flows_of(origin, password)
    for flow, view in ((client, "LLM OpenAI Chat"), (provider, "LLM Gemini")):
        url = f"{origin}/flows/{flow['id']}/response/content/auto.json"
        shown = httpx.get(url, params={"token": password}).json()
        assert shown["view_name"] == view
        lines = shown["text"].split("\n")
        assert lines[0].startswith("## assistant (model gemini-2.5-flash")
        assert lines[1] == ANSWER and "finish: stop" in lines
        req = httpx.get(f"{origin}/flows/{flow['id']}/request/content/auto.json", params={"token": password}).json()
        assert req["view_name"] == view
        assert "\n## system\nBe brief.\n\n## user\nhello there\n" in req["text"]
    assert "── [DONE] (end of stream) ──" in httpx.get(
        f"{origin}/flows/{client['id']}/response/content/auto.json", params={"token": password}).json()["text"]


def test_browser_shows_the_assembled_answer(web):
    _, origin, password = web
    client, provider = flows_of(origin, password)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page()
            for flow, view in ((client, "LLM OpenAI Chat"), (provider, "LLM Gemini")):
                page.goto(f"{origin}/?token={password}#/flows/{flow['id']}/response")
                pane = page.locator(".contentview")
                sync_api.expect(pane).to_contain_text("## assistant (model gemini-2.5-flash", timeout=15_000)
                sync_api.expect(pane).to_contain_text(ANSWER)
                sync_api.expect(pane).to_contain_text("finish: stop")
                sync_api.expect(page.locator(".flow-detail")).to_contain_text(view)
                assert "data: {" not in pane.inner_text()  # not the raw frames
        finally:
            browser.close()
