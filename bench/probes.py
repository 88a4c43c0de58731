"""What the benchmarks send and measure besides the per-level tables: the prompts, the
machine's memory bandwidth and the model's bytes per token (the decode ceiling), peak
memory, and the probes (prefix cache, long-prompt stall, scaling in interleaved rounds,
a burst of short requests)."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil

from bench.loadgen import http_stream, percentile, run_level

if TYPE_CHECKING:
    from app.textmodel import TextModel

LEVELS = [1, 2, 4, 8, 16, 32]
OUT_TOKENS = 128

SENTENCE = "The lighthouse keeper watched the storm roll in over the grey and restless sea. "


def requests_for(level: int) -> int:
    return max(level, 4)


def sized(text_model: TextModel, opening: str, target: int) -> str:
    """`opening` and then SENTENCE until the text is at least `target` tokens."""
    text = opening
    while len(text_model.encode(text)) < target:
        text += SENTENCE
    return text


def prompts(text_model: TextModel) -> dict[str, str]:
    """~50 and ~1000 prompt tokens, measured with the served model's tokenizer."""
    opening = "Continue this story. "
    return {"short": sized(text_model, opening, 50), "long": sized(text_model, opening, 1000)}


class RssSampler:
    """Peak resident memory of a process and its children (the engine process)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                total = root.memory_info().rss + sum(
                    c.memory_info().rss for c in root.children(recursive=True)
                )
                self.peak = max(self.peak, total)
            except psutil.Error:
                pass
            self._stop.wait(0.25)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def measure_bandwidth() -> float:
    """GB/s read by all cores at once, the ceiling that memory-bound decoding can
    approach. The best of: a matrix-vector product over 1 GiB (decode's own access pattern;
    OpenBLAS runs it on every core) and SIMD reductions over 512 MiB, one thread per core
    (numpy releases the GIL). Single-threaded reductions are compute-bound here and read
    less than half of what the cores can."""
    import numpy as np

    cores = os.cpu_count() or 1
    best = 0.0
    matrix: Any = np.ones(((1 << 30) // 4 // 4096, 4096), dtype=np.float32)
    vector: Any = np.ones(4096, dtype=np.float32)
    for _ in range(5):
        started = time.perf_counter()
        matrix @ vector
        best = max(best, matrix.nbytes / (time.perf_counter() - started) / 1e9)
    del matrix
    for dtype, reduce in ((np.uint8, np.max), (np.float32, np.max), (np.float64, np.sum)):
        data: Any = np.ones(512 * 1024 * 1024 // np.dtype(dtype).itemsize, dtype=dtype)
        parts = np.array_split(data, cores)
        for _ in range(5):
            threads = [threading.Thread(target=reduce, args=(part,)) for part in parts]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            best = max(best, data.nbytes / (time.perf_counter() - started) / 1e9)
    return best


# Ops between a compressed weight and its use: the int4/int8 decompression subgraph.
_DECOMPRESSION = {"Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze"}


def weights_read_per_token(model_dir: Path) -> int:
    """Bytes of constants one decode step reads. An untied embedding table is only
    looked up (one row per token), so it does not count; a tied one also feeds the
    lm_head matmul and does."""
    import openvino as ov

    model = ov.Core().read_model(model_dir / "openvino_model.xml")
    total = 0
    for op in model.get_ops():
        if op.get_type_name() != "Constant":
            continue
        elements = 1
        for dim in op.get_output_shape(0):
            elements *= dim
        size = elements * op.get_output_element_type(0).bitwidth // 8
        frontier, lookup_only = [op], True
        while frontier and lookup_only:
            for target in frontier.pop().output(0).get_target_inputs():
                consumer = target.get_node()
                if consumer.get_type_name() in _DECOMPRESSION:
                    frontier.append(consumer)
                elif not (consumer.get_type_name() == "Gather" and target.get_index() == 0):
                    lookup_only = False
        if not lookup_only:
            total += size
    return total


async def _ttft(url: str, body: dict[str, Any]) -> float:
    async with httpx.AsyncClient(timeout=300) as client:
        started = time.perf_counter()
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    return time.perf_counter() - started
    return float("nan")


async def prefix_cache_probe(url: str, text_model: TextModel) -> dict[str, float]:
    system = sized(text_model, "You are a meticulous assistant. " + SENTENCE, 1000)

    def body(question: str) -> dict[str, Any]:
        return {
            "model": "bench",
            "stream": True,
            "max_tokens": 8,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
            ],
        }

    first = await _ttft(url, body("How does the story begin?"))
    second = await _ttft(url, body("Who is the main character?"))
    return {"first_ttft_ms": first * 1000, "second_ttft_ms": second * 1000, "ratio": second / first}


async def long_prompt_probe(url: str, text_model: TextModel, salt: str = "") -> dict[str, float]:
    """p99 inter-token latency of 8 decoding streams, without and with one 3000-token
    prompt arriving in the middle (chunked prefill keeps it from stalling them). A probe
    run again on the same server needs a new `salt`, or the prefix cache answers."""
    stream = http_stream(url, "bench")
    long_prompt = sized(text_model, f"{salt}Summarise: ", 3000)

    async def decode(out: list[float]) -> None:
        last = None
        async for _ in stream("Tell me a long story.", 200):
            now = time.perf_counter()
            if last is not None:
                out.append((now - last) * 1000)
            last = now

    async def run(with_long: bool) -> tuple[float, float, float]:
        gaps: list[float] = []
        tasks = [asyncio.create_task(decode(gaps)) for _ in range(8)]
        ttft = float("nan")
        if with_long:
            await asyncio.sleep(1.0)
            started = time.perf_counter()
            async for n in stream(long_prompt, 4):
                if n > 0 and ttft != ttft:
                    ttft = (time.perf_counter() - started) * 1000
        await asyncio.gather(*tasks)
        return percentile(gaps, 99), max(gaps), ttft

    base, base_max, _ = await run(False)
    loaded, loaded_max, ttft = await run(True)
    # The max as well: a prompt prefilled in one step freezes every stream once, which a
    # p99 over 1600 gaps does not see.
    return {
        "itl_p99_ms": base,
        "itl_p99_with_long_prompt_ms": loaded,
        "ratio": loaded / base,
        "itl_max_ms": base_max,
        "itl_max_with_long_prompt_ms": loaded_max,
        "long_prompt_ttft_ms": ttft,
    }


SCALING_LEVELS = [1, 8, 16, 32]
SCALING_ROUNDS = 6


def paired_ratios(low: list[float], high: list[float]) -> dict[str, Any]:
    """Round-by-round ratios high / low of two series measured in the same rounds, and
    their median: the drift between rounds cancels in each ratio, not in a ratio of
    medians."""
    ratios = [b / a for a, b in zip(low, high, strict=True) if a]
    return {
        "per_round": [round(r, 3) for r in ratios],
        "median": statistics.median(ratios) if ratios else float("nan"),
    }


async def scaling_probe(url: str, prompt: str) -> dict[str, Any]:
    """Aggregate tokens/s at 1, 8, 16 and 32 streams, in interleaved rounds on one server.

    The per-level tables take their levels a minute or more apart, and this machine's
    speed drifts by tens of percent over minutes: in single passes c32 came out 25% above
    c16 in one run and 12% below it in the next, with no code change between. Taking the
    four levels back to back, order reversed every round, pairs each round's c8/c1 and
    c32/c16."""
    stream = http_stream(url, "bench")
    async for _ in stream("warm up", 8):
        pass
    tok: dict[int, list[float]] = {level: [] for level in SCALING_LEVELS}
    failed = 0
    for round_ in range(SCALING_ROUNDS):
        for level in SCALING_LEVELS if round_ % 2 == 0 else SCALING_LEVELS[::-1]:
            result = await run_level(
                "ovchat-genai", stream, "short", prompt, level, requests_for(level), OUT_TOKENS
            )
            tok[level].append(result.output_tok_per_s)
            failed += result.errors + result.incomplete
    probe: dict[str, Any] = {
        "rounds": SCALING_ROUNDS,
        "tok_s": {str(level): values for level, values in tok.items()},
        "median_tok_s": {str(level): statistics.median(v) for level, v in tok.items()},
        "failed": failed,
    }
    for low, high in ((1, 8), (16, 32)):
        paired = paired_ratios(tok[low], tok[high])
        probe[f"c{high}_over_c{low}_per_round"] = paired["per_round"]
        probe[f"c{high}_over_c{low}_median"] = paired["median"]
    print(json.dumps({"scaling": probe}), flush=True)
    return probe


BURST = 8
BURST_TOKENS = 16


async def burst_probe(
    url: str, prompt: str, extra: dict[str, Any] | None = None, salt: int | None = None
) -> dict[str, float]:
    """Time to first token of BURST short requests sent at the same instant, nothing else
    running: p50 and max. Each request's prompt starts with its own salt, so no prefix
    cache (ovchat's, vLLM's, llama-server's) answers from an earlier round."""
    stream = http_stream(url, "bench", extra=extra)
    salt = time.monotonic_ns() if salt is None else salt

    async def one(i: int) -> float:
        started = time.perf_counter()
        async for n in stream(f"[{salt}-{i}] {prompt}", BURST_TOKENS):
            if n > 0:
                return (time.perf_counter() - started) * 1000
        return float("nan")

    ttfts = list(await asyncio.gather(*(one(i) for i in range(BURST))))
    return {"burst_ttft_p50_ms": percentile(ttfts, 50), "burst_ttft_max_ms": max(ttfts)}
