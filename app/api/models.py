"""GET /v1/models: every servable model, loaded or not; the admin's load and unload
(llama.cpp's router-mode paths), open only to the admin key (app/middleware.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.common import ERROR_RESPONSES, State
from app.pool import ServedModel
from app.protocol.openai_common import ErrorResponse, ModelCard, ModelList
from app.protocol.ovchat import ModelAction

router = APIRouter()


def card(model: ServedModel) -> ModelCard:
    return ModelCard(
        id=model.id,
        created=model.created,
        status=model.status,
        kind=model.kind,
        endpoints=list(model.endpoints),
        context_length=model.context_length,
    )


@router.get("/v1/models", response_model=ModelList)
async def list_models(state: State) -> ModelList:
    return ModelList(data=[card(model) for model in state.models.models.values()])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=ERROR_RESPONSES)
async def get_model(model_id: str, state: State) -> ModelCard:
    return card(state.models.get(model_id))


ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = ERROR_RESPONSES | {
    code: {"model": ErrorResponse} for code in (403, 409)
}


@router.post("/models/load", response_model=ModelCard, responses=ADMIN_RESPONSES)
async def load_model(body: ModelAction, state: State) -> ModelCard:
    """Loads the model (making room as a request would) and answers once it is loaded."""
    return card(await state.models.load(body.model))


@router.post("/models/unload", response_model=ModelCard, responses=ADMIN_RESPONSES)
async def unload_model(body: ModelAction, state: State) -> ModelCard:
    """Unloads an idle model (409 while requests hold it); its next request loads it."""
    return card(await state.models.unload(body.model))
