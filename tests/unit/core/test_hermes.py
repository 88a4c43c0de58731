"""Tool calls in a chat template's own format (app/core/hermes.py): the parser that reads
the shapes a model writes them in, whatever the chunking, the forced grammar, and how a
model's format is chosen from its template."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from app.chat_format import ChatTemplate
from app.core.hermes import (
    HERMES_FORMAT,
    OPEN,
    HermesCallParser,
    compact,
    structural_tag,
    tool_format_for,
)
from app.core.tools import (
    OVCHAT_FORMAT,
    CallArguments,
    CallStart,
    FunctionTool,
    Text,
    ToolEvent,
    ToolPlan,
    no_parameters,
    plan_tools,
)
from app.prompt_templates import PHI3_CHAT_TEMPLATE, QWEN25_CODER_CHAT_TEMPLATE

WEATHER = FunctionTool(
    "get_weather",
    "The weather in a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city"],
        "additionalProperties": False,
    },
)
NOW = FunctionTool("now", "", no_parameters())


def plan(mode: str = "auto", max_calls: int = 4, name: str | None = None) -> ToolPlan:
    found = plan_tools(
        [WEATHER, NOW], mode, one_call=False, max_calls=max_calls, name=name, format=HERMES_FORMAT
    )  # type: ignore[arg-type]
    assert found is not None
    return found


def summary(events: list[ToolEvent]) -> dict[str, Any]:
    """What a client ends up with: the text, and each call's name and joined arguments."""
    text = "".join(e.text for e in events if isinstance(e, Text))
    names: dict[int, str] = {}
    arguments: dict[int, list[str]] = {}
    for event in events:
        if isinstance(event, CallStart):
            names[event.call] = event.name
            arguments[event.call] = []
        elif isinstance(event, CallArguments):
            arguments[event.call].append(event.fragment)
    return {"text": text, "calls": [(names[i], "".join(arguments[i])) for i in sorted(names)]}


def run(
    output: str, chunks: list[int] | None = None, tools: ToolPlan | None = None
) -> tuple[dict[str, Any], list[ToolEvent], HermesCallParser]:
    ids = itertools.count()
    parser = HermesCallParser(tools or plan(), new_id=lambda: f"call_{next(ids)}")
    events: list[ToolEvent] = []
    position = 0
    for size in chunks or [len(output)]:
        events += parser.feed(output[position : position + size])
        position += size
    events += parser.feed(output[position:])
    events += parser.close()
    return summary(events), events, parser


def calls(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"text": "", "calls": list(pairs)}


PARIS = ("get_weather", '{"city":"Paris"}')
TAGGED = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'

CASES: list[tuple[str, dict[str, Any] | None]] = [
    ("Hello there!", None),
    ("", None),
    (TAGGED, calls(PARIS)),
    (  # several, as the template separates them
        TAGGED + '\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>',
        calls(PARIS, ("now", "{}")),
    ),
    (  # what Qwen2.5-Coder-1.5B writes instead: a fenced object ...
        '```json\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n```',
        calls(("get_weather", '{"city":"Paris","days":2}')),
    ),
    (  # ... or a bare one, keys in any order
        '\n{ "arguments" : { "city" : "Par is" } , "name" : "get_weather" }',
        calls(("get_weather", '{"city":"Par is"}')),
    ),
    (  # OpenAI's wire shape: arguments as a JSON string, unwrapped
        '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
        calls(("get_weather", '{"city": "Paris"}')),
    ),
    ('{"name": "now"}', calls(("now", "{}"))),  # no arguments are none
    ('<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>', None),  # not offered
    ('{"name": "get_weather", "arguments": {"town": "Paris"}}', None),  # invalid arguments
    ('{"name": "get_weather", "arguments": {"city": 3}}', None),  # invalid arguments
    ('{"name": "get_weather", "arguments": {"city": "Paris"}, "why": 1}', None),  # not a call
    ('{"answer": 42}', None),  # JSON, but not a call
    ('```python\nprint("hi")\n```', None),
    ("```json\n[1, 2]\n```", None),
    ("<b>bold</b>", None),
    ('Sure: {"name": "now", "arguments": {}}', None),  # text first: text
    ('{"name": "get_weather", "arguments": {"city": "Pa', None),  # cut short: text
    (  # a call ends the reply: what follows it is not the reply's
        TAGGED + "\nThat is all.",
        calls(PARIS),
    ),
    (  # a later call of a function that is not offered ends the reply before it
        TAGGED + '\n<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>',
        calls(PARIS),
    ),
    (  # strings that look like the structure are strings
        '<tool_call>{"name": "get_weather", "arguments": {"city": "a \\"}] </tool_call>"}}'
        "</tool_call>",
        calls(("get_weather", '{"city":"a \\"}] </tool_call>"}')),
    ),
]


@pytest.mark.parametrize(("output", "expected"), CASES)
def test_the_same_result_split_at_every_boundary(
    output: str, expected: dict[str, Any] | None
) -> None:
    if expected is None:
        expected = {"text": output, "calls": []}  # text, exactly as generated
    whole, _, _ = run(output)
    assert whole == expected
    for cut in range(1, len(output)):
        assert run(output, [cut])[0] == expected, cut
    assert run(output, [1] * len(output))[0] == expected


FORCED = [(output, expected) for output, expected in CASES if output.startswith(OPEN)]


@pytest.mark.parametrize(("output", "expected"), FORCED)
def test_a_forced_reply_split_at_every_boundary(
    output: str, expected: dict[str, Any] | None
) -> None:
    """The tagged calls a grammar allows, streamed as they are generated: the same calls
    as when they are judged whole."""
    if expected is None:
        return  # a grammar allows offered functions only
    forced = plan("required")
    assert run(output, tools=forced)[0] == expected
    for cut in range(1, len(output)):
        assert run(output, [cut], tools=forced)[0] == expected, cut
    assert run(output, [1] * len(output), tools=forced)[0] == expected


def test_text_is_released_as_soon_as_it_cannot_be_a_call() -> None:
    parser = HermesCallParser(plan(), new_id=lambda: "call_0")
    assert parser.feed("  <tool_") == []  # could still be a tag
    assert parser.feed("cal") == []
    assert parser.feed("x") == [Text("  <tool_calx")]
    assert parser.feed(" more") == [Text(" more")]
    assert parser.text_mode and not parser.called
    parser = HermesCallParser(plan(), new_id=lambda: "call_0")
    assert parser.feed("``") == []
    assert parser.feed("`js") == []
    assert parser.feed("on\nHi") == [Text("```json\nHi")]


def test_a_reply_limited_to_one_call_ends_with_it() -> None:
    parser = HermesCallParser(plan(max_calls=1), new_id=lambda: "call_0")
    events = parser.feed(TAGGED)
    assert parser.done and summary(events) == calls(PARIS)


def test_a_forced_call_streams_its_arguments_as_they_are_generated() -> None:
    forced = plan("required")
    parser = HermesCallParser(forced, new_id=lambda: "call_0")
    assert parser.feed('<tool_call>\n{"name": "get_weather", "arguments": ') == [
        CallStart(0, "call_0", "get_weather")
    ]
    assert parser.feed('{"city"') == [CallArguments(0, '{"city"')]
    assert parser.feed(' : "Pa') == [CallArguments(0, ':"Pa')]
    assert parser.feed('ris" }') == [CallArguments(0, 'ris"}')]
    assert parser.feed("}\n</tool_call>") == []
    assert not parser.done  # another call may follow
    assert summary(parser.feed('\n<tool_call>\n{"name": "now", "arguments": {}}')) == {
        "text": "",
        "calls": [("now", "{}")],
    }
    assert parser.close() == [] and parser.calls == 2


def test_a_forced_call_cut_short_is_returned_as_far_as_it_got() -> None:
    output = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa'
    for cut in range(1, len(output)):
        result, _, parser = run(output, [cut], tools=plan("required"))
        assert result == calls(("get_weather", '{"city":"Pa')), cut
        assert parser.called


def test_a_forced_call_cut_before_its_arguments_has_empty_ones() -> None:
    result, _, _ = run('<tool_call>\n{"name": "now", "arguments": ', tools=plan("required"))
    assert result == calls(("now", "{}"))


@pytest.mark.parametrize("mode", ["auto", "required"])
def test_each_call_gets_a_fresh_id(mode: str) -> None:
    output = TAGGED + "\n" + TAGGED
    _, events, _ = run(output, tools=plan(mode))
    starts = [e for e in events if isinstance(e, CallStart)]
    assert [(s.call, s.id) for s in starts] == [(0, "call_0"), (1, "call_1")]


def test_compact_is_prefix_stable() -> None:
    raw = '{ "a" : [ 1 , "x y\\" z" ] ,\n "b": {} }'
    assert compact(raw) == '{"a":[1,"x y\\" z"],"b":{}}'
    for cut in range(len(raw)):
        assert compact(raw).startswith(compact(raw[:cut]))


def test_the_forced_grammar_is_the_templates_tagged_form() -> None:
    tag = json.loads(structural_tag([WEATHER, NOW], max_calls=4))
    assert tag == {
        "type": "structural_tag",
        "format": {
            "type": "tags_with_separator",
            "tags": [
                {
                    "type": "tag",
                    "begin": '<tool_call>\n{"name": "get_weather", "arguments": ',
                    "content": {"type": "json_schema", "json_schema": WEATHER.parameters},
                    "end": "}\n</tool_call>",
                },
                {
                    "type": "tag",
                    "begin": '<tool_call>\n{"name": "now", "arguments": ',
                    "content": {"type": "json_schema", "json_schema": NOW.parameters},
                    "end": "}\n</tool_call>",
                },
            ],
            "separator": "\n",
            "at_least_one": True,
            "stop_after_first": False,
        },
    }
    named = plan("named", name="now")
    assert named.grammar is None and named.structural_tag is not None
    assert json.loads(named.structural_tag)["format"]["stop_after_first"] is True
    assert plan().structural_tag is None  # auto: free decoding


def test_the_format_is_chosen_from_the_template() -> None:
    assert tool_format_for(ChatTemplate(QWEN25_CODER_CHAT_TEMPLATE, {})) is HERMES_FORMAT
    assert tool_format_for(ChatTemplate(PHI3_CHAT_TEMPLATE, {})) is OVCHAT_FORMAT
    assert tool_format_for(None) is OVCHAT_FORMAT
    # Tools described, but not in a format ovchat reads: its own format is used.
    other = "{% for t in tools %}{{ t | tojson }}{% endfor %}{{ messages[0]['content'] }}"
    assert tool_format_for(ChatTemplate(other, {})) is OVCHAT_FORMAT
