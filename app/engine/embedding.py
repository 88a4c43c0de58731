"""Server-side handle on the embedding engine process (see embedding_worker): token ids in,
vectors out. Requests that arrive together are batched by the process; one that is in
flight when the process dies fails with EngineError, and the process is restarted, so the
next request is served by the new one (it waits for the restart rather than failing)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing as mp
from pathlib import Path
from typing import Any

from app.embedmodel import read_normalized, read_pooling
from app.engine.base import EngineError, EngineStartError
from app.engine.embedding_worker import EmbeddingWorkerConfig, run
from app.engine.messages import (
    BatchStats,
    EmbedBatch,
    EmbedRequest,
    EngineReady,
    FromEmbedder,
    StopEngine,
)

logger = logging.getLogger(__name__)

_STARTUP_TIMEOUT_S = 120.0
_POLL_S = 0.2
_ENGINE_GONE = "the embedding engine stopped unexpectedly; it is being restarted, retry"


class EmbeddingEngine:
    name = "openvino-embedding"

    def __init__(self, folder: Path, device: str, properties: dict[str, str]) -> None:
        try:
            pooling, _ = read_pooling(folder)
            normalized = read_normalized(folder)
        except (OSError, ValueError) as exc:  # EmbeddingModelError included
            raise EngineStartError(f"cannot serve {folder} as an embedding model: {exc}") from exc
        root = logging.getLogger()
        self._config = EmbeddingWorkerConfig(
            model_path=str(folder),
            device=device,
            properties=dict(properties),
            pooling=pooling,
            normalize=normalized,
            log_level=logging.getLevelName(root.getEffectiveLevel()),
        )
        self._ctx = mp.get_context("spawn")  # fork would copy the server's threads and loop
        self._inbox: Any = None
        self._outbox: Any = None  # read end of the engine's pipe
        self._process: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watching = False
        self._ready = False
        self._closing = False
        self._pending: dict[int, asyncio.Future[list[list[float]]]] = {}
        self._ids = itertools.count(1)
        self._restarting: asyncio.Task[None] | None = None
        self.restarts = 0
        # Batching figures, for /metrics and for the tests that check requests are batched.
        self.batches = 0
        self.batched_requests = 0
        self.largest_batch = 0  # most requests one batch answered
        self.last_batch: BatchStats | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        """Spawns the engine process and returns while it loads the model."""
        self._loop = asyncio.get_running_loop()
        self._launch()

    async def wait_ready(self) -> None:
        await self._attach()

    def is_ready(self) -> bool:
        return self._ready and self._process is not None and self._process.is_alive()

    def _launch(self) -> None:
        self._inbox = self._ctx.Queue()
        self._outbox, writer = self._ctx.Pipe(duplex=False)
        self._process = self._ctx.Process(
            target=run, args=(self._config, self._inbox, writer), name="ovchat-embedding"
        )
        self._process.start()
        writer.close()  # the engine holds the only write end: its death reads as EOF here
        logger.info(
            "Embedding engine process %d started; loading %s",
            self._process.pid,
            self._config.model_path,
        )

    async def _attach(self) -> None:
        first = await asyncio.to_thread(self._await_first_message)
        if not isinstance(first, EngineReady):
            self._process.join(timeout=5)
            raise EngineStartError(f"the embedding engine could not load the model: {first}")
        self._ready = True
        assert self._loop is not None
        self._loop.add_reader(self._outbox.fileno(), self._on_readable)
        self._watching = True

    def _await_first_message(self) -> EngineReady | str:
        waited = 0.0
        while waited < _STARTUP_TIMEOUT_S:
            try:
                if self._outbox.poll(_POLL_S):
                    message: FromEmbedder = self._outbox.recv()[0]
                    return message if isinstance(message, EngineReady) else str(message)
            except (EOFError, OSError):
                pass
            waited += _POLL_S
            if not self._process.is_alive():
                return f"engine process exited with code {self._process.exitcode}"
        return f"no answer from the embedding engine process in {_STARTUP_TIMEOUT_S:.0f} s"

    async def close(self) -> None:
        self._closing = True
        self._ready = False
        if self._restarting is not None:
            self._restarting.cancel()
        if self._process is None:
            return
        self._unwatch()
        self._fail_all("the embedding engine is shutting down")
        with contextlib.suppress(Exception):
            self._inbox.put(StopEngine())
        await asyncio.to_thread(self._process.join, 10)
        if self._process.is_alive():
            self._process.terminate()
            await asyncio.to_thread(self._process.join, 5)
        logger.info("Embedding engine process stopped")

    # ------------------------------------------------------------------ engine output

    def _on_readable(self) -> None:
        try:
            for message in self._outbox.recv():
                if isinstance(message, EmbedBatch):
                    self._deliver(message)
        except (EOFError, OSError):
            self._unwatch()
            if not self._closing:
                self._ready = False
                logger.error("%s (pid %s)", _ENGINE_GONE, self.pid)
                self._engine_died()

    def _deliver(self, batch: EmbedBatch) -> None:
        import numpy as np

        self.batches += 1
        self.batched_requests += batch.stats.requests
        self.largest_batch = max(self.largest_batch, batch.stats.requests)
        self.last_batch = batch.stats
        for result in batch.results:
            future = self._pending.get(result.rid)
            if future is not None and not future.done():
                rows = np.frombuffer(result.vectors, dtype="<f4").reshape(-1, result.dimensions)
                future.set_result(rows.tolist())
        for failure in batch.failed:
            future = self._pending.get(failure.rid)
            if future is not None and not future.done():
                future.set_exception(EngineError(failure.message))

    def _unwatch(self) -> None:
        if self._watching and self._loop is not None:
            self._loop.remove_reader(self._outbox.fileno())
            self._watching = False

    def _engine_died(self) -> None:
        self._fail_all(_ENGINE_GONE)
        if self._restarting is None or self._restarting.done():
            self._restarting = asyncio.create_task(self._restart())

    def _fail_all(self, reason: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(EngineError(reason))

    async def _restart(self) -> None:
        delay = 0.5
        while not self._closing:
            self.restarts += 1
            logger.warning("Restarting the embedding engine process (restart %d)", self.restarts)
            try:
                self._launch()
                await self._attach()
                logger.info("Embedding engine process is back")
                return
            except EngineStartError as exc:
                logger.error("Embedding engine restart failed: %s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    # ------------------------------------------------------------------ requests

    async def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        """One request's vectors, in the order of its inputs (token ids, special tokens
        included). Raises EngineError if the engine fails or dies while it holds them."""
        if not inputs:
            return []
        restarting = self._restarting
        if not self.is_ready() and restarting is not None and not restarting.done():
            # The next request after a crash is the new process's, not another failure.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(restarting), _STARTUP_TIMEOUT_S)
        if not self.is_ready():
            raise EngineError("the embedding engine is not running")
        assert self._loop is not None
        rid = next(self._ids)
        future: asyncio.Future[list[list[float]]] = self._loop.create_future()
        self._pending[rid] = future
        try:
            self._inbox.put(EmbedRequest(rid, inputs))
            return await future
        finally:
            del self._pending[rid]
