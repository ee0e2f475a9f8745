"""OLLAMA_HOST, read by first-run detection as Ollama's own CLI reads it."""

import pytest

from llmgate.operations import first_run
from llmgate.operations.first_run import detect
from tests.unit.test_first_run import LocalServer, closed_port, models, no_cli


@pytest.fixture
def ollama():
    s = LocalServer(models("llama3.2:latest"))
    yield s
    s.close()


@pytest.mark.parametrize("value, base", [
    ("", "http://127.0.0.1:11434/v1"),
    ("0.0.0.0", "http://127.0.0.1:11434/v1"),  # the server's "listen everywhere", reached on loopback
    ("0.0.0.0:11500", "http://127.0.0.1:11500/v1"),
    ("gpu-box", "http://gpu-box:11434/v1"),
    ("gpu-box:9000", "http://gpu-box:9000/v1"),
    ("http://gpu-box", "http://gpu-box:80/v1"),  # a scheme given: its own default port, as Ollama does
    ("https://ollama.example.com", "https://ollama.example.com:443/v1"),
    ("HTTPS://ollama.example.com:8443/base/", "https://ollama.example.com:8443/base/v1"),
    ("[::1]:11435", "http://[::1]:11435/v1"),
    ("::", "http://127.0.0.1:11434/v1"),
    ("gpu-box:notaport", "http://gpu-box:11434/v1"),
])
def test_ollama_host_is_read_as_ollama_reads_it(value, base):
    assert first_run.ollama_base(value) == base


def test_ollama_host_points_detection_at_the_server(tmp_path, ollama):
    host = ollama.base.removeprefix("http://").removesuffix("/v1")  # host:port, as users set it
    env = {"OLLAMA_HOST": host, "LLMGATE_LMSTUDIO_BASE_URL": f"http://127.0.0.1:{closed_port()}/v1"}
    (f,) = detect(env, tmp_path, no_cli).found
    assert f.entry["base_url"] == ollama.base and f.model == "llama3.2:latest"
    env["LLMGATE_OLLAMA_BASE_URL"] = f"http://127.0.0.1:{closed_port()}/v1"  # the gateway's own override wins
    assert detect(env, tmp_path, no_cli).found == ()
