"""OpenAI wire models: requests, responses, stream chunks and errors.

Fields are ordered as the OpenAI API reference orders them, so a reader can hold this file
against the reference. Requests accept unknown fields (OpenAI clients send extras); the
routes decide what is honoured and refuse, never drop, what is not."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


# ---------------------------------------------------------------------------- errors


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# ---------------------------------------------------------------------------- requests


class TextContentPart(BaseModel):
    # Only text parts are served; any other `type` fails on that field, by name.
    model_config = ConfigDict(extra="allow")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One message of the conversation; `developer` is OpenAI's newer name for `system`."""

    model_config = ConfigDict(extra="allow")

    content: str | list[TextContentPart] | None = None
    role: Literal["developer", "system", "user", "assistant"]
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = None
    include_obfuscation: bool | None = None


Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    model: str
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    metadata: dict[str, str] | None = None
    n: Annotated[int, Field(ge=1)] | None = None
    presence_penalty: Penalty | None = None
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    service_tier: str | None = None
    stop: str | list[str] | None = None
    store: bool | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    tool_choice: Any | None = None
    tools: list[dict[str, Any]] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    user: str | None = None
    # Extension (vLLM's name): keep generating past eos, for fixed-length benchmarks.
    ignore_eos: bool | None = None

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, value: str | list[str] | None) -> str | list[str] | None:
        items = [value] if isinstance(value, str) else (value or [])
        if any(item == "" for item in items):
            raise ValueError("stop strings must not be empty")
        return value

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


# ---------------------------------------------------------------------------- responses


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    completion_tokens: int
    prompt_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


class AssistantMessage(BaseModel):
    content: str | None
    refusal: str | None = None
    role: Literal["assistant"] = "assistant"


class ChatChoice(BaseModel):
    finish_reason: FinishReason
    index: int
    logprobs: None = None
    message: AssistantMessage


class ChatCompletion(BaseModel):
    id: str
    choices: list[ChatChoice]
    created: int
    model: str
    object: Literal["chat.completion"] = "chat.completion"
    system_fingerprint: str
    usage: Usage


class ChunkDelta(BaseModel):
    content: str | None = None
    role: Literal["assistant"] | None = None

    @model_serializer(mode="wrap")
    def _only_present(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # OpenAI sends only what changed: {"content": "x"}, or {} on the closing chunk.
        return {k: v for k, v in handler(self).items() if v is not None}


class ChunkChoice(BaseModel):
    delta: ChunkDelta
    finish_reason: FinishReason | None = None
    index: int
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    choices: list[ChunkChoice]
    created: int
    model: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    system_fingerprint: str
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    created: int
    object: Literal["model"] = "model"
    owned_by: str = "ovchat"


class ModelList(BaseModel):
    data: list[ModelCard]
    object: Literal["list"] = "list"


class Health(BaseModel):
    status: Literal["ok", "loading", "unavailable"]
    model: str | None = None
    engine: str | None = None
