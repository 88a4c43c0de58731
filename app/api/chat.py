"""POST /v1/chat/completions: translate, delegate, answer (app/dialects/openai_chat.py)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.common import ERROR_RESPONSES, State, admit, generation_model, respond
from app.dialects import openai_chat
from app.protocol.openai_chat import ChatCompletion, ChatCompletionRequest

logger = logging.getLogger(__name__)
router = APIRouter()


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=ERROR_RESPONSES)
async def chat_completions(body: ChatCompletionRequest, request: Request, state: State) -> Response:
    if body.model_extra:
        logger.debug("Ignoring unknown request fields: %s", sorted(body.model_extra))
    async with generation_model(state, request, body.model, body.keep_alive) as serving:
        plan = openai_chat.validate(body, serving.model.context)
        run = await admit(state, serving, plan, request, "chatcmpl-")
        renderer = openai_chat.ChatRenderer(run, body)
        return await respond(request, run, renderer, bool(body.stream))
