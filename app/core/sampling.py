"""The checks every dialect's sampling goes through before the engine sees a request: the
context budget, the number of choices, the stop strings, and what the engine can do."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from app.core.plan import ModelContext
from app.engine.base import LOGITS, LOGPROBS, MIN_P, PENALTIES, STRUCTURED_OUTPUT, SamplingParams
from app.errors import ApiError

MIN_TEMPERATURE = 1e-4
MIN_TOP_P = 1e-6
MAX_MIN_P = 0.999  # min_p must stay below 1 after rounding to float32


def unsupported(param: str, what: str) -> ApiError:
    return ApiError(
        400, f"{what} is not supported by this server.", param=param, code="unsupported_parameter"
    )


def require(ctx: ModelContext, capability: str, param: str, what: str) -> None:
    if capability not in ctx.capabilities:
        raise ApiError(
            400,
            f"{what} is not supported by the '{ctx.engine_name}' engine; "
            f"serve with --engine genai for it.",
            param=param,
            code="unsupported_parameter",
        )


# (context length, prompt tokens, completion tokens asked or None) -> the 400 that says
# they do not fit, in a dialect's own words (clients parse them to shrink and retry).
Overflow = Callable[[int, int, int | None], ApiError]


def require_logits(ctx: ModelContext, param: str, what: str) -> None:
    if LOGITS not in ctx.capabilities:
        raise ApiError(
            400,
            f"{what} needs the exact scoring engine, which this server runs without "
            f"(--no-exact-scoring).",
            param=param,
            code="unsupported_parameter",
        )


def check_message_count(ctx: ModelContext, count: int, param: str, what: str) -> None:
    if count > ctx.limits.max_messages:
        raise ApiError(
            400,
            f"At most {ctx.limits.max_messages} {what} are allowed.",
            param=param,
            code="too_many_messages",
        )


def completion_budget(
    ctx: ModelContext,
    prompt_tokens: int,
    requested: int | None,
    what: str,
    overflow: Overflow | None = None,
) -> int:
    """The completion budget: what was asked, or all the context left. Never truncates."""
    context = ctx.text.context_length
    room = context - prompt_tokens
    if room <= 0 or (requested is not None and requested > room):
        if overflow is not None:
            raise overflow(context, prompt_tokens, requested)
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


def choice_count(ctx: ModelContext, n: int | None) -> int:
    count = 1 if n is None else n
    if count > ctx.limits.max_n:
        raise ApiError(
            400, f"n must be at most {ctx.limits.max_n}.", param="n", code="invalid_value"
        )
    return count


def check_stops(ctx: ModelContext, stops: list[str], param: str = "stop") -> list[str]:
    if len(stops) > ctx.limits.max_stop_sequences:
        raise ApiError(
            400,
            f"At most {ctx.limits.max_stop_sequences} stop sequences are allowed.",
            param=param,
            code="too_many_stop_sequences",
        )
    return stops


@dataclass(frozen=True)
class Sampling:
    """A request's sampling fields in no API's names: each dialect maps its own onto
    these (None: the API's default), and `engine_params` is the one place they become
    the engine's parameters."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool = False
    # What only the exact scoring engine serves (app/engine/scoring.py).
    top_logprobs: int = 0
    logit_bias: tuple[tuple[int, float], ...] = ()
    prompt_logprobs: int | None = None


def engine_params(
    ctx: ModelContext,
    sampling: Sampling,
    max_new_tokens: int,
    *,
    n: int | None = None,
    logprobs: bool = False,
    json_schema: str | None = None,
    structural_tag: str | None = None,
    regex: str | None = None,
    ebnf: str | None = None,
    schema_param: str = "response_format",
    top_param: str = "top_logprobs",
) -> list[SamplingParams]:
    """One SamplingParams per choice: choice i samples with seed + i, so `n` choices differ
    and the same request with the same seed reproduces all of them. Every request gets a
    seed (a random one when it sent none): the engine replays a request after a fault and
    checks the replay against what was already sent."""
    if sampling.presence_penalty or sampling.frequency_penalty:
        require(ctx, PENALTIES, "presence_penalty", "presence/frequency penalties")
    if sampling.min_p:
        require(ctx, MIN_P, "min_p", "min_p")
    if logprobs:
        require(ctx, LOGPROBS, "logprobs", "logprobs")
    constrained = any(g is not None for g in (json_schema, structural_tag, regex, ebnf))
    if constrained:
        require(ctx, STRUCTURED_OUTPUT, schema_param, "structured output")
    _check_logits(ctx, sampling, max_new_tokens, schema_param if constrained else None, top_param)
    seed = sampling.seed if sampling.seed is not None else secrets.randbits(31)
    temperature = 1.0 if sampling.temperature is None else sampling.temperature
    base = SamplingParams(
        max_new_tokens=max_new_tokens,
        # The engine samples in float32: a temperature too small to matter is greedy, and
        # top_p is kept above float32's smallest normal so it never rounds to 0.
        temperature=0.0 if temperature < MIN_TEMPERATURE else temperature,
        top_p=1.0 if sampling.top_p is None else max(sampling.top_p, MIN_TOP_P),
        top_k=sampling.top_k if sampling.top_k and sampling.top_k > 0 else 0,
        min_p=min(sampling.min_p or 0.0, MAX_MIN_P),
        seed=seed,
        frequency_penalty=sampling.frequency_penalty or 0.0,
        presence_penalty=sampling.presence_penalty or 0.0,
        repetition_penalty=sampling.repetition_penalty or 1.0,
        stop_token_ids=ctx.text.eos_token_ids,
        ignore_eos=sampling.ignore_eos,
        logprobs=logprobs,
        json_schema=json_schema,
        structural_tag=structural_tag,
        regex=regex,
        ebnf=ebnf,
        top_logprobs=sampling.top_logprobs,
        logit_bias=sampling.logit_bias,
        prompt_logprobs=sampling.prompt_logprobs,
    )
    return [base.with_seed((seed + i) % 2**31) for i in range(choice_count(ctx, n))]


def _check_logits(
    ctx: ModelContext,
    sampling: Sampling,
    max_new_tokens: int,
    grammar: str | None,
    top_param: str,
) -> None:
    """What needs every logit goes to the exact scoring engine, which has no grammar: the
    two together are a 400, never one of them dropped."""
    asked = [
        (param, what)
        for param, what, on in (
            (top_param, f"{top_param} > 0", sampling.top_logprobs > 0),
            ("logit_bias", "logit_bias", bool(sampling.logit_bias)),
            ("echo", "the prompt's log-probabilities", sampling.prompt_logprobs is not None),
            ("max_tokens", "max_tokens 0", max_new_tokens == 0),
        )
        if on
    ]
    if not asked:
        return
    param, what = asked[0]
    require_logits(ctx, param, what)
    if grammar is not None:
        raise ApiError(
            400,
            f"{what} cannot be combined with {grammar}: constrained decoding runs in the "
            f"main engine, which does not report every logit.",
            param=param,
            code="unsupported_parameter",
        )


def logit_bias(ctx: ModelContext, bias: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    """OpenAI's logit_bias (token ids as strings, -100 to 100) as (id, bias) pairs."""
    if not bias:
        return ()
    vocab = ctx.text.vocab_size
    out = []
    for key, value in bias.items():
        try:
            token = int(key)
        except ValueError:
            token = -1
        if not 0 <= token < vocab or str(token) != key.strip():
            raise ApiError(
                400,
                f"logit_bias keys must be token ids (0..{vocab - 1}), not {key!r}.",
                param="logit_bias",
                code="invalid_value",
            )
        if not -100.0 <= value <= 100.0:
            raise ApiError(
                400,
                f"logit_bias values must be between -100 and 100, not {value}.",
                param="logit_bias",
                code="invalid_value",
            )
        out.append((token, float(value)))
    return tuple(sorted(out))
