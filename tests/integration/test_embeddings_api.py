"""POST /v1/embeddings on a real server that serves a chat model beside the embedding
model, reached with the `openai` SDK, LangChain's OpenAIEmbeddings and raw HTTP."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from langchain_openai import OpenAIEmbeddings
from pydantic import SecretStr

from app.embedmodel import EmbeddingModelInfo
from tests.integration.conftest import Server, launch, stop_server

MODEL = "all-minilm-l6-v2"
SENTENCES = [
    "The cat sits on the mat.",
    "A cat is sitting on a rug.",
    "Stock markets fell sharply on Monday.",
    "How do I reverse a string in Python?",
]


@pytest.fixture(scope="module")
def server(server_logs: Path, default_model_dir: Path, minilm_dir: Path) -> Iterator[Server]:
    running = launch(
        server_logs, MODEL, "--model", str(default_model_dir), "--model", str(minilm_dir)
    )
    yield running
    stop_server(running)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # unit vectors


def test_the_sdk_gets_unit_vectors_and_exact_usage(server: Server, minilm_dir: Path) -> None:
    info = EmbeddingModelInfo.load(minilm_dir)
    result = server.client().embeddings.create(model=MODEL, input=SENTENCES[0])
    assert result.model == MODEL and len(result.data) == 1
    vector = result.data[0].embedding
    assert len(vector) == 384
    assert math.sqrt(sum(x * x for x in vector)) == pytest.approx(1.0, abs=1e-5)
    tokens = len(info.encode(SENTENCES[0]))
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (tokens, tokens)


def test_batched_and_single_inputs_give_identical_vectors(server: Server) -> None:
    client = server.client()
    batched = [d.embedding for d in client.embeddings.create(model=MODEL, input=SENTENCES).data]
    single = [client.embeddings.create(model=MODEL, input=s).data[0].embedding for s in SENTENCES]
    assert batched == single
    # Paraphrases rank above unrelated sentences.
    assert cosine(batched[0], batched[1]) > 0.6
    assert cosine(batched[0], batched[1]) > max(cosine(batched[0], v) for v in batched[2:])


def test_float_and_base64_and_token_inputs_agree(server: Server, minilm_dir: Path) -> None:
    """The SDK asks for base64 and decodes it; raw HTTP asks for floats."""
    sdk = server.client().embeddings.create(model=MODEL, input=SENTENCES[2]).data[0].embedding
    raw = httpx.post(
        f"{server.url}/v1/embeddings",
        json={"model": MODEL, "input": [SENTENCES[2]], "encoding_format": "float"},
    ).json()
    assert raw["object"] == "list" and raw["data"][0]["object"] == "embedding"
    floats = raw["data"][0]["embedding"]
    assert floats == pytest.approx(sdk, abs=1e-7)  # float32 on the base64 path
    ids = EmbeddingModelInfo.load(minilm_dir).encode(SENTENCES[2])
    by_ids = httpx.post(
        f"{server.url}/v1/embeddings",
        json={"model": MODEL, "input": ids, "encoding_format": "float"},
    ).json()
    assert by_ids["data"][0]["embedding"] == floats


def test_langchain_embeds_documents_and_queries(server: Server) -> None:
    # LangChain tokenizes with tiktoken and sends OpenAI's token ids unless told not to:
    # this model's vocabulary is not OpenAI's.
    embeddings = OpenAIEmbeddings(
        model=MODEL,
        openai_api_base=f"{server.url}/v1",
        openai_api_key=SecretStr("unused"),
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    documents = embeddings.embed_documents(SENTENCES[:2])
    query = embeddings.embed_query(SENTENCES[0])
    sdk = server.client().embeddings.create(model=MODEL, input=SENTENCES[:2]).data
    assert [len(v) for v in documents] == [384, 384]
    assert documents[0] == pytest.approx(sdk[0].embedding, abs=1e-6)
    assert query == pytest.approx(documents[0], abs=1e-6)


def test_what_the_model_cannot_do_is_a_400(server: Server) -> None:
    url = f"{server.url}/v1/embeddings"
    shorter = httpx.post(url, json={"model": MODEL, "input": "x", "dimensions": 128})
    assert shorter.status_code == 400
    assert shorter.json()["error"]["param"] == "dimensions"
    assert httpx.post(url, json={"model": MODEL, "input": "x", "dimensions": 384}).is_success
    long = httpx.post(url, json={"model": MODEL, "input": ["ok", "word " * 300]})
    assert long.status_code == 400
    message = long.json()["error"]["message"]
    assert "input[1]" in message and "256" in message and "302" in message
    chat = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert (chat.status_code, chat.json()["error"]["code"]) == (400, "model_not_supported")
    wrong = httpx.post(url, json={"model": "smollm2-135m-instruct", "input": "x"})
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (400, "model_not_supported")


def test_models_lists_both_with_what_they_serve(server: Server) -> None:
    cards = {c["id"]: c for c in httpx.get(f"{server.url}/v1/models").json()["data"]}
    assert cards[MODEL]["kind"] == "embedding"
    assert cards[MODEL]["endpoints"] == ["/v1/embeddings"]
    assert cards[MODEL]["context_length"] == 256
    assert cards["smollm2-135m-instruct"]["kind"] == "generation"
    health = httpx.get(f"{server.url}/health").json()["models"]
    assert health[MODEL]["engine"] == "openvino-embedding" and health[MODEL]["ready"]
