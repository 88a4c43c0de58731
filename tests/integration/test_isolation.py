"""One request can never break another: broken and hard schemas, sent with the official
SDK while other streams decode, get a 200 or a 400 each; the streams finish whole, /health
stays 200 and the engine never fails a step or restarts."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pydantic
import pytest

from tests.integration.conftest import Server


class Address(pydantic.BaseModel):
    street: str
    city: str


class Person(pydantic.BaseModel):
    """Nested models and recursion: what pydantic_function_tool and instructor send."""

    name: str
    home: Address
    friends: list[Person] = []


# (schema, the 400's words, or None for a schema that must be served)
SCHEMAS: list[tuple[dict[str, Any], str | None]] = [
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}, "points at nothing"),
    ({"$ref": "https://example.com/schema.json"}, "only JSON pointers within the schema"),
    ({"type": "string", "pattern": "^(?=a)a+$"}, "Lookahead is not supported"),
    ({"type": "string", "pattern": "^(a)\\1$"}, "Backreference is not supported"),
    ({"type": "integer", "minimum": 0.5}, "whole number"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "greater than maxLength"),
    ({"type": "object", "minProperties": 2, "additionalProperties": False}, "cannot be used"),
    ({"not": {"type": "string"}}, "keyword 'not'"),
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "'uniqueItems'"),
    ({"allOf": [{"type": "object"}, {"required": ["a"]}]}, "'allOf'"),
    ({"type": "nonsense"}, "Invalid JSON schema"),
    (
        {
            "$defs": {
                "Node": {
                    "type": "object",
                    "properties": {
                        "kind": {"const": "node"},
                        "label": {"type": "string", "pattern": "^[a-z]{1,8}$"},
                        "color": {"enum": ["red", "green"]},
                        "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                        "weight": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                    },
                    "required": ["kind", "label"],
                }
            },
            "$ref": "#/$defs/Node",
        },
        None,
    ),
    (Person.model_json_schema(), None),
]


def stream_tokens(server: Server, i: int) -> tuple[int, str]:
    body = {
        "model": "tiny-phi3",
        "messages": [{"role": "user", "content": f"stream {i}"}],
        "max_tokens": 1200,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream(
        "POST", f"{server.url}/v1/chat/completions", json=body, timeout=120
    ) as response:
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    usage = json.loads(lines[-2])["usage"]
    return usage["completion_tokens"], lines[-1]


def ask(server: Server, schema: dict[str, Any], as_tool: bool) -> openai.BaseModel | Exception:
    client = server.client()
    extra: dict[str, Any]
    if as_tool:
        extra = {
            "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
            "tool_choice": "required",
        }
    else:
        extra = {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema},
            }
        }
    try:
        completion: openai.BaseModel = client.chat.completions.create(
            model="tiny-phi3",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=40,
            temperature=0,
            **extra,
        )
        return completion
    except openai.APIStatusError as exc:
        return exc


def test_broken_and_hard_schemas_never_disturb_other_streams(tiny_server: Server) -> None:
    health: list[int] = []
    watching = threading.Event()
    watching.set()

    def watch() -> None:
        while watching.is_set():
            health.append(httpx.get(f"{tiny_server.url}/health", timeout=5).status_code)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            streams = [pool.submit(stream_tokens, tiny_server, i) for i in range(4)]
            time.sleep(0.5)
            cases = [(s, words, as_tool) for s, words in SCHEMAS for as_tool in (False, True)]
            answers = list(pool.map(lambda case: ask(tiny_server, case[0], case[2]), cases))
            finished = [future.result() for future in streams]
    finally:
        watching.clear()
        watcher.join()
    for (_, words, as_tool), answer in zip(cases, answers, strict=True):
        if words is None:
            assert isinstance(answer, openai.BaseModel), answer
        else:
            assert isinstance(answer, openai.BadRequestError), (words, answer)
            assert words in answer.message, answer.message
            # The field when the schema itself is refused, the request's part when it is
            # the compiler that refuses it.
            assert answer.param in (
                ("tools[0].function.parameters", "tools")
                if as_tool
                else ("response_format.json_schema.schema", "response_format")
            )
    assert finished == [(1200, "[DONE]")] * 4
    assert health and set(health) == {200}
    log = tiny_server.log_text()
    assert "Engine step failed" not in log and "Restarting the engine process" not in log


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "Person"}}]
)
def test_pydantic_function_tool_of_a_nested_model(tiny_server: Server, choice: Any) -> None:
    """What openai.pydantic_function_tool sends: $defs and $ref in the parameters."""
    tool = openai.pydantic_function_tool(Person)
    completion = tiny_server.client().chat.completions.create(
        model="tiny-phi3",
        messages=[{"role": "user", "content": "Who lives where?"}],
        tools=[tool],
        tool_choice=choice,
        max_tokens=50,
        temperature=0,
    )
    choice_ = completion.choices[0]
    [call] = choice_.message.tool_calls or []
    assert call.function.name == "Person"
    # The tiny model writes noise within the grammar; what it wrote follows the schema's
    # shape as far as it got: a name first, as Person's properties begin.
    assert call.function.arguments.startswith('{"name":"')
    assert choice_.finish_reason in ("tool_calls", "length")
