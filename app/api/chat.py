"""POST /v1/chat/completions: OpenAI request in, engine requests out, OpenAI response back."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse

from app.api.deps import State, served_model
from app.api.disconnect import until_disconnect
from app.api.sampling import check_context, check_stops, sampling_params
from app.chat_format import PromptError, Turn
from app.engine.base import EngineError, SamplingParams
from app.errors import ApiError
from app.generation import TextDelta, TokenLogprob, generate_choices
from app.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChoiceLogprobs,
    ChunkChoice,
    ChunkDelta,
    ChunkToolCall,
    ErrorResponse,
    ToolCall,
    Usage,
    new_id,
    now,
)
from app.protocol import TokenLogprob as WireLogprob
from app.state import ServerState
from app.structured import (
    StructuredError,
    ToolPlan,
    message_text,
    parse_tool_calls,
    plan_tools,
    response_format_schema,
)

logger = logging.getLogger(__name__)
router = APIRouter()

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 500, 503)
}


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=ERROR_RESPONSES)
async def chat_completions(body: ChatCompletionRequest, request: Request, state: State) -> Response:
    served_model(state, body.model)
    check_shape(body, state)
    if body.model_extra:
        logger.debug("Ignoring unknown request fields: %s", sorted(body.model_extra))
    try:
        plan = plan_tools(
            body.tools, body.tool_choice, body.parallel_tool_calls, state.settings.max_tool_calls
        )
        schema = (
            plan.schema if plan and plan.forced else response_format_schema(body.response_format)
        )
    except StructuredError as exc:
        raise ApiError(400, str(exc), param=exc.param, code="invalid_value") from exc
    try:
        prompt = state.text.formatter.render(to_turns(body.messages, plan))
    except PromptError as exc:
        raise ApiError(400, str(exc), param=exc.param) from exc
    prompt_ids = state.text.encode(prompt)
    budget = check_context(state, len(prompt_ids), body.token_limit(), "messages")
    params = sampling_params(
        body,
        state,
        budget,
        logprobs=bool(body.logprobs),
        json_schema=json.dumps(schema) if schema is not None else None,
    )
    call = ChatCall(state, body, prompt_ids, params, check_stops(state, body.stop_list()), plan)
    if body.stream:
        stream: Response = EventSourceResponse(call.stream(), sep="\n", ping=15)
        return stream
    return await until_disconnect(request, call.complete(), call.log)


def check_shape(body: ChatCompletionRequest, state: ServerState) -> None:
    if body.stream_options is not None and not body.stream:
        raise ApiError(
            400,
            "stream_options is only allowed when stream is true.",
            param="stream_options",
            code="invalid_value",
        )
    if body.top_logprobs is not None and not body.logprobs:
        raise ApiError(
            400,
            "top_logprobs requires logprobs to be true.",
            param="top_logprobs",
            code="invalid_value",
        )
    if body.top_logprobs:
        raise ApiError(
            400,
            "top_logprobs > 0 is not supported: the engine reports the chosen token's "
            "log-probability but not the alternatives. Use top_logprobs 0.",
            param="top_logprobs",
            code="unsupported_parameter",
        )
    if len(body.messages) > state.settings.max_messages:
        raise ApiError(
            400,
            f"At most {state.settings.max_messages} messages are allowed.",
            param="messages",
            code="too_many_messages",
        )


def to_turns(messages: list[ChatMessage], plan: ToolPlan | None = None) -> list[Turn]:
    tool_names = {
        call.id: call.function.name for message in messages for call in message.tool_calls or []
    }
    turns = []
    for i, message in enumerate(messages):
        if message.content is None and not (message.role == "assistant"):
            raise ApiError(
                400,
                f"messages[{i}].content must be a string or a list of text parts, not null.",
                param=f"messages[{i}].content",
                code="invalid_value",
            )
        if message.role == "assistant" and message.content is None and not message.tool_calls:
            raise ApiError(
                400,
                f"messages[{i}] (assistant) needs content or tool_calls.",
                param=f"messages[{i}].content",
                code="invalid_value",
            )
        # Templates know system, user and assistant; a tool result is read by the user
        # side of the conversation, as the model's own call was its reply.
        role = {"developer": "system", "tool": "user"}.get(message.role, message.role)
        turns.append(Turn(role, message_text(message, tool_names)))
    if plan is not None:
        if turns and turns[0].role == "system":
            turns[0] = Turn("system", f"{turns[0].content}\n\n{plan.system_text()}")
        else:
            turns.insert(0, Turn("system", plan.system_text()))
    return turns


def wire_logprobs(items: tuple[TokenLogprob, ...] | list[TokenLogprob]) -> ChoiceLogprobs:
    return ChoiceLogprobs(
        content=[WireLogprob(token=t.token, bytes=t.bytes, logprob=t.logprob) for t in items]
    )


@dataclass
class _Choice:
    parts: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish: str | None = None
    tokens: int = 0

    def add(self, delta: TextDelta) -> None:
        self.parts.append(delta.text)
        self.logprobs.extend(delta.logprobs)
        self.tokens = delta.completion_tokens
        self.finish = delta.finish_reason or self.finish


class ChatCall:
    """One accepted chat request, answered as one JSON body or as an SSE stream."""

    def __init__(
        self,
        state: ServerState,
        body: ChatCompletionRequest,
        prompt_ids: list[int],
        params: list[SamplingParams],
        stops: list[str],
        plan: ToolPlan | None,
    ) -> None:
        self.state = state
        self.body = body
        self.prompt_ids = prompt_ids
        self.params = params
        self.stops = stops
        self.plan = plan
        self.id = new_id("chatcmpl")
        self.created = now()
        self.started = time.monotonic()
        self.choices = [_Choice() for _ in params]

    def _deltas(self) -> AsyncIterator[tuple[int, TextDelta]]:
        jobs = [(self.prompt_ids, params) for params in self.params]
        return generate_choices(self.state.engine, self.state.text, jobs, self.stops)

    def usage(self) -> Usage:
        prompt = len(self.prompt_ids)
        completion = sum(c.tokens for c in self.choices)
        return Usage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        )

    def log(self, outcome: str) -> None:
        logger.info(
            "%s %s n=%d prompt_tokens=%d completion_tokens=%d elapsed=%.3fs",
            self.id,
            outcome,
            len(self.params),
            len(self.prompt_ids),
            sum(c.tokens for c in self.choices),
            time.monotonic() - self.started,
        )

    def _tool_calls(self, choice: _Choice) -> list[ToolCall] | None:
        if self.plan is None or choice.finish != "stop":
            return None
        return parse_tool_calls("".join(choice.parts), self.plan)

    async def complete(self) -> Response:
        try:
            async for index, delta in self._deltas():
                self.choices[index].add(delta)
        except EngineError as exc:
            self.log(f"failed: {exc}")
            raise ApiError(503, f"Generation failed: {exc}", code="engine_unavailable") from exc
        choices = []
        for index, choice in enumerate(self.choices):
            calls = self._tool_calls(choice)
            message = AssistantMessage(
                content=None if calls else "".join(choice.parts), tool_calls=calls
            )
            choices.append(
                ChatChoice(
                    index=index,
                    finish_reason="tool_calls" if calls else choice.finish or "stop",
                    message=message,
                    logprobs=wire_logprobs(choice.logprobs) if self.body.logprobs else None,
                )
            )
        self.log("finished: " + ",".join(c.finish_reason for c in choices))
        result = ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.state.model_id,
            system_fingerprint=self.state.system_fingerprint,
            choices=choices,
            usage=self.usage(),
        )
        return JSONResponse(result.model_dump(mode="json", exclude_none=False))

    # ------------------------------------------------------------------ streaming

    def _include_usage(self) -> bool:
        options = self.body.stream_options
        return bool(options and options.include_usage)

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

    def _delta_chunk(self, index: int, delta: TextDelta) -> dict[str, str] | None:
        """Tool requests are buffered: whether the reply is a call is known at its end."""
        choice = self.choices[index]
        choice.add(delta)
        logprobs = wire_logprobs(delta.logprobs) if self.body.logprobs else None
        if self.plan is None:
            if not (delta.text or delta.finish_reason or delta.logprobs):
                return None
            return self._chunk(
                [
                    ChunkChoice(
                        index=index,
                        delta=ChunkDelta(content=delta.text or None),
                        finish_reason=delta.finish_reason,
                        logprobs=logprobs,
                    )
                ]
            )
        if delta.finish_reason is None:
            return None
        calls = self._tool_calls(choice)
        if calls:
            tool_delta = ChunkDelta(
                tool_calls=[
                    ChunkToolCall(index=i, id=c.id, function=c.function)
                    for i, c in enumerate(calls)
                ]
            )
            return self._chunk(
                [ChunkChoice(index=index, delta=tool_delta, finish_reason="tool_calls")]
            )
        text = "".join(choice.parts)
        return self._chunk(
            [
                ChunkChoice(
                    index=index,
                    delta=ChunkDelta(content=text or None),
                    finish_reason=delta.finish_reason,
                    logprobs=wire_logprobs(choice.logprobs) if self.body.logprobs else None,
                )
            ]
        )

    async def stream(self) -> AsyncIterator[dict[str, str]]:
        try:
            for index in range(len(self.params)):
                role = ChunkDelta(role="assistant", content="")
                yield self._chunk([ChunkChoice(index=index, delta=role)])
            async for index, delta in self._deltas():
                chunk = self._delta_chunk(index, delta)
                if chunk is not None:
                    yield chunk
            if self._include_usage():
                yield self._chunk([], usage=self.usage())
            self.log("streamed: " + ",".join(c.finish or "?" for c in self.choices))
        except EngineError as exc:
            self.log(f"failed mid-stream: {exc}")
            error = ApiError(503, f"Generation failed: {exc}", code="engine_unavailable")
            yield {"data": json.dumps(error.payload())}
        except asyncio.CancelledError:
            self.log("cancelled: client disconnected")
            raise
        yield {"data": "[DONE]"}
