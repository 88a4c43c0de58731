"""The models a server serves, each loaded on demand into an engine of its own and
unloaded when idle, over a cap, over the memory budget, or told to.

A request holds its model from the moment it is routed (`ModelPool.use`) until its
admission ticket is released, so a model never unloads under a request in flight:
eviction, keep-alive and the admin unload only ever take a model that nothing holds."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from app.admission import Ticket
from app.engine.base import EngineStats
from app.errors import ApiError
from app.modelstore.store import Kind, ResolvedModel
from app.settings import Settings
from app.textmodel import model_context_length

logger = logging.getLogger(__name__)

Status = Literal["unloaded", "loading", "loaded"]
GIB = 1024**3
# What a loaded model holds beyond the weights on disk before its process can be measured:
# the runtime, the tokenizer, the first KV blocks.
_OVERHEAD_BYTES = 256 * 1024**2
_REAPER_PERIOD_S = 0.5


class Loaded(Protocol):
    """A model in memory, whatever its kind: what the pool needs to account for it."""

    id: str

    @property
    def engine_name(self) -> str: ...

    def in_flight(self) -> int:
        """Work the model holds (sequences admitted and not yet finished)."""
        ...

    def is_ready(self) -> bool: ...

    def stats(self) -> EngineStats: ...

    def pid(self) -> int | None:
        """The model's engine process, when it has one of its own."""
        ...

    def memory_bytes(self) -> int | None:
        """Resident memory of that process."""
        ...

    def drain(self) -> None:
        """Admit nothing new (the server is shutting down)."""
        ...

    async def close(self) -> None: ...


Loader = Callable[[ResolvedModel, str], Awaitable[Loaded]]  # (model, served id)


ENDPOINTS: dict[Kind, tuple[str, ...]] = {
    "generation": ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages"),
    "embedding": ("/v1/embeddings",),
}


def embedding_length(folder: Path) -> int:
    """The length a sentence-transformers model was trained for (its max_seq_length),
    else what its position embeddings allow."""
    for name, key in (
        ("sentence_bert_config.json", "max_seq_length"),
        ("config.json", "max_position_embeddings"),
    ):
        try:
            return int(json.loads((folder / name).read_text())[key])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return 512


def weights_bytes(model: ResolvedModel) -> int:
    return sum(p.stat().st_size for p in model.path.glob("*.bin"))


@dataclass
class ServedModel:
    id: str
    source: ResolvedModel
    keep_alive_s: float  # negative: never unloaded for idleness
    status: Status = "unloaded"
    loaded: Loaded | None = None
    holders: int = 0  # requests routed to it that have not released it
    idle_since: float = field(default_factory=time.monotonic)
    last_used: float = 0.0  # monotonic; orders eviction (least recently used first)
    last_error: str | None = None
    loading: asyncio.Task[Loaded] | None = None

    @property
    def kind(self) -> Kind:
        return self.source.kind

    @property
    def endpoints(self) -> tuple[str, ...]:
        return ENDPOINTS[self.kind]

    @functools.cached_property
    def context_length(self) -> int:
        """Read from the export's config, so that an unloaded model can say it too."""
        if self.kind == "embedding":
            return embedding_length(self.source.path)
        return model_context_length(self.source.path)

    @functools.cached_property
    def created(self) -> int:
        """When the export was built: OpenAI's `created` is the model's, not the server's."""
        return int(self.source.path.stat().st_mtime)

    def busy(self) -> bool:
        return self.holders > 0 or (self.loaded is not None and self.loaded.in_flight() > 0)

    def footprint(self) -> int:
        measured = self.loaded.memory_bytes() if self.loaded is not None else None
        return measured if measured else weights_bytes(self.source) + _OVERHEAD_BYTES


class Lease:
    """A request's hold on its model, released once. A generation hands it to its
    admission ticket (`keep_until`), so a stream that outlives its route still holds it."""

    def __init__(self, model: ServedModel) -> None:
        self._model: ServedModel | None = model
        self._handed = False
        model.holders += 1
        model.last_used = time.monotonic()

    def keep_until(self, ticket: Ticket) -> None:
        self._handed = True
        ticket.on_release(self.release)

    def release(self) -> None:
        if self._model is not None:
            self._model.holders -= 1
            self._model.last_used = self._model.idle_since = time.monotonic()
            self._model = None

    def end_of_route(self) -> None:
        if not self._handed:
            self.release()


class ModelPool:
    def __init__(
        self,
        settings: Settings,
        models: list[ResolvedModel],
        loaders: dict[Kind, Loader],
        on_change: Callable[[ServedModel], None] = lambda model: None,
    ) -> None:
        if settings.served_model_name and len(models) > 1:
            raise ValueError("served_model_name names one model; several are served")
        self.settings = settings
        self.models: dict[str, ServedModel] = {}
        for source in models:
            served_id = settings.served_model_name or source.name
            self.models[served_id] = ServedModel(served_id, source, settings.keep_alive)
        self.default_id = next(iter(self.models), "")  # the first named is the default
        self._loaders = loaders
        self._on_change = on_change
        self._room = asyncio.Lock()  # one decision at a time about what is loaded
        self._reaper: asyncio.Task[None] | None = None
        self.draining = False

    # Lifecycle

    async def start(self) -> None:
        """Loads what `preload` asks for (as far as the cap and budget allow), and starts
        the keep-alive reaper. A model that fails to load here stops startup."""
        preload = list(self.models.values())
        if self.settings.preload == "first":
            preload = preload[:1]
        elif self.settings.preload == "none":
            preload = []
        for model in preload:
            if not self._fits_without_eviction(model):
                logger.info("Not preloading %s: the model cap or memory budget is full", model.id)
                continue
            await self._load(model)
        self._reaper = asyncio.create_task(self._reap(), name="ovchat-keep-alive")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for model in self.models.values():
            if model.loading is not None:
                model.loading.cancel()
                with contextlib.suppress(BaseException):
                    await model.loading
            await self._close(model, "server stopping")

    def drain(self) -> int:
        """No new work anywhere; returns the sequences still in flight."""
        self.draining = True
        for model in self.loaded():
            model.drain()
        return self.in_flight()

    # Reading

    def get(self, name: str) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            served = ", ".join(f"'{m}'" for m in self.models)
            raise ApiError(
                404,
                f"The model '{name}' does not exist; this server serves {served}.",
                param="model",
                code="model_not_found",
            )
        return model

    def loaded(self) -> list[Loaded]:
        return [m.loaded for m in self.models.values() if m.loaded is not None]

    def in_flight(self) -> int:
        return sum(model.in_flight() for model in self.loaded())

    def used_bytes(self, besides: ServedModel | None = None) -> int:
        return sum(
            m.footprint()
            for m in self.models.values()
            if m is not besides and m.status != "unloaded"
        )

    # Routing

    @contextlib.asynccontextmanager
    async def use(
        self, name: str, kind: Kind, keep_alive_s: float | None = None
    ) -> AsyncIterator[tuple[Loaded, Lease]]:
        """The loaded model `name` for one request, loading it first if need be (waiting
        up to load_timeout_s). The lease is released on exit unless the caller handed it on
        (to an admission ticket) and released it itself."""
        model = self.get(name)
        if model.kind != kind:
            raise ApiError(
                400,
                f"The model '{name}' is an {model.kind} model; it does not serve this endpoint.",
                param="model",
                code="model_not_supported",
            )
        if self.draining:
            raise ApiError(
                503,
                "The server is shutting down.",
                code="server_shutting_down",
                headers={"Retry-After": "1"},
            )
        lease = Lease(model)
        try:
            if keep_alive_s is not None:
                model.keep_alive_s = keep_alive_s
            yield await self._ready(model), lease
        finally:
            lease.end_of_route()

    async def _ready(self, model: ServedModel) -> Loaded:
        try:
            async with asyncio.timeout(self.settings.load_timeout_s):
                while model.loaded is None:
                    task = model.loading or await self._begin_load(model)
                    if task is not None:
                        await asyncio.shield(task)
                return model.loaded
        except TimeoutError:
            raise ApiError(
                503,
                f"The model '{model.id}' is still loading; retry shortly.",
                code="model_loading",
                headers={"Retry-After": "5"},
            ) from None
        except ApiError:
            raise
        except Exception as exc:
            raise ApiError(
                503,
                f"The model '{model.id}' could not be loaded: {exc}",
                code="model_load_failed",
                headers={"Retry-After": "10"},
            ) from exc

    # Loading and unloading

    def _fits_without_eviction(self, model: ServedModel) -> bool:
        cap = self.settings.max_loaded_models
        count = sum(1 for m in self.models.values() if m.status != "unloaded")
        if cap and count >= cap:
            return False
        budget = self.settings.models_memory_gb * GIB
        return not budget or self.used_bytes(model) + model.footprint() <= budget

    async def _begin_load(self, model: ServedModel) -> asyncio.Task[Loaded] | None:
        """The model's load, begun unless another request began it (or finished it: None)
        while this one waited for the lock."""
        async with self._room:
            if model.loading is not None or model.loaded is not None:
                return model.loading
            await self._make_room(model)
            model.status = "loading"
            model.loading = asyncio.create_task(self._load(model), name=f"load-{model.id}")
            self._on_change(model)
            return model.loading

    async def _make_room(self, model: ServedModel) -> None:
        """Unload least recently used idle models until `model` fits the cap and the
        budget; a 503 when only busy models stand in the way."""
        while not self._fits_without_eviction(model):
            idle = [
                m
                for m in self.models.values()
                if m is not model and m.status == "loaded" and not m.busy()
            ]
            if not idle:
                raise ApiError(
                    503,
                    f"The model '{model.id}' cannot be loaded now: the loaded models are all "
                    "busy and the model cap or memory budget is reached; retry shortly.",
                    code="model_capacity",
                    headers={"Retry-After": "5"},
                )
            victim = min(idle, key=lambda m: m.last_used)
            await self._close(victim, f"making room for {model.id}")

    async def _load(self, model: ServedModel) -> Loaded:
        model.status = "loading"
        started = time.monotonic()
        logger.info("Loading model %s from %s", model.id, model.source.path)
        try:
            loaded = await self._loaders[model.kind](model.source, model.id)
        except BaseException as exc:
            model.status, model.loading = "unloaded", None
            model.last_error = str(exc)
            self._on_change(model)
            if not isinstance(exc, asyncio.CancelledError):
                logger.error("Model %s failed to load: %s", model.id, exc)
            raise
        if self.draining:
            loaded.drain()
        model.loaded, model.status, model.loading, model.last_error = loaded, "loaded", None, None
        model.idle_since = model.last_used = time.monotonic()
        self._on_change(model)
        logger.info(
            "Loaded model %s in %.1f s (%.0f MiB)",
            model.id,
            time.monotonic() - started,
            model.footprint() / 1024**2,
        )
        return loaded

    async def load(self, name: str) -> ServedModel:
        """The admin load: returns once loaded (or raises as a request would)."""
        model = self.get(name)
        lease = Lease(model)  # held so that making room for others cannot take it back
        try:
            await self._ready(model)
        finally:
            lease.release()
        return model

    async def unload(self, name: str) -> ServedModel:
        """The admin unload: refused (409) while requests hold the model."""
        model = self.get(name)
        async with self._room:
            if model.loading is not None:
                raise ApiError(
                    409, f"The model '{name}' is loading.", code="model_busy", param="model"
                )
            if model.busy():
                raise ApiError(
                    409,
                    f"The model '{name}' is serving {model.holders} request(s); unload it "
                    "when they end.",
                    code="model_busy",
                    param="model",
                )
            await self._close(model, "unloaded by the admin")
        return model

    async def _close(self, model: ServedModel, why: str) -> None:
        loaded = model.loaded
        if loaded is None:
            return
        model.loaded, model.status = None, "unloaded"
        self._on_change(model)
        logger.info("Unloading model %s: %s", model.id, why)
        await loaded.close()

    async def _reap(self) -> None:
        """Unloads the models idle longer than their keep-alive."""
        while True:
            await asyncio.sleep(_REAPER_PERIOD_S)
            now = time.monotonic()
            for model in list(self.models.values()):
                if (
                    model.status == "loaded"
                    and model.keep_alive_s >= 0
                    and not model.busy()
                    and now - model.idle_since >= model.keep_alive_s
                ):
                    async with self._room:
                        if model.status == "loaded" and not model.busy():
                            await self._close(model, f"idle for {model.keep_alive_s:g} s")
