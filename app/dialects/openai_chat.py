"""OpenAI Chat Completions: the request as a plan, the run's events as a chat completion
(JSON) or as chat.completion.chunk events (SSE), in OpenAI's own shapes."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse, Response

from app.chat_format import PromptError, Turn
from app.core.constraints import only_one, request_constraint
from app.core.generation import ArgumentsOut, CallOut, ChoiceEnd, ChosenToken, Event, TextOut
from app.core.plan import ChoicePlan, GenerationPlan, ModelContext
from app.core.run import GenerationRun
from app.core.sampling import (
    check_message_count,
    check_stops,
    completion_budget,
)
from app.core.schema import SchemaError, check_enforceable
from app.core.sse import Frame, TextFrames, data_frame
from app.core.tools import (
    OVCHAT_FORMAT,
    OfferedTool,
    ToolFormat,
    ToolMode,
    ToolPlan,
    plan_offered,
)
from app.dialects.openai_common import (
    StreamEnds,
    header,
    sampling_params,
    usage,
    wire_logprobs,
    with_timings,
)
from app.errors import ApiError
from app.protocol.openai_chat import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChoiceLogprobs,
    ChunkChoice,
    ChunkDelta,
    ChunkFunction,
    ChunkToolCall,
    FunctionCall,
    NamedToolChoice,
    ResponseFormatJsonObject,
    ResponseFormatJsonSchema,
    ToolCall,
    ToolChoice,
    ToolDefinition,
)
from app.protocol.openai_common import Usage
from app.textmodel import TextModel

ANY_OBJECT: dict[str, Any] = {"type": "object"}

# ---------------------------------------------------------------------------- validator


def validate(body: ChatCompletionRequest, ctx: ModelContext) -> GenerationPlan:
    """The request as a plan, or a 400 naming what is wrong. Pure: no HTTP, no engine."""
    check_message_count(ctx, len(body.messages), "messages", "messages")
    try:
        tools = tool_plan(body.tools, body.tool_choice, body.parallel_tool_calls, ctx)
        forced = tools is not None and tools.forced
        schema = tools.grammar if tools and forced else response_format_schema(body)
        tag = tools.structural_tag if tools and forced else None
    except SchemaError as exc:
        raise ApiError(400, str(exc), param=exc.param, code="invalid_value") from exc
    constraint = request_constraint(body)
    only_one(constraint, "tools" if forced else "response_format" if schema else None)
    try:
        prompt_ids = encode_messages(ctx.text, body.messages, tools)
    except PromptError as exc:
        raise ApiError(400, str(exc), param=exc.param) from exc
    budget = completion_budget(ctx, len(prompt_ids), body.token_limit(), "messages")
    params = sampling_params(
        body,
        ctx,
        budget,
        logprobs=bool(body.logprobs),
        top_logprobs=body.top_logprobs or 0,
        json_schema=schema,
        structural_tag=tag,
        constraint=constraint,
    )
    schema_param = "tools" if tools is not None and tools.forced else "response_format"
    return GenerationPlan(
        choices=[ChoicePlan(prompt_ids, p) for p in params],
        prompt_tokens=len(prompt_ids),
        stops=check_stops(ctx, body.stop_list()),
        tools=tools,
        logprobs=bool(body.logprobs),
        schema_param=constraint.param if constraint is not None else schema_param,
    )


def encode_messages(
    text: TextModel,
    messages: list[ChatMessage],
    tools: ToolPlan | None,
    add_generation_prompt: bool = True,
) -> list[int]:
    """The ids a chat request's messages are sent to the model as (what /tokenize answers
    too), the tools described and the tool traffic rendered in the model's tool format."""
    turns = to_turns(messages, tools, text.tool_format)
    return text.encode_chat(
        turns, add_generation_prompt, None if tools is None else tools.template_tools()
    )


def tool_plan(
    tools: list[ToolDefinition] | None,
    choice: ToolChoice | None,
    parallel: bool | None,
    ctx: ModelContext,
) -> ToolPlan | None:
    """Tools as the core plans them (`plan_offered` checks their schemas)."""
    if not tools or choice == "none":
        return None
    named = choice.function.name if isinstance(choice, NamedToolChoice) else None
    mode: ToolMode = (
        "named" if named is not None else "required" if choice == "required" else "auto"
    )
    offered = [
        OfferedTool(
            tool.function.name,
            tool.function.description or "",
            tool.function.parameters,
            f"tools[{i}].function.parameters",
        )
        for i, tool in enumerate(tools)
    ]
    return plan_offered(
        offered,
        mode,
        one_call=parallel is False,
        max_calls=ctx.limits.max_tool_calls,
        name=named,
        format=ctx.text.tool_format,
    )


def response_format_schema(body: ChatCompletionRequest) -> str | None:
    response_format = body.response_format
    if isinstance(response_format, ResponseFormatJsonObject):
        return json.dumps(ANY_OBJECT)
    if isinstance(response_format, ResponseFormatJsonSchema):
        schema = response_format.json_schema.schema_ or ANY_OBJECT
        check_enforceable(schema, "response_format.json_schema.schema")
        return json.dumps(schema)
    return None


def to_turns(
    messages: list[ChatMessage], tools: ToolPlan | None = None, fmt: ToolFormat = OVCHAT_FORMAT
) -> list[Turn]:
    """The conversation as the chat template's turns, tool traffic as the model's tool
    format has it (app/core/tools.py): in ovchat's own, an assistant's calls in the JSON
    shape it is asked to produce and a tool's result read by the user side, introduced by
    the function it answers; in a template's own, as the template renders them."""
    tool_names = {
        call.id: call.function.name for message in messages for call in message.tool_calls or []
    }
    turns = []
    for message in messages:
        if message.role == "assistant" and message.tool_calls:
            calls = [(c.function.name, c.function.arguments) for c in message.tool_calls]
            turns.append(fmt.call_turn(message.text(), calls))
        elif message.role == "tool":
            name = tool_names.get(message.tool_call_id or "", message.name or "a function")
            turns.append(fmt.result_turn(name, message.text()))
        else:
            role = "system" if message.role == "developer" else message.role
            turns.append(Turn(role, message.text()))
    return fmt.describe(turns, tools)


# ---------------------------------------------------------------------------- renderer


@dataclass
class _Call:
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)


@dataclass
class _Choice:
    text: list[str] = field(default_factory=list)
    logprobs: list[ChosenToken] = field(default_factory=list)
    calls: list[_Call] = field(default_factory=list)
    opened: bool = False  # its first delta (the role) has been sent


class ChatRenderer(StreamEnds[ChatCompletionRequest]):
    """One run as a chat completion or as its stream. OpenAI's stream shape: a first delta
    with the role (`content: ""` for text, `content: null` with the first tool call), then
    text or tool-call deltas (a call's id, type and name first, then its arguments in
    fragments), then a chunk with an empty delta and the finish reason, per choice."""

    def __init__(self, run: GenerationRun, body: ChatCompletionRequest) -> None:
        self.run = run
        self.body = body
        self.choices = [_Choice() for _ in run.plan.choices]
        self._spliced = TextFrames()
        self.tools = run.plan.tools is not None

    # ------------------------------------------------------------------ JSON

    def _add(self, event: Event) -> None:
        choice = self.choices[event.choice]
        if isinstance(event, TextOut):
            choice.text.append(event.text)
            choice.logprobs.extend(event.logprobs)
        elif isinstance(event, CallOut):
            choice.calls.append(_Call(event.id, event.name))
        elif isinstance(event, ArgumentsOut):
            choice.calls[event.call].arguments.append(event.fragment)

    async def complete(self) -> Response:
        await self.run.collect(self._add)
        choices = []
        for index, choice in enumerate(self.choices):
            calls = [
                ToolCall(
                    id=call.id,
                    function=FunctionCall(name=call.name, arguments="".join(call.arguments)),
                )
                for call in choice.calls
            ]
            choices.append(
                ChatChoice(
                    index=index,
                    finish_reason=self.run.finishes[index] or "stop",
                    message=AssistantMessage(
                        content=None if calls else "".join(choice.text), tool_calls=calls or None
                    ),
                    logprobs=self._logprobs(choice.logprobs),
                )
            )
        result = ChatCompletion(**header(self.run), choices=choices, usage=usage(self.run))
        return JSONResponse(with_timings(self.run, result.model_dump(mode="json")))

    def _logprobs(self, items: list[ChosenToken] | tuple[ChosenToken, ...]) -> Any:
        return ChoiceLogprobs(content=wire_logprobs(items)) if self.run.plan.logprobs else None

    # ------------------------------------------------------------------ SSE

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> Frame:
        payload = ChatCompletionChunk(**header(self.run), choices=choices, usage=usage).model_dump(
            mode="json"
        )
        # OpenAI sends `usage` only to clients that asked for it; the usage chunk carries
        # the timings when the server reports them.
        if not self.body.include_usage:
            del payload["usage"]
        elif usage is not None:
            with_timings(self.run, payload)
        return data_frame(payload)

    def _delta(self, index: int, delta: ChunkDelta, **extra: Any) -> Frame:
        return self._chunk([ChunkChoice(index=index, delta=delta, **extra)])

    def _open(self, index: int) -> list[Frame]:
        """The role delta, before a choice's first text."""
        choice = self.choices[index]
        if choice.opened:
            return []
        choice.opened = True
        return [self._delta(index, ChunkDelta(role="assistant", content=""))]

    def opening(self) -> list[Frame]:
        if self.tools:
            return []  # a reply with tools opens as text or as a call: known at its start
        return [frame for index in range(len(self.choices)) for frame in self._open(index)]

    def frames(self, event: Event) -> list[Frame]:
        index = event.choice
        if isinstance(event, TextOut):
            if not (event.text or event.logprobs):
                return []
            out = self._open(index)
            if event.logprobs and self.run.plan.logprobs:
                delta = ChunkDelta(content=event.text)
                out.append(self._delta(index, delta, logprobs=self._logprobs(event.logprobs)))
            elif event.text:
                out.append(
                    self._spliced.frame(("text", index), event.text, self._text_chunk(index))
                )
            return out
        if isinstance(event, CallOut):
            choice = self.choices[index]
            call = ChunkToolCall(
                index=event.call,
                id=event.id,
                type="function",
                function=ChunkFunction(name=event.name, arguments=""),
            )
            if choice.opened:
                return [self._delta(index, ChunkDelta(tool_calls=[call]))]
            choice.opened = True
            delta = ChunkDelta(role="assistant", null_content=True, tool_calls=[call])
            return [self._delta(index, delta)]
        if isinstance(event, ArgumentsOut):
            key = ("arguments", index, event.call)
            return [
                self._spliced.frame(key, event.fragment, self._arguments_chunk(index, event.call))
            ]
        if isinstance(event, ChoiceEnd):
            return [
                *self._open(index),
                self._delta(index, ChunkDelta(), finish_reason=event.finish),
            ]
        return []

    def _text_chunk(self, index: int) -> Callable[[str], Frame]:
        return lambda text: self._delta(index, ChunkDelta(content=text))

    def _arguments_chunk(self, index: int, call: int) -> Callable[[str], Frame]:
        def build(fragment: str) -> Frame:
            tool_call = ChunkToolCall(index=call, function=ChunkFunction(arguments=fragment))
            return self._delta(index, ChunkDelta(tool_calls=[tool_call]))

        return build
