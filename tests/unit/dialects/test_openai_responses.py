"""The Responses dialect on its own, without HTTP: how items become the conversation the
model reads, truncation, tools with namespaces, refusals, and the renderer's events."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from pydantic import ValidationError

from app.chat_format import Turn
from app.core.generation import ArgumentsOut, CallOut, ChoiceEnd, TextOut
from app.core.tools import render_calls, render_result
from app.dialects.openai_responses import (
    ResponsesRenderer,
    encode,
    stored_items,
    to_turns,
    validate,
)
from app.errors import ApiError
from app.protocol.openai_responses import ITEMS, CreateResponse
from app.textmodel import TextModel
from tests.unit.dialects.test_openai_chat import context, run_for_plan

FN = {"type": "function", "name": "get_unit", "parameters": {"type": "object"}}
NAMESPACE = {"type": "namespace", "name": "files", "description": "", "tools": [FN]}


def request(**body: Any) -> CreateResponse:
    return CreateResponse.model_validate({"model": "tiny", "input": "Hi"} | body)


def test_items_become_the_templates_turns() -> None:
    items = ITEMS.validate_python(
        [
            {"role": "developer", "content": "Rules."},
            {
                "type": "message",
                "id": "m1",
                "role": "user",
                "content": [{"type": "input_text", "text": "Q"}],
            },
            {"role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
            {"type": "function_call", "call_id": "c1", "name": "get_unit", "arguments": "{}"},
            {
                "type": "function_call",
                "call_id": "c2",
                "namespace": "files",
                "name": "get_unit",
                "arguments": '{"a":1}',
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call_output", "call_id": "c2", "output": "done"},
            {"role": "user", "content": "Thanks"},
        ]
    )
    turns = to_turns(items, "Be brief.", None, {})
    calls = render_calls([("get_unit", "{}"), ("files.get_unit", '{"a":1}')])
    assert turns == [
        Turn("system", "Be brief."),
        Turn("system", "Rules."),
        Turn("user", "Q"),
        Turn("assistant", f"Let me look.\n{calls}"),
        Turn("user", render_result("files.get_unit", "done")),
        Turn("user", "Thanks"),
    ]


def test_auto_truncation_drops_the_oldest_items_and_keeps_system(text_model: TextModel) -> None:
    items = [{"role": "system", "content": "S"}] + [
        {"role": "user", "content": f"message number {i} " * 4} for i in range(6)
    ]
    whole = len(encode(request(input=items), context(text_model), []).ids)
    small = dataclasses.replace(text_model, context_length=whole - 10)
    ctx = context(small)
    with pytest.raises(ApiError) as refused:
        validate(request(input=items, max_output_tokens=5), ctx, [])
    assert refused.value.body.code == "context_length_exceeded"
    assert refused.value.body.param == "input"
    plan = validate(request(input=items, max_output_tokens=5, truncation="auto"), ctx, [])
    kept = plan.prompt.truncated
    assert kept >= 1 and plan.plan.prompt_tokens + 5 <= small.context_length
    rest = [items[0], *items[1 + kept :]]
    assert plan.plan.choices[0].prompt_ids == encode(request(input=rest), ctx, []).ids


def test_namespace_functions_are_called_by_their_qualified_name(text_model: TextModel) -> None:
    body = request(
        tools=[FN, NAMESPACE, {"type": "web_search"}],
        tool_choice={"type": "function", "namespace": "files", "name": "get_unit"},
    )
    plan = validate(body, context(text_model), [])
    assert plan.plan.tools is not None and plan.plan.tools.forced
    assert plan.plan.tools.names == {"files.get_unit"}
    assert plan.prompt.namespaces["files.get_unit"] == ("files", "get_unit")
    assert plan.plan.schema_param == "tools"
    described = validate(request(tools=[FN, {"type": "web_search"}]), context(text_model), [])
    assert described.plan.tools is not None and described.plan.tools.names == {"get_unit"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}}, "tool_choice"),
        ({"tools": [{"type": "web_search"}], "tool_choice": "required"}, "tool_choice"),
        ({"tools": [FN], "tool_choice": {"type": "function", "name": "other"}}, "tool_choice.name"),
        (
            {
                "tools": [FN],
                "tool_choice": {
                    "type": "allowed_tools",
                    "mode": "required",
                    "tools": [{"type": "function", "name": "x"}],
                },
            },
            "tool_choice.tools",
        ),
        ({"input": [{"type": "computer_call", "id": "c"}]}, "input[0].type"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        (
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_file", "file_id": "f"}],
                    }
                ]
            },
            "input[0].output[0].type",
        ),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"background": True, "stream": True}, "stream"),
        ({"input": []}, "input"),
    ],
)
def test_refusals_name_the_field(text_model: TextModel, body: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as refused:
        validate(request(**body), context(text_model), [])
    assert refused.value.status == 400 and refused.value.body.param == param


def test_stored_items_get_ids_and_parts() -> None:
    items = ITEMS.validate_python(
        [
            {"role": "user", "content": "Q"},
            {"type": "message", "id": "own", "role": "assistant", "content": "A"},
        ]
    )
    stored = stored_items(items)
    assert stored[0]["id"].startswith("msg_") and stored[1]["id"] == "own"
    assert stored[0]["content"] == [{"type": "input_text", "text": "Q"}]
    assert stored[1]["content"] == [{"type": "output_text", "text": "A", "annotations": []}]
    assert stored_items(ITEMS.validate_python(stored)) == stored  # they read back as they are


def test_the_renderer_streams_text_then_a_call(text_model: TextModel) -> None:
    body = request(tools=[FN], stream=True)
    prepared = validate(body, context(text_model), [])
    run = run_for_plan(text_model, prepared.plan, "resp_")
    renderer = ResponsesRenderer(run, body, prepared.prompt, None)
    frames = renderer.opening()
    for event in [
        TextOut(0, "Let me"),
        TextOut(0, " check."),
        CallOut(0, 0, "call_1", "get_unit"),
        ArgumentsOut(0, 0, '{"a":'),
        ArgumentsOut(0, 0, "1}"),
    ]:
        frames += renderer.frames(event)
    run.finishes[0] = "tool_calls"
    frames += renderer.frames(ChoiceEnd(0, "tool_calls"))
    events = [json.loads(f.split(b"data: ", 1)[1]) for f in frames]
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[6]["text"] == "Let me check." and events[12]["arguments"] == '{"a":1}'
    assert events[9]["output_index"] == 1 and events[9]["item"]["status"] == "in_progress"
    final = renderer.snapshot("completed")
    assert [item.type for item in final.output] == ["message", "function_call"]
    assert final.output[1].model_dump()["call_id"] == "call_1"


@pytest.mark.parametrize("kind", [{}, [], 3, None])
def test_an_item_or_tool_type_that_is_no_string_is_refused(kind: Any) -> None:
    for body in ({"input": [{"type": kind}]}, {"tools": [{"type": kind}]}):
        with pytest.raises(ValidationError):
            request(**body)
