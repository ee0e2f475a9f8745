"""A `credentials:` glob on several hosts (server.state): three gateway processes, each with its
own empty folder (no credentials file anywhere), a real redis-server and the strict Qwen OAuth
double. Accounts go in and out with the installed `llmgate credentials import|remove` on one
host; the others serve what the shared store lists within its cadence (fleet.READ_EVERY)."""

import json
import time

import httpx
import pytest

from llmgate.credentials import fleet
from tests.e2e.conftest import CLIENT_KEY
from tests.e2e.test_fleet_credentials import control, host_config, llmgate, start_hosts
from tests.harness import Gateway

CADENCE = 3 * fleet.READ_EVERY  # the most a test waits for every host to have read the store


@pytest.fixture(scope="module")
def hosts(qwen, redis, tmp_path_factory):
    folders = [tmp_path_factory.mktemp(f"glob-host{i}") for i in range(3)]
    yield from start_hosts(qwen, redis, folders, credentials="*.json")


def ask(gateway) -> httpx.Response:
    return httpx.post(gateway.base + "/v1/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                      json={"model": "coder-model", "messages": [{"role": "user", "content": "hello there"}]})


def bearers(qwen) -> list[str]:
    return [r["headers"]["authorization"].removeprefix("Bearer ")
            for r in httpx.get(f"{qwen.base}/__requests").json() if r["path"] == "/v1/chat/completions"]


def import_account(qwen, host, name: str, creds: dict | None = None) -> dict:
    """`llmgate credentials import qwen --file <name>.json` on `host`: the file names the account."""
    folder = host[0]
    creds = creds or control(qwen, "/seed", json={"expired": False})
    path = folder / "logins" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(creds))
    done = llmgate("credentials", "import", "qwen", "--file", str(path), "--config", str(folder / "proxy.yaml"))
    assert done.returncode == 0, done.stderr
    return creds


def serves_all(qwen, gateway, tokens: set[str]) -> bool:
    """Whether a round of requests through `gateway` answers and uses exactly `tokens`."""
    httpx.delete(f"{qwen.base}/__requests")
    answers = [ask(gateway) for _ in range(2 * len(tokens))]
    return all(a.status_code == 200 for a in answers) and set(bearers(qwen)) == tokens


def wait_until(check, what: str) -> None:
    deadline = time.monotonic() + CADENCE
    while not check():
        assert time.monotonic() < deadline, f"not within {CADENCE:g} s: {what}"
        time.sleep(0.5)


def test_accounts_imported_on_one_host_serve_on_every_host_and_a_removed_one_nowhere(qwen, redis, hosts, tmp_path):
    control(qwen, "/reset")
    a, b, c = hosts
    for _, g in hosts:  # no file anywhere, nothing in the store: each says what to do
        none = ask(g)
        assert none.status_code == 503, none.text
        assert none.json()["error"]["code"] == "provider_login_required"
        assert "llmgate credentials import qwen" in none.json()["error"]["message"]
    alice, bob = import_account(qwen, a, "alice"), import_account(qwen, a, "bob")
    both = {alice["access_token"], bob["access_token"]}
    for _, g in (b, c):
        wait_until(lambda g=g: serves_all(qwen, g, both), "a host with no files serves both accounts")
    joining = Gateway(host_config(qwen, tmp_path, redis.url, credentials="*.json"), tmp_path / "proxy.yaml")
    try:  # a host joining the fleet reads the list as it starts: its first request is served
        joining.wait_for(r"provider 'qwen': the shared store lists 2 account\(s\): alice, bob")
        assert ask(joining).status_code == 200
    finally:
        joining.stop()

    # alice's tokens die (a new import, then refused by the issuer): B's requests fail over to bob
    import_account(qwen, a, "alice", {"access_token": "dead-access", "refresh_token": "dead-refresh",
                                      "expiry_date": int((time.time() + 3600) * 1000)})
    httpx.delete(f"{qwen.base}/__requests")

    def alice_dead_on_b() -> bool:
        answers = [ask(b[1]) for _ in range(2)]
        assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
        return "dead-access" in bearers(qwen)

    wait_until(alice_dead_on_b, "B uses the new import, and fails over to bob when it is refused")
    assert bearers(qwen)[-1] == bob["access_token"]
    assert control(qwen, "")["refresh_failures"] >= 1

    # alice logs in again; bob is removed on C: after the cadence no host uses bob
    alice = import_account(qwen, a, "alice")
    done = llmgate("credentials", "remove", "qwen", "bob", "--config", str(c[0] / "proxy.yaml"))
    assert done.returncode == 0 and "Removed account bob" in done.stdout, done.stderr
    for _, g in hosts:
        wait_until(lambda g=g: serves_all(qwen, g, {alice["access_token"]}), "bob is gone from every host")
    httpx.delete(f"{qwen.base}/__requests")
    for _ in range(3):
        assert all(ask(g).status_code == 200 for _, g in hosts)
    assert bob["access_token"] not in bearers(qwen)
    for _, g in hosts:
        assert bob["refresh_token"] not in g.output and "Traceback" not in g.output


def test_a_file_on_one_hosts_disk_serves_everywhere_unless_its_account_was_removed(qwen, hosts):
    control(qwen, "/reset")
    a, b, c = hosts
    alice = import_account(qwen, a, "alice")
    done = llmgate("credentials", "remove", "qwen", "dave", "--config", str(a[0] / "proxy.yaml"))
    assert done.returncode == 0, done.stderr
    carol, dave = control(qwen, "/seed", json={"expired": False}), control(qwen, "/seed", json={"expired": False})
    for (folder, _), name, creds in ((c, "carol", carol), (b, "dave", dave)):
        (folder / "qwen").mkdir(exist_ok=True)
        (folder / "qwen" / f"{name}.json").write_text(json.dumps(creds))
    wanted = {alice["access_token"], carol["access_token"]}
    # C offers its file when it next serves the entry; then A and B list carol; dave, removed,
    # serves nowhere, not even on B, where his file is
    for _, g in (c, a, b):
        wait_until(lambda g=g: serves_all(qwen, g, wanted), "C's file serves on every host, B's removed one nowhere")
