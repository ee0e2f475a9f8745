"""Embeddings through the gateway: the openai SDK and google-genai as clients, OpenAI-compatible
and Gemini doubles as upstreams, passthrough and converted both ways."""

import base64
from array import array

import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from tests.e2e.conftest import CLIENT_KEY
from tests.harness import Gateway, Upstream
from tests.upstreams.openai_compat import embedding_vector

OPENAI_KEY = "sk-emb-openai-0123456789"
GEMINI_KEY = "AIza-emb-gemini-0123456789"


@pytest.fixture(scope="module")
def ups():
    o = Upstream("openai_compat", "--api-key", OPENAI_KEY, "--models", "gpt-4o-mini")
    g = Upstream("gemini_api", "--api-key", GEMINI_KEY, "--models", "gemini-2.5-flash")
    yield o, g
    o.stop()
    g.stop()


@pytest.fixture(scope="module")
def gateway(ups, tmp_path_factory):
    o, g = ups
    cfg = {
        "server": {"api_keys": [CLIENT_KEY]},
        "providers": [
            {"id": "oa", "type": "openai", "base_url": o.base + "/v1", "api_key": OPENAI_KEY},
            {"id": "gm", "type": "gemini", "base_url": g.base, "api_key": GEMINI_KEY},
        ],
        "routing": {"aliases": {"emb-g": "gm/gemini-embedding-001", "emb-o": "oa/text-embedding-3-small"}},
    }
    gw = Gateway(cfg, tmp_path_factory.mktemp("emb") / "proxy.yaml")
    yield gw
    gw.stop()


@pytest.fixture
def oai(gateway):
    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


@pytest.fixture
def gai(gateway):
    return genai.Client(api_key=CLIENT_KEY, http_options=types.HttpOptions(base_url=gateway.base))


def posts(received: list[dict]) -> list[dict]:
    """The embedding calls (model discovery may run alongside)."""
    return [r for r in received if r["method"] == "POST"]


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("model", ["text-embedding-3-small", "gemini-embedding-001", "emb-g", "emb-o"])
@pytest.mark.parametrize("fmt", [None, "base64", "float"])
def test_openai_sdk_any_backend(oai, ups, model, fmt):
    """fmt None: the SDK asks for base64 itself and decodes it; explicit base64 is left encoded."""
    o, g = ups
    o.clear()
    g.clear()
    extra = {"encoding_format": fmt} if fmt else {}
    r = oai.embeddings.create(model=model, input=["hello", "world"], dimensions=16, **extra)
    assert r.model == model
    assert [d.index for d in r.data] == [0, 1]
    got = [d.embedding for d in r.data]
    if fmt == "base64":
        got = [array("f", base64.b64decode(e)).tolist() for e in got]
    assert close(got[0], embedding_vector("hello", 16))
    assert close(got[1], embedding_vector("world", 16))
    assert r.usage.prompt_tokens > 0
    gemini_side = "gemini" in model or model == "emb-g"
    (seen,) = posts((g if gemini_side else o).received())
    if gemini_side:
        assert seen["path"] == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
        assert [q["content"]["parts"][0]["text"] for q in seen["body"]["requests"]] == ["hello", "world"]
        assert seen["body"]["requests"][0]["outputDimensionality"] == 16
    else:  # passthrough: the client's own body, with the upstream's model name
        assert seen["body"] == {"model": "text-embedding-3-small", "input": ["hello", "world"],
                                "dimensions": 16, "encoding_format": fmt or "base64"}
        assert seen["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"


@pytest.mark.parametrize("model", ["text-embedding-3-small", "gemini-embedding-001", "emb-g"])
def test_genai_sdk_any_backend(gai, ups, model):
    o, g = ups
    o.clear()
    g.clear()
    r = gai.models.embed_content(model=model, contents=["hello", "world"],
                                 config=types.EmbedContentConfig(output_dimensionality=16))
    assert [len(e.values) for e in r.embeddings] == [16, 16]
    assert close(r.embeddings[1].values, embedding_vector("world", 16))
    if model == "text-embedding-3-small":
        (seen,) = posts(o.received())
        assert seen["body"]["input"] == ["hello", "world"] and seen["body"]["dimensions"] == 16
    else:
        (seen,) = posts(g.received())
        assert seen["path"] == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
        assert {q["model"] for q in seen["body"]["requests"]} == {"models/gemini-embedding-001"}


def test_single_embed_content_to_openai_backend(gateway, ups):
    r = httpx.post(f"{gateway.base}/v1beta/models/text-embedding-3-small:embedContent",
                   headers={"x-goog-api-key": CLIENT_KEY},
                   json={"content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 8})
    assert r.status_code == 200, r.text
    assert close(r.json()["embedding"]["values"], embedding_vector("hello", 8))


def test_errors_in_the_callers_shape(oai, gai, gateway):
    with pytest.raises(openai.PermissionDeniedError):  # the OpenAI double: not an embeddings model
        oai.embeddings.create(model="gpt-4o-mini", input="x")
    with pytest.raises(openai.BadRequestError) as e:  # Gemini takes text only
        oai.embeddings.create(model="gemini-embedding-001", input=[[1, 2, 3]])
    assert e.value.body["param"] == "input"
    with pytest.raises(openai.NotFoundError):
        oai.embeddings.create(model="no-such-model", input="x")
    with pytest.raises(genai_errors.ClientError) as ge:
        gai.models.embed_content(model="no-such-model", contents="x")
    assert ge.value.code == 404 and ge.value.status == "NOT_FOUND"
    r = httpx.post(f"{gateway.base}/v1/embeddings", headers={"authorization": f"Bearer {CLIENT_KEY}"},
                   json={"model": "gemini-embedding-001", "input": ["x"] * 101})
    assert r.status_code == 400 and "100" in r.json()["error"]["message"]
