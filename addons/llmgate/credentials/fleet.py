"""Subscription credentials shared by several gateway hosts (`server.state: redis://...`).

Every host reads an account's credentials from the shared store, keyed by provider id and
account (the credentials file's name without its extension, the same on every host), and the
fleet refreshes them once:

- A refresh takes the account's lock, which comes with a fencing token (a number that grows
  with every grant), then reads the store again: when another host refreshed meanwhile, its
  token is used and nothing is refreshed.
- The new tokens are journalled on this host (fsync, the gateway's own folder), then stored
  with that fencing token; a store that saw a newer fence refuses them (a holder whose lock
  lapsed while it was slow cannot put an older token over a newer one), and what it holds is
  used instead. Only stored (or, below, journalled) tokens are used.
- The store unreachable when the tokens arrive: they stay in use from memory and the journal,
  and are written when it answers again, if it still holds the credentials they replaced (or
  lost them); a newer login imported meanwhile wins. No refresh starts without the lock: while
  the store is away a fresh token held here keeps serving, an expired one answers 502.
- A lock lapses LOCK_TTL after it was granted, so a killed holder blocks the account's
  refreshes for at most that long.

With a `credentials:` glob, a provider entry's accounts are the fleet's (FleetListing): an index
in the store names them (`llmgate credentials import|remove` edit it), each host's local files
are offered to it when first seen, and every host reads it every READ_EVERY.

The lock and fenced values are the shared state's (llmgate.state: its Redis scripts and keys),
used strictly (SharedFences). Without `server.state` the credentials files are used as before
(credentials/store.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from llmgate.credentials.store import (
    REFRESH_SKEW,
    RETRY_FIRST,
    RETRY_MAX,
    CredentialsFile,
    LoginRequired,
    Refresher,
    RefreshFailed,
    read_json,
    write_atomic,
)
from llmgate.state import Lease
from llmgate.state.redis_backend import LOCK, PREFIX, PUT_FENCED, UNLOCK

log = logging.getLogger("llmgate")

LOCK_TTL = 40.0  # seconds a refresh may hold the fleet lock (the token call times out after 30)
LOCK_WAIT = 15.0  # seconds a request waits for another host's refresh
READ_EVERY = 10.0  # seconds a host serves its copy before reading the store again (a new login shows)
UNREACHABLE = (RedisError, OSError)  # what the store raises when Redis does not answer
LOCK_POLL = 0.05  # seconds between tries of a held lock
MAX_ACCOUNTS = 1000  # accounts of one provider entry read from the store's index
REMOVED = b"null"  # the stored value of a removed account (no credentials)


class Fenced(Protocol):
    """What the fleet needs of the shared state (llmgate.state.SharedState): a lock with
    fencing and values that a write with an older fence cannot replace."""

    async def acquire(self, name: str, ttl: float, wait: float = 0.0) -> Any: ...
    async def release(self, lease: Any) -> None: ...
    async def put_fenced(self, name: str, value: bytes, fence: int) -> bool: ...
    async def get_fenced(self, name: str) -> tuple[bytes, int] | None: ...


class SharedFences:
    """The shared state's locks with fencing and fenced values in Redis: the scripts and keys of
    llmgate.state.redis_backend, without its fallback to this host's SQLite file while Redis is
    away. For credentials that fallback would be wrong twice over: a refresh under a lock only
    this host's processes see could race another host on a rotating token, and tokens stored
    only in this host's file would never reach the fleet. Errors here propagate (UNREACHABLE)."""

    def __init__(self, client: aioredis.Redis):
        self.client = client

    async def acquire(self, name: str, ttl: float, wait: float = 0.0) -> Lease | None:
        owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"
        deadline = time.monotonic() + wait
        while True:
            fence = await self.client.eval(LOCK, 2, PREFIX + "lock:" + name, PREFIX + "fence:" + name,
                                           owner, max(1, int(ttl * 1000)))
            if fence:
                return Lease(name, owner, int(fence))
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(LOCK_POLL)

    async def release(self, lease: Lease) -> None:
        await self.client.eval(UNLOCK, 1, PREFIX + "lock:" + lease.name, lease.owner)

    async def put_fenced(self, name: str, value: bytes, fence: int) -> bool:
        return bool(await self.client.eval(PUT_FENCED, 1, PREFIX + "value:" + name, value, fence))

    async def get_fenced(self, name: str) -> tuple[bytes, int] | None:
        value, fence = await self.client.hmget(PREFIX + "value:" + name, ["value", "fence"])
        if value is None or fence is None or not fence.isdigit():
            return None  # not a value this code wrote: as if none (an import replaces it)
        return (value.encode() if isinstance(value, str) else value), int(fence)


_shared: dict[str, SharedFences] = {}


def shared_fences(url: str) -> SharedFences:
    """This process's SharedFences for the Redis at `url` (made on first use)."""
    if url not in _shared:
        _shared[url] = cli_state(url)
    return _shared[url]


def account_name(path: Path) -> str:
    """An account's name in the store: its file's name without the extension (oauth_creds)."""
    return Path(path).stem


class FleetCredentials(CredentialsFile):
    """One account's credentials, kept in the shared store for every host: what CredentialsFile
    offers (access, fresh, needs_login, data), with the fleet's refresh. The file at `path` is
    what `llmgate credentials import|export` copy from and to; the gateway does not read it."""

    def __init__(self, file: CredentialsFile, state: Fenced, provider: str,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(file.path, file.login_hint, file.expiry_key, file.token_key, file.journal_dir, clock)
        self.file = file  # its kind's reading of the fields (Codex: nested tokens, JWT expiry)
        self.state, self.provider, self.account = state, provider, account_name(file.path)
        self.key = value_name(provider, self.account)
        self.version = 0  # the fence the held credentials were written with (0: none)
        self._read_at: float | None = None
        self._reading: asyncio.Task | None = None
        self._refused_at: int | None = None  # the version whose refresh token the issuer refused
        self._push: dict[str, Any] | None = None  # {"base": version, "data"}: not in the store yet
        self.lock_wait = LOCK_WAIT

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.account}"

    def expires_at(self) -> float | None:
        self.file.data = self.data
        return self.file.expires_at()

    def fresh(self, skew: float = REFRESH_SKEW) -> bool:
        self.file.data = self.data
        return self.file.fresh(skew)

    def _journal(self, suffix: str = ".json") -> Path | None:
        if self.journal_dir is None:
            return None
        return self.journal_dir / (hashlib.sha256(self.key.encode()).hexdigest()[:24] + suffix)

    def reload_if_changed(self) -> None:
        """(sync, for usable()) Start a read of the store when this host's copy is old."""
        if self._reading is not None and not self._reading.done():
            return
        if self._read_at is not None and self._clock() - self._read_at < READ_EVERY:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop: access() reads
            return
        self._reading = loop.create_task(self._read_quietly())

    async def _read_quietly(self) -> None:
        try:
            await self._read()
        except UNREACHABLE:
            self._read_at = self._clock()  # not on every request while Redis is away

    async def _read(self) -> int:
        """Take what the store holds (unless this host holds newer tokens); its version."""
        got = await self.state.get_fenced(self.key)
        self._read_at = self._clock()
        data, version = _decode(got)
        if self._push is not None:
            return version
        removed = got is not None and got[0] == REMOVED  # `llmgate credentials remove`: never written back
        if data is None and not removed and self.data and self.version:  # Redis lost it: ours is the newest
            log.warning("credentials %s: gone from the shared store; writing back this host's copy", self.name)
            self._push, self._retry_at = {"base": 0, "data": self.data}, self._clock()
            return version
        self.data, self.version = data or {}, version
        if data is None:
            self.needs_login = (f"no credentials for account {self.account} of provider '{self.provider}' in the "
                                f"shared store: llmgate credentials import {self.provider} --file <file>")
        elif self._refused_at != version:
            self.needs_login, self._refused_at = None, None
        return version

    def _unreachable(self, e: BaseException, force: bool = True) -> None:
        """The store did not answer: the copy held here serves while it is fresh (and requests
        do not each wait for Redis meanwhile)."""
        self._read_at = self._clock()
        if self.fresh() and not force:
            return
        raise RefreshFailed(f"the shared credentials store (server.state) is unreachable ({type(e).__name__}); "
                            "no refresh without the fleet lock") from None

    async def access(self, refresh: Refresher, force: bool = False, stale: Any = None) -> dict[str, Any]:
        """The credentials, refreshed once across the fleet when (nearly) expired or `force`
        (`stale`: the token refused, when known). Raises LoginRequired or RefreshFailed."""
        if not self._journal_read:
            self._journal_read = True
            await asyncio.to_thread(self._load_journal)
        held = stale if stale is not None else self.data.get(self.token_key)
        due = self._read_at is None or self._clock() - self._read_at >= READ_EVERY
        if due or force or not self.fresh():
            try:
                await self._read()
            except UNREACHABLE as e:
                self._unreachable(e, force)
        if self._push is not None and self._clock() >= self._retry_at:
            await self._push_pending()
        if self.needs_login:
            raise LoginRequired(self.needs_login)
        if self.fresh() and not (force and self.data.get(self.token_key) == held):  # a 401: another token?
            return self.data
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh(refresh, held))
        return await asyncio.shield(self._refreshing)

    async def _refresh(self, refresh: Refresher, stale_token: Any) -> dict[str, Any]:
        try:
            lease = await self.state.acquire(lock_name(self.provider, self.account), LOCK_TTL, self.lock_wait)
        except UNREACHABLE as e:
            self._unreachable(e)
            raise
        if lease is None:
            raise RefreshFailed(f"another gateway held the refresh lock of {self.name} for {self.lock_wait:g} s")
        try:
            return await self._refresh_locked(refresh, stale_token, lease.fence)
        finally:
            try:
                await self.state.release(lease)
            except UNREACHABLE:  # it lapses by itself
                pass

    async def _refresh_locked(self, refresh: Refresher, stale_token: Any, fence: int) -> dict[str, Any]:
        try:
            base_version = await self._read()  # another host may have refreshed while we waited
        except UNREACHABLE as e:
            self._unreachable(e)
            raise
        if self.needs_login:
            raise LoginRequired(self.needs_login)
        if self.fresh() and self.data.get(self.token_key) != stale_token:
            return self.data
        base = dict(self.data)
        try:
            new = await refresh(dict(base))
        except LoginRequired as e:
            if await self._newer_than(base_version):  # our lock lapsed and another host rotated it
                return self.data
            self._refused_at = base_version
            self.needs_login = (f"{e}. Log in again ({self.login_hint}), then: "
                                f"llmgate credentials import {self.provider} --file <file>")
            log.error("credentials %s: %s", self.name, self.needs_login)
            raise LoginRequired(self.needs_login) from None
        # the old refresh token is dead from here: this host's journal, then the store, then use
        self.data = {**base, **new}
        self._push = {"base": base_version, "data": self.data}
        await asyncio.to_thread(self._journal_push)
        await self._write_pending(fence)
        return self.data

    async def _newer_than(self, version: int) -> bool:
        """Whether the store now holds fresh credentials written after `version`."""
        try:
            return await self._read() != version and self.fresh()
        except UNREACHABLE:
            return False

    def _load_journal(self) -> None:
        """(worker thread) Tokens an earlier run could not write to the store."""
        path = self._journal()
        try:
            j = read_json(path, nofollow=True) if path else None
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.error("credentials journal %s unreadable (%s), ignored", path, e)
            return
        if (isinstance(j, dict) and j.get("key") == self.key and isinstance(j.get("data"), dict)
                and isinstance(j.get("base"), int)):
            log.warning("credentials %s: refreshed tokens not yet in the shared store found in %s", self.name, path)
            self._push, self.data = {"base": j["base"], "data": j["data"]}, j["data"]

    def _journal_push(self) -> None:
        """(worker thread) Keep the tokens the store is about to get on this host's disk first."""
        path = self._journal()
        if path is None:
            return
        try:
            write_atomic(path, {"key": self.key, **(self._push or {})})
        except OSError as e:
            log.error("credentials %s: cannot journal refreshed tokens to %s (%s)", self.name, path, e.strerror or e)

    async def _push_pending(self) -> None:
        """Write tokens held since the store was unreachable, under the lock, if the store still
        holds what they replaced (or lost it); a newer login there wins."""
        self._retry_at = self._clock() + self._backoff
        try:
            lease = await self.state.acquire(lock_name(self.provider, self.account), LOCK_TTL)
        except UNREACHABLE as e:
            return self._push_failed(e)
        if lease is None:  # someone is refreshing: later
            return
        try:
            if _decode(await self.state.get_fenced(self.key))[1] in (0, (self._push or {}).get("base")):
                await self._write_pending(lease.fence)
            else:
                await self._refused()
        except UNREACHABLE as e:
            self._push_failed(e)
        finally:
            try:
                await self.state.release(lease)
            except UNREACHABLE:  # it lapses by itself
                pass

    async def _write_pending(self, fence: int) -> None:
        if self._push is None:
            return
        value = json.dumps(self._push["data"], separators=(",", ":")).encode()
        try:
            stored = await self.state.put_fenced(self.key, value, fence)
        except UNREACHABLE as e:
            return self._push_failed(e)
        if not stored:
            return await self._refused()
        self._push, self.version, self._backoff, self._retry_at = None, fence, RETRY_FIRST, 0.0
        await asyncio.to_thread(self._drop_journal)
        log.info("credentials %s: new tokens stored for every gateway host", self.name)

    async def _refused(self) -> None:
        """The store holds credentials newer than this host's refresh (a newer lock holder
        wrote, or a new login was imported): those win."""
        log.warning("credentials %s: the shared store holds newer credentials than this host's refresh; "
                    "using those", self.name)
        self._push, self._backoff, self._retry_at = None, RETRY_FIRST, 0.0
        await asyncio.to_thread(self._drop_journal)
        try:
            await self._read()
        except UNREACHABLE:
            self._read_at = None

    def _push_failed(self, e: BaseException) -> None:
        jpath = self._journal()
        kept = "the gateway's journal" if jpath and jpath.exists() else "memory only (a restart loses them)"
        log.error("credentials %s: the shared store is unreachable (%s); the refreshed tokens stay in use from "
                  "%s; writing again in %g s", self.name, type(e).__name__, kept, self._backoff)
        self._backoff = min(self._backoff * 2, RETRY_MAX)

    def _drop_journal(self) -> None:
        path = self._journal()
        try:
            if path:
                path.unlink(missing_ok=True)
        except OSError as e:
            log.error("credentials journal %s cannot be removed: %s", path, e.strerror or e)


def value_name(provider: str, account: str) -> str:
    return f"credentials:{provider}:{account}"


def lock_name(provider: str, account: str) -> str:
    return f"credentials-refresh:{provider}:{account}"


def index_name(provider: str) -> str:
    return f"credentials-accounts:{provider}"


def index_lock(provider: str) -> str:
    return f"credentials-accounts-edit:{provider}"


def _decode(got: tuple[bytes, int] | None) -> tuple[dict[str, Any] | None, int]:
    """A stored value as (credentials, version); (None, 0) when there is none."""
    if got is None:
        return None, 0
    try:
        data = json.loads(got[0])
    except (ValueError, RecursionError):  # what another writer put there: as if nothing
        data = None
    return (data if isinstance(data, dict) else None), got[1]


async def import_credentials(state: Fenced, provider: str, account: str, data: dict[str, Any]) -> int:
    """Put a CLI's credentials into the store, under the lock (a refresh running on some host
    finishes first; its token is then replaced by this login). The new version."""
    lease = await state.acquire(lock_name(provider, account), LOCK_TTL, LOCK_WAIT)
    if lease is None:
        raise RefreshFailed(f"a gateway held the refresh lock of {provider}/{account} for {LOCK_WAIT:g} s")
    try:
        if not await state.put_fenced(value_name(provider, account), json.dumps(data).encode(), lease.fence):
            raise RefreshFailed(f"a newer writer stored {provider}/{account} meanwhile; try again")
    finally:
        await state.release(lease)
    await _mark(state, provider, {account: True})  # every host with a glob entry serves it from now
    return int(lease.fence)


async def remove_credentials(state: Fenced, provider: str, account: str) -> bool:
    """Take an account out of the fleet: its stored value becomes an empty one (under the lock, so
    a refresh running on some host finishes first and cannot write after), and the index marks it
    removed, so no host's local file brings it back. Whether the store knew the account."""
    known = (await state.get_fenced(value_name(provider, account))) is not None
    lease = await state.acquire(lock_name(provider, account), LOCK_TTL, LOCK_WAIT)
    if lease is None:
        raise RefreshFailed(f"a gateway held the refresh lock of {provider}/{account} for {LOCK_WAIT:g} s")
    try:
        await state.put_fenced(value_name(provider, account), REMOVED, lease.fence)
    finally:
        await state.release(lease)
    return await _mark(state, provider, {account: False}) or known


async def _mark(state: Fenced, provider: str, changes: dict[str, bool], keep_removed: bool = False) -> bool:
    """Apply `changes` to the provider's account index (under its lock): True: the account
    serves, False: removed. keep_removed: a removed account stays so. Whether it held them."""
    lease = await state.acquire(index_lock(provider), LOCK_TTL, LOCK_WAIT)
    if lease is None:
        raise RefreshFailed(f"a gateway held the account index of provider '{provider}' for {LOCK_WAIT:g} s")
    try:
        index = _index(await state.get_fenced(index_name(provider)))
        known = all(a in index for a in changes)
        index.update({a: v for a, v in changes.items() if not (keep_removed and index.get(a) is False)})
        value = json.dumps(index, separators=(",", ":")).encode()
        if not await state.put_fenced(index_name(provider), value, lease.fence):
            raise RefreshFailed(f"a newer writer changed the account index of provider '{provider}'; try again")
        return known
    finally:
        await state.release(lease)


def _index(got: tuple[bytes, int] | None) -> dict[str, bool]:
    """The stored account index ({account: serves}): names a file could have (each becomes a path
    beside the glob's files), at most MAX_ACCOUNTS; anything else is skipped."""
    data, _ = _decode(got)
    entries = [(a, v) for a, v in (data or {}).items()
               if isinstance(v, bool) and Path(a).name == a and a not in ("", ".", "..") and "\0" not in a]
    return dict(entries[:MAX_ACCOUNTS])


async def offer_credentials(state: Fenced, provider: str, account: str, data: dict[str, Any]) -> bool:
    """A host's local file of an account the index does not know: stored unless the store holds
    credentials for it already (those are newer: a refresh or an import), then indexed unless it
    was removed meanwhile. Whether the file's credentials were stored."""
    lease = await state.acquire(lock_name(provider, account), LOCK_TTL, LOCK_WAIT)
    if lease is None:
        return False
    try:
        stored = await state.get_fenced(value_name(provider, account)) is None and await state.put_fenced(
            value_name(provider, account), json.dumps(data).encode(), lease.fence)
    finally:
        await state.release(lease)
    await _mark(state, provider, {account: True}, keep_removed=True)
    return stored


class FleetListing:
    """The accounts of a provider entry with a `credentials:` glob across the fleet: those the
    shared store's index lists, and this host's files (offered to the store when first seen here),
    less the removed. The index is read every READ_EVERY, in the background: no request waits."""

    def __init__(self, state: Fenced, provider: str, clock: Callable[[], float] = time.monotonic,
                 bundle: Callable[[Path, dict[str, Any]], dict[str, Any]] | None = None):
        self.state, self.provider, self._clock = state, provider, clock
        self.bundle = bundle  # the kind's (ProviderKind.bundle): what the login needs from beside its file
        self.index: dict[str, bool] = {}  # as last read (False: removed)
        self.read_at: float | None = None
        self._reading: asyncio.Task | None = None
        self._offered: set[Path] = set()  # local files this process gave the store already

    def names(self, local: dict[str, Path]) -> list[str]:
        """(sync) The accounts now, from the index as last read and the local files; a read of
        the index starts when the last is READ_EVERY old."""
        self._read_if_due(local)
        return sorted({a for a, serves in self.index.items() if serves}
                      | {a for a in local if self.index.get(a) is not False})

    def _read_if_due(self, local: dict[str, Path]) -> None:
        if self._reading is not None and not self._reading.done():
            return
        if self.read_at is not None and self._clock() - self.read_at < READ_EVERY:
            return
        try:
            self._reading = asyncio.get_running_loop().create_task(self.read(dict(local)))
        except RuntimeError:  # no event loop (a report before the gateway runs): the next call
            return

    async def read(self, local: dict[str, Path]) -> None:
        """Read the index; offer the local files it does not know yet."""
        try:
            index = _index(await self.state.get_fenced(index_name(self.provider)))
            listed = sorted(a for a, serves in index.items() if serves)
            if self.read_at is None or listed != sorted(a for a, serves in self.index.items() if serves):
                log.info("credentials of provider '%s': the shared store lists %d account(s): %s", self.provider,
                         len(listed), ", ".join(listed[:20]) + (", ..." if len(listed) > 20 else "") or "-")
            self.index = index
            for account, path in local.items():
                if account not in self.index and path not in self._offered:
                    await self._offer(account, path)
                    self._offered.add(path)  # once per process (a store that failed to answer: again)
        except UNREACHABLE as e:
            log.warning("credentials of provider '%s': the shared store is unreachable (%s); the accounts "
                        "last listed serve", self.provider, type(e).__name__)
        except RefreshFailed as e:
            log.warning("credentials of provider '%s': %s", self.provider, e)
        self.read_at = self._clock()

    async def _offer(self, account: str, path: Path) -> None:
        try:
            data = await asyncio.to_thread(read_json, path)
            if isinstance(data, dict) and data and self.bundle is not None:
                data = await asyncio.to_thread(self.bundle, path, data)
        except (OSError, ValueError) as e:
            log.error("credentials file %s unreadable (%s), not imported", path, type(e).__name__)
            return
        if isinstance(data, dict) and data and await offer_credentials(self.state, self.provider, account, data):
            log.info("credentials %s/%s: imported from %s into the shared store", self.provider, account, path)


async def export_credentials(state: Fenced, provider: str, account: str) -> dict[str, Any] | None:
    """The credentials the store holds now (None: none)."""
    return _decode(await state.get_fenced(value_name(provider, account)))[0]


def cli_state(url: str) -> SharedFences:
    """A new connection to the store at `url` (the CLI's: its own event loop). One immediate
    retry: a pooled connection from before a Redis restart fails once."""
    return SharedFences(aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=1,
                                          retry=Retry(NoBackoff(), 1)))
