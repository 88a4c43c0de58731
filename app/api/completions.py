"""POST /v1/completions: the legacy text completions API, on the same generation path."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse

from app.api.chat import ERROR_RESPONSES
from app.api.deps import State, served_model
from app.api.disconnect import until_disconnect
from app.api.sampling import check_context, check_stops, sampling_params
from app.engine.base import EngineError, SamplingParams
from app.errors import ApiError
from app.generation import TextDelta, TokenLogprob, generate_choices
from app.protocol import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    Usage,
    new_id,
    now,
)
from app.state import ServerState

logger = logging.getLogger(__name__)
router = APIRouter()


@router.post("/v1/completions", response_model=Completion, responses=ERROR_RESPONSES)
async def completions(body: CompletionRequest, request: Request, state: State) -> Response:
    served_model(state, body.model)
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
    call = CompletionCall(state, body, encoded, texts, jobs, check_stops(state, body.stop_list()))
    if body.stream:
        stream: Response = EventSourceResponse(call.stream(), sep="\n", ping=15)
        return stream
    return await until_disconnect(request, call.complete(), call.log)


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
    if body.stream_options is not None and not body.stream:
        raise ApiError(
            400,
            "stream_options is only allowed when stream is true.",
            param="stream_options",
            code="invalid_value",
        )
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


class CompletionCall:
    def __init__(
        self,
        state: ServerState,
        body: CompletionRequest,
        encoded: list[list[int]],
        texts: list[str],
        jobs: list[tuple[list[int], SamplingParams]],
        stops: list[str],
    ) -> None:
        self.state = state
        self.body = body
        self.encoded = encoded
        self.texts = texts
        self.jobs = jobs
        self.stops = stops
        self.per_prompt = len(jobs) // len(encoded)
        self.id = new_id("cmpl")
        self.created = now()
        self.started = time.monotonic()
        self.tokens = [0] * len(jobs)

    def _prompt_of(self, index: int) -> int:
        return index // self.per_prompt

    def usage(self) -> Usage:
        prompt = sum(len(ids) for ids in self.encoded)
        completion = sum(self.tokens)
        return Usage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        )

    def log(self, outcome: str) -> None:
        logger.info(
            "%s %s choices=%d prompt_tokens=%d completion_tokens=%d elapsed=%.3fs",
            self.id,
            outcome,
            len(self.jobs),
            sum(len(ids) for ids in self.encoded),
            sum(self.tokens),
            time.monotonic() - self.started,
        )

    def _deltas(self) -> AsyncIterator[tuple[int, TextDelta]]:
        return generate_choices(self.state.engine, self.state.text, self.jobs, self.stops)

    def _echo(self, index: int) -> str:
        return self.texts[self._prompt_of(index)] if self.body.echo else ""

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

    async def complete(self) -> Response:
        texts = [self._echo(i) for i in range(len(self.jobs))]
        logprobs: list[list[TokenLogprob]] = [[] for _ in self.jobs]
        finishes: list[str | None] = [None] * len(self.jobs)
        try:
            async for index, delta in self._deltas():
                texts[index] += delta.text
                logprobs[index].extend(delta.logprobs)
                self.tokens[index] = delta.completion_tokens
                finishes[index] = delta.finish_reason or finishes[index]
        except EngineError as exc:
            self.log(f"failed: {exc}")
            raise ApiError(503, f"Generation failed: {exc}", code="engine_unavailable") from exc
        choices = [
            CompletionChoice(
                index=i,
                text=texts[i],
                finish_reason=finishes[i] or "stop",  # type: ignore[arg-type]
                logprobs=self._logprobs(logprobs[i], len(self._echo(i))),
            )
            for i in range(len(self.jobs))
        ]
        self.log("finished")
        result = Completion(
            id=self.id,
            created=self.created,
            model=self.state.model_id,
            system_fingerprint=self.state.system_fingerprint,
            choices=choices,
            usage=self.usage(),
        )
        return JSONResponse(result.model_dump(mode="json"))

    def _include_usage(self) -> bool:
        return bool(self.body.stream_options and self.body.stream_options.include_usage)

    def _chunk(self, choices: list[CompletionChoice], usage: Usage | None = None) -> dict[str, str]:
        payload = Completion(
            id=self.id,
            created=self.created,
            model=self.state.model_id,
            system_fingerprint=self.state.system_fingerprint,
            choices=choices,
            usage=usage,
        ).model_dump(mode="json")
        if not self._include_usage():
            del payload["usage"]
        return {"data": json.dumps(payload, ensure_ascii=False, separators=(",", ":"))}

    async def stream(self) -> AsyncIterator[dict[str, str]]:
        offsets = [len(self._echo(i)) for i in range(len(self.jobs))]
        try:
            if self.body.echo:
                for i in range(len(self.jobs)):
                    echo = CompletionChoice(index=i, text=self._echo(i), finish_reason=None)
                    yield self._chunk([echo])
            async for index, delta in self._deltas():
                self.tokens[index] = delta.completion_tokens
                if not (delta.text or delta.finish_reason or delta.logprobs):
                    continue
                choice = CompletionChoice(
                    index=index,
                    text=delta.text,
                    finish_reason=delta.finish_reason,
                    logprobs=self._logprobs(list(delta.logprobs), offsets[index]),
                )
                offsets[index] += len(delta.text)
                yield self._chunk([choice])
            if self._include_usage():
                yield self._chunk([], usage=self.usage())
            self.log("streamed")
        except EngineError as exc:
            self.log(f"failed mid-stream: {exc}")
            error = ApiError(503, f"Generation failed: {exc}", code="engine_unavailable")
            yield {"data": json.dumps(error.payload())}
        yield {"data": "[DONE]"}
