"""The FastAPI application: the lifespan loads the model once into one engine."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from app import __version__, errors, openapi
from app.admission import Admission
from app.api import (
    chat,
    completions,
    embeddings,
    health,
    messages,
    models,
    page,
    responses,
    tokenize,
)
from app.api import metrics as metrics_api
from app.core.plan import Limits, ModelContext
from app.core.run import now
from app.embedmodel import EmbeddingModelInfo
from app.engine.base import Engine
from app.engine.embedding import EmbeddingEngine
from app.engine.registry import build_engine
from app.metrics import Metrics
from app.middleware import (
    AccessLogMiddleware,
    AuthMiddleware,
    LimitsMiddleware,
    RequestIdMiddleware,
)
from app.modelstore import store
from app.pool import Loader, ModelPool
from app.settings import Settings
from app.state import EmbeddingModel, GenerationModel, ServerState
from app.storage.responses import open_store
from app.textmodel import TextModel

logger = logging.getLogger(__name__)

T = TypeVar("T")

EngineFactory = Callable[[Settings, store.ResolvedModel], Engine]
EmbeddingFactory = Callable[[Settings, store.ResolvedModel], EmbeddingEngine]


def _fingerprint(model: store.ResolvedModel, engine: str) -> str:
    seed = f"{__version__}|{engine}|{model.path}".encode()
    manifest = model.path / store.MANIFEST
    if manifest.is_file():
        seed += manifest.read_bytes()
    return "fp_" + hashlib.sha256(seed).hexdigest()[:12]


def _context(settings: Settings, text: TextModel, engine: Engine) -> ModelContext:
    return ModelContext(
        text=text,
        engine_name=engine.name,
        capabilities=engine.capabilities,
        limits=Limits(
            max_n=settings.max_n,
            max_stop_sequences=settings.max_stop_sequences,
            max_messages=settings.max_messages,
            max_tool_calls=settings.max_tool_calls,
        ),
    )


class _Starting(Protocol):
    async def start(self) -> None: ...

    async def wait_ready(self) -> None: ...

    async def close(self) -> None: ...


async def _start_beside(engine: _Starting, read: Callable[[], T]) -> T:
    """Starts `engine` and, while it loads its model, runs `read` (the tokenizer and what
    the server needs of the model) in a thread; a failure of either closes the engine.
    An in-process engine has loaded in start(): a tokenizer that needs transformers must
    not import it from a second thread meanwhile."""
    await engine.start()
    try:
        found = await asyncio.to_thread(read)
        await engine.wait_ready()
    except BaseException:
        await engine.close()
        raise
    return found


def _generation_loader(
    settings: Settings,
    models: list[store.ResolvedModel],
    engine_factory: EngineFactory,
    metrics: Metrics,
) -> Loader:
    """Every generation model's engine is built (and so checked: settings it cannot
    honour, an absent device) before the server binds; each load after an unload builds
    a new one."""
    prepared = {m.path: engine_factory(settings, m) for m in models if m.kind == "generation"}

    async def load(model: store.ResolvedModel, served_id: str) -> GenerationModel:
        engine = prepared.pop(model.path, None) or engine_factory(settings, model)
        step = metrics.step.labels(served_id)
        engine.on_step(step.observe)
        text = await _start_beside(engine, lambda: TextModel.load(model.path))
        return GenerationModel(
            id=served_id,
            engine=engine,
            text=text,
            admission=Admission(settings.max_num_seqs, settings.max_queue),
            context=_context(settings, text, engine),
            system_fingerprint=_fingerprint(model, engine.name),
        )

    return load


def build_embedding_engine(settings: Settings, model: store.ResolvedModel) -> EmbeddingEngine:
    from app.engine.device import resolve_device

    return EmbeddingEngine(
        model.path, resolve_device(settings.device), settings.engine_properties()
    )


def _embedding_loader(settings: Settings, factory: EmbeddingFactory) -> Loader:
    async def load(model: store.ResolvedModel, served_id: str) -> EmbeddingModel:
        engine = factory(settings, model)
        info = await _start_beside(engine, lambda: EmbeddingModelInfo.load(model.path))
        admission = Admission(settings.max_num_seqs, settings.max_queue)
        return EmbeddingModel(id=served_id, engine=engine, info=info, admission=admission)

    return load


def create_app(
    settings: Settings,
    engine_factory: EngineFactory = build_engine,
    embedding_factory: EmbeddingFactory = build_embedding_engine,
) -> FastAPI:
    """Configuration mistakes (no such model, absent device) raise here, before the server
    binds; the models themselves are loaded in the lifespan, or on demand."""
    sources = store.resolve_all(settings.model, settings.model_store, settings.all_models)
    for source in sources:
        logger.info(
            "Serving %s (%s) from %s (%s)", source.name, source.kind, source.path, source.reason
        )
    metrics = Metrics()
    loaders: dict[store.Kind, Loader] = {
        "generation": _generation_loader(settings, sources, engine_factory, metrics),
        "embedding": _embedding_loader(settings, embedding_factory),
    }
    pool = ModelPool(settings, sources, loaders, on_change=metrics.model_changed)
    metrics.watch_models(pool)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # In a worker thread: a shared database is a network round trip or several away.
        response_store = await asyncio.to_thread(
            open_store,
            settings.state_dir,
            settings.responses_max_stored,
            settings.responses_max_age_s,
            settings.state_url.get_secret_value() if settings.state_url else None,
        )
        try:
            await pool.start()
        except BaseException:
            await pool.close()
            await response_store.close()
            raise
        app.state.ovchat = state = ServerState(
            settings=settings,
            models=pool,
            created=now(),
            metrics=metrics,
            responses=response_store,
        )
        loaded = [m.id for m in pool.models.values() if m.status == "loaded"]
        logger.info(
            "Ready: serving %s (loaded: %s)", ", ".join(pool.models), ", ".join(loaded) or "none"
        )
        try:
            yield
        finally:
            # Background responses cannot outlive the engine: they end cancelled, stored so.
            for task in list(state.background.values()):
                task.cancel()
            await asyncio.gather(*state.background.values(), return_exceptions=True)
            app.state.ovchat = None
            await response_store.close()
            await pool.close()

    app = FastAPI(
        title="ovchat",
        version=__version__,
        description="OpenAI-compatible server for OpenVINO exports of causal LMs.",
        lifespan=lifespan,
    )
    app.state.ovchat = None
    errors.install(app)
    openapi.install(app)
    app.include_router(chat.router)
    app.include_router(completions.router)
    app.include_router(responses.router)
    app.include_router(messages.router)
    app.include_router(embeddings.router)
    app.include_router(tokenize.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(metrics_api.router)
    app.include_router(page.router)
    app.mount("/static", StaticFiles(directory=page.STATIC), name="static")
    # Starlette wraps in reverse order of addition: the last added is the outermost.
    app.add_middleware(
        LimitsMiddleware, max_bytes=settings.max_body_bytes, max_depth=settings.max_json_depth
    )
    app.add_middleware(
        AuthMiddleware,
        keys=settings.api_keys(),
        admin_keys=[key.get_secret_value() for key in settings.admin_key],
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=[
                "authorization",
                "content-type",
                "x-request-id",
                "x-api-key",  # Anthropic's SDKs send their key and version headers
                "anthropic-version",
                "anthropic-beta",
                "anthropic-dangerous-direct-browser-access",
            ],
            expose_headers=["x-request-id"],
        )
    app.add_middleware(AccessLogMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    return app


class _DrainingServer:
    """uvicorn's server, told on SIGTERM/SIGINT to stop admitting first: new requests get
    503 while the in-flight ones finish, for at most shutdown_timeout_s."""

    def __init__(self, app: FastAPI, settings: Settings) -> None:
        import uvicorn
        from sse_starlette.sse import AppStatus

        # sse-starlette would end every open stream at the first signal; in-flight
        # streams must instead run to their end (they are bounded by request_timeout_s,
        # and uvicorn's graceful timeout bounds the whole drain).
        AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]

        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            log_config=None,  # keep ovchat's logging setup
            access_log=False,  # the access middleware writes the one line per request
            timeout_graceful_shutdown=settings.shutdown_timeout_s,
        )
        app_ref = app

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: object) -> None:
                state: ServerState | None = getattr(app_ref.state, "ovchat", None)
                if state is None or state.models.draining:  # not up yet, or a second signal
                    self._exit(sig, frame)
                    return
                logger.info(
                    "Shutting down: draining %d in-flight sequences (at most %.0f s)",
                    state.models.drain(),
                    settings.shutdown_timeout_s,
                )
                # The listener stays open until the drain ends: /health answers 503 and a
                # new request 503 with Retry-After, which tells a router's health check to
                # take this replica out of rotation and its retry to go elsewhere. uvicorn
                # would close it at once, and a refused connection says nothing of why.
                threading.Thread(
                    target=self._exit_when_drained,
                    args=(state, sig, frame),
                    name="ovchat-drain",
                    daemon=True,
                ).start()

            def _exit_when_drained(self, state: ServerState, sig: int, frame: object) -> None:
                deadline = time.monotonic() + settings.shutdown_timeout_s
                while state.models.in_flight() > 0 and time.monotonic() < deadline:
                    time.sleep(0.05)
                self._exit(sig, frame)

            def _exit(self, sig: int, frame: object) -> None:
                super().handle_exit(sig, frame)  # type: ignore[arg-type]
                # uvicorn re-raises the signal after shutdown, so a drained SIGTERM would
                # exit as "killed"; a finished drain is a clean exit (0) for supervisors.
                if sig == signal.SIGTERM:
                    self._captured_signals = [
                        s for s in self._captured_signals if s != signal.SIGTERM
                    ]

        self.server = Server(config)

    def run(self) -> None:
        self.server.run()


def serve(settings: Settings) -> None:
    _DrainingServer(create_app(settings), settings).run()
