"""POST /v1/completions, OpenAI's legacy text completions: the request and the response
(also the stream chunk, which has the response's shape)."""

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
    TokenId,
    Usage,
    rule_error,
    without_none,
)

# ---------------------------------------------------------------------------- requests

Prompt = (
    Annotated[str, Field(min_length=1)]
    | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    | Annotated[list[TokenId], Field(min_length=1)]
    | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1)]
)


class _CompletionFields(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str
    prompt: Prompt
    best_of: Annotated[int, Field(ge=1)] | None = None
    echo: bool | None = None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    max_tokens: Annotated[int, Field(ge=0)] | None = None
    suffix: str | None = None


class CompletionRequest(_CompletionFields, GenerationRequest):
    @model_validator(mode="after")
    def _consistent(self) -> Self:
        self.check_stream_options()
        if self.best_of not in (None, self.n or 1):
            raise rule_error("best_of must equal n.", "best_of", "unsupported_parameter")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The prompt field's four shapes as a list of prompts (text or token ids)."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if prompt and all(isinstance(p, int) for p in prompt):
            return [list(prompt)]  # type: ignore[arg-type]
        return list(prompt)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- responses


class CompletionLogprobs(BaseModel):
    text_offset: list[int]
    token_logprobs: list[float | None]
    tokens: list[str]
    # Present when logprobs > 0 was asked; null for the prompt's first token (with echo).
    top_logprobs: list[dict[str, float] | None] | None = None

    @model_serializer(mode="wrap")
    def _alternatives_or_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return without_none(handler(self), "top_logprobs")


class CompletionChoice(BaseModel):
    finish_reason: FinishReason | None
    index: int
    logprobs: CompletionLogprobs | None = None
    text: str


class Completion(BaseModel):
    """Also the stream's chunk (OpenAI: the two share one shape). `usage` is an object or
    absent, never null: the spec does not mark it nullable here, unlike chat's chunk."""

    id: str
    choices: list[CompletionChoice]
    created: int
    model: str
    object: Literal["text_completion"] = "text_completion"
    system_fingerprint: str
    usage: Usage | None = None

    @model_serializer(mode="wrap")
    def _usage_or_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return without_none(handler(self), "usage")
