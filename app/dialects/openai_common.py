"""What OpenAI's chat and text completions dialects share: their sampling fields turned
into engine parameters, and the pieces of their responses that are alike."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from app.core.constraints import Constraint
from app.core.generation import ChosenToken
from app.core.plan import ModelContext
from app.core.run import GenerationRun
from app.core.sampling import Sampling, engine_params, logit_bias
from app.core.sse import data_frame
from app.engine.base import SamplingParams
from app.errors import ApiError
from app.protocol.openai_chat import TokenLogprob, TopLogprob
from app.protocol.openai_common import GenerationRequest, Usage

DONE = b"data: [DONE]\n\n"  # how OpenAI ends every stream, also after an error event


def sampling_params(
    body: GenerationRequest,
    ctx: ModelContext,
    max_new_tokens: int,
    *,
    logprobs: bool = False,
    top_logprobs: int = 0,
    prompt_logprobs: int | None = None,
    top_param: str = "top_logprobs",
    json_schema: str | None = None,
    structural_tag: str | None = None,
    constraint: Constraint | None = None,
) -> list[SamplingParams]:
    """The OpenAI sampling fields as engine parameters, one per choice. `constraint` is
    the request's structured_outputs / guided_* / grammar one (app/core/constraints.py),
    already checked not to meet another."""
    schema_param = "tools" if structural_tag is not None else "response_format"
    grammars: dict[str, str] = {}
    if constraint is not None:
        grammars[constraint.grammar.kind] = constraint.grammar.text
        schema_param = constraint.param
    json_schema = grammars.get("json_schema", json_schema)
    structural_tag = grammars.get("structural_tag", structural_tag)
    sampling = Sampling(
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        min_p=body.min_p,
        seed=body.seed,
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
        repetition_penalty=body.repetition_penalty,
        ignore_eos=bool(body.ignore_eos),
        top_logprobs=top_logprobs,
        logit_bias=logit_bias(ctx, body.logit_bias),
        prompt_logprobs=prompt_logprobs,
    )
    return engine_params(
        ctx,
        sampling,
        max_new_tokens,
        n=body.n,
        logprobs=logprobs,
        json_schema=json_schema,
        structural_tag=structural_tag,
        regex=grammars.get("regex"),
        ebnf=grammars.get("ebnf"),
        schema_param=schema_param,
        top_param=top_param,
    )


Request = TypeVar("Request", bound=GenerationRequest)


class StreamEnds(Generic[Request]):
    """How every OpenAI stream ends: the usage chunk when asked for, an error as an event
    of its own (a failure after the first byte can only be told in-band), then [DONE]."""

    run: GenerationRun
    body: Request

    def _chunk(self, choices: list[Any], usage: Usage | None = None) -> bytes:
        raise NotImplementedError

    async def settle(self, error: ApiError | None) -> None:
        return None  # nothing outlives an OpenAI completion stream

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
    return [
        TokenLogprob(
            token=t.token,
            bytes=t.bytes,
            logprob=t.logprob,
            top_logprobs=[
                TopLogprob(token=a.token, bytes=a.bytes, logprob=a.logprob) for a in t.top
            ],
        )
        for t in items
    ]
