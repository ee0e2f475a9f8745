"""Addon: bounds the flow store of mitmweb (or mitmproxy's console), oldest flows first.

Option `gateway_max_flows` (default 2000, 0 = unlimited). Each new flow is noted, in
arrival order, when the `view` addon adds it to its store; once the store holds more
than the limit, the oldest flows are removed through `View.remove`, which also tells
mitmweb's clients. Flows still in progress (live, e.g. a stream being relayed or an
intercepted request) and flows the user marked are never removed; they are skipped
and looked at again later. mitmdump has no view, and then this addon does nothing.

Cost per flow is O(1) amortized: an insertion-ordered dict of flow ids, trimmed from
the front, no scan of the store.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from mitmproxy import ctx, exceptions, flow

log = logging.getLogger("llmgate")

OPTION = "gateway_max_flows"
# flows looked at (and skipped, being live or marked) per trim beyond what must go
_SKIP_BUDGET = 256


class FlowLimit:
    def __init__(self) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()  # oldest first

    def load(self, loader) -> None:
        loader.add_option(
            OPTION, int, 2000,
            "Most flows mitmweb keeps; the oldest finished, unmarked ones are removed "
            "beyond it. 0 = unlimited. No effect in mitmdump.",
        )

    def configure(self, updated) -> None:
        if OPTION in updated:
            if ctx.options.gateway_max_flows < 0:
                raise exceptions.OptionsError(f"{OPTION} must be 0 (unlimited) or more")
            if (view := self._view()) is not None:
                self._trim(view)

    @staticmethod
    def _view():
        return ctx.master.addons.get("view")

    # the hooks in which the view adds a flow to its store (it runs before script addons)
    def requestheaders(self, f: flow.Flow) -> None:
        self._track(f)

    def tcp_start(self, f: flow.Flow) -> None:
        self._track(f)

    def udp_start(self, f: flow.Flow) -> None:
        self._track(f)

    def dns_request(self, f: flow.Flow) -> None:
        self._track(f)

    def _track(self, f: flow.Flow) -> None:
        view = self._view()
        if view is None or view.get_by_id(f.id) is not f:
            return
        if f.id in self._ids:
            self._ids.move_to_end(f.id)  # e.g. a replay: counts as new again
        else:
            self._ids[f.id] = None
        self._trim(view)
        # ids of flows removed by other means (view.clear, the UI's delete) linger until
        # popped; sweep them when they outnumber the store, amortized O(1) per flow
        if len(self._ids) > 2 * view.store_count() + 64:
            self._ids = OrderedDict((i, None) for i in self._ids if view.get_by_id(i) is not None)

    def _trim(self, view) -> None:
        limit = ctx.options.gateway_max_flows
        if limit <= 0:
            return
        excess = view.store_count() - limit
        if excess <= 0:
            return
        live: list[str] = []
        marked: list[str] = []
        removed = 0
        budget = min(len(self._ids), excess + _SKIP_BUDGET)
        while removed < excess and budget > 0 and self._ids:
            budget -= 1
            fid, _ = self._ids.popitem(last=False)
            f = view.get_by_id(fid)
            if f is None:
                continue  # already gone
            if f.marked:
                marked.append(fid)
            elif f.live:
                live.append(fid)
            else:
                view.remove([f])  # one at a time: a list of several logs an alert
                removed += 1
        # live flows finish soon: back to the front, oldest first, to go next time;
        # marked ones stay indefinitely: to the back, so they are not rescanned per flow
        for fid in reversed(live):
            self._ids[fid] = None
            self._ids.move_to_end(fid, last=False)
        for fid in marked:
            self._ids[fid] = None
        if removed > 1:
            log.info("flow limit %d: removed the %d oldest flows", limit, removed)
