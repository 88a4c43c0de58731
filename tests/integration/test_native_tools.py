"""Tools through the model's own template, on a real server: tiny-qwen2 carries
Qwen2.5-Coder's chat template, so its tools are described by the template, its calls are
Hermes' tagged calls, and a forced call is constrained to that form (app/core/hermes.py).
Greedy decoding makes every answer exact."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jsonschema
import openai
import pytest

from app.modelstore.tiny_qwen2 import REPLY
from tests.integration.conftest import Server, start_server, stop_server
from tests.tiny_qwen2 import tiny_qwen2_dir

MODEL = "tiny-qwen2"
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Rome", "Berlin"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
TIME_PARAMETERS = {
    "type": "object",
    "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": WEATHER_PARAMETERS,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The time in a zone.",
            "parameters": TIME_PARAMETERS,
        },
    },
]
SCHEMAS = {"get_weather": WEATHER_PARAMETERS, "get_time": TIME_PARAMETERS}
MESSAGES: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
NAMED: Any = {"type": "function", "function": {"name": "get_weather"}}
# What greedy decoding writes under each forced grammar (the model's noise, constrained).
REQUIRED_CALL = ("get_time", {"zone": "CET"})
NAMED_CALL = ("get_weather", {"city": "Paris", "days": 4})


@pytest.fixture(scope="session")
def qwen2_server(server_logs: Path) -> Iterator[Server]:
    server = start_server(server_logs, tiny_qwen2_dir(), MODEL)
    yield server
    stop_server(server)


def called(message: Any) -> list[tuple[str, Any]]:
    calls = [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls]
    for name, arguments in calls:
        jsonschema.validate(arguments, SCHEMAS[name])
    return calls


@pytest.mark.parametrize(("choice", "expected"), [("required", REQUIRED_CALL), (NAMED, NAMED_CALL)])
def test_a_forced_call_is_a_valid_call(
    qwen2_server: Server, choice: Any, expected: tuple[str, Any]
) -> None:
    completion = qwen2_server.client().chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice=choice, temperature=0
    )
    [answer] = completion.choices
    assert answer.finish_reason == "tool_calls" and answer.message.content is None
    assert called(answer.message) == [expected]
    assert answer.message.tool_calls and answer.message.tool_calls[0].id.startswith("call_")


@pytest.mark.parametrize(("choice", "expected"), [("required", REQUIRED_CALL), (NAMED, NAMED_CALL)])
def test_a_forced_call_streams_as_openai_streams_it(
    qwen2_server: Server, choice: Any, expected: tuple[str, Any]
) -> None:
    with qwen2_server.client().chat.completions.stream(
        model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice=choice, temperature=0
    ) as stream:
        seen = list(stream)
        final = stream.get_final_completion()
    fragments = [e for e in seen if e.type == "tool_calls.function.arguments.delta"]
    [done] = [e for e in seen if e.type == "tool_calls.function.arguments.done"]
    assert len(fragments) > 3  # the arguments stream as they are generated
    assert (done.name, json.loads(done.arguments)) == expected
    [answer] = final.choices
    assert answer.finish_reason == "tool_calls" and called(answer.message) == [expected]


def test_under_auto_a_text_reply_is_text(qwen2_server: Server) -> None:
    client = qwen2_server.client()
    completion = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, temperature=0
    )
    [answer] = completion.choices
    assert answer.finish_reason == "stop" and answer.message.content == REPLY
    assert answer.message.tool_calls is None
    stream = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, temperature=0, stream=True
    )
    deltas = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta]
    assert "".join(d or "" for d in deltas) == REPLY and len(deltas) > 10


def test_the_prompt_is_the_templates_rendering(qwen2_server: Server) -> None:
    """What the server sends the model for a conversation with tools, calls and results
    is what transformers' apply_chat_template renders: the usage counts it."""
    from transformers import AutoTokenizer

    arguments = {"city": "Paris", "days": 2}
    messages: list[Any] = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps(arguments)},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
    ]
    completion = qwen2_server.client().chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS, temperature=0, max_tokens=1
    )
    hf_messages = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": arguments}}
            ],
        },
        {"role": "tool", "content": "18 C, sunny"},
    ]
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2_dir())
    rendered = tokenizer.apply_chat_template(
        hf_messages, tools=TOOLS, add_generation_prompt=True, tokenize=False
    )
    assert "<tools>" in rendered and "<tool_response>" in rendered
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert completion.usage is not None and completion.usage.prompt_tokens == len(ids)
    # vLLM's /tokenize gives the very ids chat sends.
    tokenized = httpx.post(
        f"{qwen2_server.url}/tokenize",
        json={"model": MODEL, "messages": messages, "tools": TOOLS},
    ).json()
    assert tokenized["tokens"] == ids


def test_a_forced_call_through_anthropic_messages(qwen2_server: Server) -> None:
    client = anthropic.Anthropic(base_url=qwen2_server.url, api_key="unused", max_retries=0)
    message = client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=MESSAGES,
        tools=[
            {
                "name": "get_weather",
                "description": "The weather.",
                "input_schema": WEATHER_PARAMETERS,
            }
        ],
        tool_choice={"type": "tool", "name": "get_weather"},
        extra_body={"temperature": 0},  # this SDK's version has no temperature argument
    )
    assert message.stop_reason == "tool_use"
    [block] = message.content
    assert block.type == "tool_use" and (block.name, block.input) == NAMED_CALL


def test_a_forced_call_through_responses(qwen2_server: Server) -> None:
    response = qwen2_server.client().responses.create(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=[
            {
                "type": "function",
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER_PARAMETERS,
                "strict": True,
            }
        ],
        tool_choice={"type": "function", "name": "get_weather"},
        temperature=0,
    )
    [item] = response.output
    assert item.type == "function_call"
    assert (item.name, json.loads(item.arguments)) == NAMED_CALL


def test_a_grammar_the_compiler_refuses_is_a_400(qwen2_server: Server) -> None:
    """The structural tag is compiled in the probe before admission, like a JSON schema."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {
                    "type": "object",
                    "properties": {"a": {"type": "string", "pattern": "(?=x)y"}},
                    "required": ["a"],
                },
            },
        }
    ]
    with pytest.raises(openai.BadRequestError) as refused:
        qwen2_server.client().chat.completions.create(
            model=MODEL, messages=MESSAGES, tools=tools, tool_choice="required", temperature=0
        )
    assert refused.value.param == "tools"
    health = httpx.get(f"{qwen2_server.url}/health", timeout=5)
    assert health.status_code == 200


# ---------------------------------------------------------------------------- the real model

REAL = "qwen2.5-coder-1.5b-instruct"
CITY_TOOL: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "The city's name"}},
                "required": ["city"],
            },
        },
    }
]


@pytest.fixture(scope="session")
def real_server(server_logs: Path) -> Iterator[Server]:
    """Qwen2.5-Coder-1.5B-Instruct, when `ovchat model build qwen2.5-coder-1.5b-instruct`
    has built it: too large to build in `make test`."""
    from app.modelstore import store
    from app.settings import REPO_ROOT

    folder = store.model_dir(REPO_ROOT / "model_store", REAL)
    if not store.is_complete(folder):
        pytest.skip(f"{REAL} is not built")
    server = start_server(server_logs, folder, REAL)
    yield server
    stop_server(server)


@pytest.mark.parametrize("choice", ["auto", "required"])
def test_the_real_model_calls_through_its_own_format(real_server: Server, choice: str) -> None:
    """Forced, the call is its template's tagged form; under auto, the model's own answer
    (a fenced or bare JSON object, as it writes them) is a call as well."""
    completion = real_server.client().chat.completions.create(
        model=REAL,
        messages=[{"role": "user", "content": "What is the weather like in Paris right now?"}],
        tools=CITY_TOOL,
        tool_choice=choice,
        temperature=0,
        max_tokens=100,
    )
    [answer] = completion.choices
    assert answer.finish_reason == "tool_calls", answer.message.content
    [call] = answer.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
