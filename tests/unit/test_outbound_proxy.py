"""The proxy a call takes: settings validation, `env` resolution (NO_PROXY, ALL_PROXY), secrets."""

import pytest
from pydantic import ValidationError

from llmgate.request_path import upstream
from llmgate.settings import PROVIDER_ENTRY, GatewaySettings


@pytest.fixture
def env(monkeypatch):
    for k in ("http_proxy", "https_proxy", "all_proxy", "no_proxy",
              "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(k, raising=False)
    upstream._env_proxies.cache_clear()
    upstream._env_proxy.cache_clear()
    yield monkeypatch
    upstream._env_proxies.cache_clear()
    upstream._env_proxy.cache_clear()


def entry(**kw):
    return PROVIDER_ENTRY.validate_python({"id": "p", "type": "openai", "base_url": "https://api.x.com/v1", **kw})


@pytest.mark.parametrize("value", ["ftp://u:hunter2pass@h:21", "http://u:hunter2pass@h", "socks5://:1080", "envv"])
def test_a_bad_proxy_is_refused_without_repeating_it(value):
    with pytest.raises(ValidationError) as e:
        entry(proxy=value)
    assert "hunter2pass" not in str(e.value.errors()[0]["msg"])


def test_a_provider_proxy_overrides_the_servers_and_none_goes_direct():
    s = GatewaySettings.model_validate({"server": {"proxy": "http://p:3128"}, "providers": []}).server
    assert upstream.proxy_setting(entry(), s) == "http://p:3128"
    assert upstream.proxy_setting(entry(proxy="socks5h://q:1080"), s) == "socks5h://q:1080"
    assert upstream.proxy_url("https://api.x.com/v1", upstream.proxy_setting(entry(proxy="none"), s)) is None


def test_env_follows_https_proxy_all_proxy_and_no_proxy(env):
    env.setenv("HTTPS_PROXY", "http://corp:3128")
    env.setenv("ALL_PROXY", "socks5://corp:1080")
    env.setenv("NO_PROXY", "internal.example,localhost")
    assert upstream.proxy_url("https://api.anthropic.com/v1/messages", "env") == "http://corp:3128"
    assert upstream.proxy_url("http://api.x.com/v1", "env") == "socks5://corp:1080"  # no HTTP_PROXY: ALL_PROXY
    assert upstream.proxy_url("https://llm.internal.example/v1", "env") is None
    assert upstream.proxy_url("http://localhost:1234/v1", "env") is None


def test_proxy_passwords_are_secrets_and_messages_name_the_host_only(env):
    env.setenv("HTTPS_PROXY", "http://u:env-secret-1@corp:3128")
    s = GatewaySettings.model_validate({"server": {"proxy": "env"}, "providers": [
        {"id": "a", "type": "openai", "base_url": "http://x/v1", "proxy": "socks5://u:socks-secret-2@s:1080"}]})
    assert {"env-secret-1", "socks-secret-2"} <= set(upstream.proxy_secrets(s))
    assert upstream.proxy_name("socks5://u:socks-secret-2@s:1080") == "s:1080"
