"""The checks every dialect's sampling goes through before the engine sees a request: the
context budget, the number of choices, the stop strings, and what the engine can do."""

from __future__ import annotations

from app.core.plan import ModelContext
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


def completion_budget(
    ctx: ModelContext, prompt_tokens: int, requested: int | None, what: str
) -> int:
    """The completion budget: what was asked, or all the context left. Never truncates."""
    context = ctx.text.context_length
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
