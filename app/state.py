"""What a running server holds: its models (generation and embedding models, each loaded
into an engine of its own, on demand), its metrics and its response store, created in the
lifespan and reached by routes through dependencies, never through module globals."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Protocol

import psutil

from app.admission import Admission
from app.core.plan import ModelContext
from app.embedmodel import EmbeddingModelInfo
from app.engine.base import Engine, EngineStats
from app.engine.embedding import EmbeddingEngine
from app.metrics import Metrics
from app.pool import ModelPool
from app.settings import Settings
from app.storage.responses import ResponseStore
from app.textmodel import TextModel


def process_memory(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


class _Process(Protocol):
    name: str

    def is_ready(self) -> bool: ...

    async def close(self) -> None: ...


class _InItsOwnEngine:
    """What every loaded model does the same way: admission of its own, an engine of its
    own (app/pool.Loaded)."""

    engine: _Process
    admission: Admission

    @property
    def engine_name(self) -> str:
        return self.engine.name

    def in_flight(self) -> int:
        return self.admission.in_flight

    def is_ready(self) -> bool:
        return self.engine.is_ready()

    def drain(self) -> None:
        self.admission.draining = True

    async def close(self) -> None:
        await self.engine.close()


@dataclass
class GenerationModel(_InItsOwnEngine):
    """A chat/completions model, loaded: its engine, its tokenizer, its own admission."""

    id: str
    engine: Engine
    text: TextModel
    admission: Admission
    context: ModelContext
    system_fingerprint: str

    def stats(self) -> EngineStats:
        """The engine's report, with what waits counted from admission: every sequence
        admitted and not running waits, in the engine's queue, in the worker's, or still in
        the server (a grammar being checked, a turn being read from the store). The engine
        reports as of its last step, so its running count may still hold a sequence whose
        ticket has just been released: it is capped at what is admitted."""
        engine = self.engine.stats()
        admitted = self.admission.in_flight
        running = min(engine.running, admitted)
        return replace(engine, running=running, waiting=admitted - running)

    def pid(self) -> int | None:
        return self.engine.pid()

    def memory_bytes(self) -> int | None:
        return process_memory(self.engine.pid())


@dataclass
class EmbeddingModel(_InItsOwnEngine):
    """An embedding model, loaded: its engine process, what the server needs to tokenize
    and check inputs, and its own admission (one slot per request)."""

    id: str
    engine: EmbeddingEngine
    info: EmbeddingModelInfo
    admission: Admission

    def stats(self) -> EngineStats:
        return EngineStats(running=self.admission.in_flight)

    def pid(self) -> int | None:
        return self.engine.pid

    def memory_bytes(self) -> int | None:
        return process_memory(self.engine.pid)


@dataclass
class ServerState:
    settings: Settings
    models: ModelPool
    created: int
    metrics: Metrics
    responses: ResponseStore  # stored Responses API responses
    background: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # by response id
