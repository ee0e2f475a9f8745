"""The web console (/ui) as a user meets it: a real mitmdump with addons/gateway.py, the openai
SDK sending requests through it to strict local doubles, and headless Chromium (Debian's,
driven by playwright) logging in and clicking through the pages. Plus what a hostile page or a
stolen cookie cannot do, sent as raw bytes.

Needs the Python package `playwright` (its driver only) and /usr/bin/chromium; skipped otherwise.
"""

import json
import re
import shutil
import socket
import time

import httpx
import openai
import pytest
import yaml

from tests.e2e.conftest import CLIENT_KEY, UPSTREAM_KEY
from tests.harness import Gateway, Upstream

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
expect = sync_api.expect
expect.set_options(timeout=15_000)  # a page on a busy 2-core CI machine: 5 s (the default) is too tight

ADMIN_KEY = "adm-console-key-0123456789"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def up():
    u = Upstream("openai_compat", "--api-key", UPSTREAM_KEY, "--models", "gpt-4o-mini,qwen3-coder-30b")
    yield u
    u.stop()


@pytest.fixture(scope="module")
def qwen():
    u = Upstream("qwen_portal", "--poll-interval", "0.3")
    yield u
    u.stop()


@pytest.fixture(scope="module")
def gw(up, qwen, tmp_path_factory):
    folder = tmp_path_factory.mktemp("console")
    cfg = {"server": {"api_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY], "timeouts": {"connect": 3, "read": 5}},
           "log": {"capture_bodies": True},
           "providers": [
               {"id": "up", "type": "openai", "base_url": up.base + "/v1", "api_key": UPSTREAM_KEY,
                "models": ["gpt-4o-mini"]},
               {"id": "qw", "type": "qwen", "base_url": qwen.base + "/v1", "credentials": str(folder / "qwen.json"),
                "token_url": qwen.base + "/api/v1/oauth2/token"}]}
    g = Gateway(cfg, folder / "proxy.yaml")
    yield g
    g.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(gw, browser):
    """A browser tab logged in to the console, as a user does it."""
    context = browser.new_context()
    pg = context.new_page()
    pg.goto(gw.base + "/ui/")
    expect(pg).to_have_url(gw.base + "/ui/login")
    pg.fill("#key", ADMIN_KEY)
    pg.click("button[type=submit]")
    expect(pg.locator("h1")).to_have_text("Dashboard")
    yield pg
    context.close()


def client(gw):
    return openai.OpenAI(base_url=gw.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def test_login_sets_a_strict_http_only_cookie_scoped_to_the_console(gw, page):
    (cookie,) = page.context.cookies()
    assert cookie["name"] == "llmgate_ui" and ADMIN_KEY not in cookie["value"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert page.evaluate("document.cookie") == ""  # scripts cannot read it


def test_a_wrong_key_does_not_log_in(gw, browser):
    context = browser.new_context()
    pg = context.new_page()
    pg.goto(gw.base + "/ui/login")
    pg.fill("#key", "not-the-admin-key")
    pg.click("button[type=submit]")
    expect(pg.locator("#message")).to_contain_text("not an admin key")
    assert context.cookies() == []
    pg.goto(gw.base + "/ui/providers")
    expect(pg).to_have_url(gw.base + "/ui/login")
    context.close()


def test_add_a_provider_from_its_kinds_form_and_test_it(gw, up, page):
    page.goto(gw.base + "/ui/providers")
    page.click("a.button:text-is('openai')")
    expect(page.locator("h1")).to_have_text("Add provider: openai")
    expect(page.locator("#f-weight")).to_have_attribute("placeholder", "default: 1")
    page.fill("#f-id", "added")
    page.fill("#f-base_url", up.base + "/v1")
    page.fill("#f-api_key", UPSTREAM_KEY)
    page.fill("#f-models", "qwen3-coder-30b")
    page.click("button[type=submit]")
    expect(page).to_have_url(gw.base + "/ui/providers")
    row = page.locator("tr", has=page.locator("span#added"))
    expect(row).to_contain_text("qwen3-coder-30b")
    entry = next(p for p in yaml.safe_load(gw.config_path.read_text())["providers"] if p["id"] == "added")
    assert entry == {"id": "added", "type": "openai", "base_url": up.base + "/v1", "api_key": UPSTREAM_KEY,
                     "models": ["qwen3-coder-30b"], "enabled": True}
    row.locator("button:text-is('Test')").click()
    expect(row.locator("output")).to_contain_text("ok: qwen3-coder-30b, HTTP 200")
    # edit: only what changed is sent, the stored key stays
    row.locator("a:text-is('Edit')").click()
    expect(page.locator("#f-api_key")).to_have_value("")
    page.fill("#f-weight", "3")
    page.click("button[type=submit]")
    expect(page).to_have_url(gw.base + "/ui/providers")
    entry = next(p for p in yaml.safe_load(gw.config_path.read_text())["providers"] if p["id"] == "added")
    assert entry["weight"] == 3 and entry["api_key"] == UPSTREAM_KEY
    row = page.locator("tr", has=page.locator("span#added"))
    row.locator("button:text-is('Disable')").click()
    expect(row).to_contain_text("disabled")
    page.once("dialog", lambda d: d.accept())
    row.locator("button:text-is('Remove')").click()
    expect(page.locator("span#added")).to_have_count(0)
    assert "added" not in gw.config_path.read_text()


def test_a_request_appears_in_the_live_feed_and_its_detail_shows_the_bodies(gw, page):
    page.goto(gw.base + "/ui/requests")
    expect(page.locator("#feed-state")).to_have_text("live")
    answer = client(gw).chat.completions.create(model="gpt-4o-mini",
                                                messages=[{"role": "user", "content": "console feed check"}])
    assert answer.choices[0].message.content == "Echo: console feed check"
    feed = page.locator("#feed tbody tr").first
    expect(feed).to_contain_text("gpt-4o-mini")
    expect(feed).to_contain_text("200")
    # the history (the request log, written in batches) links to the request's detail
    for _ in range(50):
        page.goto(gw.base + "/ui/requests?model=gpt-4o-mini")
        if page.locator("table:not(#feed) tbody a").count():
            break
        time.sleep(0.2)
    page.locator("table:not(#feed) tbody a").first.click()
    expect(page.locator("h2", has_text="request body")).to_be_visible()
    expect(page.locator("pre").first).to_contain_text("console feed check")
    expect(page.locator("pre").nth(1)).to_contain_text("Echo: console feed check")
    page.goto(gw.base + "/ui/requests?model=no-such-model")
    expect(page.locator("table:not(#feed) tbody")).to_contain_text("no requests match")


def test_reset_a_cooldown_from_the_dashboard(gw, up, page):
    httpx.post(up.base + "/__fault", json={"scenario": "fault-429", "count": 1, "retry_after": 600}).raise_for_status()
    with pytest.raises(openai.RateLimitError):
        client(gw).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    page.goto(gw.base + "/ui/")
    cooling = page.locator(".cooldown")
    expect(cooling).to_contain_text("ends in")
    assert re.search(r"ends in (9|10)m", cooling.first.inner_text())
    page.locator("td", has=cooling).locator("button:text-is('Reset')").first.click()
    expect(page.locator(".cooldown")).to_have_count(0)
    answer = client(gw).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "again"}])
    assert answer.choices[0].message.content == "Echo: again"
    expect(page.locator("svg[aria-label='Requests per minute'] rect").first).to_be_attached()


def test_qwen_device_login_against_the_local_double(gw, qwen, page):
    httpx.post(f"{qwen.base}/__oauth/reset").raise_for_status()
    page.goto(gw.base + "/ui/logins")
    section = page.locator("section.login-entry", has=page.locator("h2", has_text="qw"))
    expect(section).to_contain_text("no credentials file")
    page.goto(gw.base + "/ui/providers")  # the entry cannot serve until then, and says so
    expect(page.locator("tr", has=page.locator("span#qw"))).to_contain_text("unavailable")
    page.goto(gw.base + "/ui/logins")
    section.locator("button:text-is('Start device login')").click()
    shown = section.locator("p.login")
    expect(shown).to_contain_text("confirm the code")
    assert shown.locator("a").get_attribute("href").startswith(qwen.base)
    code = re.search(r"confirm the code (\S+?)\.", shown.inner_text()).group(1)
    httpx.post(f"{qwen.base}/__oauth/approve", params={"user_code": code}).raise_for_status()
    expect(section.locator("p.login")).to_contain_text("Logged in", timeout=20_000)
    expect(section.locator("tbody")).to_contain_text("usable")
    expect(section.locator("tbody")).to_contain_text("UTC")  # token expiry and file time
    page.goto(gw.base + "/ui/providers")
    expect(page.locator("tr", has=page.locator("span#qw")).locator(".state")).to_have_text("ok")


def test_usage_and_config_pages(gw, page):
    page.goto(gw.base + "/ui/usage?by=model")
    expect(page.locator("table")).to_contain_text("gpt-4o-mini")
    expect(page.locator("svg[aria-label='Tokens by model'] rect").first).to_be_attached()
    page.goto(gw.base + "/ui/config")
    text = page.locator("pre.config").inner_text()
    assert "providers:" in text and "[redacted]" in text
    assert UPSTREAM_KEY not in text and ADMIN_KEY not in text and CLIENT_KEY not in text
    expect(page.locator("body")).to_contain_text("Last reload")


# --- what other pages and stolen sessions cannot do -----------------------------------------

def session_of(page) -> tuple[str, str]:
    """(cookie value, CSRF token) of the logged-in tab."""
    page.goto(page.url.split("/ui")[0] + "/ui/")
    return page.context.cookies()[0]["value"], page.locator("meta[name=csrf-token]").get_attribute("content")


def raw(port: int, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"") -> tuple[int, bytes]:
    if not any(k.lower() == "host" for k, _ in headers):
        headers = [("Host", f"127.0.0.1:{port}"), *headers]
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers),
             f"Content-Length: {len(body)}", "Connection: close", "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall("\r\n".join(lines).encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), payload


def test_a_cross_site_form_post_is_refused(gw, browser, page):
    """A page on another site auto-submits a form to a console action, in the same browser."""
    target = f"{gw.base}/ui/api/providers/up/disable"
    evil = browser.contexts[-1].new_page()  # the logged-in context: its cookie exists
    evil.route("http://evil.test/", lambda r: r.fulfill(content_type="text/html", body=(
        f'<form method=post action="{target}" enctype="text/plain"><input name=x value=1></form>'
        "<script>document.forms[0].submit()</script>")))
    evil.goto("http://evil.test/")
    evil.wait_for_url(target)
    assert json.loads(evil.locator("body").inner_text())["error"]["code"] == "forbidden"
    evil.close()
    cookie, token = session_of(page)
    # even with the session cookie (a browser without SameSite) and the token, other sites are refused
    status, _ = raw(gw.port, "POST", "/ui/api/providers/up/disable", [
        ("Cookie", f"llmgate_ui={cookie}"), ("X-CSRF-Token", token), ("Content-Type", "application/json"),
        ("Origin", "https://evil.example"), ("Sec-Fetch-Site", "cross-site")])
    assert status == 403
    assert yaml.safe_load(gw.config_path.read_text())["providers"][0].get("enabled", True) is True


def test_writes_need_the_session_csrf_token_and_json(gw, page):
    cookie, token = session_of(page)
    base = [("Cookie", f"llmgate_ui={cookie}"), ("Sec-Fetch-Site", "same-origin")]
    body = b'{"provider": "up"}'
    status, answer = raw(gw.port, "POST", "/ui/api/reset", [*base, ("Content-Type", "application/json")], body)
    assert status == 403 and json.loads(answer)["error"]["code"] == "csrf_failed"
    status, answer = raw(gw.port, "POST", "/ui/api/reset",
                         [*base, ("Content-Type", "application/json"), ("X-CSRF-Token", token + "x")], body)
    assert status == 403 and json.loads(answer)["error"]["code"] == "csrf_failed"
    status, _ = raw(gw.port, "POST", "/ui/api/reset", [*base, ("Content-Type", "text/plain"), ("X-CSRF-Token", token)],
                    body)
    assert status == 415
    status, answer = raw(gw.port, "POST", "/ui/api/reset",
                         [*base, ("Content-Type", "application/json"), ("X-CSRF-Token", token)], body)
    assert status == 200 and json.loads(answer)["provider"] == "up"
    # no session: no console, whatever the token
    status, _ = raw(gw.port, "POST", "/ui/api/reset", [("Content-Type", "application/json"), ("X-CSRF-Token", token)],
                    body)
    assert status == 401
    status, _ = raw(gw.port, "GET", "/ui/config", [("Cookie", "llmgate_ui=forged")])
    assert status == 303


def test_loopback_without_admin_keys_needs_no_login_but_keeps_csrf(up, browser, tmp_path):
    cfg = {"providers": [{"id": "up", "type": "openai", "base_url": up.base + "/v1", "api_key": UPSTREAM_KEY,
                          "models": ["gpt-4o-mini"]}]}
    g = Gateway(cfg, tmp_path / "proxy.yaml")
    context = browser.new_context()
    try:
        pg = context.new_page()
        pg.goto(g.base + "/ui/")
        expect(pg.locator("h1")).to_have_text("Dashboard")  # no login form
        (cookie,) = context.cookies()  # a session all the same: it carries the CSRF token
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        with pg.expect_navigation():  # the page reloads once the reset is done (or goes on to /ui/)
            pg.locator("button:text-is('Reset')").first.click()
        expect(pg.locator("#message")).to_have_text("")
        status, answer = raw(g.port, "POST", "/ui/api/reset", [
            ("Cookie", f"llmgate_ui={cookie['value']}"), ("Content-Type", "application/json")], b'{"provider": "up"}')
        assert status == 403 and json.loads(answer)["error"]["code"] == "csrf_failed"
        # a DNS-rebinding page names its own host: refused before any session is made
        status, answer = raw(g.port, "GET", "/ui/", [("Host", f"rebind.evil.example:{g.port}")])
        assert status == 403 and "is not this gateway's address" in json.loads(answer)["error"]["message"]
        # the config page tells when the last reload failed
        g.write_config("providers: [")
        pg.goto(g.base + "/ui/config")
        for _ in range(50):
            if "failed" in pg.locator("body").inner_text():
                break
            time.sleep(0.2)
            pg.reload()
        expect(pg.locator("body")).to_contain_text("failed")
    finally:
        context.close()
        g.stop()


def test_a_bad_filter_is_explained_on_a_page(gw, page):
    page.goto(gw.base + "/ui/requests?status=teapot")
    expect(page.locator("p.error")).to_contain_text("status and limit must be integers")
    expect(page.locator("header nav")).to_be_visible()



def test_flows_show_neither_the_admin_key_nor_the_session_id_and_guessing_is_throttled(up, tmp_path):
    cfg = {"server": {"admin_keys": [ADMIN_KEY]}, "providers": [
        {"id": "up", "type": "openai", "base_url": up.base + "/v1", "models": ["gpt-4o-mini"]}]}
    g = Gateway(cfg, tmp_path / "proxy.yaml", "--set", "flow_detail=3")  # bodies and headers printed
    try:
        r = httpx.post(g.base + "/ui/login", json={"key": ADMIN_KEY})
        sid = r.cookies["llmgate_ui"]
        assert httpx.get(g.base + "/ui/config", cookies={"llmgate_ui": sid}).status_code == 200
        g.wait_for(r"llmgate_ui=\[redacted\]")  # the config request's Cookie header, printed
        out = g.output
        assert '"key": "[redacted]"' in out and ADMIN_KEY not in out
        # only the login's own answer carries the id (to the browser); requests show it masked
        assert [line for line in out.splitlines() if sid in line] == [
            line for line in out.splitlines() if "Set-Cookie" in line and sid in line]
        # guessing keys: ten wrong ones a minute, then 429 even for the right one
        for _ in range(10):
            assert httpx.post(g.base + "/ui/login", json={"key": "guess"}).status_code == 401
        r = httpx.post(g.base + "/ui/login", json={"key": ADMIN_KEY})
        assert r.status_code == 429 and r.headers["retry-after"] == "60" and "llmgate_ui" not in r.cookies
    finally:
        g.stop()


def test_log_out_ends_the_session_on_the_server(gw, browser):
    context = browser.new_context()
    pg = context.new_page()
    pg.goto(gw.base + "/ui/login")
    pg.fill("#key", ADMIN_KEY)
    pg.click("button[type=submit]")
    expect(pg.locator("h1")).to_have_text("Dashboard")
    sid = context.cookies()[0]["value"]
    pg.click("button:text-is('Log out')")
    expect(pg).to_have_url(gw.base + "/ui/login")
    assert context.cookies() == []
    status, _ = raw(gw.port, "GET", "/ui/config", [("Cookie", f"llmgate_ui={sid}")])  # a copy of the old cookie
    assert status == 303
    context.close()


def test_live_feeds_are_bounded_and_a_closed_one_frees_its_slot(gw, page):
    cookie, _ = session_of(page)
    http = httpx.Client(base_url=gw.base, cookies={"llmgate_ui": cookie}, timeout=10)
    feeds = []
    try:
        for _ in range(17):  # feed.MAX_FEEDS is 16 (a tab of an earlier test may still hold one)
            r = http.send(http.build_request("GET", "/ui/feed"), stream=True)
            if r.status_code != 200:
                break
            assert r.headers["content-type"] == "text/event-stream"
            feeds.append(r)
        assert r.status_code == 503 and 15 <= len(feeds) <= 16
        r.close()
        feeds.pop().close()  # the browser tab goes away
        for _ in range(50):
            r = http.send(http.build_request("GET", "/ui/feed"), stream=True)
            if r.status_code == 200:
                feeds.append(r)
                break
            r.close()
            time.sleep(0.1)
        assert r.status_code == 200
    finally:
        for r in feeds:
            r.close()
        http.close()


def test_pages_cannot_be_framed_or_run_inline_script(gw):
    r = httpx.get(gw.base + "/ui/login")
    assert r.status_code == 200 and r.headers["x-frame-options"] == "DENY"
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in r.text  # the one script is a file: the policy holds


# --- subscription logins: Google's and iFlow's loopback flows, credentials uploads -------------

@pytest.fixture(scope="module")
def oauth_doubles():
    """(Gemini CLI's Google double, Antigravity's, iFlow's)."""
    doubles = [Upstream("code_assist"), Upstream("code_assist", "--flavour", "antigravity"), Upstream("iflow_api")]
    yield doubles
    for d in doubles:
        d.stop()


@pytest.fixture(scope="module")
def logins_gw(oauth_doubles, tmp_path_factory):
    google, agy, iflow = oauth_doubles
    folder = tmp_path_factory.mktemp("logins")
    cfg = {"server": {"admin_keys": [ADMIN_KEY], "timeouts": {"connect": 3, "read": 5}},
           "providers": [
               {"id": "gcli", "type": "gemini-cli", "base_url": google.base, "token_url": google.base + "/token",
                "credentials": str(folder / "gemini" / "oauth_creds.json"), "project": "p"},
               {"id": "agy", "type": "antigravity", "base_url": agy.base, "token_url": agy.base + "/token",
                "credentials": str(folder / "agy" / "*.json"), "project": "p"},
               {"id": "ifl", "type": "iflow", "base_url": iflow.base + "/v1",
                "credentials": str(folder / "iflow" / "oauth_creds.json")},
               {"id": "qup", "type": "qwen", "base_url": iflow.base + "/v1", "credentials": str(folder / "qwen-up.json")}]}
    g = Gateway(cfg, folder / "proxy.yaml")
    yield g, folder
    g.stop()


@pytest.fixture(scope="module")
def logins_page(logins_gw, browser):
    g, _ = logins_gw
    context = browser.new_context()
    pg = context.new_page()
    pg.goto(g.base + "/ui/login")
    pg.fill("#key", ADMIN_KEY)
    pg.click("button[type=submit]")
    expect(pg.locator("h1")).to_have_text("Dashboard")
    yield pg
    context.close()


def entry_section(page, pid: str):
    return page.locator("section.login-entry", has=page.locator("h2", has_text=pid))


def log_in_from_the_console(page, base: str, pid: str, button: str, endpoints: dict[str, str]) -> None:
    """Start the login: the console opens the login page (the double plays it and sends the browser
    to the gateway's loopback callback); wait for the console to say it is done."""
    page.goto(base + "/ui/logins")
    section = entry_section(page, pid)
    expect(section.locator("tbody")).not_to_contain_text("usable")
    section.locator("summary:text-is('Endpoints')").click()
    for name, value in endpoints.items():
        section.locator(f"input[name={name}]").fill(value)
    with page.context.expect_page() as opened:
        section.locator(f"button:text-is('{button}')").click()
    callback = opened.value
    expect(callback.locator("body")).to_contain_text("Logged in; you can close this tab.")
    callback.close()
    expect(section.locator("p.login")).to_contain_text("Logged in; credentials written to", timeout=20_000)
    expect(section.locator("tbody")).to_contain_text("usable")


@pytest.mark.parametrize("pid, folder_glob", [("gcli", "gemini/oauth_creds.json"), ("agy", "agy/login-*.json")])
def test_google_loopback_login_from_the_console(logins_gw, oauth_doubles, logins_page, pid, folder_glob):
    g, folder = logins_gw
    google = {"gcli": oauth_doubles[0], "agy": oauth_doubles[1]}[pid]
    log_in_from_the_console(logins_page, g.base, pid, "Log in with Google",
                            {"auth_url": google.base + "/o/oauth2/v2/auth", "port": "0"})
    (written,) = folder.glob(folder_glob)  # Antigravity's entry reads a glob: a new file in its folder
    creds = json.loads(written.read_text())
    assert creds["access_token"].startswith("ya29.") and creds["refresh_token"]
    assert oct(written.stat().st_mode & 0o777) == "0o600"
    text = entry_section(logins_page, pid).inner_text()
    assert creds["access_token"] not in text and creds["refresh_token"] not in text
    assert ("terms forbid" in text) == (pid == "agy")
    expect(entry_section(logins_page, pid).locator("tbody")).to_contain_text("UTC")  # expiry, last refresh


def test_iflow_loopback_login_from_the_console(logins_gw, oauth_doubles, logins_page):
    g, folder = logins_gw
    iflow = oauth_doubles[2]
    log_in_from_the_console(logins_page, g.base, "ifl", "Log in with iFlow", {
        "auth_url": iflow.base + "/oauth", "token_url": iflow.base + "/oauth/token",
        "userinfo_url": iflow.base + "/api/oauth/getUserInfo", "port": "0"})
    key = json.loads((folder / "iflow" / "oauth_creds.json").read_text())["apiKey"]
    assert key in httpx.get(f"{iflow.base}/__state").json()["api_keys"]


def test_upload_a_credentials_file(logins_gw, logins_page, tmp_path):
    g, folder = logins_gw
    page = logins_page
    page.goto(g.base + "/ui/logins")
    section = entry_section(page, "qup")
    token = "qwen-refresh-secret-0123456789"
    bad = tmp_path / "bad.json"
    for content, said in [("not json", "That file is not JSON."),
                          (json.dumps({"access_token": token}), "This is not a qwen credentials file: it has no "
                                                                "refresh_token."),
                          (json.dumps({"refresh_token": "x" * 70_000}), "at most 64 KiB")]:
        bad.write_text(content)
        section.locator("input[type=file]").set_input_files(str(bad))
        section.locator("button:text-is('Upload')").click()
        expect(page.locator("#message")).to_contain_text(said)
        assert token not in page.locator("#message").inner_text()
    assert not (folder / "qwen-up.json").exists()
    good = {"access_token": "acc-" + token, "refresh_token": token, "expiry_date": int(time.time() * 1000) + 3_600_000,
            "resource_url": "portal.qwen.ai", "token_type": "Bearer"}
    (tmp_path / "oauth_creds.json").write_text(json.dumps(good))
    section.locator("input[type=file]").set_input_files(str(tmp_path / "oauth_creds.json"))
    section.locator("button:text-is('Upload')").click()
    expect(section.locator("tbody")).to_contain_text("usable")
    written = folder / "qwen-up.json"
    assert json.loads(written.read_text()) == good and oct(written.stat().st_mode & 0o777) == "0o600"
    assert token not in page.content() and token not in g.output


# --- what `auto: true` found, kept as proxy.yaml entries ---------------------------------------

def test_auto_found_providers_are_shown_and_kept_as_edited_entries(up, browser, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no CLI logins on disk
    monkeypatch.setenv("OPENAI_API_KEY", UPSTREAM_KEY)
    monkeypatch.setenv("LLMGATE_OPENAI_BASE_URL", up.base + "/v1")
    for var in ("ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENROUTER_API_KEY", "DASHSCOPE_API_KEY",
                "DEEPSEEK_API_KEY", "GROQ_API_KEY", "MISTRAL_API_KEY", "OLLAMA_HOST"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as s:  # a closed port: Ollama and LM Studio are not running
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("LLMGATE_OLLAMA_BASE_URL", f"http://127.0.0.1:{closed}/v1")
    monkeypatch.setenv("LLMGATE_LMSTUDIO_BASE_URL", f"http://127.0.0.1:{closed}/v1")
    g = Gateway("auto: true\nserver: {admin_keys: [" + ADMIN_KEY + "]}\n", tmp_path / "proxy.yaml")
    context = browser.new_context()
    try:
        pg = context.new_page()
        pg.goto(g.base + "/ui/login")
        pg.fill("#key", ADMIN_KEY)
        pg.click("button[type=submit]")
        expect(pg.locator("h1")).to_have_text("Dashboard")
        found = pg.locator("#auto-found")
        expect(found).to_contain_text("OPENAI_API_KEY")
        expect(found).to_contain_text("gpt-5-mini")
        expect(pg.locator("ul.auto-unreachable")).to_contain_text("Ollama at http://127.0.0.1:")
        pg.goto(g.base + "/ui/config")
        row = pg.locator("#auto-found tr", has=pg.locator("td", has_text="OPENAI_API_KEY"))
        row.locator("summary").click()
        expect(row).to_contain_text("api_key: ${OPENAI_API_KEY}")
        assert UPSTREAM_KEY not in pg.content()
        row.locator("input[name=id]").fill("openai-main")
        row.locator("textarea[name=models]").fill("gpt-4o-mini")
        row.locator("button:text-is('Keep openai')").click()
        expect(pg).to_have_url(g.base + "/ui/providers")
        expect(pg.locator("tr", has=pg.locator("span#openai-main"))).to_contain_text("gpt-4o-mini")
        entry = yaml.safe_load(g.config_path.read_text())["providers"][0]
        assert entry == {"id": "openai-main", "type": "openai", "base_url": up.base + "/v1",
                         "api_key": "${OPENAI_API_KEY}", "models": ["gpt-4o-mini"]}
        answer = client(g).chat.completions.create(model="openai-main/gpt-4o-mini",
                                                   messages=[{"role": "user", "content": "kept"}])
        assert answer.choices[0].message.content == "Echo: kept"
        pg.goto(g.base + "/ui/")  # kept: no longer listed as found, and the file's entry serves
        expect(pg.locator("#auto-found")).not_to_contain_text("OPENAI_API_KEY")
    finally:
        context.close()
        g.stop()
