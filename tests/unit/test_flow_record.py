"""The debugging record: attempts counted once each, provider flows per attempt with honest headers,
client flows at the client's address, and mitmweb's comment column on unless the user chose columns.
End to end against a real mitmweb: tests/e2e/test_mitmweb_debugger.py."""

from types import SimpleNamespace

from mitmproxy import http
from mitmproxy.test import taddons, tflow
from mitmproxy.tools.web.webaddons import WebAddon

from llmgate.addons.accounting import INBOUND, Accounting
from llmgate.addons.flow_record import FlowRecorder, marker, show_client_address, upstream_flow
from llmgate.addons.redaction import Redactor
from llmgate.request_path.provider_call import Exchange
from llmgate.request_path.relay import CAPTURE_LIMIT, Capture
from llmgate.request_path.upstream import UpstreamRequest
from llmgate.runtime import UPSTREAM_MARK, Runtime

SECRET = "up-secret-key-0123"


def exchange(status: int | None = 200, body: bytes = b"", headers=(), failure=None) -> Exchange:
    ex = Exchange("a", "m", "m", "listed", UpstreamRequest("POST", "http://up.test/v1/chat/completions",
                                                           {"Authorization": f"Bearer {SECRET}"}, b"{}"),
                  status=status, response_body=body, response_headers=tuple(headers), started=1.0)
    ex.failure = failure
    return ex


def client_flow() -> http.HTTPFlow:
    f = tflow.tflow(resp=True)
    f.metadata[INBOUND] = {"inbound": "openai-chat", "endpoint": "chat", "model": "m", "stream": False}
    return f


def attempts_logged(exchanges: list[Exchange]) -> int:
    rt, f = Runtime(), client_flow()
    f.metadata["llmgate_attempts"] = ["a/m: 500" for ex in exchanges if ex.failure]  # as the front door notes them
    if exchanges:
        last = exchanges[-1]
        last.earlier = tuple(exchanges[:-1])
        rt.exchanges[f.id] = last
    return Accounting(rt).row(f, f.metadata[INBOUND])["attempts"]


def test_the_only_member_failing_is_one_attempt():
    failed = {"status": 500, "error": "boom", "cooling_s": 1}
    assert attempts_logged([exchange(500, failure=failed)]) == 1
    assert attempts_logged([exchange(500, failure=failed), exchange()]) == 2
    assert attempts_logged([exchange()]) == 1
    assert attempts_logged([]) == 0  # nothing reached a provider


def test_recorded_answer_states_its_own_length():
    body = b'{"choices": []}' * 40
    up = upstream_flow(client_flow(), exchange(body=body, headers=[(b"Content-Type", b"application/json"),
                                                                   (b"Content-Length", str(len(body)).encode())]),
                       None, Redactor([SECRET]))
    assert up.response.headers["content-length"] == str(len(body)) and up.response.raw_content == body
    chunked = upstream_flow(client_flow(), exchange(body=body, headers=[(b"Transfer-Encoding", b"chunked")]), None,
                            Redactor([SECRET]))
    assert "content-length" not in chunked.response.headers and chunked.response.raw_content == body


def test_failed_attempt_says_why_and_links_to_its_client():
    client = client_flow()
    failure = {"status": 502, "error": f"no connection to {SECRET}", "cooling_s": None}
    up = upstream_flow(client, exchange(None, failure=failure), None, Redactor([SECRET]), 1, 2)
    assert up.response is None and up.error.msg == "no connection to [redacted]"
    assert up.metadata[UPSTREAM_MARK] == client.id
    assert up.metadata["llmgate"]["failed_over"] == {**failure, "error": "no connection to [redacted]"}
    assert up.comment == f"upstream of {marker(client)}: a / m (attempt 1 of 2, failed 502, not cooled down)"
    assert up.request.headers["authorization"] == "[redacted]"


def test_client_flow_shows_the_address_the_client_used():
    f = client_flow()
    f.request.host, f.request.port = "127.0.0.1", 1  # the placeholder reverse target
    f.client_conn.timestamp_tls_setup = None  # plain HTTP
    f.request.headers["Host"] = "gateway.lan:8143"
    show_client_address(f)
    assert f.request.pretty_url == "http://gateway.lan:8143/path" and f.request.headers["Host"] == "gateway.lan:8143"
    f.request.headers["Host"] = "gateway.lan"
    f.client_conn.sockname = ("10.0.0.2", 8143)
    show_client_address(f)
    assert f.request.url == "http://gateway.lan:8143/path"
    del f.request.headers["Host"]
    show_client_address(f)
    assert f.request.url == "http://10.0.0.2:8143/path"
    f.client_conn.timestamp_tls_setup = 1.0  # TLS
    show_client_address(f)
    assert f.request.url == "https://10.0.0.2:8143/path"


def test_mitmweb_shows_the_comment_column_unless_the_user_chose_columns():
    web = WebAddon()
    with taddons.context(web) as tctx:
        default = list(tctx.options.web_columns)
        FlowRecorder(Runtime()).running()
        assert list(tctx.options.web_columns) == [*default, "comment"]
        tctx.configure(web, web_columns=["path", "status"])
        FlowRecorder(Runtime()).running()
        assert list(tctx.options.web_columns) == ["path", "status"]
    with taddons.context():  # mitmdump: no such option
        FlowRecorder(Runtime()).running()


def test_a_stream_keeps_its_provider_side_body_only_while_provider_flows_are_recorded():
    rt = Runtime()
    recorder = FlowRecorder(rt)
    with taddons.context(recorder) as tctx:
        tctx.configure(recorder, gateway_upstream_flows="off")
        assert rt.provider_flows() is False
        tctx.configure(recorder, gateway_upstream_flows="on")
        assert rt.provider_flows() is True


def test_a_capture_that_does_not_keep_counts_and_holds_nothing():
    kept, counted = Capture(), Capture(keep=False)
    for c in (kept, counted):
        for _ in range(3):
            c.add(b"x" * (CAPTURE_LIMIT // 2))
    assert kept.bytes() == b"x" * CAPTURE_LIMIT and kept.truncated and kept.size == counted.size
    assert counted.bytes() == b"" and counted.parts == [] and counted.size == 3 * (CAPTURE_LIMIT // 2)


def test_provider_side_flow_of_a_stream_says_what_its_body_lacks():
    ex = exchange(headers=[(b"Content-Type", b"text/event-stream")])
    stream = SimpleNamespace(upstream=Capture(keep=False), outcome="complete")  # what upstream_flow reads of a Pipe
    stream.upstream.add(b"data: {}\n\n")
    ex.pipe = stream  # type: ignore[assignment]
    up = upstream_flow(client_flow(), ex, None, Redactor([SECRET]))
    assert up.response.raw_content == b"" and up.metadata["llmgate"]["stream"] == "complete"
    note = "stream body not kept (10 bytes): provider-side flows were off when it began"
    assert up.metadata["llmgate"]["capture"] == note and up.comment.endswith(f"[{note}]")
    stream.upstream = Capture()  # kept, past the limit
    stream.upstream.add(b"x" * (CAPTURE_LIMIT + 5))
    stream.upstream.add(b"y")
    up = upstream_flow(client_flow(), ex, None, Redactor([SECRET]))
    assert up.response.raw_content == b"x" * (CAPTURE_LIMIT + 5)
    assert up.metadata["llmgate"]["capture"] == f"stream body shown up to {CAPTURE_LIMIT + 5} of {CAPTURE_LIMIT + 6} bytes"
    stream.upstream = Capture()
    stream.upstream.add(b"data: {}\n\n")
    assert "capture" not in upstream_flow(client_flow(), ex, None, Redactor([SECRET])).metadata["llmgate"]
