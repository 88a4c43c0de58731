"""From engine tokens to the text a client sees: incremental decoding, stop strings,
token accounting, log-probabilities, and `n` choices run side by side. Shared by
streaming and non-streaming responses, so the two cannot disagree."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Literal

from app.engine.base import Engine, SamplingParams
from app.stops import StopMatcher
from app.textmodel import TextModel

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    bytes: list[int]


@dataclass(frozen=True)
class TextDelta:
    text: str
    finish_reason: FinishReason | None
    completion_tokens: int
    logprobs: tuple[TokenLogprob, ...] = ()


async def generate_text(
    engine: Engine,
    model: TextModel,
    prompt_ids: list[int],
    params: SamplingParams,
    stops: list[str],
) -> AsyncIterator[TextDelta]:
    decoder = model.decoder()
    matcher = StopMatcher(stops)
    produced = 0
    generation = engine.generate(prompt_ids, params)
    try:
        async for delta in generation:
            produced += len(delta.token_ids)
            logprobs = _logprobs(model, delta.token_ids, delta.logprobs)
            text = decoder.push(delta.token_ids)
            if delta.finish is not None:
                text += decoder.flush()
            released, stopped = matcher.feed(text)
            if stopped:
                yield TextDelta(released, "stop", produced, logprobs)
                return  # closing the generation cancels the rest in the engine
            if delta.finish is not None:
                yield TextDelta(released + matcher.flush(), delta.finish, produced, logprobs)
                return
            if released or logprobs:
                yield TextDelta(released, None, produced, logprobs)
    finally:
        await generation.aclose()


def _logprobs(
    model: TextModel, token_ids: tuple[int, ...], values: tuple[float, ...]
) -> tuple[TokenLogprob, ...]:
    if not values:
        return ()
    out = []
    for token_id, value in zip(token_ids, values, strict=False):
        if token_id in model.eos_token_ids:
            continue  # the eos token ends the answer; it is not part of it
        raw = model.token_bytes(token_id)
        token = raw.decode("utf-8", errors="replace")
        out.append(TokenLogprob(token, float(value), list(raw)))
    return tuple(out)


async def generate_choices(
    engine: Engine,
    model: TextModel,
    jobs: list[tuple[list[int], SamplingParams]],
    stops: list[str],
    deadline: float | None = None,
) -> AsyncIterator[tuple[int, TextDelta]]:
    """Deltas of several independent completions (prompt, parameters), tagged with their
    index, in the order they are produced. The engine batches them like any requests.

    At `deadline` (event-loop time) the generations are cancelled and TimeoutError is
    raised; the timeout wraps only the waits, never a yield, so it cannot fire inside the
    consumer."""
    source = _merged(engine, model, jobs, stops)
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    item = await anext(source)
            except StopAsyncIteration:
                return
            yield item
    finally:
        await source.aclose()


async def _merged(
    engine: Engine,
    model: TextModel,
    jobs: list[tuple[list[int], SamplingParams]],
    stops: list[str],
) -> AsyncGenerator[tuple[int, TextDelta], None]:
    if len(jobs) == 1:
        prompt_ids, params = jobs[0]
        async for delta in generate_text(engine, model, prompt_ids, params, stops):
            yield 0, delta
        return
    queue: asyncio.Queue[tuple[int, TextDelta] | BaseException | None] = asyncio.Queue()

    async def run(index: int, prompt_ids: list[int], choice: SamplingParams) -> None:
        try:
            async for delta in generate_text(engine, model, prompt_ids, choice, stops):
                await queue.put((index, delta))
        except Exception as exc:
            await queue.put(exc)
        finally:
            await queue.put(None)

    tasks = [asyncio.create_task(run(i, ids, p)) for i, (ids, p) in enumerate(jobs)]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
