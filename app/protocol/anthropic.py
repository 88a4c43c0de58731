"""Anthropic's Messages API on the wire (docs.claude.com/en/api/messages): the create
request, the message, the stream's events, count_tokens, and the error shape, in the
reference's order. Requests accept unknown fields (Claude Code sends many); the dialect's
validator decides what is honoured, ignored where ignoring keeps the answer correct, or
refused with a 400 (docs/ANTHROPIC.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from app.protocol.openai_common import rule_error

# ---------------------------------------------------------------------------- requests


class CacheControl(BaseModel):
    """Prompt caching hints: accepted and ignored (the engine reuses prefixes by itself)."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["ephemeral"]
    ttl: str | None = None


class TextBlockParam(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    text: str
    type: Literal["text"]
    cache_control: CacheControl | None = None
    citations: list[dict[str, Any]] | None = None


class ThinkingBlockParam(BaseModel):
    """A thinking block of an earlier reply (from another model): dropped, as Anthropic
    drops earlier turns' thinking from the context."""

    model_config = ConfigDict(extra="allow", strict=True)

    signature: str
    thinking: str
    type: Literal["thinking"]


class RedactedThinkingBlockParam(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    data: str
    type: Literal["redacted_thinking"]


class ToolUseBlockParam(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    id: str
    input: dict[str, Any]
    name: str
    type: Literal["tool_use"]
    cache_control: CacheControl | None = None


class ToolResultBlockParam(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    tool_use_id: str
    type: Literal["tool_result"]
    cache_control: CacheControl | None = None
    content: str | list[TextBlockParam] | None = None
    is_error: bool | None = None

    def text(self) -> str:
        return block_text(self.content)


ContentBlockParam = Annotated[
    TextBlockParam
    | ThinkingBlockParam
    | RedactedThinkingBlockParam
    | ToolUseBlockParam
    | ToolResultBlockParam,
    Field(discriminator="type"),
]

# The blocks each role may send that this server reads (thinking is read, then dropped).
ROLE_BLOCKS: dict[str, frozenset[str]] = {
    "user": frozenset({"text", "tool_result"}),
    "assistant": frozenset({"text", "tool_use", "thinking", "redacted_thinking"}),
    "system": frozenset({"text"}),
}
_KNOWN_BLOCKS = frozenset().union(*ROLE_BLOCKS.values())


def _refused_block(kind: str, role: str) -> str:
    if kind in ("image", "document"):
        return f"'{kind}' content blocks are not supported: the served model reads text only."
    if kind in _KNOWN_BLOCKS:
        return f"'{kind}' content blocks are not allowed in {role} messages."
    return f"'{kind}' content blocks are not supported by this server."


def block_text(content: str | list[TextBlockParam] | None) -> str:
    """Text blocks are separate paragraphs: joined as such, empty ones left out."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n\n".join(block.text for block in content if block.text)


class MessageParam(BaseModel):
    """One message. `system` is not in Anthropic's reference, but its SDKs and Claude Code
    send it: it is read as part of the system prompt, in order."""

    model_config = ConfigDict(extra="allow", strict=True)

    content: str | list[ContentBlockParam]
    role: Literal["user", "assistant", "system"]

    @model_validator(mode="before")
    @classmethod
    def _readable_blocks(cls, data: Any) -> Any:
        """A block this server cannot read is a 400 naming it (`content[1]`), before the
        union's own error, which would list every block type it knows."""
        if not isinstance(data, dict) or not isinstance(data.get("content"), list):
            return data
        role = data.get("role")
        if not isinstance(role, str) or role not in ROLE_BLOCKS:
            return data
        allowed = ROLE_BLOCKS[role]
        for j, block in enumerate(data["content"]):
            kind = block.get("type") if isinstance(block, dict) else None
            if not isinstance(kind, str):
                continue  # not a block at all: the union's own error says so
            if kind not in allowed:
                raise rule_error(_refused_block(kind, role), f"content[{j}]", "invalid_request")
            nested = block.get("content") if kind == "tool_result" else None
            for k, part in enumerate(nested if isinstance(nested, list) else []):
                inner = part.get("type") if isinstance(part, dict) else None
                if isinstance(inner, str) and inner != "text":
                    raise rule_error(
                        _refused_block(inner, "tool_result"),
                        f"content[{j}].content[{k}]",
                        "invalid_request",
                    )
        return data


class ToolParam(BaseModel):
    """A client tool: a function the client runs."""

    model_config = ConfigDict(extra="allow", strict=True)

    input_schema: dict[str, Any]
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")]
    cache_control: CacheControl | None = None
    defer_loading: bool | None = None
    description: str | None = None
    strict: bool | None = None
    type: Literal["custom"] | None = None


class ServerToolParam(BaseModel):
    """A tool Anthropic runs on its side (web search, code execution, bash, the text
    editor, ...), named by a dated type: this server cannot run any of them."""

    model_config = ConfigDict(extra="allow", strict=True)

    name: str
    type: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*_[0-9]{8}$")]


def _tool_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return "custom" if value.get("type") in (None, "custom") else "server"
    if isinstance(value, ToolParam | ServerToolParam):
        return "custom" if isinstance(value, ToolParam) else "server"
    return None


Tool = Annotated[
    Annotated[ToolParam, Tag("custom")] | Annotated[ServerToolParam, Tag("server")],
    Discriminator(_tool_kind),
]


class ToolChoiceAuto(BaseModel):
    model_config = ConfigDict(strict=True)

    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(BaseModel):
    model_config = ConfigDict(strict=True)

    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(BaseModel):
    model_config = ConfigDict(strict=True)

    name: str
    type: Literal["tool"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(BaseModel):
    model_config = ConfigDict(strict=True)

    type: Literal["none"]


ToolChoice = Annotated[
    ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone,
    Field(discriminator="type"),
]


class ThinkingConfig(BaseModel):
    """Claude's extended thinking (`enabled`, `adaptive`, `disabled`, ...): accepted and
    ignored, as the served model does not think."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: str
    budget_tokens: int | None = None


class JsonOutputFormat(BaseModel):
    model_config = ConfigDict(strict=True)

    schema_: dict[str, Any] = Field(alias="schema")
    type: Literal["json_schema"]


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    effort: str | None = None  # how hard Claude thinks: ignored
    format: JsonOutputFormat | None = None  # structured output: enforced by the grammar


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    user_id: str | None = None


class PromptRequest(BaseModel):
    """What a prompt is made of: the fields a create and a count_tokens share."""

    model_config = ConfigDict(extra="allow", strict=True)

    messages: Annotated[list[MessageParam], Field(min_length=1)]
    model: str
    context_management: dict[str, Any] | None = None  # server-side context edits: ignored
    output_config: OutputConfig | None = None
    system: str | list[TextBlockParam] | None = None
    thinking: ThinkingConfig | None = None
    tool_choice: ToolChoice | None = None
    tools: list[Tool] | None = None

    @model_validator(mode="after")
    def _tool_choice_is_runnable(self) -> Self:
        choice = self.tool_choice
        tools = self.tools or []
        names = [tool.name for tool in tools if isinstance(tool, ToolParam)]
        if len(set(names)) != len(names):
            raise rule_error("Tool names must be unique.", "tools")
        if not isinstance(choice, ToolChoiceAny | ToolChoiceTool):
            return self
        if not tools:
            raise rule_error(f"tool_choice '{choice.type}' needs tools.", "tool_choice")
        servers = [(i, t) for i, t in enumerate(tools) if isinstance(t, ServerToolParam)]
        if isinstance(choice, ToolChoiceTool):
            if choice.name in names:
                return self
            for i, tool in servers:
                if tool.name == choice.name:
                    raise rule_error(
                        f"tool_choice forces '{choice.name}', the server tool tools[{i}] "
                        f"({tool.type}), which this server cannot run.",
                        "tool_choice",
                    )
            raise rule_error(
                f"tool_choice names '{choice.name}', which is not in tools.", "tool_choice"
            )
        if not names:
            listed = ", ".join(f"tools[{i}] ({tool.type})" for i, tool in servers)
            raise rule_error(
                f"tool_choice 'any' forces a tool, and the only tools are server tools this "
                f"server cannot run: {listed}.",
                "tool_choice",
            )
        return self


class MessageCreateRequest(PromptRequest):
    max_tokens: Annotated[int, Field(ge=1)]
    metadata: Metadata | None = None
    stop_sequences: list[Annotated[str, Field(min_length=1)]] | None = None
    stream: bool | None = False
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None


# ---------------------------------------------------------------------------- responses


class TextBlock(BaseModel):
    text: str
    type: Literal["text"] = "text"


class ToolUseBlock(BaseModel):
    id: str
    input: dict[str, Any]
    name: str
    type: Literal["tool_use"] = "tool_use"


ContentBlock = Annotated[TextBlock | ToolUseBlock, Field(discriminator="type")]
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class Usage(BaseModel):
    """Nothing is read from or written to a prompt cache as Anthropic counts it: its two
    counts are 0, stated because Claude Code adds them up."""

    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    input_tokens: int
    output_tokens: int


class Message(BaseModel):
    id: str
    content: list[ContentBlock]
    model: str
    role: Literal["assistant"] = "assistant"
    stop_reason: StopReason | None
    stop_sequence: str | None
    type: Literal["message"] = "message"
    usage: Usage


# ---------------------------------------------------------------------------- streaming


class MessageStartEvent(BaseModel):
    message: Message
    type: Literal["message_start"] = "message_start"


class ContentBlockStartEvent(BaseModel):
    content_block: ContentBlock
    index: int
    type: Literal["content_block_start"] = "content_block_start"


class TextDelta(BaseModel):
    text: str
    type: Literal["text_delta"] = "text_delta"


class InputJsonDelta(BaseModel):
    partial_json: str
    type: Literal["input_json_delta"] = "input_json_delta"


class ContentBlockDeltaEvent(BaseModel):
    delta: Annotated[TextDelta | InputJsonDelta, Field(discriminator="type")]
    index: int
    type: Literal["content_block_delta"] = "content_block_delta"


class ContentBlockStopEvent(BaseModel):
    index: int
    type: Literal["content_block_stop"] = "content_block_stop"


class MessageDelta(BaseModel):
    stop_reason: StopReason | None
    stop_sequence: str | None


class MessageDeltaUsage(BaseModel):
    """Cumulative, as Anthropic's: the totals of the whole message."""

    cache_creation_input_tokens: int | None = 0
    cache_read_input_tokens: int | None = 0
    input_tokens: int | None
    output_tokens: int


class MessageDeltaEvent(BaseModel):
    delta: MessageDelta
    type: Literal["message_delta"] = "message_delta"
    usage: MessageDeltaUsage


class MessageStopEvent(BaseModel):
    type: Literal["message_stop"] = "message_stop"


class PingEvent(BaseModel):
    type: Literal["ping"] = "ping"


# ---------------------------------------------------------------------------- count tokens


class MessageCountTokensRequest(PromptRequest):
    """The prompt of a create, without what only generation needs."""


class MessageTokensCount(BaseModel):
    input_tokens: int


# ---------------------------------------------------------------------------- errors


class AnthropicErrorBody(BaseModel):
    type: str
    message: str


class AnthropicError(BaseModel):
    type: Literal["error"] = "error"
    error: AnthropicErrorBody
    request_id: str | None = None
