"""Speculative decoding in the genai engine, on real servers: greedy output is the plain
decoder's token for token (prompt lookup on the default model; a draft model that is the
model itself), also for requests moved to plain decoding once a busy batch's candidates
fail, the acceptance counters move, and constrained decoding still holds."""

from __future__ import annotations

import asyncio
import json
from asyncio import gather
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.texts import DOCUMENT
from tests.integration.conftest import Server, start_server, stop_server

PROMPTS = [
    "Repeat the following text exactly:\n\n" + DOCUMENT,  # copy-heavy: lookup finds n-grams
    "Write a short story about a lighthouse keeper.",  # free generation
]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_unit",
        "parameters": {
            "type": "object",
            "properties": {"unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["unit"],
        },
    },
}


# Both servers prefill these prompts in one chunk: chunk boundaries change a prompt's
# numerics (in plain decoding too, where they depend on what else is running), and
# speculation spends step budget on candidates, so with small steps the chunks differ.
ONE_CHUNK = ("--max-num-batched-tokens", "512")


# Dynamic quantization off: multi-token passes then compute each token's logits as
# one-token decoding does, and the outputs are equal token for token on any text.
EXACT = ("--no-dynamic-quantization", *ONE_CHUNK)
LOOKUP = ("--speculative-decoding", "prompt-lookup")


def serve(logs: Path, model: Path, *flags: str) -> Iterator[Server]:
    server = start_server(logs, model, "smollm2", *flags)
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def plain(server_logs: Path, default_model_dir: Path) -> Iterator[Server]:
    yield from serve(server_logs, default_model_dir, *EXACT)


@pytest.fixture(scope="module")
def lookup(server_logs: Path, default_model_dir: Path) -> Iterator[Server]:
    yield from serve(server_logs, default_model_dir, *LOOKUP, *EXACT)


@pytest.fixture(scope="module")
def plain_default(server_logs: Path, default_model_dir: Path) -> Iterator[Server]:
    yield from serve(server_logs, default_model_dir, *ONE_CHUNK)


@pytest.fixture(scope="module")
def lookup_default(server_logs: Path, default_model_dir: Path) -> Iterator[Server]:
    yield from serve(server_logs, default_model_dir, *LOOKUP, *ONE_CHUNK)


@pytest.fixture(scope="module")
def tiny_lookup(server_logs: Path, tiny_model_dir: Path) -> Iterator[Server]:
    """Busy from two sequences on. The tiny model's reply is a chain of distinct tokens
    the prompt does not hold, so lookup finds no candidate that is right."""
    server = start_server(
        server_logs, tiny_model_dir, "tiny-phi3", *LOOKUP, "--speculation-busy-at", "1"
    )
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def self_drafted(server_logs: Path, tiny_model_dir: Path) -> Iterator[Server]:
    server = start_server(
        server_logs,
        tiny_model_dir,
        "tiny-phi3",
        *("--speculative-decoding", "draft", "--draft-model", str(tiny_model_dir)),
    )
    yield server
    stop_server(server)


def greedy(server: Server, prompt: str, max_tokens: int = 120) -> tuple[str, int]:
    reply = server.client().chat.completions.create(
        model=server.model,
        messages=[{"role": "user", "content": prompt}],
        temperature=0,
        max_tokens=max_tokens,
    )
    assert reply.usage is not None
    return reply.choices[0].message.content or "", reply.usage.completion_tokens


def spec_metrics(server: Server) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics").text
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("ovchat_spec_decode")
    }


def counters(server: Server) -> tuple[float, float]:
    found = spec_metrics(server)
    return (
        found["ovchat_spec_decode_num_draft_tokens_total"],
        found["ovchat_spec_decode_num_accepted_tokens_total"],
    )


def moved(server: Server) -> float:
    return spec_metrics(server)["ovchat_spec_decode_moved_requests_total"]


@pytest.mark.parametrize("prompt", PROMPTS, ids=["copy", "free"])
def test_prompt_lookup_gives_the_plain_decoders_tokens(
    plain: Server, lookup: Server, prompt: str
) -> None:
    assert greedy(lookup, prompt) == greedy(plain, prompt)


def test_with_default_settings_copied_text_is_the_plain_decoders(
    plain_default: Server, lookup_default: Server
) -> None:
    """Dynamic quantization on (the default, and 2-4x faster verifying): on text the
    model copies, where no token is a near tie, the outputs are equal too."""
    text, tokens = greedy(lookup_default, PROMPTS[0], 200)
    assert (text, tokens) == greedy(plain_default, PROMPTS[0], 200)
    assert text.startswith(DOCUMENT[:80])


def test_prompt_lookup_counts_what_it_drafted_and_what_was_accepted(lookup: Server) -> None:
    before = counters(lookup)
    greedy(lookup, PROMPTS[0])
    drafted, accepted = (after - was for after, was in zip(counters(lookup), before, strict=True))
    # Copying a document, most candidates taken from the prompt are right (free
    # generation gets a few percent: bench/speculation.py).
    assert drafted > 0 and 0.5 * drafted < accepted <= drafted


def test_a_busy_batch_whose_candidates_fail_moves_to_plain_decoding(
    tiny_lookup: Server,
) -> None:
    """One request speculating, then three more while it decodes: more than busy_at, and
    none of the candidates right, so the speculating ones move to the plain pipeline
    mid-reply, each re-added as its prompt and what it had generated. Every reply is
    whole, no token lost or repeated. (The tiny model's reply does not hang on near ties,
    as the default model's free text does under any change of batch; the other tests
    here compare one request at a time.)"""
    from app.modelstore.tiny_phi3 import TINY_REPLY

    body = {"model": tiny_lookup.model, "temperature": 0, "max_tokens": 100}

    def ask(n: int) -> dict[str, Any]:
        return body | {"messages": [{"role": "user", "content": f"hi {n}"}]}

    async def replies() -> list[str]:
        async with httpx.AsyncClient(base_url=tiny_lookup.url, timeout=60) as client:
            first = ""
            others: list[Any] = []
            streamed = ask(0) | {"stream": True}
            async with client.stream("POST", "/v1/chat/completions", json=streamed) as r:
                async for line in r.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    delta = json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                    if delta and not others:  # it is decoding: send the rest now
                        sent = (client.post("/v1/chat/completions", json=ask(n)) for n in (1, 2, 3))
                        others = [asyncio.ensure_future(request) for request in sent]
                    first += delta
            rest = [r.json()["choices"][0]["message"]["content"] for r in await gather(*others)]
            return [first, *rest]

    before = moved(tiny_lookup)
    assert asyncio.run(replies()) == [TINY_REPLY] * 4
    assert moved(tiny_lookup) - before >= 1


def test_constrained_decoding_holds_while_speculating(lookup: Server) -> None:
    """The grammar holds every token. A request with one decodes in the plain pipeline:
    a grammar's state would not survive a move there."""
    before = counters(lookup)
    for _ in range(3):
        reply = lookup.client().chat.completions.create(
            model=lookup.model,
            messages=[{"role": "user", "content": "Which unit?"}],
            tools=[TOOL],  # type: ignore[list-item]
            tool_choice="required",
            temperature=0,
        )
        made = reply.choices[0].message.tool_calls or []
        assert made and reply.choices[0].finish_reason == "tool_calls"
        for call in made:
            assert call.function.name == "get_unit"  # type: ignore[union-attr]
            assert json.loads(call.function.arguments)["unit"] in ("celsius", "fahrenheit")  # type: ignore[union-attr]
    assert counters(lookup) == before  # nothing drafted


def test_a_model_drafting_for_itself_is_always_right(self_drafted: Server) -> None:
    """The draft-model path, wired end to end: with the model as its own draft every
    candidate is the model's own next token."""
    text, _ = greedy(self_drafted, "can you introduce yourself?")
    from app.modelstore.tiny_phi3 import TINY_REPLY

    assert text == TINY_REPLY
    drafted, accepted = counters(self_drafted)
    assert drafted > 0 and accepted == drafted
