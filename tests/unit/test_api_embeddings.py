"""/v1/embeddings through the app, with a scripted embedding engine beside a chat model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.embedmodel import EmbeddingModelInfo
from app.server import create_app
from app.settings import Settings
from tests.unit.fakes import FakeEmbeddingEngine, FakeEngine

MODEL = "all-minilm-l6-v2"


@pytest.fixture
def embedder() -> FakeEmbeddingEngine:
    return FakeEmbeddingEngine()


@pytest.fixture
def client(
    tiny_model_dir: Path, minilm_dir: Path, embedder: FakeEmbeddingEngine
) -> Iterator[TestClient]:
    settings = Settings(model=[str(tiny_model_dir), str(minilm_dir)], max_num_seqs=1, max_queue=0)
    with TestClient(
        create_app(
            settings,
            engine_factory=lambda _, __: FakeEngine(reply_ids=[5], eos_id=2),
            embedding_factory=lambda _, __: embedder,  # type: ignore[arg-type,return-value]
        )
    ) as test_client:
        yield test_client


def test_inputs_are_tokenized_by_the_server_and_counted(
    client: TestClient, embedder: FakeEmbeddingEngine, minilm_dir: Path
) -> None:
    info = EmbeddingModelInfo.load(minilm_dir)
    texts = ["hello world", "a longer sentence than that"]
    body = client.post("/v1/embeddings", json={"model": MODEL, "input": texts}).json()
    ids = [info.encode(text) for text in texts]
    assert embedder.calls == [ids]
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert [d["embedding"].index(1.0) for d in body["data"]] == [len(i) for i in ids]
    total = sum(map(len, ids))
    assert body["usage"] == {"prompt_tokens": total, "total_tokens": total}


def test_an_engine_failure_is_503_and_frees_the_slot(
    client: TestClient, embedder: FakeEmbeddingEngine
) -> None:
    embedder.fail = True
    failed = client.post("/v1/embeddings", json={"model": MODEL, "input": "x"})
    assert (failed.status_code, failed.json()["error"]["code"]) == (503, "engine_unavailable")
    embedder.fail = False
    # One slot, no queue: the failed request gave it back.
    assert client.post("/v1/embeddings", json={"model": MODEL, "input": "x"}).is_success


def test_the_embedding_model_has_its_own_metrics(client: TestClient) -> None:
    client.post("/v1/embeddings", json={"model": MODEL, "input": "hello"})
    metrics = client.get("/metrics").text
    assert f'ovchat_prompt_tokens_total{{model="{MODEL}"}} 3.0' in metrics
    assert f'ovchat_model_loaded{{model="{MODEL}"}} 1.0' in metrics
    assert (
        f'ovchat_requests_total{{endpoint="/v1/embeddings",model="{MODEL}",status="200"}} 1.0'
        in metrics
    )
