"""The output constraints beside response_format: each field's grammar, and the 400s."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.core.constraints import choice_grammar, gbnf, request_constraint
from app.errors import ApiError
from app.protocol.openai_completions import CompletionRequest


def body(**fields: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({"model": "m", "prompt": "x", **fields})


@pytest.mark.parametrize(
    ("fields", "kind", "param"),
    [
        ({"structured_outputs": {"regex": "[a-z]+"}}, "regex", "structured_outputs.regex"),
        ({"structured_outputs": {"choice": ["a", "b"]}}, "ebnf", "structured_outputs.choice"),
        (
            {"structured_outputs": {"json": {"type": "object"}}},
            "json_schema",
            "structured_outputs.json",
        ),
        ({"structured_outputs": {"grammar": 'root ::= "a"'}}, "ebnf", "structured_outputs.grammar"),
        (
            {"structured_outputs": {"json_object": True}},
            "json_schema",
            "structured_outputs.json_object",
        ),
        ({"guided_json": '{"type": "string"}'}, "json_schema", "guided_json"),
        ({"guided_regex": "a|b"}, "regex", "guided_regex"),
        ({"guided_choice": ["x"]}, "ebnf", "guided_choice"),
        ({"guided_grammar": "root ::= [0-9]+"}, "ebnf", "guided_grammar"),
        ({"grammar": "root ::= [0-9]+ # digits"}, "ebnf", "grammar"),
    ],
)
def test_each_field_becomes_one_grammar(fields: dict[str, Any], kind: str, param: str) -> None:
    constraint = request_constraint(body(**fields))
    assert constraint is not None
    assert (constraint.grammar.kind, constraint.param) == (kind, param)


def test_choices_are_string_literals_escaped_as_json() -> None:
    text = choice_grammar(['say "hi"', "back\\slash", "naïve"], "guided_choice")
    assert text == 'root ::= "say \\"hi\\"" | "back\\\\slash" | "naïve"'
    assert json.loads(text.split(" | ")[0].removeprefix("root ::= ")) == 'say "hi"'


def test_a_gbnf_grammar_is_passed_as_written_with_its_root() -> None:
    grammar = 'root ::= item ("," item)*\r\nitem ::= [a-z]{1,3}\r\n'
    assert gbnf(grammar, "grammar") == 'root ::= item ("," item)*\nitem ::= [a-z]{1,3}\n'


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"grammar": "item ::= [a-z]"}, "grammar"),
        ({"grammar": "  "}, "grammar"),
        ({"guided_regex": ""}, "guided_regex"),
        ({"guided_choice": ["a", ""]}, "guided_choice"),
        ({"guided_json": "[1, 2]"}, "guided_json"),
        ({"guided_json": "{not json"}, "guided_json"),
        ({"structured_outputs": {}}, "structured_outputs"),
        ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs"),
        ({"guided_regex": "a", "grammar": 'root ::= "a"'}, "grammar"),
    ],
)
def test_refusals_name_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as error:
        request_constraint(body(**fields))
    assert error.value.body.param == param
    assert error.value.status == 400


def test_backend_options_are_refused_not_dropped() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        body(structured_outputs={"regex": "a", "disable_any_whitespace": True})


def test_no_constraint() -> None:
    assert request_constraint(body()) is None
