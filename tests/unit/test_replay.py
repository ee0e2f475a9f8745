"""A client flow replayed from mitmweb (mitmproxy's ClientPlayback): the operator's, not a client's.
End to end, through mitmweb's REST API and its page: tests/e2e/test_mitmweb_debugger.py."""

import json

from mitmproxy import http
from mitmproxy.test import tflow

from llmgate.addons.accounting import INBOUND
from llmgate.addons.client_auth import KEY_ID, ClientAuth
from llmgate.addons.flow_record import PROVIDER_FLOWS, FlowRecorder
from llmgate.runtime import UPSTREAM_MARK, Runtime
from llmgate.settings import parse_settings


def runtime() -> Runtime:
    rt = Runtime()
    rt.settings = parse_settings("server: {api_keys: [sk-a]}")[0]
    return rt


def recorded() -> http.HTTPFlow:
    """A client flow as mitmweb holds it: answered, key masked, annotated."""
    f = tflow.tflow(resp=True)
    f.request.path = "/v1/chat/completions"
    f.request.headers["authorization"] = "[redacted]"
    f.comment = "-> a / m (listed) [2 attempts, 3+4 tokens] #x12345678"
    f.metadata.update({INBOUND: {"endpoint": "chat"}, KEY_ID: "key-1", PROVIDER_FLOWS: ["p1", "p2"],
                       "llmgate": {"provider": "a"}, "user's own": 1})
    f.live = False
    return f


def queued_for_replay(f: http.HTTPFlow) -> http.HTTPFlow:
    """What ClientPlayback.start_replay does before the update hook."""
    f.backup()
    f.is_replay, f.response, f.error = "request", None, None
    return f


def test_a_replay_is_authenticated_as_the_operators_and_logged_as_replay():
    f = queued_for_replay(recorded())
    f.live = True  # as the replay handler runs it
    ClientAuth(runtime()).request(f)
    assert f.response is None and f.metadata[KEY_ID] == "replay"
    assert f.request.headers["authorization"] == "[redacted]"


def test_a_network_request_with_a_masked_key_is_still_refused():
    f = recorded()
    f.response, f.live = None, True  # is_replay stays None: nothing on the wire sets it
    ClientAuth(runtime()).request(f)
    assert f.response.status_code == 401 and json.loads(f.response.content)["error"]["code"] == "missing_api_key"


def test_a_replayed_provider_flow_is_not_the_operators_client_request():
    f = queued_for_replay(recorded())
    f.metadata[UPSTREAM_MARK] = "client-id"
    f.live = True
    ClientAuth(runtime()).request(f)
    assert f.response.status_code == 401


def test_queued_replay_forgets_the_old_answers_comment_and_metadata():
    f = queued_for_replay(recorded())
    FlowRecorder(Runtime()).update([f])
    assert f.comment == "" and f.metadata == {"user's own": 1}
    f.revert()  # replay.client.stop puts the old answer back, with what described it
    assert f.comment.startswith("-> a / m") and f.metadata[PROVIDER_FLOWS] == ["p1", "p2"]


def test_other_updates_leave_comment_and_metadata_alone():
    answered = recorded()
    answered.is_replay = "request"  # a replay that has its answer: its annotations are the new ones
    provider = queued_for_replay(recorded())
    provider.metadata[UPSTREAM_MARK] = "client-id"
    FlowRecorder(Runtime()).update([answered, provider, tflow.ttcpflow()])
    assert answered.comment and provider.comment
    assert PROVIDER_FLOWS in answered.metadata and PROVIDER_FLOWS in provider.metadata
