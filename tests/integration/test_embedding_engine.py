"""The embedding engine on the real all-MiniLM-L6-v2 export: sentence-transformers' own
vectors, batching that changes no bit, and a process that is killed and comes back."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.embedmodel import EmbeddingModelInfo
from app.engine.base import EngineError, EngineStartError
from app.engine.embedding import EmbeddingEngine
from app.modelstore import minilm, store
from app.settings import REPO_ROOT

logger = logging.getLogger(__name__)

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums, and this sentence is longer than the others on purpose.",
]


@pytest.fixture(scope="session")
def info(minilm_dir: Path) -> EmbeddingModelInfo:
    return EmbeddingModelInfo.load(minilm_dir)


def with_engine(folder: Path, scenario: Callable[[EmbeddingEngine], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        engine = EmbeddingEngine(folder, "CPU", {})
        await engine.start()
        await engine.wait_ready()
        try:
            return await scenario(engine)
        finally:
            await engine.close()

    return asyncio.run(run())


def embed_all(folder: Path, inputs: list[list[int]]) -> Any:  # an ndarray
    async def scenario(engine: EmbeddingEngine) -> list[list[float]]:
        return await engine.embed(inputs)

    return np.array(with_engine(folder, scenario), dtype=np.float32)


def test_vectors_are_sentence_transformers_own(minilm_dir: Path, info: EmbeddingModelInfo) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm.source_folder()), device="cpu").encode(SENTENCES)
    ours = embed_all(minilm_dir, [info.encode(s) for s in SENTENCES])
    assert ours.shape == (8, 384) == reference.shape
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    cosines = (ours * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)
    logger.info("cosine to sentence-transformers: min %.7f", cosines.min())
    assert cosines.min() >= 0.999


def test_paraphrases_rank_above_unrelated(minilm_dir: Path, info: EmbeddingModelInfo) -> None:
    texts = [
        "How do I reset my password?",
        "I forgot my password, how can I change it?",
        "The weather in Paris is sunny today.",
        "Steps to recover access to my account after losing the password",
        "A recipe for chocolate cake with three eggs.",
    ]
    vectors = embed_all(minilm_dir, [info.encode(t) for t in texts])
    similarity = vectors @ vectors.T
    for paraphrase in (1, 3):
        for unrelated in (2, 4):
            assert similarity[0, paraphrase] > similarity[0, unrelated] + 0.3


def test_batched_requests_give_the_single_vectors_bit_for_bit(
    minilm_dir: Path, info: EmbeddingModelInfo
) -> None:
    ids = [info.encode(s) for s in SENTENCES]
    # 40 inputs of the longest bucket: two infers of the bucket (32 rows, then 8).
    long = [info.encode("word " * 240 + str(i)) for i in range(40)]

    async def scenario(engine: EmbeddingEngine) -> None:
        started = time.perf_counter()
        singles = [await engine.embed([row]) for row in ids]
        one_by_one = time.perf_counter() - started
        batches_before = engine.batches
        started = time.perf_counter()
        together = await asyncio.gather(*(engine.embed([row]) for row in ids))
        gathered = time.perf_counter() - started
        logger.info(
            "8 requests one by one %.1f ms, concurrently %.1f ms in %d batches",
            one_by_one * 1000,
            gathered * 1000,
            engine.batches - batches_before,
        )
        assert together == singles
        assert engine.batches - batches_before < len(ids) and engine.largest_batch >= 2
        assert await engine.embed(ids) == [s[0] for s in singles]
        assert engine.last_batch is not None and engine.last_batch.infers == 2  # 16 and 32
        many = await engine.embed(long)
        assert engine.last_batch is not None and engine.last_batch.infers == 2
        assert engine.last_batch.padded_tokens == 40 * 256
        assert [many[0], many[39]] == [
            (await engine.embed([long[0]]))[0],
            (await engine.embed([long[39]]))[0],
        ]

    with_engine(minilm_dir, scenario)


def test_a_killed_engine_fails_its_requests_and_restarts(
    minilm_dir: Path, info: EmbeddingModelInfo
) -> None:
    hello = info.encode("Hello world!")
    heavy = [info.encode("word " * 240 + str(i)) for i in range(2048)]

    async def scenario(engine: EmbeddingEngine) -> None:
        before = await engine.embed([hello])
        first_pid = engine.pid
        in_flight = asyncio.ensure_future(engine.embed(heavy))
        await asyncio.sleep(0.5)
        assert not in_flight.done()
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        with pytest.raises(EngineError, match="stopped unexpectedly"):
            await in_flight
        # The next request waits for the new process rather than failing.
        assert await engine.embed([hello]) == before
        assert engine.restarts == 1 and engine.pid not in (None, first_pid)
        assert engine.is_ready()

    with_engine(minilm_dir, scenario)


def test_an_interrupted_build_is_redone(tmp_path: Path, minilm_dir: Path) -> None:
    """Through the CLI, as `make model` runs it: a half-written export (its weights cut
    short, a `.partial` left behind) is rebuilt, never served."""
    out = store.model_dir(tmp_path, minilm.NAME)
    shutil.copytree(minilm_dir, out)
    (out / "openvino_model.bin").write_bytes(b"cut")
    out.with_name("int4.partial").mkdir()
    assert not store.is_complete(out)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "model",
            "build",
            minilm.NAME,
            "--model-store",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "incomplete or forced: rebuilding" in result.stderr
    assert store.is_complete(out) and store.kind_of(out) == "embedding"
    assert not out.with_name("int4.partial").exists()
    manifest = json.loads((out / store.MANIFEST).read_text())
    assert manifest["recipe"]["flags"] == list(minilm.FLAGS)
    assert manifest["files"]["1_Pooling/config.json"] == 190
    assert EmbeddingModelInfo.load(out).dimensions == 384


def test_a_folder_that_is_no_embedding_model_does_not_start(tmp_path: Path) -> None:
    with pytest.raises(EngineStartError, match=r"cannot serve .* as an embedding model"):
        EmbeddingEngine(tmp_path, "CPU", {})
    # sentence-transformers' config but no OpenVINO export: the process says why.
    shutil.copytree(minilm.source_folder(), tmp_path / "hf")

    async def scenario() -> None:
        engine = EmbeddingEngine(tmp_path / "hf", "CPU", {})
        await engine.start()
        try:
            with pytest.raises(EngineStartError, match="could not load the model"):
                await engine.wait_ready()
            assert not engine.is_ready()
        finally:
            await engine.close()

    asyncio.run(scenario())
