from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.errors import ApiError
from app.state import ServerState


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
