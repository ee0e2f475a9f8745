"""Outbound proxies (server.proxy, a provider's `proxy:`, `env`): a real forward proxy on
loopback (mitmdump in regular and SOCKS5 mode, with proxy authentication) records every
request that passes through it, in front of the strict provider doubles."""

import json
import os
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import CLIENT_KEY, UPSTREAM_KEY, closed_port
from tests.harness import BIN, Gateway, Proc, Upstream
from tests.upstreams import code_assist, serving

PROXY_USER, PROXY_PASS = "llm", "proxy-pass-7f3a9c"
RECORDER = """
from mitmproxy import http

def requestheaders(flow: http.HTTPFlow) -> None:
    with open({path!r}, "a") as f:
        f.write(f"{{flow.client_conn.proxy_mode.type_name}} {{flow.request.method}} "
                f"{{flow.request.host}}:{{flow.request.port}}{{flow.request.path}}\\n")
"""


class ForwardProxy(Proc):
    """mitmdump as an HTTP and a SOCKS5 proxy (proxy auth on both); `seen()` lists what passed."""

    def __init__(self, tmp):
        self.log = tmp / "through-proxy.log"
        self.log.touch()
        script = tmp / "recorder.py"
        script.write_text(RECORDER.format(path=str(self.log)))
        super().__init__([str(BIN / "mitmdump"), "-s", str(script), "--listen-host", "127.0.0.1",
                          "--mode", f"regular@{closed_port()}", "--mode", f"socks5@{closed_port()}",
                          "--set", f"proxyauth={PROXY_USER}:{PROXY_PASS}"])
        self.http_port = int(self.wait_for(r"HTTP\(S\) proxy listening at 127\.0\.0\.1:(\d+)").group(1))
        self.socks_port = int(self.wait_for(r"SOCKS v5 proxy listening at 127\.0\.0\.1:(\d+)").group(1))
        self.http = f"http://{PROXY_USER}:{PROXY_PASS}@127.0.0.1:{self.http_port}"
        self.socks = f"socks5://{PROXY_USER}:{PROXY_PASS}@127.0.0.1:{self.socks_port}"

    def seen(self) -> list[str]:
        return self.log.read_text().splitlines()

    def clear(self) -> None:
        self.log.write_text("")


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    p = ForwardProxy(tmp_path_factory.mktemp("fwd-proxy"))
    yield p
    p.stop()


@pytest.fixture(scope="module")
def upstream():
    u = Upstream("openai_compat", "--api-key", UPSTREAM_KEY, "--models", "gpt-4o-mini,qwen3-coder-30b")
    yield u
    u.stop()


@pytest.fixture(scope="module")
def gcli():
    with serving.ServerThread(code_assist.make_app()) as base:
        yield base


@pytest.fixture(scope="module")
def creds_file(qwen, tmp_path_factory):
    return tmp_path_factory.mktemp("qwen-proxy") / "oauth_creds.json"


@pytest.fixture(scope="module")
def gateway(proxy, upstream, qwen, gcli, creds_file, tmp_path_factory):
    v1 = upstream.base + "/v1"
    cfg = {
        "server": {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 10}, "proxy": proxy.http},
        "providers": [
            {"id": "up", "type": "openai", "base_url": v1, "api_key": UPSTREAM_KEY},  # models discovered
            {"id": "direct", "type": "openai", "base_url": v1, "api_key": UPSTREAM_KEY, "proxy": "none",
             "models": ["qwen3-coder-30b"]},
            {"id": "socks", "type": "openai", "base_url": v1, "api_key": UPSTREAM_KEY, "proxy": proxy.socks,
             "models": ["qwen3-coder-30b"]},
            {"id": "qwen", "type": "qwen", "base_url": qwen.base + "/v1",
             "token_url": qwen.base + "/api/v1/oauth2/token", "credentials": str(creds_file)},
            {"id": "gcli", "type": "gemini-cli", "base_url": gcli, "token_url": gcli + "/token",
             "credentials": str(creds_file.with_name("gcli.json"))},
            {"id": "wrongpass", "type": "openai", "base_url": v1, "models": ["gpt-4o-mini"],
             "proxy": f"http://{PROXY_USER}:not-the-password@127.0.0.1:{proxy.http_port}"},
            {"id": "badhttp", "type": "openai", "base_url": v1, "models": ["gpt-4o-mini"],
             "proxy": f"http://{PROXY_USER}:{PROXY_PASS}@127.0.0.1:{closed_port()}"},
            {"id": "badsocks", "type": "openai", "base_url": v1, "models": ["gpt-4o-mini"],
             "proxy": f"socks5h://{PROXY_USER}:{PROXY_PASS}@127.0.0.1:{closed_port()}"},
        ],
    }
    g = Gateway(cfg, tmp_path_factory.mktemp("proxy-gw") / "proxy.yaml")
    yield g
    g.stop()


@pytest.fixture
def client(gateway, proxy):
    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def upstream_hits(proxy, upstream, mode: str = "regular") -> list[str]:
    """What passed through the proxy (in this mode) to `upstream` (a double, or its base URL)."""
    origin = getattr(upstream, "base", upstream).removeprefix("http://")
    return [line.split(" ", 1)[1] for line in proxy.seen() if line.startswith(mode + " ") and origin in line]


HELLO = [{"role": "user", "content": "hello"}]


def test_chat_stream_and_model_discovery_go_through_the_server_proxy(client, proxy, upstream):
    models = [m.id for m in client.models.list()]  # discovered from the upstream's list
    assert "up/gpt-4o-mini" in models or "gpt-4o-mini" in models, models
    assert any(h.startswith("GET ") and h.endswith("/v1/models") for h in upstream_hits(proxy, upstream)), \
        proxy.seen()
    proxy.clear()

    r = client.chat.completions.create(model="up/gpt-4o-mini", messages=HELLO)
    assert r.choices[0].message.content
    chunks = list(client.chat.completions.create(model="up/gpt-4o-mini", messages=HELLO, stream=True))
    assert any(c.choices and c.choices[0].delta.content for c in chunks)
    posts = [h for h in upstream_hits(proxy, upstream) if h.startswith("POST ") and "/v1/chat/completions" in h]
    assert len(posts) == 2  # the answer and the stream, both through the proxy (with its credentials)


def test_a_provider_with_proxy_none_goes_direct(client, proxy, upstream):
    proxy.clear()
    upstream.clear()
    r = client.chat.completions.create(model="direct/qwen3-coder-30b", messages=HELLO)
    assert r.choices[0].message.content
    assert [q for q in upstream.received() if "chat/completions" in q.get("path", "")]  # it did arrive
    assert upstream_hits(proxy, upstream) == []


def test_a_provider_socks5_proxy_is_used_for_it(client, proxy, upstream):
    proxy.clear()
    chunks = list(client.chat.completions.create(model="socks/qwen3-coder-30b", messages=HELLO, stream=True))
    assert any(c.choices and c.choices[0].delta.content for c in chunks)
    assert [h for h in upstream_hits(proxy, upstream, "socks5") if "/v1/chat/completions" in h]
    assert upstream_hits(proxy, upstream, "regular") == []


def test_subscription_token_refresh_goes_through_the_proxy(client, proxy, qwen, creds_file):
    proxy.clear()
    creds = httpx.post(f"{qwen.base}/__oauth/seed", json={"expired": True}).json()
    creds_file.write_text(json.dumps(creds))
    r = client.chat.completions.create(model="qwen/coder-model", messages=HELLO)
    assert r.choices[0].message.content
    hits = upstream_hits(proxy, qwen)
    assert any(h.startswith("POST ") and h.endswith("/api/v1/oauth2/token") for h in hits), hits
    assert any("/v1/chat/completions" in h for h in hits), hits
    assert httpx.get(f"{qwen.base}/__oauth").json()["refresh_calls"] == 1


def test_an_accounts_own_proxy_url_is_used_for_its_refresh_and_requests(client, proxy, qwen, creds_file):
    proxy.clear()
    creds = httpx.post(f"{qwen.base}/__oauth/seed", json={"expired": True}).json()
    creds_file.write_text(json.dumps({**creds, "proxy_url": proxy.socks}))
    chunks = list(client.chat.completions.create(model="qwen/coder-model", messages=HELLO, stream=True))
    assert any(c.choices and c.choices[0].delta.content for c in chunks)
    hits = upstream_hits(proxy, qwen, "socks5")
    assert any(h.endswith("/api/v1/oauth2/token") for h in hits) and any("/chat/completions" in h for h in hits)
    assert upstream_hits(proxy, qwen, "regular") == []
    assert json.loads(creds_file.read_text())["proxy_url"] == proxy.socks  # kept through the refresh


def test_code_assist_refresh_and_project_discovery_go_through_the_proxy(client, proxy, gcli, creds_file):
    proxy.clear()
    creds = httpx.post(gcli + "/__seed", json={"expired": True, "onboarded": False}).json()
    creds_file.with_name("gcli.json").write_text(json.dumps(creds))
    assert client.chat.completions.create(model="gcli/gemini-2.5-flash", messages=HELLO).choices[0].message.content
    paths = [h.split("/", 1)[1] for h in upstream_hits(proxy, gcli)]
    for step in ("token", "v1internal:loadCodeAssist", "v1internal:onboardUser", "v1internal:generateContent"):
        assert step in paths, paths


def test_a_proxy_password_the_upstream_echoes_is_redacted(client):
    r = client.chat.completions.create(model="up/gpt-4o-mini",
                                       messages=[{"role": "user", "content": f"say {PROXY_PASS}"}])
    assert PROXY_PASS not in r.choices[0].message.content
    assert "[redacted]" in r.choices[0].message.content


def test_a_proxy_refusing_the_credentials_is_a_502(client):
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="wrongpass/gpt-4o-mini", messages=HELLO)
    assert e.value.status_code == 502 and e.value.body["code"] == "proxy_unreachable"
    assert "refused the credentials (407)" in e.value.body["message"]
    assert "not-the-password" not in e.value.response.text


@pytest.mark.parametrize("provider", ["badhttp", "badsocks"])
def test_an_unreachable_proxy_is_a_502_naming_its_host_not_its_credentials(client, gateway, provider):
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model=f"{provider}/gpt-4o-mini", messages=HELLO)
    assert e.value.status_code == 502
    body = e.value.response.text
    port = next(p["proxy"] for p in gateway_cfg(gateway)["providers"] if p["id"] == provider).rsplit(":", 1)[1]
    assert f"the proxy 127.0.0.1:{port}" in body, body
    assert e.value.body["code"] == "proxy_unreachable"
    assert PROXY_PASS not in body and PROXY_PASS not in gateway.output


def gateway_cfg(gateway) -> dict:
    import yaml

    return yaml.safe_load(gateway.config_path.read_text())


def test_proxy_env_honours_https_proxy_and_no_proxy(proxy, upstream, tmp_path):
    """`proxy: env`: HTTP_PROXY for 127.0.0.1, while NO_PROXY sends `localhost` direct."""
    local = upstream.base.replace("127.0.0.1", "localhost") + "/v1"
    cfg = {"server": {"api_keys": [CLIENT_KEY], "proxy": "env"},
           "providers": [{"id": "via", "type": "openai", "base_url": upstream.base + "/v1", "api_key": UPSTREAM_KEY,
                          "models": ["gpt-4o-mini"]},
                         {"id": "nop", "type": "openai", "base_url": local, "api_key": UPSTREAM_KEY,
                          "models": ["gpt-4o-mini"]}]}
    env = {"HTTP_PROXY": proxy.http, "HTTPS_PROXY": proxy.http, "NO_PROXY": "localhost"}
    saved = {k: os.environ.get(k) for k in (*env, "http_proxy", "https_proxy", "no_proxy")}
    os.environ.update(env)  # for the gateway process only: the test's own clients go direct
    for k in ("http_proxy", "https_proxy", "no_proxy"):
        os.environ.pop(k, None)
    try:
        g = Gateway(cfg, tmp_path / "proxy.yaml")
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    try:
        proxy.clear()
        c = openai.OpenAI(base_url=g.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)
        assert c.chat.completions.create(model="via/gpt-4o-mini", messages=HELLO).choices[0].message.content
        assert len(upstream_hits(proxy, upstream)) == 1
        assert c.chat.completions.create(model="nop/gpt-4o-mini", messages=HELLO).choices[0].message.content
        assert not [line for line in proxy.seen() if "localhost" in line]
        assert len(upstream_hits(proxy, upstream)) == 1
    finally:
        g.stop()


def test_login_goes_through_the_given_proxy(proxy, qwen, tmp_path):
    path = tmp_path / "oauth_creds.json"
    proxy.clear()
    p = Proc([str(BIN / "llmgate"), "login", "qwen", "--credentials", str(path), "--no-browser", "--timeout", "30",
              "--device-url", f"{qwen.base}/api/v1/oauth2/device/code", "--token-url", f"{qwen.base}/api/v1/oauth2/token",
              "--proxy", proxy.http])
    user_code = p.wait_for(r"confirm the code (\S+)\.").group(1).rstrip(".")
    httpx.post(f"{qwen.base}/__oauth/approve", params={"user_code": user_code}).raise_for_status()
    assert p.p.wait(30) == 0, p.output
    assert json.loads(path.read_text())["access_token"]
    hits = upstream_hits(proxy, qwen)
    assert any(h.endswith("/device/code") for h in hits) and any(h.endswith("/oauth2/token") for h in hits), hits


def test_login_through_an_unreachable_proxy_fails_cleanly(qwen, tmp_path):
    bad = f"socks5://{PROXY_USER}:{PROXY_PASS}@127.0.0.1:{closed_port()}"
    p = Proc([str(BIN / "llmgate"), "login", "qwen", "--credentials", str(tmp_path / "c.json"), "--no-browser",
              "--device-url", f"{qwen.base}/api/v1/oauth2/device/code", "--proxy", bad])
    assert p.p.wait(30) == 1
    time.sleep(0.1)  # the output pump
    assert f"through the proxy 127.0.0.1:{bad.rsplit(':', 1)[1]}" in p.output, p.output
    assert "Traceback" not in p.output and PROXY_PASS not in p.output
