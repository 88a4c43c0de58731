"""What the exact scoring engine serves, through the HTTP layer on the scripted engine:
the parameters reach the engine, alternatives and the prompt's scores come back in each
API's shape, and what cannot be combined is a 400."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.modelstore.store import ResolvedModel
from app.server import create_app
from app.settings import Settings
from app.textmodel import TextModel
from tests.unit.fakes import FakeEngine

USER = [{"role": "user", "content": "What is the capital of France?"}]


def chat(client: TestClient, **body: Any) -> Any:
    return client.post("/v1/chat/completions", json={"model": "tiny", "messages": USER} | body)


def complete(client: TestClient, **body: Any) -> Any:
    return client.post("/v1/completions", json={"model": "tiny", "prompt": "Say:"} | body)


def test_top_logprobs_reach_the_engine_and_come_back_per_token(
    client: TestClient, engine: FakeEngine, text_model: TextModel
) -> None:
    body = chat(client, logprobs=True, top_logprobs=2, logit_bias={"5": -100, "7": 3}).json()
    params = engine.calls[-1][1]
    assert (params.top_logprobs, params.logit_bias) == (2, ((5, -100.0), (7, 3.0)))
    assert params.needs_logits
    for item in body["choices"][0]["logprobs"]["content"]:
        first, second = item["top_logprobs"]
        assert first == {"token": item["token"], "logprob": -0.25, "bytes": item["bytes"]}
        assert second["logprob"] == -1.25


def test_streamed_top_logprobs(client: TestClient) -> None:
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": USER,
            "stream": True,
            "logprobs": True,
            "top_logprobs": 1,
        },
    ) as response:
        text = "".join(response.iter_text())
    items = [
        item
        for line in text.splitlines()
        if line.startswith("data: {")
        for choice in json.loads(line[6:])["choices"]
        if choice.get("logprobs")
        for item in choice["logprobs"]["content"]
    ]
    assert items and all(len(i["top_logprobs"]) == 1 for i in items)


def test_echo_with_logprobs_scores_the_prompt_first(
    client: TestClient, engine: FakeEngine, text_model: TextModel
) -> None:
    body = complete(client, echo=True, logprobs=1, max_tokens=2).json()
    assert engine.calls[-1][1].prompt_logprobs == 1
    choice = body["choices"][0]
    prompt = text_model.encode("Say:")
    logprobs = choice["logprobs"]
    assert logprobs["token_logprobs"][: len(prompt)] == [None] + [-1.0] * (len(prompt) - 1)
    assert logprobs["token_logprobs"][len(prompt) :] == [-0.25, -0.25]
    assert logprobs["top_logprobs"][0] is None
    assert all(len(t) == 1 for t in logprobs["top_logprobs"][1:])
    assert logprobs["text_offset"][0] == 0
    assert choice["text"].startswith("Say:")


def test_max_tokens_zero_with_echo_is_pure_scoring(
    client: TestClient, text_model: TextModel
) -> None:
    body = complete(client, echo=True, logprobs=0, max_tokens=0).json()
    choice = body["choices"][0]
    assert choice["text"] == "Say:" and choice["finish_reason"] == "length"
    assert len(choice["logprobs"]["tokens"]) == len(text_model.encode("Say:"))
    assert "top_logprobs" not in choice["logprobs"]
    assert body["usage"]["completion_tokens"] == 0


def test_streamed_echo_waits_for_the_prompts_scores(client: TestClient) -> None:
    with client.stream(
        "POST",
        "/v1/completions",
        json={
            "model": "tiny",
            "prompt": "Say:",
            "stream": True,
            "echo": True,
            "logprobs": 0,
            "max_tokens": 1,
        },
    ) as response:
        text = "".join(response.iter_text())
    chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    first = chunks[0]["choices"][0]
    assert first["text"] == "Say:" and first["logprobs"]["token_logprobs"][0] is None


def test_logits_and_a_grammar_together_are_refused(client: TestClient, engine: FakeEngine) -> None:
    response = chat(client, logprobs=True, top_logprobs=2, response_format={"type": "json_object"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "top_logprobs"
    assert not engine.calls


@pytest.fixture
def plain_client(settings: Settings, engine: FakeEngine) -> Iterator[TestClient]:
    """A server whose engine has no scoring path beside it (--no-exact-scoring)."""
    engine.capabilities = engine.capabilities - {"logits"}

    def factory(_: Settings, __: ResolvedModel) -> FakeEngine:
        return engine

    with TestClient(create_app(settings, engine_factory=factory)) as test_client:
        yield test_client


def test_a_server_without_the_scoring_engine_refuses_them(
    plain_client: TestClient, engine: FakeEngine
) -> None:
    client = plain_client
    for response, param in (
        (chat(client, logprobs=True, top_logprobs=2), "top_logprobs"),
        (chat(client, logit_bias={"3": 1}), "logit_bias"),
        (complete(client, logprobs=3), "logprobs"),
        (complete(client, echo=True, logprobs=0), "echo"),
        (complete(client, max_tokens=0), "max_tokens"),
    ):
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param
    assert not engine.calls
