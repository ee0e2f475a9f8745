"""llmgate.credentials.store: the file handling a gateway and a coding CLI share."""

import asyncio
import json
import logging
import os
import socket
import subprocess
import time
from types import SimpleNamespace

import pytest

from llmgate.credentials import store as credentials
from llmgate.credentials.accounts import OAuthAccount
from llmgate.credentials.store import CredentialsFile, FileLock, LoginRequired, RefreshFailed, write_atomic
from llmgate.errors import GatewayError
from tests.unwritable import fill, immutable, small_disk


def creds(path, **kw):
    data = {"access_token": "old", "refresh_token": "r1", "expiry_date": int((time.time() - 60) * 1000), **kw}
    write_atomic(path, data)
    return data


def test_write_atomic_keeps_mode_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "d" / "c.json"
    write_atomic(path, {"a": 1})
    write_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert os.listdir(path.parent) == ["c.json"]


def test_refresh_merges_and_is_single_flight(tmp_path):
    path = tmp_path / "c.json"
    creds(path, custom="kept")
    calls = []

    async def refresh(data):
        calls.append(data["refresh_token"])
        await asyncio.sleep(0.05)
        return {"access_token": "new", "refresh_token": "r2", "expiry_date": int((time.time() + 3600) * 1000)}

    f = CredentialsFile(path, "llmgate login qwen")

    async def many():
        return await asyncio.gather(*(f.access(refresh) for _ in range(20)))

    results = asyncio.run(many())
    assert calls == ["r1"]
    assert all(r["access_token"] == "new" for r in results)
    assert json.loads(path.read_text()) == {**results[0], "custom": "kept"}
    assert not path.with_suffix(".lock").exists()


def test_a_401_for_a_token_already_replaced_refreshes_nothing(tmp_path):
    """Two requests refused with the same token: the first refreshes; the second, whose 401 comes
    after that, is given the new token (it names the token it was refused with) rather than
    rotating the refresh token once more. Through OAuthAccount.token, which remembers per task
    the token each request was given."""
    path = tmp_path / "c.json"
    creds(path, expiry_date=int((time.time() + 3600) * 1000))
    calls = []

    async def refresh(data):
        calls.append(data["refresh_token"])
        n = len(calls) + 1
        return {"access_token": f"t{n}", "refresh_token": f"r{n}", "expiry_date": int((time.time() + 3600) * 1000)}

    account = OAuthAccount.__new__(OAuthAccount)
    account.creds, account.refresh = CredentialsFile(path, "llmgate login qwen"), refresh
    account.p, account.name = SimpleNamespace(id="q"), "q"

    async def request(gate: asyncio.Event | None) -> str:
        assert (await account.token())["access_token"] == "old"  # both requests are sent with it
        if gate is not None:
            await gate.wait()  # its 401 arrives after the other request's refresh
        return (await account.token(force=True))["access_token"]

    async def both() -> list[str]:
        gate = asyncio.Event()
        first = asyncio.ensure_future(request(None))
        second = asyncio.ensure_future(request(gate))
        done = await first
        gate.set()
        return [done, await second]

    assert asyncio.run(both()) == ["t2", "t2"]
    assert calls == ["r1"]
    assert asyncio.run(account.creds.access(refresh, True, "t2"))["access_token"] == "t3"  # refused itself


def test_refused_refresh_needs_login_until_the_file_changes(tmp_path):
    path = tmp_path / "c.json"
    creds(path)
    f = CredentialsFile(path, "llmgate login qwen --credentials x")

    async def refused(data):
        raise LoginRequired("invalid_grant")

    with pytest.raises(LoginRequired, match="Log in again: llmgate login qwen --credentials x"):
        asyncio.run(f.access(refused))
    with pytest.raises(LoginRequired):  # remembered: no second call
        asyncio.run(f.access(refused))
    time.sleep(0.01)
    creds(path, access_token="fresh", expiry_date=int((time.time() + 3600) * 1000))  # a new login
    assert asyncio.run(f.access(refused))["access_token"] == "fresh"


def test_a_stale_lock_from_a_dead_process_is_broken(tmp_path):
    lock = tmp_path / "c.lock"
    lock.write_text("dead")
    old = time.time() - 60
    os.utime(lock, (old, old))

    async def take():
        async with FileLock(lock):
            assert lock.read_text() != "dead"

    asyncio.run(asyncio.wait_for(take(), 2))
    assert not lock.exists()


def test_expiry_is_in_milliseconds(tmp_path):
    path = tmp_path / "c.json"
    creds(path, expiry_date=int((time.time() + 3600) * 1000))
    f = CredentialsFile(path, "")
    f.reload_if_changed()
    assert f.fresh() and 3500 < f.expires_at() - time.time() < 3700


# --- nothing lost (issue 12) -------------------------------------------------------------

class Issuer:
    """A token endpoint with rotating refresh tokens: each token works once."""

    def __init__(self):
        self.valid, self.sent, self.n = {"r1"}, [], 1

    async def __call__(self, data):
        token = data["refresh_token"]
        self.sent.append(token)
        if token not in self.valid:
            raise LoginRequired("invalid_grant")
        self.valid.discard(token)
        self.n += 1
        self.valid.add(f"r{self.n}")
        return {"access_token": f"a{self.n}", "refresh_token": f"r{self.n}",
                "expiry_date": int((time.time() + 3600) * 1000)}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def on_disk(path):
    return json.loads(path.read_text())["refresh_token"]


def test_tokens_the_file_cannot_take_stay_in_use_and_are_written_later(tmp_path, caplog):
    path, journal = tmp_path / "c.json", tmp_path / "gw"
    creds(path, custom="kept")
    issuer, clock = Issuer(), Clock()
    f = CredentialsFile(path, "llmgate login qwen", journal_dir=journal, clock=clock)
    with immutable(path):  # the lock can be taken, the rename over the file cannot
        with caplog.at_level(logging.INFO, logger="llmgate"):
            assert asyncio.run(f.access(issuer))["access_token"] == "a2"
        assert on_disk(path) == "r1"
        (err,) = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert str(path) in err.getMessage() and "Operation not permitted" in err.getMessage()
        assert "r2" not in caplog.text and "a2" not in caplog.text  # never a token in the log
        assert asyncio.run(f.access(issuer, force=True))["access_token"] == "a3"  # after a 401
        assert issuer.sent == ["r1", "r2"]  # the rotated token was never sent again
        clock.now = 1e6
        assert asyncio.run(f.access(issuer))["refresh_token"] == "r3"  # retry fails again: still kept
        assert list(journal.glob("*.json"))
    clock.now = 2e6
    asyncio.run(f.access(issuer))  # writable again: the retry writes the file
    assert json.loads(path.read_text()) | {"expiry_date": 0} == {
        "access_token": "a3", "refresh_token": "r3", "custom": "kept", "expiry_date": 0}
    assert not list(journal.glob("*.json"))
    assert issuer.sent == ["r1", "r2"]


def test_a_full_disk_keeps_the_tokens_and_the_write_follows_when_space_is_back(tmp_path):
    folder, journal = tmp_path / "full", tmp_path / "gw"
    issuer, clock = Issuer(), Clock()
    with small_disk(folder):
        path = folder / "c.json"
        creds(path)
        fill(folder / "filler")
        f = CredentialsFile(path, "", journal_dir=journal, clock=clock)
        assert asyncio.run(f.access(issuer))["refresh_token"] == "r2"  # the lock went to the gateway's folder
        assert on_disk(path) == "r1" and list(journal.glob("*.json"))
        (folder / "filler").unlink()
        clock.now = 1e6
        asyncio.run(f.access(issuer))
        assert on_disk(path) == "r2" and not list(journal.glob("*.json"))
        assert sorted(os.listdir(folder)) == ["c.json"]  # no temp file or empty lock left behind


def test_a_restart_takes_the_journalled_tokens_while_the_file_has_the_replaced_ones(tmp_path):
    path, journal = tmp_path / "c.json", tmp_path / "gw"
    creds(path)
    issuer = Issuer()
    with immutable(path):
        asyncio.run(CredentialsFile(path, "", journal_dir=journal).access(issuer))
        after_restart = CredentialsFile(path, "", journal_dir=journal)  # the process died; a new one
        assert asyncio.run(after_restart.access(issuer))["refresh_token"] == "r2"
    assert asyncio.run(after_restart.access(issuer, force=True))["refresh_token"] == "r3"
    assert issuer.sent == ["r1", "r2"] and on_disk(path) == "r3"
    assert not list(journal.glob("*.json"))


def test_a_journal_loses_to_a_new_login(tmp_path):
    path, journal = tmp_path / "c.json", tmp_path / "gw"
    creds(path)
    with immutable(path):
        asyncio.run(CredentialsFile(path, "", journal_dir=journal).access(Issuer()))
    creds(path, access_token="login", refresh_token="r-login", expiry_date=int((time.time() + 3600) * 1000))
    f = CredentialsFile(path, "", journal_dir=journal)
    assert asyncio.run(f.access(Issuer()))["refresh_token"] == "r-login"
    assert not list(journal.glob("*.json"))


def test_an_unwritable_folder_refreshes_under_the_gateways_own_lock(tmp_path):
    path, journal = tmp_path / "ro" / "c.json", tmp_path / "gw"
    creds(path)
    issuer = Issuer()
    f = CredentialsFile(path, "", journal_dir=journal)
    with immutable(path.parent):
        assert asyncio.run(f.access(issuer))["refresh_token"] == "r2"
        assert on_disk(path) == "r1" and os.listdir(path.parent) == ["c.json"]
    assert not list(journal.glob("*.lock"))


@pytest.mark.parametrize("own_folder", [False, True])
def test_without_any_lock_the_account_answers_503_naming_the_folder(tmp_path, own_folder):
    path = tmp_path / "ro" / "c.json"
    creds(path)
    p = SimpleNamespace(id="qwen", token_url=None)
    account = OAuthAccount(p, SimpleNamespace(pool=SimpleNamespace(store=None)), path, None, "qwen")
    if own_folder:  # the gateway's own folder cannot be made either
        account.creds.journal_dir = path.parent / "gw"
    with immutable(path.parent), pytest.raises(GatewayError) as e:
        asyncio.run(account.token())
    assert e.value.status == 503 and e.value.code == "provider_credentials_unwritable"
    assert str(path.parent) in e.value.message and "writable" in e.value.message


def test_a_symlinked_file_is_written_through_and_stays_a_link(tmp_path):
    target = tmp_path / "real" / "creds.json"
    creds(target)
    link = tmp_path / "home" / "oauth_creds.json"
    link.parent.mkdir()
    link.symlink_to(target)
    asyncio.run(CredentialsFile(link, "").access(Issuer()))
    assert link.is_symlink() and on_disk(target) == "r2"
    assert os.listdir(target.parent) == ["creds.json"] and os.listdir(link.parent) == ["oauth_creds.json"]


def test_a_lock_whose_owner_died_is_taken_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(credentials, "LOCK_WAIT", 0.0)  # no waiting: a lock not broken fails
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock = tmp_path / "c.lock"
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "start": "1", "id": "x"}))

    async def take():
        async with FileLock(lock):
            assert json.loads(lock.read_text())["pid"] == os.getpid()

    asyncio.run(take())
    assert not lock.exists()


@pytest.mark.parametrize("owner", ["qwen-code", "alive", "pid-0"])
def test_a_fresh_lock_of_a_live_or_unknown_owner_is_respected(tmp_path, monkeypatch, owner):
    monkeypatch.setattr(credentials, "LOCK_WAIT", 0.0)
    content = {
        "qwen-code": "0b7d1c6e-6a3e-4f7e-9d1a-2f8c9e0a1b2c",  # Qwen Code's own lock: judged by age only
        "alive": json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "start": credentials._start_time(os.getpid())}),
        "pid-0": json.dumps({"pid": 0, "host": socket.gethostname()}),  # never signal a process group
    }[owner]
    lock = tmp_path / "c.lock"
    lock.write_text(content)

    async def take():
        async with FileLock(lock):
            pass

    with pytest.raises(RefreshFailed, match="stayed locked"):
        asyncio.run(take())
    assert lock.read_text() == content


def test_a_huge_file_is_not_read_into_memory(tmp_path):
    path = tmp_path / "c.json"
    path.write_bytes(b" " * (credentials.MAX_FILE + 1))
    f = CredentialsFile(path, "")
    f.reload_if_changed()
    assert "larger than" in f.needs_login
