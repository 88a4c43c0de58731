from __future__ import annotations

from fastapi import APIRouter

from app.api.common import State, served_model
from app.protocol.openai_common import ModelCard, ModelList

router = APIRouter()


@router.get("/v1/models", response_model=ModelList)
async def list_models(state: State) -> ModelList:
    return ModelList(data=[ModelCard(id=state.model_id, created=state.created)])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def get_model(model_id: str, state: State) -> ModelCard:
    served_model(state, model_id)
    return ModelCard(id=state.model_id, created=state.created)
