"""The canonical model: the hub every wire format is decoded to and encoded from.

2N converters through here instead of N*N pairwise translators. Plain
dataclasses: they are built and read on every request and stream event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal


class ConversionError(ValueError):
    """A request or response that cannot be expressed in the target format.

    The addon answers it with a 400 in the caller's format; `param` names the field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


# --- content blocks ---------------------------------------------------------

@dataclass(slots=True)
class Text:
    text: str
    cache_control: dict | None = None


@dataclass(slots=True)
class Image:
    media_type: str = ""
    data: str | None = None  # base64
    url: str | None = None  # remote URL (only some targets take these)
    cache_control: dict | None = None  # Anthropic prompt-caching breakpoint


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, exactly as produced
    signature: str | None = None  # Gemini thoughtSignature on the call
    cache_control: dict | None = None  # Anthropic prompt-caching breakpoint


@dataclass(slots=True)
class ToolResult:
    call_id: str
    content: list[Text | Image]
    is_error: bool = False
    name: str | None = None  # the called tool's name, where known
    cache_control: dict | None = None  # Anthropic prompt-caching breakpoint


@dataclass(slots=True)
class Thinking:
    text: str
    signature: str | None = None
    encrypted_content: str | None = None  # OpenAI Responses reasoning item's opaque blob (Responses upstreams only)


@dataclass(slots=True)
class RedactedThinking:
    data: str


Block = Text | Image | ToolCall | ToolResult | Thinking | RedactedThinking


Role = Literal["user", "assistant"]


ToolChoiceMode = Literal["auto", "none", "required", "tool"]


@dataclass(slots=True)
class Message:
    role: Role
    content: list[Block]


# --- request -----------------------------------------------------------------

@dataclass(slots=True)
class Tool:
    name: str
    description: str | None = None
    parameters: dict | None = None  # JSON Schema
    cache_control: dict | None = None  # Anthropic prompt-caching breakpoint
    strict: bool | None = None  # OpenAI strict schema adherence (Responses defaults it to true if absent)


@dataclass(slots=True)
class HostedTool:
    """A tool the provider runs itself (Responses web_search, Anthropic web_search_*, Gemini googleSearch).

    `kind` is format-neutral: "web_search" where every format has one, else the client's own type
    name. Encoders map it where the provider has an equivalent, else name it in Request.dropped_tools."""
    kind: str
    config: dict = field(default_factory=dict)  # the client's own settings, for a same-kind target


@dataclass(slots=True)
class ToolChoice:
    mode: ToolChoiceMode
    name: str | None = None  # with mode "tool"


@dataclass(slots=True)
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"]
    schema: dict | None = None
    name: str | None = None
    strict: bool | None = None


@dataclass(slots=True)
class Reasoning:
    effort: str | None = None  # minimal | low | medium | high (OpenAI style)
    budget_tokens: int | None = None  # Anthropic / Gemini 2.5 style
    level: str | None = None  # Gemini 3 thinkingLevel, set only when fitted to such a model (converters/thinking.py)
    include_thoughts: bool = True


@dataclass(slots=True)
class Request:
    model: str
    messages: list[Message]
    system: list[Text] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: ResponseFormat | None = None
    reasoning: Reasoning | None = None
    stream: bool = False
    include_usage: bool = False
    user: str | None = None
    dropped: list[str] = field(default_factory=list)  # parameters the target could not honour
    # tools whose calls carry one raw string, not JSON (Responses "custom" tools, e.g. Codex's
    # apply_patch): other formats see a function taking {"input": string}
    freeform_tools: list[str] = field(default_factory=list)
    # Responses namespace members, offered to other providers as flat function names:
    # flat name -> (namespace, member name), so calls go back in the namespace form
    namespaced: dict[str, tuple[str, str]] = field(default_factory=dict)
    hosted_tools: list[HostedTool] = field(default_factory=list)
    dropped_tools: list[str] = field(default_factory=list)  # hosted tools the target has no equivalent of


# --- response ----------------------------------------------------------------

FinishReason = Literal["stop", "stop_sequence", "length", "tool_calls", "content_filter", "error"]


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0  # includes reasoning tokens
    cached_tokens: int = 0  # part of input_tokens
    reasoning_tokens: int = 0  # part of output_tokens
    cache_write_tokens: int = 0  # part of input_tokens (Anthropic cache_creation_input_tokens)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class Response:
    id: str
    model: str
    content: list[Block]
    finish: FinishReason
    usage: Usage = field(default_factory=Usage)
    created: int = 0
    finish_detail: str | None = None  # the provider's own reason, e.g. MALFORMED_FUNCTION_CALL


# --- stream events -----------------------------------------------------------

@dataclass(slots=True)
class MessageStart:
    id: str
    model: str
    created: int = 0


@dataclass(slots=True)
class BlockStart:
    index: int
    block: Text | ToolCall | Thinking | RedactedThinking  # with empty text / arguments


@dataclass(slots=True)
class TextDelta:
    index: int
    text: str


@dataclass(slots=True)
class ThinkingDelta:
    index: int
    text: str


@dataclass(slots=True)
class SignatureDelta:
    index: int
    signature: str


@dataclass(slots=True)
class ArgumentsDelta:
    index: int
    json: str


@dataclass(slots=True)
class BlockStop:
    index: int
    encrypted_content: str | None = None  # a Responses reasoning item's blob, known only when the item is done


@dataclass(slots=True)
class UsageUpdate:
    usage: Usage


@dataclass(slots=True)
class Finish:
    reason: FinishReason
    detail: str | None = None


@dataclass(slots=True)
class StreamError:
    message: str
    code: str = "upstream_error"
    status: int = 502


Event = (MessageStart | BlockStart | TextDelta | ThinkingDelta | SignatureDelta | ArgumentsDelta
         | BlockStop | UsageUpdate | Finish | StreamError)


def hosted(req: Request, kinds: tuple[str, ...] = ()) -> list[HostedTool]:
    """The request's hosted tools the target has an equivalent of (`kinds`); the others are
    named in req.dropped_tools (the gateway says so in a response header, never refuses)."""
    req.dropped_tools += [h.kind for h in req.hosted_tools if h.kind not in kinds and h.kind not in req.dropped_tools]
    return [h for h in req.hosted_tools if h.kind in kinds]


def text_of(blocks: Sequence[Block]) -> str:
    return "".join(b.text for b in blocks if isinstance(b, Text))
