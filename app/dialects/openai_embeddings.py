"""OpenAI's embeddings: a request's inputs (text or token ids, one or several) as a plan of
token ids the engine embeds, the engine's vectors as a CreateEmbeddingResponse.

Nothing is truncated: an input longer than the model's max_tokens (the length it was
trained for) is a 400 with the counts, as OpenAI answers an input over its limit."""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass

from app.embedmodel import EmbeddingModelInfo
from app.errors import ApiError
from app.protocol.openai_embeddings import (
    CreateEmbeddingRequest,
    CreateEmbeddingResponse,
    Embedding,
    EmbeddingUsage,
    EncodingFormat,
)

# OpenAI's own limits: 2048 inputs a request, 300,000 tokens summed over them.
MAX_INPUTS = 2048
MAX_TOTAL_TOKENS = 300_000


@dataclass(frozen=True)
class EmbeddingLimits:
    max_inputs: int = MAX_INPUTS
    max_total_tokens: int = MAX_TOTAL_TOKENS


@dataclass(frozen=True)
class EmbeddingPlan:
    inputs: list[list[int]]  # token ids per input, special tokens included
    prompt_tokens: int
    encoding_format: EncodingFormat


# ---------------------------------------------------------------------------- validator


def validate(
    body: CreateEmbeddingRequest,
    info: EmbeddingModelInfo,
    limits: EmbeddingLimits = EmbeddingLimits(),
) -> EmbeddingPlan:
    """The request as a plan, or a 400 naming what is wrong (the input by its index)."""
    if body.dimensions is not None and body.dimensions != info.dimensions:
        raise ApiError(
            400,
            f"dimensions {body.dimensions} is not supported: this model's vectors have "
            f"{info.dimensions} dimensions and it cannot shorten them (it was not trained "
            "for truncated embeddings). Leave dimensions out.",
            param="dimensions",
            code="unsupported_parameter",
        )
    inputs = body.inputs()
    if not inputs:
        raise ApiError(400, "input must not be empty.", param="input", code="invalid_value")
    if len(inputs) > limits.max_inputs:
        raise ApiError(
            400,
            f"input has {len(inputs)} items; at most {limits.max_inputs} are allowed a request.",
            param="input",
            code="invalid_value",
        )
    plan: list[list[int]] = []
    total = 0
    for index, item in enumerate(inputs):
        param = "input" if body.single else f"input[{index}]"
        ids = encode(info, item, param)
        if len(ids) > info.max_tokens:
            raise ApiError(
                400,
                f"{param} has {len(ids)} tokens, more than the {info.max_tokens} this model "
                "accepts; shorten it (inputs are never truncated).",
                param=param,
                code="context_length_exceeded",
            )
        total += len(ids)
        if total > limits.max_total_tokens:
            raise ApiError(
                400,
                f"input has more than {limits.max_total_tokens} tokens summed over its "
                f"items ({total} by {param}); split it across requests.",
                param="input",
                code="invalid_value",
            )
        plan.append(ids)
    return EmbeddingPlan(plan, total, body.encoding_format or "float")


def encode(info: EmbeddingModelInfo, item: str | list[int], param: str) -> list[int]:
    """Text gets the model's special tokens; token ids are taken as they are."""
    if isinstance(item, str):
        if not item:
            raise ApiError(400, f"{param} is an empty string.", param=param, code="invalid_value")
        return info.encode(item)
    if not item:
        raise ApiError(400, f"{param} is an empty token array.", param=param, code="invalid_value")
    vocab = info.vocab_size
    if any(token >= vocab or token < 0 for token in item):
        raise ApiError(
            400,
            f"{param} has token ids outside the vocabulary (0..{vocab - 1}).",
            param=param,
            code="invalid_value",
        )
    return list(item)


# ---------------------------------------------------------------------------- renderer


def render(
    plan: EmbeddingPlan, vectors: list[list[float]], model_id: str
) -> CreateEmbeddingResponse:
    data = [
        Embedding(index=index, embedding=_encoded(vector, plan.encoding_format))
        for index, vector in enumerate(vectors)
    ]
    if len(data) != len(plan.inputs):
        raise RuntimeError(f"{len(data)} vectors for {len(plan.inputs)} inputs")
    usage = EmbeddingUsage(prompt_tokens=plan.prompt_tokens, total_tokens=plan.prompt_tokens)
    return CreateEmbeddingResponse(data=data, model=model_id, usage=usage)


def _encoded(vector: list[float], encoding_format: EncodingFormat) -> list[float] | str:
    """base64: the vector's float32 values, little-endian, as OpenAI's SDKs decode them
    (numpy.frombuffer(..., dtype="float32") in Python, Float32Array in JavaScript)."""
    if encoding_format == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
