"""The contenders measured on the default model, each over the same workloads: ovchat over
HTTP, the same engine driven in-process (no HTTP), and any OpenAI-compatible server started
from a command line (ovchat's optimum engine, llama.cpp's servers); the single-stream
shootout with every contender up at once; and the sweep of ovchat's engine settings."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from bench.loadgen import LevelResult, StreamFn, http_stream, run_level, sweep
from bench.probes import (
    LEVELS,
    OUT_TOKENS,
    RssSampler,
    long_prompt_probe,
    requests_for,
    sized,
)
from bench.servers import (
    EXTRA,
    LLAMA_BIN,
    free_port,
    llama_cpp_python_cmd,
    llama_server_cmd,
    ovchat_cmd,
    ready_url,
    server,
)

if TYPE_CHECKING:
    from app.textmodel import TextModel


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

    llama_bin = LLAMA_BIN
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
            ready = ready_url(name, url)
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
    with server(cmd, ready_url(name, url), logs / f"{log_name or name}.log") as (ready_s, pid):
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
