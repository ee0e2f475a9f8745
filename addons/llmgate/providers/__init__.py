"""Provider kinds: one small module each, registered here by their `type:` name."""

from llmgate.providers import (
    anthropic_api,
    antigravity,
    claude_code,
    code_assist,
    codegeex,
    codex,
    copilot,
    gemini_api,
    iflow,
    kiro,
    openai_compat,
    openai_responses,
    qwen,
)
from llmgate.providers.base import ProviderKind

PROVIDER_TYPES: dict[str, ProviderKind] = {
    "openai": openai_compat.KIND,
    "gemini": gemini_api.KIND,
    "anthropic": anthropic_api.KIND,
    "openai-responses": openai_responses.KIND,
    "qwen": qwen.KIND,
    "gemini-cli": code_assist.KIND,
    "antigravity": antigravity.KIND,
    "iflow": iflow.KIND,
    "codegeex": codegeex.KIND,
    "claude-code": claude_code.KIND,
    "kiro": kiro.KIND,
    "codex": codex.KIND,
    "copilot": copilot.KIND,
}
