"""POST /v1/completions: the legacy text completions API, on the same generation path."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from app.api.calls import Event, GenerationCall, check_stream_options
from app.api.chat import ERROR_RESPONSES
from app.api.deps import State, engine_ready, served_model
from app.api.sampling import check_context, check_stops, sampling_params
from app.engine.base import SamplingParams
from app.errors import ApiError
from app.generation import TextDelta, TokenLogprob
from app.protocol import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    Usage,
)
from app.state import ServerState

logger = logging.getLogger(__name__)
router = APIRouter()


@router.post("/v1/completions", response_model=Completion, responses=ERROR_RESPONSES)
async def completions(body: CompletionRequest, request: Request, state: State) -> Response:
    served_model(state, body.model)
    engine_ready(state)
    check_shape(body)
    if body.model_extra:
        logger.debug("Ignoring unknown request fields: %s", sorted(body.model_extra))
    prompts = body.prompts()
    encoded = [_encode(state, p, i, len(prompts)) for i, p in enumerate(prompts)]
    jobs: list[tuple[list[int], SamplingParams]] = []
    for ids in encoded:
        budget = check_context(state, len(ids), body.max_tokens, "prompt")
        choices = sampling_params(body, state, budget, logprobs=body.logprobs is not None)
        jobs += [(ids, params) for params in choices]
    texts = [p if isinstance(p, str) else state.text.decode(p) for p in prompts]
    call = CompletionCall(
        body,
        texts,
        state,
        request,
        jobs,
        check_stops(state, body.stop_list()),
        sum(len(ids) for ids in encoded),
        body.stream_options,
    )
    return await call.respond(request, bool(body.stream))


def check_shape(body: CompletionRequest) -> None:
    if body.suffix:
        raise ApiError(
            400,
            "suffix is not supported: these models have no fill-in-the-middle format.",
            param="suffix",
            code="unsupported_parameter",
        )
    if body.best_of not in (None, body.n or 1):
        raise ApiError(400, "best_of must equal n.", param="best_of", code="unsupported_parameter")
    if body.logprobs:
        raise ApiError(
            400,
            "logprobs > 0 is not supported: the engine reports the chosen token's "
            "log-probability but not the alternatives. Use logprobs 0.",
            param="logprobs",
            code="unsupported_parameter",
        )
    if body.echo and body.logprobs is not None:
        raise ApiError(
            400,
            "echo with logprobs would need the prompt's log-probabilities, which the engine "
            "does not compute.",
            param="echo",
            code="unsupported_parameter",
        )
    check_stream_options(body.stream, body.stream_options)
    if isinstance(body.prompt, list) and not body.prompt:
        raise ApiError(400, "prompt must not be empty.", param="prompt", code="invalid_value")


def _encode(state: ServerState, prompt: str | list[int], index: int, count: int) -> list[int]:
    param = "prompt" if count == 1 else f"prompt[{index}]"
    if isinstance(prompt, str):
        ids = state.text.encode(prompt)
    else:
        vocab = state.text.vocab_size
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


class CompletionCall(GenerationCall):
    id_prefix = "cmpl"

    def __init__(
        self, body: CompletionRequest, texts: list[str], *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.body = body
        self.texts = texts
        self.per_prompt = len(self.jobs) // len(texts)

    def _echo(self, index: int) -> str:
        return self.texts[index // self.per_prompt] if self.body.echo else ""

    def _logprobs(self, items: list[TokenLogprob], offset: int) -> CompletionLogprobs | None:
        if self.body.logprobs is None:
            return None
        offsets = []
        for item in items:
            offsets.append(offset)
            offset += len(item.token)
        return CompletionLogprobs(
            tokens=[i.token for i in items],
            token_logprobs=[i.logprob for i in items],
            text_offset=offsets,
        )

    def _completion(self, choices: list[CompletionChoice], usage: Usage | None) -> Completion:
        return Completion(**self.header(), choices=choices, usage=usage)

    async def complete(self) -> Response:
        texts = [self._echo(i) for i in range(len(self.jobs))]
        logprobs: list[list[TokenLogprob]] = [[] for _ in self.jobs]

        def add(index: int, delta: TextDelta) -> None:
            texts[index] += delta.text
            logprobs[index].extend(delta.logprobs)

        await self.collect(add)
        choices = [
            CompletionChoice(
                index=i,
                text=texts[i],
                finish_reason=self.finishes[i] or "stop",  # type: ignore[arg-type]
                logprobs=self._logprobs(logprobs[i], len(self._echo(i))),
            )
            for i in range(len(self.jobs))
        ]
        payload = self._completion(choices, self.usage()).model_dump(mode="json")
        return JSONResponse(self.with_timings(payload))

    def _chunk(self, choices: list[CompletionChoice], usage: Usage | None = None) -> Event:
        return self.stream_event(self._completion(choices, usage).model_dump(mode="json"), usage)

    def stream(self) -> AsyncIterator[Event]:
        offsets = [len(self._echo(i)) for i in range(len(self.jobs))]
        opening = (
            [
                self._chunk([CompletionChoice(index=i, text=self._echo(i), finish_reason=None)])
                for i in range(len(self.jobs))
            ]
            if self.body.echo
            else []
        )

        def text_chunk(index: int) -> Callable[[str], Event]:
            return lambda text: self._chunk(
                [CompletionChoice(index=index, text=text, finish_reason=None)]
            )

        def chunks(index: int, delta: TextDelta) -> list[Event]:
            if not (delta.text or delta.finish_reason or delta.logprobs):
                return []
            if delta.text and delta.finish_reason is None and self.body.logprobs is None:
                offsets[index] += len(delta.text)
                return [self.text_event(index, delta.text, text_chunk(index))]
            choice = CompletionChoice(
                index=index,
                text=delta.text,
                finish_reason=delta.finish_reason,
                logprobs=self._logprobs(list(delta.logprobs), offsets[index]),
            )
            offsets[index] += len(delta.text)
            return [self._chunk([choice])]

        return self.sse(opening, chunks, lambda: self._chunk([], self.usage()))
