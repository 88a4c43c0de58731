"""The output constraints OpenAI-compatible clients send beside `response_format`, in
one place: vLLM's `structured_outputs` (json, regex, choice, grammar, structural_tag), its
older `guided_*` spellings, and llama.cpp's `grammar` (GBNF). A request may carry one
constraint, from whichever field: two are a 400, never one silently dropped.

The engine's grammar language is xgrammar's EBNF, whose parser reads llama.cpp's GBNF
(`root ::= ...`, alternatives, groups, `*` `+` `?` `{m,n}`, character classes, string
escapes, `#` comments): a GBNF grammar goes to the engine as written, after the checks
here. What xgrammar cannot parse (an undefined rule, a syntax error) is refused by the
compile check before admission (app/engine/grammar_check.py), naming the field."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.core.schema import SchemaError, check_enforceable
from app.engine.base import Grammar, GrammarKind
from app.errors import ApiError
from app.protocol.openai_common import GenerationRequest

_ROOT = re.compile(r"^\s*root\s*::=", re.MULTILINE)


@dataclass(frozen=True)
class Constraint:
    grammar: Grammar
    param: str  # the field it came from, which a 400 names


def _bad(message: str, param: str) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value")


def choice_grammar(choices: list[str], param: str) -> str:
    """Exactly one of `choices`, as an EBNF alternation of string literals."""
    if any(choice == "" for choice in choices):
        raise _bad("choices must not be empty strings.", param)
    return "root ::= " + " | ".join(json.dumps(c, ensure_ascii=False) for c in choices)


def gbnf(text: str, param: str) -> str:
    """A llama.cpp GBNF grammar as the engine's EBNF: the same text, once it has the
    `root` rule generation starts from (llama.cpp's own requirement)."""
    if not text.strip():
        raise _bad("The grammar is empty.", param)
    if _ROOT.search(text) is None:
        raise _bad("The grammar has no 'root' rule (root ::= ...), where output starts.", param)
    return text.replace("\r\n", "\n")


def regex(text: str, param: str) -> str:
    if not text:
        raise _bad("The regex is empty.", param)
    return text


def json_schema(value: dict[str, Any] | str, param: str) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise _bad(f"The JSON schema is not JSON: {exc}", param) from exc
        if not isinstance(value, dict):
            raise _bad("The JSON schema must be an object.", param)
    try:
        check_enforceable(value, param)
    except SchemaError as exc:
        raise ApiError(400, str(exc), param=exc.param, code="invalid_value") from exc
    return json.dumps(value)


# What each member of structured_outputs, and each older field, becomes: the grammar's
# kind and the function that checks the value and writes the grammar's text.
_BUILDERS: dict[str, tuple[GrammarKind, Callable[[Any, str], str]]] = {
    "json": ("json_schema", json_schema),
    "json_object": ("json_schema", json_schema),
    "regex": ("regex", regex),
    "choice": ("ebnf", choice_grammar),
    "grammar": ("ebnf", gbnf),
    "structural_tag": ("structural_tag", lambda value, _: str(value)),
}


def _build(member: str, value: Any, param: str) -> Constraint:
    kind, build = _BUILDERS[member]
    return Constraint(Grammar(kind, build(value, param)), param)


def request_constraint(body: GenerationRequest) -> Constraint | None:
    """The request's one constraint outside `response_format`, or None."""
    found: list[Constraint] = []
    so = body.structured_outputs
    if so is not None:
        members = {
            "json": so.json_,
            "regex": so.regex,
            "choice": so.choice,
            "grammar": so.grammar,
            # vLLM's: any JSON object, as response_format's json_object.
            "json_object": {"type": "object"} if so.json_object else None,
            "structural_tag": so.structural_tag,
        }
        named = [name for name, value in members.items() if value is not None]
        if len(named) != 1:
            raise _bad(
                "structured_outputs takes exactly one of json, regex, choice, grammar, "
                f"json_object and structural_tag{'; it has ' + ', '.join(named) if named else ''}.",
                "structured_outputs",
            )
        found.append(_build(named[0], members[named[0]], f"structured_outputs.{named[0]}"))
    for param, member, value in (
        ("guided_json", "json", body.guided_json),
        ("guided_regex", "regex", body.guided_regex),
        ("guided_choice", "choice", body.guided_choice),
        ("guided_grammar", "grammar", body.guided_grammar),
        ("grammar", "grammar", body.grammar),  # llama.cpp's GBNF
    ):
        if value is not None:
            found.append(_build(member, value, param))
    if len(found) > 1:
        raise ApiError(
            400,
            "Only one output constraint is allowed; this request has "
            + ", ".join(c.param for c in found)
            + ".",
            param=found[1].param,
            code="invalid_value",
        )
    return found[0] if found else None


def only_one(constraint: Constraint | None, other: str | None) -> None:
    """`other` names a constraint the request has already (response_format, forced tool
    calls): both at once is a 400."""
    if constraint is not None and other is not None:
        raise ApiError(
            400,
            f"{constraint.param} cannot be combined with {other}: a request takes one "
            "output constraint.",
            param=constraint.param,
            code="invalid_value",
        )
