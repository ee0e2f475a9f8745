"""The console's pure parts: sessions and CSRF (injected clock), config masking, the live feed's
bounds, form fields from a kind's schema, charts; logins' and uploads' checks."""

import asyncio
import fnmatch
import json
import socket

import pytest

from llmgate.console import charts, pages, queries, session
from llmgate.console.feed import MAX_FEEDS, QUEUE, Feeds
from llmgate.console.logins import UPLOAD_MAX, Logins, check_shape, login_file
from llmgate.errors import GatewayError
from llmgate.settings import PROVIDER_MODELS, parse_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_lives_until_its_ttl():
    clock = Clock()
    store = session.Sessions(clock)
    s = store.open("adm-key-123456789")
    assert store.get(s.sid, ["adm-key-123456789"]) is s
    clock.now += session.TTL - 1
    assert store.get(s.sid, ["adm-key-123456789"]) is s
    clock.now += 1
    assert store.get(s.sid, ["adm-key-123456789"]) is None
    assert store.get(None, []) is None and store.get("forged", ["adm-key-123456789"]) is None


def test_a_session_ends_when_its_key_leaves_admin_keys():
    store = session.Sessions(Clock())
    s = store.open("old-key-123456789")
    assert store.get(s.sid, ["new-key-123456789"]) is None
    assert store.get(s.sid, ["old-key-123456789"]) is None  # gone for good, not only hidden


def test_a_keyless_session_ends_once_admin_keys_are_configured():
    store = session.Sessions(Clock())
    s = store.open(None)
    assert store.get(s.sid, []) is s
    assert store.get(s.sid, ["adm-key-123456789"]) is None


def test_sessions_are_bounded_oldest_first():
    store = session.Sessions(Clock())
    first = store.open(None)
    for _ in range(session.MAX_SESSIONS):
        store.open(None)
    assert store.get(first.sid, []) is None and len(store._by_id) == session.MAX_SESSIONS


def test_csrf_and_cookie():
    s = session.Sessions(Clock()).open("adm-key-123456789")
    assert session.csrf_ok(s, s.csrf) and not session.csrf_ok(s, None) and not session.csrf_ok(s, s.csrf[:-1])
    assert "adm-key" not in session.cookie(s, False)
    parts = session.cookie(s, False).split("; ")
    assert parts[0] == f"llmgate_ui={s.sid}" and {"Path=/ui", "HttpOnly", "SameSite=Strict"} <= set(parts)
    assert "Secure" in session.cookie(s, True).split("; ")
    assert session.cookie(None, False).startswith("llmgate_ui=; Path=/ui; Max-Age=0")


def test_config_secrets_are_masked_whatever_their_length():
    text = ("server:\n  admin_keys: [abc]\n  api_keys:\n    - \"k1\"\n  allowed_hosts: [gw.internal]\n"
            "providers:\n  - id: up\n    api_key: short  # the key\n    token_url: https://x/token\n"
            "    headers: {Authorization: Bearer xyz}\n    max_tokens: 5\n")
    out = queries.mask_config(text, lambda t: t.replace("gw.internal", "[known]"))
    assert "abc" not in out and "k1" not in out and "short" not in out and "xyz" not in out
    assert "# the key" in out and "https://x/token" in out and "[known]" in out and "id: up" in out
    assert out.count("[redacted]") == 4


def test_form_fields_follow_the_kinds_schema():
    props = PROVIDER_MODELS["qwen"].model_json_schema()["properties"]
    assert {k: pages.field_type(v) for k, v in props.items() if k in
            ("base_url", "weight", "enabled", "models", "headers", "credentials")} == {
        "base_url": "text", "weight": "number", "enabled": "bool", "models": "list", "headers": "json",
        "credentials": "text"}
    form = pages.provider_form("qwen", PROVIDER_MODELS["qwen"].model_json_schema(),
                               {"id": "q", "type": "qwen", "api_key": "sk-secret-value"}, {"id"})
    assert "sk-secret-value" not in form and 'name="token_url"' in form and "data-changed-only" in form


def test_charts_escape_labels():
    svg = charts.bars("<t>", [("<script>", 1.5), ("b", 0)])
    assert "<script>" not in svg and "&lt;script&gt;: 1.5" in svg and svg.count("<rect") == 2


def test_the_feed_is_bounded_and_sends_no_bodies():
    async def run() -> None:
        feeds = Feeds()
        opened = [feeds.new() for _ in range(MAX_FEEDS)]
        assert feeds.new() is None
        for i in range(QUEUE + 5):
            feeds.publish({"model": f"m{i}", "request_body": b"secret body"})
        assert opened[0].dropped == 5
        item = opened[0]._queue.get_nowait()
        assert item["model"] == "m0" and "request_body" not in item
        opened[0].abandon("client-gone")
        assert opened[0] not in feeds.open and feeds.new() is not None

    asyncio.run(run())


class Writer:
    """A StreamWriter that ends the feed once one event was sent."""

    def __init__(self, feed) -> None:
        self.feed = feed
        self.data = b""

    def write(self, b: bytes) -> None:
        self.data += b

    async def drain(self) -> None:
        if b"data: " in self.data:
            self.feed.abandon("done")


def test_feed_writes_server_sent_events():
    async def run() -> bytes:
        f = Feeds().new()
        f.publish({"model": "gpt", "status": 200})
        w = Writer(f)
        assert await f.run(w) is True
        return w.data

    out = asyncio.run(run())
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"Content-Type: text/event-stream" in head and b"Transfer-Encoding: chunked" in head
    event = body.split(b"data: ", 1)[1].split(b"\n\n")[0]
    assert json.loads(event)["model"] == "gpt" and body.endswith(b"0\r\n\r\n")


def test_failed_logins_are_throttled_per_client():
    clock = Clock()
    t = session.LoginThrottle(clock, limit=3, window=60.0, max_clients=2)
    for _ in range(3):
        assert not t.blocked("10.0.0.1")
        t.failed("10.0.0.1")
    assert t.blocked("10.0.0.1") and not t.blocked("10.0.0.2")
    clock.now += 60
    assert not t.blocked("10.0.0.1")
    for c in ("a", "b", "c"):
        t.failed(c)
    assert len(t._failures) == 2


# --- subscription logins and uploads (llmgate/console/logins.py) ------------------------------

def test_a_login_writes_the_entrys_file_or_a_new_one_its_glob_takes(tmp_path):
    assert login_file(str(tmp_path / "a.json"), 0) == tmp_path / "a.json"
    new = login_file(str(tmp_path / "agy" / "*.json"), 86400.0)
    assert new == tmp_path / "agy" / "login-19700102-000000.json" and fnmatch.fnmatch(new.name, "*.json")
    for pattern in ("*/a.json", "a*b*.json", "a?.json"):
        with pytest.raises(GatewayError) as e:
            login_file(str(tmp_path / pattern), 0)
        assert e.value.status == 400


def test_an_upload_must_have_the_fields_its_kind_reads_and_is_never_echoed():
    check_shape("qwen", {"refresh_token": "r"})
    check_shape("codex", {"tokens": {"refresh_token": "r"}})
    check_shape("iflow", {"apiKey": "k"})
    for kind, data, missing in [("qwen", {"access_token": "secret-a"}, "refresh_token"),
                                ("gemini-cli", {"refresh_token": ""}, "refresh_token"),
                                ("codex", {"tokens": "secret-b"}, "tokens.refresh_token"),
                                ("iflow", {"apiKey": 12345678}, "apiKey"), ("qwen", ["secret-c"], None)]:
        with pytest.raises(GatewayError) as e:
            check_shape(kind, data)
        assert e.value.status == 400 and "secret" not in e.value.message
        assert missing is None or e.value.message.endswith(f"no {missing}.")


class FakeRuntime:
    """What Logins reads of the runtime: the settings' providers."""

    def __init__(self, yaml_text: str):
        self.settings = parse_settings(yaml_text)[0]


def test_upload_is_bounded_and_written_0600(tmp_path):
    path = tmp_path / "q" / "creds.json"
    rt = FakeRuntime(f"providers: [{{id: q, type: qwen, credentials: '{path}'}}, "
                     "{id: o, type: openai, base_url: 'http://h/v1'}]")
    logins = Logins()
    with pytest.raises(GatewayError) as e:
        asyncio.run(logins.upload(rt, "q", {"credentials": {"refresh_token": "x" * UPLOAD_MAX}}))
    assert e.value.status == 413 and not path.exists()
    with pytest.raises(GatewayError) as e:
        asyncio.run(logins.upload(rt, "o", {"credentials": {"refresh_token": "r"}}))
    assert e.value.status == 404  # not a subscription entry
    answer = asyncio.run(logins.upload(rt, "q", {"credentials": {"refresh_token": "tok-123456789"}}))
    assert answer == {"ok": True, "message": f"Credentials written to {path}."}
    assert json.loads(path.read_text()) == {"refresh_token": "tok-123456789"}
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_login_options_are_the_ones_its_kind_takes():
    rt = FakeRuntime("providers: [{id: g, type: gemini-cli, credentials: /nonexistent/g.json}]")
    for options in ({"device_url": "http://x"}, {"port": "80"}, {"port": 70000}, {"auth_url": 1}):
        with pytest.raises(GatewayError) as e:
            asyncio.run(Logins().start(rt, "g", options))
        assert e.value.status == 400 and "auth_url, token_url, port" in e.value.message


def test_a_running_login_shows_its_url_as_a_link_and_no_second_start():
    url = "http://127.0.0.1:9/auth?a=1&b=<x>"
    entry = {"id": "g", "type": "gemini-cli", "accounts": [], "cooling": []}
    running = {"g": {"state": "waiting", "message": f"Open this URL to log in: {url}", "url": url}}
    html = pages.logins([entry], running, {"gemini-cli": ("auth_url", "port")}, ["gemini-cli"])
    assert '<a href="http://127.0.0.1:9/auth?a=1&amp;b=&lt;x&gt;" target=_blank rel=noopener>' in html
    assert "login-start" not in html and "<x>" not in html
    idle = pages.logins([entry, {**entry, "id": "q", "type": "qwen"}], {}, {"gemini-cli": ("port",), "qwen": ()},
                        [])
    assert idle.count("data-open") == 1  # the Google login page opens itself; Qwen's device page is a link
    assert "Log in with Google" in idle and "Start device login" in idle


def test_a_login_that_cannot_start_says_so_rather_than_waiting(tmp_path):
    rt = FakeRuntime(f"providers: [{{id: g, type: gemini-cli, credentials: '{tmp_path / 'g.json'}'}}]")
    with socket.socket() as taken:  # the callback port is in use
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        entry = asyncio.run(Logins().start(rt, "g", {"port": taken.getsockname()[1],
                                                     "auth_url": "http://127.0.0.1:9/auth"}))
    assert entry["state"] == "failed" and entry["message"].startswith("Login failed: ") and entry["url"] is None
    assert not (tmp_path / "g.json").exists()
