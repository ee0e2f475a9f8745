"""Screenshots of each console page for the README (`make screenshots`): a gateway with local
doubles as providers, a few requests through it, and headless Chromium (Debian's) on each page.
Writes docs/screenshots/console-<page>.png."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.harness import Gateway, Upstream  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
ADMIN_KEY, CLIENT_KEY, UP_KEY = "adm-screenshots-key-0123", "sk-screenshots-client", "up-screenshots-key"
PAGES = {"dashboard": "/ui/", "providers": "/ui/providers", "add-provider": "/ui/providers/new?type=openai",
         "logins": "/ui/logins", "requests": "/ui/requests", "usage": "/ui/usage?by=model", "config": "/ui/config"}


def traffic(g: Gateway, up: Upstream) -> None:
    client = openai.OpenAI(base_url=g.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)
    for i, model in enumerate(["gpt-4o-mini", "qwen3-coder-30b"] * 4):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"hello {i}"}])
    httpx.post(up.base + "/__fault", json={"scenario": "fault-429", "count": 1, "retry_after": 900})
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "rate limited"}])
    except openai.RateLimitError:
        pass  # a cooldown for the dashboard to show


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("screenshots need chromium on PATH (Debian: apt-get install chromium)")
    OUT.mkdir(parents=True, exist_ok=True)
    up = Upstream("openai_compat", "--api-key", UP_KEY, "--models", "gpt-4o-mini,qwen3-coder-30b")
    qwen = Upstream("qwen_portal")
    folder = Path(tempfile.mkdtemp(prefix="llmgate-shots-"))
    cfg = {"server": {"api_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY]}, "log": {"capture_bodies": True},
           "providers": [
               {"id": "local", "type": "openai", "base_url": up.base + "/v1", "api_key": UP_KEY,
                "models": ["gpt-4o-mini"]},
               {"id": "coder", "type": "openai", "base_url": up.base + "/v1", "api_key": UP_KEY,
                "models": ["qwen3-coder-30b"]},
               {"id": "qwen", "type": "qwen", "base_url": qwen.base + "/v1", "credentials": str(folder / "qwen.json"),
                "token_url": qwen.base + "/api/v1/oauth2/token"}]}
    g = Gateway(cfg, folder / "proxy.yaml")
    try:
        traffic(g, up)
        time.sleep(1.2)  # the request log writes in batches every 0.5 s
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(g.base + "/ui/login")
            page.screenshot(path=OUT / "console-login.png")
            page.fill("#key", ADMIN_KEY)
            page.click("button[type=submit]")
            page.wait_for_url(g.base + "/ui/")
            for name, path in PAGES.items():
                page.goto(g.base + path)
                page.screenshot(path=OUT / f"console-{name}.png", full_page=True)
                print(f"wrote docs/screenshots/console-{name}.png")
            page.goto(g.base + "/ui/logins")
            page.click("button:text-is('Start device login')")
            page.wait_for_selector("p.login.waiting")
            page.screenshot(path=OUT / "console-device-login.png", full_page=True)
            browser.close()
    finally:
        g.stop()
        up.stop()
        qwen.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
