"""Addon: loads proxy.yaml (option gateway_config) and reloads it when it changes."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

from mitmproxy import ctx, exceptions

from llmgate.operations import first_run
from llmgate.runtime import Runtime
from llmgate.settings import ConfigError, GatewaySettings, load_settings

log = logging.getLogger("llmgate")

POLL_SECONDS = 1.0
# A reload that takes away every client key, admin key or provider is more often a file caught
# mid-write than a decision: it waits until the file has stopped changing for this long.
SETTLE_SECONDS = 3.0


class ConfigWatch:
    def __init__(self, rt: Runtime, poll_seconds: float = POLL_SECONDS, settle_seconds: float = SETTLE_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 detect: Callable[[], first_run.Detection] = first_run.detect):
        self.rt = rt
        rt.reload = self._apply
        rt.first_run = None  # what `auto: true` found (listings.health shows it)
        self.detect = detect
        self._file: GatewaySettings | None = None  # the file's own settings, before anything found is added
        self._detection: first_run.Detection | None = None
        self._detected_at = 0.0
        self.poll_seconds = poll_seconds
        self.settle_seconds = settle_seconds
        self.clock = clock
        self._stamp: tuple | None = None  # of the file last applied or reported broken
        self._held: tuple[tuple | None, float] | None = None  # (stamp, since) of a reload waiting to settle
        self._task: asyncio.Task | None = None
        self._running = False
        self.last_reload: tuple[float, str | None] | None = None  # (when, why it failed): the web console shows it

    def load(self, loader):
        loader.add_option("gateway_config", str, "proxy.yaml", "Path of the gateway's config file (YAML).")

    def configure(self, updated):
        if "gateway_config" in updated:
            try:
                self._apply()
            except ConfigError as e:
                if self._running:  # a `set gateway_config=...` at run time: refuse it
                    raise exceptions.OptionsError(str(e)) from None
                # at start-up an error log line makes mitmproxy exit, without a traceback
                log.error("%s", e)

    def running(self):
        self._running = True
        self._kick_discovery()
        self._task = asyncio.get_running_loop().create_task(self._watch())

    def done(self):
        if self._task:
            self._task.cancel()
        if self.rt.request_log is not None:  # a stop (SIGTERM) writes the rows still queued
            self.rt.request_log.close()

    def _apply(self) -> None:
        """Load and apply now, in the caller's thread: start-up, `set gateway_config`, admin API edits."""
        path = ctx.options.gateway_config
        stamp = _stat(path)
        settings, warnings = load_settings(path)
        # once running (an admin API edit, in the event loop) the last probe of local servers serves
        reuse = settings.auto and self._running and self._detection
        detection = self._detection if reuse else self._detect(settings)
        self._open_files(settings, path)
        self._commit(settings, detection, warnings, path, stamp)

    async def check(self) -> None:
        """One poll: reload if the file changed, reading and opening files in a worker thread so
        flows keep being served. Any failure keeps the last good config and is logged once."""
        path = ctx.options.gateway_config
        stamp = _stat(path)
        if stamp == self._stamp:
            await self._redetect()
            return
        try:
            settings, warnings = await asyncio.to_thread(load_settings, path)
            detection = await asyncio.to_thread(self._detect, settings)
            if self._hold(stamp, first_run.merge(settings, detection)[0] if detection else settings, path):
                return
            await asyncio.to_thread(self._open_files, settings, path)
        except Exception as e:  # noqa: BLE001 - whatever the cause, the last good config stays
            self._stamp, self._held = stamp, None
            self.last_reload = (time.time(), _reason(e))
            log.error("config reload failed, keeping the previous config: %s", _reason(e))
            return
        self._commit(settings, detection, warnings, path, stamp)
        self._kick_discovery()

    def _detect(self, settings: GatewaySettings) -> first_run.Detection | None:
        """What this machine has, when the file asks for it (blocking: probes local servers)."""
        self._detected_at = self.clock()
        return self.detect() if settings.auto else None

    async def _redetect(self) -> None:
        """With `auto: true`, look again now and then: a local server started or a CLI logged in
        since is served without a restart (API keys come from the environment: fixed)."""
        if not (self._file and self._file.auto) or self.clock() - self._detected_at < first_run.REDETECT_SECONDS:
            return
        detection = await asyncio.to_thread(self._detect, self._file)
        if detection and self._detection and detection.found != self._detection.found:
            self._commit(self._file, detection, [], ctx.options.gateway_config, self._stamp)
            self._kick_discovery()

    def _hold(self, stamp: tuple | None, new: GatewaySettings, path: str) -> bool:
        """True while a reload that removes every key or provider waits for the file to settle."""
        removed = _removed(self.rt.settings, new)
        if not removed:
            self._held = None
            return False
        now = self.clock()
        if self._held is None or self._held[0] != stamp:
            self._held = (stamp, now)
            log.warning("config %s removes %s: applied once the file has not changed for %g s",
                        path, "; ".join(removed), self.settle_seconds)
            return True
        if now - self._held[1] < self.settle_seconds:
            return True
        self._held = None
        log.warning("config %s applied: it removes %s", path, "; ".join(removed))
        return False

    def _open_files(self, settings: GatewaySettings, path: str) -> None:
        config_dir = os.path.dirname(os.path.abspath(path))
        self.rt.open_state(settings.server.state_file or os.path.join(config_dir, "llmgate-state.sqlite"),
                           settings.server.state)
        log_file = settings.log.file or os.path.join(config_dir, "llmgate-requests.sqlite")
        self.rt.open_request_log(log_file if settings.log.enabled else None, settings.log.retention_days,
                                 settings.log.database)

    def _commit(self, file: GatewaySettings, detection: first_run.Detection | None, warnings: list[str], path: str,
                stamp: tuple | None) -> None:
        self._stamp, self._file, self._detection = stamp, file, detection
        self.last_reload = (time.time(), None)
        settings, report = first_run.merge(file, detection) if detection else (file, None)
        old = {p.id: p for p in self.rt.settings.providers}
        self.rt.settings, self.rt.first_run = settings, report
        # discovered model lists stay valid only for providers whose settings did not change
        self.rt.catalog.forget({p.id for p in settings.providers if old.get(p.id) == p})
        for w in warnings:
            log.warning("config: %s", w)
        log.info(
            "config %s: %d provider(s): %s", path, len(settings.providers),
            ", ".join(f"{p.id} ({p.type})" for p in settings.providers) or "-",
        )
        for level, line in report.lines() if report else ():
            log.log(level, "%s", line)

    def _kick_discovery(self) -> None:
        from llmgate.providers import PROVIDER_TYPES

        loop = asyncio.get_running_loop()
        for p in self.rt.settings.providers:
            if p.enabled and self.rt.catalog.stale(p):
                loop.create_task(self.rt.catalog.refresh(p))
            kind = PROVIDER_TYPES.get(p.type)
            if self.rt.settings.server.state and p.enabled and kind is not None and kind.accounts:
                self.rt.account_set(p, kind)  # a fleet's glob entry lists the shared store's accounts now

    async def _watch(self) -> None:
        last_error = None
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.check()
            except Exception as e:  # noqa: BLE001 - hot reload is how an operator repairs things: keep it alive
                if _reason(e) != last_error:
                    last_error = _reason(e)
                    log.error("config watcher: %s (still watching)", last_error)


def _stat(path: str) -> tuple | None:
    try:
        st = os.stat(path)
        return st.st_mtime_ns, st.st_size, st.st_ino
    except OSError:
        return None


def _reason(e: Exception) -> str:
    return str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}"


def _removed(old: GatewaySettings, new: GatewaySettings) -> list[str]:
    """What a new config takes away entirely, by name (never a key itself)."""
    out = []
    if old.server.api_keys and not new.server.api_keys:
        names = ", ".join(name for _, name in old.server.key_ids())
        out.append(f"every client key ({names}), so clients need no key")
    if old.server.admin_keys and not new.server.admin_keys:
        out.append(f"every admin key ({len(old.server.admin_keys)}), so the admin API is loopback-only")
    if old.providers and not new.providers:
        out.append("every provider (" + ", ".join(p.id for p in old.providers) + ")")
    return out
