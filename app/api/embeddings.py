"""POST /v1/embeddings: translate, delegate, answer (app/dialects/openai_embeddings.py)."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request

from app.api.common import ERROR_RESPONSES, State, record
from app.dialects import openai_embeddings
from app.engine.base import EngineError
from app.errors import ApiError
from app.protocol.openai_embeddings import CreateEmbeddingRequest, CreateEmbeddingResponse
from app.state import EmbeddingModel

logger = logging.getLogger(__name__)
router = APIRouter()


@router.post("/v1/embeddings", response_model=CreateEmbeddingResponse, responses=ERROR_RESPONSES)
async def create_embeddings(
    body: CreateEmbeddingRequest, request: Request, state: State
) -> CreateEmbeddingResponse:
    if body.model_extra:
        logger.debug("Ignoring unknown request fields: %s", sorted(body.model_extra))
    entry = record(request)
    entry["model"] = state.models.get(body.model).id  # 404 first: see generation_model
    started = time.monotonic()
    async with state.models.use(body.model, "embedding", body.keep_alive) as (loaded, _):
        assert isinstance(loaded, EmbeddingModel)
        plan = openai_embeddings.validate(body, loaded.info)
        ticket = loaded.admission.admit(1)
        try:
            vectors = await loaded.engine.embed(plan.inputs)
        except EngineError as exc:
            raise ApiError(503, f"Embedding failed: {exc}", code="engine_unavailable") from exc
        finally:
            ticket.release()
    state.metrics.observe_embedding(body.model, plan.prompt_tokens, time.monotonic() - started)
    entry["usage"] = {"inputs": len(plan.inputs), "prompt_tokens": plan.prompt_tokens}
    return openai_embeddings.render(plan, vectors, body.model)
