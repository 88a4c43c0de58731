"""POST /v1/chat/completions as OpenAI defines it: the request, the response and the stream
chunks. Requests accept unknown fields (OpenAI clients send extras); the dialect's
validator decides what is honoured and refuses, never drops, what is not."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from app.protocol.openai_common import (
    FinishReason,
    GenerationRequest,
    Usage,
    rule_error,
    without_none,
)

# ---------------------------------------------------------------------------- requests


class TextContentPart(BaseModel):
    # Only text parts are served; any other `type` fails on that field, by name.
    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    model_config = ConfigDict(strict=True)

    arguments: str  # JSON text, as OpenAI sends it
    name: str


class ToolCall(BaseModel):
    model_config = ConfigDict(strict=True)

    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class ChatMessage(BaseModel):
    """One message of the conversation; `developer` is OpenAI's newer name for `system`."""

    model_config = ConfigDict(extra="allow", strict=True)

    content: str | list[TextContentPart] | None = None
    role: Literal["developer", "system", "user", "assistant", "tool"]
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # assistant messages that called tools
    tool_call_id: str | None = None  # tool messages: the call they answer

    @model_validator(mode="after")
    def _content_or_calls(self) -> Self:
        if self.content is not None:
            return self
        if self.role != "assistant":
            raise rule_error(
                "content must be a string or a list of text parts, not null.", "content"
            )
        if not self.tool_calls:
            raise rule_error("An assistant message needs content or tool_calls.", "content")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(strict=True)

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(BaseModel):
    model_config = ConfigDict(strict=True)

    function: FunctionDefinition
    type: Literal["function"]


class NamedFunction(BaseModel):
    model_config = ConfigDict(strict=True)

    name: str


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(strict=True)

    function: NamedFunction
    type: Literal["function"]


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(strict=True)

    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormatText(BaseModel):
    model_config = ConfigDict(strict=True)

    type: Literal["text"]


class ResponseFormatJsonObject(BaseModel):
    model_config = ConfigDict(strict=True)

    type: Literal["json_object"]


class ResponseFormatJsonSchema(BaseModel):
    model_config = ConfigDict(strict=True)

    json_schema: JsonSchemaFormat
    type: Literal["json_schema"]


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema,
    Field(discriminator="type"),
]
ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class _ChatFields(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    model: str
    logprobs: bool | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    metadata: dict[str, str] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    service_tier: str | None = None
    store: bool | None = None
    tool_choice: ToolChoice | None = None
    tools: list[ToolDefinition] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None


class ChatCompletionRequest(_ChatFields, GenerationRequest):
    @model_validator(mode="after")
    def _consistent(self) -> Self:
        self.check_stream_options()
        if self.top_logprobs and not self.logprobs:
            raise rule_error("top_logprobs requires logprobs to be true.", "top_logprobs")
        forced = self.tool_choice == "required" or isinstance(self.tool_choice, NamedToolChoice)
        if forced and not self.tools:
            raise rule_error("tool_choice needs tools.", "tool_choice")
        names = [tool.function.name for tool in self.tools or []]
        if len(set(names)) != len(names):
            raise rule_error("Function names must be unique.", "tools")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in (
            names
        ):
            raise rule_error(
                f"tool_choice names '{self.tool_choice.function.name}', which is not in tools.",
                "tool_choice",
            )
        return self

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


# ---------------------------------------------------------------------------- responses


class TopLogprob(BaseModel):
    token: str
    bytes: list[int] | None
    logprob: float


class TokenLogprob(BaseModel):
    token: str
    bytes: list[int] | None
    logprob: float
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class AssistantMessage(BaseModel):
    content: str | None
    refusal: str | None = None
    role: Literal["assistant"] = "assistant"
    tool_calls: list[ToolCall] | None = None

    @model_serializer(mode="wrap")
    def _calls_only_when_made(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return without_none(handler(self), "tool_calls")


class ChatChoice(BaseModel):
    finish_reason: FinishReason
    index: int
    logprobs: ChoiceLogprobs | None = None
    message: AssistantMessage


class ChatCompletion(BaseModel):
    id: str
    choices: list[ChatChoice]
    created: int
    model: str
    object: Literal["chat.completion"] = "chat.completion"
    system_fingerprint: str
    usage: Usage


class ChunkFunction(BaseModel):
    """A tool call's function as streamed: the name once, the arguments in fragments."""

    name: str | None = None
    arguments: str | None = None

    @model_serializer(mode="wrap")
    def _only_present(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return without_none(handler(self), "name", "arguments")


class ChunkToolCall(BaseModel):
    """OpenAI sends `id`, `type` and the function's name in a call's first delta, then
    only `index` and argument fragments."""

    index: int
    id: str | None = None
    function: ChunkFunction
    type: Literal["function"] | None = None

    @model_serializer(mode="wrap")
    def _only_present(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return without_none(handler(self), "id", "type")


class ChunkDelta(BaseModel):
    """Only what changed: {"content": "x"}, or {} on the closing chunk. A tool-call reply's
    first delta says `content: null`, as OpenAI's does (`null_content`)."""

    content: str | None = None
    role: Literal["assistant"] | None = None
    tool_calls: list[ChunkToolCall] | None = None
    null_content: bool = Field(False, exclude=True)

    @model_serializer(mode="wrap")
    def _only_present(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = without_none(handler(self), "role", "tool_calls")
        if not self.null_content:
            without_none(data, "content")
        return data


class ChunkChoice(BaseModel):
    delta: ChunkDelta
    finish_reason: FinishReason | None = None
    index: int
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    choices: list[ChunkChoice]
    created: int
    model: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    system_fingerprint: str
    usage: Usage | None = None
