"""Provider kinds: one small module each, registered here by their `type:` name."""

from llmgate.providers import gemini_api, openai_compat
from llmgate.providers.base import ProviderKind

PROVIDER_TYPES: dict[str, ProviderKind] = {
    "openai": openai_compat.KIND,
    "gemini": gemini_api.KIND,
}
