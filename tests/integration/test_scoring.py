"""The exact scoring path on the real default model: top_logprobs, logit_bias and the
prompt's log-probabilities, served by the second engine (app/engine/scoring.py), checked
against the continuous-batching engine and against optimum-intel's own logits."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.integration.conftest import Server, start_server, stop_server

QUESTION = [{"role": "user", "content": "Write a haiku about the sea."}]
PROMPT = "The capital of France is Paris. The capital of Germany is"
EXACT = ["--no-dynamic-quantization", "--inference-precision", "f32", "--kv-cache-precision", "f32"]


def export_dir(model_dir: Path) -> Path:
    return next(model_dir.rglob("openvino_model.xml")).parent


@pytest.fixture(scope="module")
def exact_server(server_logs: Path, default_model_dir: Path) -> Iterator[Server]:
    """Both engines in f32 without dynamic quantization, so their numbers can agree; the
    scoring engine unloads after 2 s idle."""
    server = start_server(
        server_logs, default_model_dir, "smollm2", *EXACT, "--scoring-idle-s", "2"
    )
    yield server
    stop_server(server)


def chat(server: Server, **body: Any) -> dict[str, Any]:
    payload = {"model": server.model, "messages": QUESTION, "temperature": 0, **body}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=payload, timeout=120)
    assert response.status_code == 200, response.text
    out: dict[str, Any] = response.json()
    return out


def completion(server: Server, **body: Any) -> dict[str, Any]:
    payload = {"model": server.model, "temperature": 0, **body}
    response = httpx.post(f"{server.url}/v1/completions", json=payload, timeout=120)
    assert response.status_code == 200, response.text
    out: dict[str, Any] = response.json()
    return out


def optimum_logprobs(model_dir: Path, ids: list[int]) -> np.ndarray:
    """log-softmax over the logits OVModelForCausalLM computes for `ids`, compiled with
    the exact server's properties."""
    import torch
    from optimum.intel import OVModelForCausalLM

    model = OVModelForCausalLM.from_pretrained(
        export_dir(model_dir),
        device="CPU",
        ov_config={
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0",
            "INFERENCE_PRECISION_HINT": "f32",
            "KV_CACHE_PRECISION": "f32",
        },
        compile=True,
    )
    with torch.no_grad():
        logits = model(
            input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)
        ).logits[0]
    rows: np.ndarray = logits.double().numpy()
    scores: np.ndarray = rows - np.logaddexp.reduce(rows, axis=1, keepdims=True)
    return scores


def test_requests_that_need_no_logits_never_start_it(exact_server: Server) -> None:
    # The first test of the module: nothing has asked the exact server for logits yet.
    chat(exact_server, max_tokens=4, logprobs=True)
    completion(exact_server, prompt=PROMPT, max_tokens=4, logprobs=0)
    assert "Scoring engine" not in exact_server.log_text()


def test_greedy_tokens_are_the_main_engines_and_the_chosen_token_is_first(
    exact_server: Server,
) -> None:
    plain = chat(exact_server, max_tokens=24, logprobs=True)
    scored = chat(exact_server, max_tokens=24, logprobs=True, top_logprobs=5)
    assert scored["choices"][0]["message"]["content"] == plain["choices"][0]["message"]["content"]
    main = plain["choices"][0]["logprobs"]["content"]
    exact = scored["choices"][0]["logprobs"]["content"]
    assert [t["token"] for t in exact] == [t["token"] for t in main]
    for ours, theirs in zip(exact, main, strict=True):
        assert len(ours["top_logprobs"]) == 5
        assert ours["top_logprobs"][0]["token"] == ours["token"]
        assert ours["top_logprobs"][0]["logprob"] == ours["logprob"]
        values = [a["logprob"] for a in ours["top_logprobs"]]
        assert values == sorted(values, reverse=True)
        # genai's paged attention and the stateful graph's attention are different
        # kernels: in f32 the two agree to ~2e-4 (docs/SCORING.md), not bit for bit.
        assert abs(ours["logprob"] - theirs["logprob"]) < 5e-4
    assert "Scoring engine loaded" in exact_server.log_text()


def test_streamed_alternatives_equal_the_whole_responses(exact_server: Server) -> None:
    whole = chat(exact_server, max_tokens=12, logprobs=True, top_logprobs=3)
    payload = {
        "model": exact_server.model,
        "messages": QUESTION,
        "temperature": 0,
        "max_tokens": 12,
        "logprobs": True,
        "top_logprobs": 3,
        "stream": True,
    }
    streamed: list[dict[str, Any]] = []
    with httpx.stream(
        "POST", f"{exact_server.url}/v1/chat/completions", json=payload, timeout=120
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    if choice.get("logprobs"):
                        streamed.extend(choice["logprobs"]["content"])
    assert streamed == whole["choices"][0]["logprobs"]["content"]


def test_a_bias_of_minus_100_removes_the_token_the_model_would_emit(
    exact_server: Server,
) -> None:
    plain = completion(exact_server, prompt=PROMPT, max_tokens=4, logprobs=1)
    first = plain["choices"][0]["logprobs"]["tokens"][0]
    tokenized = httpx.post(
        f"{exact_server.url}/tokenize",
        json={"model": exact_server.model, "prompt": first},
        timeout=30,
    ).json()
    [banned] = tokenized["tokens"]
    biased = completion(
        exact_server, prompt=PROMPT, max_tokens=4, logprobs=1, logit_bias={str(banned): -100}
    )
    tokens = biased["choices"][0]["logprobs"]["tokens"]
    assert tokens[0] != first
    assert first not in tokens
    # The reported log-probabilities are the model's own, before the bias: the banned
    # token is still the likeliest alternative at the first position.
    assert list(biased["choices"][0]["logprobs"]["top_logprobs"][0]) == [first]


def test_prompt_logprobs_equal_optimum_intels_log_softmax(
    exact_server: Server, default_model_dir: Path
) -> None:
    ids = httpx.post(
        f"{exact_server.url}/tokenize",
        json={"model": exact_server.model, "prompt": PROMPT},
        timeout=30,
    ).json()["tokens"]
    body = completion(exact_server, prompt=ids, max_tokens=0, echo=True, logprobs=5)
    choice = body["choices"][0]
    assert choice["text"] == PROMPT and choice["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": len(ids),
        "completion_tokens": 0,
        "total_tokens": len(ids),
    }
    logprobs = choice["logprobs"]
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    assert "".join(logprobs["tokens"]) == PROMPT
    assert logprobs["text_offset"][0] == 0
    reference = optimum_logprobs(default_model_dir, ids)
    for position in range(1, len(ids)):
        expected = reference[position - 1, ids[position]]
        assert math.isclose(logprobs["token_logprobs"][position], expected, abs_tol=1e-4)
        top = logprobs["top_logprobs"][position]
        assert len(top) <= 5
        best = np.sort(reference[position - 1])[::-1][: len(top)]
        assert np.allclose(sorted(top.values(), reverse=True), best, atol=1e-4)


def test_echo_with_generation_scores_the_prompt_then_the_answer(exact_server: Server) -> None:
    scored = completion(exact_server, prompt=PROMPT, max_tokens=3, echo=True, logprobs=2)
    plain = completion(exact_server, prompt=PROMPT, max_tokens=3)
    choice = scored["choices"][0]
    assert choice["text"] == PROMPT + plain["choices"][0]["text"]
    tokens = choice["logprobs"]["tokens"]
    assert "".join(tokens) == choice["text"]
    assert len(tokens) == scored["usage"]["prompt_tokens"] + 3
    offsets = choice["logprobs"]["text_offset"]
    assert offsets == [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]


def test_the_scoring_engine_unloads_when_idle_and_reloads_on_demand(exact_server: Server) -> None:
    unloads = exact_server.log_text().count("Scoring engine unloaded")
    chat(exact_server, max_tokens=2, logprobs=True, top_logprobs=1)
    deadline = time.monotonic() + 30
    while exact_server.log_text().count("Scoring engine unloaded") == unloads:
        assert time.monotonic() < deadline, "the scoring engine did not unload"
        time.sleep(0.5)
    loads = exact_server.log_text().count("Scoring engine loaded")
    again = chat(exact_server, max_tokens=2, logprobs=True, top_logprobs=1)
    assert again["choices"][0]["logprobs"]["content"]
    assert exact_server.log_text().count("Scoring engine loaded") == loads + 1


def test_the_responses_api_reports_alternatives_through_the_sdk(exact_server: Server) -> None:
    response = exact_server.client().responses.create(
        model=exact_server.model,
        input="Write a haiku about the sea.",
        temperature=0,
        max_output_tokens=8,
        top_logprobs=2,
        include=["message.output_text.logprobs"],
        store=False,
    )
    [message] = response.output
    [part] = message.content  # type: ignore[union-attr]
    assert part.logprobs  # type: ignore[union-attr]
    for item in part.logprobs:  # type: ignore[union-attr]
        assert item.top_logprobs[0].token == item.token
        assert len(item.top_logprobs) == 2


def test_concurrent_long_prompts_are_scored_as_if_alone(exact_server: Server) -> None:
    """Four ~1,300-token prompts at once: each scored message is larger than the pipe's
    buffer, and each sequence's KV state is its own, so the scores equal a lone request's."""
    text = " ".join(f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(100))
    body = {"model": exact_server.model, "prompt": text, "max_tokens": 1, "echo": True}
    body |= {"logprobs": 5, "temperature": 0}

    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=300) as client:
            url = f"{exact_server.url}/v1/completions"
            return await asyncio.gather(*(client.post(url, json=body) for _ in range(4)))

    alone = completion(exact_server, **{k: v for k, v in body.items() if k != "model"})
    together = asyncio.run(all_at_once())
    assert [r.status_code for r in together] == [200] * 4
    assert alone["usage"]["prompt_tokens"] > 1000
    for response in together:
        assert response.json()["choices"][0]["logprobs"] == alone["choices"][0]["logprobs"]
