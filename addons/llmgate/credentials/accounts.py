"""The accounts behind a subscription provider entry, and what each puts on a request.

A provider entry names one credentials file or a glob of them (one file per account).
Requests take the accounts in turn, skipping those that need a new login; when none is
usable the error says which files need what. Pools across provider entries, cooldowns and
failover come with the account pool (issue 6); this only spreads requests and skips the dead.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import platform
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from llmgate.credentials import oauth
from llmgate.credentials.store import CredentialsFile, LoginRequired, RefreshFailed, Unwritable
from llmgate.errors import GatewayError
from llmgate.request_path.upstream import check_proxy, proxy_setting

if TYPE_CHECKING:
    from llmgate.request_path.upstream import UpstreamRequest
    from llmgate.settings import ProviderSettings

VERSION = "0.1.0"
# the token each account gave the request running in this task: after a 401 the account knows
# which token was refused (not whatever another request made current since)
_USED: ContextVar[dict[int, Any] | None] = ContextVar("llmgate_tokens_used", default=None)


def platform_tag() -> tuple[str, str]:
    """(platform, arch) as Node.js names them, which the CLIs put in their User-Agent."""
    system = {"Darwin": "darwin", "Windows": "win32"}.get(platform.system(), platform.system().lower())
    machine = platform.machine().lower()
    return system, {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64"}.get(machine, machine)


class Account:
    """One account: prepare() puts its credentials (and the provider's envelope) on a request."""

    name: str = ""
    needs_login: str | None = None
    proxy: str | None = None  # its own proxy setting, over its provider entry's (None: the entry's)

    async def prepare(self, up: UpstreamRequest, model: str, purpose: str, force: bool = False) -> None:
        """purpose: generate | stream | count. force: the last attempt got a 401, refresh first."""
        raise NotImplementedError

    def usable(self) -> bool:
        return True

    def error(self, status: int, headers: Any, body: bytes) -> GatewayError | None:
        """An upstream error this provider means something specific by (quota, not allowed)."""
        return None


class OAuthAccount(Account):
    """An account whose access token comes from a credentials file and a refresh token."""

    def __init__(self, p: ProviderSettings, rt: Any, path: Path, client: oauth.OAuthClient | None, login: str,
                 creds: CredentialsFile | None = None):
        self.p = p
        self.rt = rt
        self.client = dataclasses.replace(client, token_url=p.token_url) if client and p.token_url else client
        self.creds = creds or CredentialsFile(path, f"llmgate login {login} --credentials {path}")
        if self.creds.journal_dir is None:
            self.creds.journal_dir = journal_dir(rt)
        self.name = str(path)
        if url := state_url(rt):  # several hosts: the credentials live in Redis, named alike on each
            from llmgate.credentials import fleet  # redis is imported only when server.state is set

            self.creds = fleet.FleetCredentials(self.creds, fleet.shared_fences(url), p.id)
            self.name = self.creds.name

    def usable(self) -> bool:
        self.creds.reload_if_changed()
        return self.creds.needs_login is None

    @property
    def needs_login(self) -> str | None:  # type: ignore[override]
        return self.creds.needs_login

    async def token(self, force: bool = False) -> dict[str, Any]:
        """Fresh credentials; GatewayError 503 when this account needs a login, 502 when the
        refresh failed for now. `force` (after a 401) refreshes unless the token this request
        was refused with has been replaced meanwhile (a concurrent request already refreshed)."""
        used = _USED.get()
        stale = used.get(id(self)) if force and used else None
        try:
            creds = await self.creds.access(self.refresh, force, stale)
            _USED.set({**(used or {}), id(self): creds.get(self.creds.token_key)})
            return creds
        except LoginRequired as e:
            raise GatewayError(503, f"Provider '{self.p.id}': account {self.name} needs a new login: {e}",
                               code="provider_login_required") from None
        except RefreshFailed as e:
            raise GatewayError(502, f"Provider '{self.p.id}': refreshing the token of {self.name} failed: {e}",
                               code="provider_refresh_failed") from None
        except Unwritable as e:
            raise GatewayError(503, f"Provider '{self.p.id}': the token of {self.name} is due for a refresh, "
                               f"which is not done without a lock: {e}. Make {self.creds.path.parent} writable "
                               "for the gateway (or copy the file to a writable folder and point `credentials` "
                               "at it).", code="provider_credentials_unwritable") from None

    @property
    def proxy(self) -> str | None:  # type: ignore[override]
        """`proxy_url` in the credentials file (as CLIProxyAPI's auth files have it): this account only."""
        value = self.creds.data.get("proxy_url")
        try:
            return check_proxy(value)
        except ValueError as e:  # going direct instead would show the account's own address
            raise GatewayError(502, f"Provider '{self.p.id}': the proxy_url of account {self.name} {e}.",
                               code="proxy_invalid") from None

    def session(self, url: str) -> aiohttp.ClientSession:
        """The session for this account's own calls to `url` (refresh, set-up): through its proxy."""
        return self.rt.upstream.session_for(url, self.proxy or proxy_setting(self.p, self.rt.settings.server))

    async def refresh(self, data: dict[str, Any]) -> dict[str, Any]:
        """The refresh grant of this kind's OAuth client (Kiro has its own endpoints)."""
        assert self.client is not None, "a kind without an OAuth client refreshes its own way"
        return await oauth.refresh(self.session(self.client.token_url), self.client, data)


class AccountSet:
    """The accounts of one provider entry, taken in turn. With a glob, files that appear
    or go away are noticed at the next request (accounts keep their state by path); with
    `server.state` too (share()), accounts the shared store lists are added and removed ones go."""

    def __init__(self, p: ProviderSettings, make: Callable[[Path], Account], default: str | None = None,
                 fixed: list[Account] | None = None):
        self.p = p
        self._make = make
        self._default = default
        self._fixed = fixed
        self._by_path: dict[Path, Account] = {}
        self._turn = 0
        self._listing: Any = None  # fleet.FleetListing: a glob's accounts across the hosts (server.state)
        self.accounts = self._current()

    def share(self, rt: Any) -> AccountSet:
        """With `server.state` and a glob, the accounts are the fleet's: those the shared store
        lists and this host's files (fleet.FleetListing), named alike on every host. Only for
        kinds whose accounts keep their credentials there (iFlow's API-key files stay local)."""
        pattern = os.path.expanduser(self.p.credentials or self._default or "")
        if (url := state_url(rt)) and self._fixed is None and glob.has_magic(pattern):
            from llmgate.credentials import fleet

            probe = self._make(Path(pattern))  # made, not used: nothing is read
            if isinstance(getattr(probe, "creds", None), fleet.FleetCredentials):
                from llmgate.providers import PROVIDER_TYPES

                self._listing = fleet.FleetListing(fleet.shared_fences(url), self.p.id,
                                                   bundle=PROVIDER_TYPES[self.p.type].bundle)
                self.accounts = self._current()
        return self

    def _current(self) -> list[Account]:
        if self._fixed is not None:
            return self._fixed
        paths = credential_paths(self.p, self._default)
        if self._listing is not None:
            paths = self._fleet_paths(paths)
        self._by_path = {path: self._by_path.get(path) or self._make(path) for path in paths}
        return list(self._by_path.values())

    def _fleet_paths(self, local: list[Path]) -> list[Path]:
        """One path per account of the fleet: the local file, else where the glob would put it
        (a name only: the gateway reads the store, not the file)."""
        from llmgate.credentials.fleet import account_name

        mine = {account_name(path): path for path in local}
        pattern = Path(os.path.expanduser(self.p.credentials or self._default or ""))
        return [mine.get(a) or pattern.parent / (a + pattern.suffix) for a in self._listing.names(mine)]

    def current(self) -> list[Account]:
        """The accounts as the files are now (a glob read again): for reports, between requests."""
        self.accounts = self._current()
        return self.accounts

    def pick(self, open_: Callable[[Account], bool] = lambda a: True) -> Account:
        """The next usable account that `open_` allows (not cooling down, not at its limit)."""
        self.accounts = self._current()
        usable = 0
        for _ in range(len(self.accounts)):
            self._turn = (self._turn + 1) % len(self.accounts)
            acct = self.accounts[self._turn]
            if acct.usable():
                usable += 1
                if open_(acct):
                    return acct
        if usable:
            raise GatewayError(429, f"Provider '{self.p.id}': every account is cooling down or busy.",
                               code="pool_cooling")
        why = "; ".join(f"{a.name}: {a.needs_login}" for a in self.accounts) or \
            f"no credentials file matches {self.p.credentials or self._default}" + \
            (f" and the shared store lists none: llmgate credentials import {self.p.id} --file <file>"
             if self._listing is not None else "")
        raise GatewayError(503, f"Provider '{self.p.id}': no account can be used, each needs a new login "
                           f"({why}).", code="provider_login_required")


def journal_dir(rt: Any) -> Path | None:
    """The gateway's own folder for credentials it could not write back: beside its state file."""
    store = getattr(getattr(rt, "pool", None), "store", None)
    return store.path.parent / "llmgate-credentials" if store is not None else None


def state_url(rt: Any) -> str | None:
    """`server.state` of the running gateway (None: each host uses its own credentials files)."""
    server = getattr(getattr(rt, "settings", None), "server", None)
    return getattr(server, "state", None)


def credential_paths(p: ProviderSettings, default: str | None) -> list[Path]:
    """The files a provider entry names: its `credentials` (a path or a glob) or the default."""
    pattern = os.path.expanduser(p.credentials or default or "")
    if not pattern:
        return []
    if glob.has_magic(pattern):
        return [Path(f) for f in sorted(glob.glob(pattern))]
    return [Path(pattern)]
