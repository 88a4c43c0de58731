"""From engine tokens to the text a client sees: incremental decoding, stop strings,
token accounting. Shared by streaming and non-streaming responses, so the two cannot
disagree."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from app.engine.base import Engine, SamplingParams
from app.stops import StopMatcher
from app.textmodel import TextModel

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class TextDelta:
    text: str
    finish_reason: FinishReason | None
    completion_tokens: int


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
            text = decoder.push(delta.token_ids)
            if delta.finish is not None:
                text += decoder.flush()
            released, stopped = matcher.feed(text)
            if stopped:
                yield TextDelta(released, "stop", produced)
                return  # closing the generation cancels the rest in the engine
            if delta.finish is not None:
                yield TextDelta(released + matcher.flush(), delta.finish, produced)
                return
            if released:
                yield TextDelta(released, None, produced)
    finally:
        await generation.aclose()
