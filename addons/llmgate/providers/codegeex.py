"""CodeGeeX (codegeex.cn; unofficial, low confidence): chat only, through its plugin API.

Auth is the plugin's code-token (`api_key:` in proxy.yaml). History travels as query/answer
pairs, answers as SSE `add` / `finish` events (converters/codegeex.py). No tool calling: a
request with tools is a 400 saying so. Models come from its model-list endpoint.
"""

from __future__ import annotations

from typing import Any

from llmgate.providers.base import ProviderKind


def _model_ids(body: Any) -> list[str]:
    options = body.get("options") if isinstance(body, dict) else None
    if not isinstance(options, list):
        raise ValueError('expected {"options": [...]} from the model list')
    return [o["id"] for o in options if isinstance(o, dict) and isinstance(o.get("id"), str)]


KIND = ProviderKind(
    type="codegeex",
    wire="codegeex",
    chat_url=lambda base, model, stream: base + "/prod/code/chatCodeSseV3/chat",
    models_path="/prod/v3/chat/model",
    auth_headers=lambda key: {"code-token": key},
    parse_models=_model_ids,
    default_base_url="https://codegeex.cn",
)
