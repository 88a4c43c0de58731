"""POST /v1/responses and its companions as OpenAI defines them (the Responses API): the
request, its input items and tools, the response object, its stream events, and the
stored-response endpoints. Requests accept unknown fields, as the chat request does; the
dialect's validator decides what is honoured, ignored (and documented so) or refused."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    TypeAdapter,
    model_serializer,
    model_validator,
)

from app.protocol.openai_common import (
    RepetitionPenalty,
    Stop,
    Temperature,
    rule_error,
    without_none,
)
from app.settings import Duration

# ---------------------------------------------------------------------------- input items


class InputText(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["input_text"]
    text: str


class OutputText(BaseModel):
    """Text the model wrote: in a response, and in an assistant message sent back."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] | None = None


class Refusal(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["refusal"]
    refusal: str


class MediaPart(BaseModel):
    """Images, files and audio: parsed so the 400 can name the part; never served."""

    model_config = ConfigDict(extra="allow")

    type: Literal["input_image", "input_file", "input_audio"]


ContentPart = Annotated[InputText | OutputText | Refusal | MediaPart, Field(discriminator="type")]


class Message(BaseModel):
    """A message of the conversation. OpenAI's "easy" form has no `type`; the item form
    says `message` and may carry an id and a status (clients such as Codex send both)."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["message"] = "message"
    id: str | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    status: Literal["in_progress", "completed", "incomplete"] | None = None
    phase: Literal["commentary", "final_answer"] | None = None


class FunctionCall(BaseModel):
    """A call the model made (an output item), sent back as input on the next turn."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["function_call"] = "function_call"
    id: str | None = None
    call_id: str
    namespace: str | None = None
    name: str
    arguments: str  # JSON text, as OpenAI sends it
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallOutput(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["function_call_output"]
    id: str | None = None
    call_id: str = Field(min_length=1, max_length=64)
    output: str | list[ContentPart]
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class ReasoningItem(BaseModel):
    """Reasoning a reasoning model returned; a model without reasoning never produces
    one, and one sent back carries nothing it can read."""

    model_config = ConfigDict(extra="allow")

    type: Literal["reasoning"]
    id: str | None = None


class ItemReference(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["item_reference"] | None = "item_reference"
    id: str


class OtherItem(BaseModel):
    """Items of hosted tools (web search, computer use, shell, MCP, ...): parsed so the
    400 can name them."""

    model_config = ConfigDict(extra="allow")

    type: str


_ITEM_TAGS = {
    "message",
    "function_call",
    "function_call_output",
    "reasoning",
    "item_reference",
}


def _item_tag(value: Any) -> str:
    if isinstance(value, dict):
        kind = value.get("type", "message")
    else:
        kind = getattr(value, "type", "message")
    if kind is None and isinstance(value, dict) and "id" in value:
        return "item_reference"
    # Anything but a known type string (an object, a number) fails as an unknown item.
    return kind if isinstance(kind, str) and kind in _ITEM_TAGS else "other"


InputItem = Annotated[
    Annotated[Message, Tag("message")]
    | Annotated[FunctionCall, Tag("function_call")]
    | Annotated[FunctionCallOutput, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[ItemReference, Tag("item_reference")]
    | Annotated[OtherItem, Tag("other")],
    Discriminator(_item_tag),
]
ITEMS: TypeAdapter[list[InputItem]] = TypeAdapter(list[InputItem])

# ---------------------------------------------------------------------------- tools


class FunctionTool(BaseModel):
    """A function tool in the Responses shape: name, description, parameters and strict at
    the top level (the chat API nests them under `function`)."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["function"]
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    defer_loading: bool | None = None


class NamespaceTool(BaseModel):
    """A group of function tools under one name (Codex sends MCP servers' tools so); a
    call names both, as `namespace` and `name`."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["namespace"]
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
    description: str | None = None
    tools: list[FunctionTool | HostedTool] = Field(min_length=1)  # HostedTool: `custom`


class HostedTool(BaseModel):
    """A tool OpenAI runs itself (web_search, file_search, code_interpreter, ...) or one
    whose input is free text (`custom`): this server can run none of them."""

    model_config = ConfigDict(extra="allow")

    type: str
    name: str | None = None

    @model_validator(mode="after")
    def _not_a_function(self) -> Self:
        if self.type in ("function", "namespace"):
            raise rule_error(f"A {self.type} tool needs its fields.", "type")
        return self


NamespaceTool.model_rebuild()


def _typed(*known: str) -> Discriminator:
    """Tags a union by `type`, sending every type not in `known` to the `hosted` member."""

    def tag(value: Any) -> str:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return kind if isinstance(kind, str) and kind in known else "hosted"

    return Discriminator(tag)


Tool = Annotated[
    Annotated[FunctionTool, Tag("function")]
    | Annotated[NamespaceTool, Tag("namespace")]
    | Annotated[HostedTool, Tag("hosted")],
    _typed("function", "namespace"),
]


class FunctionChoice(BaseModel):
    model_config = ConfigDict(strict=True)

    type: Literal["function"]
    name: str
    namespace: str | None = None


class AllowedTools(BaseModel):
    """Restricts the callable tools to a subset, with `auto` or `required`."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["allowed_tools"]
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


class HostedChoice(BaseModel):
    """Forcing a hosted or custom tool (`{"type": "web_search"}`, `{"type": "custom", ...}`)."""

    model_config = ConfigDict(extra="allow")

    type: str


ToolChoice = (
    Literal["none", "auto", "required"]
    | Annotated[
        Annotated[FunctionChoice, Tag("function")]
        | Annotated[AllowedTools, Tag("allowed_tools")]
        | Annotated[HostedChoice, Tag("hosted")],
        _typed("function", "allowed_tools"),
    ]
)

# ---------------------------------------------------------------------------- text format


class FormatText(BaseModel):
    model_config = ConfigDict(strict=True)

    type: Literal["text"]


class FormatJsonObject(BaseModel):
    model_config = ConfigDict(strict=True)

    type: Literal["json_object"]


class FormatJsonSchema(BaseModel):
    model_config = ConfigDict(strict=True, populate_by_name=True)

    type: Literal["json_schema"]
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


TextFormat = Annotated[
    FormatText | FormatJsonObject | FormatJsonSchema, Field(discriminator="type")
]


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None  # a hint; see docs/RESPONSES.md


class Reasoning(BaseModel):
    model_config = ConfigDict(extra="allow")

    effort: str | None = None
    summary: str | None = None


# ---------------------------------------------------------------------------- requests

Metadata = Annotated[dict[str, Annotated[str, Field(max_length=512)]], Field(max_length=16)]


class ResponseInput(BaseModel):
    """What a response is made of, shared by POST /v1/responses and
    /v1/responses/input_tokens (which counts it without generating)."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = None
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: Reasoning | None = None
    truncation: Literal["auto", "disabled"] | None = None
    conversation: Any = None

    def items(self) -> list[InputItem]:
        if self.input is None:
            return []
        if isinstance(self.input, str):
            return [Message(role="user", content=self.input)]
        return list(self.input)


class CreateResponse(ResponseInput):
    """Ordered as OpenAI's reference orders CreateResponse; after them, the sampling
    extensions vLLM also accepts on this endpoint."""

    model: str  # type: ignore[assignment]
    metadata: Metadata | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    temperature: Temperature | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    user: str | None = None
    safety_identifier: Annotated[str, Field(max_length=64)] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    service_tier: str | None = None
    background: bool | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    max_tool_calls: Annotated[int, Field(ge=1)] | None = None
    prompt: Any = None
    include: list[str] | None = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    # Extensions (vLLM's names), not in OpenAI's reference.
    seed: int | None = None
    stop: Stop = None
    top_k: Annotated[int, Field(ge=-1)] | None = None
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    repetition_penalty: RepetitionPenalty | None = None
    # Ollama's: how long the model stays loaded after this request (app/pool.py).
    keep_alive: Duration | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.stream_options is not None and not self.stream:
            raise rule_error(
                "stream_options is only allowed when stream is true.", "stream_options"
            )
        if self.background and self.store is False:
            raise rule_error("background responses must be stored (store: true).", "background")
        return self


class CountTokensRequest(ResponseInput):
    """POST /v1/responses/input_tokens."""


# ---------------------------------------------------------------------------- responses


class ResponseError(BaseModel):
    code: str
    message: str


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens", "content_filter"]


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]
    status: Literal["in_progress", "completed", "incomplete"]


class OutputFunctionCall(BaseModel):
    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    namespace: str | None = None
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"]

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return without_none(handler(self), "namespace")  # only calls in a namespace have one


OutputItem = OutputMessage | OutputFunctionCall


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


Status = Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]


class Response(BaseModel):
    """The response object, with the request's parameters echoed as OpenAI echoes them."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Status
    completed_at: int | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: dict[str, Any] = Field(default_factory=lambda: {"effort": None, "summary": None})
    service_tier: str = "default"
    store: bool = True
    background: bool = False
    temperature: float = 1.0
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    tool_choice: Any = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    top_logprobs: int = 0
    top_p: float = 1.0
    truncation: Literal["auto", "disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    # ovchat's own: how many of the oldest input items `truncation: auto` left out.
    truncated_input_items: int | None = None

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # `user` and `usage` are absent, never null, in OpenAI's schema.
        return without_none(handler(self), "user", "usage", "truncated_input_items")


class DeletedResponse(BaseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True


class ItemList(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


class InputTokens(BaseModel):
    object: Literal["response.input_tokens"] = "response.input_tokens"
    input_tokens: int
