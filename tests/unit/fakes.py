"""A scripted engine: the HTTP layer is exercised without a model in the loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

from app.engine.base import EngineStats, PromptToken, SamplingParams, TokenDelta


async def _until(condition: Callable[[], bool]) -> None:
    """Polled, not an asyncio.Event: tests flip the fake's flags from their own thread."""
    while True:
        if condition():
            return
        await asyncio.sleep(0.005)


@dataclass
class FakeEngine:
    """Answers every request with `reply_ids` (one token per delta), then an eos id."""

    reply_ids: list[int]
    eos_id: int
    delay_s: float = 0.0
    name: str = "fake"
    capabilities: frozenset[str] = frozenset(
        {"logprobs", "structured_output", "presence_frequency_penalties", "min_p", "logits"}
    )
    ready: bool = True
    calls: list[tuple[list[int], SamplingParams]] = field(default_factory=list)
    cancelled: int = 0
    running_now: int = 0
    error_after: int | None = None
    step_callback: Callable[[float], None] | None = None
    checked: list[SamplingParams] = field(default_factory=list)
    bad_grammars: set[str] = field(default_factory=set)
    # A batch limit, as genai's max_num_seqs: beyond it a request waits to run. While
    # `paused`, running requests hold before their first token.
    max_running: int | None = None
    paused: bool = False
    kv_usage: float = 0.0
    block_size: int = 0
    kv_blocks: int = 0

    async def start(self) -> None:
        pass

    async def wait_ready(self) -> None:
        pass

    async def close(self) -> None:
        self.ready = False

    def is_ready(self) -> bool:
        return self.ready

    def pid(self) -> int | None:
        return None

    def running(self) -> int:
        return self.running_now

    def stats(self) -> EngineStats:
        return EngineStats(
            running=self.running_now,
            kv_usage=self.kv_usage,
            block_size=self.block_size,
            kv_blocks=self.kv_blocks,
        )

    def on_step(self, callback: Callable[[float], None]) -> None:
        self.step_callback = callback

    async def check(self, params: SamplingParams) -> None:
        from app.engine.base import RequestRejected

        self.checked.append(params)
        if params.json_schema is not None and params.json_schema in self.bad_grammars:
            raise RequestRejected("the grammar does not compile")

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncGenerator[TokenDelta, None]:
        from app.engine.base import EngineError

        self.calls.append((prompt_ids, params))
        await _until(lambda: self.max_running is None or self.running_now < self.max_running)
        self.running_now += 1
        finished = False
        try:
            await _until(lambda: not self.paused)
            prompt = _scored_prompt(prompt_ids, params.prompt_logprobs)
            if params.max_new_tokens == 0:
                finished = True
                yield TokenDelta((), "length", prompt=prompt)
                return
            script = [*self.reply_ids, self.eos_id]
            if params.ignore_eos:
                script = self.reply_ids * (params.max_new_tokens // len(self.reply_ids) + 1)
            for i, token in enumerate(script[: params.max_new_tokens]):
                if self.error_after is not None and i == self.error_after:
                    raise EngineError("fake engine failure")
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                last = i + 1 == params.max_new_tokens
                logprobs = (-0.25,) if params.logprobs else ()
                # The chosen token first, then the ids after it, each less likely.
                top = (_alternatives(token, params.top_logprobs),) if params.top_logprobs else ()
                if i:
                    prompt = None
                if token == self.eos_id and not params.ignore_eos:
                    finished = True
                    yield TokenDelta((token,), "stop", logprobs, top, prompt)
                    return
                finished = last
                yield TokenDelta((token,), "length" if last else None, logprobs, top, prompt)
                if last:
                    return
        finally:
            self.running_now -= 1
            if not finished:
                self.cancelled += 1


def _alternatives(token: int, k: int) -> tuple[tuple[int, float], ...]:
    return tuple((token + j, -0.25 - j) for j in range(k))


def _scored_prompt(ids: list[int], k: int | None) -> tuple[PromptToken, ...] | None:
    """The fake's prompt scores: -1 for every token after the first, its alternatives the
    token itself and the ids after it."""
    if k is None:
        return None
    rest = [PromptToken(t, -1.0, tuple((t + j, -1.0 - j) for j in range(k))) for t in ids[1:]]
    return (PromptToken(ids[0], None), *rest)


@dataclass
class FakeEmbeddingEngine:
    """Answers each input with a unit vector that names its length: [1, 0, ...] rotated
    by the input's token count, so tests can tell inputs apart."""

    dimensions: int = 384
    name: str = "fake-embedding"
    ready: bool = True
    fail: bool = False
    calls: list[list[list[int]]] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return None

    async def start(self) -> None:
        pass

    async def wait_ready(self) -> None:
        pass

    def is_ready(self) -> bool:
        return self.ready

    async def close(self) -> None:
        self.ready = False

    async def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        from app.engine.base import EngineError

        self.calls.append(inputs)
        if self.fail:
            raise EngineError("fake embedding failure")
        vectors = []
        for ids in inputs:
            vector = [0.0] * self.dimensions
            vector[len(ids) % self.dimensions] = 1.0
            vectors.append(vector)
        return vectors
