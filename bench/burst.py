"""Burst latency against the long-prompt stall, for ovchat engine configurations side by
side: a burst of 8 short requests arriving at once (time to first token, p50 and max),
8 decoding streams with and without a 3000-token prompt arriving among them (inter-token
latency p99, the ratio is the stall), and 8 streams' aggregate tokens/s.

All variants are up at once and every probe runs in interleaved rounds, so the ratios
compare runs seconds apart.

    .venv/bin/python bench/burst.py --rounds 3 --variant default= \\
        --variant budget64="--max-num-batched-tokens 64"

writes its table into docs/BENCHMARKS.md (between the burst markers) and prints it."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shlex
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import http_stream, run_level  # noqa: E402
from bench.probes import (  # noqa: E402
    BURST,
    BURST_TOKENS,
    OUT_TOKENS,
    burst_probe,
    long_prompt_probe,
    prompts,
)
from bench.report import DOC, write_between  # noqa: E402
from bench.servers import free_port, ovchat_cmd, server  # noqa: E402

START, END = "<!-- burst:start -->", "<!-- burst:end -->"
RESULTS = ROOT / "bench" / "results"


async def throughput_probe(url: str, prompt: str) -> dict[str, float]:
    level = await run_level("v", http_stream(url, "bench"), "short", prompt, 8, 16, OUT_TOKENS)
    return {"c8_tok_s": level.output_tok_per_s, "errors": level.errors}


def median_of(rounds: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="export folder (default: the default model)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help='NAME="ovchat flags"; repeatable (default: the defaults alone)',
    )
    parser.add_argument("--no-doc", action="store_true", help="print only")
    args = parser.parse_args()
    variants = dict(v.split("=", 1) for v in args.variant) or {"default": ""}

    from app.modelstore import store
    from app.textmodel import TextModel

    if args.model is None:
        args.model = store.model_dir(ROOT / "model_store", store.DEFAULT_MODEL)
    text_model = TextModel.load(args.model)
    short = prompts(text_model)["short"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    with ExitStack() as stack:
        urls = {}
        for name, flags in variants.items():
            port = free_port()
            log = RESULTS / f"burst-{name}.log"
            stack.enter_context(
                server(
                    ovchat_cmd(args.model, port, *shlex.split(flags)),
                    f"http://127.0.0.1:{port}/health",
                    log,
                )
            )
            urls[name] = f"http://127.0.0.1:{port}"
        order = list(variants)
        for r in range(args.rounds):
            for name in order if r % 2 == 0 else reversed(order):
                url = urls[name]
                measured: dict[str, float] = {}
                measured.update(asyncio.run(burst_probe(url, short)))
                measured.update(
                    asyncio.run(long_prompt_probe(url, text_model, f"[{time.monotonic_ns()}] "))
                )
                measured.update(asyncio.run(throughput_probe(url, short)))
                results[name].append(measured)
                print(name, json.dumps({k: round(v, 1) for k, v in measured.items()}), flush=True)

    base = order[0]
    rows = [
        "| variant | flags | burst TTFT p50 ms | burst TTFT max ms | stall ITL p99 ratio "
        "| long prompt TTFT ms | c8 tok/s | c8 vs first |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in order:
        rs = results[name]
        ratio = statistics.median(
            r["c8_tok_s"] / b["c8_tok_s"] for r, b in zip(rs, results[base], strict=True)
        )
        rows.append(
            f"| {name} | `{variants[name] or '(defaults)'}` "
            f"| {median_of(rs, 'burst_ttft_p50_ms'):.0f} "
            f"| {median_of(rs, 'burst_ttft_max_ms'):.0f} "
            f"| {median_of(rs, 'ratio'):.2f} "
            f"| {median_of(rs, 'long_prompt_ttft_ms'):.0f} "
            f"| {median_of(rs, 'c8_tok_s'):.0f} | {ratio:.2f} |"
        )
    command = f"python bench/burst.py --rounds {args.rounds}" + "".join(
        f' --variant {n}="{f}"' for n, f in variants.items()
    )
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = "\n".join(
        [
            START,
            "## Burst latency against the long-prompt stall",
            "",
            f"Measured {when} with `{command}`: ovchat servers on the default model, all "
            f"up at once, {args.rounds} interleaved rounds, medians. Burst: {BURST} short "
            f"requests (~50 prompt tokens, {BURST_TOKENS} out) sent at the same instant. "
            "Stall: inter-token latency p99 of 8 streams with a 3000-token prompt arriving "
            "among them, over the same without it (target < 3). c8: 8 streams of "
            f"{OUT_TOKENS} tokens.",
            "",
            *rows,
            END,
        ]
    )
    print(section)
    if not args.no_doc:
        write_between(DOC, START, END, section)
    (RESULTS / "burst.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
