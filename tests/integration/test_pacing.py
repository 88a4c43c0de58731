"""Prefill pacing on a real engine (app/engine/pacing.py): a long prompt that arrives
while another request decodes goes in as pieces the prefix cache keeps, is answered in
full, and, sent again, finds its prefix cached and needs no pieces; the stream beside it
is not disturbed. What it buys in latency is measured by bench/burst.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.texts import DOCUMENT
from tests.integration.conftest import Server, start_server, stop_server

PACE = 32
LONG = "Summarise this:\n\n" + "\n\n".join([DOCUMENT] * 4)  # ~730 tokens


@pytest.fixture(scope="module")
def paced(server_logs: Path, default_model_dir: Path) -> Iterator[Server]:
    server = start_server(
        server_logs,
        default_model_dir,
        "smollm2",
        *("--max-num-batched-tokens", "256", "--prefill-pace-tokens", str(PACE)),
    )
    yield server
    stop_server(server)


def pieces(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ovchat_prefill_pieces_total":
                return sample.value
    raise AssertionError("no ovchat_prefill_pieces_total series")


def long_reply_beside_a_stream(server: Server) -> tuple[str, int, int]:
    """The long prompt's reply and prompt tokens, sent once a stream is decoding, and
    how many tokens that stream produced (all it was asked for)."""
    client = server.client()
    started = threading.Event()
    streamed: list[int] = []

    def decode() -> None:
        stream = client.chat.completions.create(
            model=server.model,
            messages=[{"role": "user", "content": "Tell me a long story."}],
            max_tokens=120,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                started.set()
            if chunk.usage is not None:
                streamed.append(chunk.usage.completion_tokens)

    worker = threading.Thread(target=decode)
    worker.start()
    assert started.wait(60)
    reply = client.chat.completions.create(
        model=server.model,
        messages=[{"role": "user", "content": LONG}],
        max_tokens=16,
        temperature=0,
    )
    worker.join(120)
    assert reply.usage is not None and reply.choices[0].finish_reason in ("stop", "length")
    return reply.choices[0].message.content or "", reply.usage.prompt_tokens, streamed[0]


def test_a_long_prompt_beside_a_stream_goes_in_pieces_then_finds_them_cached(
    paced: Server,
) -> None:
    before = pieces(paced)
    text, prompt_tokens, streamed = long_reply_beside_a_stream(paced)
    fed = pieces(paced) - before
    assert text and streamed == 120
    # Whole blocks of PACE tokens up to the last one the pace cannot take whole: unless
    # the stream ended first (then the rest went in at once), that is every block.
    assert 1 <= fed <= prompt_tokens // PACE
    again = pieces(paced)
    _, _, streamed = long_reply_beside_a_stream(paced)
    assert streamed == 120
    assert pieces(paced) == again  # the ledger knew the prefix was cached
