"""The local Claude Code CLI as a backend: `opus`, `sonnet`, `haiku` served by `claude -p`.

The gateway runs llmgate/providers/claude_code_shim.py: a loopback server that speaks the Anthropic
Messages API and answers each request with one `claude -p --output-format stream-json`
subprocess (killed when the client leaves; `max_concurrency` at once, default 2). This kind
is that server as an `anthropic`-wire provider, so every client format reaches it. A machine
without the CLI (or with `command:` naming a missing file) shows the entry as unavailable in
/health, with the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmgate.credentials.accounts import Account, AccountSet
from llmgate.errors import GatewayError
from llmgate.providers.anthropic_api import ANTHROPIC_VERSION
from llmgate.providers.base import ProviderKind

if TYPE_CHECKING:
    from llmgate.request_path.upstream import UpstreamRequest

PLACEHOLDER = "http://claude-code.invalid"  # replaced by the shim's loopback address per request


class LocalCli(Account):
    """The one "account" of a claude-code entry: the CLI on this machine."""

    def __init__(self, p: Any, rt: Any):
        self.p = p
        self.rt = rt
        self.name = "local claude CLI"

    def shim(self) -> Any:
        from llmgate.providers.claude_code_shim import ClaudeCodeShim

        shims = self.rt.claude_code_shims
        key = (self.p.command or "claude", self.p.max_concurrency or 2)
        if key not in shims:
            shims[key] = ClaudeCodeShim(key[0], max_concurrency=key[1])
        return shims[key]

    def usable(self) -> bool:
        self.needs_login = self.shim().unavailable
        return self.needs_login is None

    async def prepare(self, up: UpstreamRequest, model: str, purpose: str, force: bool = False) -> None:
        shim = self.shim()
        if shim.unavailable:
            raise GatewayError(503, f"Provider '{self.p.id}': {shim.unavailable}", code="provider_unavailable")
        base = await shim.ensure_started()
        up.url = base + up.url[len(self.p.base_url):]
        up.headers["x-api-key"] = shim.api_key


KIND = ProviderKind(
    type="claude-code",
    wire="anthropic",
    chat_url=lambda base, model, stream: base + "/v1/messages",
    models_path=None,
    auth_headers=lambda key: {},
    parse_models=lambda body: [],
    default_headers={"anthropic-version": ANTHROPIC_VERSION},
    count_url=lambda base, model: base + "/v1/messages/count_tokens",
    default_base_url=PLACEHOLDER,
    default_models=("opus", "sonnet", "haiku"),
    config_fields=("command",),
    secret_headers=("x-api-key",),  # the shim's own key
    accounts=lambda p, rt: AccountSet(p, lambda path: LocalCli(p, rt), fixed=[LocalCli(p, rt)]),
)
