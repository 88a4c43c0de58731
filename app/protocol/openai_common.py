"""What OpenAI's chat and text completions share: the error shape, stream options, the
sampling fields, usage, and the models list."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    Strict,
    model_serializer,
)
from pydantic_core import PydanticCustomError

from app.settings import Duration


def rule_error(message: str, param: str, code: str = "invalid_value") -> PydanticCustomError:
    """A request rule broken, raised from a model validator: `param` is the field's path
    relative to the model being validated, so the 400 names it (app/errors.py)."""
    # The message is a format template for pydantic: literal braces would be read as fields.
    safe = message.replace("{", "{{").replace("}", "}}")
    return PydanticCustomError("ovchat_rule", safe, {"param": param, "code": code})


def without_none(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    """Drops `keys` whose value is None: OpenAI leaves optional fields out rather than
    sending null where its schema does not allow null."""
    for key in keys:
        if data.get(key, ...) is None:
            del data[key]
    return data


# ---------------------------------------------------------------------------- errors


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# ---------------------------------------------------------------------------- requests


def as_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def _no_empty_stop(value: str | list[str] | None) -> str | list[str] | None:
    if any(item == "" for item in as_list(value)):
        raise ValueError("stop strings must not be empty")
    return value


Stop = Annotated[str | list[str] | None, AfterValidator(_no_empty_stop)]
# The engine computes in float32: a positive double that rounds to 0 there is refused.
RepetitionPenalty = Annotated[float, Field(ge=0.01, le=2.0)]
TokenId = Annotated[int, Strict(), Field(ge=0)]
Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class StructuredOutputs(BaseModel):
    """vLLM's `structured_outputs`: exactly one constraint on the output. Its backend
    options (whitespace, fallback) are not fields: the engine's compiler has none, so a
    request naming one is a 400 rather than an option silently dropped."""

    model_config = ConfigDict(extra="forbid", strict=True)

    json_: dict[str, Any] | str | None = Field(None, alias="json")
    regex: str | None = None
    choice: Annotated[list[str], Field(min_length=1)] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    structural_tag: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class GenerationRequest(BaseModel):
    """What every OpenAI generation request shares, the sampling fields above all, declared
    once: a new sampling parameter is a field here and a line in app/core/sampling.py.
    OpenAI's own fields come in the reference's (alphabetical) order, then the common
    extensions under vLLM's names. A request model lists its own fields before these (it
    names this class last among its bases)."""

    model_config = ConfigDict(extra="allow", strict=True)

    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, float] | None = None
    n: Annotated[int, Field(ge=1)] | None = None
    presence_penalty: Penalty | None = None
    seed: int | None = None
    stop: Stop = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    user: str | None = None
    # Common extensions (vLLM's names).
    top_k: Annotated[int, Field(ge=-1)] | None = None
    min_p: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None
    repetition_penalty: RepetitionPenalty | None = None
    ignore_eos: bool | None = None  # keep generating past eos, for fixed-length benchmarks
    # Ollama's: how long the model stays loaded after this request (app/pool.py).
    keep_alive: Duration | None = None
    # Constraints on the output beyond response_format (app/core/constraints.py): vLLM's
    # structured_outputs, its older guided_* spellings, and llama.cpp's GBNF grammar.
    structured_outputs: StructuredOutputs | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: Annotated[list[str], Field(min_length=1)] | None = None
    guided_grammar: str | None = None
    grammar: str | None = None

    def stop_list(self) -> list[str]:
        return as_list(self.stop)

    def check_stream_options(self) -> None:
        if self.stream_options is not None and not self.stream:
            raise rule_error(
                "stream_options is only allowed when stream is true.", "stream_options"
            )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


# ---------------------------------------------------------------------------- responses


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    """`prompt_tokens_details` is an optional object in OpenAI's schema, never null: it is
    left out until the engine can tell cached prompt tokens apart."""

    completion_tokens: int
    prompt_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None

    @model_serializer(mode="wrap")
    def _details_or_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return without_none(handler(self), "prompt_tokens_details")


FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


class ModelCard(BaseModel):
    id: str
    created: int
    object: Literal["model"] = "model"
    owned_by: str = "ovchat"
    # ovchat's, for a client choosing among several models (app/pool.py).
    status: Literal["loaded", "loading", "unloaded"]
    kind: Literal["generation", "embedding"]
    endpoints: list[str]
    context_length: int


class ModelList(BaseModel):
    data: list[ModelCard]
    object: Literal["list"] = "list"
