"""A provider `auto: true` found, as the proxy.yaml entry the console writes to keep it: its key
as the ${VAR} it came from, never the value."""

from llmgate.operations.first_run import Found, detect, persistent_entry
from tests.unit.test_first_run import closed_port, no_cli

SECRET = "sk-keep-secret-0123456789"


def test_a_found_key_is_kept_as_its_variable(tmp_path):
    env = {"OPENAI_API_KEY": SECRET, "LLMGATE_OLLAMA_BASE_URL": f"http://127.0.0.1:{closed_port()}/v1",
           "LLMGATE_LMSTUDIO_BASE_URL": f"http://127.0.0.1:{closed_port()}/v1"}
    (found,) = detect(env, tmp_path, no_cli).found
    entry = persistent_entry(found)
    assert entry == {"id": "openai", "type": "openai", "base_url": "https://api.openai.com/v1",
                     "api_key": "${OPENAI_API_KEY}"}
    assert found.entry["api_key"] == SECRET  # what the gateway serves with, unchanged


def test_entries_without_a_key_are_kept_as_found():
    local = Found({"id": "ollama", "type": "openai", "base_url": "http://127.0.0.1:11434/v1"}, "Ollama", "m")
    assert persistent_entry(local) == local.entry and persistent_entry(local) is not local.entry
    lm = Found({"id": "lmstudio", "type": "openai", "base_url": "http://h/v1", "api_key": SECRET}, "LM Studio", "m",
               key_env="LMSTUDIO_API_KEY")
    assert persistent_entry(lm)["api_key"] == "${LMSTUDIO_API_KEY}"
