"""Anthropic Messages API with an API key (api.anthropic.com or a compatible server).

base_url is the bare origin, as in the anthropic SDK; the gateway appends /v1/messages.
"""

from typing import Any

from llmgate.providers.base import ProviderKind

ANTHROPIC_VERSION = "2023-06-01"


def _model_ids(body: Any) -> list[str]:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise ValueError('expected {"data": [...]} from the models endpoint')
    return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]


KIND = ProviderKind(
    type="anthropic",
    wire="anthropic",
    chat_url=lambda base, model, stream: base + "/v1/messages",
    models_path="/v1/models?limit=1000",
    auth_headers=lambda key: {"x-api-key": key},
    parse_models=_model_ids,
    default_headers={"anthropic-version": ANTHROPIC_VERSION},
    count_url=lambda base, model: base + "/v1/messages/count_tokens",
)
