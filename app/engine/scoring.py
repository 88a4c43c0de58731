"""The exact scoring path, as the server sees it: `ScoringEngine` is the handle on the
scoring process (app/engine/scoring_worker.py); `LogitsRouter` is the engine a model is
served by when it has one, sending what needs every logit there and everything else to
the main engine, which never sees those requests.

The scoring engine loads on the first request that needs it and unloads after
`idle_s` without one, so a server that is never asked for alternatives or biases never
holds a second copy of the model."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator, Callable

from app.engine.base import (
    LOGITS,
    Engine,
    EngineError,
    EngineStartError,
    EngineStats,
    SamplingParams,
    TokenDelta,
)
from app.engine.messages import RequestFailed, RequestTokens
from app.engine.process import EngineProcess, request_stream
from app.engine.scoring_worker import ScoringWorkerConfig, run

logger = logging.getLogger(__name__)

_STARTUP_TIMEOUT_S = 300.0
_ENGINE_GONE = "the scoring engine stopped unexpectedly"


class ScoringEngine:
    name = "scoring"

    def __init__(self, config: ScoringWorkerConfig) -> None:
        self._process = EngineProcess(
            "scoring engine", run, config, _STARTUP_TIMEOUT_S, self._dispatch, self._died
        )
        self._streams: dict[int, asyncio.Queue[TokenDelta | EngineError]] = {}
        self._ids = itertools.count(1)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def running(self) -> int:
        return len(self._streams)

    def is_ready(self) -> bool:
        return self._process.is_ready()

    async def start(self) -> None:
        self._process.launch()
        await self._process.attach()

    async def close(self) -> None:
        self._fail_all("the scoring engine is shutting down")
        await self._process.stop()

    def _died(self) -> None:
        self._fail_all(_ENGINE_GONE)

    def _fail_all(self, reason: str) -> None:
        for stream in self._streams.values():
            stream.put_nowait(EngineError(reason))

    def _dispatch(self, message: object) -> None:
        if isinstance(message, RequestTokens):
            stream = self._streams.get(message.rid)
            if stream is not None:
                stream.put_nowait(
                    TokenDelta(
                        tuple(message.token_ids),
                        message.finish,
                        tuple(message.logprobs),
                        top=message.top,
                        prompt=message.prompt,
                    )
                )
        elif isinstance(message, RequestFailed):
            stream = self._streams.get(message.rid)
            if stream is not None:
                stream.put_nowait(EngineError(message.message))

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncGenerator[TokenDelta, None]:
        await self._process.back(_STARTUP_TIMEOUT_S)
        if not self.is_ready():
            raise EngineError("the scoring engine is not running")
        # Closed with this generator, so a client that leaves cancels its request now.
        deltas = request_stream(self._process, self._streams, next(self._ids), prompt_ids, params)
        async with contextlib.aclosing(deltas):
            async for delta in deltas:
                yield delta


class LogitsRouter:
    """A model's engine with the exact scoring path beside it: the `Engine` protocol,
    delegated to `main` except for the requests whose parameters need every logit."""

    def __init__(
        self,
        main: Engine,
        scorer: Callable[[], ScoringEngine],
        idle_s: float,
    ) -> None:
        self.main = main
        self.name = main.name
        self.capabilities = main.capabilities | {LOGITS}
        self._make_scorer = scorer
        self._idle_s = idle_s
        self.scorer: ScoringEngine | None = None
        self._loading: asyncio.Task[ScoringEngine] | None = None
        self._unload: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()  # unloads under way

    # Everything but generation is the main engine's: its readiness is the model's.
    async def start(self) -> None:
        await self.main.start()

    async def wait_ready(self) -> None:
        await self.main.wait_ready()

    def is_ready(self) -> bool:
        return self.main.is_ready()

    def pid(self) -> int | None:
        return self.main.pid()

    def running(self) -> int:
        return self.main.running() + (self.scorer.running() if self.scorer else 0)

    def stats(self) -> EngineStats:
        return self.main.stats()

    def on_step(self, callback: Callable[[float], None]) -> None:
        self.main.on_step(callback)

    async def check(self, params: SamplingParams) -> None:
        if not params.needs_logits:
            await self.main.check(params)

    async def close(self) -> None:
        if self._unload is not None:
            self._unload.cancel()
        if self._loading is not None:
            self._loading.cancel()
            with contextlib.suppress(BaseException):
                await self._loading
        if self.scorer is not None:
            await self.scorer.close()
            self.scorer = None
        for task in list(self._closing):
            with contextlib.suppress(Exception):
                await task
        await self.main.close()

    def generate(
        self, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncGenerator[TokenDelta, None]:
        if params.needs_logits:
            return self._scored(prompt_ids, params)
        return self.main.generate(prompt_ids, params)

    async def _scored(
        self, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncGenerator[TokenDelta, None]:
        scorer = await self._scorer()
        if self._unload is not None:
            self._unload.cancel()
            self._unload = None
        generation = scorer.generate(prompt_ids, params)
        try:
            async for delta in generation:
                yield delta
        finally:
            await generation.aclose()
            if scorer.running() == 0 and self.scorer is scorer:
                self._unload = asyncio.get_running_loop().call_later(
                    self._idle_s, self._unload_idle
                )

    async def _scorer(self) -> ScoringEngine:
        if self.scorer is not None:
            return self.scorer
        if self._loading is None or self._loading.done():
            self._loading = asyncio.create_task(self._load())
        try:
            return await asyncio.shield(self._loading)
        except EngineStartError as exc:
            raise EngineError(f"the scoring engine could not load: {exc}") from exc

    async def _load(self) -> ScoringEngine:
        scorer = self._make_scorer()
        try:
            await scorer.start()
        except BaseException:
            await scorer.close()
            raise
        logger.info(
            "Scoring engine loaded (pid %s) for top_logprobs, logit_bias or prompt logprobs",
            scorer.pid,
        )
        self.scorer = scorer
        return scorer

    def _unload_idle(self) -> None:
        self._unload = None
        scorer = self.scorer
        if scorer is None or scorer.running():
            return
        self.scorer = None
        logger.info("Scoring engine unloaded after %.0f s idle", self._idle_s)
        task = asyncio.get_running_loop().create_task(scorer.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
