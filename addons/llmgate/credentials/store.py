"""OAuth credentials files, as the official CLIs write them: read, kept fresh, written back safely.

- The file is re-read whenever it changes on disk (the user logged in again with the CLI). Only a
  regular file of at most 1 MiB is read (a FIFO or /dev/zero there must not hang or fill memory).
- Writes are atomic: a temp file in the same folder, fsync, rename over, fsync the folder;
  mode 0600; fields the gateway does not know are kept; expiry stays in the CLI's unit
  (epoch milliseconds in `expiry_date`, as Qwen Code and Gemini CLI write it). A symlinked
  file is written through to its target (the link stays a link); root keeps the file's owner.
- Refresh is single-flight: concurrent requests share one refresh; across processes a lock
  file beside the credentials (Qwen Code's own ~/.qwen/oauth_creds.lock convention) keeps the
  CLI and the gateway from racing on a rotating refresh token. After taking the lock the file
  is read again: if someone else already refreshed, their token is used. The lock names its
  owner (pid, host, process start time): one left by a dead process on this host is taken at
  once; a foreign lock (Qwen Code writes a bare UUID) is broken after LOCK_STALE seconds.
- A refresh's answer is kept in memory and journalled (fsync) in the gateway's own folder
  before the credentials file is written; the journal goes once the file holds the tokens.
  If the file cannot be written (read-only, full disk), the tokens stay in use from memory,
  the failure is logged as an error and the write retried with backoff; after a crash or
  restart the journal is applied to the file when the file still holds the tokens it replaced.
  So a rotated refresh token is never sent again. What cannot be helped: the issuer rotated
  but its answer never reached the gateway (killed or cut off mid-request).
- A refresh the token endpoint refuses for good (invalid_grant, 400/401) marks the account as
  needing a new login, with the command that fixes it.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import secrets
import socket
import stat
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("llmgate")

REFRESH_SKEW = 30.0  # seconds before expiry a token counts as expired (what Qwen Code uses)
LOCK_STALE = 10.0  # seconds after which a lock file of unknown owner is broken (Qwen Code's rule)
LOCK_WAIT = 15.0  # seconds to wait for another process's refresh
MAX_FILE = 1 << 20  # bytes: credentials files are a few hundred
RETRY_FIRST, RETRY_MAX = 1.0, 300.0  # seconds between attempts to write tokens held in memory


class LoginRequired(Exception):
    """The account cannot be used until someone logs in again."""


class RefreshFailed(Exception):
    """A refresh failed for now (network, 5xx): the next request tries again."""


class Unwritable(Exception):
    """No lock can be taken (beside the file nor in the gateway's folder): refreshing now could
    race another process on a rotating token, so the account waits for a writable folder."""


def read_json(path: Path, nofollow: bool = False) -> Any:
    """A small regular file's JSON (ValueError when it is not one, OSError when unreadable)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | (os.O_NOFOLLOW if nofollow else 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        raw = f.read(MAX_FILE + 1)
    if len(raw) > MAX_FILE:
        raise ValueError(f"larger than {MAX_FILE} bytes")
    return json.loads(raw)


def _check_symlink(path: Path) -> None:
    """The kernel's protected_symlinks rule, which realpath and a rename would bypass: a symlink in
    a sticky world-writable folder (/tmp) is written through only if it is ours or the folder owner's
    (else another user's link would have root's export replace any file)."""
    try:
        link, folder = os.lstat(path), os.stat(path.parent)
    except FileNotFoundError:
        return
    shared = folder.st_mode & stat.S_ISVTX and folder.st_mode & stat.S_IWOTH
    if stat.S_ISLNK(link.st_mode) and shared and link.st_uid not in (os.geteuid(), folder.st_uid):
        raise PermissionError(errno.EACCES, "another user's symlink in a shared folder: not written through",
                              str(path))


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so that readers only ever see the old or the new file, mode 0600. A symlink
    is written through: the temp file goes beside the target, which the rename replaces."""
    _check_symlink(Path(path))
    target = Path(os.path.realpath(path))
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        owner = os.stat(target)
    except FileNotFoundError:
        owner = None
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            if owner and os.geteuid() == 0:  # root refreshing a user's file must leave it theirs
                os.fchown(f.fileno(), owner.st_uid, owner.st_gid)
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _start_time(pid: int) -> str | None:
    """A process's start time (clock ticks since boot), which tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read(4096).rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _owner_gone(text: str) -> bool | None:
    """True: the lock's owner (a gateway on this host) is dead; False: alive; None: cannot tell
    (a foreign lock such as Qwen Code's UUID, or another host's)."""
    try:
        owner = json.loads(text)
    except ValueError:
        return None
    pid = owner.get("pid") if isinstance(owner, dict) else None
    if type(pid) is not int or pid <= 0 or owner.get("host") != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    start = _start_time(pid)
    return start is not None and owner.get("start") not in (None, start)


def _read_lock(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        return f.read(512).decode(errors="replace")


class FileLock:
    """An exclusive lock file (O_CREAT|O_EXCL), as Qwen Code takes it, naming its owner. When
    the file's folder cannot hold it (read-only, full), `fallback` (the gateway's own folder)
    does, which still keeps other gateway processes out; when neither can: Unwritable."""

    def __init__(self, path: Path, fallback: Path | None = None):
        self.path = path
        self.fallback = fallback
        self._id = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                               "start": _start_time(os.getpid()), "id": secrets.token_hex(8)})

    async def __aenter__(self) -> FileLock:
        deadline = time.monotonic() + LOCK_WAIT
        failed: list[str] = []
        while True:
            try:
                self._create()
                return self
            except FileExistsError:
                if self._break_stale():
                    continue
                if time.monotonic() > deadline:
                    raise RefreshFailed(f"{self.path} stayed locked for {LOCK_WAIT:g} s") from None
                await asyncio.sleep(0.1)
            except OSError as e:
                failed.append(f"{self.path} ({e.strerror or e})")
                if self.fallback is None or self.path == self.fallback:
                    raise Unwritable("cannot create the lock file " + " nor ".join(failed)) from None
                log.warning("credentials lock %s cannot be created (%s); locking %s instead",
                            self.path, e.strerror or e, self.fallback)
                self.path = self.fallback

    def _create(self) -> None:
        if self.path == self.fallback:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, self._id.encode())
        except OSError:  # a full disk: an empty lock would look foreign and cost others 10 s
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise
        os.close(fd)

    def _break_stale(self) -> bool:
        """Remove the lock if its owner is gone; True when the caller should try again."""
        try:
            age = time.time() - os.lstat(self.path).st_mtime
        except FileNotFoundError:
            return True
        except OSError:  # cannot even tell its age: wait for it
            return False
        try:
            text = _read_lock(self.path)
        except FileNotFoundError:
            return True
        except OSError:  # a symlink or unreadable: judged by age alone
            text = ""
        gone = _owner_gone(text)
        if not (gone or (gone is None and age > LOCK_STALE)):
            return False
        log.warning("credentials lock %s: its owner is gone, taking it over", self.path)
        try:
            if not text or _read_lock(self.path) == text:  # not a lock someone just took
                self.path.unlink()
        except FileNotFoundError:
            pass
        return True

    async def __aexit__(self, *exc: object) -> None:
        try:
            if _read_lock(self.path) == self._id:
                self.path.unlink()
        except OSError:
            pass


Refresher = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""(current file content) -> the new fields; raises LoginRequired or RefreshFailed."""


def _digest(value: Any) -> str:
    """Names a field's old value in the journal without keeping it."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


class CredentialsFile:
    """One account's credentials file. `journal_dir`: the gateway's own folder, for tokens the
    file could not take yet and for a lock when the file's folder cannot hold one."""

    def __init__(self, path: str | Path, login_hint: str, expiry_key: str = "expiry_date",
                 token_key: str = "access_token", journal_dir: Path | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.path = Path(path).expanduser()
        self.lock_path = self.path.with_suffix(".lock")
        self.login_hint = login_hint  # the command that logs this account in again
        self.expiry_key = expiry_key  # epoch milliseconds, or an ISO-8601 string (Kiro's expiresAt)
        self.token_key = token_key
        self.journal_dir = journal_dir
        self.data: dict[str, Any] = {}
        self.needs_login: str | None = None  # why, when a refresh was refused
        self._stamp: tuple[int, int] | None = None
        self._refreshing: asyncio.Future | None = None
        # tokens the file does not hold yet: {"was": {field: digest of the replaced value}, "new": {...}}
        self._pending: dict[str, Any] | None = None
        self._journal_read = False
        self._clock = clock
        self._retry_at, self._backoff = 0.0, RETRY_FIRST
        self._writing = asyncio.Lock()

    @property
    def name(self) -> str:
        return str(self.path)

    def _journal(self, suffix: str = ".json") -> Path | None:
        if self.journal_dir is None:
            return None
        key = hashlib.sha256(os.path.realpath(self.path).encode()).hexdigest()[:24]
        return self.journal_dir / (key + suffix)

    def reload_if_changed(self) -> None:
        """Read the file when it is new or changed (a fresh login clears needs_login)."""
        if not self._journal_read:
            self._journal_read = True
            self._pending = self._read_journal()
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self.data = None, {}
            self.needs_login = f"no credentials file at {self.path}"
            return
        except OSError as e:
            self.needs_login = f"cannot read {self.path}: {e.strerror or e}"
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            data = read_json(self.path)
        except (OSError, ValueError) as e:
            self.needs_login = f"cannot read {self.path}: {e}"
            return
        if not isinstance(data, dict):
            self.needs_login = f"{self.path} does not hold a JSON object"
            return
        self._stamp, self.data = stamp, data
        self.needs_login = None
        self._reconcile()

    def _reconcile(self) -> None:
        """Tokens held back from the file meet what the file now says."""
        p = self._pending
        if p is None:
            return
        new = p["new"]
        if all(self.data.get(k) == v for k, v in new.items()):  # the file has them
            self._written()
        elif all(_digest(self.data.get(k)) == p["was"].get(k) for k in new):  # still the replaced ones
            self.data = {**self.data, **new}
        else:  # the file changed since (a new login): it wins
            log.warning("credentials %s changed on disk; tokens held for it are dropped", self.path)
            self._written()

    def _read_journal(self) -> dict[str, Any] | None:
        path = self._journal()
        try:
            j = read_json(path, nofollow=True) if path else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.error("credentials journal %s unreadable (%s), ignored", path, e)
            return None
        if not (isinstance(j, dict) and isinstance(j.get("new"), dict) and isinstance(j.get("was"), dict)
                and j.get("path") == str(self.path)):
            return None
        log.warning("credentials %s: tokens of an unfinished write found in %s", self.path, path)
        return {"was": j["was"], "new": j["new"]}

    def _written(self) -> None:
        self._pending, self._backoff, self._retry_at = None, RETRY_FIRST, 0.0
        path = self._journal()
        if path:
            try:
                path.unlink(missing_ok=True)
            except OSError as e:
                log.error("credentials journal %s cannot be removed: %s", path, e.strerror or e)

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

    def _write(self, data: dict[str, Any], journal: dict[str, Any] | None) -> tuple[int, int]:
        """(worker thread) The journal first, then the file; the file's new stamp."""
        jpath = self._journal()
        if journal is not None and jpath is not None:  # again on retries: its folder may be back
            try:
                write_atomic(jpath, {"path": str(self.path), **journal})
            except OSError as e:
                log.error("credentials %s: cannot journal refreshed tokens to %s (%s)", self.path, jpath,
                          e.strerror or e)
        write_atomic(self.path, data)
        st = self.path.stat()
        return st.st_mtime_ns, st.st_size

    async def _persist(self) -> None:
        """Write the tokens held in memory; on failure keep them and retry later (backoff)."""
        self._retry_at = self._clock() + self._backoff  # concurrent requests do not pile up writes
        async with self._writing:  # in order: an older write finishing last would bring back a dead token
            pending, data = self._pending, self.data
            if pending is None:
                return
            try:
                stamp = await asyncio.to_thread(self._write, data, pending)
            except OSError as e:
                self._write_failed(e)
                return
        if self._pending is pending:
            self._stamp = stamp
            self._written()

    def _write_failed(self, e: OSError) -> None:
        jpath = self._journal()
        kept = "the gateway's journal" if jpath and jpath.exists() else "memory only (a restart loses them)"
        log.error("credentials %s: cannot write the refreshed tokens (%s); they stay in use from %s; "
                  "retrying in %g s", self.path, e.strerror or e, kept, self._backoff)
        self._backoff = min(self._backoff * 2, RETRY_MAX)

    async def access(self, refresh: Refresher, force: bool = False, stale: Any = None) -> dict[str, Any]:
        """The credentials, refreshed first when (nearly) expired or when `force` (after a 401;
        `stale`: the token refused, when known). Raises LoginRequired, RefreshFailed or Unwritable."""
        self.reload_if_changed()
        if self.needs_login:
            raise LoginRequired(self.needs_login)
        if self._pending is not None and self._clock() >= self._retry_at:
            await self._persist()
        if self.fresh() and not (force and stale in (None, self.data.get(self.token_key))):
            return self.data  # not forced, or the refused token was replaced meanwhile
        if self._refreshing is None or self._refreshing.done():
            stale_token = self.data.get(self.token_key)
            self._refreshing = asyncio.ensure_future(self._refresh(refresh, stale_token))
        return await asyncio.shield(self._refreshing)

    async def _refresh(self, refresh: Refresher, stale_token: Any) -> dict[str, Any]:
        async with FileLock(self.lock_path, self._journal(".lock")):
            self.reload_if_changed()  # another process may have refreshed while we waited
            if self.needs_login:
                raise LoginRequired(self.needs_login)
            if self.fresh() and self.data.get(self.token_key) != stale_token:
                return self.data
            base = dict(self.data)
            try:
                new = await refresh(dict(base))
            except LoginRequired as e:
                self.needs_login = f"{e}. Log in again: {self.login_hint}"
                log.error("credentials %s: %s", self.path, self.needs_login)
                raise LoginRequired(self.needs_login) from None
            # from here the old refresh token is dead: memory first, then journal, then the file
            was, prev = {k: _digest(base.get(k)) for k in new}, self._pending
            if prev is not None:  # the file still holds what the earlier tokens replaced
                was, new = {**was, **prev["was"]}, {**prev["new"], **new}
            self._pending = {"was": was, "new": new}
            self.data = {**base, **new}
            await self._persist()
            log.info("credentials %s refreshed", self.path)
            return self.data
