"""vLLM's /tokenize and /detokenize: what the server would feed the model, and back."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.common import ERROR_RESPONSES, State, generation_model
from app.chat_format import PromptError
from app.core.plan import ModelContext
from app.core.schema import SchemaError
from app.dialects.openai_chat import encode_messages, tool_plan
from app.errors import ApiError
from app.protocol.vllm import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)

router = APIRouter()


@router.post("/tokenize", response_model=TokenizeResponse, responses=ERROR_RESPONSES)
async def tokenize(body: TokenizeRequest, request: Request, state: State) -> TokenizeResponse:
    async with generation_model(state, request, body.model) as serving:
        return _tokenize(body, serving.model.context)


def _tokenize(body: TokenizeRequest, context: ModelContext) -> TokenizeResponse:
    text = context.text
    if body.messages is not None:
        try:
            tools = tool_plan(body.tools, body.tool_choice, None, context)
            # Encoded exactly as a chat request is, message content as text: the same ids.
            tokens = encode_messages(
                text, body.messages, tools, add_generation_prompt=body.add_generation_prompt
            )
        except SchemaError as exc:
            raise ApiError(400, str(exc), param=exc.param, code="invalid_value") from exc
        except PromptError as exc:
            raise ApiError(400, str(exc), param=exc.param) from exc
    else:
        tokens = text.encode(body.prompt or "", add_special_tokens=body.add_special_tokens)
    return TokenizeResponse(tokens=tokens, count=len(tokens), max_model_len=text.context_length)


@router.post("/detokenize", response_model=DetokenizeResponse, responses=ERROR_RESPONSES)
async def detokenize(body: DetokenizeRequest, request: Request, state: State) -> DetokenizeResponse:
    async with generation_model(state, request, body.model) as serving:
        text = serving.model.text
    vocab = text.vocab_size
    if any(token >= vocab for token in body.tokens):
        raise ApiError(
            400,
            f"tokens must be below the vocabulary size {vocab}.",
            param="tokens",
            code="invalid_value",
        )
    return DetokenizeResponse(prompt=text.decode(body.tokens))
