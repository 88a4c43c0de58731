"""POST /v1/messages and /v1/messages/count_tokens: translate, delegate, answer
(app/dialects/anthropic.py). Errors on these paths are Anthropic's (app/errors.py);
`anthropic-version`, `anthropic-beta` and `?beta=true` are accepted and need nothing."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.common import State, admit, generation_model, respond
from app.dialects import anthropic
from app.protocol.anthropic import (
    AnthropicError,
    Message,
    MessageCountTokensRequest,
    MessageCreateRequest,
    MessageTokensCount,
)

logger = logging.getLogger(__name__)
router = APIRouter()

# Anthropic's statuses: 529 for an engine that is restarting, 504 at the time limit.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": AnthropicError} for code in (400, 401, 404, 413, 429, 500, 504, 529)
}


@router.post("/v1/messages", response_model=Message, responses=ERROR_RESPONSES)
async def create_message(body: MessageCreateRequest, request: Request, state: State) -> Response:
    if body.model_extra:
        logger.debug("Ignoring unknown request fields: %s", sorted(body.model_extra))
    async with generation_model(state, request, body.model) as serving:
        plan = anthropic.validate(body, serving.model.context)
        run = await admit(state, serving, plan, request, "msg_")
        renderer = anthropic.MessagesRenderer(run)
        return await respond(request, run, renderer, bool(body.stream), ping=anthropic.ping)


@router.post(
    "/v1/messages/count_tokens", response_model=MessageTokensCount, responses=ERROR_RESPONSES
)
async def count_tokens(
    body: MessageCountTokensRequest, request: Request, state: State
) -> MessageTokensCount:
    if body.model_extra:
        logger.debug("Ignoring unknown request fields: %s", sorted(body.model_extra))
    async with generation_model(state, request, body.model) as serving:
        count = anthropic.count_tokens(body, serving.model.context)
    return MessageTokensCount(input_tokens=count)
