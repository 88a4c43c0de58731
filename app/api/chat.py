"""POST /v1/chat/completions: OpenAI request in, engine requests out, OpenAI response back."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from app.api.calls import Event, GenerationCall, check_stream_options
from app.api.deps import State, engine_ready, served_model
from app.api.sampling import check_context, check_stops, sampling_params
from app.chat_format import PromptError, Turn
from app.errors import ApiError
from app.generation import TextDelta, TokenLogprob
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
    engine_ready(state)
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
    call = ChatCall(
        body,
        plan,
        state,
        request,
        [(prompt_ids, p) for p in params],
        check_stops(state, body.stop_list()),
        len(prompt_ids),
        body.stream_options,
    )
    return await call.respond(request, bool(body.stream))


def check_shape(body: ChatCompletionRequest, state: ServerState) -> None:
    check_stream_options(body.stream, body.stream_options)
    if body.top_logprobs and not body.logprobs:
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

    def add(self, delta: TextDelta) -> None:
        self.parts.append(delta.text)
        self.logprobs.extend(delta.logprobs)

    @property
    def text(self) -> str:
        return "".join(self.parts)


class ChatCall(GenerationCall):
    """One accepted chat request, answered as one JSON body or as an SSE stream."""

    id_prefix = "chatcmpl"

    def __init__(
        self, body: ChatCompletionRequest, plan: ToolPlan | None, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.body = body
        self.plan = plan
        self.choices = [_Choice() for _ in self.jobs]

    def _logprobs(self, items: list[TokenLogprob] | tuple[TokenLogprob, ...]) -> Any:
        return wire_logprobs(items) if self.body.logprobs else None

    def _tool_calls(self, index: int) -> list[ToolCall] | None:
        if self.plan is None or self.finishes[index] != "stop":
            return None
        return parse_tool_calls(self.choices[index].text, self.plan)

    async def complete(self) -> Response:
        await self.collect(lambda index, delta: self.choices[index].add(delta))
        choices = []
        for index, choice in enumerate(self.choices):
            calls = self._tool_calls(index)
            choices.append(
                ChatChoice(
                    index=index,
                    finish_reason="tool_calls" if calls else self.finishes[index] or "stop",  # type: ignore[arg-type]
                    message=AssistantMessage(
                        content=None if calls else choice.text, tool_calls=calls
                    ),
                    logprobs=self._logprobs(choice.logprobs),
                )
            )
        result = ChatCompletion(**self.header(), choices=choices, usage=self.usage())
        return JSONResponse(self.with_timings(result.model_dump(mode="json")))

    # ------------------------------------------------------------------ streaming

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> Event:
        chunk = ChatCompletionChunk(**self.header(), choices=choices, usage=usage)
        return self.stream_event(chunk.model_dump(mode="json"), usage)

    def _content_chunk(self, index: int) -> Callable[[str], Event]:
        return lambda text: self._chunk([ChunkChoice(index=index, delta=ChunkDelta(content=text))])

    def _delta_chunks(self, index: int, delta: TextDelta) -> list[Event]:
        """Tool requests are buffered: whether the reply is a call is known at its end."""
        choice = self.choices[index]
        choice.add(delta)
        if self.plan is None:
            if not (delta.text or delta.finish_reason or delta.logprobs):
                return []
            if delta.text and delta.finish_reason is None and not self.body.logprobs:
                return [self.text_event(index, delta.text, self._content_chunk(index))]
            content = ChunkDelta(content=delta.text or None)
            chunk = ChunkChoice(
                index=index,
                delta=content,
                finish_reason=delta.finish_reason,
                logprobs=self._logprobs(delta.logprobs),
            )
            return [self._chunk([chunk])]
        if delta.finish_reason is None:
            return []
        calls = self._tool_calls(index)
        if calls:
            tool_delta = ChunkDelta(
                tool_calls=[
                    ChunkToolCall(index=i, id=c.id, function=c.function)
                    for i, c in enumerate(calls)
                ]
            )
            chunk = ChunkChoice(index=index, delta=tool_delta, finish_reason="tool_calls")
        else:
            chunk = ChunkChoice(
                index=index,
                delta=ChunkDelta(content=choice.text or None),
                finish_reason=delta.finish_reason,
                logprobs=self._logprobs(choice.logprobs),
            )
        return [self._chunk([chunk])]

    def stream(self) -> AsyncIterator[Event]:
        opening = [
            self._chunk([ChunkChoice(index=i, delta=ChunkDelta(role="assistant", content=""))])
            for i in range(len(self.jobs))
        ]
        return self.sse(opening, self._delta_chunks, lambda: self._chunk([], self.usage()))
