"""Before and after a change, on the same machine in the same minutes: ovchat at a baseline
commit against ovchat as it is now, on the default model, at 1 and 8 streams.

Both servers are up at once; the levels run in interleaved rounds (baseline then current,
reversed every round), so each round's ratio compares runs seconds apart on a machine whose
speed drifts by tens of percent over minutes. The baseline is checked out with `git
worktree` and served from it by the same Python environment.

    .venv/bin/python bench/ab.py --baseline ea734b3

writes its table into docs/BENCHMARKS.md (between the ab markers, which `make bench`
keeps) and prints it."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import http_stream, run_level  # noqa: E402
from bench.report import write_between  # noqa: E402
from bench.run import (  # noqa: E402
    DOC,
    OUT_TOKENS,
    RESULTS,
    free_port,
    ovchat_cmd,
    prompts,
    server,
)

LEVELS = (1, 8)
START, END = "<!-- ab:start -->", "<!-- ab:end -->"


def requests(level: int) -> int:
    return max(2 * level, 6)


def serve_cmd(checkout: Path, model: Path, port: int) -> list[str]:
    """bench/run.py's ovchat command, running the code of `checkout`: its folder first on
    the module path (the engine process, spawned, inherits the path)."""
    python, _, _, *serve = ovchat_cmd(model, port)
    start = f"import sys; sys.path.insert(0, {str(checkout)!r}); from app.cli import main; "
    return [python, "-c", start + "sys.exit(main())", *serve]


async def rounds(urls: dict[str, str], prompt: str, count: int) -> dict[str, Any]:
    streams = {name: http_stream(url, "bench") for name, url in urls.items()}
    for stream in streams.values():
        async for _ in stream("warm up", 8):
            pass
    names = list(urls)
    tok: dict[str, dict[int, list[float]]] = {n: {lv: [] for lv in LEVELS} for n in names}
    tpot: dict[str, dict[int, list[float]]] = {n: {lv: [] for lv in LEVELS} for n in names}
    failed = {name: 0 for name in names}
    for round_ in range(count):
        order = names if round_ % 2 == 0 else names[::-1]
        for level in LEVELS:
            for name in order:
                result = await run_level(
                    name, streams[name], "short", prompt, level, requests(level), OUT_TOKENS
                )
                tok[name][level].append(result.output_tok_per_s)
                tpot[name][level].append(result.tpot_p50_ms)
                failed[name] += result.errors + result.incomplete
                print(
                    json.dumps(
                        {
                            "round": round_,
                            "level": level,
                            "who": name,
                            "tok_s": result.output_tok_per_s,
                        }
                    ),
                    flush=True,
                )
    return {"tok_s": tok, "tpot_ms": tpot, "failed": failed}


def ratios(after: list[float], before: list[float]) -> list[float]:
    return [a / b for a, b in zip(after, before, strict=True)]


def report(data: dict[str, Any], baseline: str, command: str, count: int) -> str:
    tok, tpot = data["tok_s"], data["tpot_ms"]
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        START,
        "## Before and after the request core",
        "",
        f"Measured {date} with `{command}`: ovchat at {baseline} (before) and as committed "
        f"(after), both up at once on the default model, {count} interleaved rounds "
        f"(order reversed every round), short prompt, {OUT_TOKENS} streamed tokens a "
        "request, the same load generator. Ratios are medians of the per-round after / "
        "before ratios.",
        "",
        "| streams | before tok/s (median) | after tok/s (median) | after / before | per round |",
        "|---|---|---|---|---|",
    ]
    for level in LEVELS:
        per_round = ratios(tok["after"][level], tok["before"][level])
        lines.append(
            f"| {level} | {statistics.median(tok['before'][level]):.1f} | "
            f"{statistics.median(tok['after'][level]):.1f} | "
            f"{statistics.median(per_round):.3f} | {', '.join(f'{r:.2f}' for r in per_round)} |"
        )
    decode = ratios([1000 / t for t in tpot["after"][1]], [1000 / t for t in tpot["before"][1]])
    medians = [statistics.median(ratios(tok["after"][lv], tok["before"][lv])) for lv in LEVELS]
    worst = max(abs(m - 1) for m in medians)
    lines += [
        "",
        f"Aggregate throughput after / before at every level: within {worst:.1%} "
        f"({'inside' if worst <= 0.05 else 'outside'} the 5% the change was held to).",
        "Single-stream decode (1 / TPOT p50) after / before: median "
        f"{statistics.median(decode):.3f}. "
        f"Requests failed or cut short: before {data['failed']['before']}, after "
        f"{data['failed']['after']}.",
        END,
    ]
    return "\n".join(lines)


def write(section: str) -> None:
    write_between(DOC, START, END, section, before="## Targets")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", required=True, help="commit to compare against")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    from app.modelstore import store
    from app.textmodel import TextModel

    model = store.model_dir(ROOT / "model_store", store.DEFAULT_MODEL)
    prompt = prompts(TextModel.load(model))["short"]
    worktree = RESULTS / "ab-baseline"
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["git", "worktree", "remove", "--force", str(worktree)],
        cwd=ROOT,
        check=False,
        capture_output=True,
    )
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(worktree), args.baseline],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    try:
        urls = {}
        with ExitStack() as stack:
            for name, checkout in (("before", worktree), ("after", ROOT)):
                port = free_port()
                urls[name] = f"http://127.0.0.1:{port}"
                stack.enter_context(
                    server(
                        serve_cmd(checkout, model, port),
                        f"{urls[name]}/health",
                        logs / f"ab-{name}.log",
                    )
                )
            data = asyncio.run(rounds(urls, prompt, args.rounds))
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(worktree)],
            cwd=ROOT,
            check=False,
            capture_output=True,
        )
    command = "python bench/ab.py " + " ".join(sys.argv[1:])
    section = report(data, args.baseline, command, args.rounds)
    write(section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
