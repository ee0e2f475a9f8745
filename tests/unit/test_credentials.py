"""llmgate.credentials: the file handling a gateway and a coding CLI share."""

import asyncio
import json
import os
import time

import pytest
from llmgate.credentials import CredentialsFile, FileLock, LoginRequired, write_atomic


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
