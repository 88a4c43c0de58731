"""POST /v1/chat/completions: OpenAI request in, engine request out, OpenAI response back."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse

from app.api.deps import State, served_model
from app.chat_format import PromptError, Turn
from app.engine.base import EngineError, SamplingParams
from app.errors import ApiError
from app.generation import TextDelta, generate_text
from app.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChunkChoice,
    ChunkDelta,
    ErrorResponse,
    Usage,
    new_id,
    now,
)
from app.settings import Settings
from app.state import ServerState

logger = logging.getLogger(__name__)
router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 500, 503)
}


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=_ERRORS)
async def chat_completions(body: ChatCompletionRequest, request: Request, state: State) -> Response:
    served_model(state, body.model)
    refuse_unsupported(body, state.settings)
    if body.model_extra:
        logger.debug("Ignoring unknown request fields: %s", sorted(body.model_extra))
    try:
        prompt = state.text.formatter.render(to_turns(body.messages))
    except PromptError as exc:
        raise ApiError(400, str(exc), param=exc.param) from exc
    prompt_ids = state.text.encode(prompt)
    params = sampling_params(body, state, len(prompt_ids))
    call = ChatCall(state, body, prompt_ids, params, request)
    if body.stream:
        stream: Response = EventSourceResponse(call.stream(), sep="\n", ping=15)
        return stream
    return await call.complete()


def to_turns(messages: list[ChatMessage]) -> list[Turn]:
    turns = []
    for i, message in enumerate(messages):
        if message.content is None and message.role != "assistant":
            raise ApiError(
                400,
                f"messages[{i}].content must be a string or a list of text parts, not null.",
                param=f"messages[{i}].content",
                code="invalid_value",
            )
        role = "system" if message.role == "developer" else message.role
        turns.append(Turn(role, message.text()))
    return turns


def refuse_unsupported(body: ChatCompletionRequest, settings: Settings) -> None:
    """Parameters this server cannot honour yet are refused, never silently ignored."""

    def refuse(param: str, what: str) -> None:
        raise ApiError(
            400,
            f"{what} is not supported by this server.",
            param=param,
            code="unsupported_parameter",
        )

    if body.n not in (None, 1):
        refuse("n", "n > 1")
    if body.logprobs or body.top_logprobs:
        refuse("logprobs", "logprobs")
    if body.logit_bias:
        refuse("logit_bias", "logit_bias")
    if body.tools:
        refuse("tools", "tools")
    if body.tool_choice not in (None, "none"):
        refuse("tool_choice", "tool_choice")
    if body.response_format and body.response_format.get("type", "text") != "text":
        refuse("response_format", f"response_format {body.response_format.get('type')!r}")
    if body.stream_options is not None and not body.stream:
        raise ApiError(
            400,
            "stream_options is only allowed when stream is true.",
            param="stream_options",
            code="invalid_value",
        )
    if len(body.messages) > settings.max_messages:
        raise ApiError(
            400,
            f"At most {settings.max_messages} messages are allowed.",
            param="messages",
            code="too_many_messages",
        )
    if len(body.stop_list()) > settings.max_stop_sequences:
        raise ApiError(
            400,
            f"At most {settings.max_stop_sequences} stop sequences are allowed.",
            param="stop",
            code="too_many_stop_sequences",
        )


def sampling_params(
    body: ChatCompletionRequest, state: ServerState, prompt_tokens: int
) -> SamplingParams:
    context = state.text.context_length
    requested = body.token_limit()
    room = context - prompt_tokens
    if room <= 0 or (requested is not None and requested > room):
        asked = requested if requested is not None else 0
        raise ApiError(
            400,
            f"This model's maximum context length is {context} tokens. However, you "
            f"requested {prompt_tokens + asked} tokens ({prompt_tokens} in the messages, "
            f"{asked} in the completion). Please reduce the length of the messages or "
            f"completion.",
            param="messages",
            code="context_length_exceeded",
        )
    temperature = 1.0 if body.temperature is None else body.temperature
    return SamplingParams(
        max_new_tokens=requested if requested is not None else room,
        temperature=temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        seed=body.seed if body.seed is not None else secrets.randbits(31),
        frequency_penalty=body.frequency_penalty or 0.0,
        presence_penalty=body.presence_penalty or 0.0,
        stop_token_ids=state.text.eos_token_ids,
        ignore_eos=bool(body.ignore_eos),
    )


class ChatCall:
    """One accepted chat request, answered either as one JSON body or as an SSE stream."""

    def __init__(
        self,
        state: ServerState,
        body: ChatCompletionRequest,
        prompt_ids: list[int],
        params: SamplingParams,
        request: Request,
    ) -> None:
        self.state = state
        self.body = body
        self.prompt_ids = prompt_ids
        self.params = params
        self.request = request
        self.id = new_id("chatcmpl")
        self.created = now()
        self.started = time.monotonic()
        self.completion_tokens = 0

    def _deltas(self) -> AsyncIterator[TextDelta]:
        return generate_text(
            self.state.engine, self.state.text, self.prompt_ids, self.params, self.body.stop_list()
        )

    def usage(self) -> Usage:
        prompt = len(self.prompt_ids)
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=self.completion_tokens,
            total_tokens=prompt + self.completion_tokens,
        )

    def _log(self, outcome: str) -> None:
        logger.info(
            "%s %s prompt_tokens=%d completion_tokens=%d elapsed=%.3fs",
            self.id,
            outcome,
            len(self.prompt_ids),
            self.completion_tokens,
            time.monotonic() - self.started,
        )

    async def complete(self) -> Response:
        collect = asyncio.ensure_future(self._collect())
        gone = asyncio.ensure_future(_client_gone(self.request))
        try:
            await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not collect.done():
            collect.cancel()  # closes the generation, which cancels it in the engine
            self._log("cancelled: client disconnected")
            return Response(status_code=499)
        try:
            text, finish = collect.result()
        except EngineError as exc:
            self._log(f"failed: {exc}")
            raise ApiError(503, f"Generation failed: {exc}", code="engine_unavailable") from exc
        self._log(f"finished: {finish}")
        result = ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.state.model_id,
            system_fingerprint=self.state.system_fingerprint,
            choices=[
                ChatChoice(index=0, finish_reason=finish, message=AssistantMessage(content=text))
            ],
            usage=self.usage(),
        )
        return JSONResponse(result.model_dump(mode="json"))

    async def _collect(self) -> tuple[str, Any]:
        parts: list[str] = []
        async for delta in self._deltas():
            parts.append(delta.text)
            self.completion_tokens = delta.completion_tokens
            if delta.finish_reason is not None:
                return "".join(parts), delta.finish_reason
        raise EngineError("the engine ended the generation without a finish reason")

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> dict[str, str]:
        chunk = ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.state.model_id,
            system_fingerprint=self.state.system_fingerprint,
            choices=choices,
            usage=usage,
        )
        payload = chunk.model_dump(mode="json")
        if not self._include_usage():
            del payload["usage"]  # OpenAI sends the key only to clients that asked for usage
        return {"data": json.dumps(payload, ensure_ascii=False, separators=(",", ":"))}

    def _include_usage(self) -> bool:
        options = self.body.stream_options
        return bool(options and options.include_usage)

    async def stream(self) -> AsyncIterator[dict[str, str]]:
        finish: str | None = None
        try:
            yield self._chunk(
                [ChunkChoice(index=0, delta=ChunkDelta(role="assistant", content=""))]
            )
            async for delta in self._deltas():
                self.completion_tokens = delta.completion_tokens
                if delta.text or delta.finish_reason:
                    choice = ChunkChoice(
                        index=0,
                        delta=ChunkDelta(content=delta.text or None),
                        finish_reason=delta.finish_reason,
                    )
                    yield self._chunk([choice])
                finish = delta.finish_reason
            if self._include_usage():
                yield self._chunk([], usage=self.usage())
            self._log(f"streamed: {finish}")
        except EngineError as exc:
            self._log(f"failed mid-stream: {exc}")
            error = ApiError(503, f"Generation failed: {exc}", code="engine_unavailable")
            yield {"data": json.dumps(error.payload())}
        except asyncio.CancelledError:
            self._log("cancelled: client disconnected")
            raise
        yield {"data": "[DONE]"}


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects. The body has already been read, so the next
    ASGI message can only be the disconnect."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
