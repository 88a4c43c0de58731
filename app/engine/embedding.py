"""Server-side handle on the embedding engine process (see embedding_worker): token ids in,
vectors out. Requests that arrive together are batched by the process; one that is in
flight when the process dies fails with EngineError, and the process is restarted, so the
next request is served by the new one (it waits for the restart rather than failing)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path

from app.embedmodel import read_normalized, read_pooling
from app.engine.base import EngineError, EngineStartError
from app.engine.embedding_worker import EmbeddingWorkerConfig, run
from app.engine.messages import BatchStats, EmbedBatch, EmbedRequest, FromEmbedder
from app.engine.process import EngineProcess

logger = logging.getLogger(__name__)

_STARTUP_TIMEOUT_S = 120.0
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
        self._process = EngineProcess(
            "embedding engine",
            run,
            self._config,
            _STARTUP_TIMEOUT_S,
            self._on_message,
            lambda: self._fail_all(_ENGINE_GONE),
        )
        self._pending: dict[int, asyncio.Future[list[list[float]]]] = {}
        self._ids = itertools.count(1)
        # Batching figures, for /metrics and for the tests that check requests are batched.
        self.batches = 0
        self.batched_requests = 0
        self.largest_batch = 0  # most requests one batch answered
        self.last_batch: BatchStats | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def restarts(self) -> int:
        return self._process.restarts

    async def start(self) -> None:
        self._process.launch()

    async def wait_ready(self) -> None:
        await self._process.attach()

    def is_ready(self) -> bool:
        return self._process.is_ready()

    async def close(self) -> None:
        self._fail_all("the embedding engine is shutting down")
        await self._process.stop()

    # ------------------------------------------------------------------ engine output

    def _on_message(self, message: FromEmbedder) -> None:
        if isinstance(message, EmbedBatch):
            self._deliver(message)

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

    def _fail_all(self, reason: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(EngineError(reason))

    # ------------------------------------------------------------------ requests

    async def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        """One request's vectors, in the order of its inputs (token ids, special tokens
        included). Raises EngineError if the engine fails or dies while it holds them."""
        if not inputs:
            return []
        # The next request after a crash is the new process's, not another failure.
        await self._process.back(_STARTUP_TIMEOUT_S)
        if not self.is_ready():
            raise EngineError("the embedding engine is not running")
        rid = next(self._ids)
        future: asyncio.Future[list[list[float]]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            self._process.send(EmbedRequest(rid, inputs))
            return await future
        finally:
            del self._pending[rid]
