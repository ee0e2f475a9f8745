"""Attacks on what was added in the fourth round (intercept mode, the request log in PostgreSQL,
shared state in Redis), each through a real gateway: the hole shown, then kept shut."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import closed_port
from tests.harness import Gateway
from tests.upstreams import openai_compat
from tests.upstreams.serving import ServerThread

UPSTREAM_KEY = "gateway-provider-key-round4"
CLIENT_KEY = "sk-gateway-client-key-round4"


def lan_address() -> str:
    """This machine's address on its network (a client there is not loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            ip = s.getsockname()[0]
        except OSError:
            ip = ""
    if not ip or ip.startswith("127."):
        pytest.skip("no non-loopback address on this machine")
    return ip


def exchange(host: str, port: int, raw: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read until the server closes (requests say Connection: close)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(raw)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def json_of(answer: bytes) -> dict:
    """The first answer's JSON body (a refused CONNECT may be followed by the answer to what came after)."""
    head, _, rest = answer.partition(b"\r\n\r\n")
    length = int(next(v for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")) if k.lower() == b"content-length"))
    return json.loads(rest[:length])


def proxy_auth(key: str) -> str:
    return "Proxy-Authorization: Basic " + base64.b64encode(f"llmgate:{key}".encode()).decode() + "\r\n"


def chat_via_proxy(lan: str, port: int, auth: str = "") -> bytes:
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
    return exchange(lan, port, (
        "POST http://api.openai.com/v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n"
        f"{auth}Content-Type: application/json\r\nAuthorization: Bearer sk-cli-own\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)


@pytest.fixture
def provider() -> Iterator[str]:
    srv = ServerThread(openai_compat.make_app(UPSTREAM_KEY, ["gpt-4o-mini"]))
    yield srv.__enter__()
    srv.__exit__(None, None, None)


def provider_calls(base: str) -> list[dict]:
    return httpx.get(base + "/__requests", timeout=5).json()


def intercept_gateway(tmp: Path, provider_base: str, lan: str, *extra: str, rules: list | None = None,
                      **server) -> tuple[Gateway, int]:
    """The gateway as `make intercept HOST=<lan address>` runs it (the proxy port on the network), the
    CLIs' OpenAI calls routed to the gateway's provider."""
    cfg = {
        "server": server,
        "providers": [{"id": "up", "type": "openai", "base_url": provider_base + "/v1", "api_key": UPSTREAM_KEY,
                       "models": ["gpt-4o-mini"]}],
        "intercept": {"hosts": ["api.openai.com"],
                      "rules": [{"host": "api.openai.com", "provider": "up"}] if rules is None else rules},
    }
    gw = Gateway(cfg, tmp / "proxy.yaml", "--mode", f"regular@{lan}:{closed_port()}", *extra)
    port = int(gw.wait_for(r"HTTP\(S\) proxy listening at [\d.]+:(\d+)").group(1))
    gw.port = int(gw.wait_for(r"reverse proxy to \S+ listening at 127\.0\.0\.1:(\d+)").group(1))
    gw.base = f"http://127.0.0.1:{gw.port}"
    return gw, port


def admin_via_proxy(lan: str, port: int, target: str, host: str, auth: str = "") -> bytes:
    """An absolute-form request to `target`, naming the gateway as its Host (web_guard's check)."""
    return exchange(lan, port, (f"GET http://{target}/admin/status HTTP/1.1\r\nHost: {host}\r\n{auth}"
                                "Connection: close\r\n\r\n").encode())


def tunnel_to_admin(lan: str, port: int, target: str, host: str, auth: str = "") -> bytes:
    return exchange(lan, port, (f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n"
                                f"GET /admin/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").encode())


# spellings of the gateway's loopback port that mitmproxy's own self-connect check does not know
LOOPBACK_TARGETS = ("[::ffff:127.0.0.1]", "127.1", "0.0.0.0", "2130706433")


# --- intercept mode: the proxy port -----------------------------------------------------------


def test_intercept_proxy_does_not_take_network_clients_to_loopback_admin(tmp_path, provider):
    """No admin_keys: /admin answers loopback clients only. Through the proxy port a network client
    was loopback: its request to [::ffff:127.0.0.1] (or a tunnel there) reached /admin/status."""
    lan = lan_address()
    gw, port = intercept_gateway(tmp_path, provider, lan)
    try:
        host = f"127.0.0.1:{gw.port}"
        for target in LOOPBACK_TARGETS:
            for answer in (admin_via_proxy(lan, port, f"{target}:{gw.port}", host),
                           tunnel_to_admin(lan, port, f"{target}:{gw.port}", host)):
                assert status_of(answer) == 403, (target, answer[:300])
                assert b"request_log" not in answer  # the admin status never came
                assert json_of(answer)["error"]["code"] == "forbidden"
        # without keys nothing proves who may spend the gateway's provider credentials
        refused = chat_via_proxy(lan, port)
        assert status_of(refused) == 403, refused[:300]
        assert "server.api_keys" in json_of(refused)["error"]["message"]
        assert provider_calls(provider) == []
    finally:
        gw.stop()


def test_intercept_proxy_serves_keyless_network_clients_of_open_networks(tmp_path, provider):
    """server.open_networks: the operator's own network may use the proxy without a gateway key."""
    lan = lan_address()
    gw, port = intercept_gateway(tmp_path, provider, lan, open_networks=[f"{lan}/32"])
    try:
        answer = chat_via_proxy(lan, port)
        assert status_of(answer) == 200, answer[:300]
        assert len(provider_calls(provider)) == 1
        for target in LOOPBACK_TARGETS:  # still never to loopback
            assert status_of(admin_via_proxy(lan, port, f"{target}:{gw.port}", f"127.0.0.1:{gw.port}")) == 403
    finally:
        gw.stop()


def test_intercept_proxy_asks_network_clients_for_a_gateway_key(tmp_path, provider):
    """server.api_keys set: a routed vendor call spends the gateway's provider credentials, so a
    network client must send a gateway key (as the proxy password: HTTPS_PROXY=http://x:KEY@host:port);
    the key goes no further than the gateway."""
    lan = lan_address()
    gw, port = intercept_gateway(tmp_path, provider, lan, api_keys=[CLIENT_KEY])
    try:
        refused = chat_via_proxy(lan, port)
        assert status_of(refused) == 407, refused[:300]
        assert b"Proxy-Authenticate: Basic" in refused
        assert status_of(chat_via_proxy(lan, port, proxy_auth("not-a-key"))) == 407
        assert provider_calls(provider) == []
        answer = chat_via_proxy(lan, port, proxy_auth(CLIENT_KEY))
        assert status_of(answer) == 200, answer[:300]
        calls = provider_calls(provider)
        assert len(calls) == 1 and CLIENT_KEY not in json.dumps(calls)
        assert CLIENT_KEY not in gw.output
    finally:
        gw.stop()


def test_intercept_proxy_keyed_network_client_cannot_reach_loopback(tmp_path, provider):
    """A client key is not an admin key: through the proxy, not even a keyed network client reaches
    the gateway's loopback-only admin routes (by address, by name, or in a CONNECT tunnel)."""
    lan = lan_address()
    gw, port = intercept_gateway(tmp_path, provider, lan, api_keys=[CLIENT_KEY])
    auth = proxy_auth(CLIENT_KEY)
    try:
        for target in ("127.0.0.1", "localhost", *LOOPBACK_TARGETS):
            for answer in (admin_via_proxy(lan, port, f"{target}:{gw.port}", f"127.0.0.1:{gw.port}", auth),
                           tunnel_to_admin(lan, port, f"{target}:{gw.port}", f"127.0.0.1:{gw.port}", auth)):
                assert status_of(answer) == 403, (target, answer[:300])
                assert b"request_log" not in answer
    finally:
        gw.stop()


# --- the request log's and the shared state's URLs ------------------------------------------

PG_QUERY_PASSWORD = "pg-query-password-round4"
PG_PASSWORD = "pg-userinfo-password-round4"
REDIS_PASSWORD = "redis-password-round4"


@pytest.mark.parametrize("database", [
    f"postgresql://llmgate@127.0.0.1:{{port}}/log?password={PG_QUERY_PASSWORD}&connect_timeout=1",
    f"postgresql://llmgate:{PG_PASSWORD}@127.0.0.1:{{port}}/log?connect_timeout=1",
])
def test_database_and_state_passwords_never_shown(tmp_path, provider, database):
    """log.database may carry its password as libpq's ?password= (a URI parameter libpq reads) and
    server.state as redis://:password@: neither is shown by /admin/status, the console's pages or
    the gateway's log, while both stores are unreachable (their errors are logged)."""
    database = database.format(port=closed_port())
    cfg = {"server": {"state": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{closed_port()}/0"},
           "log": {"database": database},
           "providers": [{"id": "up", "type": "openai", "base_url": provider + "/v1", "api_key": UPSTREAM_KEY,
                          "models": ["gpt-4o-mini"]}]}
    gw = Gateway(cfg, tmp_path / "proxy.yaml")
    try:
        r = httpx.post(gw.base + "/v1/chat/completions", timeout=20,
                       json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        gw.wait_for(r"request log: PostgreSQL at .* cannot be written")
        shown = [httpx.get(gw.base + path, timeout=20).text for path in ("/admin/status", "/ui/config", "/ui/")]
        assert "127.0.0.1" in shown[0]  # the store is named, without its password
        for text in (*shown, gw.output):
            for secret in (PG_QUERY_PASSWORD, PG_PASSWORD, REDIS_PASSWORD):
                assert secret not in text
    finally:
        gw.stop()


# --- shared state: what Redis holds is input too ---------------------------------------------

def chat(gw: Gateway, timeout: float = 15.0) -> httpx.Response:
    return httpx.post(gw.base + "/v1/chat/completions", timeout=timeout,
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


def test_hostile_cooldowns_in_redis_neither_crash_nor_hang_the_gateway(tmp_path, provider):
    """Another writer of the shared Redis (a buggy or hostile process) publishes cooldowns of the
    right shape with the wrong values: a cooldown whose end is a string broke every pick of that
    member (TypeError -> 500); a failure count of 10**10 made the next failure's backoff compute
    2 ** (10**10), which froze the gateway."""
    import redis as sync_redis

    from tests.services import redis_server

    with redis_server() as r:
        cfg = {"server": {"state": r.url},
               "providers": [{"id": "up", "type": "openai", "base_url": provider + "/v1", "api_key": UPSTREAM_KEY,
                              "models": ["gpt-4o-mini"]}]}
        gw = Gateway(cfg, tmp_path / "proxy.yaml")
        store = sync_redis.Redis.from_url(r.url)
        try:
            gw.wait_for(r"state: Redis at \S+ connected")
            httpx.post(provider + "/__fault", json={"scenario": "fault-500", "count": 1}, timeout=5)
            assert chat(gw).status_code >= 500  # the member cools down: its key as the gateway writes it
            field = next(iter(store.hgetall("llmgate:cooldowns")))
            key = json.loads(field)
            for value in (["soon", 1, "x"], [0, 10**10, "x"], [float("inf"), -1, None], [0, 1, "x" * 10**6]):
                store.publish("llmgate:events", json.dumps({"k": "c", "key": key, "v": value, "from": "evil"}))
                store.hset("llmgate:cooldowns", field, json.dumps(value))
                httpx.post(provider + "/__fault", json={"scenario": "fault-500", "count": 1}, timeout=5)
                for _ in range(2):  # a failure (a new backoff from the stored count), then an answer
                    resp = chat(gw)
                    assert resp.status_code in (200, 500, 502, 503), (value, resp.text)
                    assert "error" in resp.json() or resp.json()["choices"], resp.text
            assert "Traceback" not in gw.output
        finally:
            store.close()
            gw.stop()


# --- fleet credentials: what the shared store holds is input too ---------------------------------

@pytest.mark.parametrize("value, fence", [
    ('{"access_token": "a", "refresh_token": "r", "expiry_date": 99999999999999}', b"not-a-number"),
    ("[" * 100_000, b"1"),  # nested past the JSON parser's recursion limit
    ('{"access_token": 5, "refresh_token": ["r"], "expiry_date": "soon", "resource_url": 7}', b"1"),
])
def test_hostile_fleet_credentials_in_redis_are_a_clear_error(tmp_path, value, fence):
    """A shared store holding garbage for an account (another writer's bug, a hand edit) is an error
    that says where to look, in the caller's format: not an internal error with a traceback."""
    from tests.harness import Upstream
    from tests.services import redis_server

    qwen = Upstream("qwen_portal")
    with redis_server() as r:
        import redis as sync_redis

        store = sync_redis.Redis.from_url(r.url)
        store.hset("llmgate:value:credentials:qwen:oauth_creds", mapping={"value": value, "fence": fence})
        cfg = {"server": {"state": r.url},
               "providers": [{"id": "qwen", "type": "qwen", "base_url": qwen.base + "/v1",
                              "token_url": qwen.base + "/api/v1/oauth2/token",
                              "credentials": str(tmp_path / "qwen" / "oauth_creds.json")}]}
        gw = Gateway(cfg, tmp_path / "proxy.yaml")
        try:
            resp = httpx.post(gw.base + "/v1/chat/completions", timeout=20,
                              json={"model": "qwen/qwen3-coder-plus", "messages": [{"role": "user", "content": "hi"}]})
            assert resp.status_code in (502, 503), resp.text
            err = resp.json()["error"]
            assert err["code"] != "internal_error" and "llmgate credentials import qwen" in err["message"], err
            assert "Traceback" not in gw.output
        finally:
            store.close()
            gw.stop()
            qwen.stop()


def test_credentials_import_replaces_garbage_in_the_shared_store(tmp_path):
    """A stored value whose fence is not a number made every write fail in Redis's script, and
    `llmgate credentials import` said the store was unreachable: the way out was redis-cli."""
    import subprocess

    import redis as sync_redis
    import yaml

    from tests.harness import BIN
    from tests.services import redis_server

    with redis_server() as r:
        store = sync_redis.Redis.from_url(r.url)
        key = "llmgate:value:credentials:qwen:oauth_creds"
        store.hset(key, mapping={"value": "junk", "fence": "junk"})
        (tmp_path / "proxy.yaml").write_text(yaml.safe_dump({
            "server": {"state": r.url},
            "providers": [{"id": "qwen", "type": "qwen", "credentials": str(tmp_path / "oauth_creds.json")}]}))
        login = {"access_token": "a-round4", "refresh_token": "r-round4", "expiry_date": 1}
        (tmp_path / "login.json").write_text(json.dumps(login))
        done = subprocess.run([str(BIN / "llmgate"), "credentials", "import", "qwen", "--file",
                               str(tmp_path / "login.json"), "--config", str(tmp_path / "proxy.yaml")],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        assert json.loads(store.hget(key, "value")) == login
        store.close()


def test_intercept_proxy_credentials_go_no_further_than_the_gateway(tmp_path, provider):
    """HTTPS_PROXY=http://user:secret@... makes clients send Proxy-Authorization with every plain-HTTP
    call: mitmproxy passed it on to the host called and kept it in the flow."""
    gw, port = intercept_gateway(tmp_path, provider, "127.0.0.1")
    try:
        httpx.delete(provider + "/__requests", timeout=5)
        answer = exchange("127.0.0.1", port, (
            f"GET http://127.0.0.1:{provider.rsplit(':', 1)[1]}/v1/models HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\n{proxy_auth('proxy-secret-round4')}Authorization: Bearer {UPSTREAM_KEY}\r\n"
            "Connection: close\r\n\r\n").encode())
        assert status_of(answer) == 200, answer[:300]
        (seen,) = provider_calls(provider)
        assert "proxy-authorization" not in seen["headers"]
    finally:
        gw.stop()


# --- the request log's filters ------------------------------------------------------------------

@pytest.fixture(scope="module")
def pg():
    from tests.services import postgres_server

    with postgres_server() as server:
        yield server


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_request_log_filters_that_no_row_can_match_are_an_empty_answer(tmp_path, provider, store, request):
    """Filters are the caller's text: a NUL in one (PostgreSQL's text cannot hold it) or a status past
    64 bits (SQLite's integers) matched nothing, yet answered 503 'request log unavailable' or 500."""
    log = {"database": request.getfixturevalue("pg").database("filters_round4")} if store == "postgresql" else {}
    cfg = {"log": log, "providers": [{"id": "up", "type": "openai", "base_url": provider + "/v1",
                                      "api_key": UPSTREAM_KEY, "models": ["gpt-4o-mini"]}]}
    gw = Gateway(cfg, tmp_path / "proxy.yaml")
    try:
        assert chat(gw).status_code == 200
        for query in ({"model": "gpt-4o-mini\x00"}, {"provider": "\x00"}, {"key": "a\x00b"},
                      {"status": str(10**30)}, {"status": str(-10**30)}):
            for path in ("/admin/requests", "/ui/requests"):
                r = httpx.get(gw.base + path, params=query, timeout=20)
                assert r.status_code in (200, 400), (path, query, r.status_code, r.text[:300])
                assert "gpt-4o-mini" not in r.text or path == "/ui/requests"
        assert "Traceback" not in gw.output
    finally:
        gw.stop()


# --- in-stream first-event failover: a hostile upstream ----------------------------------------

NESTED = b'{"a":' * 30_000 + b"1" + b"}" * 30_000  # past json.loads' recursion, 180 KB


@pytest.fixture
def nesting_upstream() -> Iterator[str]:
    """A provider whose answers nest JSON deeper than json.loads goes: a stream's first event, or
    the whole body."""
    from aiohttp import web

    async def answer(request: web.Request) -> web.StreamResponse:
        if not (await request.json()).get("stream"):
            return web.Response(body=NESTED, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: " + NESTED + b"\n\ndata: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    srv = ServerThread(app)
    yield srv.__enter__()
    srv.__exit__(None, None, None)


def test_answers_nested_past_the_json_limit_are_an_upstream_error(tmp_path, nesting_upstream):
    """JSON nested deeper than the parser goes raised RecursionError wherever an answer was read (the
    first event's check, the stream converters, usage, error bodies): a 500 internal_error (or a stream
    ended with one) and a traceback in the log, for bytes that are the upstream's fault."""
    gw = Gateway({"providers": [{"id": "up", "type": "openai", "base_url": nesting_upstream + "/v1",
                                 "api_key": UPSTREAM_KEY, "models": ["gpt-4o-mini"]}]}, tmp_path / "proxy.yaml")
    body = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    try:
        r = httpx.post(gw.base + "/v1/chat/completions", timeout=20, json={**body, "stream": True})
        assert r.status_code == 200 and '"code":"upstream_error"' in r.text, r.text[:300]
        for path, shape in (("/v1/chat/completions", "upstream_error"), ("/v1/messages", "api_error")):
            r = httpx.post(gw.base + path, timeout=20, json=body)
            assert r.status_code == 502 and shape in r.text and "too deeply" in r.text, (path, r.text[:300])
        assert "internal_error" not in r.text and "Traceback" not in gw.output
    finally:
        gw.stop()


def test_intercept_routed_calls_refuse_other_sites_pages(tmp_path, provider):
    """A browser that uses the proxy (a system-wide proxy setting) lets any web page send a simple
    POST to http://api.openai.com: an intercept rule answered it with the gateway's provider
    credentials. The coding CLIs never send Origin or Sec-Fetch-Site; a page of another site always does."""
    gw, port = intercept_gateway(tmp_path, provider, "127.0.0.1")
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
    try:
        httpx.delete(provider + "/__requests", timeout=5)
        for marks in ("Origin: http://evil.example\r\n", "Sec-Fetch-Site: cross-site\r\n"):
            answer = exchange("127.0.0.1", port, (
                "POST http://api.openai.com/v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n"
                f"{marks}Content-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode() + body)
            assert status_of(answer) == 403, answer[:300]
            assert json_of(answer)["error"]["code"] == "forbidden"
        assert provider_calls(provider) == []
        assert status_of(chat_via_proxy("127.0.0.1", port)) == 200  # the CLIs' calls as before
    finally:
        gw.stop()


# --- the console's credentials upload ----------------------------------------------------------

def test_console_uploads_into_a_glob_folder_never_replace_each_other(tmp_path):
    """An entry whose credentials are a glob takes each upload as a new file named by the time to
    the second: two accounts uploaded within one second were one file, the first account lost."""
    import re

    gw = Gateway({"providers": [{"id": "agy", "type": "antigravity", "project": "p",
                                 "credentials": str(tmp_path / "agy" / "*.json")}]}, tmp_path / "proxy.yaml")
    try:
        with httpx.Client(base_url=gw.base, timeout=20) as ui:
            page = ui.get("/ui/")
            token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
            for n in range(3):
                r = ui.post("/ui/logins/agy/credentials", headers={"X-CSRF-Token": token},
                            json={"credentials": {"refresh_token": f"refresh-{n}-round4", "type": "antigravity"}})
                assert r.status_code == 200, r.text
                assert "refresh-" not in r.text  # never echoed
        kept = sorted(json.loads(p.read_text())["refresh_token"] for p in (tmp_path / "agy").glob("*.json"))
        assert kept == [f"refresh-{n}-round4" for n in range(3)]
        assert all(p.stat().st_mode & 0o777 == 0o600 for p in (tmp_path / "agy").glob("*.json"))
    finally:
        gw.stop()


def test_a_passed_on_vendor_answer_nested_past_the_json_limit_is_still_logged(tmp_path, provider, nesting_upstream):
    """Intercept mode passes a vendor's answer on as it is and reads its usage for the request log:
    JSON nested deeper than the parser goes raised there, and the row was lost (a traceback instead)."""
    from tests.harness import ROOT

    hosts = f"api.openai.com={nesting_upstream.rsplit(':', 1)[1]}"
    gw, port = intercept_gateway(tmp_path, provider, "127.0.0.1", "-s", str(ROOT / "tests" / "e2e" / "vendor_hosts.py"),
                                 "--set", f"test_vendor_hosts={hosts}", rules=[])
    try:
        answer = chat_via_proxy("127.0.0.1", port)
        assert status_of(answer) == 200 and NESTED in answer  # passed on, byte for byte
        deadline, rows = time.monotonic() + 10, []
        while not rows and time.monotonic() < deadline:  # the log's writer batches rows
            rows = httpx.get(gw.base + "/admin/requests", timeout=20).json()["requests"]
            time.sleep(0.2)
        assert [(r["provider"], r["account"], r["status"]) for r in rows] == [("passthrough", "api.openai.com", 200)]
        assert "Traceback" not in gw.output
    finally:
        gw.stop()


def test_socks_proxy_does_not_take_network_clients_to_loopback_admin(tmp_path, provider):
    """Any listener not in reverse mode is the CLIs' side (socks5 too). A SOCKS connection carries no
    CONNECT for the guard to read, and one to a host intercept does not decrypt is tunnelled as raw
    TCP: to the gateway's own port it reached /admin from loopback."""
    import struct

    lan = lan_address()
    cfg = {"providers": [{"id": "up", "type": "openai", "base_url": provider + "/v1", "api_key": UPSTREAM_KEY,
                          "models": ["gpt-4o-mini"]}]}
    gw = Gateway(cfg, tmp_path / "proxy.yaml", "--mode", f"socks5@{lan}:{closed_port()}")
    port = int(gw.wait_for(r"SOCKS v5 proxy listening at [\d.]+:(\d+)").group(1))
    gw.port = int(gw.wait_for(r"reverse proxy to \S+ listening at 127\.0\.0\.1:(\d+)").group(1))
    try:
        for target in ("127.0.0.1", "::ffff:127.0.0.1", "localhost"):
            with socket.create_connection((lan, port), timeout=10) as s:
                s.sendall(b"\x05\x01\x00")
                assert s.recv(2) == b"\x05\x00"
                name = target.encode()
                s.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack(">H", gw.port))
                s.sendall(f"GET /admin/status HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nConnection: close\r\n\r\n"
                          .encode())
                out = b""
                try:
                    while chunk := s.recv(65536):
                        out += chunk
                except OSError:
                    pass
            assert b"request_log" not in out, (target, out[:300])
    finally:
        gw.stop()


# --- browser logins: the loopback callback -------------------------------------------------------

def test_a_stray_callback_does_not_end_a_console_login(tmp_path):
    """A login waits for Google to send the browser to its loopback callback. Any page the browser
    has open can load that URL too (an <img>): the first hit ended the login, 'state does not
    match'. A callback without the login's state is not the login's; the real one still logs in."""
    import re

    from tests.harness import Upstream

    google = Upstream("code_assist")
    folder = tmp_path / "gemini"
    gw = Gateway({"providers": [{"id": "gcli", "type": "gemini-cli", "base_url": google.base, "project": "p",
                                 "token_url": google.base + "/token", "credentials": str(folder / "creds.json")}]},
                 tmp_path / "proxy.yaml")
    try:
        with httpx.Client(base_url=gw.base, timeout=40) as ui:
            token = re.search(r'name="csrf-token" content="([^"]+)"', ui.get("/ui/").text).group(1)
            started = ui.post("/ui/logins/gcli", headers={"X-CSRF-Token": token},
                              json={"auth_url": google.base + "/o/oauth2/v2/auth", "port": 0}).json()
            assert started["state"] == "waiting", started
            redirect = dict(httpx.URL(started["url"]).params)["redirect_uri"]
            stray = httpx.get(redirect, params={"code": "attackers-code", "state": "forged"}, timeout=10)
            assert stray.status_code == 400
            done = httpx.get(started["url"], follow_redirects=True, timeout=20)  # the browser's real round
            assert "Logged in" in done.text, done.text[:300]
            deadline = time.monotonic() + 20
            while "Logged in; credentials written" not in ui.get("/ui/logins").text and time.monotonic() < deadline:
                time.sleep(0.2)
            assert "Logged in; credentials written" in ui.get("/ui/logins").text
        assert json.loads((folder / "creds.json").read_text())["refresh_token"]
    finally:
        gw.stop()
        google.stop()
