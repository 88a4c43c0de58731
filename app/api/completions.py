"""POST /v1/completions: the legacy text completions (app/dialects/openai_completions.py)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.common import ERROR_RESPONSES, State, admit, generation_model, respond
from app.dialects import openai_completions
from app.protocol.openai_completions import Completion, CompletionRequest

logger = logging.getLogger(__name__)
router = APIRouter()


@router.post("/v1/completions", response_model=Completion, responses=ERROR_RESPONSES)
async def completions(body: CompletionRequest, request: Request, state: State) -> Response:
    if body.model_extra:
        logger.debug("Ignoring unknown request fields: %s", sorted(body.model_extra))
    async with generation_model(state, request, body.model, body.keep_alive) as serving:
        plan = openai_completions.validate(body, serving.model.context)
        run = await admit(state, serving, plan, request, "cmpl-")
        renderer = openai_completions.CompletionRenderer(run, body)
        return await respond(request, run, renderer, bool(body.stream))
