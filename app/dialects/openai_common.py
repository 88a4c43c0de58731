"""What OpenAI's chat and text completions dialects share: their sampling fields turned
into engine parameters, and the pieces of their responses that are alike."""

from __future__ import annotations

import secrets
from typing import Any, Generic, TypeVar

from app.core.generation import ChosenToken
from app.core.plan import ModelContext
from app.core.run import GenerationRun
from app.core.sampling import (
    MAX_MIN_P,
    MIN_TEMPERATURE,
    MIN_TOP_P,
    choice_count,
    require,
    unsupported,
)
from app.core.sse import data_frame
from app.engine.base import LOGPROBS, MIN_P, PENALTIES, STRUCTURED_OUTPUT, SamplingParams
from app.errors import ApiError
from app.protocol.openai_chat import TokenLogprob
from app.protocol.openai_common import GenerationRequest, Usage

DONE = b"data: [DONE]\n\n"  # how OpenAI ends every stream, also after an error event


def sampling_params(
    body: GenerationRequest,
    ctx: ModelContext,
    max_new_tokens: int,
    *,
    logprobs: bool = False,
    json_schema: str | None = None,
) -> list[SamplingParams]:
    """One SamplingParams per choice: choice i samples with seed + i, so `n` choices differ
    and the same request with the same seed reproduces all of them. Every request gets a
    seed (a random one when it sent none): the engine replays a request after a fault and
    checks the replay against what was already sent."""
    if body.logit_bias:
        # openvino-genai's continuous batching has no logits-processor hook to apply it.
        raise unsupported("logit_bias", "logit_bias")
    if body.presence_penalty or body.frequency_penalty:
        require(ctx, PENALTIES, "presence_penalty", "presence/frequency penalties")
    if body.min_p:
        require(ctx, MIN_P, "min_p", "min_p")
    if logprobs:
        require(ctx, LOGPROBS, "logprobs", "logprobs")
    if json_schema is not None:
        require(ctx, STRUCTURED_OUTPUT, "response_format", "structured output")
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
        stop_token_ids=ctx.text.eos_token_ids,
        ignore_eos=bool(body.ignore_eos),
        logprobs=logprobs,
        json_schema=json_schema,
    )
    return [base.with_seed((seed + i) % 2**31) for i in range(choice_count(ctx, body.n))]


Request = TypeVar("Request", bound=GenerationRequest)


class StreamEnds(Generic[Request]):
    """How every OpenAI stream ends: the usage chunk when asked for, an error as an event
    of its own (a failure after the first byte can only be told in-band), then [DONE]."""

    run: GenerationRun
    body: Request

    def _chunk(self, choices: list[Any], usage: Usage | None = None) -> bytes:
        raise NotImplementedError

    def closing(self) -> list[bytes]:
        return [self._chunk([], usage(self.run))] if self.body.include_usage else []

    def error(self, error: ApiError) -> list[bytes]:
        return [data_frame(error.payload())]

    def end(self) -> list[bytes]:
        return [DONE]


def usage(run: GenerationRun) -> Usage:
    return Usage(
        prompt_tokens=run.prompt_tokens,
        completion_tokens=run.completion_tokens,
        total_tokens=run.prompt_tokens + run.completion_tokens,
    )


def header(run: GenerationRun) -> dict[str, Any]:
    """The fields every response and chunk of a request carries."""
    return {
        "id": run.id,
        "created": run.created,
        "model": run.model,
        "system_fingerprint": run.fingerprint,
    }


def with_timings(run: GenerationRun, payload: dict[str, Any]) -> dict[str, Any]:
    timings = run.timings()
    if timings is not None:
        payload["timings"] = timings
    return payload


def wire_logprobs(items: tuple[ChosenToken, ...] | list[ChosenToken]) -> list[TokenLogprob]:
    return [TokenLogprob(token=t.token, bytes=t.bytes, logprob=t.logprob) for t in items]
