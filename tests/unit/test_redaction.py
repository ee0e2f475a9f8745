"""Secret scrubbing (llmgate/addons/redaction.py) and model-name checks (llmgate/request_path/model_names.py)."""

from types import SimpleNamespace

import pytest

from llmgate.addons.redaction import MIN_SECRET, Redactor, Scrubbing, Secrets, secrets_of
from llmgate.errors import GatewayError
from llmgate.providers.gemini_api import KIND as GEMINI
from llmgate.request_path.model_names import check_model_name
from llmgate.settings import GatewaySettings

KEY = "sk-abcdefgh12345678"
TOKEN = "ya29.token-xyz-0123456789"


class Passing:
    """A stream transform that passes bytes on, and says so at the end."""

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def finish(self) -> bytes:
        return b"|end"

    def fail(self, message: str, code: str = "upstream_error") -> bytes:
        return f"|{code}".encode()


def test_every_secret_is_replaced_and_short_ones_are_left_alone():
    r = Redactor([KEY, TOKEN, "short", "", None])
    assert r.bytes(f"a {KEY} b {TOKEN}{KEY}".encode()) == b"a [redacted] b [redacted][redacted]"
    assert r.bytes(b"a short text") == b"a short text"  # under MIN_SECRET: would mangle text
    assert len("short") < MIN_SECRET <= len("8chars!!")
    assert r.text(f"x{KEY}") == "x[redacted]"


def test_the_longest_secret_wins_when_one_contains_another():
    r = Redactor(["abcdefgh", "abcdefgh-longer"])
    assert r.bytes(b"abcdefgh-longer abcdefgh") == b"[redacted] [redacted]"


def test_nothing_found_returns_the_same_object():
    data = b"plain text " * 100
    assert Redactor([KEY]).bytes(data) is data
    assert Redactor([]).bytes(data) is data and not Redactor([])


@pytest.mark.parametrize("cut", range(1, 40))
def test_a_secret_split_across_chunks_is_still_scrubbed(cut):
    stream = f"data: {{\"k\": \"{KEY}\"}}\n\n".encode()
    s = Scrubbing(Passing(), Redactor([KEY]))
    out = s.feed(stream[:cut]) + s.feed(stream[cut:]) + s.finish()
    assert out == b'data: {"k": "[redacted]"}\n\n|end'


def test_split_into_single_bytes():
    stream = f"{KEY} and {KEY[:5]} then {TOKEN}".encode()
    s = Scrubbing(Passing(), Redactor([KEY, TOKEN]))
    out = b"".join(s.feed(bytes([b])) for b in stream) + s.fail("cut off", "upstream_timeout")
    assert out == f"[redacted] and {KEY[:5]} then [redacted]|upstream_timeout".encode()


def test_only_a_possible_secret_start_is_held_back():
    s = Scrubbing(Passing(), Redactor([KEY]))
    assert s.feed(b"data: 1\n\n") == b"data: 1\n\n"  # nothing like a secret: nothing waits
    assert s.feed(b"data: sk-ab") == b"data: "  # may be the start of the key
    assert s.feed(b"X\n\n") == b"sk-abX\n\n"  # it was not
    assert s.finish() == b"|end"


def settings(**over) -> GatewaySettings:
    return GatewaySettings.model_validate({
        "server": {"api_keys": ["client-key-123", {"name": "ci", "key": "named-key-456"}],
                   "admin_keys": ["admin-key-789"]},
        "providers": [{"id": "a", "type": "openai", "base_url": "http://x/v1", "api_key": KEY,
                       "headers": {"X-Api-Key": "header-secret-1", "X-Title": "not-a-secret",
                                   "X-Auth-Token": "header-secret-2"}}],
        **over})


def runtime(creds: list[dict]) -> SimpleNamespace:
    accounts = SimpleNamespace(accounts=[SimpleNamespace(creds=SimpleNamespace(data=d)) for d in creds])
    return SimpleNamespace(settings=settings(), _accounts={"q": (None, accounts)})


def test_the_secrets_a_gateway_holds():
    rt = runtime([{"access_token": TOKEN, "refresh_token": "refresh-abcdefgh", "token_type": "Bearer",
                   "resource_url": "portal.qwen.ai"},
                  {"accessToken": "kiro-access-1", "clientSecret": "kiro-client-secret", "clientId": "public-id",
                   "apiKey": "iflow-api-key-1", "expiresAt": "2026-01-01T00:00:00Z"}])
    found = set(secrets_of(rt))
    assert {"client-key-123", "named-key-456", "admin-key-789", KEY, "header-secret-1", TOKEN,
            "refresh-abcdefgh", "kiro-access-1", "kiro-client-secret", "iflow-api-key-1", "header-secret-2"} <= found
    assert not {"not-a-secret", "portal.qwen.ai", "public-id", "2026-01-01T00:00:00Z"} & found


def test_rebuilt_when_the_config_or_a_token_changes():
    rt = runtime([{"access_token": TOKEN}])
    secrets = Secrets(rt)
    first = secrets.current()
    assert secrets.current() is first  # unchanged: the same matcher
    rt._accounts["q"][1].accounts[0].creds.data = {"access_token": "ya29.refreshed-token-1"}
    assert secrets.current().bytes(b"ya29.refreshed-token-1") == b"[redacted]"
    rt.settings = settings(providers=[])
    assert secrets.current().bytes(KEY.encode()) == KEY.encode()  # that provider is gone


@pytest.mark.parametrize("model", ["a/../x", "..", "a/.", "./a", "x#", "x?alt=1", "a b", "a\tb", "a\\b", "a\x00",
                                   "a\x7f", "a\u2028b"])
def test_names_that_would_steer_a_url_are_refused(model):
    with pytest.raises(GatewayError) as e:
        check_model_name(model)
    assert e.value.status == 400 and e.value.param == "model"


@pytest.mark.parametrize("model", ["gpt-4o-mini", "up/qwen3-coder-30b", "llama3:8b", "a..b", "models/gemini-2.5-pro",
                                   "accounts/fireworks/models/x", "a%2e%2e"])
def test_ordinary_names_pass(model):
    check_model_name(model)


def test_gemini_urls_carry_the_model_as_one_encoded_segment():
    assert GEMINI.chat_url("http://g", "gemini-2.5-flash", False) == \
        "http://g/v1beta/models/gemini-2.5-flash:generateContent"
    assert GEMINI.chat_url("http://g", "a/b%c", True) == \
        "http://g/v1beta/models/a%2Fb%25c:streamGenerateContent?alt=sse"
    assert GEMINI.count_url("http://g", "tunedModels/t-1") == "http://g/v1beta/tunedModels/t-1:countTokens"
    assert GEMINI.embed_url("http://g", "models/e:x") == "http://g/v1beta/models/e%3Ax:batchEmbedContents"


def test_large_bodies_and_secrets_with_regex_characters():
    odd = "a]b^c-d\\e.f*g"
    r = Redactor([odd, KEY])
    body = b"x" * 5000 + KEY.encode() + b"y" * 5000 + odd.encode()
    assert r.bytes(body) == b"x" * 5000 + b"[redacted]" + b"y" * 5000 + b"[redacted]"
    s = Scrubbing(Passing(), r)
    assert s.feed(b"see a]b^c-") == b"see " and s.feed(b"d\\e.f*g!") == b"[redacted]!"


def test_headers_and_bodies_of_a_recorded_message():
    from mitmproxy import http

    from llmgate.addons.redaction import scrub_message

    r = Redactor([KEY])
    m = http.Response.make(401, f"bad key {KEY}", {"X-Echo": f"key={KEY}", "Content-Type": "text/plain"})
    scrub_message(r, m)
    assert m.headers["X-Echo"] == "key=[redacted]" and m.content == b"bad key [redacted]"
    assert m.headers["content-length"] == str(len(m.content))
    gz = http.Response.make(200, b"", {"Content-Encoding": "gzip"})
    gz.raw_content = KEY.encode()  # encoded bodies are not touched (the gateway asks for identity)
    scrub_message(r, gz)
    assert gz.raw_content == KEY.encode()
