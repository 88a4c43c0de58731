"""vLLM's /tokenize and /detokenize: what the server would feed the model, and back."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.common import ERROR_RESPONSES, State, model_context, served_model
from app.chat_format import PromptError
from app.core.schema import SchemaError
from app.dialects.openai_chat import to_turns, tool_plan
from app.errors import ApiError
from app.protocol.vllm import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)

router = APIRouter()


@router.post("/tokenize", response_model=TokenizeResponse, responses=ERROR_RESPONSES)
async def tokenize(body: TokenizeRequest, state: State) -> TokenizeResponse:
    if body.model is not None:
        served_model(state, body.model)
    if body.messages is not None:
        try:
            tools = tool_plan(body.tools, body.tool_choice, None, model_context(state))
            # Encoded exactly as a chat request is, message content as text: the same ids.
            tokens = state.text.encode_chat(
                to_turns(body.messages, tools), add_generation_prompt=body.add_generation_prompt
            )
        except SchemaError as exc:
            raise ApiError(400, str(exc), param=exc.param, code="invalid_value") from exc
        except PromptError as exc:
            raise ApiError(400, str(exc), param=exc.param) from exc
    else:
        tokens = state.text.encode(body.prompt or "", add_special_tokens=body.add_special_tokens)
    return TokenizeResponse(
        tokens=tokens, count=len(tokens), max_model_len=state.text.context_length
    )


@router.post("/detokenize", response_model=DetokenizeResponse, responses=ERROR_RESPONSES)
async def detokenize(body: DetokenizeRequest, state: State) -> DetokenizeResponse:
    if body.model is not None:
        served_model(state, body.model)
    vocab = state.text.vocab_size
    if any(token >= vocab for token in body.tokens):
        raise ApiError(
            400,
            f"tokens must be below the vocabulary size {vocab}.",
            param="tokens",
            code="invalid_value",
        )
    return DetokenizeResponse(prompt=state.text.decode(body.tokens))
