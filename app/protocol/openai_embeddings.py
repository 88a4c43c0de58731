"""POST /v1/embeddings, as OpenAI defines it: the request and the response, fields in the
order of OpenAI's schema (CreateEmbeddingRequest, CreateEmbeddingResponse, Embedding)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict

from app.settings import Duration

# Bounds (ids within the vocabulary, no empty input, how many inputs) are the validator's
# (app/dialects/openai_embeddings.py): its 400 names the offending input by index, which a
# failed match of this union could not.
TokenIds = list[Annotated[int, Strict()]]
EmbeddingInput = str | list[str] | TokenIds | list[TokenIds]
EncodingFormat = Literal["float", "base64"]


class CreateEmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    input: EmbeddingInput
    model: str
    encoding_format: EncodingFormat | None = None  # None: float
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None
    # Ollama's: how long the model stays loaded after this request (app/pool.py).
    keep_alive: Duration | None = None

    @property
    def single(self) -> bool:
        """One input given bare (a string, or one token array), not in a list."""
        value = self.input
        return isinstance(value, str) or (
            bool(value) and all(isinstance(item, int) for item in value)
        )

    def inputs(self) -> list[str | list[int]]:
        """The input field's four shapes as a list of inputs (text or token ids)."""
        value = self.input
        if isinstance(value, str):
            return [value]
        if self.single:
            return [list(value)]  # type: ignore[arg-type]
        return list(value)  # type: ignore[arg-type]


class Embedding(BaseModel):
    index: int
    # Floats, or with encoding_format base64 their little-endian float32 bytes in base64.
    embedding: list[float] | str
    object: Literal["embedding"] = "embedding"


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(BaseModel):
    data: list[Embedding]
    model: str
    object: Literal["list"] = "list"
    usage: EmbeddingUsage
