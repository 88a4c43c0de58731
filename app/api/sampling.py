"""OpenAI sampling fields to engine parameters, shared by chat and text completions.
Everything is checked here, before the engine sees the request."""

from __future__ import annotations

import secrets
from typing import Protocol

from app.engine.base import LOGPROBS, MIN_P, PENALTIES, STRUCTURED_OUTPUT, SamplingParams
from app.errors import ApiError
from app.state import ServerState

MIN_TEMPERATURE = 1e-4
MIN_TOP_P = 1e-6
MAX_MIN_P = 0.999  # min_p must stay below 1 after rounding to float32


class SamplingFields(Protocol):
    frequency_penalty: float | None
    presence_penalty: float | None
    seed: int | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    min_p: float | None
    repetition_penalty: float | None
    ignore_eos: bool | None
    n: int | None
    logit_bias: dict[str, float] | None


def unsupported(param: str, what: str) -> ApiError:
    return ApiError(
        400, f"{what} is not supported by this server.", param=param, code="unsupported_parameter"
    )


def require(state: ServerState, capability: str, param: str, what: str) -> None:
    if capability not in state.engine.capabilities:
        raise ApiError(
            400,
            f"{what} is not supported by the '{state.engine.name}' engine; "
            f"serve with --engine genai for it.",
            param=param,
            code="unsupported_parameter",
        )


def check_context(state: ServerState, prompt_tokens: int, requested: int | None, what: str) -> int:
    """The completion budget: what was asked, or all the context left. Never truncates."""
    context = state.text.context_length
    room = context - prompt_tokens
    if room <= 0 or (requested is not None and requested > room):
        asked = requested if requested is not None else 0
        raise ApiError(
            400,
            f"This model's maximum context length is {context} tokens. However, you "
            f"requested {prompt_tokens + asked} tokens ({prompt_tokens} in the {what}, "
            f"{asked} in the completion). Please reduce the length of the {what} or "
            f"completion.",
            param=what,
            code="context_length_exceeded",
        )
    return requested if requested is not None else room


def check_n(state: ServerState, n: int | None) -> int:
    count = 1 if n is None else n
    if count > state.settings.max_n:
        raise ApiError(
            400, f"n must be at most {state.settings.max_n}.", param="n", code="invalid_value"
        )
    return count


def sampling_params(
    body: SamplingFields,
    state: ServerState,
    max_new_tokens: int,
    *,
    logprobs: bool = False,
    json_schema: str | None = None,
) -> list[SamplingParams]:
    """One SamplingParams per choice: choice i samples with seed + i, so `n` choices differ
    and the same request with the same seed reproduces all of them."""
    if body.logit_bias:
        # openvino-genai's continuous batching has no logits-processor hook to apply it.
        raise unsupported("logit_bias", "logit_bias")
    if body.presence_penalty or body.frequency_penalty:
        require(state, PENALTIES, "presence_penalty", "presence/frequency penalties")
    if body.min_p:
        require(state, MIN_P, "min_p", "min_p")
    if logprobs:
        require(state, LOGPROBS, "logprobs", "logprobs")
    if json_schema is not None:
        require(state, STRUCTURED_OUTPUT, "response_format", "structured output")
    seed = body.seed if body.seed is not None else secrets.randbits(31)
    temperature = 1.0 if body.temperature is None else body.temperature
    base = SamplingParams(
        max_new_tokens=max_new_tokens,
        # The engine samples in float32: a temperature too small to matter is greedy, and
        # top_p is kept above float32's smallest normal so it never rounds to 0.
        temperature=0.0 if temperature < MIN_TEMPERATURE else temperature,
        top_p=1.0 if body.top_p is None else max(body.top_p, MIN_TOP_P),
        top_k=body.top_k if body.top_k and body.top_k > 0 else 0,
        min_p=min(body.min_p or 0.0, MAX_MIN_P),
        seed=seed,
        frequency_penalty=body.frequency_penalty or 0.0,
        presence_penalty=body.presence_penalty or 0.0,
        repetition_penalty=body.repetition_penalty or 1.0,
        stop_token_ids=state.text.eos_token_ids,
        ignore_eos=bool(body.ignore_eos),
        logprobs=logprobs,
        json_schema=json_schema,
    )
    return [base.with_seed((seed + i) % 2**31) for i in range(check_n(state, body.n))]


def check_stops(state: ServerState, stops: list[str]) -> list[str]:
    if len(stops) > state.settings.max_stop_sequences:
        raise ApiError(
            400,
            f"At most {state.settings.max_stop_sequences} stop sequences are allowed.",
            param="stop",
            code="too_many_stop_sequences",
        )
    return stops
