"""What an operator meets: saved flows with both sides, secrets kept out, config reload, bad config."""

import time

import openai
import pytest
from mitmproxy import io

from tests.e2e.conftest import CLIENT_KEY, UPSTREAM_KEY, gateway_config
from tests.harness import BIN, ROOT, Gateway, Proc

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def recorded(upstream, tmp_path):
    """A gateway that saves flows (-w) and prints full flows (flow_detail=3)."""
    flows = tmp_path / "out.flows"
    g = Gateway(gateway_config(upstream), tmp_path / "proxy.yaml", "-w", str(flows), "--set", "flow_detail=3")
    c = openai.OpenAI(base_url=g.base + "/v1", api_key=CLIENT_KEY, max_retries=0)
    c.chat.completions.create(model="coder", messages=HELLO)
    list(c.chat.completions.create(model="coder", messages=HELLO, stream=True))
    time.sleep(0.5)
    g.stop()
    return g, flows


def test_saved_flows_show_both_sides_without_secrets(recorded):
    g, path = recorded
    raw = path.read_bytes()
    assert CLIENT_KEY.encode() not in raw and UPSTREAM_KEY.encode() not in raw
    for text in (g.output,):
        assert CLIENT_KEY not in text and UPSTREAM_KEY not in text
    flows = list(io.FlowReader(path.open("rb")).stream())
    client = [f for f in flows if "llmgate.upstream_of" not in f.metadata]
    upstream = [f for f in flows if "llmgate.upstream_of" in f.metadata]
    assert len(client) == 2 and len(upstream) == 2
    ids = {f.id for f in client}
    assert {f.metadata["llmgate.upstream_of"] for f in upstream} == ids

    for f in client:  # what the client sent and received
        assert f.request.path == "/v1/chat/completions"
        assert b'"model":"coder"' in f.request.content
        assert f.metadata["llmgate"] == {"provider": "up", "upstream_model": "qwen3-coder-30b", "route": "alias",
                                         **({"stream": "complete"} if b"stream" in f.request.content else {})}
        assert b"Echo" in f.response.content and b"2024-08-06" not in f.response.content
    for f in upstream:  # what the provider got and answered, raw
        assert f.request.url.endswith("/v1/chat/completions") and f.request.port != g.port
        assert f.request.headers["authorization"] == "[redacted]"
        assert b'"model": "qwen3-coder-30b"' in f.request.content or b'"model":"qwen3-coder-30b"' in f.request.content
        assert b"qwen3-coder-30b-2024-08-06" in f.response.content
    streamed = next(f for f in client if b"stream" in f.request.content)
    assert streamed.response.content.count(b"data: ") >= 5 and streamed.response.content.endswith(b"data: [DONE]\n\n")


def wait_for_reload(g: Gateway, count: int, pattern: str = r"config .*provider\(s\)") -> None:
    deadline = time.monotonic() + 10
    import re

    while time.monotonic() < deadline:
        if len([line for line in g.lines if re.search(pattern, line)]) >= count:
            return
        time.sleep(0.1)
    raise AssertionError("no reload seen:\n" + g.output)


def test_config_reload_and_broken_edit(upstream, tmp_path):
    cfg = gateway_config(upstream)
    cfg["routing"]["aliases"] = {"pick": "up/gpt-4o-mini"}
    g = Gateway(cfg, tmp_path / "proxy.yaml")
    try:
        c = openai.OpenAI(base_url=g.base + "/v1", api_key=CLIENT_KEY, max_retries=0)
        assert c.chat.completions.create(model="pick", messages=HELLO).model == "pick"
        def upstream_model():
            return upstream.received()[-1]["body"]["model"]
        assert upstream_model() == "gpt-4o-mini"

        cfg["routing"]["aliases"] = {"pick": "up/qwen3-coder-30b"}
        g.write_config(cfg)
        wait_for_reload(g, 2)
        c.chat.completions.create(model="pick", messages=HELLO)
        assert upstream_model() == "qwen3-coder-30b"

        g.write_config("providers:\n  - id: up\n    type: openai\n    base_url: nope\n")
        wait_for_reload(g, 1, r"config reload failed.*")
        assert any("proxy.yaml:4: providers[0].base_url" in line for line in g.lines), g.output
        c.chat.completions.create(model="pick", messages=HELLO)  # the last good config still serves
        assert upstream_model() == "qwen3-coder-30b"
        assert g.p.poll() is None
    finally:
        g.stop()


def test_bad_config_stops_startup_with_a_clear_message(tmp_path):
    bad = tmp_path / "proxy.yaml"
    bad.write_text("providers:\n  - id: x\n    type: openai\n    base_url: http://h/v1\n    api_kee: k\n")
    p = Proc([str(BIN / "mitmdump"), "-s", str(ROOT / "addons/gateway.py"), "--mode", "reverse:http://127.0.0.1:1@0",
              "--listen-host", "127.0.0.1", "--set", "connection_strategy=lazy", "--set", f"gateway_config={bad}"])
    assert p.p.wait(20) != 0
    time.sleep(0.2)
    assert "proxy.yaml:5: providers[0].api_kee: unknown field" in p.output
    assert "Traceback" not in p.output


def test_mitmweb_shows_client_and_provider_side(upstream, tmp_path):
    import httpx

    from tests.e2e.conftest import closed_port

    g = Gateway(gateway_config(upstream), tmp_path / "proxy.yaml", "--set", "web_open_browser=false",
                "--set", f"web_port={closed_port()}", tool="mitmweb")
    try:
        token = g.wait_for(r"Web server listening at (http://[\d.:]+)/\?token=(\w+)")
        c = openai.OpenAI(base_url=g.base + "/v1", api_key=CLIENT_KEY, max_retries=0)
        list(c.chat.completions.create(model="coder", messages=HELLO, stream=True))
        web, tok = token.group(1), token.group(2)
        for _ in range(50):
            flows = httpx.get(f"{web}/flows", headers={"Authorization": f"Bearer {tok}"}).json()
            if len(flows) >= 2:
                break
            time.sleep(0.1)
        comments = sorted(f["comment"] for f in flows)
        marker = comments[1].split(":")[0].removeprefix("upstream of ")  # both sides share it
        assert comments[0] == f"-> up / qwen3-coder-30b (alias) {marker}" and marker.startswith("#x")
        assert comments[1].startswith("upstream of ") and comments[1].endswith("up / qwen3-coder-30b")
        assert all(f["response"]["status_code"] == 200 and f["response"]["contentLength"] > 500 for f in flows)
    finally:
        g.stop()


def test_client_leaving_mid_stream_closes_the_upstream_stream(upstream, tmp_path):
    import httpx

    flows = tmp_path / "out.flows"
    g = Gateway(gateway_config(upstream), tmp_path / "proxy.yaml", "-w", str(flows))
    try:
        body = {"model": "fault-slow-stream", "messages": HELLO, "stream": True}
        with httpx.stream("POST", g.base + "/v1/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as r:
            first = next(r.iter_raw())
            assert first.startswith(b"data: ")
        time.sleep(1.0)  # the gateway notices at its next write (chunks are 0.3 s apart)
        # still serving
        c = openai.OpenAI(base_url=g.base + "/v1", api_key=CLIENT_KEY, max_retries=0)
        assert c.chat.completions.create(model="gpt-4o-mini", messages=HELLO).choices[0].message.content
    finally:
        g.stop()
    up = [f for f in io.FlowReader(flows.open("rb")).stream() if "llmgate.upstream_of" in f.metadata]
    slow = next(f for f in up if f.metadata["llmgate"]["upstream_model"] == "fault-slow-stream")
    assert slow.metadata["llmgate"]["stream"] == "client-gone"
    assert b"[DONE]" not in slow.response.content  # the upstream was not read to its end
