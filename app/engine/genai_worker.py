"""The openvino-genai engine process.

ContinuousBatchingPipeline.step(), add_request() and read() hold the GIL for the whole
step, so they run here, in a process of their own, never in a thread of the server: the
server's event loop stays free while this loop batches every request in flight into the
same steps. Requests come in through a multiprocessing queue; everything one loop turn
produces goes out as one list through a pipe, written by this loop itself: a queue's feeder
thread would need the GIL that step() holds, so each step's tokens would leave a step late,
and the server reads the pipe from its event loop with no thread of its own."""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from app.engine.base import SamplingParams
from app.engine.kv_window import EvictionAreas, kv_block_size, model_window
from app.settings import Settings

logger = logging.getLogger("app.engine.worker")

# Inbox messages:  ("add", rid, prompt_ids, SamplingParams) | ("cancel", rid) | ("stop",)
# Out (a list per loop turn): ("ready", info) | ("failed", message)
#                  | ("tokens", [(rid, token_ids, logprobs, finish_or_None), ...],
#                               (step_seconds, requests, scheduled_requests, cache_usage_pct))
#                  | ("error", rid, message) | ("rejected", rid, message) | ("running", count)


@dataclass(frozen=True)
class WorkerConfig:
    model_path: str
    device: str
    properties: dict[str, str]
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_cache_gb: int
    kv_cache_tokens: int
    kv_cache_window: bool
    enable_prefix_caching: bool
    dynamic_split_fuse: bool
    log_level: str = "INFO"
    log_format: str = "text"

    @classmethod
    def from_settings(cls, settings: Settings, model_path: str, device: str) -> WorkerConfig:
        return cls(
            model_path=model_path,
            device=device,
            properties=settings.engine_properties(),
            max_num_seqs=settings.max_num_seqs,
            max_num_batched_tokens=settings.max_num_batched_tokens,
            kv_cache_gb=settings.kv_cache_gb,
            kv_cache_tokens=settings.kv_cache_tokens,
            kv_cache_window=settings.kv_cache_window,
            enable_prefix_caching=settings.enable_prefix_caching,
            dynamic_split_fuse=settings.dynamic_split_fuse,
            log_level=settings.log_level,
            log_format=settings.log_format,
        )


def generation_config(params: SamplingParams) -> Any:
    import openvino_genai as ov_genai

    config = ov_genai.GenerationConfig()
    config.max_new_tokens = params.max_new_tokens
    config.stop_token_ids = set(params.stop_token_ids)
    config.ignore_eos = params.ignore_eos
    if params.greedy:
        config.do_sample = False
    else:
        config.do_sample = True
        config.temperature = params.temperature
        config.top_p = params.top_p
        config.top_k = params.top_k if params.top_k > 0 else 2**31 - 1
        config.rng_seed = params.seed
        config.min_p = params.min_p
    if params.logprobs:
        config.logprobs = 1
    if params.json_schema is not None:
        config.structured_output_config = ov_genai.StructuredOutputConfig(
            json_schema=params.json_schema
        )
    config.presence_penalty = params.presence_penalty
    config.frequency_penalty = params.frequency_penalty
    config.repetition_penalty = params.repetition_penalty
    return config


# openvino-genai 2026.4 sizes its KV block budget with element_type.size(), which rounds
# a 4-bit element up to a byte, while the cache tensors it allocates hold two per byte: a
# u4 cache given N GiB takes N/2. The budget is doubled so that kv_cache_gb is the memory
# a u4 cache really takes (an integration test checks genai's accounting against the
# cache tensors' shapes on the pinned release, and fails once genai corrects it).
U4_CACHE_BUDGET_FACTOR = 2


def cache_budget_gb(cfg: WorkerConfig) -> int:
    """The cache_size to give genai so that the cache occupies cfg.kv_cache_gb GiB."""
    u4 = cfg.properties.get("KV_CACHE_PRECISION") == "u4"
    return cfg.kv_cache_gb * (U4_CACHE_BUDGET_FACTOR if u4 else 1)


def scheduler_config(cfg: WorkerConfig, window: int | None = None) -> Any:
    """genai's scheduler settings; `window`, when given, is the sliding window every layer
    of the model shares, and the cache then keeps only the blocks it can reach."""
    import openvino_genai as ov_genai

    sched = ov_genai.SchedulerConfig()
    sched.max_num_seqs = cfg.max_num_seqs
    sched.max_num_batched_tokens = cfg.max_num_batched_tokens
    block = kv_block_size(cfg.device)
    if cfg.kv_cache_tokens:
        # Counted in blocks, the cache is exact whatever the precision (no u4 correction)
        # and may be any size, not only whole GiB.
        sched.num_kv_blocks = -(-cfg.kv_cache_tokens // block)
        sched.cache_size = 0
    else:
        sched.cache_size = cache_budget_gb(cfg)
    sched.enable_prefix_caching = cfg.enable_prefix_caching
    sched.dynamic_split_fuse = cfg.dynamic_split_fuse
    if window is not None:
        areas = EvictionAreas.for_window(window, block)
        sched.use_cache_eviction = True
        # No RoPE re-rotation: kept keys stay at their true positions, as the full cache
        # has them. The aggregation mode only ranks blocks outside the window.
        sched.cache_eviction_config = ov_genai.CacheEvictionConfig(
            areas.start,
            areas.recent,
            areas.max_cache,
            ov_genai.AggregationMode.NORM_SUM,
            False,
        )
    return sched


def cache_window(cfg: WorkerConfig) -> int | None:
    """The sliding window the KV cache is cut to, when kv_cache_window is on and the model
    has one shorter than its context; logged either way, so a user sees what happened."""
    if not cfg.kv_cache_window:
        return None
    if not cfg.device.upper().startswith("CPU"):
        # Exactness rests on how the attention kernel masks a compacted block table, which
        # the tests check on the CPU plugin only.
        logger.info("KV cache keeps every block: the window cache is checked on CPU only")
        return None
    from app.textmodel import context_length_of

    block = kv_block_size(cfg.device)
    window = model_window(cfg.model_path, context_length_of(Path(cfg.model_path)), block)
    if window is None:
        logger.info("KV cache keeps every block (the model has no shorter sliding window)")
    else:
        logger.info(
            "KV cache keeps each sequence's last %d-token attention window: at most %d "
            "tokens a sequence once its prompt is in",
            window,
            EvictionAreas.for_window(window, block).tokens_per_sequence(block),
        )
    return window


def _finish_name(reason: Any) -> str | None:
    name = getattr(reason, "name", str(reason)).upper()
    return {"STOP": "stop", "LENGTH": "length"}.get(name)


def run(cfg: WorkerConfig, inbox: Queue[Any], out: Connection) -> None:
    from app.logs import configure

    configure(cfg.log_level, cfg.log_format)
    try:
        import numpy as np
        import openvino as ov
        import openvino_genai as ov_genai

        started = time.monotonic()
        sched = scheduler_config(cfg, cache_window(cfg))
        pipe = ov_genai.ContinuousBatchingPipeline(
            cfg.model_path, sched, cfg.device, cfg.properties
        )
        logger.info(
            "Model loaded once by the engine process from %s on %s in %.2f s",
            cfg.model_path,
            cfg.device,
            time.monotonic() - started,
        )
    except Exception as exc:  # reported to the server, which refuses to start
        out.send([("failed", f"{type(exc).__name__}: {exc}")])
        return
    out.send([("ready", {"device": cfg.device})])

    handles: dict[int, Any] = {}
    with_logprobs: set[int] = set()  # genai reports them always; only these asked
    outbox: list[tuple[Any, ...]] = []

    def flush() -> None:
        if outbox:
            out.send(outbox)
            outbox.clear()

    while True:
        try:
            flush()
            # Idle: block for work. Busy: take whatever arrived since the last step.
            messages = [inbox.get()] if not handles else []
            while True:
                try:
                    messages.append(inbox.get_nowait())
                except queue.Empty:
                    break
        except (EOFError, OSError):  # BrokenPipeError included
            return  # the server is gone
        for message in messages:
            kind = message[0]
            if kind == "stop":
                for handle in handles.values():
                    handle.cancel()
                if handles:
                    # genai frees a cancelled sequence's blocks in its next step; without
                    # one, its teardown reports every such block as leaked (once a layer
                    # with the window cache).
                    pipe.step()
                return
            if kind == "add":
                _, rid, prompt_ids, params = message
                try:
                    tensor = ov.Tensor(np.asarray([prompt_ids], dtype=np.int64))
                    handles[rid] = pipe.add_request(rid, tensor, generation_config(params))
                    if params.logprobs:
                        with_logprobs.add(rid)
                except Exception as exc:  # invalid generation config, prompt too long, ...
                    outbox.append(("rejected", rid, str(exc).strip().splitlines()[-1]))
            elif kind == "cancel":
                handle = handles.pop(message[1], None)
                with_logprobs.discard(message[1])
                if handle is not None:
                    handle.cancel()
        if messages:
            outbox.append(("running", len(handles)))
        if not handles:
            continue
        flush()  # refusals and counts go out now, not after a step that may be long
        try:
            step_started = time.perf_counter()
            pipe.step()
            step_s = time.perf_counter() - step_started
        except Exception as exc:
            for rid in handles:
                outbox.append(("error", rid, f"engine step failed: {exc}"))
            flush()
            raise
        events = []
        for rid, handle in list(handles.items()):
            tokens: list[int] = []
            logprobs: list[float] = []
            finish: str | None = None
            if handle.can_read():
                for output in handle.read().values():
                    tokens.extend(output.generated_ids)
                    if rid in with_logprobs:
                        logprobs.extend(output.generated_log_probs)
                    finish = _finish_name(output.finish_reason) or finish
            status = handle.get_status().name
            if status == "IGNORED":  # the scheduler could never fit it (KV cache too small)
                del handles[rid]
                with_logprobs.discard(rid)
                outbox.append(("error", rid, "request does not fit in the KV cache"))
                continue
            if status != "RUNNING":
                del handles[rid]
                with_logprobs.discard(rid)
                finish = finish or "length"
            if tokens or finish:
                events.append((rid, tokens, logprobs, finish))
        if events:
            metrics = pipe.get_metrics()
            stats = (step_s, metrics.requests, metrics.scheduled_requests, metrics.cache_usage)
            outbox.append(("tokens", events, stats))
            if not handles:
                outbox.append(("running", 0))
