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
    """The sample's path runs one request at a time, in arrival order: each request's
    tokens all come before the next request's first, and the ones that wait are counted
    as waiting while they do."""
    import re
    import threading
    import time

    import httpx

    url = tiny_optimum_server.url
    spans: dict[int, tuple[float, float, int]] = {}

    def ask(i: int) -> None:
        body = {
            "model": "tiny-phi3",
            "messages": [{"role": "user", "content": f"q{i}"}],
            "max_tokens": 300 + 10 * i,  # each answer has its own length
            "ignore_eos": True,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        first = last = 0.0
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if '"content":"' in line and '"role"' not in line:  # a token's text
                    last = time.monotonic()
                    first = first or last
                if '"usage":{' in line:
                    tokens = int(re.search(r'"completion_tokens":(\d+)', line).group(1))
        spans[i] = (first, last, tokens)

    waiting: list[float] = []
    polling = threading.Event()
    polling.set()

    def poll() -> None:
        while polling.is_set():
            metrics = httpx.get(f"{url}/metrics").text
            found = re.search(r'^ovchat_requests_waiting\{model="[^"]+"\} (\S+)', metrics, re.M)
            waiting.append(float(found.group(1)) if found else -1.0)
            time.sleep(0.02)

    poller = threading.Thread(target=poll)
    poller.start()
    threads = []
    for i in range(4):
        threads.append(threading.Thread(target=ask, args=(i,)))
        threads[-1].start()
        time.sleep(0.1)  # arrival order is 0, 1, 2, 3
    for thread in threads:
        thread.join()
    polling.clear()
    poller.join()
    assert [spans[i][2] for i in range(4)] == [300, 310, 320, 330]
    for i in range(3):
        # 50 ms for the client's threads reading two streams at once; requests that ran
        # side by side would overlap by most of their length (about a second each).
        assert spans[i][1] <= spans[i + 1][0] + 0.05, f"request {i + 1} overlapped request {i}"
        assert spans[i + 1][1] - spans[i + 1][0] > 0.2
    assert {3.0, 2.0, 1.0} <= set(waiting)  # three wait, then two, then one
