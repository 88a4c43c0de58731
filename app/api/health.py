from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.protocol.ovchat import Health
from app.state import ServerState

router = APIRouter()


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(request: Request) -> JSONResponse:
    """Ready: the model is loaded and the engine is up. It never waits on generation (the
    engine runs in another process), so it stays fast under load."""
    state: ServerState | None = getattr(request.app.state, "ovchat", None)
    if state is None:
        return JSONResponse(Health(status="loading").model_dump(), status_code=503)
    ready = state.engine.is_ready() and not state.admission.draining
    body = Health(
        status="ok" if ready else "unavailable",
        model=state.model_id,
        engine=state.engine.name,
        in_flight=state.admission.in_flight,
        engine_running=state.engine.running(),
        draining=state.admission.draining,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}
