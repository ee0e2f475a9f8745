"""The public Gemini API with an API key (generativelanguage.googleapis.com, v1beta).

base_url is the bare origin, as in the google-genai SDK; the gateway appends
/v1beta/models/{model}:generateContent (or :streamGenerateContent?alt=sse).
"""

from typing import Any
from urllib.parse import quote

from converters.gemini import model_path
from llmgate.providers.base import ProviderKind


def _path(model: str) -> str:
    """models/{model} with the name percent-encoded, '/' included: one path segment, always."""
    prefix, _, name = model_path(model).partition("/")
    return f"{prefix}/{quote(name, safe='')}"


def _chat_url(base: str, model: str, stream: bool) -> str:
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"{base}/v1beta/{_path(model)}:{method}"


SERVED = {"generateContent", "embedContent"}  # methods the gateway routes to


def _model_ids(body: Any) -> list[str]:
    models = body.get("models") if isinstance(body, dict) else None
    if not isinstance(models, list):
        raise ValueError('expected {"models": [...]} from the models endpoint')
    return [
        m["name"].removeprefix("models/")
        for m in models
        if isinstance(m, dict) and isinstance(m.get("name"), str)
        and SERVED & set(m.get("supportedGenerationMethods") or ["generateContent"])
    ]


KIND = ProviderKind(
    type="gemini",
    wire="gemini",
    chat_url=_chat_url,
    models_path="/v1beta/models?pageSize=1000",
    auth_headers=lambda key: {"x-goog-api-key": key},
    parse_models=_model_ids,
    count_url=lambda base, model: f"{base}/v1beta/{_path(model)}:countTokens",
    embed_url=lambda base, model: f"{base}/v1beta/{_path(model)}:batchEmbedContents",
)
