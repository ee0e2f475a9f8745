"""OAuth credentials files, as the official CLIs write them: read, kept fresh, written back safely.

- The file is re-read whenever it changes on disk (the user logged in again with the CLI).
- Writes are atomic: a temp file in the same folder, fsync, rename over, fsync the folder;
  mode 0600; fields the gateway does not know are kept; expiry stays in the CLI's unit
  (epoch milliseconds in `expiry_date`, as Qwen Code and Gemini CLI write it).
- Refresh is single-flight: concurrent requests share one refresh; across processes a lock
  file beside the credentials (Qwen Code's own ~/.qwen/oauth_creds.lock convention) keeps the
  CLI and the gateway from racing on a rotating refresh token. After taking the lock the file
  is read again: if someone else already refreshed, their token is used.
- The new tokens are on disk before the request that needed them goes out, so a rotated
  refresh token is never lost, even if the process dies right after.
- A refresh the token endpoint refuses for good (invalid_grant, 400/401) marks the account as
  needing a new login, with the command that fixes it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Awaitable, Callable

log = logging.getLogger("llmgate")

REFRESH_SKEW = 30.0  # seconds before expiry a token counts as expired (what Qwen Code uses)
LOCK_STALE = 10.0  # seconds after which a lock file left by a dead process is broken
LOCK_WAIT = 15.0  # seconds to wait for another process's refresh


class LoginRequired(Exception):
    """The account cannot be used until someone logs in again."""


class RefreshFailed(Exception):
    """A refresh failed for now (network, 5xx): the next request tries again."""


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so that readers only ever see the old or the new file, mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class FileLock:
    """An exclusive lock file (O_CREAT|O_EXCL), as Qwen Code takes it; a lock older than
    LOCK_STALE seconds is taken to belong to a dead process and broken."""

    def __init__(self, path: Path):
        self.path = path
        self._id = secrets.token_hex(8)

    async def __aenter__(self) -> FileLock:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                try:
                    if time.time() - self.path.stat().st_mtime > LOCK_STALE:
                        self.path.unlink(missing_ok=True)
                        continue
                except FileNotFoundError:
                    continue
                if time.monotonic() > deadline:
                    raise RefreshFailed(f"{self.path} stayed locked for {LOCK_WAIT:g} s") from None
                await asyncio.sleep(0.1)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self._id)
            return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self.path.read_text() == self._id:
                self.path.unlink()
        except FileNotFoundError:
            pass


Refresher = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""(current file content) -> the new content; raises LoginRequired or RefreshFailed."""


class CredentialsFile:
    """One account's credentials file."""

    def __init__(self, path: str | Path, login_hint: str, expiry_key: str = "expiry_date",
                 token_key: str = "access_token"):
        self.path = Path(path).expanduser()
        self.lock_path = self.path.with_suffix(".lock")
        self.login_hint = login_hint  # the command that logs this account in again
        self.expiry_key = expiry_key  # epoch milliseconds, or an ISO-8601 string (Kiro's expiresAt)
        self.token_key = token_key
        self.data: dict[str, Any] = {}
        self.needs_login: str | None = None  # why, when a refresh was refused
        self._stamp: tuple[int, int] | None = None
        self._refreshing: asyncio.Future | None = None

    @property
    def name(self) -> str:
        return str(self.path)

    def reload_if_changed(self) -> None:
        """Read the file when it is new or changed (a fresh login clears needs_login)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self.data = None, {}
            self.needs_login = f"no credentials file at {self.path}"
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as e:
            self.needs_login = f"cannot read {self.path}: {e}"
            return
        if not isinstance(data, dict):
            self.needs_login = f"{self.path} does not hold a JSON object"
            return
        self._stamp, self.data = stamp, data
        self.needs_login = None

    def expires_at(self) -> float | None:
        """Expiry as epoch seconds (the file has milliseconds or ISO-8601), None if unknown."""
        v = self.data.get(self.expiry_key)
        if isinstance(v, str):
            try:
                return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
            except ValueError:
                return None
        return v / 1000 if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    def fresh(self, skew: float = REFRESH_SKEW) -> bool:
        exp = self.expires_at()
        return bool(self.data.get(self.token_key)) and (exp is None or exp - skew > time.time())

    def save(self, data: dict[str, Any]) -> None:
        write_atomic(self.path, data)
        st = self.path.stat()
        self._stamp, self.data = (st.st_mtime_ns, st.st_size), data

    async def access(self, refresh: Refresher, force: bool = False) -> dict[str, Any]:
        """The credentials, refreshed first when (nearly) expired or when `force` (after a 401).
        Raises LoginRequired or RefreshFailed."""
        self.reload_if_changed()
        if self.needs_login:
            raise LoginRequired(self.needs_login)
        if self.fresh() and not force:
            return self.data
        if self._refreshing is None or self._refreshing.done():
            stale_token = self.data.get(self.token_key)
            self._refreshing = asyncio.ensure_future(self._refresh(refresh, stale_token))
        return await asyncio.shield(self._refreshing)

    async def _refresh(self, refresh: Refresher, stale_token: Any) -> dict[str, Any]:
        async with FileLock(self.lock_path):
            self.reload_if_changed()  # another process may have refreshed while we waited
            if self.needs_login:
                raise LoginRequired(self.needs_login)
            if self.fresh() and self.data.get(self.token_key) != stale_token:
                return self.data
            try:
                new = await refresh(dict(self.data))
            except LoginRequired as e:
                self.needs_login = f"{e}. Log in again: {self.login_hint}"
                log.error("credentials %s: %s", self.path, self.needs_login)
                raise LoginRequired(self.needs_login) from None
            await asyncio.to_thread(self.save, {**self.data, **new})
            log.info("credentials %s refreshed", self.path)
            return self.data
