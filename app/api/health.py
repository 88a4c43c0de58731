from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.pool import ServedModel
from app.protocol.ovchat import Health, ModelHealth
from app.state import ServerState

router = APIRouter()


def model_health(model: ServedModel) -> ModelHealth:
    loaded = model.loaded
    return ModelHealth(
        status=model.status,
        kind=model.kind,
        ready=loaded is not None and loaded.is_ready(),
        engine=loaded.engine_name if loaded is not None else None,
        in_flight=loaded.in_flight() if loaded is not None else 0,
        engine_running=loaded.stats().running if loaded is not None else 0,
        pid=loaded.pid() if loaded is not None else None,
        memory_bytes=model.footprint() if loaded is not None else None,
        last_error=model.last_error,
    )


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(request: Request) -> JSONResponse:
    """Ready: every loaded model's engine is up and the server is not draining; models
    that load on demand do not make it unready. It never waits on generation (engines
    run in other processes), so it stays fast under load."""
    state: ServerState | None = getattr(request.app.state, "ovchat", None)
    if state is None:
        return JSONResponse(Health(status="loading").model_dump(), status_code=503)
    models = {model.id: model_health(model) for model in state.models.models.values()}
    ready = not state.models.draining and all(
        m.ready for m in models.values() if m.status == "loaded"
    )
    body = Health(
        status="ok" if ready else "unavailable",
        in_flight=state.models.in_flight(),
        draining=state.models.draining,
        models=models,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}
