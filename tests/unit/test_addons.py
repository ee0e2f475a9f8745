import json
import logging

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow

from llmgate.addons.client_auth import ClientAuth
from llmgate.addons.config_watch import ConfigWatch
from llmgate.runtime import Runtime
from llmgate.settings import parse_settings


def runtime_with(text: str) -> Runtime:
    rt = Runtime()
    rt.settings = parse_settings(text)[0]
    return rt


def flow(path="/v1/chat/completions", **headers):
    f = tflow.tflow()
    f.request.path = path
    for k, v in headers.items():
        f.request.headers[k.replace("_", "-")] = v
    return f


class TestClientAuth:
    rt = runtime_with("server: {api_keys: [sk-a, sk-b]}")

    @pytest.mark.parametrize("headers", [{"authorization": "Bearer sk-b"}, {"x_api_key": "sk-a"},
                                         {"x_goog_api_key": "sk-a"}])
    def test_accepts_and_masks(self, headers):
        f = flow(**headers)
        ClientAuth(self.rt).request(f)
        assert f.response is None
        assert "sk-" not in str(f.request.headers)

    def test_query_key(self):
        f = flow("/v1/models?key=sk-a")
        ClientAuth(self.rt).request(f)
        assert f.response is None and f.request.query["key"] == "[redacted]"

    @pytest.mark.parametrize("headers, code", [({}, "missing_api_key"), ({"authorization": "Bearer sk-c"}, "invalid_api_key"),
                                               ({"authorization": "Basic sk-a"}, "missing_api_key")])
    def test_rejects(self, headers, code):
        f = flow(**headers)
        ClientAuth(self.rt).request(f)
        assert f.response.status_code == 401
        assert json.loads(f.response.content)["error"]["code"] == code
        assert "sk-c" not in f.response.text

    def test_health_is_open_and_no_keys_means_open(self):
        f = flow("/health")
        ClientAuth(self.rt).request(f)
        assert f.response is None
        f = flow()
        ClientAuth(runtime_with("{}")).request(f)
        assert f.response is None


class TestConfigWatch:
    def test_loads_and_reports_bad_files_without_raising_at_startup(self, tmp_path, caplog):
        good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
        good.write_text("providers: [{id: a, type: openai, base_url: 'http://h/v1'}]\n")
        bad.write_text("providers: [{id: a, type: openai}]\n")
        rt = Runtime()
        cw = ConfigWatch(rt)
        with taddons.context(cw) as tctx:
            tctx.configure(cw, gateway_config=str(good))
            assert [p.id for p in rt.settings.providers] == ["a"]
            with caplog.at_level(logging.ERROR):
                tctx.configure(cw, gateway_config=str(bad))
            assert "providers[0].base_url: Field required" in caplog.text
            assert [p.id for p in rt.settings.providers] == ["a"]  # last good config kept
            cw._running = True  # once running, a bad `set gateway_config` is refused
            with pytest.raises(exceptions.OptionsError):
                tctx.configure(cw, gateway_config=str(bad))

    def test_reload_forgets_discovered_models_of_changed_providers(self, tmp_path):
        from llmgate.request_path.catalog import _Entry

        cfg = tmp_path / "proxy.yaml"
        rt = Runtime()
        cw = ConfigWatch(rt)
        with taddons.context(cw) as tctx:
            cfg.write_text("providers: [{id: a, type: openai, base_url: 'http://h/v1'}, "
                           "{id: b, type: openai, base_url: 'http://i/v1'}]\n")
            tctx.configure(cw, gateway_config=str(cfg))
            for pid in "ab":
                rt.catalog._entries[pid] = _Entry(models=[f"{pid}-model"])
            cfg.write_text("providers: [{id: a, type: openai, base_url: 'http://h/v1'}, "
                           "{id: b, type: openai, base_url: 'http://moved/v1'}]\n")
            cw._apply()
            a, b = rt.settings.providers
            assert rt.catalog.models(a) == ["a-model"] and rt.catalog.models(b) is None


def test_provider_side_flows_hide_every_kind_of_credential():
    from llmgate.addons.flow_record import redacted_headers

    shown = dict(redacted_headers({"code-token": "cgx-secret", "x-iflow-signature": "abc", "Authorization": "Bearer t",
                                   "x-api-key": "k", "Accept": "text/event-stream"}))
    assert shown[b"Accept"] == b"text/event-stream"
    assert {v for k, v in shown.items() if k != b"Accept"} == {b"[redacted]"}
