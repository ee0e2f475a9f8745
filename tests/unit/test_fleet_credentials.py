"""Fleet credentials (credentials/fleet.py) over the shared state's fenced locks and values:
Redis through SharedFences (a real redis-server), and the SQLite backend (llmgate.state.local),
whose lock expiry follows an injected clock: the lapsed-lock cases run there (Redis expires
keys by its own clock). The issuer is a small double that rotates refresh tokens like Qwen's."""

import asyncio
import itertools
import json
import time

import pytest
import redis.asyncio as aioredis

from llmgate.credentials import fleet
from llmgate.credentials.store import CredentialsFile, LoginRequired, RefreshFailed
from llmgate.state.local import LocalState
from tests.services import redis_server

T0 = 1_900_000_000.0


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Issuer:
    """A token endpoint: a used refresh token is dead (rotate=True, like Qwen's)."""

    def __init__(self, rotate: bool = True):
        self.rotate = rotate
        self.current = "rt-0"
        self.calls = 0
        self.serial = itertools.count(1)
        self.gate: asyncio.Event | None = None  # set: the call waits for it before reaching the issuer

    def seed(self) -> dict:
        return {"access_token": "at-0", "refresh_token": self.current, "expiry_date": 1000, "custom": "kept"}

    async def refresh(self, data: dict) -> dict:
        if self.gate is not None:
            await self.gate.wait()
        self.calls += 1
        await asyncio.sleep(0)  # concurrent callers get in while this one runs
        if data.get("refresh_token") != self.current:
            raise LoginRequired("invalid_grant")
        n = next(self.serial)
        if self.rotate:
            self.current = f"rt-{n}"
        return {"access_token": f"at-{n}", "refresh_token": self.current,
                "expiry_date": int((time.time() + 3600) * 1000)}


@pytest.fixture(scope="module")
def redis_url():
    with redis_server() as r:
        yield r.url


@pytest.fixture
def local_backend(tmp_path):
    """A factory of connections to one shared store (each 'host' makes its own); lock expiry
    follows the injected clock."""
    clock = Clock()
    return (lambda: LocalState(tmp_path / "state.sqlite", clock=clock)), clock


@pytest.fixture(params=["redis", "sqlite"])
def backend(request, tmp_path):
    if request.param == "sqlite":
        return request.getfixturevalue("local_backend")
    url = request.getfixturevalue("redis_url")
    asyncio.run(aioredis.from_url(url).flushdb())
    return (lambda: fleet.SharedFences(aioredis.from_url(url))), None


def host(state, tmp_path, name: str, issuer_clock: Clock | None = None,
         account: str = "oauth_creds") -> fleet.FleetCredentials:
    """One gateway host's view of an account of provider 'qwen' (its own folders)."""
    file = CredentialsFile(tmp_path / name / f"{account}.json", "qwen login", journal_dir=tmp_path / name / "j")
    return fleet.FleetCredentials(file, state, "qwen", clock=issuer_clock or Clock(0.0))


async def put(state, data: dict) -> None:
    """What `llmgate credentials import` does: under the lock, with its fence."""
    lease = await state.acquire(fleet.lock_name("qwen", "oauth_creds"), 5.0)
    assert await state.put_fenced(fleet.value_name("qwen", "oauth_creds"), json.dumps(data).encode(), lease.fence)
    await state.release(lease)


async def stored(state) -> dict:
    got = await state.get_fenced(fleet.value_name("qwen", "oauth_creds"))
    return json.loads(got[0])


def test_hosts_refresh_once_and_all_use_the_rotated_token(backend, tmp_path):
    connect, _ = backend
    issuer = Issuer()

    async def run():
        await put(connect(), issuer.seed())
        hosts = [host(connect(), tmp_path, f"h{i}") for i in range(3)]
        got = await asyncio.gather(*(h.access(issuer.refresh) for h in hosts for _ in range(20)))
        return got, await stored(connect())

    got, in_store = asyncio.run(run())
    assert issuer.calls == 1
    assert {g["access_token"] for g in got} == {"at-1"}
    assert in_store["refresh_token"] == issuer.current == "rt-1"
    assert in_store["custom"] == "kept"  # fields the gateway does not know survive


def test_a_killed_holders_lock_lapses_after_its_ttl(local_backend, tmp_path):
    connect, clock = local_backend
    issuer = Issuer()

    async def run():
        state = connect()
        await put(state, issuer.seed())
        dead = await state.acquire(fleet.lock_name("qwen", "oauth_creds"), fleet.LOCK_TTL)  # then killed
        assert dead is not None
        h = host(connect(), tmp_path, "h")
        h.lock_wait = 0
        clock.now = T0 + fleet.LOCK_TTL - 1
        with pytest.raises(RefreshFailed, match="held the refresh lock"):
            await h.access(issuer.refresh)
        assert issuer.calls == 0
        clock.now = T0 + fleet.LOCK_TTL + 1
        return await h.access(issuer.refresh), await stored(state)

    got, in_store = asyncio.run(run())
    assert issuer.calls == 1
    assert got["access_token"] == in_store["access_token"] == "at-1"


def test_a_stale_holders_older_token_is_refused_by_the_fence(local_backend, tmp_path):
    """Host A takes the lock and stalls before its refresh reaches the issuer; its lock lapses,
    host B refreshes and stores. A's answer, older, must not replace B's: A uses B's too."""
    connect, clock = local_backend
    issuer = Issuer(rotate=False)  # Google's issuer: both refreshes succeed
    started, go = asyncio.Event(), asyncio.Event()

    async def stalled(data: dict) -> dict:
        started.set()
        await go.wait()
        return await issuer.refresh(data)

    async def run():
        state = connect()
        await put(state, issuer.seed())
        a, b = host(connect(), tmp_path, "a"), host(connect(), tmp_path, "b")
        slow = asyncio.ensure_future(a.access(stalled))
        await started.wait()
        clock.now = T0 + fleet.LOCK_TTL + 1  # A's lease lapsed
        b_got = await b.access(issuer.refresh)
        go.set()
        return b_got, await slow, await stored(state)

    b_got, a_got, in_store = asyncio.run(run())
    assert issuer.calls == 2
    assert b_got["access_token"] == "at-1"
    assert a_got["access_token"] == in_store["access_token"] == "at-1"  # not A's at-2
    assert not list((tmp_path / "a" / "j").glob("*.json"))  # A's refused tokens are not pushed later


def test_an_account_missing_from_the_store_needs_an_import(backend, tmp_path):
    connect, _ = backend
    h = host(connect(), tmp_path, "h")
    with pytest.raises(LoginRequired, match="llmgate credentials import qwen"):
        asyncio.run(h.access(Issuer().refresh))


def test_a_refused_refresh_token_needs_login_until_a_new_one_is_imported(backend, tmp_path):
    connect, _ = backend
    issuer = Issuer()

    async def run():
        state = connect()
        await put(state, {**issuer.seed(), "refresh_token": "revoked"})
        h = host(connect(), tmp_path, "h")
        with pytest.raises(LoginRequired, match="invalid_grant"):
            await h.access(issuer.refresh)
        h.reload_if_changed()  # still refused: the store holds the same credentials
        assert h.needs_login
        await put(state, issuer.seed())  # a new login imported
        h._read_at = None  # as READ_EVERY later
        return await h.access(issuer.refresh)

    assert asyncio.run(run())["access_token"] == "at-1"
    assert issuer.calls == 2


def test_tokens_refreshed_while_redis_is_down_are_journalled_and_pushed_when_it_returns(tmp_path):
    issuer = Issuer()
    ticks = Clock(0.0)
    with redis_server() as r:
        def fresh_host():
            return host(fleet.SharedFences(aioredis.from_url(r.url)), tmp_path, "h", ticks)

        async def refresh_then_redis_dies(data: dict) -> dict:
            new = await issuer.refresh(data)
            r.stop()
            return new

        async def before():
            await put(fleet.SharedFences(aioredis.from_url(r.url)), issuer.seed())
            return await fresh_host().access(refresh_then_redis_dies)

        got = asyncio.run(before())
        assert got["refresh_token"] == issuer.current == "rt-1"
        (journal,) = (tmp_path / "h" / "j").glob("*.json")
        assert json.loads(journal.read_text())["data"]["refresh_token"] == "rt-1"

        r.start()  # empty: a Redis restart without persistence
        ticks.now = 1000.0  # past the write's backoff

        async def after():  # a restarted gateway: the journal is all it has
            h = fresh_host()
            return await h.access(issuer.refresh), await stored(h.state)

        got, in_store = asyncio.run(after())
    assert got["refresh_token"] == in_store["refresh_token"] == "rt-1"
    assert issuer.calls == 1  # the rotated token was never sent again
    assert not journal.exists()


def test_while_redis_is_away_a_fresh_token_serves_and_nothing_is_refreshed(tmp_path):
    issuer = Issuer()
    ticks = Clock(0.0)
    fresh = {**issuer.seed(), "expiry_date": int((time.time() + 3600) * 1000)}
    with redis_server() as r:
        async def run():
            await put(fleet.SharedFences(aioredis.from_url(r.url)), fresh)
            h = host(fleet.cli_state(r.url), tmp_path, "h", ticks)
            assert (await h.access(issuer.refresh))["access_token"] == "at-0"
            r.stop()
            ticks.now += fleet.READ_EVERY + 1  # due for a read, which fails
            assert (await h.access(issuer.refresh))["access_token"] == "at-0"
            with pytest.raises(RefreshFailed, match="unreachable"):  # a 401: no refresh without the lock
                await h.access(issuer.refresh, force=True)

        asyncio.run(run())
    assert issuer.calls == 0


def test_a_kinds_own_reading_of_its_file_decides_freshness(backend, tmp_path):
    """Codex keeps its tokens under "tokens": the kind's CredentialsFile says whether they are
    fresh, also when the credentials come from the store."""

    class Nested(CredentialsFile):
        def fresh(self, skew: float = 30.0) -> bool:
            return bool((self.data.get("tokens") or {}).get("access_token"))

    connect, _ = backend
    issuer = Issuer()

    async def run():
        await put(connect(), {"tokens": {"access_token": "nested", "refresh_token": "rt-0"}})
        file = Nested(tmp_path / "oauth_creds.json", "codex login", journal_dir=tmp_path / "j")
        return await fleet.FleetCredentials(file, connect(), "qwen").access(issuer.refresh)

    assert asyncio.run(run())["tokens"]["access_token"] == "nested"
    assert issuer.calls == 0


def test_credentials_a_restarted_redis_lost_are_written_back_from_a_host(tmp_path):
    issuer = Issuer()
    ticks = Clock(0.0)
    fresh = {**issuer.seed(), "expiry_date": int((time.time() + 3600) * 1000)}
    with redis_server() as r:
        async def run():
            await put(fleet.SharedFences(aioredis.from_url(r.url)), fresh)
            h = host(fleet.cli_state(r.url), tmp_path, "h", ticks)
            await h.access(issuer.refresh)
            r.restart()  # no persistence: the store is empty now
            ticks.now += fleet.READ_EVERY + 1
            return await h.access(issuer.refresh), await stored(h.state)

        got, in_store = asyncio.run(run())
    assert got == in_store == fresh
    assert issuer.calls == 0
