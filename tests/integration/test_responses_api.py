"""The Responses API through the clients that speak it: the `openai` Python SDK
(responses.create, stream, parse, retrieve, delete, input_items, input_tokens, cancel),
OpenAI's agents SDK with its default (Responses) model, the JavaScript SDK, and raw HTTP,
against real servers on the tiny Phi-3 model, whose greedy answers are known exactly."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import openai
import pytest
from pydantic import BaseModel

from app.modelstore.tiny_phi3 import TINY_REPLY
from tests.integration.conftest import Server, run_js, start_server, stop_server

QUESTION = "can you introduce yourself?"
UNIT_TOOL = {
    "type": "function",
    "name": "get_unit",
    "description": "The unit to report temperatures in",
    "parameters": {
        "type": "object",
        "properties": {"unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["unit"],
        "additionalProperties": False,
    },
}
# A free string runs to the token budget on the tiny model, greedily: a long generation.
NOTE_TOOL = {
    "type": "function",
    "name": "note",
    "parameters": {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
}


@pytest.fixture(scope="module")
def client(tiny_server: Server) -> openai.OpenAI:
    return tiny_server.client()


def test_create_answers_exactly_and_counts(client: openai.OpenAI) -> None:
    response = client.responses.create(model="tiny-phi3", input=QUESTION, temperature=0)
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.error is None
    assert response.output_text == TINY_REPLY
    [message] = response.output
    assert message.type == "message" and message.role == "assistant"
    assert message.status == "completed" and message.id.startswith("msg_")
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 29)
    assert response.usage.total_tokens == 41
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert (response.temperature, response.truncation) == (0, "disabled")
    assert response.model_dump()["store"] is True
    counted = client.responses.input_tokens.count(model="tiny-phi3", input=QUESTION)
    assert counted.input_tokens == 12


def test_max_output_tokens_is_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="tiny-phi3", input=QUESTION, temperature=0, max_output_tokens=4
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.output_tokens == 4
    assert response.output[0].status == "incomplete"
    assert TINY_REPLY.startswith(response.output_text)


def test_the_text_stream_whole(client: openai.OpenAI) -> None:
    with client.responses.stream(model="tiny-phi3", input=QUESTION, temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas >= 2
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == TINY_REPLY
    assert final.output_text == TINY_REPLY and final.status == "completed"
    assert client.responses.retrieve(final.id).output_text == TINY_REPLY


def test_a_forced_call_streams_its_arguments_then_the_output_round_trip(
    client: openai.OpenAI,
) -> None:
    with client.responses.stream(
        model="tiny-phi3",
        input="What unit?",
        tools=[UNIT_TOOL],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    fragments = kinds.count("response.function_call_arguments.delta")
    assert fragments >= 1
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * fragments,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    [call] = final.output
    assert call.type == "function_call" and call.name == "get_unit"
    assert json.loads(call.arguments) == {"unit": "celsius"}
    assert call.call_id.startswith("call_") and call.id.startswith("fc_")
    # The result goes back through the stored conversation, or sent whole: the same prompt.
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "celsius"}
    chained = client.responses.create(
        model="tiny-phi3", previous_response_id=final.id, input=[output], temperature=0
    )
    assert chained.status == "completed" and chained.output[0].type == "message"
    sent_whole = client.responses.input_tokens.count(
        model="tiny-phi3",
        input=[
            {"role": "user", "content": "What unit?"},
            call.model_dump(exclude_none=True),
            output,
        ],
    )  # tools, like instructions, are the request's own: the chained one sent none
    assert chained.usage is not None
    assert chained.usage.input_tokens == sent_whole.input_tokens


class Unit(BaseModel):
    unit: Literal["celsius", "fahrenheit"]


def test_parse_returns_the_schemas_object(client: openai.OpenAI) -> None:
    parsed = client.responses.parse(
        model="tiny-phi3", input="Which unit?", text_format=Unit, temperature=0
    )
    assert parsed.output_parsed == Unit(unit="celsius")


def test_stored_responses_are_listed_retrieved_and_deleted(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="tiny-phi3",
        input=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "input_text", "text": QUESTION}]},
        ],
        temperature=0,
        metadata={"run": "a"},
    )
    assert first.metadata == {"run": "a"}
    items = client.responses.input_items.list(first.id)
    assert [item.role for item in items.data] == ["user", "developer"]  # newest first
    ascending = client.responses.input_items.list(first.id, order="asc", limit=1)
    assert [item.role for item in ascending.data] == ["developer"] and ascending.has_more
    rest = client.responses.input_items.list(first.id, order="asc", after=ascending.data[0].id)
    assert [item.role for item in rest.data] == ["user"] and not rest.has_more
    assert client.responses.retrieve(first.id).model_dump() == first.model_dump()
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError) as gone:
        client.responses.create(model="tiny-phi3", input="x", previous_response_id=first.id)
    assert gone.value.code == "previous_response_not_found"
    unstored = client.responses.create(model="tiny-phi3", input="x", store=False, temperature=0)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_background_runs_polls_and_cancels(client: openai.OpenAI) -> None:
    done = client.responses.create(
        model="tiny-phi3", input=QUESTION, background=True, temperature=0
    )
    assert done.status == "queued" and done.background
    deadline = time.monotonic() + 60
    while done.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.1)
        done = client.responses.retrieve(done.id)
    assert done.status == "completed" and done.output_text == TINY_REPLY
    long = client.responses.create(
        model="tiny-phi3",
        input="Take a note.",
        tools=[NOTE_TOOL],
        tool_choice="required",
        max_output_tokens=3000,  # greedy, about 5 s of generation
        temperature=0,
        background=True,
    )
    time.sleep(0.5)
    cancelled = client.responses.cancel(long.id)
    assert cancelled.status == "cancelled"
    assert client.responses.retrieve(long.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(client.responses.create(model="tiny-phi3", input="x").id)


def test_refusals_name_the_field(client: openai.OpenAI) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"input": "x" * 30000}, "input"),
        (
            {
                "input": "x",
                "tools": [{"type": "web_search"}],
                "tool_choice": {"type": "web_search"},
            },
            "tool_choice",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0].type",
        ),
        ({"input": "x", "top_logprobs": 21}, "top_logprobs"),
        ({"input": "x", "conversation": "conv_1"}, "conversation"),
        (
            {
                "input": "x",
                "text": {"format": {"type": "json_schema", "name": "n", "schema": {"not": {}}}},
            },
            "text.format.schema",
        ),
    ]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(model="tiny-phi3", **extra)
        assert refused.value.param == param, (extra, refused.value.body)
    with pytest.raises(openai.BadRequestError) as too_long:
        client.responses.create(model="tiny-phi3", input="word " * 5000)
    assert too_long.value.code == "context_length_exceeded"


def test_what_codex_sends_is_served(tiny_server: Server) -> None:
    """Codex CLI's request shape: developer messages, items with their own ids, a namespace
    tool and a web_search tool, reasoning and encrypted-content includes, store false."""
    body = {
        "model": "tiny-phi3",
        "instructions": "You are a coding agent.",
        "input": [
            {
                "type": "message",
                "id": "m1",
                "role": "developer",
                "content": [{"type": "input_text", "text": "Sandbox: none."}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": QUESTION}],
            },
        ],
        "tools": [
            UNIT_TOOL,
            {"type": "namespace", "name": "files", "description": "Files", "tools": [NOTE_TOOL]},
            {"type": "web_search", "external_web_access": False},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "session-1",
        "client_metadata": {"x": "y"},
        "text": {"verbosity": "low"},
    }
    with httpx.stream("POST", f"{tiny_server.url}/v1/responses", json=body, timeout=60) as response:
        assert response.status_code == 200
        kinds = [line[7:] for line in response.iter_lines() if line.startswith("event: ")]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    forced = body | {
        "stream": False,
        "tool_choice": {"type": "function", "namespace": "files", "name": "note"},
        "max_output_tokens": 80,
    }
    reply = httpx.post(f"{tiny_server.url}/v1/responses", json=forced, timeout=60).json()
    call = reply["output"][0]
    assert (call["type"], call["namespace"], call["name"]) == ("function_call", "files", "note")


@pytest.fixture(scope="module")
def keyed(server_logs: Path, tiny_model_dir: Path) -> Iterator[tuple[Server, Path]]:
    state = server_logs / "keyed-state"
    server = start_server(
        server_logs,
        tiny_model_dir,
        "tiny-phi3",
        "--state-dir",
        str(state),
        "--api-key",
        "sk-a",
        "--api-key",
        "sk-b",
    )
    yield server, state
    stop_server(server)


def test_a_conversation_survives_a_restart_and_stays_its_owners(
    keyed: tuple[Server, Path], server_logs: Path, tiny_model_dir: Path
) -> None:
    server, state = keyed
    owner = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-a", max_retries=0)
    other = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-b", max_retries=0)
    first = owner.responses.create(model="tiny-phi3", input=QUESTION, temperature=0)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="tiny-phi3", input="x", previous_response_id=first.id)
    stop_server(server)
    again = start_server(
        server_logs, tiny_model_dir, "tiny-phi3", "--state-dir", str(state), "--api-key", "sk-a"
    )
    try:
        owner = openai.OpenAI(base_url=f"{again.url}/v1", api_key="sk-a", max_retries=0)
        assert owner.responses.retrieve(first.id).output_text == TINY_REPLY
        second = owner.responses.create(
            model="tiny-phi3", input="And again?", previous_response_id=first.id, temperature=0
        )
        whole = owner.responses.input_tokens.count(
            model="tiny-phi3",
            input=[
                {"role": "user", "content": QUESTION},
                {"role": "assistant", "content": TINY_REPLY},
                {"role": "user", "content": "And again?"},
            ],
        )
        assert second.previous_response_id == first.id
        assert second.usage is not None and second.usage.input_tokens == whole.input_tokens
    finally:
        stop_server(again)


def test_the_agents_sdk_runs_a_tool_on_its_default_model(tiny_server: Server) -> None:
    from agents import (
        Agent,
        ModelSettings,
        Runner,
        function_tool,
        set_default_openai_client,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)
    set_default_openai_client(
        openai.AsyncOpenAI(base_url=f"{tiny_server.url}/v1", api_key="unused", max_retries=0),
        use_for_tracing=False,
    )
    calls: list[str] = []

    @function_tool
    def get_unit(unit: Literal["celsius", "fahrenheit"]) -> str:
        """The unit to report temperatures in."""
        calls.append(unit)
        return f"using {unit}"

    agent = Agent(
        name="weather",
        instructions="Be brief.",
        model="tiny-phi3",  # a model name: the agents SDK's default, Responses model
        tools=[get_unit],
        model_settings=ModelSettings(
            tool_choice="required", temperature=0, max_tokens=200, parallel_tool_calls=False
        ),
    )
    result = asyncio.run(Runner.run(agent, "What unit?", max_turns=3))
    assert calls == ["celsius"]
    assert result.final_output == TINY_REPLY


def test_the_javascript_sdk(js_sdk: Path, tiny_server: Server) -> None:
    out = run_js(js_sdk, "responses.mjs", tiny_server)
    assert out["text"] == TINY_REPLY and out["status"] == "completed"
    assert out["streamed"] == TINY_REPLY and out["final"] == TINY_REPLY
    assert out["last_event"] == "response.completed"
    assert out["call"] == {"name": "get_unit", "arguments": {"unit": "celsius"}}
    assert out["chained_status"] == "completed"
    assert out["not_found"] == 404
