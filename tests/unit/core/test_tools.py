"""The tool-call parser (app/core/tools.py): text told from calls as they are generated,
whatever the chunking, and the grammar of forced calls."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import jsonschema
import pytest

from app.core.schema import SchemaError
from app.core.tools import (
    CallArguments,
    CallStart,
    FunctionTool,
    OfferedTool,
    Text,
    ToolCallParser,
    ToolEvent,
    calls_schema,
    no_parameters,
    plan_offered,
    plan_tools,
)

WEATHER = FunctionTool(
    "get_weather",
    "",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
NOW = FunctionTool("now", "", no_parameters())
PLAN = plan_tools([WEATHER, NOW], "auto", one_call=False, max_calls=4)


def summary(events: list[ToolEvent]) -> dict[str, Any]:
    """What a client ends up with: the text, and each call's name and joined arguments."""
    text = "".join(e.text for e in events if isinstance(e, Text))
    calls: dict[int, list[str]] = {}
    names: dict[int, str] = {}
    for event in events:
        if isinstance(event, CallStart):
            names[event.call] = event.name
            calls[event.call] = []
        elif isinstance(event, CallArguments):
            calls[event.call].append(event.fragment)
    return {"text": text, "calls": [(names[i], "".join(calls[i])) for i in sorted(names)]}


def run(output: str, chunks: list[int] | None = None) -> tuple[dict[str, Any], ToolCallParser]:
    ids = itertools.count()
    parser = ToolCallParser(PLAN, new_id=lambda: f"call_{next(ids)}")
    events: list[ToolEvent] = []
    position = 0
    for size in chunks or [len(output)]:
        events += parser.feed(output[position : position + size])
        position += size
    events += parser.feed(output[position:])
    events += parser.close()
    return summary(events), parser


CASES: list[tuple[str, dict[str, Any] | None, bool]] = [
    ("Hello there!", {"text": "Hello there!", "calls": []}, False),
    ('  \n{"answer": 42}', {"text": '  \n{"answer": 42}', "calls": []}, False),
    ('{"tool_calls": []}', {"text": '{"tool_calls": []}', "calls": []}, False),
    ('{"tool_calls": [{"name": "spam", "arguments": {}}]}', None, False),  # not offered
    (
        '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}',
        {"text": "", "calls": [("get_weather", '{"city":"Paris"}')]},
        True,
    ),
    (
        '{\n "tool_calls" : [ {"arguments": {"city": "a \\"}] b"}, "name": "get_weather"},'
        ' {"name": "now", "arguments": {}} ] } trailing text',
        {"text": "", "calls": [("get_weather", '{"city":"a \\"}] b"}'), ("now", "{}")]},
        True,
    ),
    (  # OpenAI's wire shape, which small models copy: a string is unwrapped
        '{"tool_calls": [{"name": "get_weather", "arguments": '
        '"{\\"city\\": \\"\\u00e9\\ud83d\\ude00\\"}"}]}',
        {"text": "", "calls": [("get_weather", '{"city": "é😀"}')]},
        True,
    ),
    (
        '{"tool_calls": [{"name": "now", "arguments": null}, {"name": "now"}]}',
        {"text": "", "calls": [("now", "{}"), ("now", "{}")]},
        True,
    ),
    (  # a second name is not a second call
        '{"tool_calls": [{"name": "now", "name": "get_weather", "arguments": {}}]}',
        {"text": "", "calls": [("now", "{}")]},
        True,
    ),
    (  # a later call of a function that is not offered ends the reply there
        '{"tool_calls": [{"name": "now", "arguments": {}}, {"name": "rm_rf", "arguments": {}}]}',
        {"text": "", "calls": [("now", "{}")]},
        True,
    ),
    (
        '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Par',
        {"text": "", "calls": [("get_weather", '{"city":"Par')]},
        False,
    ),
]


@pytest.mark.parametrize(("output", "expected", "done"), CASES)
def test_the_same_events_whatever_the_chunking(
    output: str, expected: dict[str, Any] | None, done: bool
) -> None:
    whole, parser = run(output)
    if expected is None:
        expected = {"text": output, "calls": []}
    assert whole == expected
    assert parser.done is done
    assert run(output, [1] * len(output))[0] == expected
    rng = random.Random(output)
    for _ in range(20):
        chunks = [rng.randint(1, 6) for _ in range(len(output))]
        assert run(output, chunks)[0] == expected


def test_text_is_released_as_soon_as_it_cannot_be_a_call() -> None:
    parser = ToolCallParser(PLAN)
    assert parser.feed('{"tool_c') == []  # could still be the wrapper
    assert parser.feed("x") == [Text('{"tool_cx')]  # cannot any more
    assert parser.feed(" more") == [Text(" more")]
    parser = ToolCallParser(PLAN)
    assert parser.feed('{"tool_calls": [{"name": "get_') == []
    assert parser.feed("x") == [Text('{"tool_calls": [{"name": "get_x')]


def test_a_started_call_without_arguments_has_empty_ones() -> None:
    summary_, _ = run('{"tool_calls": [{"name": "now"')
    assert summary_["calls"] == [("now", "{}")]


def test_forced_grammar_nests_each_functions_schema_with_its_references() -> None:
    address = {"type": "object", "properties": {"street": {"type": "string"}}}
    person = {
        "$defs": {"Address": address},
        "type": "object",
        "properties": {
            "home": {"$ref": "#/$defs/Address"},
            "friends": {"type": "array", "items": {"$ref": "#"}},
        },
    }
    schema = calls_schema([FunctionTool("person", "", person), NOW], max_calls=2)
    validator = jsonschema.Draft202012Validator(schema)
    good = {
        "tool_calls": [
            {"name": "person", "arguments": {"home": {"street": "x"}, "friends": [{}]}},
            {"name": "now", "arguments": {}},
        ]
    }
    assert validator.is_valid(good)
    bad_friend = {"tool_calls": [{"name": "person", "arguments": {"friends": [{"home": 1}]}}]}
    assert not validator.is_valid(bad_friend)  # the recursion still applies the schema
    assert not validator.is_valid({"tool_calls": [{"name": "now", "arguments": {"x": 1}}]})
    assert not validator.is_valid({"tool_calls": [good["tool_calls"][1]] * 3})  # maxItems
    assert json.loads(json.dumps(schema)) == schema


def test_a_named_choice_is_a_choice_whatever_the_functions_name() -> None:
    auto = FunctionTool("auto", "", no_parameters())
    required = FunctionTool("required", "", no_parameters())
    plan = plan_tools([auto, required], "named", one_call=False, max_calls=4, name="auto")
    assert plan is not None and plan.forced and plan.names == {"auto"} and plan.max_calls == 1
    assert no_parameters() is not no_parameters()  # no shared mutable default


def test_a_reply_limited_to_one_call_ends_with_it_also_under_auto() -> None:
    one = plan_tools([WEATHER, NOW], "auto", one_call=True, max_calls=4)
    assert one is not None and one.max_calls == 1 and one.grammar is None
    parser = ToolCallParser(one, new_id=lambda: "call_0")
    events = parser.feed(
        '{"tool_calls": [{"name": "now", "arguments": {}}, {"name": "now", "arguments": {}}]}'
    )
    assert summary(events)["calls"] == [("now", "{}")]
    assert parser.done


def test_offered_tools_are_checked_as_their_mode_needs() -> None:
    unenforceable = {"type": "object", "properties": {"a": {"not": {}}}}
    offered = [
        OfferedTool("a", "", unenforceable, "tools[0].input_schema"),
        OfferedTool("b", "", None, "tools[1].input_schema"),
    ]
    auto = plan_offered(offered, "auto", one_call=False, max_calls=4)
    assert auto is not None and auto.tools[1].parameters == no_parameters()
    assert plan_offered(offered, "named", one_call=False, max_calls=4, name="b") is not None
    with pytest.raises(SchemaError) as refused:
        plan_offered(offered, "required", one_call=False, max_calls=4)
    assert refused.value.param == "tools[0].input_schema"
    with pytest.raises(SchemaError):
        plan_offered([OfferedTool("c", "", {"type": 5}, "x")], "auto", False, 4)
