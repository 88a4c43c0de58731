"""The embedding engine process: OpenVINO runs the exported encoder (last_hidden_state),
then this process pools and normalizes as the model's sentence-transformers config says.

In a process of its own for the same reason as the generation engine: an infer holds the
GIL for its whole length, which would stall the server's event loop. Requests come in
through a multiprocessing queue; whatever is queued when the previous batch ends is run as
the next batch, and its results go out as one message through a pipe the server reads
from its event loop (app/engine/embedding.py).

Batched and single requests give bitwise the same vectors: every input is padded to its
length bucket (a multiple of BUCKET tokens), and the inputs of one bucket run together. On
the CPU plugin in f32 a row's result depends on the padded length it runs at (a padded
batch differs from unpadded single runs by ~1e-7), but not on how many rows run beside it;
so an input gets the same shape, and the same bits, however it was batched. Pooling runs
per row over the real tokens only, so padding never enters its sums."""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from typing import Any

from app.engine.messages import (
    BatchStats,
    EmbedBatch,
    EmbedRequest,
    EmbedResult,
    EngineFailed,
    EngineReady,
    RequestFailed,
    StopEngine,
    ToEmbedder,
)

logger = logging.getLogger("app.engine.embedding_worker")

# Padded lengths are multiples of this: at most 15 tokens of padding an input, and few
# distinct shapes for the plugin to prepare.
BUCKET = 16
# Padded tokens per infer: bounds the attention scores' memory (rows x 12 heads x L x L
# floats: 100 MB at 32 rows of 256 tokens).
MAX_INFER_TOKENS = 8192


@dataclass(frozen=True)
class EmbeddingWorkerConfig:
    model_path: str
    device: str
    properties: dict[str, str]
    pooling: str
    normalize: bool
    log_level: str = "INFO"
    log_format: str = "text"


def bucket(length: int) -> int:
    return -(-length // BUCKET) * BUCKET


def pool(hidden: Any, lengths: list[int], mode: str) -> Any:
    """sentence-transformers' pooling, one row at a time over the row's real tokens (right
    padding: the first `length` positions)."""
    import numpy as np

    rows = []
    for row, length in zip(hidden, lengths, strict=True):
        tokens = row[:length]
        if mode == "mean":
            rows.append(tokens.sum(axis=0) / np.float32(length))
        elif mode == "mean_sqrt_len":
            rows.append(tokens.sum(axis=0) / np.sqrt(np.float32(length)))
        elif mode == "max":
            rows.append(tokens.max(axis=0))
        elif mode == "cls":
            rows.append(tokens[0])
        elif mode == "lasttoken":
            rows.append(tokens[length - 1])
        else:
            raise ValueError(f"unknown pooling {mode!r}")
    return np.stack(rows).astype(np.float32, copy=False)


def normalize(vectors: Any) -> Any:
    """torch.nn.functional.normalize's: divide by the L2 norm, at least 1e-12."""
    import numpy as np

    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, np.float32(1e-12))).astype(np.float32, copy=False)


class Embedder:
    """The compiled model and the batch loop's arithmetic; usable in-process by tests."""

    def __init__(self, cfg: EmbeddingWorkerConfig) -> None:
        import numpy as np
        import openvino as ov

        self._np = np
        self.cfg = cfg
        # f32 unless the operator asked otherwise: the CPU plugin defaults to bf16 where
        # the CPU has it, which costs three decimal places of every vector.
        properties = {"INFERENCE_PRECISION_HINT": "f32"} | dict(cfg.properties)
        properties.pop("KV_CACHE_PRECISION", None)  # a generation setting
        model = ov.Core().read_model(f"{cfg.model_path}/openvino_model.xml")
        self.inputs = [i.get_any_name() for i in model.inputs]
        unknown = set(self.inputs) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown or "input_ids" not in self.inputs:
            raise ValueError(f"the model's inputs {self.inputs} are not a BERT-style encoder's")
        names = [o.get_any_name() for o in model.outputs]
        self.output = next(
            (n for n in ("last_hidden_state", "token_embeddings") if n in names), names[0]
        )
        self.compiled = ov.Core().compile_model(model, cfg.device, properties)
        self.request = self.compiled.create_infer_request()
        self.dimensions = 0

    def infer(self, rows: list[list[int]], length: int) -> Any:
        """Pooled (and normalized) vectors of `rows`, each padded to `length`."""
        np = self._np
        ids = np.zeros((len(rows), length), dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        result = self.request.infer({name: feed[name] for name in self.inputs})
        hidden = result[self.output]
        vectors = pool(hidden, [len(r) for r in rows], self.cfg.pooling)
        return normalize(vectors) if self.cfg.normalize else vectors

    def embed(self, inputs: list[list[int]]) -> tuple[Any, int, int]:
        """Vectors for `inputs` in their order, with the padded tokens and infers it took:
        grouped by length bucket, each bucket cut into chunks of MAX_INFER_TOKENS."""
        np = self._np
        by_bucket: dict[int, list[int]] = {}
        for index, row in enumerate(inputs):
            by_bucket.setdefault(bucket(len(row)), []).append(index)
        out: Any = None
        padded = infers = 0
        for length, indices in sorted(by_bucket.items()):
            per_infer = max(1, MAX_INFER_TOKENS // length)
            for start in range(0, len(indices), per_infer):
                chunk = indices[start : start + per_infer]
                vectors = self.infer([inputs[i] for i in chunk], length)
                if out is None:
                    out = np.empty((len(inputs), vectors.shape[1]), dtype=np.float32)
                out[chunk] = vectors
                padded += length * len(chunk)
                infers += 1
        return out, padded, infers

    def batch(self, requests: list[EmbedRequest]) -> EmbedBatch:
        """One batch of every request queued. A batch that fails is retried request by
        request, so only the request that made it fail fails."""
        started = time.perf_counter()
        inputs = [row for r in requests for row in r.inputs]
        results: list[EmbedResult] = []
        failed: list[RequestFailed] = []
        padded = infers = 0
        try:
            vectors, padded, infers = self.embed(inputs)
            offset = 0
            for r in requests:
                rows = vectors[offset : offset + len(r.inputs)]
                offset += len(r.inputs)
                results.append(_result(r.rid, rows))
        except Exception as exc:
            if len(requests) == 1:
                logger.error("Embedding failed: %s", exc)
                failed.append(RequestFailed(requests[0].rid, _last_line(exc)))
            else:
                logger.warning("A batch of %d requests failed (%s): one by one", len(requests), exc)
                results, failed = [], []
                for r in requests:
                    alone = self.batch([r])
                    results += alone.results
                    failed += alone.failed
                    padded += alone.stats.padded_tokens
                    infers += alone.stats.infers
        stats = BatchStats(
            requests=len(requests),
            inputs=len(inputs),
            tokens=sum(len(row) for row in inputs),
            padded_tokens=padded,
            infers=infers,
            seconds=time.perf_counter() - started,
        )
        return EmbedBatch(results, failed, stats)


def _result(rid: int, rows: Any) -> EmbedResult:
    import numpy as np

    return EmbedResult(rid, np.ascontiguousarray(rows, dtype="<f4").tobytes(), rows.shape[1])


def _last_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[-1].strip() if lines else type(exc).__name__


def run(cfg: EmbeddingWorkerConfig, inbox: Queue[ToEmbedder], out: Connection) -> None:
    from app.logs import configure

    configure(cfg.log_level, cfg.log_format)
    try:
        started = time.monotonic()
        embedder = Embedder(cfg)
        logger.info(
            "Embedding model loaded by its engine process from %s on %s in %.2f s (pooling %s%s)",
            cfg.model_path,
            cfg.device,
            time.monotonic() - started,
            cfg.pooling,
            ", normalized" if cfg.normalize else "",
        )
    except Exception as exc:  # reported to the server, which refuses to start
        out.send([EngineFailed(f"{type(exc).__name__}: {exc}")])
        return
    out.send([EngineReady(cfg.device)])
    while True:
        try:
            # Block for the first request, then take everything queued behind it: what
            # arrived while the previous batch ran is the next batch.
            messages = [inbox.get()]
            while True:
                try:
                    messages.append(inbox.get_nowait())
                except queue.Empty:
                    break
        except (EOFError, OSError):
            return  # the server is gone
        requests = [m for m in messages if isinstance(m, EmbedRequest)]
        try:
            if requests:
                out.send([embedder.batch(requests)])
        except (EOFError, OSError):
            return
        if any(isinstance(m, StopEngine) for m in messages):
            return
