"""What one stream costs ovchat beyond its engine: ovchat's single-stream decode speed on
the default model against openvino-genai's own step loop on the same export with the same
scheduler and properties (no server, no process hop, no HTTP), in interleaved rounds. If
the two are level, one stream's speed is the engine's, and a faster single stream needs a
faster engine, not a leaner server.

    .venv/bin/python bench/ceiling.py --rounds 5

writes its table into docs/BENCHMARKS.md (between the ceiling markers) and prints it."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.modelstore import store  # noqa: E402
from app.settings import Settings  # noqa: E402
from bench.report import write_between  # noqa: E402
from bench.servers import free_port, ovchat_cmd, server  # noqa: E402

DOC = ROOT / "docs" / "BENCHMARKS.md"
MODEL = store.model_dir(ROOT / "model_store", store.DEFAULT_MODEL)
START, END = "<!-- ceiling:start -->", "<!-- ceiling:end -->"
TOKENS = 128
PROMPT = "Write a story about a lighthouse keeper."


def genai_pipeline(settings: Settings, export: Path) -> Any:
    import openvino_genai as ov_genai

    scheduler = ov_genai.SchedulerConfig()
    scheduler.cache_size = int(settings.kv_cache_gb)
    scheduler.max_num_seqs = settings.max_num_seqs
    scheduler.max_num_batched_tokens = settings.max_num_batched_tokens
    scheduler.enable_prefix_caching = settings.enable_prefix_caching
    scheduler.dynamic_split_fuse = settings.dynamic_split_fuse
    return ov_genai.ContinuousBatchingPipeline(
        str(export), scheduler, "CPU", settings.engine_properties()
    )


def genai_rate(pipe: Any, ids: list[int], rid: int) -> float:
    """Decode tokens per second after the first, in genai's own step loop."""
    import numpy as np
    import openvino as ov
    import openvino_genai as ov_genai

    config = ov_genai.GenerationConfig()
    config.max_new_tokens = TOKENS
    config.do_sample = False
    config.ignore_eos = True
    handle = pipe.add_request(rid, ov.Tensor(np.array([ids], dtype=np.int64)), config)
    produced, first = 0, 0.0
    while pipe.has_non_finished_requests():
        pipe.step()
        for output in handle.read().values():
            produced += len(output.generated_ids)
        if not first and produced:
            first = time.perf_counter()
    return (produced - 1) / (time.perf_counter() - first)


def ovchat_rate(url: str, ids: list[int]) -> float:
    """Decode tokens per second after the first, streamed by ovchat (token counts from
    the final usage, so chunks that carry several tokens are counted right)."""
    body = {
        "model": "bench",
        "prompt": ids,
        "max_tokens": TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    first = 0.0
    tokens = 0
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=300) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            if not first:
                first = time.perf_counter()
            if '"usage"' in line and '"completion_tokens"' in line:
                tokens = json.loads(line[6:])["usage"]["completion_tokens"]
    return (tokens - 1) / (time.perf_counter() - first)


def verdict(ratio: float) -> str:
    if ratio >= 0.95:
        return (
            "Level: the server, its process hop and HTTP cost one stream nothing "
            "measurable, so a faster single stream needs a faster engine step."
        )
    return f"ovchat keeps {ratio:.0%} of its engine's speed for one stream."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    settings = Settings()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = ROOT / "bench" / "results" / "ceiling-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    ours: list[float] = []
    theirs: list[float] = []
    with server(ovchat_cmd(MODEL, port), f"{url}/health", log):
        ids = httpx.post(f"{url}/tokenize", json={"prompt": PROMPT}).json()["tokens"]
        pipe = genai_pipeline(settings, MODEL)
        genai_rate(pipe, ids, 0)
        ovchat_rate(url, ids)  # warm both
        for round_ in range(args.rounds):
            pair = [("ovchat", ours), ("genai", theirs)]
            for name, values in pair if round_ % 2 == 0 else pair[::-1]:
                rate = (
                    genai_rate(pipe, ids, round_ + 1) if name == "genai" else ovchat_rate(url, ids)
                )
                values.append(rate)
                print(f"round {round_} {name}: {rate:.1f} tok/s", flush=True)
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    ratio = statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
    section = "\n".join(
        [
            START,
            "## One stream: ovchat against its engine's own loop",
            "",
            f"Measured {date} with `python bench/ceiling.py --rounds {args.rounds}`: the "
            f"default model, {TOKENS} greedy tokens, decode speed after the first token, "
            f"{args.rounds} interleaved rounds, medians; genai's `ContinuousBatchingPipeline` "
            "stepped in a bare loop with ovchat's scheduler and properties, against one "
            "ovchat server streaming over HTTP.",
            "",
            "| genai step loop tok/s | ovchat tok/s | ovchat / genai |",
            "|---|---|---|",
            f"| {statistics.median(theirs):.1f} | {statistics.median(ours):.1f} | {ratio:.2f} |",
            "",
            verdict(ratio),
            END,
        ]
    )
    write_between(DOC, START, END, section)
    print(section)


if __name__ == "__main__":
    main()
