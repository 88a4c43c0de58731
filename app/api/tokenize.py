"""vLLM's /tokenize and /detokenize: what the server would feed the model, and back."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.chat import ERROR_RESPONSES, to_turns
from app.api.deps import State, served_model
from app.chat_format import PromptError
from app.errors import ApiError
from app.protocol import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse

router = APIRouter()


@router.post("/tokenize", response_model=TokenizeResponse, responses=ERROR_RESPONSES)
async def tokenize(body: TokenizeRequest, state: State) -> TokenizeResponse:
    if body.model is not None:
        served_model(state, body.model)
    if (body.prompt is None) == (body.messages is None):
        raise ApiError(
            400, "Give exactly one of prompt and messages.", param="prompt", code="invalid_value"
        )
    if body.messages is not None:
        if not body.messages:
            raise ApiError(400, "messages must not be empty.", param="messages")
        try:
            # Rendered exactly as a chat request renders them, so counts agree.
            text = state.text.formatter.render(
                to_turns(body.messages), add_generation_prompt=body.add_generation_prompt
            )
        except PromptError as exc:
            raise ApiError(400, str(exc), param=exc.param) from exc
        tokens = state.text.encode(text)
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
