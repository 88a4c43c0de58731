"""OpenAI's Responses API: the request (with the conversation it continues) as a plan, and
the run's events as a response object (JSON) or as the API's typed stream events.

What a model without reasoning or hosted tools cannot use is accepted and ignored where
ignoring it keeps the answer correct, and refused with a 400 naming it where it does not
(docs/RESPONSES.md lists which is which)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi.responses import JSONResponse, Response

from app.chat_format import PromptError, Turn
from app.core.generation import ArgumentsOut, CallOut, ChoiceEnd, ChosenToken, Event, TextOut
from app.core.plan import ChoicePlan, GenerationPlan, ModelContext
from app.core.run import GenerationRun, new_id, now
from app.core.sampling import (
    Sampling,
    check_message_count,
    check_stops,
    completion_budget,
    engine_params,
    unsupported,
)
from app.core.schema import SchemaError, check_enforceable
from app.core.sse import Frame, line_safe
from app.core.tools import (
    OVCHAT_FORMAT,
    OfferedTool,
    ToolFormat,
    ToolMode,
    ToolPlan,
    plan_offered,
)
from app.errors import ApiError
from app.protocol.openai_common import as_list
from app.protocol.openai_responses import (
    AllowedTools,
    CreateResponse,
    FormatJsonObject,
    FormatJsonSchema,
    FunctionCall,
    FunctionCallOutput,
    FunctionChoice,
    FunctionTool,
    HostedChoice,
    IncompleteDetails,
    InputItem,
    InputText,
    ItemReference,
    MediaPart,
    Message,
    NamespaceTool,
    OutputFunctionCall,
    OutputItem,
    OutputMessage,
    OutputText,
    ReasoningItem,
    Refusal,
    ResponseError,
    ResponseInput,
    ResponseUsage,
    Status,
)
from app.protocol.openai_responses import Response as ResponseObject

logger = logging.getLogger(__name__)

ANY_OBJECT: dict[str, Any] = {"type": "object"}
LOGPROBS_INCLUDE = "message.output_text.logprobs"
# Without max_output_tokens, `truncation: auto` keeps this share of the context for the
# answer: dropping turns only until one token fits would leave an answer cut at once.
AUTO_TRUNCATION_ANSWER_SHARE = 4

# ---------------------------------------------------------------------------- validator


@dataclass(frozen=True)
class Prompt:
    """The conversation as the model reads it, and what it was made from."""

    ids: list[int]
    tools: ToolPlan | None
    items: list[dict[str, Any]]  # this request's input items, with ids, as stored
    truncated: int  # oldest items `truncation: auto` left out
    namespaces: dict[str, tuple[str | None, str]]  # the model's tool name -> (namespace, name)


@dataclass(frozen=True)
class ResponsePlan:
    plan: GenerationPlan
    prompt: Prompt


def validate(body: CreateResponse, ctx: ModelContext, history: list[InputItem]) -> ResponsePlan:
    """The request and the conversation it continues (`history`, from the store) as a
    plan, or a 400 naming what is wrong. Pure: no HTTP, no store, no engine."""
    if body.prompt is not None:
        raise unsupported("prompt", "Stored prompt templates (prompt)")
    if body.background and body.stream:
        raise ApiError(
            400,
            "background responses are polled (GET /v1/responses/{id}); streaming one is not "
            "supported by this server.",
            param="stream",
            code="unsupported_parameter",
        )
    try:
        schema = _format_schema(body)
    except SchemaError as exc:
        raise ApiError(400, str(exc), param=exc.param, code="invalid_value") from exc
    reserve = body.max_output_tokens or max(
        ctx.text.context_length // AUTO_TRUNCATION_ANSWER_SHARE, 1
    )
    prompt = encode(body, ctx, history, reserve=reserve)
    budget = completion_budget(ctx, len(prompt.ids), body.max_output_tokens, "input")
    tools = prompt.tools
    forced = tools is not None and tools.forced
    schema_param = "tools" if forced else "text.format"
    logprobs = LOGPROBS_INCLUDE in (body.include or [])
    sampling = Sampling(
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        min_p=body.min_p,
        seed=body.seed,
        repetition_penalty=body.repetition_penalty,
        top_logprobs=body.top_logprobs or 0,
    )
    params = engine_params(
        ctx,
        sampling,
        budget,
        logprobs=logprobs,
        json_schema=tools.grammar if tools is not None and forced else schema,
        structural_tag=tools.structural_tag if tools is not None and forced else None,
        schema_param=schema_param,
    )
    plan = GenerationPlan(
        choices=[ChoicePlan(prompt.ids, p) for p in params],
        prompt_tokens=len(prompt.ids),
        stops=check_stops(ctx, as_list(body.stop)),
        tools=tools,
        logprobs=logprobs,
        schema_param=schema_param,
    )
    return ResponsePlan(plan, prompt)


def encode(
    body: ResponseInput, ctx: ModelContext, history: list[InputItem], reserve: int = 0
) -> Prompt:
    """The prompt of a would-be response: also what /v1/responses/input_tokens counts.
    With `truncation: auto` the oldest items are left out until `reserve` tokens of
    answer fit; instructions and system messages are always kept."""
    if body.conversation is not None:
        raise unsupported("conversation", "The Conversations API (conversation)")
    new_items = body.items()
    if not history and not new_items:
        raise ApiError(400, "Missing required parameter: 'input'.", param="input")
    check_message_count(ctx, len(new_items), "input", "input items")
    for index, item in enumerate(new_items):
        _check_item(item, f"input[{index}]")
    try:
        tools, namespaces = tool_plan(body, ctx)
    except SchemaError as exc:
        raise ApiError(400, str(exc), param=exc.param, code="invalid_value") from exc
    items = [*history, *new_items]
    truncated = 0
    while True:
        try:
            turns = to_turns(items, body.instructions, tools, namespaces, ctx.text.tool_format)
            ids = ctx.text.encode_chat(
                turns, tools=None if tools is None else tools.template_tools()
            )
        except PromptError as exc:
            raise ApiError(400, str(exc), param=exc.param or "input") from exc
        if body.truncation != "auto" or len(ids) + reserve <= ctx.text.context_length:
            break
        droppable = next((i for i, item in enumerate(items[:-1]) if not _is_system(item)), None)
        if droppable is None:
            break  # nothing left to drop: the budget check reports the counts
        del items[droppable]
        truncated += 1
    if truncated:
        logger.debug("truncation auto left out the %d oldest input items", truncated)
    return Prompt(ids, tools, stored_items(new_items), truncated, namespaces)


def _is_system(item: InputItem) -> bool:
    return isinstance(item, Message) and item.role in ("system", "developer")


def _check_item(item: InputItem, where: str) -> None:
    if isinstance(item, ItemReference):
        raise ApiError(
            400,
            "item_reference input items are not supported: send the item itself, or continue "
            "a stored response with previous_response_id.",
            param=where,
            code="unsupported_parameter",
        )
    if isinstance(item, ReasoningItem | FunctionCall | FunctionCallOutput):
        if isinstance(item, FunctionCallOutput) and not isinstance(item.output, str):
            _check_parts(item.output, f"{where}.output")
        return
    if isinstance(item, Message):
        if not isinstance(item.content, str):
            _check_parts(item.content, f"{where}.content")
        return
    raise ApiError(
        400,
        f"'{item.type}' input items are not supported: this server runs function tools only.",
        param=f"{where}.type",
        code="unsupported_parameter",
    )


def _check_parts(parts: list[Any], where: str) -> None:
    for index, part in enumerate(parts):
        if isinstance(part, MediaPart):
            raise ApiError(
                400,
                f"'{part.type}' content is not supported: this model reads text only.",
                param=f"{where}[{index}].type",
                code="unsupported_parameter",
            )


def _format_schema(body: CreateResponse) -> str | None:
    fmt = body.text.format if body.text is not None else None
    if isinstance(fmt, FormatJsonObject):
        return json.dumps(ANY_OBJECT)
    if isinstance(fmt, FormatJsonSchema):
        check_enforceable(fmt.schema_, "text.format.schema")
        return json.dumps(fmt.schema_)
    return None


def tool_plan(
    body: ResponseInput, ctx: ModelContext
) -> tuple[ToolPlan | None, dict[str, tuple[str | None, str]]]:
    """Function tools as the core plans them, a namespace's functions under the name
    `namespace.function`. Hosted tools are not described to the model (it cannot run
    them); forcing one is a 400."""
    choice = body.tool_choice
    if isinstance(choice, HostedChoice):
        raise ApiError(
            400,
            f"tool_choice forces a '{choice.type}' tool, which this server cannot run; it "
            "runs function tools only.",
            param="tool_choice",
            code="unsupported_parameter",
        )
    functions: list[tuple[str, FunctionTool, str]] = []  # (model's name, tool, its path)
    namespaces: dict[str, tuple[str | None, str]] = {}
    for i, tool in enumerate(body.tools or []):
        if isinstance(tool, FunctionTool):
            functions.append((tool.name, tool, f"tools[{i}]"))
            namespaces[tool.name] = (None, tool.name)
        elif isinstance(tool, NamespaceTool):
            for j, inner in enumerate(tool.tools):
                if isinstance(inner, FunctionTool):
                    qualified = f"{tool.name}.{inner.name}"
                    functions.append((qualified, inner, f"tools[{i}].tools[{j}]"))
                    namespaces[qualified] = (tool.name, inner.name)
    if choice == "none":
        return None, namespaces
    if not functions:
        forced = choice == "required" or (
            isinstance(choice, AllowedTools) and choice.mode == "required"
        )
        if forced or isinstance(choice, FunctionChoice):
            raise ApiError(
                400,
                "tool_choice requires a function call, but no function tools were given.",
                param="tool_choice",
            )
        return None, namespaces
    mode: ToolMode = "auto"
    named: str | None = None
    if choice == "required":
        mode = "required"
    elif isinstance(choice, FunctionChoice):
        named = f"{choice.namespace}.{choice.name}" if choice.namespace else choice.name
        if named not in namespaces:
            raise ApiError(
                400,
                f"tool_choice names the function '{named}', which is not in tools.",
                param="tool_choice.name",
            )
        mode = "named"
    elif isinstance(choice, AllowedTools):
        allowed = {
            f"{t['namespace']}.{t['name']}" if t.get("namespace") else str(t.get("name"))
            for t in choice.tools
            if t.get("type") == "function"
        }
        unknown = sorted(allowed - set(namespaces))
        if unknown:
            raise ApiError(
                400,
                f"tool_choice.tools names functions not in tools: {', '.join(unknown)}.",
                param="tool_choice.tools",
            )
        functions = [f for f in functions if f[0] in allowed]
        mode = choice.mode
        if not functions:
            raise ApiError(
                400, "tool_choice.tools allows no function tool.", param="tool_choice.tools"
            )
    offered = [
        OfferedTool(name, tool.description or "", tool.parameters, f"{path}.parameters")
        for name, tool, path in functions
    ]
    plan = plan_offered(
        offered,
        mode,
        one_call=body.parallel_tool_calls is False,
        max_calls=ctx.limits.max_tool_calls,
        name=named,
        format=ctx.text.tool_format,
    )
    return plan, namespaces


def to_turns(
    items: list[InputItem],
    instructions: str | None,
    tools: ToolPlan | None,
    namespaces: dict[str, tuple[str | None, str]],
    fmt: ToolFormat = OVCHAT_FORMAT,
) -> list[Turn]:
    """The conversation as the chat template's turns. A run of function calls is one
    assistant reply (with the text before it), and a call's output a function's result,
    as the model's tool format renders them (app/core/tools.py)."""
    qualified = {v: k for k, v in namespaces.items()}
    names = {}
    turns: list[Turn] = [Turn("system", instructions)] if instructions else []
    pending_calls: list[tuple[str, str]] = []
    pending_text: str | None = None

    def flush() -> None:
        nonlocal pending_text
        if pending_calls:
            turns.append(fmt.call_turn(pending_text or "", pending_calls))
            pending_calls.clear()
        elif pending_text is not None:
            turns.append(Turn("assistant", pending_text))
        pending_text = None

    for item in items:
        if isinstance(item, FunctionCall):
            name = qualified.get((item.namespace, item.name)) or (
                f"{item.namespace}.{item.name}" if item.namespace else item.name
            )
            names[item.call_id] = name
            pending_calls.append((name, item.arguments))
            continue
        if isinstance(item, Message) and item.role == "assistant" and not pending_calls:
            flush()
            pending_text = message_text(item.content)
            continue
        flush()
        if isinstance(item, Message):
            role = "system" if item.role in ("system", "developer") else item.role
            turns.append(Turn(role, message_text(item.content)))
        elif isinstance(item, FunctionCallOutput):
            output = item.output if isinstance(item.output, str) else message_text(item.output)
            turns.append(fmt.result_turn(names.get(item.call_id, "a function"), output))
        # Reasoning items carry a reasoning model's state; this model has none to read.
    flush()
    return fmt.describe(turns, tools)


def message_text(content: str | list[Any]) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, InputText | OutputText):
            parts.append(part.text)
        elif isinstance(part, Refusal):
            parts.append(part.refusal)
    return "".join(parts)


def stored_items(items: list[InputItem]) -> list[dict[str, Any]]:
    """The request's input items as the store keeps them and input_items lists them: each
    with an id (the client's, or a new one), message content as a list of parts."""
    out = []
    for item in items:
        data = item.model_dump(mode="json", by_alias=True, exclude_none=True)
        if isinstance(item, Message):
            if isinstance(item.content, str):
                kind = "output_text" if item.role == "assistant" else "input_text"
                part: dict[str, Any] = {"type": kind, "text": item.content}
                if kind == "output_text":
                    part["annotations"] = []
                data["content"] = [part]
            data.setdefault("status", "completed")
            data.setdefault("id", new_id("msg_"))
        elif isinstance(item, FunctionCall):
            data.setdefault("id", new_id("fc_"))
            data.setdefault("status", "completed")
        elif isinstance(item, FunctionCallOutput):
            data.setdefault("id", new_id("fco_"))
            data.setdefault("status", "completed")
        else:
            data.setdefault("id", new_id("item_"))
        out.append(data)
    return out


# ---------------------------------------------------------------------------- renderer


@dataclass
class _Item:
    """An output item being built: a message, or a function call."""

    id: str
    kind: Literal["message", "function_call"]
    text: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    call_id: str = ""
    name: str = ""
    namespace: str | None = None
    arguments: list[str] = field(default_factory=list)
    done: bool = False


Store = Callable[[ResponseObject], Awaitable[None]]


class ResponsesRenderer:
    """One run as a response object, or as the Responses stream: response.created and
    response.in_progress, then per output item its `added`, its deltas, its `done`
    events, and last response.completed (or .incomplete, or an error event and
    response.failed), every event numbered by `sequence_number`. `store` is awaited with
    the final response before the client hears of it, so a client that continues it at
    once finds it stored."""

    def __init__(
        self,
        run: GenerationRun,
        body: CreateResponse,
        prompt: Prompt,
        store: Store | None,
    ) -> None:
        self.run = run
        self.body = body
        self.prompt = prompt
        self.store = store
        self.id = run.id
        self.created_at = run.created
        self.items: list[_Item] = []
        self.sequence = 0
        self.final: ResponseObject | None = None
        self._closing_items: list[Frame] = []  # items a failure left open, closed

    # ------------------------------------------------------------------ the object

    def snapshot(self, status: Status, error: ApiError | None = None) -> ResponseObject:
        body = self.body
        finished = status in ("completed", "incomplete", "failed", "cancelled")
        text_format: dict[str, Any] = {"type": "text"}
        if body.text is not None and body.text.format is not None:
            text_format = body.text.format.model_dump(mode="json", by_alias=True, exclude_none=True)
        tool_choice: Any = body.tool_choice if body.tool_choice is not None else "auto"
        if not isinstance(tool_choice, str):
            tool_choice = tool_choice.model_dump(mode="json", exclude_none=True)
        return ResponseObject(
            id=self.id,
            created_at=self.created_at,
            status=status,
            completed_at=now() if status == "completed" else None,
            error=ResponseError(code=_error_code(error), message=error.body.message)
            if error is not None
            else None,
            incomplete_details=IncompleteDetails(reason="max_output_tokens")
            if status == "incomplete"
            else None,
            instructions=body.instructions,
            max_output_tokens=body.max_output_tokens,
            max_tool_calls=body.max_tool_calls,
            model=self.run.model,
            output=[self._output(item, status) for item in self.items],
            parallel_tool_calls=body.parallel_tool_calls is not False,
            previous_response_id=body.previous_response_id,
            store=body.store is not False,
            background=bool(body.background),
            temperature=1.0 if body.temperature is None else body.temperature,
            text={
                "format": text_format,
                "verbosity": (body.text and body.text.verbosity) or "medium",
            },
            tool_choice=tool_choice,
            tools=[
                _echo_tool(t.model_dump(mode="json", exclude_none=True)) for t in body.tools or []
            ],
            top_logprobs=body.top_logprobs or 0,
            top_p=1.0 if body.top_p is None else body.top_p,
            truncation=body.truncation or "disabled",
            usage=self._usage() if finished else None,
            user=body.user,
            safety_identifier=body.safety_identifier,
            prompt_cache_key=body.prompt_cache_key,
            metadata=body.metadata or {},
            truncated_input_items=self.prompt.truncated or None,
        )

    def _usage(self) -> ResponseUsage:
        run = self.run
        return ResponseUsage(
            input_tokens=run.prompt_tokens,
            output_tokens=run.completion_tokens,
            total_tokens=run.prompt_tokens + run.completion_tokens,
        )

    def _output(self, item: _Item, status: Status) -> OutputItem:
        state: Literal["in_progress", "completed", "incomplete"] = (
            "in_progress"
            if not item.done
            else "incomplete"
            if status == "incomplete"
            else "completed"
        )
        if item.kind == "message":
            text = OutputText(text="".join(item.text), logprobs=self._logprobs(item))
            return OutputMessage(id=item.id, content=[text], status=state)
        return OutputFunctionCall(
            id=item.id,
            call_id=item.call_id,
            namespace=item.namespace,
            name=item.name,
            arguments="".join(item.arguments),
            status=state,
        )

    def _logprobs(self, item: _Item) -> list[Any] | None:
        return item.logprobs if self.run.plan.logprobs else []

    def status(self) -> Status:
        finish = self.run.finishes[0]
        return "incomplete" if finish == "length" else "completed"

    # ------------------------------------------------------------------ events

    def _apply(self, event: Event) -> list[tuple[str, dict[str, Any]]]:
        """Updates the items; returns the stream events it makes (type, fields)."""
        out: list[tuple[str, dict[str, Any]]] = []
        if isinstance(event, TextOut):
            if not (event.text or event.logprobs):
                return out
            item = self._current("message")
            if item is None:
                item = self._open(out, "message")
            item.text.append(event.text)
            logprobs = _wire_logprobs(event.logprobs) if self.run.plan.logprobs else []
            item.logprobs.extend(logprobs)
            if event.text or logprobs:
                out.append(
                    (
                        "response.output_text.delta",
                        {
                            **self._where(item),
                            "content_index": 0,
                            "delta": event.text,
                            "logprobs": logprobs,
                        },
                    )
                )
        elif isinstance(event, CallOut):
            self._close(out)
            namespace, name = self.prompt.namespaces.get(event.name, (None, event.name))
            item = self._open(
                out, "function_call", call_id=event.id, name=name, namespace=namespace
            )
        elif isinstance(event, ArgumentsOut):
            item = self.items[-1]
            item.arguments.append(event.fragment)
            out.append(
                (
                    "response.function_call_arguments.delta",
                    {**self._where(item), "delta": event.fragment},
                )
            )
        elif isinstance(event, ChoiceEnd):
            self._close(out)
        return out

    def _current(self, kind: str) -> _Item | None:
        if self.items and not self.items[-1].done and self.items[-1].kind == kind:
            return self.items[-1]
        return None

    def _where(self, item: _Item) -> dict[str, Any]:
        return {"item_id": item.id, "output_index": self.items.index(item)}

    def _open(
        self,
        out: list[tuple[str, dict[str, Any]]],
        kind: Literal["message", "function_call"],
        **fields: Any,
    ) -> _Item:
        item = _Item(id=new_id("msg_" if kind == "message" else "fc_"), kind=kind, **fields)
        self.items.append(item)
        wire = self._output(item, "in_progress").model_dump(mode="json", exclude_none=True)
        if kind == "message":
            wire["content"] = []
        out.append(
            ("response.output_item.added", {"output_index": len(self.items) - 1, "item": wire})
        )
        if kind == "message":
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
            out.append(
                (
                    "response.content_part.added",
                    {**self._where(item), "content_index": 0, "part": part},
                )
            )
        return item

    def _close(self, out: list[tuple[str, dict[str, Any]]]) -> None:
        if not self.items or self.items[-1].done:
            return
        item = self.items[-1]
        item.done = True
        status = self.status() if self.run.finishes[0] is not None else "completed"
        wire = self._output(item, status).model_dump(mode="json", exclude_none=True)
        where = self._where(item)
        if item.kind == "message":
            part = wire["content"][0]
            out.append(
                (
                    "response.output_text.done",
                    {
                        **where,
                        "content_index": 0,
                        "text": part["text"],
                        "logprobs": part["logprobs"],
                    },
                )
            )
            out.append(("response.content_part.done", {**where, "content_index": 0, "part": part}))
        else:
            out.append(
                (
                    "response.function_call_arguments.done",
                    {**where, "name": item.name, "arguments": wire["arguments"]},
                )
            )
        out.append(
            ("response.output_item.done", {"output_index": where["output_index"], "item": wire})
        )

    # ------------------------------------------------------------------ JSON

    async def finish(self, status: Status, error: ApiError | None = None) -> ResponseObject:
        """The final response, stored (when asked) before anyone is told of it."""
        self.final = self.snapshot(status, error)
        if self.store is not None:
            await self.store(self.final)
        return self.final

    async def complete(self) -> Response:
        await self.run.collect(self._apply)
        final = await self.finish(self.status())
        return JSONResponse(final.model_dump(mode="json"))

    async def collect(self) -> ResponseObject:
        """For a background response: runs to the end; a failure is a failed response."""
        try:
            await self.run.collect(self._apply)
        except ApiError as exc:
            return await self.finish("failed", exc)
        return await self.finish(self.status())

    # ------------------------------------------------------------------ SSE

    def _frame(self, kind: str, fields: dict[str, Any]) -> Frame:
        payload = {"type": kind, **fields, "sequence_number": self.sequence}
        self.sequence += 1
        data = line_safe(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))
        return b"event: " + kind.encode() + b"\ndata: " + data.encode() + b"\n\n"

    def _response_frame(self, kind: str, response: ResponseObject) -> Frame:
        return self._frame(kind, {"response": response.model_dump(mode="json")})

    def opening(self) -> list[Frame]:
        started = self.snapshot("in_progress")
        return [
            self._response_frame("response.created", started),
            self._response_frame("response.in_progress", started),
        ]

    def frames(self, event: Event) -> list[Frame]:
        return [self._frame(kind, fields) for kind, fields in self._apply(event)]

    async def settle(self, error: ApiError | None) -> None:
        if error is None:
            await self.finish(self.status())
        else:
            out: list[tuple[str, dict[str, Any]]] = []
            self._close(out)
            self._closing_items = [self._frame(k, f) for k, f in out]
            await self.finish("failed", error)

    def closing(self) -> list[Frame]:
        assert self.final is not None
        kind = "response.incomplete" if self.final.status == "incomplete" else "response.completed"
        return [self._response_frame(kind, self.final)]

    def error(self, error: ApiError) -> list[Frame]:
        assert self.final is not None
        body = error.body
        event = {
            "code": body.code or _error_code(error),
            "message": body.message,
            "param": body.param,
        }
        return [
            *self._closing_items,
            self._frame("error", event),
            self._response_frame("response.failed", self.final),
        ]

    def end(self) -> list[Frame]:
        return []  # the Responses stream has no [DONE]: response.completed is its end


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool as the response echoes it: a function always with its `parameters` and
    `strict` (null when not sent), as OpenAI's response object has them."""
    if tool.get("type") == "function":
        tool.setdefault("parameters", None)
        tool.setdefault("strict", None)
    for inner in tool.get("tools", []) if tool.get("type") == "namespace" else []:
        _echo_tool(inner)
    return tool


def _error_code(error: ApiError | None) -> str:
    if error is not None and error.status == 429:
        return "rate_limit_exceeded"
    return "server_error"


def _wire_logprobs(items: tuple[ChosenToken, ...]) -> list[dict[str, Any]]:
    return [
        {
            "token": t.token,
            "logprob": t.logprob,
            "bytes": t.bytes,
            "top_logprobs": [
                {"token": a.token, "logprob": a.logprob, "bytes": a.bytes} for a in t.top
            ],
        }
        for t in items
    ]
