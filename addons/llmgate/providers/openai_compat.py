"""Any OpenAI-compatible server: OpenAI, OpenRouter, Groq, Together, DashScope, LM Studio, Ollama, vLLM.

base_url includes the API version, as the official SDK's base_url does
(https://api.openai.com/v1, http://127.0.0.1:1234/v1).
"""

from typing import Any

from llmgate.providers.base import ProviderKind


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _model_ids(body: Any) -> list[str]:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise ValueError("expected {\"data\": [...]} from the models endpoint")
    return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]


KIND = ProviderKind(
    type="openai",
    wire="openai_chat",
    chat_url=lambda base, model, stream: base + "/chat/completions",
    models_path="/models",
    auth_headers=_bearer,
    parse_models=_model_ids,
    embed_url=lambda base, model: base + "/embeddings",
    secret_headers=("api-key",),  # Azure OpenAI's key header, given in `headers:`
)
