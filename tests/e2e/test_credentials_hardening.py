"""Nothing lost (issue 12): a real gateway process, killed with SIGKILL at chosen moments of a
refresh, against the Qwen OAuth double (rotating refresh tokens), served in-process so the test
can hold the token endpoint's answer after the rotation and be told when it happened."""

import asyncio
import json
import threading
import time

import httpx
import pytest
from aiohttp import web

from tests.e2e.conftest import CLIENT_KEY
from tests.harness import Gateway
from tests.unwritable import immutable
from tests.upstreams import qwen_portal
from tests.upstreams.serving import ServerThread

HELLO = {"model": "coder-model", "messages": [{"role": "user", "content": "hello"}]}


class HeldQwen:
    """The Qwen double; with `hold` set, a refresh grant's answer waits (the rotation is already
    done) until `release`, and `rotated` tells the test the moment the old token died."""

    def __init__(self):
        self.hold = False
        self.rotated, self.release = threading.Event(), threading.Event()

        @web.middleware
        async def gate(request, handler):
            response = await handler(request)
            if self.hold and request.path == "/api/v1/oauth2/token" and response.status == 200:
                self.rotated.set()
                while not self.release.is_set():
                    await asyncio.sleep(0.01)
            return response

        app = qwen_portal.make_app(None, ["coder-model"], options=qwen_portal.QwenOptions())
        app.middlewares.insert(0, gate)
        self._server = ServerThread(app)
        self.base = self._server.__enter__()

    def oauth(self, path: str = "", **kw) -> dict:
        r = httpx.request("POST" if path else "GET", f"{self.base}/__oauth{path}", **kw)
        r.raise_for_status()
        return r.json()

    def stop(self) -> None:
        self.release.set()
        self._server.__exit__(None, None, None)


@pytest.fixture
def qwen():
    q = HeldQwen()
    yield q
    q.stop()


@pytest.fixture
def setup(qwen, tmp_path):
    """(credentials file seeded with an expired access token, gateway starter)."""
    path = tmp_path / "qwen" / "oauth_creds.json"
    path.parent.mkdir()
    path.write_text(json.dumps(qwen.oauth("/seed", json={"expired": True})))
    cfg = {"server": {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 10}},
           "providers": [{"id": "qwen", "type": "qwen", "base_url": qwen.base + "/v1",
                          "token_url": qwen.base + "/api/v1/oauth2/token", "credentials": str(path)}]}
    started: list[Gateway] = []

    def start() -> Gateway:
        started.append(Gateway(cfg, tmp_path / "proxy.yaml"))
        return started[-1]

    yield path, start
    for g in started:
        g.stop()


def chat(gw: Gateway, timeout: float = 20) -> httpx.Response:
    return httpx.post(gw.base + "/v1/chat/completions", json=HELLO, timeout=timeout,
                      headers={"Authorization": f"Bearer {CLIENT_KEY}"})


def chat_until_killed(gw: Gateway) -> None:
    with pytest.raises(httpx.HTTPError):
        chat(gw, timeout=30)


def kill9(gw: Gateway) -> None:
    gw.p.kill()
    gw.p.wait()


def test_killed_after_the_answer_arrived_a_restart_uses_the_journalled_tokens(qwen, setup):
    path, start = setup
    with immutable(path):  # the answer arrives but cannot reach the file: the moment to die is ours
        gw = start()
        r = chat(gw)
        assert r.status_code == 200, r.text  # served from memory
        line = gw.wait_for(r".*cannot write the refreshed tokens.*").group(0)
        assert str(path) in line and "Operation not permitted" in line
        kill9(gw)
    st = qwen.oauth()
    assert st["refresh_calls"] == 1
    assert json.loads(path.read_text())["refresh_token"] not in st["valid_refresh_tokens"]  # dead on disk
    assert st["current_refresh_token"] not in gw.output and st["valid_access_tokens"][0] not in gw.output

    gw = start()
    assert chat(gw).status_code == 200
    on_disk = json.loads(path.read_text())  # the journal reached the file on first use
    assert on_disk["refresh_token"] == st["current_refresh_token"]
    qwen.oauth("/expire_access")  # the next request gets a 401, refreshes with the journalled token
    assert chat(gw).status_code == 200
    after = qwen.oauth()
    assert (after["refresh_calls"], after["refresh_failures"]) == (2, 0)
    assert json.loads(path.read_text())["refresh_token"] == after["current_refresh_token"]
    assert not list((path.parent.parent / "llmgate-credentials").glob("*.json"))


def test_killed_before_the_answer_arrived_the_restart_says_login_at_once(qwen, setup):
    """The window no client can close: the issuer rotated, the answer never reached us. The dead
    process's lock must not cost the next one LOCK_STALE (10 s), and the error says what to do."""
    path, start = setup
    qwen.hold = True
    gw = start()
    threading.Thread(target=chat_until_killed, args=(gw,), daemon=True).start()
    assert qwen.rotated.wait(20)
    kill9(gw)
    assert path.with_suffix(".lock").exists()  # left behind by the dead process
    qwen.hold = False
    qwen.release.set()

    gw = start()
    r = chat(gw, timeout=5)  # under LOCK_STALE: a lock judged by age alone would time this out
    assert r.status_code == 503
    error = r.json()["error"]
    assert error["code"] == "provider_login_required" and f"--credentials {path}" in error["message"]
    assert not path.with_suffix(".lock").exists()
    assert "Traceback" not in gw.output


def test_a_read_only_folder_without_any_lock_is_a_503_in_the_callers_format(qwen, setup, tmp_path):
    path, start = setup
    own = tmp_path / "llmgate-credentials"  # the gateway's own folder, beside its state file
    own.mkdir()
    gw = start()
    with immutable(path.parent), immutable(own):
        r = httpx.post(gw.base + "/v1/messages", timeout=20,
                       json={"model": "coder-model", "max_tokens": 50, "messages": HELLO["messages"]},
                       headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"})
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["type"] == "error" and str(path.parent) in body["error"]["message"]
        assert "writable" in body["error"]["message"]
        assert qwen.oauth()["refresh_calls"] == 0  # no refresh without a lock
    with immutable(path.parent):  # the gateway's folder is back: refreshed under its lock there
        assert chat(gw).status_code == 200
        assert json.loads(path.read_text())["refresh_token"] not in qwen.oauth()["valid_refresh_tokens"]
    current = qwen.oauth()["current_refresh_token"]
    for _ in range(50):  # the file catches up at the first request after the retry backoff (1 s)
        assert chat(gw).status_code == 200
        if json.loads(path.read_text())["refresh_token"] == current:
            break
        time.sleep(0.1)
    assert json.loads(path.read_text())["refresh_token"] == current
    assert qwen.oauth()["refresh_calls"] == 1
    assert "Traceback" not in gw.output
