"""The fast engine against the sample's path: identical greedy text for the same requests."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import Server

REQUESTS: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "can you introduce yourself?"}]},
    {
        "messages": [
            {"role": "system", "content": "You are a helpful AI assistant."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And of Germany?"},
        ]
    },
    {"messages": [{"role": "user", "content": "Count to ten"}], "max_tokens": 9},
    {"messages": [{"role": "user", "content": "x"}], "stop": ["France"]},
    {
        "messages": [{"role": "user", "content": "long"}],
        "max_tokens": 60,
        "extra_body": {"ignore_eos": True},
    },
]


@pytest.mark.parametrize("request_body", REQUESTS)
def test_genai_and_optimum_agree(
    tiny_server: Server, tiny_optimum_server: Server, request_body: dict[str, Any]
) -> None:
    answers = []
    for server in (tiny_server, tiny_optimum_server):
        completion = server.client().chat.completions.create(
            model="tiny-phi3", temperature=0, **request_body
        )
        assert completion.usage is not None
        answers.append(
            (
                completion.choices[0].message.content,
                completion.choices[0].finish_reason,
                completion.usage.completion_tokens,
            )
        )
    assert answers[0] == answers[1]


def test_optimum_serves_one_at_a_time_in_order(tiny_optimum_server: Server) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client = tiny_optimum_server.client()

    def ask(i: int) -> str | None:
        return (
            client.chat.completions.create(
                model="tiny-phi3", messages=[{"role": "user", "content": f"q{i}"}], temperature=0
            )
            .choices[0]
            .message.content
        )

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, range(4)))
    assert len(set(answers)) == 1
