"""The Anthropic Messages dialect on its own, without HTTP: the conversation as turns, the
validator's plans and refusals, and the renderer's events for a scripted run."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.chat_format import Turn
from app.core.generation import ArgumentsOut, CallOut, ChoiceEnd, Event, TextOut
from app.core.plan import Limits, ModelContext
from app.core.run import GenerationRun
from app.core.tools import render_calls, render_result
from app.dialects.anthropic import (
    MessagesRenderer,
    build_prompt,
    count_tokens,
    stop_reason,
    to_turns,
    tool_input,
    tool_plan,
    validate,
)
from app.engine.base import STRUCTURED_OUTPUT
from app.errors import ApiError, validation_error
from app.protocol.anthropic import MessageCountTokensRequest, MessageCreateRequest
from app.textmodel import TextModel
from tests.unit.dialects.test_openai_chat import run_for_plan

UNIT_SCHEMA = {
    "type": "object",
    "properties": {"unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["unit"],
}
UNIT = {"name": "get_unit", "description": "The unit", "input_schema": UNIT_SCHEMA}
WEB = {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
HI = [{"role": "user", "content": "Hi"}]
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}


def context(text: TextModel, capabilities: frozenset[str] | None = None) -> ModelContext:
    return ModelContext(
        text=text,
        engine_name="fake",
        capabilities=frozenset({STRUCTURED_OUTPUT}) if capabilities is None else capabilities,
        limits=Limits(max_n=4, max_stop_sequences=4, max_messages=8, max_tool_calls=2),
    )


def request(**body: Any) -> MessageCreateRequest:
    return MessageCreateRequest.model_validate(
        {"model": "tiny", "max_tokens": 16, "messages": HI} | body
    )


def refusal(text: TextModel, body: dict[str, Any], **ctx: Any) -> ApiError:
    """The 400 a body gets, from the wire model or from the validator."""
    try:
        parsed = request(**body)
    except ValidationError as exc:
        return validation_error(RequestValidationError(exc.errors()))
    with pytest.raises(ApiError) as refused:
        validate(parsed, context(text, **ctx))
    return refused.value


def test_the_plan_of_a_request(text_model: TextModel) -> None:
    plan = validate(
        request(temperature=0.5, top_p=0.9, top_k=7, stop_sequences=["x", "yz"]),
        context(text_model),
    )
    [choice] = plan.choices
    assert choice.prompt_ids == text_model.encode_chat([Turn("user", "Hi")])
    assert plan.prompt_tokens == len(choice.prompt_ids)
    params = choice.params
    assert (params.max_new_tokens, params.temperature, params.top_p, params.top_k) == (
        16,
        0.5,
        0.9,
        7,
    )
    assert params.json_schema is None
    assert plan.stops == ["x", "yz"] and plan.tools is None and not plan.logprobs


def test_the_conversation_as_turns(text_model: TextModel) -> None:
    """System text first (the field, then system messages, in order), one turn per run of
    a role, tool traffic as the model is asked to write and read it, thinking dropped."""
    body = request(
        system=[
            {"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "B"},
        ],
        messages=[
            {"role": "user", "content": "What unit?"},
            {"role": "system", "content": [{"type": "text", "text": "C"}]},
            {"role": "user", "content": [{"type": "text", "text": "Tell me."}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_unit", "input": {"u": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "celsius"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "is_error": True,
                        "cache_control": {"type": "ephemeral"},
                        "content": [{"type": "text", "text": "boom"}],
                    },
                    {"type": "text", "text": "So?"},
                ],
            },
            {"role": "assistant", "content": ""},
        ],
    )
    assert to_turns(body, None) == [
        Turn("system", "A\n\nB\n\nC"),
        Turn("user", "What unit?\n\nTell me."),
        Turn("assistant", "Checking.\n" + render_calls([("get_unit", '{"u": 1}')])),
        Turn(
            "user",
            f"{render_result('get_unit', 'celsius')}\n\n"
            f"{render_result('get_unit', 'Error: boom')}\n\nSo?",
        ),
    ]
    tools = tool_plan(request(tools=[UNIT]), context(text_model))
    assert tools is not None
    with_tools = to_turns(request(system="S", tools=[UNIT]), tools)
    assert with_tools[0] == Turn("system", f"S\n\n{tools.system_text()}")


def test_tool_choice_maps_onto_the_cores_modes(text_model: TextModel) -> None:
    ctx = context(text_model)
    auto = tool_plan(request(tools=[UNIT, WEB]), ctx)
    assert auto is not None and not auto.forced and auto.names == {"get_unit"}
    assert auto.max_calls == 2
    single = tool_plan(
        request(tools=[UNIT], tool_choice={"type": "auto", "disable_parallel_tool_use": True}),
        ctx,
    )
    assert single is not None and not single.forced and single.max_calls == 1
    forced = tool_plan(request(tools=[UNIT, WEB], tool_choice={"type": "any"}), ctx)
    assert forced is not None and forced.forced and forced.max_calls == 2
    one = tool_plan(
        request(tools=[UNIT], tool_choice={"type": "any", "disable_parallel_tool_use": True}),
        ctx,
    )
    assert one is not None and one.max_calls == 1
    named = tool_plan(request(tools=[UNIT], tool_choice={"type": "tool", "name": "get_unit"}), ctx)
    assert named is not None and named.forced and named.max_calls == 1
    assert tool_plan(request(tools=[UNIT], tool_choice={"type": "none"}), ctx) is None
    assert tool_plan(request(tools=[WEB]), ctx) is None  # server tools only: none to describe


def test_a_forced_call_and_structured_output_constrain_the_reply(text_model: TextModel) -> None:
    ctx = context(text_model)
    plan = validate(request(tools=[UNIT], tool_choice={"type": "tool", "name": "get_unit"}), ctx)
    assert plan.tools is not None and plan.schema_param == "tool_choice"
    grammar = json.loads(plan.choices[0].params.json_schema or "")
    assert grammar["properties"]["tool_calls"]["maxItems"] == 1
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    structured = validate(
        request(
            output_config={"effort": "high", "format": {"type": "json_schema", "schema": schema}}
        ),
        ctx,
    )
    assert json.loads(structured.choices[0].params.json_schema or "") == schema
    assert structured.schema_param == "output_config.format"


def test_count_tokens_is_the_creates_prompt(text_model: TextModel) -> None:
    body = {"messages": HI, "system": "Be brief.", "tools": [UNIT], "tool_choice": {"type": "any"}}
    counted = count_tokens(
        MessageCountTokensRequest.model_validate({"model": "tiny"} | body), context(text_model)
    )
    assert counted == validate(request(**body), context(text_model)).prompt_tokens
    assert counted == len(build_prompt(request(**body), context(text_model)).ids)


def test_claude_codes_extras_are_accepted(text_model: TextModel) -> None:
    body = request(
        thinking={"type": "enabled", "budget_tokens": 2048},
        output_config={"effort": "medium"},
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        metadata={"user_id": "u"},
        tools=[
            UNIT | {"defer_loading": True, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
            {"type": "bash_20250124", "name": "bash"},
            {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
        ],
        some_future_field=1,
    )
    plan = validate(body, context(text_model))
    assert plan.tools is not None and plan.tools.names == {"get_unit"}
    assert plan.choices[0].params.json_schema is None
    assert body.model_extra == {"some_future_field": 1}


LONG = [{"role": "user", "content": "word " * 5000}]


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, IMAGE]}]},
            "messages[0].content[1]",
            "'image' content blocks are not supported",
        ),
        (
            {
                "messages": [
                    HI[0],
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t", "name": "x", "input": {}}],
                    },
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [{"type": "document", "source": {}}],
                            }
                        ],
                    },
                ]
            },
            "messages[2].content[0].content[0]",
            "'document' content blocks are not supported",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t"}]}]},
            "messages[0].content[0]",
            "not allowed in user messages",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "server_tool_use"}]}]},
            "messages[0].content[0]",
            "not supported by this server",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x"}]}
                ]
            },
            "messages[0].content[0].tool_use_id",
            "answers no tool_use block",
        ),
        (
            {"messages": [*HI, {"role": "assistant", "content": "The answer is"}]},
            "messages[1]",
            "prefill",
        ),
        (
            {"tools": [UNIT, WEB], "tool_choice": {"type": "tool", "name": "web_search"}},
            "tool_choice",
            "the server tool tools[1] (web_search_20250305)",
        ),
        (
            {"tools": [WEB], "tool_choice": {"type": "any"}},
            "tool_choice",
            "tools[0] (web_search_20250305)",
        ),
        ({"tools": [UNIT], "tool_choice": {"type": "tool", "name": "x"}}, "tool_choice", "'x'"),
        ({"tool_choice": {"type": "any"}}, "tool_choice", "needs tools"),
        ({"tools": [UNIT, UNIT]}, "tools", "unique"),
        ({"tools": [{"type": "fancy", "name": "f"}]}, "tools[0].server.type", ""),
        (
            {"max_tokens": 5000},
            "messages",
            "input length and `max_tokens` exceed context limit: 8 + 5000 > 4096, decrease "
            "input length or `max_tokens` and try again",
        ),
        ({"messages": LONG}, "messages", "prompt is too long: 10008 tokens > 4095 maximum"),
        (  # a block whose type is not a string is not a block (found by fuzzing: a 500)
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "", "content": [{"type": {}}]}
                        ],
                    }
                ]
            },
            "messages[0].content[0].tool_result.content[0].text",
            "",
        ),
        ({"messages": [{"role": "user", "content": [{"type": []}]}]}, "messages[0].content[0]", ""),
        ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences", "At most 4"),
        ({"stop_sequences": [""]}, "stop_sequences[0]", ""),
        ({"temperature": 1.5}, "temperature", ""),
        ({"max_tokens": 0}, "max_tokens", ""),
        ({"messages": []}, "messages", ""),
        ({"messages": HI * 9}, "messages", "At most 8 messages"),
        (
            {
                "tools": [UNIT | {"input_schema": {"type": "object", "not": {}}}],
                "tool_choice": {"type": "any"},
            },
            "tools[0].input_schema",
            "'not'",
        ),
        (
            {"output_config": {"format": {"type": "json_schema", "schema": {"uniqueItems": True}}}},
            "output_config.format.schema",
            "'uniqueItems'",
        ),
    ],
)
def test_what_the_dialect_refuses(
    text_model: TextModel, body: dict[str, Any], param: str, message: str
) -> None:
    error = refusal(text_model, body)
    assert error.status == 400
    assert error.body.param == param
    assert message in error.body.message


def test_a_grammar_needs_an_engine_that_constrains(text_model: TextModel) -> None:
    error = refusal(
        text_model, {"tools": [UNIT], "tool_choice": {"type": "any"}}, capabilities=frozenset()
    )
    assert error.body.param == "tool_choice"


# ---------------------------------------------------------------------------- renderer


def run_for(text_model: TextModel, body: MessageCreateRequest) -> GenerationRun:
    run = run_for_plan(text_model, validate(body, context(text_model)), "msg_")
    run.record["request_id"] = "r-1"
    return run


def stream_of(renderer: MessagesRenderer, events: list[Event]) -> list[tuple[str, Any]]:
    raw = b"".join(renderer.opening() + [f for e in events for f in renderer.frames(e)])
    raw += b"".join(renderer.closing() + renderer.end())
    out = []
    for frame in raw.decode().split("\n\n")[:-1]:
        event, data = frame.split("\n")
        assert event.startswith("event: ") and data.startswith("data: ")
        payload = json.loads(data[6:])
        assert payload["type"] == event[7:]
        out.append((event[7:], payload))
    return out


def test_the_renderer_streams_text_as_anthropic_does(text_model: TextModel) -> None:
    run = run_for(text_model, request(stream=True))
    run.tokens = [3]
    renderer = MessagesRenderer(run)
    events = stream_of(
        renderer,
        [TextOut(0, ""), TextOut(0, "Hel"), TextOut(0, "lo"), ChoiceEnd(0, "stop", "STOP")],
    )
    assert renderer.id == run.id and run.id.startswith("msg_")
    prompt = run.prompt_tokens
    assert events == [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": renderer.id,
                    "type": "message",
                    "role": "assistant",
                    "model": "tiny",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": prompt,
                        "output_tokens": 3,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                    },
                },
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hel"},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "lo"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "stop_sequence", "stop_sequence": "STOP"},
                "usage": {
                    "input_tokens": prompt,
                    "output_tokens": 3,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_the_renderer_streams_each_call_as_a_tool_use_block(text_model: TextModel) -> None:
    body = request(tools=[UNIT], tool_choice={"type": "any"}, stream=True)
    renderer = MessagesRenderer(run_for(text_model, body))
    events = stream_of(
        renderer,
        [
            CallOut(0, 0, "call_a", "get_unit"),
            ArgumentsOut(0, 0, '{"unit":'),
            ArgumentsOut(0, 0, '"celsius"}'),
            CallOut(0, 1, "call_b", "get_unit"),
            ArgumentsOut(0, 1, "{}"),
            ChoiceEnd(0, "tool_calls"),
        ],
    )
    middle = [(name, {k: v for k, v in e.items() if k != "type"}) for name, e in events[2:-2]]
    assert middle == [
        (
            "content_block_start",
            {
                "index": 0,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_a",
                    "name": "get_unit",
                    "input": {},
                },
            },
        ),
        (
            "content_block_delta",
            {"index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"unit":'}},
        ),
        (
            "content_block_delta",
            {"index": 0, "delta": {"type": "input_json_delta", "partial_json": '"celsius"}'}},
        ),
        ("content_block_stop", {"index": 0}),
        (
            "content_block_start",
            {
                "index": 1,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_b",
                    "name": "get_unit",
                    "input": {},
                },
            },
        ),
        (
            "content_block_delta",
            {"index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        ),
        ("content_block_stop", {"index": 1}),
    ]
    assert events[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert [block.model().model_dump() for block in renderer.blocks] == [
        {"type": "tool_use", "id": "toolu_a", "name": "get_unit", "input": {"unit": "celsius"}},
        {"type": "tool_use", "id": "toolu_b", "name": "get_unit", "input": {}},
    ]


def test_a_failure_mid_stream_is_an_anthropic_error_event(text_model: TextModel) -> None:
    renderer = MessagesRenderer(run_for(text_model, request()))
    [frame] = renderer.error(ApiError(503, "Generation failed: gone"))
    assert frame.decode() == (
        "event: error\n"
        'data: {"type":"error","error":{"type":"overloaded_error",'
        '"message":"Generation failed: gone"},"request_id":"r-1"}\n\n'
    )
    assert renderer.end() == []


@pytest.mark.parametrize(
    ("end", "finish", "reason"),
    [
        (ChoiceEnd(0, "stop"), None, "end_turn"),
        (ChoiceEnd(0, "stop", "###"), None, "stop_sequence"),
        (ChoiceEnd(0, "length"), None, "max_tokens"),
        (ChoiceEnd(0, "tool_calls"), None, "tool_use"),
        (None, "length", "max_tokens"),  # the time limit: no end, the run says length
    ],
)
def test_stop_reasons(end: ChoiceEnd | None, finish: str | None, reason: str) -> None:
    assert stop_reason(end, finish) == reason


def test_a_call_cut_short_keeps_what_its_fragments_say() -> None:
    assert tool_input('{"unit": "celsius", "n": 4') == {"unit": "celsius", "n": 4}
    assert tool_input('{"unit": "cel') == {}
    assert tool_input("") == {}
    assert tool_input("[1]") == {}
