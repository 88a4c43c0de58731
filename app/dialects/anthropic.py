"""Anthropic's Messages API: a message request as a plan, the run's events as a Message
(JSON) or as Anthropic's named stream events (SSE). What is honoured, ignored or refused
is listed in docs/ANTHROPIC.md."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi.responses import JSONResponse, Response
from pydantic_core import from_json
from sse_starlette import ServerSentEvent

from app.chat_format import PromptError, Turn
from app.core.generation import ArgumentsOut, CallOut, ChoiceEnd, Event, TextOut
from app.core.plan import ChoicePlan, GenerationPlan, ModelContext
from app.core.run import GenerationRun
from app.core.sampling import (
    Sampling,
    check_message_count,
    check_stops,
    completion_budget,
    engine_params,
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
from app.errors import ApiError
from app.protocol.anthropic import (
    ContentBlock,
    ContentBlockDeltaEvent,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    InputJsonDelta,
    Message,
    MessageCreateRequest,
    MessageDelta,
    MessageDeltaEvent,
    MessageDeltaUsage,
    MessageParam,
    MessageStartEvent,
    MessageStopEvent,
    PingEvent,
    PromptRequest,
    ServerToolParam,
    StopReason,
    TextBlock,
    TextBlockParam,
    TextDelta,
    ToolChoiceAny,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolParam,
    ToolResultBlockParam,
    ToolUseBlock,
    ToolUseBlockParam,
    Usage,
    block_text,
)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- validator


def validate(body: MessageCreateRequest, ctx: ModelContext) -> GenerationPlan:
    """The request as a plan, or a 400 naming what is wrong. Pure: no HTTP, no engine."""
    prompt = build_prompt(body, ctx)
    budget = completion_budget(ctx, len(prompt.ids), body.max_tokens, "messages", too_long)
    sampling = Sampling(temperature=body.temperature, top_p=body.top_p, top_k=body.top_k)
    [params] = engine_params(
        ctx,
        sampling,
        budget,
        json_schema=prompt.grammar,
        structural_tag=prompt.structural_tag,
        schema_param=prompt.schema_param,
    )
    return GenerationPlan(
        choices=[ChoicePlan(prompt.ids, params)],
        prompt_tokens=len(prompt.ids),
        stops=check_stops(ctx, body.stop_sequences or [], "stop_sequences"),
        tools=prompt.tools,
        schema_param=prompt.schema_param,
    )


def count_tokens(body: PromptRequest, ctx: ModelContext) -> int:
    """The prompt tokens a create of the same body would report as `input_tokens`."""
    return len(build_prompt(body, ctx).ids)


def too_long(context: int, prompt_tokens: int, requested: int | None) -> ApiError:
    """Anthropic's words, which Claude Code reads: `prompt is too long` makes it compact the
    conversation, the second form makes it retry with a smaller max_tokens."""
    if prompt_tokens >= context or requested is None:
        message = f"prompt is too long: {prompt_tokens} tokens > {context - 1} maximum"
    else:
        message = (
            f"input length and `max_tokens` exceed context limit: {prompt_tokens} + "
            f"{requested} > {context}, decrease input length or `max_tokens` and try again"
        )
    return ApiError(400, message, param="messages", code="context_length_exceeded")


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    tools: ToolPlan | None
    grammar: str | None  # what constrains the reply: a forced call, or output_config.format
    schema_param: str  # where that grammar came from, for the engine's refusal
    structural_tag: str | None = None  # a forced call's grammar in the template's format


def build_prompt(body: PromptRequest, ctx: ModelContext) -> Prompt:
    check_message_count(ctx, len(body.messages), "messages", "messages")
    tag = None
    try:
        tools = tool_plan(body, ctx)
        if tools is not None and tools.forced:
            grammar, tag, schema_param = tools.grammar, tools.structural_tag, "tool_choice"
        else:
            grammar, schema_param = output_schema(body), "output_config.format"
    except SchemaError as exc:
        raise ApiError(400, str(exc), param=exc.param, code="invalid_value") from exc
    try:
        ids = ctx.text.encode_chat(
            to_turns(body, tools, ctx.text.tool_format),
            tools=None if tools is None else tools.template_tools(),
        )
    except PromptError as exc:
        raise ApiError(400, str(exc), param=exc.param) from exc
    return Prompt(ids, tools, grammar, schema_param, tag)


def tool_plan(body: PromptRequest, ctx: ModelContext) -> ToolPlan | None:
    """The client tools as the core plans them. Server tools are Anthropic's to run; under
    `auto` they are left out (the model answers without them), and a tool_choice that
    forces one was refused by the wire model."""
    choice = body.tool_choice
    tools = body.tools or []
    servers = [tool.type for tool in tools if isinstance(tool, ServerToolParam)]
    if servers:
        logger.debug("Ignoring server tools: %s", servers)
    custom = [(i, tool) for i, tool in enumerate(tools) if isinstance(tool, ToolParam)]
    if not custom or isinstance(choice, ToolChoiceNone):
        return None
    mode: ToolMode = (
        "named"
        if isinstance(choice, ToolChoiceTool)
        else "required"
        if isinstance(choice, ToolChoiceAny)
        else "auto"
    )
    offered = [
        OfferedTool(
            tool.name, tool.description or "", tool.input_schema, f"tools[{i}].input_schema"
        )
        for i, tool in custom
    ]
    return plan_offered(
        offered,
        mode,
        one_call=bool(choice is not None and choice.disable_parallel_tool_use),
        max_calls=ctx.limits.max_tool_calls,
        name=choice.name if isinstance(choice, ToolChoiceTool) else None,
        format=ctx.text.tool_format,
    )


def output_schema(body: PromptRequest) -> str | None:
    output = body.output_config
    if output is None or output.format is None:
        return None
    check_enforceable(output.format.schema_, "output_config.format.schema")
    return json.dumps(output.format.schema_)


def to_turns(
    body: PromptRequest, tools: ToolPlan | None, fmt: ToolFormat = OVCHAT_FORMAT
) -> list[Turn]:
    """The conversation as the chat template's turns. System text (the `system` field, then
    system messages, in order) and the tools' description open it; consecutive messages of
    one role are one turn, as Anthropic combines them; tool traffic is rendered as the chat
    dialect renders it, in the model's tool format (docs/TOOLS.md)."""
    system = [system_text(body.system)]
    turns: list[Turn] = []
    tool_names: dict[str, str] = {}  # tool_use id -> name, of the calls made so far
    for i, message in enumerate(body.messages):
        if message.role == "system":
            system.append(system_text(message.content))
            continue
        for turn in message_turns(message, i, tool_names, fmt):
            _append(turns, turn)
    if turns and turns[-1].role == "assistant":
        if turns[-1].content or turns[-1].calls:
            raise ApiError(
                400,
                "This model does not support assistant message prefill: the conversation "
                "must end with a user message.",
                param=f"messages[{len(body.messages) - 1}]",
                code="invalid_request",
            )
        turns.pop()  # an empty final assistant message asks for nothing
    if opening := _paragraphs(system):
        turns.insert(0, Turn("system", opening))
    return fmt.describe(turns, tools)


def _append(turns: list[Turn], turn: Turn) -> None:
    """Consecutive text of one role is one turn, in paragraphs; a turn that carries calls
    or a function's result stands alone."""
    last = turns[-1] if turns else None
    if (
        last is not None
        and last.role == turn.role
        and turn.role != "tool"
        and not (last.calls or turn.calls)
    ):
        turns[-1] = Turn(turn.role, _paragraphs([last.content, turn.content]))
    else:
        turns.append(turn)


def system_text(system: str | Sequence[object] | None) -> str:
    """System content is text blocks only (the wire model refuses other blocks there)."""
    if system is None or isinstance(system, str):
        return system or ""
    return block_text([block for block in system if isinstance(block, TextBlockParam)])


def message_turns(
    message: MessageParam, index: int, tool_names: dict[str, str], fmt: ToolFormat
) -> list[Turn]:
    """An assistant's text then its calls, as the tool format renders a reply (earlier
    thinking is dropped); a user's text and tool results, each result as the format
    renders one, in block order."""
    if isinstance(message.content, str):
        return [Turn(message.role, message.content)]
    turns: list[Turn] = []
    parts: list[str] = []
    calls: list[tuple[str, str]] = []
    for j, block in enumerate(message.content):
        if isinstance(block, TextBlockParam):
            parts.append(block.text)
        elif isinstance(block, ToolUseBlockParam):
            tool_names[block.id] = block.name
            calls.append((block.name, json.dumps(block.input, ensure_ascii=False)))
        elif isinstance(block, ToolResultBlockParam):
            name = tool_names.get(block.tool_use_id)
            if name is None:
                raise ApiError(
                    400,
                    f"tool_result block's tool_use_id '{block.tool_use_id}' answers no "
                    f"tool_use block of an earlier message.",
                    param=f"messages[{index}].content[{j}].tool_use_id",
                    code="invalid_value",
                )
            if parts:
                _append(turns, Turn(message.role, _paragraphs(parts)))
                parts = []
            result = block.text()
            _append(turns, fmt.result_turn(name, f"Error: {result}" if block.is_error else result))
    text = _paragraphs(parts)
    if calls:
        _append(turns, fmt.call_turn(text, calls))
    elif parts or not turns:
        _append(turns, Turn(message.role, text))
    return turns


def _paragraphs(parts: list[str]) -> str:
    return "\n\n".join(part for part in parts if part)


# ---------------------------------------------------------------------------- renderer


def event_frame(payload: dict[str, Any]) -> Frame:
    """Anthropic names every event after its type, on an `event:` line of its own."""
    return b"event: " + str(payload["type"]).encode() + b"\n" + data_frame(payload)


def ping() -> ServerSentEvent:
    """The keep-alive while a stream waits: Anthropic's `ping` event, not a comment."""
    return ServerSentEvent(data=PingEvent().model_dump_json(), event="ping", sep="\n")


def tool_use_id(call_id: str) -> str:
    return "toolu_" + call_id.removeprefix("call_")


def stop_reason(end: ChoiceEnd | None, finish: str | None) -> StopReason:
    """`end`: how the reply ended, if it did; else `finish`, the run's account of it."""
    finish = end.finish if end is not None else finish
    if finish == "tool_calls":
        return "tool_use"
    if end is None or finish == "length":
        return "max_tokens"  # the budget, or the time limit, cut the reply
    return "stop_sequence" if end.stop_sequence is not None else "end_turn"


@dataclass
class _Block:
    index: int
    kind: Literal["text", "tool_use"]
    parts: list[str] = field(default_factory=list)  # the text, or the input's JSON fragments
    id: str = ""
    name: str = ""

    def model(self, started: bool = False) -> ContentBlock:
        """The block whole, or as it starts in a stream (empty: its deltas follow)."""
        content = "" if started else "".join(self.parts)
        if self.kind == "text":
            return TextBlock(text=content)
        return ToolUseBlock(id=self.id, name=self.name, input=tool_input(content))


def tool_input(arguments: str) -> dict[str, Any]:
    """A call's input as an object. A call cut short by max_tokens is read as the SDKs
    read its streamed fragments (partial JSON), so the two forms agree."""
    try:
        value = from_json(arguments or "{}", allow_partial=True)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class MessagesRenderer:
    """One run as a Message, or as its stream: message_start (and a ping), then per content
    block a start, its deltas (text, or the tool input's JSON as generated) and a stop, then
    message_delta with the stop reason and usage, and message_stop. A reply is text or
    calls (the tool-call parser decides); each call is a tool_use block of its own."""

    def __init__(self, run: GenerationRun) -> None:
        self.run = run
        self.id = run.id  # msg_..., as the access log has it
        self.blocks: list[_Block] = []
        self._open: _Block | None = None
        self._calls: dict[int, _Block] = {}
        self._end: ChoiceEnd | None = None
        self._spliced = TextFrames()

    def _record(self, event: Event) -> tuple[_Block | None, _Block | None]:
        """The content as it grows: (the block this event closed, the block it opened)."""
        closed = opened = None
        if isinstance(event, TextOut) and event.text:
            block = self._open
            if block is None or block.kind != "text":
                closed, block = block, self._new("text")
                opened = block
            block.parts.append(event.text)
        elif isinstance(event, CallOut):
            closed = self._open
            opened = self._new("tool_use", tool_use_id(event.id), event.name)
            self._calls[event.call] = opened
        elif isinstance(event, ArgumentsOut):
            self._calls[event.call].parts.append(event.fragment)
        elif isinstance(event, ChoiceEnd):
            closed, self._open, self._end = self._open, None, event
        return closed, opened

    def _new(self, kind: Literal["text", "tool_use"], id: str = "", name: str = "") -> _Block:
        self._open = _Block(len(self.blocks), kind, id=id, name=name)
        self.blocks.append(self._open)
        return self._open

    def _message(self, content: list[ContentBlock], ended: bool) -> Message:
        reason = stop_reason(self._end, self.run.finishes[0]) if ended else None
        return Message(
            id=self.id,
            content=content,
            model=self.run.model,
            stop_reason=reason,
            stop_sequence=self._end.stop_sequence if ended and self._end else None,
            usage=Usage(
                input_tokens=self.run.prompt_tokens, output_tokens=self.run.completion_tokens
            ),
        )

    # ------------------------------------------------------------------ JSON

    def _add(self, event: Event) -> None:
        self._record(event)

    async def complete(self) -> Response:
        await self.run.collect(self._add)
        message = self._message([block.model() for block in self.blocks], ended=True)
        return JSONResponse(message.model_dump(mode="json"))

    # ------------------------------------------------------------------ SSE

    def opening(self) -> list[Frame]:
        start = MessageStartEvent(message=self._message([], ended=False))
        return [event_frame(start.model_dump(mode="json")), event_frame(PingEvent().model_dump())]

    def frames(self, event: Event) -> list[Frame]:
        closed, opened = self._record(event)
        out = []
        if closed is not None:
            out.append(event_frame(ContentBlockStopEvent(index=closed.index).model_dump()))
        if opened is not None:
            block = opened.model(started=True)
            start = ContentBlockStartEvent(index=opened.index, content_block=block)
            out.append(event_frame(start.model_dump(mode="json")))
        if isinstance(event, TextOut) and event.text and self._open is not None:
            index = self._open.index
            out.append(self._spliced.frame(("text", index), event.text, self._text(index)))
        elif isinstance(event, ArgumentsOut):
            index = self._calls[event.call].index
            out.append(self._spliced.frame(("json", index), event.fragment, self._json(index)))
        return out

    @staticmethod
    def _text(index: int) -> Callable[[str], Frame]:
        return lambda text: event_frame(
            ContentBlockDeltaEvent(index=index, delta=TextDelta(text=text)).model_dump()
        )

    @staticmethod
    def _json(index: int) -> Callable[[str], Frame]:
        return lambda fragment: event_frame(
            ContentBlockDeltaEvent(
                index=index, delta=InputJsonDelta(partial_json=fragment)
            ).model_dump()
        )

    async def settle(self, error: ApiError | None) -> None:
        return None  # a message is not stored

    def closing(self) -> list[Frame]:
        end = self._message([], ended=True)
        delta = MessageDeltaEvent(
            delta=MessageDelta(stop_reason=end.stop_reason, stop_sequence=end.stop_sequence),
            usage=MessageDeltaUsage(
                input_tokens=end.usage.input_tokens, output_tokens=end.usage.output_tokens
            ),
        )
        return [event_frame(delta.model_dump()), event_frame(MessageStopEvent().model_dump())]

    def error(self, error: ApiError) -> list[Frame]:
        _, payload = error.anthropic(self.run.record.get("request_id"))
        return [event_frame(payload)]

    def end(self) -> list[Frame]:
        return []  # Anthropic's stream just ends, also after an error event
