"""Subscription logins from the console, with the code `llmgate login` runs (llmgate/credentials/login.py),
each in a daemon thread (a pending login never holds up the gateway's exit):

- Qwen: the OAuth device flow; the page shows its URL and code.
- Gemini CLI, Antigravity, iFlow: the authorization-code flow on a loopback callback. The page
  shows the login URL; Google (or iFlow) sends the browser back to a callback server the gateway
  opens on its own 127.0.0.1, so the browser must run on the gateway's machine (or forward the port).

And a credentials file uploaded from the browser: checked (size, a JSON object with the fields
that kind reads) and written atomically, mode 0600, where the entry reads it. Secrets are never
echoed: answers name the file and the missing field only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from llmgate.console.pages import when
from llmgate.credentials import login, oauth
from llmgate.credentials.store import write_atomic
from llmgate.errors import GatewayError
from llmgate.providers import PROVIDER_TYPES
from llmgate.request_path.upstream import proxy_setting

log = logging.getLogger("llmgate")

SHOWN_WITHIN = 30.0  # seconds the start call waits for the URL (and code) to show
LOGIN_TIMEOUT = 600.0  # seconds a started login waits for the browser
URL = re.compile(r"https?://\S+")
CLIENTS = {"qwen": oauth.QWEN, "gemini-cli": oauth.GEMINI_CLI, "antigravity": oauth.ANTIGRAVITY,
           "iflow": oauth.IFLOW}
# loopback flows: (callback path, port) as the official CLIs use them (`llmgate login` has the same)
CALLBACKS = {"gemini-cli": ("/oauth2callback", 0), "antigravity": ("/oauth-callback", 51121),
             "iflow": ("/oauth2callback", 11451)}
GOOGLE = ("auth_url", "token_url", "port")
# what a start may override, as `llmgate login` takes it (a mirror, a test double; the port: a free one)
OVERRIDES = {"qwen": ("token_url", "device_url"), "gemini-cli": GOOGLE, "antigravity": GOOGLE,
             "iflow": ("auth_url", "token_url", "userinfo_url", "port")}
UPLOAD_MAX = 64 * 1024  # bytes of JSON: credentials files are a few hundred
# the string fields each kind's accounts read from their file (dotted: nested)
SHAPES = {"qwen": ("refresh_token",), "gemini-cli": ("refresh_token",), "antigravity": ("refresh_token",),
          "iflow": ("apiKey",), "kiro": ("refreshToken",), "copilot": ("oauth_token",),
          "codex": ("tokens.refresh_token",)}


def account_times(account: Any) -> dict[str, str | None]:
    """When the account's token expires and its credentials file was last written (a refresh or login)."""
    creds = getattr(account, "creds", None)
    if creds is None:
        return {}
    try:
        written = os.stat(creds.path).st_mtime
    except OSError:
        written = None
    expires = creds.expires_at()
    return {"expiry": when(expires) + " UTC" if expires else None,
            "refreshed": when(written) + " UTC" if written else None}


def login_file(pattern: str, now: float) -> Path:
    """The file a new login or upload writes: the entry's file, or a new one its glob takes in
    (`dir/*.json` -> `dir/login-<time>.json`)."""
    path = Path(os.path.expanduser(pattern))
    if not any(c in pattern for c in "*?["):
        return path
    name = path.name
    if any(c in str(path.parent) for c in "*?[") or name.count("*") != 1 or any(c in name for c in "?["):
        raise GatewayError(400, "This entry's credentials glob names no single folder to write a new file in: "
                           "log in with `llmgate login <kind> --credentials <file>`.", code="invalid_request")
    stamp = time.strftime("login-%Y%m%d-%H%M%S", time.gmtime(now))
    new, n = path.parent / name.replace("*", stamp), 1
    while new.exists():  # another account's file from the same second: never replaced
        n += 1
        new = path.parent / name.replace("*", f"{stamp}-{n}")
    return new


def check_shape(kind: str, data: Any) -> dict[str, Any]:
    """`data` if it is a credentials file of this kind: a JSON object holding the fields its accounts read."""
    if not isinstance(data, dict):
        raise GatewayError(400, "A credentials file is a JSON object.", code="invalid_credentials")
    for dotted in SHAPES[kind]:
        value: Any = data
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, str) or not value:
            raise GatewayError(400, f"This is not a {kind} credentials file: it has no {dotted}.",
                               code="invalid_credentials")
    return data


def _in_daemon_thread(fn: Callable[[], Any]) -> asyncio.Future:
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if not done.cancelled():
            done.set_exception(error) if error is not None else done.set_result(result)

    def run() -> None:
        try:
            result, error = fn(), None
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
            result, error = None, e
        loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="llmgate-login", daemon=True).start()
    return done


def _options(options: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(allowed))
    port = options.get("port", 0)
    if unknown or any(not isinstance(v, str) for k, v in options.items() if k != "port") or \
            type(port) is not int or not 0 <= port <= 65535:
        raise GatewayError(400, f"This login takes {', '.join(allowed)} (URLs; port: a number 0-65535)"
                           + (f", not {', '.join(unknown)}" if unknown else "") + ".", code="invalid_request")
    return options


class Logins:
    def __init__(self) -> None:
        self.status: dict[str, dict[str, Any]] = {}  # provider id -> {state, message, url}
        self._tasks: set[asyncio.Task] = set()
        self._writing = asyncio.Lock()

    def _entry(self, rt: Any, pid: str, kinds: Any) -> Any:
        p = rt.settings.provider(pid)
        if p is None or p.type not in kinds:
            raise GatewayError(404, f"No provider '{pid}' whose login the console runs "
                               f"({', '.join(sorted(kinds))}).", code="provider_not_found")
        return p

    async def start(self, rt: Any, pid: str, options: dict[str, Any]) -> dict[str, Any]:
        """Start the entry's login (options: endpoint overrides and the callback port, as
        `llmgate login` takes them); answers once its URL shows, or at once if one is running."""
        p = self._entry(rt, pid, CLIENTS)
        current = self.status.get(pid)
        if current is not None and current["state"] in ("starting", "waiting"):
            return current
        run = self._flow(p, options, rt.settings.server)
        entry = self.status[pid] = {"state": "starting", "message": "Starting the login…", "url": None}
        loop, shown = asyncio.get_running_loop(), asyncio.Event()

        def say(message: str) -> None:  # in the login's thread
            m = URL.search(message)
            entry.update(state="waiting", message=" ".join(message.split()), url=m.group(0) if m else None)
            loop.call_soon_threadsafe(shown.set)

        async def finish() -> None:
            try:
                path = await _in_daemon_thread(lambda: run(say))
                entry.update(state="done", message=f"Logged in; credentials written to {path}.", url=None)
            except (login.LoginError, OSError, httpx.HTTPError) as e:
                entry.update(state="failed", message=f"Login failed: {e}", url=None)
            except Exception as e:  # e.g. a malformed endpoint URL: said, never left "waiting"
                log.exception("console login for %s failed", p.id)
                entry.update(state="failed", message=f"Login failed ({type(e).__name__}); see the gateway log.",
                             url=None)
            shown.set()

        task = loop.create_task(finish())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            await asyncio.wait_for(shown.wait(), SHOWN_WITHIN)
        except TimeoutError:
            pass
        return entry

    def _flow(self, p: Any, options: dict[str, Any], server: Any) -> Callable[[login.Say], Path]:
        """The login to run for entry `p`, as a function of where to say its URL."""
        kind, base = p.type, CLIENTS[p.type]
        o = _options(options, OVERRIDES[kind])
        path = login_file(p.credentials or PROVIDER_TYPES[kind].credentials or "", time.time())
        token_url = o.get("token_url") or p.token_url or base.token_url
        device = token_url.removesuffix("token") + "device/code" if kind == "qwen" else None  # Qwen's pair
        client = dataclasses.replace(base, token_url=token_url, auth_url=o.get("auth_url") or base.auth_url,
                                     device_url=o.get("device_url") or device)
        proxy = proxy_setting(p, server) or "none"  # as the entry's own calls go (login's None means the environment)
        callback, port = CALLBACKS.get(kind, ("", 0))
        port = o.get("port", port)

        def run(say: login.Say) -> Path:
            if kind == "qwen":
                login.qwen_device_login(client, path, say, proxy=proxy)
            elif kind == "iflow":
                from llmgate.operations.cli import IFLOW_USERINFO

                login.iflow_login(client, o.get("userinfo_url") or IFLOW_USERINFO, path, say, port, False,
                                  LOGIN_TIMEOUT, proxy)
            else:
                login.google_login(client, path, say, callback, port, False, LOGIN_TIMEOUT, proxy)
            return path
        return run

    async def upload(self, rt: Any, pid: str, body: dict[str, Any]) -> dict[str, Any]:
        """Write an uploaded credentials file ({"credentials": the file's JSON}) where the entry reads it."""
        p = self._entry(rt, pid, SHAPES)
        data = body.get("credentials")
        if len(json.dumps(data)) > UPLOAD_MAX:
            raise GatewayError(413, f"A credentials file is at most {UPLOAD_MAX // 1024} KiB.", code="too_large")
        data = check_shape(p.type, data)
        async with self._writing:  # the file name is free until written: one upload at a time
            path = login_file(p.credentials or PROVIDER_TYPES[p.type].credentials or "", time.time())
            await asyncio.to_thread(write_atomic, path, data)
        return {"ok": True, "message": f"Credentials written to {path}."}
