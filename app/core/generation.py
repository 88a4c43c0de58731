"""From engine tokens to protocol-neutral events: incremental decoding, stop strings,
tool calls, log-probabilities, token accounting and each choice's finish reason, decided
here and nowhere else. Shared by every dialect and by streaming and non-streaming
responses, so none of them can disagree."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

from app.core.plan import ChoicePlan
from app.core.stops import StopMatcher
from app.core.tools import CallParser, CallStart, Text, ToolEvent, ToolPlan
from app.engine.base import Engine, EngineFinish, PromptToken
from app.textmodel import TextModel

Finish = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True, slots=True)
class Alternative:
    token: str
    logprob: float
    bytes: list[int]


@dataclass(frozen=True, slots=True)
class ChosenToken:
    """A generated token with its log-probability and its exact bytes (a token may be part
    of a UTF-8 character; its bytes let a client reassemble the text), and the most
    likely tokens at its position when they were asked for."""

    token: str
    logprob: float
    bytes: list[int]
    top: tuple[Alternative, ...] = ()


@dataclass(frozen=True, slots=True)
class PromptScore:
    """A prompt token as scored: None for the first (nothing predicts it)."""

    token: str
    logprob: float | None
    top: tuple[Alternative, ...] = ()


@dataclass(frozen=True, slots=True)
class TextOut:
    choice: int
    text: str
    logprobs: tuple[ChosenToken, ...] = ()


@dataclass(frozen=True, slots=True)
class CallOut:
    """A tool call begins: its name is known, its arguments follow as ArgumentsOut."""

    choice: int
    call: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ArgumentsOut:
    choice: int
    call: int
    fragment: str


@dataclass(frozen=True, slots=True)
class ChoiceEnd:
    choice: int
    finish: Finish
    stop_sequence: str | None = None  # the stop string that ended it (Anthropic reports it)


@dataclass(frozen=True, slots=True)
class PromptOut:
    """The prompt's tokens with their log-probabilities, before the choice's first text
    (only when the plan asks for them: legacy completions' echo with logprobs)."""

    choice: int
    tokens: tuple[PromptScore, ...]


Event = TextOut | CallOut | ArgumentsOut | ChoiceEnd | PromptOut


def finish_reason(engine: EngineFinish | None, stopped: bool, parser: CallParser | None) -> Finish:
    if engine == "length" and not stopped:
        return "length"  # also a call cut short: OpenAI reports the budget, not the call
    if parser is not None and parser.called:
        return "tool_calls"
    return "stop"


async def choice_events(
    engine: Engine,
    model: TextModel,
    index: int,
    choice: ChoicePlan,
    stops: list[str],
    tools: ToolPlan | None,
    count: Callable[[int, int], None],
) -> AsyncIterator[Event]:
    """One choice's events, ending with its ChoiceEnd. `count(index, tokens)` hears of
    every token the engine produced for it, those that never become text included. Stop
    strings end text; they never cut a tool call's JSON."""
    decoder = model.decoder()
    matcher = StopMatcher(stops)
    parser = tools.parser() if tools is not None else None
    held: list[ChosenToken] = []  # log-probabilities of text not yet released
    produced = 0
    generation = engine.generate(choice.prompt_ids, choice.params)
    try:
        async for delta in generation:
            produced += len(delta.token_ids)
            count(index, produced)
            if delta.prompt is not None:
                yield PromptOut(index, tuple(_prompt_scores(model, delta.prompt)))
            held.extend(_logprobs(model, delta.token_ids, delta.logprobs, delta.top))
            text = decoder.push(delta.token_ids)
            last = delta.finish is not None
            if last:
                text += decoder.flush()
            if parser is None:
                pieces: list[ToolEvent] = [Text(text)]
            else:
                pieces = parser.feed(text) + (parser.close() if last else [])
            stopped = False
            for piece in pieces:
                if isinstance(piece, Text):
                    released, stopped = matcher.feed(piece.text)
                    if released or held:
                        yield TextOut(index, released, tuple(held))
                        held.clear()
                    if stopped:
                        break
                elif isinstance(piece, CallStart):
                    held.clear()  # the call's own text is not content
                    yield CallOut(index, piece.call, piece.id, piece.name)
                else:
                    yield ArgumentsOut(index, piece.call, piece.fragment)
            if parser is not None and parser.done:
                yield ChoiceEnd(index, "tool_calls")
                return  # closing the generation cancels the rest in the engine
            if last and not stopped:
                tail = matcher.flush()
                if tail or held:
                    yield TextOut(index, tail, tuple(held))
            if stopped or last:
                yield ChoiceEnd(
                    index,
                    finish_reason(delta.finish, stopped, parser),
                    matcher.hit if stopped else None,
                )
                return
            if held and (parser is None or parser.text_mode):
                yield TextOut(index, "", tuple(held))  # tokens whose text is still held
                held.clear()
    finally:
        await generation.aclose()


def _token(model: TextModel, token_id: int) -> tuple[str, list[int]]:
    raw = model.token_bytes(token_id)
    return raw.decode("utf-8", errors="replace"), list(raw)


def _alternatives(model: TextModel, top: tuple[tuple[int, float], ...]) -> tuple[Alternative, ...]:
    return tuple(_alternative(model, t, v) for t, v in top)


def _alternative(model: TextModel, token_id: int, value: float) -> Alternative:
    token, raw = _token(model, token_id)
    return Alternative(token, float(value), raw)


def _logprobs(
    model: TextModel,
    token_ids: tuple[int, ...],
    values: tuple[float, ...],
    top: tuple[tuple[tuple[int, float], ...], ...] = (),
) -> tuple[ChosenToken, ...]:
    if not values:
        return ()
    out = []
    for i, (token_id, value) in enumerate(zip(token_ids, values, strict=False)):
        if token_id in model.eos_token_ids:
            continue  # the eos token ends the answer; it is not part of it
        token, raw = _token(model, token_id)
        alternatives = _alternatives(model, top[i]) if i < len(top) else ()
        out.append(ChosenToken(token, float(value), raw, alternatives))
    return tuple(out)


def _prompt_scores(model: TextModel, prompt: tuple[PromptToken, ...]) -> list[PromptScore]:
    return [
        PromptScore(_token(model, p.token_id)[0], p.logprob, _alternatives(model, p.top))
        for p in prompt
    ]


async def merge(
    streams: list[AsyncIterator[Event]], deadline: float | None = None
) -> AsyncIterator[Event]:
    """The events of several choices, in the order they are produced (the engine batches
    them like any requests).

    At `deadline` (event-loop time) the generations are cancelled and TimeoutError is
    raised; the timeout wraps only the waits, never a yield, so it cannot fire inside the
    consumer."""
    source = _merged(streams)
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


async def _merged(streams: list[AsyncIterator[Event]]) -> AsyncGenerator[Event, None]:
    if len(streams) == 1:
        async with contextlib.aclosing(streams[0]) as only:  # type: ignore[type-var]
            async for event in only:
                yield event
        return
    queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()

    async def run(stream: AsyncIterator[Event]) -> None:
        try:
            async with contextlib.aclosing(stream) as events:  # type: ignore[type-var]
                async for event in events:
                    await queue.put(event)
        except Exception as exc:
            await queue.put(exc)
        finally:
            await queue.put(None)

    tasks = [asyncio.create_task(run(stream)) for stream in streams]
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
