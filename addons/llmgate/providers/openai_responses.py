"""An upstream that speaks the OpenAI Responses API (POST {base_url}/responses).

base_url includes the version, as in the OpenAI SDK (https://api.openai.com/v1).
"""

from llmgate.providers.base import ProviderKind
from llmgate.providers.openai_compat import KIND as CHAT

KIND = ProviderKind(
    type="openai-responses",
    wire="responses",
    chat_url=lambda base, model, stream: base + "/responses",
    models_path="/models",
    auth_headers=CHAT.auth_headers,
    parse_models=CHAT.parse_models,
    embed_url=CHAT.embed_url,  # OpenAI itself serves both
)
