"""`make bench`: every contender on the same workloads in one run, then docs/BENCHMARKS.md
and docs/benchmarks.png. Contenders: ovchat genai over HTTP, the same engine in-process
(no HTTP), ovchat optimum (the cookbook sample's approach), and, on the GGUF the default
model is made from, llama-cpp-python's server and llama.cpp's own C++ server (when built:
`make bench-llamacpp`)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import LevelResult, StreamFn, http_stream, run_level, sweep  # noqa: E402

if TYPE_CHECKING:
    from app.textmodel import TextModel

LEVELS = [1, 2, 4, 8, 16, 32]
OUT_TOKENS = 128
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "BENCHMARKS.md"
PLOT = ROOT / "docs" / "benchmarks.png"

SENTENCE = "The lighthouse keeper watched the storm roll in over the grey and restless sea. "


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@contextmanager
def server(
    cmd: list[str], url: str, log: Path, timeout: float = 300
) -> Iterator[tuple[float, int]]:
    """Starts a server; yields (seconds from spawn to a 200 from `url`, its pid)."""
    started = time.monotonic()
    with log.open("wb") as sink:
        process = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited: see {log}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"not ready in {timeout} s: see {log}")
            time.sleep(0.1)
        yield time.monotonic() - started, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def ovchat_cmd(model: Path, port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "app",
        "serve",
        "--model",
        str(model),
        "--port",
        str(port),
        "--served-model-name",
        "bench",
        "--log-level",
        "warning",
        *extra,
    ]


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


def inprocess_stream(model_dir: Path) -> tuple[StreamFn, Any]:
    """The genai engine driven directly: the same engine process, no HTTP, no server."""
    from app.chat_format import Turn
    from app.engine.base import SamplingParams
    from app.engine.genai import GenaiEngine
    from app.engine.genai_worker import WorkerConfig
    from app.settings import Settings
    from app.textmodel import TextModel

    settings = Settings()
    text = TextModel.load(model_dir)
    engine = GenaiEngine(WorkerConfig.from_settings(settings, str(model_dir), "CPU"))

    async def stream(prompt: str, max_tokens: int) -> AsyncIterator[int]:
        ids = text.encode(text.formatter.render([Turn("user", prompt)]))
        params = SamplingParams(
            max_new_tokens=max_tokens,
            temperature=0,
            ignore_eos=True,
            stop_token_ids=text.eos_token_ids,
        )
        async for delta in engine.generate(ids, params):
            if delta.token_ids:
                yield len(delta.token_ids)

    return stream, engine


def requests_for(level: int) -> int:
    return max(level, 4)


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


async def long_prompt_probe(url: str, text_model: TextModel) -> dict[str, float]:
    """p99 inter-token latency of 8 decoding streams, without and with one 3000-token
    prompt arriving in the middle (chunked prefill keeps it from stalling them)."""
    stream = http_stream(url, "bench")
    long_prompt = sized(text_model, "Summarise: ", 3000)

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
        from bench.loadgen import percentile

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
        ratios = [b / a for a, b in zip(tok[low], tok[high], strict=True)]
        probe[f"c{high}_over_c{low}_per_round"] = [round(r, 3) for r in ratios]
        probe[f"c{high}_over_c{low}_median"] = statistics.median(ratios)
    print(json.dumps({"scaling": probe}), flush=True)
    return probe


# Each engine setting that has a default to justify, one at a time against the defaults.
SWEEP: list[tuple[str, list[str]]] = [
    ("defaults", []),
    # The step budget must hold every running sequence's token: raise max_num_seqs with it.
    ("batched_tokens 32, seqs 32", ["--max-num-batched-tokens", "32", "--max-num-seqs", "32"]),
    ("batched_tokens 64, seqs 32", ["--max-num-batched-tokens", "64", "--max-num-seqs", "32"]),
    ("batched_tokens 256, seqs 32", ["--max-num-batched-tokens", "256", "--max-num-seqs", "32"]),
    # Without split-fuse a prompt must fit in one step: the budget is the context.
    (
        "dynamic_split_fuse off",
        ["--no-dynamic-split-fuse", "--max-num-batched-tokens", "8192", "--max-num-seqs", "32"],
    ),
    ("kv_cache_precision u4", ["--kv-cache-precision", "u4"]),
    ("kv_cache_precision f16", ["--kv-cache-precision", "f16"]),
    ("inference_threads 1", ["--inference-threads", "1"]),
    ("performance_hint THROUGHPUT", ["--performance-hint", "THROUGHPUT"]),
]


def settings_sweep(
    model: Path, prompt_set: dict[str, str], text_model: TextModel, logs: Path
) -> list[dict[str, Any]]:
    """Single-stream decode, aggregate at 8 streams (short and long prompts), and the
    long-prompt stall probe for each variant: the evidence behind the defaults."""
    rows = []
    for name, flags in SWEEP:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with server(ovchat_cmd(model, port, *flags), f"{url}/health", logs / "sweep.log"):
            row = asyncio.run(_sweep_variant(name, url, prompt_set, text_model))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


async def _sweep_variant(
    name: str, url: str, prompt_set: dict[str, str], text_model: TextModel
) -> dict[str, Any]:
    stream = http_stream(url, "bench")
    async for _ in stream("warm up", 8):
        pass
    short, long = prompt_set["short"], prompt_set["long"]
    one = await run_level(name, stream, "short", short, 1, 8, OUT_TOKENS)
    eight = await run_level(name, stream, "short", short, 8, 8, OUT_TOKENS)
    eight_long = await run_level(name, stream, "long", long, 8, 8, OUT_TOKENS)
    many = await run_level(name, stream, "short", short, 32, 32, OUT_TOKENS)
    stall = await long_prompt_probe(url, text_model)
    # The same size of prompt with nothing else running (and nothing cached for it).
    alone = sized(text_model, "Condense this: ", 3000)
    started = time.perf_counter()
    alone_ttft = float("nan")
    async for n in stream(alone, 4):
        if n > 0 and alone_ttft != alone_ttft:
            alone_ttft = (time.perf_counter() - started) * 1000
    return {
        "variant": name,
        "decode_tok_s": 1000 / one.tpot_p50_ms,
        "c8_tok_s": eight.output_tok_per_s,
        "c8_long_tok_s": eight_long.output_tok_per_s,
        "c32_tok_s": many.output_tok_per_s,
        "stall_ratio": stall["ratio"],
        "stall_max_ms": stall["itl_max_with_long_prompt_ms"],
        "long_prompt_ttft_ms": stall["long_prompt_ttft_ms"],
        "alone_ttft_ms": alone_ttft,
        "failed": one.errors + eight.errors + eight_long.errors + many.errors,
    }


def llama_cpp_python_cmd(python: Path, gguf: str, port: int) -> list[str]:
    return [
        str(python),
        "-m",
        "llama_cpp.server",
        "--model",
        gguf,
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--n_ctx",
        "4096",
        "--n_threads",
        str(os.cpu_count()),
        "--model_alias",
        "bench",
    ]


def llama_server_cmd(binary: Path, gguf: str, port: int) -> list[str]:
    cores = str(os.cpu_count())
    top = max(LEVELS)
    return [
        str(binary),
        "--model",
        gguf,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--alias",
        "bench",
        "--threads",
        cores,
        "--threads-batch",
        cores,
        # One slot per stream of the busiest level (continuous batching across slots),
        # each with room for the long prompt and the answer.
        "--parallel",
        str(top),
        "--ctx-size",
        str(top * 1536),
    ]


# How each contender is told to ignore eos: llama-cpp-python has no ignore_eos, so a
# logit_bias bans SmolLM2's eos id.
EXTRA: dict[str, dict[str, Any] | None] = {
    "ovchat-genai": None,
    "llama-cpp-python": {"logit_bias": {"2": -100}},
    "llama-server": {"ignore_eos": True},
}


SHOOTOUT_ROUNDS = 6


def single_stream_shootout(
    model: Path, prompt: str, logs: Path
) -> tuple[dict[str, float], dict[str, Any]]:
    """Single-stream decode tokens/s (1 / TPOT p50) of every contender, taken in turns
    with all of them up at once (an idle server costs nothing): a shared machine's speed
    drifts by tens of percent over minutes, and sequential runs would bill that drift to
    whoever ran in the slow minute. ovchat over HTTP and in-process run back to back and
    the order reverses every round, so their per-round ratios are paired; the ovchat
    server's own CPU time per streamed token is read from /proc around its turns."""
    from app.modelstore import smollm2

    llama_bin = ROOT / ".venv-llamacpp" / "bin"
    gguf = str(smollm2.gguf_path())
    commands: dict[str, tuple[list[str], str]] = {}
    port = free_port()
    commands["ovchat-genai"] = (ovchat_cmd(model, port), f"http://127.0.0.1:{port}")
    if (llama_bin / "python").exists():
        port = free_port()
        cmd = llama_cpp_python_cmd(llama_bin / "python", gguf, port)
        commands["llama-cpp-python"] = (cmd, f"http://127.0.0.1:{port}")
    if (llama_bin / "llama-server").exists():
        port = free_port()
        cmd = llama_server_cmd(llama_bin / "llama-server", gguf, port)
        commands["llama-server"] = (cmd, f"http://127.0.0.1:{port}")
    with ExitStack() as stack:
        streams: dict[str, StreamFn] = {}
        ovchat_pid = 0
        for name, (cmd, url) in commands.items():
            ready = f"{url}/health" if name.startswith("ovchat") else f"{url}/v1/models"
            _, pid = stack.enter_context(server(cmd, ready, logs / f"shootout-{name}.log"))
            streams[name] = http_stream(url, "bench", extra=EXTRA[name])
            if name == "ovchat-genai":
                ovchat_pid = pid
                stream, engine = inprocess_stream(model)
                streams["in-process"] = stream
        server_cpu = psutil.Process(ovchat_pid)

        async def rounds() -> tuple[dict[str, list[float]], float]:
            await engine.start()
            await engine.wait_ready()
            tpots: dict[str, list[float]] = {name: [] for name in streams}
            cpu_s = 0.0
            try:
                for fn in streams.values():  # warm-up
                    async for _ in fn("warm up", 8):
                        pass
                for round_ in range(SHOOTOUT_ROUNDS):
                    order = list(streams.items())
                    for name, fn in order if round_ % 2 == 0 else reversed(order):
                        before = sum(server_cpu.cpu_times()[:2])
                        level = await run_level(name, fn, "short", prompt, 1, 4, OUT_TOKENS)
                        tpots[name].append(level.tpot_p50_ms)
                        if name == "ovchat-genai":
                            cpu_s += sum(server_cpu.cpu_times()[:2]) - before
            finally:
                await engine.close()
            return tpots, cpu_s

        tpots, cpu_s = asyncio.run(rounds())
    result = {name: 1000 / statistics.median(values) for name, values in tpots.items()}
    paired = [
        inproc / http
        for http, inproc in zip(tpots["ovchat-genai"], tpots["in-process"], strict=True)
    ]
    detail = {
        "rounds": SHOOTOUT_ROUNDS,
        "http_over_inprocess_per_round": [round(r, 3) for r in paired],
        "http_over_inprocess_median": statistics.median(paired),
        "server_cpu_us_per_token": cpu_s / (SHOOTOUT_ROUNDS * 4 * OUT_TOKENS) * 1e6,
        # A contender whose speed swings between turns is also judged by its best one.
        "best_tok_s": {name: 1000 / min(values) for name, values in tpots.items()},
    }
    print(json.dumps({"shootout": result, "tpot_ms": tpots, **detail}), flush=True)
    return result, detail


def contender_http(
    name: str,
    cmd: list[str],
    url: str,
    prompt_set: dict[str, str],
    extra: dict[str, Any] | None,
    logs: Path,
    levels: list[int] = LEVELS,
    log_name: str | None = None,
) -> tuple[list[LevelResult], dict[str, Any]]:
    ready_url = f"{url}/health" if name.startswith("ovchat") else f"{url}/v1/models"
    with server(cmd, ready_url, logs / f"{log_name or name}.log") as (ready_s, pid):
        rss = RssSampler(pid)
        stream = http_stream(url, "bench", extra=extra)

        async def warm() -> None:
            async for _ in stream("warm up", 8):
                pass

        results = asyncio.run(
            sweep(name, stream, prompt_set, levels, OUT_TOKENS, requests_for, warm)
        )
        peak = rss.stop()
    return results, {"ready_s": ready_s, "peak_rss_mb": peak / 1e6}


def phi3_shaped(bandwidth: float, logs: Path) -> dict[str, Any]:
    """The real Phi-3-mini sizes with random weights: its speed is Phi-3-mini's."""
    from app.modelstore import store

    # Built in a process of its own: 3.8 B random parameters must not share memory with
    # this one's models and buffers.
    subprocess.run(
        [sys.executable, "-m", "app", "model", "build", "phi3-shaped"], check=True, cwd=ROOT
    )
    model = store.model_dir(ROOT / "model_store", "phi3-shaped")
    weights = weights_read_per_token(model)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = ovchat_cmd(model, port, "--kv-cache-gb", "4")
    with server(cmd, f"{url}/health", logs / "phi3-shaped.log") as (ready_s, pid):
        rss = RssSampler(pid)
        stream = http_stream(url, "bench")

        async def warm() -> None:  # the first request pays for compiling the model
            async for _ in stream("warm up", 4):
                pass

        results = asyncio.run(
            sweep(
                "phi3-shaped",
                stream,
                {"short": "Tell me a story."},
                [1, 4, 8],
                64,
                lambda level: level,
                warm,
            )
        )
        peak = rss.stop()
    return {
        "weights_mb": weights / 1e6,
        "ceiling_tok_s": bandwidth * 1e9 / weights,
        "ready_s": ready_s,
        "peak_rss_mb": peak / 1e6,
        "levels": [asdict(r) for r in results],
        "contexts": full_contexts_probe(model, logs),
        "window_cache": window_cache(model),
    }


QWEN_LEVELS = [1, 4, 8]


def qwen_coder(bandwidth: float, logs: Path, levels: list[int]) -> dict[str, Any]:
    """The real 1.5B chat model, Qwen2.5-Coder-1.5B-Instruct int4, and llama.cpp's server
    on the Q4_K_M GGUF it is made from (when built): what a user of a realistic model sees,
    where the default 135M model is too small to be memory-bound the same way."""
    from app.modelstore import qwen_coder as recipe
    from app.modelstore import store

    # Built in a process of its own (the conversion peaks at ~11 GB); a no-op once built.
    subprocess.run(
        [sys.executable, "-m", "app", "model", "build", recipe.NAME], check=True, cwd=ROOT
    )
    model = store.model_dir(ROOT / "model_store", recipe.NAME)
    weights = weights_read_per_token(model)
    prompt = {"short": "Write a short story about a lighthouse keeper."}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    contenders = {"ovchat-genai": ovchat_cmd(model, port)}
    llama_server = ROOT / ".venv-llamacpp" / "bin" / "llama-server"
    if llama_server.exists():
        cmd = llama_server_cmd(llama_server, str(recipe.gguf_file(ROOT / "model_store")), port)
        contenders["llama-server"] = cmd
    section: dict[str, Any] = {
        "weights_mb": weights / 1e6,
        "ceiling_tok_s": bandwidth * 1e9 / weights,
        "contenders": {},
    }
    if not llama_server.exists():
        section["contenders"]["llama-server"] = {"skipped": "not built: run `make bench-llamacpp`"}
    for name, cmd in contenders.items():
        results, info = contender_http(
            name, cmd, url, prompt, EXTRA[name], logs, levels=levels, log_name=f"qwen-{name}"
        )
        section["contenders"][name] = info | {"levels": [asdict(r) for r in results]}
    print(json.dumps({"qwen": section}), flush=True)
    return section


def window_cache(model: Path) -> dict[str, Any]:
    """bench/window_cache.py on a 2600-token prompt: the window cache's cost and tokens."""
    out = subprocess.run(
        [sys.executable, "bench/window_cache.py", str(model), "2600", "24"],
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


# 8 full Phi-3-mini contexts in 6 GB. ~2.9 GB of compiled weights and runtime leave ~3 GB
# for the cache, and 8 x 4096 tokens at u4 (128 KiB a token, bench/kvbytes.py) would take
# 4 GiB; but Phi-3-mini attends only its last 2047 tokens, and with the cache cut to that
# window (the default, kv_cache_window) a decoding sequence keeps at most 2176 tokens. The
# cache is sized for seven of those, one prompt prefilling in full (4096) and the next
# one's first chunk (256): 19,584 tokens, so 20,480 (640 blocks, 2.5 GiB at u4). Long
# prompts are the hard case (a prompt holds all its blocks until its prefill ends), and the
# answer is long enough that the first request still decodes when the last one starts to.
CONTEXTS = 8
CONTEXT_TOKENS = 4096
CONTEXT_ANSWER = 200
CONTEXT_FLAGS = (
    "--kv-cache-tokens",
    "20480",
    "--kv-cache-precision",
    "u4",
    "--max-num-seqs",
    "8",
    "--max-num-batched-tokens",
    "256",
    # Prefilling 8 x 3.9k tokens on 2 cores takes longer than the default request limit.
    "--request-timeout-s",
    "3600",
)


def kv_bytes(model: Path) -> dict[str, dict[str, float]]:
    """KiB of KV cache per token at each precision, as openvino-genai accounts them and as
    its cache tensors take them."""
    out = subprocess.run(
        [sys.executable, "bench/kvbytes.py", str(model), "u8", "u4", "f16"],
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, dict[str, float]] = json.loads(out.strip().splitlines()[-1])
    return result


MEMORY_LIMIT = 6_000_000_000
CGROUP = Path("/sys/fs/cgroup/memory/ovchat-bench")


def memory_limited(cmd: list[str]) -> tuple[list[str], Path | None]:
    """The command in a cgroup-v1 memory group capped at 6 GB, where this machine allows
    it (root): the way a container limit would hold the server. The page cache is dropped
    first, so the weights' file pages are charged to the server's group, not to whoever
    read the file before."""
    try:
        CGROUP.mkdir(exist_ok=True)
        (CGROUP / "memory.limit_in_bytes").write_text(str(MEMORY_LIMIT))
        (CGROUP / "memory.max_usage_in_bytes").write_text("0")
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3")
    except OSError:
        return cmd, None
    return ["bash", "-c", f'echo $$ > {CGROUP}/tasks; exec "$@"', "ovchat", *cmd], CGROUP


def full_contexts_probe(model: Path, logs: Path) -> dict[str, Any]:
    """Peak memory while 8 requests hold CONTEXT_TOKENS-token contexts at once (distinct
    prompts, so no shared prefix blocks), under a 6 GB memory limit where one can be set.
    "At once" is checked, not assumed: the last request's first token must come before the
    first request's last one."""
    from app.textmodel import TextModel

    text = TextModel.load(model)
    prompts = []
    for i in range(CONTEXTS):
        prompt = f"Story number {i}. "
        # Room for the chat template's few tokens around the prompt.
        while len(text.encode(prompt + SENTENCE)) < CONTEXT_TOKENS - CONTEXT_ANSWER - 24:
            prompt += SENTENCE
        prompts.append(prompt)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd, group = memory_limited(ovchat_cmd(model, port, *CONTEXT_FLAGS))
    with server(cmd, f"{url}/health", logs / "phi3-contexts.log") as (_, pid):
        rss = RssSampler(pid)
        stream = http_stream(url, "bench", timeout_s=3600)
        started = time.monotonic()

        async def one(prompt: str) -> tuple[int, float, float]:
            count, first = 0, float("nan")
            async for n in stream(prompt, CONTEXT_ANSWER):
                if n > 0 and count == 0:
                    first = time.monotonic() - started
                count = -n if n < 0 else count + n
            return count, first, time.monotonic() - started

        async def everyone() -> tuple[list[tuple[int, float, float]], int]:
            async with httpx.AsyncClient() as client:
                body = {"model": "bench", "messages": [{"role": "user", "content": prompts[0]}]}
                r = await client.post(f"{url}/tokenize", json=body)
                prompt_tokens = int(r.json()["count"])
            return list(await asyncio.gather(*(one(p) for p in prompts))), prompt_tokens

        results, prompt_tokens = asyncio.run(everyone())
        duration = time.monotonic() - started
        peak = rss.stop()
    counts = [count for count, _, _ in results]
    last_first_token = max(first for _, first, _ in results)
    first_finish = min(end for _, _, end in results)
    limited: dict[str, Any] = {}
    if group is not None:
        oom = (group / "memory.oom_control").read_text().split()
        limited = {
            "memory_limit_bytes": MEMORY_LIMIT,
            "max_usage_bytes": int((group / "memory.max_usage_in_bytes").read_text()),
            "oom_kills": int(oom[oom.index("oom_kill") + 1]) if "oom_kill" in oom else 0,
        }
    return limited | {
        "flags": " ".join(CONTEXT_FLAGS),
        "contexts": CONTEXTS,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": counts,
        "last_first_token_s": last_first_token,
        "first_finish_s": first_finish,
        "held_at_once": last_first_token < first_finish,
        "duration_s": duration,
        "peak_rss_mb": peak / 1e6,
        "kv_kib_per_token": kv_bytes(model),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip", default="", help="comma-separated contenders to skip")
    parser.add_argument("--phi3", action="store_true", help="also the Phi-3-mini-shaped model")
    parser.add_argument(
        "--qwen",
        action="store_true",
        help="also the real 1.5B model, Qwen2.5-Coder-1.5B-Instruct (built if missing: "
        "1.1 GB download, a few minutes), against llama-server on its GGUF when built",
    )
    parser.add_argument(
        "--qwen-levels",
        default=",".join(map(str, QWEN_LEVELS)),
        help="concurrency levels for --qwen (comma-separated)",
    )
    parser.add_argument(
        "--sweep", action="store_true", help="also the engine settings sweep (~6 min)"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the last run's results (bench/results/latest.json), measure only --phi3 "
        "and --qwen",
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    from app.modelstore import smollm2, store
    from app.textmodel import TextModel

    model = store.model_dir(ROOT / "model_store", store.DEFAULT_MODEL)
    text = TextModel.load(model)
    prompt_set = prompts(text)
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    weights = weights_read_per_token(model)
    bandwidth = measure_bandwidth()
    machine = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": platform.processor() or platform.machine(),
        "bandwidth_gbs": round(bandwidth, 1),
        "weights_mb": round(weights / 1e6, 1),
        "ceiling_tok_s": round(bandwidth * 1e9 / weights, 1),
        "command": "make bench" + (f' ARGS="{" ".join(sys.argv[1:])}"' if sys.argv[1:] else ""),
    }
    print(json.dumps(machine), flush=True)
    results: list[LevelResult] = []
    extras: dict[str, Any] = {"machine": machine}
    if args.reuse:
        previous = json.loads((RESULTS / "latest.json").read_text())
        results = [LevelResult(**r) for r in previous["results"]]
        extras = previous["extras"]
        skip |= {"genai", "inprocess", "optimum", "llamacpp", "llama-server", "shootout"}

    if "genai" not in skip:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        res, info = contender_http(
            "ovchat-genai", ovchat_cmd(model, port), url, prompt_set, None, logs
        )
        results += res
        extras["ovchat-genai"] = info
        with server(ovchat_cmd(model, port), f"{url}/health", logs / "probes.log"):
            extras["scaling"] = asyncio.run(scaling_probe(url, prompt_set["short"]))
            extras["prefix_cache"] = asyncio.run(prefix_cache_probe(url, text))
            extras["long_prompt"] = asyncio.run(long_prompt_probe(url, text))
        cache = RESULTS / "ov-cache"
        shutil.rmtree(cache, ignore_errors=True)
        starts = []
        for _ in range(2):
            with server(
                ovchat_cmd(model, port, "--cache-dir", str(cache)),
                f"{url}/health",
                logs / "startup.log",
            ) as (ready_s, _):
                starts.append(ready_s)
        extras["startup"] = {"first_s": starts[0], "second_s": starts[1]}
    if "inprocess" not in skip:
        stream, engine = inprocess_stream(model)

        async def inproc() -> list[LevelResult]:
            await engine.start()
            await engine.wait_ready()
            try:
                return await sweep(
                    "in-process", stream, prompt_set, LEVELS, OUT_TOKENS, requests_for
                )
            finally:
                await engine.close()

        results += asyncio.run(inproc())
    if "optimum" not in skip:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = ovchat_cmd(model, port, "--engine", "optimum")
        res, info = contender_http("ovchat-optimum", cmd, url, prompt_set, None, logs)
        results += res
        extras["ovchat-optimum"] = info
    llama_bin = ROOT / ".venv-llamacpp" / "bin"
    gguf = str(smollm2.gguf_path())
    llama_contenders = [
        ("llamacpp", "llama-cpp-python", llama_bin / "python", llama_cpp_python_cmd),
        ("llama-server", "llama-server", llama_bin / "llama-server", llama_server_cmd),
    ]
    for key, name, binary, build_cmd in llama_contenders:
        if key in skip:
            continue
        if not binary.exists():
            extras[name] = {"skipped": "not built: run `make bench-llamacpp`"}
            continue
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = build_cmd(binary, gguf, port)
        res, info = contender_http(name, cmd, url, prompt_set, EXTRA[name], logs)
        results += res
        extras[name] = info
    if "shootout" not in skip:
        extras["shootout"], extras["shootout_pairs"] = single_stream_shootout(
            model, prompt_set["short"], logs
        )

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(
        json.dumps({"extras": extras, "results": [asdict(r) for r in results]}, indent=2)
    )

    if args.sweep:
        extras["sweep"] = settings_sweep(model, prompt_set, text, logs)
        (RESULTS / "latest.json").write_text(
            json.dumps({"extras": extras, "results": [asdict(r) for r in results]}, indent=2)
        )
    if args.phi3:
        extras["phi3-shaped"] = phi3_shaped(extras["machine"]["bandwidth_gbs"], logs)
        (RESULTS / "latest.json").write_text(
            json.dumps({"extras": extras, "results": [asdict(r) for r in results]}, indent=2)
        )
    if args.qwen:
        levels = [int(level) for level in args.qwen_levels.split(",")]
        extras["qwen2.5-coder-1.5b"] = qwen_coder(extras["machine"]["bandwidth_gbs"], logs, levels)
        (RESULTS / "latest.json").write_text(
            json.dumps({"extras": extras, "results": [asdict(r) for r in results]}, indent=2)
        )
    from bench.report import write_report

    write_report(results, extras, DOC, PLOT)
    print(f"wrote {DOC} and {PLOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
