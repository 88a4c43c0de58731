"""The official OpenAI Python client against the real server on the tiny Phi-3 model,
whose greedy answer to any chat prompt is TINY_REPLY followed by `<|end|>`."""

from __future__ import annotations

from typing import Any, Literal

import openai
import pydantic
import pytest

from app.chat_format import Turn
from app.modelstore.tiny_phi3 import TINY_REPLY
from app.textmodel import TextModel
from tests.integration.conftest import Server

MESSAGES = [
    {"role": "system", "content": "You are a helpful AI assistant."},
    {"role": "user", "content": "can you introduce yourself?"},
]


def test_chat_completion_exact_text(tiny_server: Server) -> None:
    completion = tiny_server.client().chat.completions.create(
        model="tiny-phi3",
        messages=MESSAGES,
        temperature=0,
    )
    choice = completion.choices[0]
    assert choice.message.content == TINY_REPLY
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"  # stopped on <|end|>, one of Phi-3's three eos ids
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "tiny-phi3"
    assert completion.system_fingerprint
    usage = completion.usage
    assert usage is not None
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_usage_counts_are_exact(tiny_server: Server, text_model: TextModel) -> None:
    completion = tiny_server.client().chat.completions.create(
        model="tiny-phi3",
        messages=MESSAGES,
        temperature=0,
    )
    prompt = text_model.formatter.render([Turn(m["role"], m["content"]) for m in MESSAGES])
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == len(text_model.encode(prompt))
    # The reply's tokens plus the `<|end|>` that ended it.
    assert completion.usage.completion_tokens == len(text_model.encode(TINY_REPLY)) + 1


def test_streaming_equals_plain(tiny_server: Server) -> None:
    stream = tiny_server.client().chat.completions.create(
        model="tiny-phi3",
        messages=MESSAGES,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    ids = {c.id for c in chunks}
    assert len(ids) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == TINY_REPLY
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 29


def test_max_tokens_and_max_completion_tokens(tiny_server: Server) -> None:
    client = tiny_server.client()
    for limit in ({"max_tokens": 4}, {"max_completion_tokens": 4}):
        completion = client.chat.completions.create(
            model="tiny-phi3",
            messages=MESSAGES,
            temperature=0,
            **limit,
        )
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage is not None and completion.usage.completion_tokens == 4
        assert completion.choices[0].message.content == "Hello! I am"


def test_stop_strings(tiny_server: Server) -> None:
    client = tiny_server.client()
    completion = client.chat.completions.create(
        model="tiny-phi3",
        messages=MESSAGES,
        temperature=0,
        stop=["capital", "model:"],
    )
    assert completion.choices[0].message.content == "Hello! I am a helpful test "
    assert completion.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(
        model="tiny-phi3",
        messages=MESSAGES,
        temperature=0,
        stop="Paris",
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello! I am a helpful test model: the capital of France is "


def test_seed_reproduces_sampling(tiny_server: Server) -> None:
    client = tiny_server.client()

    def sample(seed: int) -> str | None:
        return (
            client.chat.completions.create(
                model="tiny-phi3",
                messages=MESSAGES,
                temperature=1.5,
                top_p=0.95,
                seed=seed,
                max_tokens=24,
            )
            .choices[0]
            .message.content
        )

    assert sample(11) == sample(11)
    assert len({sample(s) for s in range(6)}) > 1


def test_typed_errors(tiny_server: Server) -> None:
    client = tiny_server.client()
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="tiny-phi3", messages=[], temperature=0)
    assert bad.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model="tiny-phi3", messages=MESSAGES, max_tokens=100_000)
    assert too_long.value.code == "context_length_exceeded"


def test_models(tiny_server: Server) -> None:
    client = tiny_server.client()
    assert [m.id for m in client.models.list()] == ["tiny-phi3"]
    assert client.models.retrieve("tiny-phi3").id == "tiny-phi3"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("other")


class Unit(pydantic.BaseModel):
    """The unit to report temperatures in."""

    unit: Literal["celsius", "fahrenheit"]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "Unit"}}])
def test_stream_helper_fires_tool_call_events(tiny_server: Server, choice: Any) -> None:
    """The SDK's stream helper sees OpenAI's shape: the call's arguments in fragments, then
    arguments.done (it fires only when the finish reason arrives in a chunk of its own),
    with the strict tool's arguments parsed into the model."""
    with tiny_server.client().chat.completions.stream(
        model="tiny-phi3",
        messages=MESSAGES,
        tools=[openai.pydantic_function_tool(Unit)],
        tool_choice=choice,
        temperature=0,
        max_tokens=80,
    ) as stream:
        seen = list(stream)
        final = stream.get_final_completion()
    fragments = [e for e in seen if e.type == "tool_calls.function.arguments.delta"]
    [done] = [e for e in seen if e.type == "tool_calls.function.arguments.done"]
    assert len(fragments) > 3 and done.name == "Unit"
    assert isinstance(done.parsed_arguments, Unit)
    assert done.arguments == fragments[-1].arguments  # the delta events carry the snapshot
    choice_ = final.choices[0]
    assert choice_.finish_reason == "tool_calls" and choice_.message.content is None
    [call] = choice_.message.tool_calls or []
    assert call.function.parsed_arguments == done.parsed_arguments


def test_stream_helper_streams_text_while_tools_are_offered(tiny_server: Server) -> None:
    with tiny_server.client().chat.completions.stream(
        model="tiny-phi3",
        messages=MESSAGES,
        tools=[openai.pydantic_function_tool(Unit)],
        temperature=0,
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
    assert len(deltas) > 10 and "".join(deltas) == TINY_REPLY
