"""Tool calling, in no API's terms: what the model is told, the grammar of a forced call,
and the parser that finds calls in the output as it is generated.

A model's tool format is chosen from its chat template (`tool_format_for`):

- Phi-3 (like most small models) has no native tool format, so ovchat defines one
  (`OVCHAT_FORMAT`, docs/TOOLS.md): the tools are described in the system prompt, and a
  reply that calls them is one JSON object `{"tool_calls": [{"name": ..., "arguments":
  {...}}, ...]}`. With a forced call (`required`, a named function) the engine's grammar
  constrains the reply to exactly that shape; otherwise the model may answer in text.
- A template that describes tools itself and asks for Hermes-style calls
  (`<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>`, as Qwen2.5's does) gets
  `HERMES_FORMAT` (app/core/hermes.py): the template renders the tools, the earlier calls
  and their results; a forced call is constrained to the tagged form."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from app.chat_format import Turn, with_system_text
from app.core.schema import check_enforceable, check_valid, nest


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema, checked (app/core/schema.py)


class CallParser(Protocol):
    """Reads a reply as it is generated and tells text from calls (ToolEvents)."""

    text_mode: bool  # not a call: everything passes through
    done: bool  # nothing more belongs to this reply

    @property
    def called(self) -> bool: ...

    def feed(self, text: str) -> list[ToolEvent]: ...

    def close(self) -> list[ToolEvent]: ...


class ToolFormat(Protocol):
    """How one model is told about tools, reads earlier calls and results, and writes its
    calls: chosen per model from its chat template (`tool_format_for`)."""

    @property
    def name(self) -> str: ...

    def constraint(
        self, tools: Sequence[FunctionTool], max_calls: int
    ) -> tuple[str | None, str | None]:
        """The grammar of a forced reply: (JSON schema, structural tag); one is set."""
        ...

    def parser(self, plan: ToolPlan, new_id: Callable[[], str]) -> CallParser: ...

    def call_turn(self, text: str, calls: Sequence[tuple[str, str]]) -> Turn:
        """An assistant's earlier reply: its text, then its calls (name, arguments JSON)."""
        ...

    def result_turn(self, name: str, content: str) -> Turn:
        """A function's result, as the model reads it."""
        ...

    def describe(self, turns: list[Turn], plan: ToolPlan | None) -> list[Turn]:
        """The conversation with the tools described in it, when the format does that."""
        ...

    def template_tools(self, plan: ToolPlan | None) -> list[dict[str, Any]] | None:
        """The tools as the chat template takes them, when the template describes them."""
        ...


@dataclass(frozen=True)
class OvchatFormat:
    """ovchat's own format, for templates that know no tools (docs/TOOLS.md)."""

    name: str = "ovchat"

    def constraint(
        self, tools: Sequence[FunctionTool], max_calls: int
    ) -> tuple[str | None, str | None]:
        return json.dumps(calls_schema(tools, max_calls)), None

    def parser(self, plan: ToolPlan, new_id: Callable[[], str]) -> CallParser:
        return ToolCallParser(plan, new_id)

    def call_turn(self, text: str, calls: Sequence[tuple[str, str]]) -> Turn:
        return Turn("assistant", (text + "\n" if text else "") + render_calls(calls))

    def result_turn(self, name: str, content: str) -> Turn:
        return Turn("user", render_result(name, content))

    def describe(self, turns: list[Turn], plan: ToolPlan | None) -> list[Turn]:
        return turns if plan is None else with_system_text(turns, plan.system_text())

    def template_tools(self, plan: ToolPlan | None) -> list[dict[str, Any]] | None:
        return None


OVCHAT_FORMAT = OvchatFormat()


@dataclass(frozen=True)
class ToolPlan:
    """What a request's tools mean for this generation."""

    tools: tuple[FunctionTool, ...]  # the ones described to the model and callable
    forced: bool  # `required` or a named function: the reply must be a call
    max_calls: int
    grammar: str | None  # JSON schema of a forced reply, in a format that has one
    structural_tag: str | None = None  # a forced reply's grammar as genai's structural tag
    format: ToolFormat = field(default=OVCHAT_FORMAT)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(tool.name for tool in self.tools)

    def parser(self, new_id: Callable[[], str] = new_call_id) -> CallParser:
        return self.format.parser(self, new_id)

    def template_tools(self) -> list[dict[str, Any]] | None:
        return self.format.template_tools(self)

    def system_text(self) -> str:
        specs = [
            {"name": t.name, "description": t.description, "parameters": t.parameters}
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


def no_parameters() -> dict[str, Any]:
    """OpenAI: a function without `parameters` takes an empty parameter list."""
    return {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class OfferedTool:
    """A function as a request offers it, its schema not yet checked: `param` is where the
    schema is in the request, so a 400 names it."""

    name: str
    description: str
    parameters: dict[str, Any] | None  # None: the function takes no parameters
    param: str


ToolMode = Literal["auto", "required", "named"]


def plan_offered(
    offered: Sequence[OfferedTool],
    mode: ToolMode,
    one_call: bool,
    max_calls: int,
    name: str | None = None,
    format: ToolFormat = OVCHAT_FORMAT,
) -> ToolPlan | None:
    """`plan_tools` for what a request sent, every dialect alike. Every schema must be valid
    JSON Schema (SchemaError); those a forced call is constrained by must also be
    enforceable (under `auto`, and for the functions a named call does not name, they are
    only described)."""
    functions = []
    for tool in offered:
        parameters = tool.parameters
        if parameters is None:
            parameters = no_parameters()
        elif mode == "auto" or (mode == "named" and tool.name != name):
            check_valid(parameters, tool.param)
        else:
            check_enforceable(parameters, tool.param)
        functions.append(FunctionTool(tool.name, tool.description, parameters))
    return plan_tools(functions, mode, one_call, max_calls, name, format)


def plan_tools(
    tools: Sequence[FunctionTool],
    mode: ToolMode,
    one_call: bool,
    max_calls: int,
    name: str | None = None,
    format: ToolFormat = OVCHAT_FORMAT,
) -> ToolPlan | None:
    """`auto`: the model may call any of `tools`; `required`: it must; `named`: it must
    call the function `name`, once."""
    if not tools:
        return None
    chosen = tuple(t for t in tools if t.name == name) if mode == "named" else tuple(tools)
    calls = 1 if one_call or mode == "named" else max_calls
    forced = mode != "auto"
    grammar, structural_tag = format.constraint(chosen, calls) if forced else (None, None)
    return ToolPlan(
        tools=chosen,
        forced=forced,
        max_calls=calls,
        grammar=grammar,
        structural_tag=structural_tag,
        format=format,
    )


def calls_schema(tools: Sequence[FunctionTool], max_calls: int) -> dict[str, Any]:
    """The grammar of a forced reply. Each function's parameters move under `$defs` at the
    root, their own references rewritten to point there (app/core/schema.nest): nested
    under the wrapper as they are, `#/$defs/...` would point at nothing."""
    defs: dict[str, Any] = {}
    variants = []
    for i, tool in enumerate(tools):
        arguments, defs[f"tool{i}"] = nest(tool.parameters, f"tool{i}")
        variants.append(
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": arguments},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    calls: dict[str, Any] = {
        "type": "array",
        "items": variants[0] if len(variants) == 1 else {"anyOf": variants},
        "minItems": 1,
        # Small models repeat a call until the token budget runs out; a bound lets the
        # grammar close the array, so a forced call always completes.
        "maxItems": max_calls,
    }
    return {
        "$defs": defs,
        "type": "object",
        "properties": {"tool_calls": calls},
        "required": ["tool_calls"],
        "additionalProperties": False,
    }


def render_calls(calls: Sequence[tuple[str, str]]) -> str:
    """Earlier calls of the assistant, (name, arguments JSON text), in the shape the model
    is asked to produce."""
    items = [{"name": name, "arguments": loads_or_text(arguments)} for name, arguments in calls]
    return json.dumps({"tool_calls": items}, ensure_ascii=False)


def render_result(name: str, content: str) -> str:
    """A tool's result, as the user side of the conversation reads it."""
    return f"Result of {name}: {content}"


def loads_or_text(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


# ---------------------------------------------------------------------------- the parser


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class CallStart:
    call: int  # index among this reply's calls
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class CallArguments:
    call: int
    fragment: str  # raw JSON text, as generated: the fragments join into `arguments`


ToolEvent = Text | CallStart | CallArguments

_WS = " \t\n\r"
# Parser states: the wrapper's fixed prefix, then each call object's keys and values.
(
    _OPEN,
    _KEY0,
    _KEY0_STR,
    _COLON0,
    _ARRAY,
    _ELEMENT,
    _CALL_KEY,
    _CALL_KEY_STR,
    _CALL_COLON,
    _CALL_VALUE,
    _NAME,
    _VALUE,
    _STRING_ARGUMENTS,
    _CALL_NEXT,
    _AFTER_CALL,
    _CLOSE,
) = range(16)
_WRAPPER_KEY = "tool_calls"


class ToolCallParser:
    """Reads a reply as it is generated and tells text from calls.

    Until the reply can no longer become a call, what it wrote is held back; the moment it
    cannot (a first character that is not `{`, a first key that does not begin
    `tool_calls`, a function name that no offered function begins with), everything held
    is released as text and the rest passes through. Once the first call's name is known,
    the reply is a call: each call is announced with its name, then its arguments stream
    as JSON fragments while they are generated (the model's own text, less the whitespace
    between JSON tokens; arguments a model wrote as a JSON string, as OpenAI's wire format
    has them, are unwrapped). When the wrapper object closes, or a call names a function
    that is not offered, the reply is over (`done`)."""

    def __init__(self, plan: ToolPlan, new_id: Callable[[], str] = new_call_id) -> None:
        self._names = plan.names
        self._max_calls = plan.max_calls
        self._new_id = new_id
        self._state = _OPEN
        self._held: list[str] = []
        self._committed = False
        self.text_mode = False  # not a call: everything passes through
        self.done = False  # nothing more belongs to this reply
        self.calls = 0  # calls announced
        self._buffer: list[str] = []  # a key, a name, or a scalar argument being read
        self._key = ""
        self._name: str | None = None  # of the current call object, once read
        self._early_arguments: list[str] = []  # arguments written before the name
        self._had_arguments = False
        self._value_is_arguments = False
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._scalar = False  # the value is a number or literal: ends at a delimiter
        self._pending_escape = ""  # an escape in string arguments, until it is whole

    @property
    def called(self) -> bool:
        return self.calls > 0

    def feed(self, text: str) -> list[ToolEvent]:
        if self.text_mode:
            return [Text(text)] if text else []
        out: list[ToolEvent] = []
        for i, ch in enumerate(text):
            if self.done:
                break
            if not self._committed:
                self._held.append(ch)
            if not self._step(ch, out):
                if self._committed:
                    self.done = True  # a call was made; what follows is not ours
                    break
                self.text_mode = True
                out.append(Text("".join(self._held) + text[i + 1 :]))
                self._held.clear()
                break
        return out

    def close(self) -> list[ToolEvent]:
        """The reply ended: what was held back without becoming a call is text, and a call
        that gave no arguments gave none."""
        if self._committed:
            if self._name is not None and not self._had_arguments and not self.done:
                out: list[ToolEvent] = []
                self._arguments("{}", out)
                return out
            return []
        if self.text_mode or not self._held:
            return []
        self.text_mode = True
        held, self._held = "".join(self._held), []
        return [Text(held)]

    # ------------------------------------------------------------------ states

    def _arguments(self, fragment: str, out: list[ToolEvent]) -> None:
        self._had_arguments = True
        if self._name is None:
            self._early_arguments.append(fragment)
            return
        if out and isinstance(out[-1], CallArguments) and out[-1].call == self.calls - 1:
            out[-1] = CallArguments(out[-1].call, out[-1].fragment + fragment)
        else:
            out.append(CallArguments(self.calls - 1, fragment))

    def _named(self, name: str, out: list[ToolEvent]) -> bool:
        if name not in self._names:
            if not self._committed:
                return False
            self.done = True  # a later call of a function that is not offered: stop here
            return True
        self._name = name
        self._committed = True
        self._held.clear()
        out.append(CallStart(self.calls, self._new_id(), name))
        self.calls += 1
        if self._early_arguments:
            early, self._early_arguments = "".join(self._early_arguments), []
            self._arguments(early, out)
        return True

    def _step(self, ch: str, out: list[ToolEvent]) -> bool:
        """Consumes one character; False when the reply is not (or no longer) a call."""
        state = self._state
        if state == _VALUE:
            return self._value(ch, out)
        if state == _STRING_ARGUMENTS:
            return self._string_arguments(ch, out)
        if state in (_KEY0_STR, _CALL_KEY_STR, _NAME):
            return self._string(ch, out)
        if ch in _WS:
            return True
        if state == _OPEN:
            return self._expect(ch, "{", _KEY0)
        if state == _KEY0:
            return self._expect(ch, '"', _KEY0_STR)
        if state == _COLON0:
            return self._expect(ch, ":", _ARRAY)
        if state == _ARRAY:
            return self._expect(ch, "[", _ELEMENT)
        if state == _ELEMENT:
            if ch != "{":
                return False
            self._name = None
            self._early_arguments = []
            self._had_arguments = False
            self._state = _CALL_KEY
            return True
        if state == _CALL_KEY:
            if ch == "}":
                return self._end_call(out)
            return self._expect(ch, '"', _CALL_KEY_STR)
        if state == _CALL_COLON:
            return self._expect(ch, ":", _CALL_VALUE)
        if state == _CALL_VALUE:
            return self._start_value(ch, out)
        if state == _CALL_NEXT:
            if ch == ",":
                self._state = _CALL_KEY
                return True
            return ch == "}" and self._end_call(out)
        if state == _AFTER_CALL:
            if ch == ",":
                self._state = _ELEMENT
                return True
            return self._expect(ch, "]", _CLOSE)
        if state == _CLOSE:
            if ch != "}":
                return False
            self.done = True
            return True
        return False

    def _expect(self, ch: str, wanted: str, then: int) -> bool:
        if ch != wanted:
            return False
        self._state = then
        return True

    def _start_value(self, ch: str, out: list[ToolEvent]) -> bool:
        if self._key == "name" and self._name is None:
            return self._expect(ch, '"', _NAME)
        self._value_is_arguments = self._key == "arguments"
        if self._value_is_arguments and ch == '"':
            self._state = _STRING_ARGUMENTS  # `"arguments": "{\"a\": 1}"`: unwrapped
            return True
        self._depth = 0
        self._in_string = self._escape = False
        self._scalar = ch not in '{["'
        self._state = _VALUE
        return self._value(ch, out)

    def _string(self, ch: str, out: list[ToolEvent]) -> bool:
        """A key or a function name, up to its closing quote."""
        if self._escape or ch == "\\" or ch != '"':
            self._escape = not self._escape and ch == "\\"
            self._buffer.append(ch)
            return self._committed or self._could_still_be_ours()
        try:
            value = json.loads('"' + "".join(self._buffer) + '"')
        except ValueError:
            return False
        self._buffer.clear()
        if self._state == _KEY0_STR:
            self._state = _COLON0
            return bool(value == _WRAPPER_KEY)
        if self._state == _CALL_KEY_STR:
            self._key = value
            self._state = _CALL_COLON
            return True
        self._state = _CALL_NEXT
        return self._named(value, out)

    def _could_still_be_ours(self) -> bool:
        """While nothing is committed: can the key or name being read still be ours?"""
        so_far = "".join(self._buffer)
        if self._state == _KEY0_STR:
            return _WRAPPER_KEY.startswith(so_far)
        if self._state == _NAME:
            return any(name.startswith(so_far) for name in self._names)
        return True

    def _value(self, ch: str, out: list[ToolEvent]) -> bool:
        """Any JSON value (the arguments, or a key of ours this parser skips)."""
        if self._scalar and not self._in_string and (ch in _WS or ch in ",}]"):
            if self._value_is_arguments:
                scalar = "".join(self._buffer)
                self._buffer.clear()
                self._arguments("{}" if scalar == "null" else scalar, out)
            self._state = _CALL_NEXT
            return self._step(ch, out)
        # Whitespace between JSON tokens means nothing, and the grammar lets a model write
        # runs of it: the arguments keep only what means something.
        if self._value_is_arguments and (self._in_string or ch not in _WS):
            if self._scalar:
                self._buffer.append(ch)  # `null` becomes `{}`, known at its end
            else:
                self._arguments(ch, out)
        if self._in_string:
            if self._escape:
                self._escape = False
            elif ch == "\\":
                self._escape = True
            elif ch == '"':
                self._in_string = False
                if self._depth == 0:
                    self._state = _CALL_NEXT
        elif ch == '"':
            self._in_string = True
        elif ch in "{[":
            self._depth += 1
        elif ch in "}]":
            self._depth -= 1
            if self._depth == 0:
                self._state = _CALL_NEXT
        return True

    def _string_arguments(self, ch: str, out: list[ToolEvent]) -> bool:
        """Arguments the model wrote as a JSON string: its decoded text is the arguments."""
        if self._pending_escape:
            self._pending_escape += ch
            escape = self._pending_escape
            if escape[1] == "u" and len(escape) < 6:
                return True
            if escape[1] == "u" and 0xD800 <= int(escape[2:6], 16) < 0xDC00 and len(escape) < 12:
                return True  # a high surrogate: its pair follows
            self._pending_escape = ""
            try:
                self._arguments(json.loads('"' + escape + '"'), out)
            except ValueError:
                return False
            return True
        if ch == "\\":
            self._pending_escape = ch
            return True
        if ch == '"':
            self._state = _CALL_NEXT
            return True
        self._arguments(ch, out)
        return True

    def _end_call(self, out: list[ToolEvent]) -> bool:
        if self._name is None:
            return False  # a call object without a name
        if not self._had_arguments:
            self._arguments("{}", out)  # a call that gave no arguments gave none
        self._state = _AFTER_CALL
        # Under `auto` no grammar bounds the calls: a reply limited to one (OpenAI's
        # parallel_tool_calls false, Anthropic's disable_parallel_tool_use) ends with it.
        if self.calls >= self._max_calls:
            self.done = True
        return True
