from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.errors import ApiError
from app.state import ServerState


def server_state(request: Request) -> ServerState:
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
