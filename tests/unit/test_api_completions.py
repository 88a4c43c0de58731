from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.protocol.openai_completions import Completion, CompletionChoice
from app.textmodel import TextModel
from tests.unit.conftest import REPLY
from tests.unit.fakes import FakeEngine


def complete(client: TestClient, **body: Any) -> Any:
    return client.post("/v1/completions", json={"model": "tiny", "prompt": "Say:"} | body)


def test_text_completion(client: TestClient, text_model: TextModel) -> None:
    body = complete(client, temperature=0).json()
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["system_fingerprint"].startswith("fp_")
    assert body["choices"] == [
        {"index": 0, "text": REPLY, "finish_reason": "stop", "logprobs": None}
    ]
    assert body["usage"]["prompt_tokens"] == len(text_model.encode("Say:"))


def test_prompt_list_and_n(client: TestClient, engine: FakeEngine) -> None:
    body = complete(client, prompt=["a", "bb"], n=2, seed=1).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert [p.seed for _, p in engine.calls] == [1, 2, 1, 2]
    prompts = [ids for ids, _ in engine.calls]
    assert prompts[0] == prompts[1] != prompts[2] == prompts[3]


def test_token_id_prompts(client: TestClient, engine: FakeEngine, text_model: TextModel) -> None:
    ids = text_model.encode("Hello there")
    complete(client, prompt=ids)
    assert engine.calls[-1][0] == ids
    complete(client, prompt=[ids, ids[:1]])
    assert [c[0] for c in engine.calls[-2:]] == [ids, ids[:1]]


def test_echo(client: TestClient) -> None:
    body = complete(client, echo=True, max_tokens=2).json()
    assert body["choices"][0]["text"].startswith("Say:")


def test_logprobs_zero(client: TestClient) -> None:
    logprobs = complete(client, logprobs=0).json()["choices"][0]["logprobs"]
    assert (
        len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == len(logprobs["text_offset"])
    )
    assert logprobs["text_offset"][0] == 0


def test_stream(client: TestClient) -> None:
    with client.stream(
        "POST",
        "/v1/completions",
        json={
            "model": "tiny",
            "prompt": "x",
            "stream": True,
            "stop": ["Paris"],
            "stream_options": {"include_usage": True},
        },
    ) as response:
        lines = "".join(response.iter_text()).splitlines()
    data = [line[6:] for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == "Hello! The capital of France is "
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    # Text chunks are spliced into a frame serialized once; they must be the models' JSON.
    for raw, chunk in zip(data, chunks, strict=False):
        if chunk["choices"] and chunk["choices"][0]["finish_reason"] is None:
            choice = CompletionChoice(index=0, text=chunk["choices"][0]["text"], finish_reason=None)
            model = Completion(
                id=chunk["id"],
                created=chunk["created"],
                model="tiny",
                system_fingerprint=chunk["system_fingerprint"],
                choices=[choice],
            ).model_dump(mode="json")
            assert raw == json.dumps(model, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"suffix": "x"}, "suffix"),
        ({"logprobs": 6}, "logprobs"),
        ({"logit_bias": {str(10**9): 1}}, "logit_bias"),
        ({"prompt": []}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": [10**9]}, "prompt"),
        ({"best_of": 3}, "best_of"),
        ({"max_tokens": 10**6}, "prompt"),
    ],
)
def test_refusals(client: TestClient, engine: FakeEngine, body: dict[str, Any], param: str) -> None:
    response = complete(client, **body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert engine.calls == []


def test_tokenize_messages_matches_chat_prompt_tokens(client: TestClient) -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi there"}]
    counted = client.post("/tokenize", json={"model": "tiny", "messages": messages}).json()
    chat = client.post("/v1/chat/completions", json={"model": "tiny", "messages": messages}).json()
    assert counted["count"] == chat["usage"]["prompt_tokens"] == len(counted["tokens"])
    assert counted["max_model_len"] == 4096


def test_tokenize_round_trip(client: TestClient) -> None:
    tokens = client.post("/tokenize", json={"prompt": "café 🙂"}).json()["tokens"]
    assert client.post("/detokenize", json={"tokens": tokens}).json() == {"prompt": "café 🙂"}


def test_tokenize_needs_exactly_one_input(client: TestClient) -> None:
    assert client.post("/tokenize", json={}).status_code == 400
    both = {"prompt": "x", "messages": [{"role": "user", "content": "x"}]}
    assert client.post("/tokenize", json=both).status_code == 400
    assert client.post("/detokenize", json={"tokens": [10**9]}).status_code == 400
    assert client.post("/tokenize", json={"model": "other", "prompt": "x"}).status_code == 404
