"""Server-side handle on the openvino-genai engine process (see genai_worker)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace

from app.engine.base import (
    LOGPROBS,
    MIN_P,
    PENALTIES,
    STRUCTURED_OUTPUT,
    EngineError,
    EngineStats,
    RequestRejected,
    SamplingParams,
    TokenDelta,
)
from app.engine.genai_worker import WorkerConfig, run
from app.engine.grammar_check import GrammarChecker
from app.engine.messages import (
    FromEngine,
    RequestFailed,
    RequestTokens,
    RunningCount,
    StepFault,
    StepOutput,
)
from app.engine.process import EngineProcess, request_stream

logger = logging.getLogger(__name__)

_STARTUP_TIMEOUT_S = 600.0
_ENGINE_GONE = "the inference engine stopped unexpectedly"


class GenaiEngine:
    name = "genai"
    capabilities = frozenset({LOGPROBS, STRUCTURED_OUTPUT, PENALTIES, MIN_P})

    def __init__(self, config: WorkerConfig, grammar_timeout_s: float = 10.0) -> None:
        self._config = config
        self.grammars = GrammarChecker(config.model_path, grammar_timeout_s)
        self._process = EngineProcess(
            "engine", run, config, _STARTUP_TIMEOUT_S, self._dispatch, self._engine_died
        )
        self._streams: dict[int, asyncio.Queue[TokenDelta | EngineError]] = {}
        self._ids = itertools.count(1)
        self.engine_running = 0  # requests the engine process holds, as it last reported
        self.faults = 0  # failed steps the engine recovered from without a restart
        self._stats = EngineStats()
        self.draft_tokens = 0
        self.accepted_tokens = 0
        self.moved_requests = 0
        self.prefill_pieces = 0
        self._on_step: Callable[[float], None] | None = None

    @property
    def restarts(self) -> int:
        return self._process.restarts

    async def start(self) -> None:
        """Spawns the engine process and returns while it loads the model, so the server
        can load its tokenizer meanwhile; wait_ready() waits for the load."""
        self._process.launch()

    async def wait_ready(self) -> None:
        await self._process.attach()

    async def check(self, params: SamplingParams) -> None:
        grammar = params.grammar
        if grammar is not None:
            await self.grammars.check(grammar)

    def running(self) -> int:
        return self.engine_running

    def stats(self) -> EngineStats:
        now = self._stats if self.engine_running else EngineStats()
        started = self._process.started
        return replace(
            now,
            draft_tokens=self.draft_tokens,
            accepted_tokens=self.accepted_tokens,
            moved_requests=self.moved_requests,
            prefill_pieces=self.prefill_pieces,
            block_size=started.block_size if started is not None else 0,
            kv_blocks=started.kv_blocks if started is not None else 0,
        )

    def on_step(self, callback: Callable[[float], None]) -> None:
        self._on_step = callback

    def is_ready(self) -> bool:
        return self._process.is_ready()

    def pid(self) -> int | None:
        return self._process.pid

    async def close(self) -> None:
        await self.grammars.close()
        await self._process.stop()

    # ------------------------------------------------------------------ engine output

    def _engine_died(self) -> None:
        """Every request in flight fails now (503 or an error event), then a new engine
        process loads the model (EngineProcess restarts it); the server itself keeps
        running and answers 503 on /health until the engine is back."""
        self._fail_all(_ENGINE_GONE)
        self.engine_running = 0

    def _dispatch(self, message: FromEngine) -> None:
        if isinstance(message, StepOutput):
            stats = message.stats
            self._stats = EngineStats(
                stats.scheduled,
                max(0, stats.requests - stats.scheduled),
                stats.cache_usage_pct / 100,
            )
            self.draft_tokens += stats.drafted
            self.accepted_tokens += stats.accepted
            self.moved_requests += stats.moved
            self.prefill_pieces += stats.pieces
            if self._on_step is not None:
                self._on_step(stats.step_s)
            for item in message.tokens:
                self._deliver(item)
        elif isinstance(message, RequestTokens):  # outside a step: after a fault
            self._deliver(message)
        elif isinstance(message, RunningCount):
            self.engine_running = message.count
        elif isinstance(message, RequestFailed):
            stream = self._streams.get(message.rid)
            if stream is not None:
                error = RequestRejected if message.rejected else EngineError
                stream.put_nowait(error(message.message))
        elif isinstance(message, StepFault):
            self.faults += 1
            logger.warning(
                "Engine step failed (%s); recovered without a restart: %d request(s) failed, "
                "%d resumed",
                message.message,
                len(message.failed),
                len(message.resumed),
            )

    def _deliver(self, item: RequestTokens) -> None:
        stream = self._streams.get(item.rid)
        if stream is not None:
            stream.put_nowait(TokenDelta(tuple(item.token_ids), item.finish, tuple(item.logprobs)))

    def _fail_all(self, reason: str) -> None:
        for stream in self._streams.values():
            stream.put_nowait(EngineError(reason))

    # ------------------------------------------------------------------ requests

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncGenerator[TokenDelta, None]:
        if not self.is_ready():
            raise EngineError("the inference engine is not running")
        # Closed with this generator, so a client that leaves cancels its request now.
        deltas = request_stream(self._process, self._streams, next(self._ids), prompt_ids, params)
        async with contextlib.aclosing(deltas):
            async for delta in deltas:
                yield delta
