"""POST /v1/chat/completions: translate, delegate, answer (app/dialects/openai_chat.py)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.common import (
    ERROR_RESPONSES,
    State,
    admit,
    engine_ready,
    model_context,
    respond,
    served_model,
)
from app.dialects import openai_chat
from app.protocol.openai_chat import ChatCompletion, ChatCompletionRequest

logger = logging.getLogger(__name__)
router = APIRouter()


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=ERROR_RESPONSES)
async def chat_completions(body: ChatCompletionRequest, request: Request, state: State) -> Response:
    served_model(state, body.model)
    engine_ready(state)
    if body.model_extra:
        logger.debug("Ignoring unknown request fields: %s", sorted(body.model_extra))
    plan = openai_chat.validate(body, model_context(state))
    run = await admit(state, plan, request, "chatcmpl-")
    return await respond(request, run, openai_chat.ChatRenderer(run, body), bool(body.stream))
