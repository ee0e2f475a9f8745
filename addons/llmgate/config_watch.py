"""Addon: loads proxy.yaml (option gateway_config) and reloads it when it changes."""

from __future__ import annotations

import asyncio
import logging
import os

from mitmproxy import ctx, exceptions

from llmgate.runtime import Runtime
from llmgate.settings import ConfigError, load_settings

log = logging.getLogger("llmgate")

POLL_SECONDS = 1.0


class ConfigWatch:
    def __init__(self, rt: Runtime):
        self.rt = rt
        rt.reload = self._apply
        self._stamp: tuple | None = None
        self._task: asyncio.Task | None = None
        self._running = False

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

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(ctx.options.gateway_config)
            return st.st_mtime_ns, st.st_size, st.st_ino
        except OSError:
            return None

    def _apply(self) -> None:
        stamp = self._stat()
        settings, warnings = load_settings(ctx.options.gateway_config)
        self._stamp = stamp
        old = {p.id: p for p in self.rt.settings.providers}
        self.rt.settings = settings
        config_dir = os.path.dirname(os.path.abspath(ctx.options.gateway_config))
        self.rt.open_state(settings.server.state_file or os.path.join(config_dir, "llmgate-state.sqlite"))
        log_file = settings.log.file or os.path.join(config_dir, "llmgate-requests.sqlite")
        self.rt.open_request_log(log_file if settings.log.enabled else None, settings.log.retention_days)
        # discovered model lists stay valid only for providers whose settings did not change
        self.rt.catalog.forget({p.id for p in settings.providers if old.get(p.id) == p})
        for w in warnings:
            log.warning("config: %s", w)
        log.info(
            "config %s: %d provider(s): %s", ctx.options.gateway_config, len(settings.providers),
            ", ".join(f"{p.id} ({p.type})" for p in settings.providers) or "-",
        )

    def _kick_discovery(self) -> None:
        loop = asyncio.get_running_loop()
        for p in self.rt.settings.providers:
            if p.enabled and self.rt.catalog.stale(p):
                loop.create_task(self.rt.catalog.refresh(p))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            stamp = self._stat()
            if stamp is None or stamp == self._stamp:
                continue
            try:
                self._apply()
            except ConfigError as e:
                self._stamp = stamp  # don't re-report the same broken file every second
                log.error("config reload failed, keeping the previous config: %s", e)
                continue
            self._kick_discovery()
