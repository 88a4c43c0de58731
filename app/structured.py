"""Structured output: `response_format` JSON modes and tool calling.

Phi-3 has no native tool format, so ovchat defines one (docs/TOOLS.md): the tools are
described in the system prompt, and a call is a JSON object
`{"tool_calls": [{"name": ..., "arguments": {...}}]}`. With `tool_choice` `required` or a
named function the reply is constrained by the engine's grammar to exactly that shape, with
arguments valid against the function's parameter schema; with `auto` the model may answer
in text, and a reply that is such an object becomes `tool_calls`."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from app.protocol import (
    ChatMessage,
    FunctionCall,
    NamedToolChoice,
    ResponseFormat,
    ResponseFormatJsonObject,
    ResponseFormatJsonSchema,
    ToolCall,
    ToolDefinition,
)

ANY_OBJECT: dict[str, Any] = {"type": "object"}


class StructuredError(ValueError):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def check_schema(schema: dict[str, Any], param: str) -> None:
    from jsonschema import exceptions, validators

    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        raise StructuredError(f"Invalid JSON schema: {exc.message}", param) from exc


def response_format_schema(response_format: ResponseFormat | None) -> dict[str, Any] | None:
    if isinstance(response_format, ResponseFormatJsonObject):
        return ANY_OBJECT
    if isinstance(response_format, ResponseFormatJsonSchema):
        schema = response_format.json_schema.schema_ or ANY_OBJECT
        check_schema(schema, "response_format.json_schema.schema")
        return schema
    return None


@dataclass(frozen=True)
class ToolPlan:
    """What a request's tools mean for this generation."""

    tools: list[ToolDefinition]
    forced: bool  # `required` or a named function: the reply must be a call
    schema: dict[str, Any] | None  # grammar for forced calls

    def system_text(self) -> str:
        specs = [
            {
                "name": t.function.name,
                "description": t.function.description or "",
                "parameters": t.function.parameters or ANY_OBJECT,
            }
            for t in self.tools
        ]
        rule = (
            "You must call one of these functions now."
            if self.forced
            else "If a function helps answer, call it; otherwise answer the user normally."
        )
        return (
            "You can call these functions (parameters as JSON Schema):\n"
            f"{json.dumps(specs, ensure_ascii=False)}\n"
            f"{rule} To call functions, reply with only this JSON object and nothing else: "
            '{"tool_calls": [{"name": "<function name>", "arguments": {<arguments>}}]}'
        )


def plan_tools(
    tools: list[ToolDefinition] | None,
    tool_choice: str | NamedToolChoice | None,
    parallel: bool | None,
    max_calls: int,
) -> ToolPlan | None:
    if not tools:
        if isinstance(tool_choice, NamedToolChoice) or tool_choice == "required":
            raise StructuredError("tool_choice needs tools.", "tool_choice")
        return None
    if tool_choice == "none":
        return None
    names = [t.function.name for t in tools]
    if len(set(names)) != len(names):
        raise StructuredError("Function names must be unique.", "tools")
    for i, tool in enumerate(tools):
        if tool.function.parameters is not None:
            check_schema(tool.function.parameters, f"tools[{i}].function.parameters")
    chosen = tools
    if isinstance(tool_choice, NamedToolChoice):
        chosen = [t for t in tools if t.function.name == tool_choice.function.name]
        if not chosen:
            raise StructuredError(
                f"tool_choice names '{tool_choice.function.name}', which is not in tools.",
                "tool_choice",
            )
    forced = tool_choice == "required" or isinstance(tool_choice, NamedToolChoice)
    one_call = isinstance(tool_choice, NamedToolChoice) or parallel is False
    schema = _calls_schema(chosen, 1 if one_call else max_calls) if forced else None
    return ToolPlan(tools=chosen, forced=forced, schema=schema)


def _calls_schema(tools: list[ToolDefinition], max_calls: int) -> dict[str, Any]:
    variants = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t.function.name},
                "arguments": t.function.parameters or ANY_OBJECT,
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    calls: dict[str, Any] = {
        "type": "array",
        "items": variants[0] if len(variants) == 1 else {"anyOf": variants},
        "minItems": 1,
        # Small models repeat a call until the token budget runs out; a bound lets the
        # grammar close the array, so a forced call always completes.
        "maxItems": max_calls,
    }
    return {
        "type": "object",
        "properties": {"tool_calls": calls},
        "required": ["tool_calls"],
        "additionalProperties": False,
    }


def parse_tool_calls(text: str, plan: ToolPlan) -> list[ToolCall] | None:
    """The reply as tool calls, or None when it is an ordinary answer."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        payload = json.loads(stripped)
    except ValueError:
        return None
    calls = payload.get("tool_calls") if isinstance(payload, dict) else None
    if not isinstance(calls, list) or not calls:
        return None
    known = {t.function.name for t in plan.tools}
    out = []
    for call in calls:
        if not isinstance(call, dict) or call.get("name") not in known:
            return None
        arguments = call.get("arguments", {})
        out.append(
            ToolCall(
                id=f"call_{uuid.uuid4().hex[:24]}",
                function=FunctionCall(
                    name=call["name"], arguments=json.dumps(arguments, ensure_ascii=False)
                ),
            )
        )
    return out


def message_text(message: ChatMessage, tool_names: dict[str, str]) -> str:
    """Tool traffic as text the model can read: an assistant's calls in the same JSON shape
    it is asked to produce, a tool's result introduced by the function it answers."""
    if message.role == "assistant" and message.tool_calls:
        calls = [
            {"name": c.function.name, "arguments": _loads_or_text(c.function.arguments)}
            for c in message.tool_calls
        ]
        prefix = message.text()
        return (prefix + "\n" if prefix else "") + json.dumps(
            {"tool_calls": calls}, ensure_ascii=False
        )
    if message.role == "tool":
        name = tool_names.get(message.tool_call_id or "", message.name or "a function")
        return f"Result of {name}: {message.text()}"
    return message.text()


def _loads_or_text(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments
