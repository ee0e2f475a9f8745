"""Subscription logins started from the console: Qwen's device flow (llmgate/credentials/login.py, the same
code `llmgate login qwen` runs) in a worker thread, its URL and code shown on the page."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from typing import Any

import httpx

from llmgate.credentials import login

from llmgate.credentials import oauth
from llmgate.console.pages import when
from llmgate.errors import GatewayError
from llmgate.providers import PROVIDER_TYPES

SHOWN_WITHIN = 30.0  # seconds the start call waits for the device code to show
URL = re.compile(r"https?://\S+")


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


class Logins:
    def __init__(self) -> None:
        self.status: dict[str, dict[str, Any]] = {}  # provider id -> {state, message, url}
        self._tasks: set[asyncio.Task] = set()

    async def start_qwen(self, rt: Any, pid: str) -> dict[str, Any]:
        p = rt.settings.provider(pid)
        if p is None or p.type != "qwen":
            raise GatewayError(404, f"No qwen provider '{pid}'.", code="provider_not_found")
        current = self.status.get(pid)
        if current is not None and current["state"] in ("starting", "waiting"):
            return current
        path = os.path.expanduser(p.credentials or PROVIDER_TYPES["qwen"].credentials)
        if any(c in path for c in "*?["):
            raise GatewayError(400, "This entry reads a glob of credentials files: log in with "
                               "`llmgate login qwen --credentials <file>`.", code="invalid_request")
        token_url = p.token_url or oauth.QWEN.token_url
        client = dataclasses.replace(oauth.QWEN, token_url=token_url,
                                     device_url=token_url.removesuffix("token") + "device/code")
        entry = self.status[pid] = {"state": "starting", "message": "Asking Qwen for a device code…", "url": None}
        loop, shown = asyncio.get_running_loop(), asyncio.Event()

        def say(message: str) -> None:  # in the login's thread
            m = URL.search(message)
            entry.update(state="waiting", message=message, url=m.group(0) if m else None)
            loop.call_soon_threadsafe(shown.set)

        async def run() -> None:
            try:
                await asyncio.to_thread(login.qwen_device_login, client, path, say)
                entry.update(state="done", message=f"Logged in; credentials written to {path}.", url=None)
            except (login.LoginError, OSError, httpx.HTTPError) as e:
                entry.update(state="failed", message=f"Login failed: {e}", url=None)
            shown.set()

        task = loop.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            await asyncio.wait_for(shown.wait(), SHOWN_WITHIN)
        except asyncio.TimeoutError:
            pass
        return entry
