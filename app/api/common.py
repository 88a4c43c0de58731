"""What every route shares: the server state as a dependency, routing a request to its
model (loaded on demand), the error responses they document, and how an admitted run is
answered (one JSON body, or a stream)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request
from fastapi.responses import Response
from sse_starlette import ServerSentEvent
from starlette.background import BackgroundTask

from app.api.disconnect import until_disconnect
from app.core import sse
from app.core.plan import GenerationPlan
from app.core.run import GenerationRun, timeout_error
from app.engine.base import Engine, RequestRejected
from app.errors import ApiError
from app.pool import Lease
from app.protocol.openai_common import ErrorResponse
from app.state import GenerationModel, ServerState

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 500, 503)
}


async def server_state(request: Request) -> ServerState:
    state: ServerState | None = getattr(request.app.state, "ovchat", None)
    if state is None:
        raise ApiError(503, "The model is still loading.", code="model_loading")
    return state


State = Annotated[ServerState, Depends(server_state)]


@dataclass(frozen=True)
class Serving:
    """The model a request was routed to, loaded, and the request's hold on it."""

    model: GenerationModel
    lease: Lease


@contextlib.asynccontextmanager
async def generation_model(
    state: ServerState, request: Request, name: str | None, keep_alive_s: float | None = None
) -> AsyncIterator[Serving]:
    """The generation model `name` (the first served when None), loaded on demand (503 with
    Retry-After past the load timeout), its engine up; unknown names are a 404."""
    name = name if name is not None else state.models.default_id
    # Named in the access log and the request metrics only once it is known to be served:
    # a label per name a client makes up would grow the metrics without bound.
    record(request)["model"] = state.models.get(name).id
    async with state.models.use(name, "generation", keep_alive_s) as (loaded, lease):
        assert isinstance(loaded, GenerationModel)
        if not loaded.engine.is_ready():
            raise ApiError(
                503,
                "The inference engine is restarting; retry shortly.",
                code="engine_unavailable",
                headers={"Retry-After": "2"},
            )
        yield Serving(loaded, lease)


def record(request: Request) -> dict[str, Any]:
    """The request's entry for the access log line (app/middleware.py)."""
    entry: dict[str, Any] = request.scope.setdefault("state", {})
    return entry


class DialectRenderer(sse.Renderer, Protocol):
    """What a dialect's renderer offers a route: the whole response, or the stream."""

    async def complete(self) -> Response: ...


async def admit(
    state: ServerState, serving: Serving, plan: GenerationPlan, request: Request, id_prefix: str
) -> GenerationRun:
    """The plan admitted by its model (429 or 503 when it cannot be), then what only the
    engine can judge (a grammar that must compile) checked before any of it reaches the
    engine. The check holds the request's admission slot, so checks are bounded as
    requests are, and the request's time limit applies to it. The admission ticket holds
    the model from here on: a stream outlives its route."""
    run = GenerationRun(state, serving.model, plan, record(request), id_prefix)
    serving.lease.keep_until(run.ticket)
    try:
        async with asyncio.timeout(state.settings.request_timeout_s):
            await _check(serving.model.engine, plan)
    except TimeoutError as exc:
        run.ticket.release()
        raise timeout_error(state.settings.request_timeout_s) from exc
    except BaseException:
        run.ticket.release()
        raise
    return run


async def _check(engine: Engine, plan: GenerationPlan) -> None:
    for params in {choice.params.grammar: choice.params for choice in plan.choices}.values():
        try:
            await engine.check(params)
        except RequestRejected as exc:
            raise ApiError(
                400,
                f"The constraint cannot be used for constrained decoding: {exc}",
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
