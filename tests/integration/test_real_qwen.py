"""The real 1.5B chat model, Qwen2.5-Coder-1.5B-Instruct int4, through the `openai` SDK.

Opt-in: building it downloads 1.1 GB and takes minutes, more than `make test` can spend,
so these run only once it has been built (`make test-real` builds it and runs them; they
also run in `make test` on a machine where it exists, ~1 minute)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from app.modelstore import qwen_coder, store
from tests.conftest import STORE
from tests.integration.conftest import Server, start_server, stop_server

MODEL_DIR = store.model_dir(STORE, qwen_coder.NAME)

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(
        not store.is_complete(MODEL_DIR),
        reason=f"{qwen_coder.NAME} is not built: `make test-real` builds it (1.1 GB download) "
        "and runs these",
    ),
]

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def qwen_server(server_logs: Path) -> Iterator[Server]:
    server = start_server(server_logs, MODEL_DIR, qwen_coder.NAME)
    yield server
    stop_server(server)


def ask(server: Server, question: str, **extra: Any) -> Any:
    return server.client().chat.completions.create(
        model=server.model,
        messages=[{"role": "user", "content": question}],
        temperature=0,
        max_tokens=300,
        **extra,
    )


def test_capital(qwen_server: Server) -> None:
    choice = ask(qwen_server, "What is the capital of France?").choices[0]
    assert "Paris" in (choice.message.content or "")
    # The repaired tokenizer: the turn ends at <|im_end|>, which is never shown.
    assert choice.finish_reason == "stop"
    assert "<|im_end|>" not in (choice.message.content or "")


def test_writes_a_function(qwen_server: Server) -> None:
    choice = ask(qwen_server, "Write a Python function that reverses a string.").choices[0]
    assert re.search(r"\bdef \w+\(", choice.message.content or ""), choice.message.content


@pytest.mark.parametrize(
    "tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_forced_tool_call(qwen_server: Server, tool_choice: object) -> None:
    completion = ask(
        qwen_server, "What is the weather in Paris?", tools=[WEATHER], tool_choice=tool_choice
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message.content
    calls = choice.message.tool_calls or []
    assert [call.function.name for call in calls] == ["get_weather"]
    arguments = json.loads(calls[0].function.arguments)
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    assert "paris" in arguments["city"].lower()
    # Qwen's own call markup is the server's business, never the client's.
    assert "<tool_call>" not in (choice.message.content or "")
