"""OpenAI's legacy text completions: prompts (text or token ids, one or several) as a plan,
the run's events as a text_completion (JSON) or as its stream (SSE)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.responses import JSONResponse, Response

from app.core.constraints import request_constraint
from app.core.generation import (
    Alternative,
    ChoiceEnd,
    ChosenToken,
    Event,
    PromptOut,
    PromptScore,
    TextOut,
)
from app.core.plan import ChoicePlan, GenerationPlan, ModelContext
from app.core.run import GenerationRun
from app.core.sampling import check_stops, completion_budget
from app.core.sse import Frame, TextFrames, data_frame
from app.dialects.openai_common import StreamEnds, header, sampling_params, usage, with_timings
from app.errors import ApiError
from app.protocol.openai_common import Usage
from app.protocol.openai_completions import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
)

# ---------------------------------------------------------------------------- validator


def validate(body: CompletionRequest, ctx: ModelContext) -> GenerationPlan:
    """The request as a plan (each prompt gets `n` choices), or a 400 naming what is wrong.
    A text prompt's special tokens are parsed: its caller writes the template."""
    if body.suffix:
        raise ApiError(
            400,
            "suffix is not supported: these models have no fill-in-the-middle format.",
            param="suffix",
            code="unsupported_parameter",
        )
    constraint = request_constraint(body)
    prompts = body.prompts()
    choices: list[ChoicePlan] = []
    prompt_tokens = 0
    for index, prompt in enumerate(prompts):
        ids = encode(ctx, prompt, "prompt" if len(prompts) == 1 else f"prompt[{index}]")
        prompt_tokens += len(ids)
        budget = completion_budget(ctx, len(ids), body.max_tokens, "prompt")
        params = sampling_params(
            body,
            ctx,
            budget,
            logprobs=body.logprobs is not None,
            top_logprobs=body.logprobs or 0,
            top_param="logprobs",
            # Echo with logprobs scores the prompt too, as OpenAI's legacy API did: what
            # evaluation harnesses read loglikelihoods from.
            prompt_logprobs=body.logprobs if body.echo and body.logprobs is not None else None,
            constraint=constraint,
        )
        choices += [ChoicePlan(ids, p, index) for p in params]
    return GenerationPlan(
        choices=choices,
        prompt_tokens=prompt_tokens,
        stops=check_stops(ctx, body.stop_list()),
        logprobs=body.logprobs is not None,
        schema_param=constraint.param if constraint is not None else "response_format",
    )


def encode(ctx: ModelContext, prompt: str | list[int], param: str) -> list[int]:
    if isinstance(prompt, str):
        ids = ctx.text.encode(prompt)
    else:
        vocab = ctx.text.vocab_size
        if any(token >= vocab or token < 0 for token in prompt):
            raise ApiError(
                400,
                f"{param} has token ids outside the vocabulary (0..{vocab - 1}).",
                param=param,
                code="invalid_value",
            )
        ids = list(prompt)
    if not ids:
        raise ApiError(400, f"{param} is empty.", param=param, code="invalid_value")
    return ids


# ---------------------------------------------------------------------------- renderer


class CompletionRenderer(StreamEnds[CompletionRequest]):
    def __init__(self, run: GenerationRun, body: CompletionRequest) -> None:
        self.run = run
        self.body = body
        prompts = body.prompts() if body.echo else []
        texts = [p if isinstance(p, str) else run.served.text.decode(p) for p in prompts]
        self.echoes = [texts[c.prompt] if body.echo else "" for c in run.plan.choices]
        self.texts = list(self.echoes)
        self.logprobs: list[list[ChosenToken | PromptScore]] = [[] for _ in run.plan.choices]
        self.offsets = [len(echo) for echo in self.echoes]  # text_offset of the next token
        # Alternatives are reported when asked for (logprobs > 0), for every token.
        self.alternatives = bool(body.logprobs)
        # Echo with logprobs: the echo waits for the prompt's scores, and its own text
        # offsets start at 0.
        self.scored_echo = bool(body.echo) and body.logprobs is not None
        self._spliced = TextFrames()

    def _wire_logprobs(
        self, items: list[ChosenToken | PromptScore], offset: int
    ) -> CompletionLogprobs | None:
        if not self.run.plan.logprobs:
            return None
        offsets = []
        for item in items:
            offsets.append(offset)
            offset += len(item.token)
        top = None
        if self.alternatives:
            top = [
                None if isinstance(i, PromptScore) and i.logprob is None else _top(i.top)
                for i in items
            ]
        return CompletionLogprobs(
            tokens=[i.token for i in items],
            token_logprobs=[i.logprob for i in items],
            text_offset=offsets,
            top_logprobs=top,
        )

    def _completion(self, choices: list[CompletionChoice], usage: Usage | None) -> Completion:
        return Completion(**header(self.run), choices=choices, usage=usage)

    # ------------------------------------------------------------------ JSON

    def _add(self, event: Event) -> None:
        if isinstance(event, TextOut):
            self.texts[event.choice] += event.text
            self.logprobs[event.choice].extend(event.logprobs)
        elif isinstance(event, PromptOut):
            self.logprobs[event.choice][:0] = event.tokens

    async def complete(self) -> Response:
        await self.run.collect(self._add)
        choices = [
            CompletionChoice(
                index=i,
                text=self.texts[i],
                finish_reason=self.run.finishes[i] or "stop",
                logprobs=self._wire_logprobs(
                    self.logprobs[i], 0 if self.scored_echo else len(self.echoes[i])
                ),
            )
            for i in range(len(self.texts))
        ]
        payload = self._completion(choices, usage(self.run)).model_dump(mode="json")
        return JSONResponse(with_timings(self.run, payload))

    # ------------------------------------------------------------------ SSE

    def _chunk(self, choices: list[CompletionChoice], usage: Usage | None = None) -> Frame:
        payload = self._completion(choices, usage).model_dump(mode="json")
        if usage is not None:
            with_timings(self.run, payload)
        return data_frame(payload)

    def opening(self) -> list[Frame]:
        return [
            self._chunk([CompletionChoice(index=i, text=echo, finish_reason=None)])
            for i, echo in enumerate(self.echoes)
            if self.body.echo and not self.scored_echo
        ]

    def frames(self, event: Event) -> list[Frame]:
        index = event.choice
        if isinstance(event, PromptOut):
            choice = CompletionChoice(
                index=index,
                text=self.echoes[index],
                finish_reason=None,
                logprobs=self._wire_logprobs(list(event.tokens), 0),
            )
            return [self._chunk([choice])]
        if isinstance(event, TextOut):
            if not (event.text or event.logprobs):
                return []
            offset = self.offsets[index]
            self.offsets[index] += len(event.text)
            if not self.run.plan.logprobs:
                return [self._spliced.frame(index, event.text, self._text_chunk(index))]
            choice = CompletionChoice(
                index=index,
                text=event.text,
                finish_reason=None,
                logprobs=self._wire_logprobs(list(event.logprobs), offset),
            )
            return [self._chunk([choice])]
        if isinstance(event, ChoiceEnd):
            choice = CompletionChoice(index=index, text="", finish_reason=event.finish)
            return [self._chunk([choice])]
        return []

    def _text_chunk(self, index: int) -> Callable[[str], Frame]:
        return lambda text: self._chunk(
            [CompletionChoice(index=index, text=text, finish_reason=None)]
        )


def _top(alternatives: tuple[Alternative, ...]) -> dict[str, float]:
    """OpenAI's legacy shape: token text to log-probability. Two ids that decode to the
    same text keep the likelier one (the first: they come most likely first)."""
    out: dict[str, float] = {}
    for a in alternatives:
        out.setdefault(a.token, a.logprob)
    return out
