"""What every route shares: the server state as a dependency, the served-model and
engine-ready checks, the error responses they document, and how an admitted run is
answered (one JSON body, or a stream)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request
from fastapi.responses import Response
from sse_starlette import ServerSentEvent
from starlette.background import BackgroundTask

from app.api.disconnect import until_disconnect
from app.core import sse
from app.core.plan import GenerationPlan, Limits, ModelContext
from app.core.run import GenerationRun, timeout_error
from app.engine.base import RequestRejected
from app.errors import ApiError
from app.protocol.openai_common import ErrorResponse
from app.state import ServerState

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 500, 503)
}


async def server_state(request: Request) -> ServerState:
    state: ServerState | None = getattr(request.app.state, "ovchat", None)
    if state is None:
        raise ApiError(503, "The model is still loading.", code="model_loading")
    return state


State = Annotated[ServerState, Depends(server_state)]


def served_model(state: ServerState, requested: str) -> None:
    if requested != state.model_id:
        raise ApiError(
            404,
            f"The model '{requested}' does not exist; this server serves '{state.model_id}'.",
            param="model",
            code="model_not_found",
        )


def engine_ready(state: ServerState) -> None:
    if not state.engine.is_ready():
        raise ApiError(
            503,
            "The inference engine is restarting; retry shortly.",
            code="engine_unavailable",
            headers={"Retry-After": "2"},
        )


def model_context(state: ServerState) -> ModelContext:
    settings = state.settings
    return ModelContext(
        text=state.text,
        engine_name=state.engine.name,
        capabilities=state.engine.capabilities,
        limits=Limits(
            max_n=settings.max_n,
            max_stop_sequences=settings.max_stop_sequences,
            max_messages=settings.max_messages,
            max_tool_calls=settings.max_tool_calls,
        ),
    )


def record(request: Request) -> dict[str, Any]:
    """The request's entry for the access log line (app/middleware.py)."""
    entry: dict[str, Any] = request.scope.setdefault("state", {})
    return entry


class DialectRenderer(sse.Renderer, Protocol):
    """What a dialect's renderer offers a route: the whole response, or the stream."""

    async def complete(self) -> Response: ...


async def admit(
    state: ServerState, plan: GenerationPlan, request: Request, id_prefix: str
) -> GenerationRun:
    """The plan admitted (429 or 503 when it cannot be), then what only the engine can
    judge (a grammar that must compile) checked before any of it reaches the engine. The
    check holds the request's admission slot, so checks are bounded as requests are, and
    the request's time limit applies to it."""
    run = GenerationRun(state, plan, record(request), id_prefix)
    try:
        async with asyncio.timeout(state.settings.request_timeout_s):
            await _check(state, plan)
    except TimeoutError as exc:
        run.ticket.release()
        raise timeout_error(state.settings.request_timeout_s) from exc
    except BaseException:
        run.ticket.release()
        raise
    return run


async def _check(state: ServerState, plan: GenerationPlan) -> None:
    for params in {choice.params.json_schema: choice.params for choice in plan.choices}.values():
        try:
            await state.engine.check(params)
        except RequestRejected as exc:
            raise ApiError(
                400,
                f"The schema cannot be used for constrained decoding: {exc}",
                param=plan.schema_param,
                code="invalid_value",
            ) from exc


async def respond(
    request: Request,
    run: GenerationRun,
    renderer: DialectRenderer,
    stream: bool,
    ping: Callable[[], ServerSentEvent] | None = None,
) -> Response:
    """`ping`: the dialect's keep-alive event, where its clients expect one rather than
    sse-starlette's comment line."""
    if stream:
        # The background task frees the slot even if the client left before the
        # stream's first step.
        return sse.EventStream(
            sse.stream(run, renderer),
            sep="\n",
            ping=15,
            ping_message_factory=ping,
            background=BackgroundTask(run.ticket.release_async),
        )
    return await until_disconnect(request, renderer.complete(), run.ticket.release)
