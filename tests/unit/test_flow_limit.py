import pytest
from mitmproxy import exceptions
from mitmproxy.addons.view import View
from mitmproxy.test import taddons, tflow

from llmgate.addons.flow_limit import FlowLimit


def arrive(view: View, limit: FlowLimit, live: bool = False):
    """What happens at requestheaders: the view stores the flow, then the limit runs."""
    f = tflow.tflow(resp=True, live=live)
    view.requestheaders(f)
    limit.requestheaders(f)
    return f


def stored(view: View) -> list:
    return [f for f in view]  # the view is ordered by request time, like arrival here


def test_trims_to_limit_keeping_newest():
    view, limit = View(), FlowLimit()
    with taddons.context(view, limit) as tctx:
        tctx.configure(limit, gateway_max_flows=5)
        flows = [arrive(view, limit) for _ in range(12)]
        assert view.store_count() == 5
        assert stored(view) == flows[-5:]
        removed = []

        def on_remove(flow, index):  # what mitmweb listens to (held weakly: keep a name)
            removed.append(flow)

        view.sig_view_remove.connect(on_remove)
        arrive(view, limit)
        assert removed == [flows[7]]


def test_default_and_unlimited():
    view, limit = View(), FlowLimit()
    with taddons.context(view, limit) as tctx:
        assert tctx.options.gateway_max_flows == 2000
        tctx.configure(limit, gateway_max_flows=0)
        for _ in range(30):
            arrive(view, limit)
        assert view.store_count() == 30
        # lowering the limit trims at once
        tctx.configure(limit, gateway_max_flows=10)
        assert view.store_count() == 10
        with pytest.raises(exceptions.OptionsError):
            tctx.configure(limit, gateway_max_flows=-1)


def test_live_and_marked_flows_are_kept():
    view, limit = View(), FlowLimit()
    with taddons.context(view, limit) as tctx:
        tctx.configure(limit, gateway_max_flows=3)
        streaming = arrive(view, limit, live=True)
        pinned = arrive(view, limit)
        pinned.marked = ":default:"
        others = [arrive(view, limit) for _ in range(6)]
        assert view.store_count() == 3
        assert set(stored(view)) == {streaming, pinned, others[-1]}
        assert streaming.live and not streaming.error  # not killed
        # once finished, the old stream goes first
        streaming.live = False
        newest = arrive(view, limit)
        assert set(stored(view)) == {pinned, others[-1], newest}


def test_flows_removed_elsewhere_and_replays():
    view, limit = View(), FlowLimit()
    with taddons.context(view, limit) as tctx:
        tctx.configure(limit, gateway_max_flows=4)
        flows = [arrive(view, limit) for _ in range(4)]
        view.remove([flows[0]])  # deleted in the UI
        view.clear()
        again = [arrive(view, limit) for _ in range(6)]
        assert stored(view) == again[-4:]
        # a replayed flow counts as new
        first = again[2]
        limit.requestheaders(first)
        arrive(view, limit)
        assert first in stored(view)
        # stale ids of cleared flows do not pile up
        for _ in range(20):
            view.clear()
            for _ in range(4):
                arrive(view, limit)
        assert len(limit._ids) <= 2 * view.store_count() + 64


def test_no_view_no_op():
    limit = FlowLimit()
    with taddons.context(limit) as tctx:  # mitmdump: no view addon
        tctx.configure(limit, gateway_max_flows=1)
        for _ in range(5):
            limit.requestheaders(tflow.tflow(resp=True, live=False))
        assert not limit._ids


def test_other_flow_types_counted():
    view, limit = View(), FlowLimit()
    with taddons.context(view, limit) as tctx:
        tctx.configure(limit, gateway_max_flows=2)
        for make, hook in [
            (lambda: tflow.ttcpflow(), "tcp_start"),
            (lambda: tflow.tudpflow(), "udp_start"),
            (lambda: tflow.tdnsflow(), "dns_request"),
        ]:
            f = make()
            f.live = False
            getattr(view, hook)(f)
            getattr(limit, hook)(f)
        assert view.store_count() == 2
