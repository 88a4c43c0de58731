"""Every parameter of the API breadth with the real openai client against real servers:
the tiny Phi-3 (exact text) and the default model (real text, JSON, tools)."""

from __future__ import annotations

import json
import math
from typing import Any, cast

import httpx
import jsonschema
import openai
import pytest

from app.modelstore.tiny_phi3 import TINY_REPLY
from tests.integration.conftest import Server

HI = [{"role": "user", "content": "hi"}]
CITY_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "country": {"type": "string", "enum": ["France", "Germany", "Italy"]},
    },
    "required": ["city", "country"],
    "additionalProperties": False,
}
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 30},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
ADD: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}


def test_n_choices(tiny_server: Server) -> None:
    completion = tiny_server.client().chat.completions.create(
        model="tiny-phi3", messages=HI, n=3, temperature=0
    )
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert all(c.message.content == TINY_REPLY for c in completion.choices)
    assert completion.usage.completion_tokens == 3 * 29


def test_logprobs_are_real(tiny_server: Server) -> None:
    completion = tiny_server.client().chat.completions.create(
        model="tiny-phi3", messages=HI, temperature=0, logprobs=True, top_logprobs=0
    )
    content = completion.choices[0].logprobs.content
    assert len(content) == 28  # the reply's tokens; the closing <|end|> is not listed
    assert all(item.logprob <= 0 and math.isfinite(item.logprob) for item in content)
    assert b"".join(bytes(item.bytes) for item in content).decode() == TINY_REPLY
    stream = tiny_server.client().chat.completions.create(
        model="tiny-phi3", messages=HI, temperature=0, logprobs=True, stream=True
    )
    streamed = [
        item.logprob
        for c in stream
        if c.choices and c.choices[0].logprobs
        for item in c.choices[0].logprobs.content or []
    ]
    assert streamed == [item.logprob for item in content]


def test_top_logprobs_alternatives_through_the_sdk(tiny_server: Server) -> None:
    completion = tiny_server.client().chat.completions.create(
        model="tiny-phi3", messages=HI, logprobs=True, top_logprobs=3, temperature=0, max_tokens=5
    )
    content = completion.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content
    for item in content:
        assert len(item.top_logprobs) == 3
        assert item.top_logprobs[0].token == item.token  # greedy: the chosen one is likeliest
        assert item.top_logprobs[0].logprob == item.logprob


def test_penalties_and_extensions_accepted(tiny_server: Server) -> None:
    completion = tiny_server.client().chat.completions.create(
        model="tiny-phi3",
        messages=HI,
        temperature=0.5,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        max_tokens=10,
        extra_body={"top_k": 5, "min_p": 0.05, "repetition_penalty": 1.1},
    )
    assert completion.usage.completion_tokens <= 10


def test_json_schema_output_validates(default_server: Server) -> None:
    client = default_server.client()
    for stream in (False, True):
        response = client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "Name the capital of France as JSON."}],
            temperature=0,
            max_tokens=200,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "capital", "schema": CITY_SCHEMA, "strict": True},
            },
            stream=stream,
        )
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in response if c.choices)
        else:
            text = response.choices[0].message.content
            assert response.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(text), CITY_SCHEMA)


def test_json_object_parses(default_server: Server) -> None:
    completion = default_server.client().chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Reply with a JSON object with a key 'ok'."}],
        temperature=0,
        max_tokens=300,
        response_format={"type": "json_object"},
    )
    if completion.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(completion.choices[0].message.content), dict)
    else:  # the budget ran out mid-object: the prefix must still be JSON-shaped
        assert completion.choices[0].message.content.lstrip().startswith("{")


@pytest.mark.parametrize(
    "tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_forced_tool_calls_are_valid(default_server: Server, tool_choice: object) -> None:
    completion = default_server.client().chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER, ADD],
        tool_choice=tool_choice,
        temperature=0,
        max_tokens=200,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        tool = {"get_weather": WEATHER, "add": ADD}[call.function.name]
        jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])
    if isinstance(tool_choice, dict):
        assert [c.function.name for c in choice.message.tool_calls] == ["get_weather"]


def test_tool_calls_stream(default_server: Server) -> None:
    """The call's name comes first, its arguments in fragments as they are generated; the
    SDK's stream helper joins them and says when each call's arguments are done."""
    with default_server.client().chat.completions.stream(
        model="smollm2",
        messages=[{"role": "user", "content": "Add 2 and 3."}],
        tools=[cast(Any, ADD)],
        tool_choice="required",
        temperature=0,
        max_tokens=100,
    ) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    fragments = [e for e in events if e.type == "tool_calls.function.arguments.delta"]
    done = [e for e in events if e.type == "tool_calls.function.arguments.done"]
    assert len(fragments) > 2
    assert done and done[0].name == "add"
    jsonschema.validate(json.loads(done[0].arguments), ADD["function"]["parameters"])
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert (choice.message.tool_calls or [])[0].function.arguments == done[0].arguments


def test_tool_result_conversation(default_server: Server) -> None:
    completion = default_server.client().chat.completions.create(
        model="smollm2",
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"city": "Paris", "unit": "celsius"}',
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_abc", "content": "22 degrees and sunny"},
        ],
        tools=[WEATHER],
        tool_choice="none",
        temperature=0,
        max_tokens=60,
    )
    assert completion.choices[0].message.content


def test_legacy_completions(tiny_server: Server) -> None:
    client = tiny_server.client()
    completion = client.completions.create(
        model="tiny-phi3", prompt="<|user|>\nhi<|end|>\n<|assistant|>\n", temperature=0
    )
    assert completion.choices[0].text == TINY_REPLY
    assert completion.choices[0].finish_reason == "stop"
    batch = client.completions.create(
        model="tiny-phi3", prompt=["a", "b"], max_tokens=3, temperature=0, echo=True
    )
    assert [c.text[:1] for c in batch.choices] == ["a", "b"]
    assert all(c.finish_reason == "length" for c in batch.choices)
    stream = client.completions.create(
        model="tiny-phi3", prompt="<|assistant|>\n", temperature=0, stream=True, stop=["France"]
    )
    assert "".join(c.choices[0].text for c in stream if c.choices) == (
        "Hello! I am a helpful test model: the capital of "
    )
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny-phi3", prompt="x", suffix="y")


def test_tokenize_counts_equal_prompt_tokens(tiny_server: Server) -> None:
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hello"}]
    counted = httpx.post(f"{tiny_server.url}/tokenize", json={"messages": messages}).json()
    usage = (
        tiny_server.client()
        .chat.completions.create(model="tiny-phi3", messages=messages, max_tokens=1)
        .usage
    )
    assert counted["count"] == usage.prompt_tokens
    text = httpx.post(f"{tiny_server.url}/detokenize", json={"tokens": counted["tokens"]}).json()
    assert text["prompt"] == "\nBe terse.\n\nHello\n\n"  # special tokens are not shown


def test_optimum_engine_refuses_what_it_cannot_do(tiny_optimum_server: Server) -> None:
    client = tiny_optimum_server.client()
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="tiny-phi3", messages=HI, logprobs=True)
    assert "optimum" in error.value.message
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="tiny-phi3", messages=HI, response_format={"type": "json_object"}
        )


def test_openapi_describes_the_api(tiny_server: Server) -> None:
    paths = httpx.get(f"{tiny_server.url}/openapi.json").json()["paths"]
    for path in (
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/tokenize",
        "/detokenize",
        "/health",
    ):
        assert path in paths
