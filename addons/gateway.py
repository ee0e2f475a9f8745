"""Entry point: mitmdump -s addons/gateway.py --mode reverse:http://127.0.0.1:1@8143 --set connection_strategy=lazy
(intercept mode: --mode regular@8080 instead, or beside it; README "Intercept mode")

Builds the gateway's addon list; each addon lives in the llmgate package beside this file.
"""

import os
import sys

# the repo root, for the `converters` package when the project is not pip-installed
_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _root not in sys.path:
    sys.path.append(_root)

from llmgate.addons.accounting import Accounting  # noqa: E402
from llmgate.addons.client_auth import ClientAuth  # noqa: E402
from llmgate.addons.config_watch import ConfigWatch  # noqa: E402
from llmgate.addons.cors import Cors  # noqa: E402
from llmgate.addons.flow_limit import FlowLimit  # noqa: E402
from llmgate.addons.flow_record import FlowRecorder  # noqa: E402
from llmgate.addons.front_door import FrontDoor  # noqa: E402
from llmgate.addons.hook_dispatch import HookDispatch  # noqa: E402
from llmgate.addons.intercept import Intercept  # noqa: E402
from llmgate.addons.limits import ClientLimits  # noqa: E402
from llmgate.addons.proxy_guard import ProxyGuard  # noqa: E402
from llmgate.addons.redaction import Redaction  # noqa: E402
from llmgate.console.addon import Console  # noqa: E402
from llmgate.runtime import Runtime  # noqa: E402
from llmgate.views.contentviews import ContentViews  # noqa: E402

runtime = Runtime()

addons = [
    HookDispatch(),  # mitmproxy's per-hook walk over every addon, worked out once per hook
    ConfigWatch(runtime),
    ClientLimits(runtime),  # body size, connection timeouts and cap, HTTP/1.0 answers
    ProxyGuard(runtime),  # the proxy port's network clients: a client key, no loopback targets
    Intercept(runtime),  # regular mode: the CLIs' vendor calls, routed or passed on (before ClientAuth, FrontDoor)
    Cors(runtime),  # before ClientAuth: a preflight never carries credentials
    ClientAuth(runtime),
    Redaction(runtime),  # before Accounting and FlowRecorder, which record answers
    FrontDoor(runtime),
    Console(runtime),  # /ui, which FrontDoor leaves to it
    Accounting(runtime),  # before FlowRecorder, which drops the exchange
    FlowRecorder(runtime),
    ContentViews(),  # SSE and AWS event-stream bodies, readable in mitmweb
    FlowLimit(),  # mitmweb keeps at most gateway_max_flows flows
]
