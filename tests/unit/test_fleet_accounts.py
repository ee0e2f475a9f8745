"""A `credentials:` glob's accounts across the fleet (credentials/fleet.FleetListing): the store's
index of accounts, each host's local files offered to it, `remove`, and the listing's cadence on
an injected clock. The shared store is the SQLite backend (llmgate.state.local), which offers the
same fenced locks and values as Redis."""

import asyncio
import json
import time
from pathlib import Path

import pytest

from llmgate.credentials import fleet
from llmgate.credentials.store import LoginRequired
from llmgate.state.local import LocalState
from tests.unit.test_fleet_credentials import Clock, Issuer, host

FRESH = {"access_token": "at-x", "refresh_token": "rt-x", "expiry_date": int((time.time() + 3600) * 1000)}


class Counted:
    """The store, counting the reads of the account index (the listing's round trips)."""

    def __init__(self, state: LocalState):
        self.state, self.index_reads = state, 0

    def __getattr__(self, name: str):
        return getattr(self.state, name)

    async def get_fenced(self, name: str):
        self.index_reads += name == fleet.index_name("qwen")
        return await self.state.get_fenced(name)


@pytest.fixture
def store(tmp_path):
    return LocalState(tmp_path / "state.sqlite")


def local_files(folder: Path, *names: str, data: dict | None = None) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / f"{n}.json").write_text(json.dumps(data or FRESH))
    return {n: folder / f"{n}.json" for n in names}


async def settle(listing: fleet.FleetListing) -> None:
    if listing._reading is not None:
        await listing._reading


def test_the_index_is_read_once_per_cadence_and_new_accounts_show_after_it(store, tmp_path):
    clock, counted = Clock(0.0), Counted(store)
    listing = fleet.FleetListing(counted, "qwen", clock)

    async def run():
        await fleet.import_credentials(store, "qwen", "alice", FRESH)  # on another host
        assert listing.names({}) == []  # not read yet: the read starts now, no request waits
        await settle(listing)
        assert listing.names({}) == ["alice"] and counted.index_reads == 1
        await fleet.import_credentials(store, "qwen", "bob", FRESH)
        for _ in range(100):  # requests within the cadence: no round trip
            assert listing.names({}) == ["alice"]
        await settle(listing)
        assert counted.index_reads == 1
        clock.now = fleet.READ_EVERY
        listing.names({})
        await settle(listing)
        return listing.names({}), counted.index_reads

    assert asyncio.run(run()) == (["alice", "bob"], 2)


def test_a_removed_account_goes_after_the_cadence_also_where_its_file_is(store, tmp_path):
    clock = Clock(0.0)
    local = local_files(tmp_path / "h", "alice", "bob")
    listing = fleet.FleetListing(store, "qwen", clock)

    async def run():
        listing.names(local)
        await settle(listing)  # both offered to the store
        assert listing.names(local) == ["alice", "bob"]
        assert await fleet.remove_credentials(store, "qwen", "bob")
        assert listing.names(local) == ["alice", "bob"]  # until the next read
        clock.now = fleet.READ_EVERY
        listing.names(local)
        await settle(listing)
        gone = listing.names(local)
        restarted = fleet.FleetListing(store, "qwen", clock)  # a host restarted: sees its files anew
        restarted.names(local)
        await settle(restarted)
        return gone, restarted.names(local), await fleet.export_credentials(store, "qwen", "bob")

    assert asyncio.run(run()) == (["alice"], ["alice"], None)  # the file did not bring it back


def test_a_local_file_is_offered_once_and_never_replaces_what_the_store_holds(store, tmp_path):
    clock = Clock(0.0)
    local = local_files(tmp_path / "h", "alice", "carol", data={**FRESH, "refresh_token": "stale"})
    listing = fleet.FleetListing(store, "qwen", clock)

    async def run():
        await fleet.import_credentials(store, "qwen", "alice", FRESH)  # rotated since the file was written
        listing.index = {}  # as if read before that import: alice looks new here
        listing.read_at = None
        listing.names(local)
        await settle(listing)
        return (await fleet.export_credentials(store, "qwen", "alice"),
                await fleet.export_credentials(store, "qwen", "carol"), listing.names(local))

    alice, carol, names = asyncio.run(run())
    assert alice == FRESH  # kept: the store's copy is newer than the file
    assert carol["refresh_token"] == "stale"  # first sight: imported
    assert names == ["alice", "carol"]


def test_an_unreachable_store_keeps_the_last_listing_until_the_next_cadence(store, tmp_path):
    clock = Clock(0.0)
    listing = fleet.FleetListing(store, "qwen", clock)

    async def down(name: str):
        raise ConnectionError("refused")

    async def run():
        await fleet.import_credentials(store, "qwen", "alice", FRESH)
        listing.names({})
        await settle(listing)
        store.get_fenced = down  # type: ignore[method-assign]
        clock.now = fleet.READ_EVERY
        listing.names({})
        await settle(listing)
        return listing.names({}), listing.read_at

    assert asyncio.run(run()) == (["alice"], fleet.READ_EVERY)  # no retry on every request


def test_a_host_holding_a_removed_accounts_tokens_does_not_write_them_back(store, tmp_path):
    """Before: an empty stored value read as 'Redis lost it', and the host wrote its copy back."""
    clock = Clock(0.0)
    creds = host(store, tmp_path, "h", clock, account="bob")

    async def run():
        await fleet.import_credentials(store, "qwen", "bob", FRESH)
        assert (await creds.access(Issuer().refresh))["access_token"] == "at-x"
        await fleet.remove_credentials(store, "qwen", "bob")
        clock.now = fleet.READ_EVERY
        with pytest.raises(LoginRequired, match="llmgate credentials import qwen"):
            await creds.access(Issuer().refresh)
        return await fleet.export_credentials(store, "qwen", "bob")

    assert asyncio.run(run()) is None


def test_an_import_after_a_remove_serves_again_and_the_index_is_bounded(store):
    async def run():
        await fleet.import_credentials(store, "qwen", "bob", FRESH)
        await fleet.remove_credentials(store, "qwen", "bob")
        await fleet.import_credentials(store, "qwen", "bob", FRESH)  # a new login: back everywhere
        listing = fleet.FleetListing(store, "qwen", Clock(0.0))
        await listing.read({})
        return listing.names({})

    assert asyncio.run(run()) == ["bob"]
    many = json.dumps({f"a{i}": True for i in range(fleet.MAX_ACCOUNTS + 50)}).encode()
    assert len(fleet._index((many, 1))) == fleet.MAX_ACCOUNTS
    assert fleet._index((b'{"x": "yes", "y": true}', 1)) == {"y": True}  # not ours: skipped
    odd = json.dumps({"../up": True, "/etc/passwd": True, "": True, "..": True, "a\u0000b": True, "ok": True})
    assert fleet._index((odd.encode(), 1)) == {"ok": True}  # never a path outside the glob's folder


def account_set(tmp_path, kind: str, credentials: str, state: str | None):
    from types import SimpleNamespace

    from llmgate.providers import PROVIDER_TYPES
    from llmgate.settings import GatewaySettings

    settings = GatewaySettings.model_validate({
        "server": {"state": state} if state else {},
        "providers": [{"id": "p", "type": kind, "credentials": str(tmp_path / credentials)}]})
    rt = SimpleNamespace(settings=settings, pool=None)
    return PROVIDER_TYPES[kind].accounts(settings.providers[0], rt).share(rt)


@pytest.mark.parametrize(("kind", "credentials", "state", "fleet_listed"), [
    ("qwen", "*.json", "redis://127.0.0.1:1", True),
    ("codex", "codex/*.json", "redis://127.0.0.1:1", True),
    ("qwen", "oauth_creds.json", "redis://127.0.0.1:1", False),  # one file: as before
    ("qwen", "*.json", None, False),  # no shared state: the files, as before
    ("iflow", "*.json", "redis://127.0.0.1:1", False),  # API-key files the gateway reads itself
])
def test_which_entries_take_their_accounts_from_the_fleet(tmp_path, kind, credentials, state, fleet_listed):
    local_files(tmp_path / Path(credentials).parent, "mine")
    accounts = account_set(tmp_path, kind, credentials, state)
    assert (accounts._listing is not None) == fleet_listed
    if fleet_listed:
        accounts._listing.index = {"theirs": True, "mine": True, "gone": False}  # as read from the store
        assert [a.name for a in accounts.current()] == ["p/mine", "p/theirs"]
    else:
        assert len(accounts.current()) == 1  # the local file (or the one file named)
