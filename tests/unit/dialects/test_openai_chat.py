"""The chat dialect on its own, without HTTP: the validator's plan, and the renderer's
frames for a scripted run of events."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.admission import Admission
from app.chat_format import Turn
from app.core.generation import ArgumentsOut, CallOut, ChoiceEnd, Event, TextOut
from app.core.plan import GenerationPlan, Limits, ModelContext
from app.core.run import GenerationRun
from app.dialects.openai_chat import ChatRenderer, validate
from app.engine.base import LOGPROBS, PENALTIES, STRUCTURED_OUTPUT
from app.errors import ApiError
from app.metrics import Metrics
from app.pool import ModelPool
from app.protocol.openai_chat import ChatCompletionRequest
from app.settings import Settings
from app.state import GenerationModel, ServerState
from app.storage.responses import open_store
from app.textmodel import TextModel
from tests.unit.fakes import FakeEngine

TOOL = {"type": "function", "function": {"name": "now", "description": "The time"}}


def context(text: TextModel, capabilities: frozenset[str] | None = None) -> ModelContext:
    return ModelContext(
        text=text,
        engine_name="fake",
        capabilities=capabilities
        if capabilities is not None
        else frozenset({LOGPROBS, STRUCTURED_OUTPUT, PENALTIES}),
        limits=Limits(max_n=4, max_stop_sequences=4, max_messages=8, max_tool_calls=2),
    )


def request(**body: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}]} | body
    )


def test_the_plan_of_a_request(text_model: TextModel) -> None:
    plan = validate(
        request(n=2, seed=9, temperature=0.5, max_tokens=7, stop="x"), context(text_model)
    )
    assert [c.params.seed for c in plan.choices] == [9, 10]
    assert {c.params.max_new_tokens for c in plan.choices} == {7}
    assert plan.choices[0].prompt_ids == text_model.encode_chat([Turn("user", "Hi")])
    assert plan.prompt_tokens == len(plan.choices[0].prompt_ids)
    assert plan.stops == ["x"] and plan.tools is None and not plan.logprobs


def test_a_forced_call_plans_its_grammar(text_model: TextModel) -> None:
    plan = validate(request(tools=[TOOL], tool_choice="required"), context(text_model))
    assert plan.tools is not None and plan.tools.forced
    grammar = json.loads(plan.choices[0].params.json_schema or "")
    assert grammar["properties"]["tool_calls"]["maxItems"] == 2
    auto = validate(request(tools=[TOOL]), context(text_model))
    assert auto.tools is not None and auto.choices[0].params.json_schema is None


@pytest.mark.parametrize(
    ("body", "capabilities", "param"),
    [
        ({"logit_bias": {"1": 1}}, None, "logit_bias"),
        ({"top_logprobs": 2, "logprobs": True}, None, "top_logprobs"),
        ({"n": 5}, None, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, None, "stop"),
        ({"max_tokens": 5000}, None, "messages"),
        ({"presence_penalty": 1.0}, frozenset(), "presence_penalty"),
        ({"response_format": {"type": "json_object"}}, frozenset(), "response_format"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"not": {}}},
                }
            },
            None,
            "response_format.json_schema.schema",
        ),
    ],
)
def test_what_the_validator_refuses(
    text_model: TextModel, body: dict[str, Any], capabilities: frozenset[str] | None, param: str
) -> None:
    with pytest.raises(ApiError) as refused:
        validate(request(**body), context(text_model, capabilities))
    assert refused.value.status == 400 and refused.value.body.param == param


def frames_of(renderer: ChatRenderer, events: list[Event]) -> list[dict[str, Any]]:
    raw = b"".join(renderer.opening() + [f for e in events for f in renderer.frames(e)])
    raw += b"".join(renderer.closing() + renderer.end())
    data = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def run_for(text_model: TextModel, body: ChatCompletionRequest) -> GenerationRun:
    return run_for_plan(text_model, validate(body, context(text_model)), "chatcmpl-")


def run_for_plan(text_model: TextModel, plan: GenerationPlan, prefix: str) -> GenerationRun:
    """A run of `plan` on a server state with a scripted engine, for a renderer to read."""
    settings = Settings(served_model_name="tiny")
    engine = FakeEngine(reply_ids=[], eos_id=0)
    model = GenerationModel(
        id="tiny",
        engine=engine,
        text=text_model,
        admission=Admission(4, 4),
        context=context(text_model),
        system_fingerprint="fp_test",
    )
    state = ServerState(
        settings=settings,
        models=ModelPool(settings, [], {}),
        created=0,
        metrics=Metrics(),
        responses=open_store(settings.state_dir, 10, 60.0),
    )
    return GenerationRun(state, model, plan, {}, prefix)


def test_the_renderer_writes_openais_stream_for_two_choices(text_model: TextModel) -> None:
    body = request(n=2, tools=[TOOL], stream=True, stream_options={"include_usage": True})
    run = run_for(text_model, body)
    run.tokens = [3, 5]
    events: list[Event] = [
        TextOut(0, "Hel"),
        CallOut(1, 0, "call_a", "now"),
        TextOut(0, "lo"),
        ArgumentsOut(1, 0, "{"),
        ArgumentsOut(1, 0, "}"),
        ChoiceEnd(0, "stop"),
        ChoiceEnd(1, "tool_calls"),
    ]
    chunks = frames_of(ChatRenderer(run, body), events)
    deltas = [(c["choices"][0]["index"], c["choices"][0]["delta"]) for c in chunks[:-1]]
    assert deltas == [
        (0, {"role": "assistant", "content": ""}),
        (0, {"content": "Hel"}),
        (
            1,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "now", "arguments": ""},
                    }
                ],
            },
        ),
        (0, {"content": "lo"}),
        (1, {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}),
        (1, {"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}),
        (0, {}),
        (1, {}),
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[-3:-1]] == ["stop", "tool_calls"]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8
    assert len({c["id"] for c in chunks}) == 1


def test_an_error_after_the_first_byte_is_one_event_then_done(text_model: TextModel) -> None:
    body = request(stream=True)
    renderer = ChatRenderer(run_for(text_model, body), body)
    error = ApiError(503, "gone", code="engine_unavailable")
    frames = b"".join(renderer.error(error) + renderer.end()).decode()
    assert frames == (
        'data: {"error":{"message":"gone","type":"service_unavailable","param":null,'
        '"code":"engine_unavailable"}}\n\ndata: [DONE]\n\n'
    )
