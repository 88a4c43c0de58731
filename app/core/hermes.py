"""Tool calls in the format chat templates such as Qwen2.5's ask for (Hermes', as vLLM's
`hermes` parser reads it): the template describes the tools and renders the earlier calls
and results; a call is `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, one
or several in a reply.

Models trained on that format do not always keep to it: Qwen2.5-Coder-1.5B answers a tool
question with the right name and arguments, but as a ```json fenced object or a bare one.
So under `auto` a reply in any of those shapes that names an offered function, with
arguments valid against its schema, is a call; anything else is text, exactly as
generated. A forced call is constrained to the tagged form by a structural tag (genai's
StructuredOutputConfig.structural_tags_config, in xgrammar's JSON form): each function's
opening text is fixed, `<tool_call>\\n{"name": "<name>", "arguments": `, as the template
renders a call, and its arguments are constrained by its schema."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from app.chat_format import ChatTemplate, Turn
from app.core.tools import (
    OVCHAT_FORMAT,
    CallArguments,
    CallParser,
    CallStart,
    FunctionTool,
    Text,
    ToolEvent,
    ToolFormat,
    ToolPlan,
    loads_or_text,
)

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
_WS = " \t\n\r"
_FENCE = re.compile(r"```[A-Za-z]*[ \t]*\n?[ \t\r\n]*")
# The opening of a tagged call as the template renders one, up to its arguments' value.
_CALL_HEAD = re.compile(
    r'\{[ \t\r\n]*"name"[ \t\r\n]*:[ \t\r\n]*"((?:[^"\\]|\\.)*)"[ \t\r\n]*,'
    r'[ \t\r\n]*"arguments"[ \t\r\n]*:[ \t\r\n]*'
)


def call_head(name: str) -> str:
    """A tagged call's text up to its arguments, written as the template writes it."""
    return f'{OPEN}\n{{"name": "{name}", "arguments": '


def structural_tag(tools: Sequence[FunctionTool], max_calls: int) -> str:
    """The forced reply: one to `max_calls` tagged calls, separated as the template
    separates them. The count is bounded by the parser, which ends the reply at
    `max_calls` calls (the generation is cancelled there)."""
    tags = [
        {
            "type": "tag",
            "begin": call_head(tool.name),
            "content": {"type": "json_schema", "json_schema": tool.parameters},
            "end": f"}}\n{CLOSE}",
        }
        for tool in tools
    ]
    return json.dumps(
        {
            "type": "structural_tag",
            "format": {
                "type": "tags_with_separator",
                "tags": tags,
                "separator": "\n",
                "at_least_one": True,
                "stop_after_first": max_calls == 1,
            },
        },
        ensure_ascii=False,
    )


@dataclass(frozen=True)
class HermesFormat:
    name: str = "hermes"

    def constraint(
        self, tools: Sequence[FunctionTool], max_calls: int
    ) -> tuple[str | None, str | None]:
        return None, structural_tag(tools, max_calls)

    def parser(self, plan: ToolPlan, new_id: Callable[[], str]) -> CallParser:
        return HermesCallParser(plan, new_id)

    def call_turn(self, text: str, calls: Sequence[tuple[str, str]]) -> Turn:
        return Turn(
            "assistant", text, calls=tuple((name, loads_or_text(args)) for name, args in calls)
        )

    def result_turn(self, name: str, content: str) -> Turn:
        return Turn("tool", content, name=name)

    def describe(self, turns: list[Turn], plan: ToolPlan | None) -> list[Turn]:
        return turns  # the template describes the tools

    def template_tools(self, plan: ToolPlan | None) -> list[dict[str, Any]] | None:
        if plan is None:
            return None
        return [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                },
            }
            for tool in plan.tools
        ]


HERMES_FORMAT = HermesFormat()


class JsonScan:
    """Follows a JSON object or array from its opening bracket as its text grows, without
    reading any character twice (a reply is fed a token at a time): where it closes, and
    its text less the whitespace between tokens (strings kept as written), which grows
    only at its end, so arguments can be streamed as they are generated. Only nesting and
    strings are followed; json.loads judges the rest."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.end: int | None = None  # the index after the closing bracket, once read
        self._pos = start
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._compact: list[str] = []

    @property
    def compact(self) -> str:
        return "".join(self._compact)

    def compact_since(self, sent: int) -> str:
        """The compact text past its first `sent` characters."""
        return "".join(self._compact[sent:])

    def advance(self, text: str) -> None:
        for i in range(self._pos, len(text)):
            if self.end is not None:
                return
            ch = text[i]
            self._pos = i + 1
            if self._in_string:
                self._compact.append(ch)
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self._in_string = False
                continue
            if ch in _WS:
                continue
            self._compact.append(ch)
            if ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    self.end = i + 1


def compact(raw: str) -> str:
    """A JSON object's or array's text less the whitespace between its tokens."""
    scan = JsonScan(0)
    scan.advance(raw)
    return scan.compact


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


_WAIT = -1  # more text is needed to decide
_NOT = -2  # not a call


class HermesCallParser:
    """Tells text from calls in a reply, as it is generated.

    While the reply can still become a call (leading whitespace, then `<tool_call>`, a
    ``` fence or `{`), what it wrote is held back; the moment it cannot, everything held
    is released as text, exactly as generated, and the rest passes through. A call object
    is judged when it is complete: it must name an offered function and its arguments
    (an object, or a JSON string holding one, as OpenAI's wire format has them; none is
    `{}`) must be valid against that function's schema. A call that fails either is text
    when it is the reply's first; a later one ends the reply before it, as does any text
    after a call but another tagged call. With a forced call the grammar guarantees the
    tagged form and valid arguments, so the call is announced as soon as its name is
    written and its arguments stream as they are generated. Arguments are the JSON the
    model wrote, less the whitespace between its tokens."""

    def __init__(self, plan: ToolPlan, new_id: Callable[[], str]) -> None:
        self._tools = {tool.name: tool for tool in plan.tools}
        self._max_calls = plan.max_calls
        self._stream = plan.forced
        self._new_id = new_id
        self._validators: dict[str, Any] = {}
        self._text = ""  # the reply so far, while it is not text
        self._pos = 0  # where the next call (or what follows the last) begins
        self._closing = ""  # the tag or fence that may close the last call
        self._scan: JsonScan | None = None  # of the call object being read
        self._streaming: tuple[JsonScan | None, int] | None = None  # arguments, chars sent
        self._arguments_at = 0  # where a streamed call's arguments begin
        self.text_mode = False
        self.done = False
        self.calls = 0

    @property
    def called(self) -> bool:
        return self.calls > 0

    def feed(self, text: str) -> list[ToolEvent]:
        if self.text_mode:
            return [Text(text)] if text else []
        if self.done or not text:
            return []
        self._text += text
        return self._advance(final=False)

    def close(self) -> list[ToolEvent]:
        """The reply ended: what was held without becoming a call is text; a forced call
        cut short is returned as far as it got."""
        if self.text_mode or self.done:
            return []
        out = self._advance(final=True)
        if not (self.text_mode or self.done):
            if self.calls == 0:
                out += self._release()
            elif self._streaming is not None and self._streaming[1] == 0:
                out.append(CallArguments(self.calls - 1, "{}"))  # cut before its arguments
            self.done = True
        return out

    def _release(self) -> list[ToolEvent]:
        self.text_mode = True
        held, self._text = self._text, ""
        return [Text(held)] if held else []

    def _advance(self, final: bool) -> list[ToolEvent]:
        out: list[ToolEvent] = []
        while not self.done:
            if self._streaming is not None:
                if not self._stream_arguments(out):
                    return out
                continue
            end = self._call(out, final)
            if end == _WAIT:
                return out
            if end == _NOT:
                if self.calls == 0:
                    return [*out, *self._release()]
                self.done = True
                return out
            self._pos = end
            if self.calls >= self._max_calls:
                self.done = True
        return out

    def _call(self, out: list[ToolEvent], final: bool) -> int:
        """Reads the next call: the index after its object, _WAIT or _NOT."""
        text = self._text
        i = _skip_ws(text, self._pos)
        if self._closing:
            rest = text[i:]
            if rest.startswith(self._closing):
                self._pos, self._closing = i + len(self._closing), ""
                i = _skip_ws(text, self._pos)
            elif self._closing.startswith(rest):
                return _NOT if final else _WAIT
            else:
                self._closing = ""  # a call its closing never followed
        if i == len(text):
            return _NOT if final else _WAIT
        rest = text[i:]
        closing = ""
        if rest.startswith(OPEN):
            i, closing = _skip_ws(text, i + len(OPEN)), CLOSE
        elif OPEN.startswith(rest):
            return _NOT if final else _WAIT
        elif self.calls > 0:
            return _NOT  # after a call, only another tagged call belongs to the reply
        elif rest.startswith("```"):
            fence = _FENCE.match(text, i)
            if fence is None or fence.end() == len(text):
                return _NOT if final else _WAIT
            i, closing = fence.end(), "```"
        elif "```".startswith(rest):
            return _NOT if final else _WAIT
        if i == len(text):
            return _NOT if final else _WAIT
        if text[i] != "{":
            return _NOT
        if self._stream and closing == CLOSE and self._start_streaming(i, out):
            return _WAIT if self._streaming is not None else self._pos
        if self._scan is None or self._scan.start != i:
            self._scan = JsonScan(i)
        self._scan.advance(text)
        end = self._scan.end
        if end is None:
            return _NOT if final else _WAIT
        self._scan = None
        call = self._judge(text[i:end])
        if call is None:
            return _NOT
        name, arguments = call
        out.append(CallStart(self.calls, self._new_id(), name))
        out.append(CallArguments(self.calls, arguments))
        self.calls += 1
        self._closing = closing
        return end

    def _judge(self, raw: str) -> tuple[str, str] | None:
        """A call object's (name, arguments JSON), when it is a valid call."""
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(value, dict) or set(value) - {"name", "arguments"}:
            return None
        name = value.get("name")
        if not isinstance(name, str) or name not in self._tools:
            return None
        arguments = value.get("arguments")
        if isinstance(arguments, str):
            text = arguments
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return None
        elif arguments is None:
            arguments, text = {}, "{}"
        else:
            text = compact(_raw_arguments(raw))
        if not isinstance(arguments, dict) or not self._valid(name, arguments):
            return None
        return name, text

    def _valid(self, name: str, arguments: dict[str, Any]) -> bool:
        validator = self._validators.get(name)
        if validator is None:
            from jsonschema import validators

            schema = self._tools[name].parameters
            validator = validators.validator_for(schema)(schema)
            self._validators[name] = validator
        return bool(validator.is_valid(arguments))

    def _start_streaming(self, i: int, out: list[ToolEvent]) -> bool:
        """A forced call whose head is written: announced, its arguments streamed."""
        head = _CALL_HEAD.match(self._text, i)
        if head is None:
            return False
        try:
            name = json.loads(f'"{head.group(1)}"')
        except ValueError:
            return False
        if name not in self._tools:
            return False
        out.append(CallStart(self.calls, self._new_id(), name))
        self.calls += 1
        self._arguments_at = head.end()
        self._streaming = (None, 0)
        self._stream_arguments(out)
        return True

    def _stream_arguments(self, out: list[ToolEvent]) -> bool:
        """Sends what is new of the streamed arguments; True once they are complete."""
        assert self._streaming is not None
        scan, sent = self._streaming
        text = self._text
        if scan is None:
            # The head may have been read before the whitespace that follows it was written.
            start = _skip_ws(text, self._arguments_at)
            if start == len(text):
                return False
            if text[start] not in "{[":
                return False  # not an object: the grammar writes none such; it is held
            scan = JsonScan(start)
        scan.advance(text)
        fragment = scan.compact_since(sent)
        if fragment:
            out.append(CallArguments(self.calls - 1, fragment))
        self._streaming = (scan, sent + len(fragment))
        if scan.end is None:
            return False
        j = _skip_ws(text, scan.end)
        if j == len(text):
            return False  # the call object's closing brace is still to come
        self._streaming = None
        self._pos = j + 1 if text[j] == "}" else j
        self._closing = CLOSE
        if self.calls >= self._max_calls:
            self.done = True
        return True


def _raw_arguments(raw: str) -> str:
    """The text of a call object's `arguments` value, as generated."""
    head = re.search(r'"arguments"[ \t\r\n]*:[ \t\r\n]*', raw)
    if head is None or raw[head.end() : head.end() + 1] not in ("{", "["):
        return "{}"
    scan = JsonScan(head.end())
    scan.advance(raw)
    return raw[head.end() : scan.end] if scan.end is not None else "{}"


def tool_format_for(template: ChatTemplate | None) -> ToolFormat:
    """The model's tool format, from its chat template: Hermes' when the template
    describes tools itself (it reads `tools`) and asks for `<tool_call>` tags; ovchat's own
    otherwise, also for a template whose tool format ovchat does not parse."""
    if template is not None and "tools" in template.variables and OPEN in template.source:
        return HERMES_FORMAT
    return OVCHAT_FORMAT
