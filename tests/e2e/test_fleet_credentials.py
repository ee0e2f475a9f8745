"""Subscription credentials on several hosts (server.state): three gateway processes, each
with its own folder (no shared files), a real redis-server, and the strict Qwen OAuth double
that rotates refresh tokens and refuses a reused one. Credentials go in and out with the
installed `llmgate credentials import|export`."""

import asyncio
import json
import os
import stat
import subprocess
import time

import httpx
import openai
import pytest

from llmgate.credentials import fleet
from tests.e2e.conftest import CLIENT_KEY
from tests.harness import BIN, Gateway

HELLO = [{"role": "user", "content": "hello there"}]


def control(qwen, path: str, **kw) -> dict:
    r = httpx.request("POST" if path else "GET", f"{qwen.base}/__oauth{path}", **kw)
    r.raise_for_status()
    return r.json()


def llmgate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "llmgate"), *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def host_config(qwen, folder, state: str | None, pid: str = "qwen", credentials: str = "oauth_creds.json") -> dict:
    """`credentials`: the file (or glob) in the host's folder qwen/."""
    server = {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 20}}
    return {
        "server": {**server, "state": state} if state else server,
        "providers": [{"id": pid, "type": "qwen", "base_url": qwen.base + "/v1",
                       "token_url": qwen.base + "/api/v1/oauth2/token",
                       "credentials": str(folder / "qwen" / credentials)}],
    }


def start_hosts(qwen, redis, folders, **config):
    """A module's three hosts (a fixture yields from it): each folder's gateway on the shared store."""
    gateways = [Gateway(host_config(qwen, f, redis.url, **config), f / "proxy.yaml") for f in folders]
    yield list(zip(folders, gateways, strict=True))
    for g in gateways:
        g.stop()


@pytest.fixture(scope="module")
def hosts(qwen, redis, tmp_path_factory):
    yield from start_hosts(qwen, redis, [tmp_path_factory.mktemp(f"host{i}") for i in range(3)])


def import_login(qwen, folder, expired: bool, **extra) -> dict:
    """A fresh Qwen Code login on one host, imported with the installed command."""
    creds = {**control(qwen, "/seed", json={"expired": expired}), **extra}
    path = folder / "login.json"
    path.write_text(json.dumps(creds))
    done = llmgate("credentials", "import", "qwen", "--file", str(path), "--config", str(folder / "proxy.yaml"))
    assert done.returncode == 0, done.stderr
    assert creds["refresh_token"] not in done.stdout + done.stderr  # no secret on the terminal
    return creds


def export(folder, path) -> dict:
    done = llmgate("credentials", "export", "qwen", "--file", str(path), "--config", str(folder / "proxy.yaml"))
    assert done.returncode == 0, done.stderr
    return json.loads(path.read_text())


async def ask_all(gateways, per_host: int) -> list:
    clients = [openai.AsyncOpenAI(base_url=g.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=60)
               for g in gateways]
    try:
        return await asyncio.gather(*(c.chat.completions.create(model="coder-model", messages=HELLO)
                                      for c in clients for _ in range(per_host)))
    finally:
        for c in clients:
            await c.close()


def bearer_seen(qwen) -> set[str]:
    return {r["headers"]["authorization"] for r in httpx.get(f"{qwen.base}/__requests").json()
            if r["path"] == "/v1/chat/completions"}


def test_three_hosts_fifty_requests_each_on_an_expired_token_refresh_once(qwen, hosts, tmp_path):
    control(qwen, "/reset")
    import_login(qwen, hosts[0][0], expired=True)
    control(qwen, "/config", json={"refresh_delay": 0.5})  # every request arrives while the refresh runs
    try:
        answers = asyncio.run(ask_all([g for _, g in hosts], 50))
    finally:
        control(qwen, "/config", json={"refresh_delay": 0})
    assert [a.choices[0].message.content for a in answers] == ["Echo: hello there"] * 150
    issuer = control(qwen, "")
    assert issuer["refresh_calls"] == 1 and issuer["refresh_failures"] == 0
    # the rotated tokens are in the store (read back through another host's config)...
    stored = export(hosts[2][0], tmp_path / "exported.json")
    assert stored["refresh_token"] == issuer["current_refresh_token"]
    # ...and they are what every host uses next
    httpx.delete(f"{qwen.base}/__requests")
    asyncio.run(ask_all([g for _, g in hosts], 1))
    assert bearer_seen(qwen) == {"Bearer " + stored["access_token"]}


def test_a_new_login_imported_on_one_host_is_used_by_all(qwen, hosts):
    control(qwen, "/reset")  # every earlier token is dead at the double
    creds = import_login(qwen, hosts[1][0], expired=False)
    httpx.delete(f"{qwen.base}/__requests")
    # each host still holds its earlier copy for a while; a 401 makes it read the store again
    answers = asyncio.run(ask_all([g for _, g in hosts], 2))
    assert all(a.choices[0].message.content == "Echo: hello there" for a in answers)
    assert "Bearer " + creds["access_token"] in bearer_seen(qwen)
    assert control(qwen, "")["refresh_calls"] == 0  # the new login was used, not refreshed


def test_export_writes_the_clis_file_atomically_0600_keeping_its_fields(qwen, hosts, tmp_path):
    folder = hosts[0][0]
    creds = import_login(qwen, folder, expired=False, id_token="kept-in-store")
    target = tmp_path / "qwen" / "oauth_creds.json"
    target.parent.mkdir()
    target.write_text(json.dumps({"refresh_token": "old", "cli_only": {"x": 1}}))
    os.chmod(target, 0o644)
    on_disk = export(folder, target)
    assert on_disk["refresh_token"] == creds["refresh_token"] and on_disk["id_token"] == "kept-in-store"
    assert on_disk["cli_only"] == {"x": 1}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["oauth_creds.json"]  # no temp file left


def test_credentials_commands_explain_what_is_missing(qwen, redis, tmp_path):
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "proxy.yaml").write_text(json.dumps(host_config(qwen, alone, None)))
    done = llmgate("credentials", "export", "qwen", "--config", str(alone / "proxy.yaml"))
    assert done.returncode == 1 and "sets no server.state" in done.stderr and "Traceback" not in done.stderr
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "proxy.yaml").write_text(json.dumps(host_config(qwen, shared, redis.url, pid="qwen-new")))
    done = llmgate("credentials", "export", "qwen-new", "--config", str(shared / "proxy.yaml"))
    assert done.returncode == 1 and "holds no credentials" in done.stderr
    (shared / "x.json").write_text("[]")
    done = llmgate("credentials", "import", "qwen-new", "--file", str(shared / "x.json"),
                   "--config", str(shared / "proxy.yaml"))
    assert done.returncode == 1 and "no credentials in it" in done.stderr and "Traceback" not in done.stderr


def test_redis_away_and_back_empty_costs_no_request_and_no_login(qwen, redis, hosts):
    """Last in this module: it restarts the module's Redis."""
    control(qwen, "/reset")
    creds = import_login(qwen, hosts[0][0], expired=False)
    gateways = [g for _, g in hosts]
    asyncio.run(ask_all(gateways, 1))  # every host holds the login now
    redis.stop()
    try:
        answers = asyncio.run(ask_all(gateways, 5))
    finally:
        redis.start()  # empty: no persistence
    assert [a.choices[0].message.content for a in answers] == ["Echo: hello there"] * 15
    deadline = time.monotonic() + 4 * fleet.READ_EVERY
    while (back := asyncio.run(_stored(redis.url))) is None and time.monotonic() < deadline:
        asyncio.run(ask_all(gateways, 1))  # a host notices when it next reads the store
        time.sleep(0.5)
    assert back == creds  # written back from a host's copy
    assert control(qwen, "")["refresh_calls"] == 0


async def _stored(url: str) -> dict | None:
    store = fleet.cli_state(url)
    try:
        return await fleet.export_credentials(store, "qwen", "oauth_creds")
    finally:
        await store.client.aclose()
