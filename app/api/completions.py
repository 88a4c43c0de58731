"""POST /v1/completions: the legacy text completions (app/dialects/openai_completions.py)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.common import (
    ERROR_RESPONSES,
    State,
    engine_ready,
    model_context,
    record,
    respond,
    served_model,
)
from app.core.run import GenerationRun
from app.dialects import openai_completions
from app.protocol.openai_completions import Completion, CompletionRequest

logger = logging.getLogger(__name__)
router = APIRouter()


@router.post("/v1/completions", response_model=Completion, responses=ERROR_RESPONSES)
async def completions(body: CompletionRequest, request: Request, state: State) -> Response:
    served_model(state, body.model)
    engine_ready(state)
    if body.model_extra:
        logger.debug("Ignoring unknown request fields: %s", sorted(body.model_extra))
    plan = openai_completions.validate(body, model_context(state))
    run = GenerationRun(state, plan, record(request), "cmpl")
    texts = [p if isinstance(p, str) else state.text.decode(p) for p in body.prompts()]
    renderer = openai_completions.CompletionRenderer(run, body, texts)
    return await respond(request, run, renderer, bool(body.stream))
