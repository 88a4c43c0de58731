"""Server-side handle on the openvino-genai engine process (see genai_worker)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing as mp
from collections.abc import AsyncGenerator, Callable
from typing import Any

from app.engine.base import (
    LOGPROBS,
    MIN_P,
    PENALTIES,
    STRUCTURED_OUTPUT,
    EngineError,
    EngineStartError,
    EngineStats,
    RequestRejected,
    SamplingParams,
    TokenDelta,
)
from app.engine.genai_worker import WorkerConfig, run
from app.engine.grammar_check import GrammarChecker
from app.engine.messages import (
    AddRequest,
    CancelRequest,
    EngineReady,
    FromEngine,
    RequestFailed,
    RequestTokens,
    RunningCount,
    StepFault,
    StepOutput,
    StopEngine,
)

logger = logging.getLogger(__name__)

_STARTUP_TIMEOUT_S = 600.0
_POLL_S = 0.2
_ENGINE_GONE = "the inference engine stopped unexpectedly"


class GenaiEngine:
    name = "genai"
    capabilities = frozenset({LOGPROBS, STRUCTURED_OUTPUT, PENALTIES, MIN_P})

    def __init__(self, config: WorkerConfig, grammar_timeout_s: float = 10.0) -> None:
        self._config = config
        self.grammars = GrammarChecker(config.model_path, grammar_timeout_s)
        self._ctx = mp.get_context("spawn")  # fork would copy the server's threads and loop
        self._inbox: Any = None
        self._outbox: Any = None  # read end of the engine's pipe
        self._process: Any = None
        self._watching = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: dict[int, asyncio.Queue[TokenDelta | EngineError]] = {}
        self._ids = itertools.count(1)
        self._ready = False
        self._closing = False
        self.engine_running = 0  # requests the engine process holds, as it last reported
        self.restarts = 0
        self.faults = 0  # failed steps the engine recovered from without a restart
        self._stats = EngineStats()
        self._on_step: Callable[[float], None] | None = None
        self._restarting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Spawns the engine process and returns while it loads the model, so the server
        can load its tokenizer meanwhile; wait_ready() waits for the load."""
        self._loop = asyncio.get_running_loop()
        self._launch()

    async def wait_ready(self) -> None:
        await self._attach()

    async def check(self, params: SamplingParams) -> None:
        grammar = params.grammar
        if grammar is not None:
            await self.grammars.check(grammar)

    async def _spawn(self) -> None:
        self._launch()
        await self._attach()

    def _launch(self) -> None:
        self._inbox = self._ctx.Queue()
        self._outbox, writer = self._ctx.Pipe(duplex=False)
        self._process = self._ctx.Process(
            target=run, args=(self._config, self._inbox, writer), name="ovchat-engine"
        )
        self._process.start()
        writer.close()  # the engine holds the only write end: its death reads as EOF here
        logger.info(
            "Engine process %d started; loading %s", self._process.pid, self._config.model_path
        )

    async def _attach(self) -> None:
        first = await asyncio.to_thread(self._await_first_message)
        if not isinstance(first, EngineReady):
            self._process.join(timeout=5)
            raise EngineStartError(f"the engine could not load the model: {first}")
        self._ready = True
        assert self._loop is not None
        self._loop.add_reader(self._outbox.fileno(), self._on_readable)
        self._watching = True

    def _await_first_message(self) -> EngineReady | str:
        """EngineReady, or why the engine did not start."""
        waited = 0.0
        while waited < _STARTUP_TIMEOUT_S:
            try:
                if self._outbox.poll(_POLL_S):
                    message: FromEngine = self._outbox.recv()[0]
                    return message if isinstance(message, EngineReady) else str(message)
            except (EOFError, OSError):
                pass
            waited += _POLL_S
            if not self._process.is_alive():
                return f"engine process exited with code {self._process.exitcode}"
        return f"no answer from the engine process in {_STARTUP_TIMEOUT_S:.0f} s"

    def running(self) -> int:
        return self.engine_running

    def stats(self) -> EngineStats:
        return self._stats if self.engine_running else EngineStats()

    def on_step(self, callback: Callable[[float], None]) -> None:
        self._on_step = callback

    def is_ready(self) -> bool:
        return self._ready and self._process is not None and self._process.is_alive()

    def pid(self) -> int | None:
        alive = self._process is not None and self._process.is_alive()
        return int(self._process.pid) if alive else None

    async def close(self) -> None:
        self._closing = True
        self._ready = False
        if self._process is None:
            return
        self._unwatch()
        await self.grammars.close()
        with contextlib.suppress(Exception):
            self._inbox.put(StopEngine())
        await asyncio.to_thread(self._process.join, 10)
        if self._process.is_alive():
            self._process.terminate()
            await asyncio.to_thread(self._process.join, 5)
        logger.info("Engine process stopped")

    # ------------------------------------------------------------------ engine output

    def _on_readable(self) -> None:
        """Engine output, read on the event loop when the pipe has some: no reader thread,
        so no thread switch and no cross-thread wake-up per step. The engine writes each
        message whole in one send, so recv() never waits on a half-written one for long."""
        try:
            # One batch per call: the loop calls again while the pipe stays readable, and
            # skipping a poll() per call saves a system call per step.
            for message in self._outbox.recv():
                self._dispatch(message)
        except (EOFError, OSError):
            self._unwatch()
            if not self._closing:
                self._ready = False
                logger.error("%s (pid %s)", _ENGINE_GONE, self._process.pid)
                self._engine_died()

    def _unwatch(self) -> None:
        if self._watching and self._loop is not None:
            self._loop.remove_reader(self._outbox.fileno())
            self._watching = False

    def _engine_died(self) -> None:
        """Every request in flight fails now (503 or an error event), then a new engine
        process loads the model; the server itself keeps running and answers 503 on
        /health until the engine is back."""
        self._fail_all(_ENGINE_GONE)
        self.engine_running = 0
        if self._restarting is None or self._restarting.done():
            self._restarting = asyncio.create_task(self._restart())

    async def _restart(self) -> None:
        delay = 0.5
        while not self._closing:
            self.restarts += 1
            logger.warning("Restarting the engine process (restart %d)", self.restarts)
            try:
                await self._spawn()
                logger.info("Engine process is back")
                return
            except EngineStartError as exc:
                logger.error("Engine restart failed: %s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _dispatch(self, message: FromEngine) -> None:
        if isinstance(message, StepOutput):
            stats = message.stats
            self._stats = EngineStats(
                stats.scheduled,
                max(0, stats.requests - stats.scheduled),
                stats.cache_usage_pct / 100,
            )
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
        rid = next(self._ids)
        stream: asyncio.Queue[TokenDelta | EngineError] = asyncio.Queue()
        self._streams[rid] = stream
        finished = False
        try:
            self._inbox.put(AddRequest(rid, prompt_ids, params))
            while True:
                item = await stream.get()
                if isinstance(item, EngineError):
                    finished = True
                    raise item
                if item.finish is not None:
                    finished = True
                yield item
                if finished:
                    return
        finally:
            del self._streams[rid]
            if not finished and self.is_ready():
                # The consumer left early (client disconnected): free the engine's work.
                self._inbox.put(CancelRequest(rid))
