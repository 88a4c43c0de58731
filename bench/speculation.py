"""Speculative decoding against plain decoding, on the same machine in the same minutes:
two ovchat servers on the default model, one with `--speculative-decoding prompt-lookup`,
both up at once, at 1 and 8 streams, on a copy-heavy workload (repeat this code) and on
free generation, in interleaved rounds (order reversed every round).

    .venv/bin/python bench/speculation.py --rounds 3

writes its table into docs/BENCHMARKS.md (between the speculation markers) and prints it;
the acceptance rate is read from each run's /metrics counters."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import http_stream, run_level  # noqa: E402
from bench.report import write_between  # noqa: E402
from bench.run import DOC, OUT_TOKENS, RESULTS, free_port, ovchat_cmd, server  # noqa: E402
from bench.texts import DOCUMENT  # noqa: E402

LEVELS = (1, 8)
START, END = "<!-- speculation:start -->", "<!-- speculation:end -->"
WORKLOADS = {
    "copy": "Repeat the following text exactly:\n\n" + DOCUMENT,
    "free": "Write a story about a lighthouse keeper.",
}
# The pair without dynamic quantization is the exact one (token for token on any text);
# it shows what that exactness costs (app/settings.py, dynamic_quantization).
CONTENDERS = {
    "plain": (),
    "prompt-lookup": ("--speculative-decoding", "prompt-lookup"),
    "plain, no DQ": ("--no-dynamic-quantization",),
    "prompt-lookup, no DQ": (
        "--speculative-decoding",
        "prompt-lookup",
        "--no-dynamic-quantization",
    ),
}


def counters(url: str) -> tuple[float, float]:
    drafted = accepted = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("ovchat_spec_decode_num_draft_tokens_total"):
            drafted = float(line.rsplit(" ", 1)[1])
        elif line.startswith("ovchat_spec_decode_num_accepted_tokens_total"):
            accepted = float(line.rsplit(" ", 1)[1])
    return drafted, accepted


async def rounds(urls: dict[str, str], count: int) -> dict[str, Any]:
    streams = {name: http_stream(url, "bench") for name, url in urls.items()}
    for stream in streams.values():
        async for _ in stream("warm up", 8):
            pass
    names = list(urls)
    keys = [(work, level) for work in WORKLOADS for level in LEVELS]
    tok: dict[str, dict[Any, list[float]]] = {n: {k: [] for k in keys} for n in names}
    accepted: dict[str, list[float]] = {work: [] for work in WORKLOADS}
    for round_ in range(count):
        order = names if round_ % 2 == 0 else names[::-1]
        for work, level in keys:
            for name in order:
                before = counters(urls[name])
                result = await run_level(
                    name, streams[name], work, WORKLOADS[work], level, 2 * level, OUT_TOKENS
                )
                after = counters(urls[name])
                tok[name][(work, level)].append(result.output_tok_per_s)
                drafted = after[0] - before[0]
                if name == "prompt-lookup" and drafted:
                    accepted[work].append((after[1] - before[1]) / drafted)
                print(
                    json.dumps(
                        {
                            "round": round_,
                            "work": work,
                            "level": level,
                            "who": name,
                            "tok_s": result.output_tok_per_s,
                        }
                    ),
                    flush=True,
                )
    return {"tok_s": tok, "accepted": accepted}


def report(data: dict[str, Any], command: str, count: int) -> str:
    tok = data["tok_s"]
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        START,
        "## Speculative decoding (prompt lookup) against plain decoding",
        "",
        f"Measured {date} with `{command}`: four ovchat servers on the default model, "
        "all up at once: plain and `--speculative-decoding prompt-lookup` (5 candidates a "
        "step, one for requests arriving while more than 4 sequences run, never more than a "
        "share of the step budget), with the defaults and with dynamic quantization off "
        "(the pair whose greedy output is equal token for token on any text); "
        f"{count} interleaved rounds, {OUT_TOKENS} streamed tokens a request, greedy. Copy: "
        "the model asked to repeat a 180-token text; free: a story. Ratios are medians of "
        "the per-round ratios.",
        "",
        "| workload | streams | plain tok/s | lookup tok/s | lookup / plain "
        "| plain, no DQ | lookup, no DQ | lookup / plain, no DQ |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def ratio(a: list[float], b: list[float]) -> float:
        return statistics.median(x / y for x, y in zip(a, b, strict=True))

    for work in WORKLOADS:
        for level in LEVELS:
            plain, lookup = tok["plain"][(work, level)], tok["prompt-lookup"][(work, level)]
            bare = tok["plain, no DQ"][(work, level)]
            bare_lookup = tok["prompt-lookup, no DQ"][(work, level)]
            lines.append(
                f"| {work} | {level} | {statistics.median(plain):.1f} "
                f"| {statistics.median(lookup):.1f} | {ratio(lookup, plain):.2f} "
                f"| {statistics.median(bare):.1f} | {statistics.median(bare_lookup):.1f} "
                f"| {ratio(bare_lookup, bare):.2f} |"
            )
    rates = ", ".join(
        f"{work} {statistics.median(values):.0%}"
        for work, values in data["accepted"].items()
        if values
    )
    lines += ["", f"Candidates accepted (median per run): {rates}.", END]
    return "\n".join(lines)


def write(section: str) -> None:
    write_between(DOC, START, END, section)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from app.modelstore import store

    model = store.model_dir(ROOT / "model_store", store.DEFAULT_MODEL)
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    urls = {}
    with ExitStack() as stack:
        for name, extra in CONTENDERS.items():
            port = free_port()
            urls[name] = f"http://127.0.0.1:{port}"
            stack.enter_context(
                server(
                    ovchat_cmd(model, port, *extra),
                    f"{urls[name]}/health",
                    logs / f"speculation-{name}.log",
                )
            )
        data = asyncio.run(rounds(urls, args.rounds))
    command = "python bench/speculation.py " + " ".join(sys.argv[1:])
    section = report(data, command.strip(), args.rounds)
    write(section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
