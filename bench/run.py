"""`make bench` (`python -m bench`): every contender on the same workloads in one run, then
docs/BENCHMARKS.md and docs/benchmarks.png. Contenders: ovchat genai over HTTP, the same
engine in-process (no HTTP), ovchat optimum (the cookbook sample's approach), and, on the
GGUF the default model is made from, llama-cpp-python's server and llama.cpp's own C++
server (when built: `make bench-llamacpp`); then ovchat side by side with the peers a user
would pick, vLLM on CPU (`make bench-vllm`) and llama-server in its best configuration per
level (bench/peers.py).

The pieces: bench/servers.py starts servers, bench/probes.py holds the workloads and
probes, bench/contenders.py the per-contender runs, bench/realistic.py the bigger models,
bench/peers.py the side-by-side with the peers, bench/report.py writes the document."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/run.py` as well as `python -m bench`
    sys.path.insert(0, str(ROOT))

from bench import peers  # noqa: E402
from bench.contenders import (  # noqa: E402
    contender_http,
    inprocess_stream,
    settings_sweep,
    single_stream_shootout,
)
from bench.loadgen import LevelResult, sweep  # noqa: E402
from bench.probes import (  # noqa: E402
    LEVELS,
    OUT_TOKENS,
    long_prompt_probe,
    measure_bandwidth,
    prefix_cache_probe,
    prompts,
    requests_for,
    scaling_probe,
    weights_read_per_token,
)
from bench.realistic import QWEN_LEVELS, phi3_shaped, qwen_coder  # noqa: E402
from bench.report import DOC, PLOT, write_between, write_report  # noqa: E402
from bench.servers import (  # noqa: E402
    EXTRA,
    LLAMA_BIN,
    free_port,
    llama_cpp_python_cmd,
    llama_server_cmd,
    ovchat_cmd,
    server,
)

RESULTS = ROOT / "bench" / "results"
PEERS_JSON = RESULTS / "peers.json"

# What bench/ab.py, bench/speculation.py, bench/burst.py and bench/soak.py import from here.
__all__ = [
    "DOC",
    "LEVELS",
    "OUT_TOKENS",
    "PLOT",
    "RESULTS",
    "free_port",
    "long_prompt_probe",
    "main",
    "measure_bandwidth",
    "ovchat_cmd",
    "prompts",
    "server",
    "weights_read_per_token",
]

# The parts of a run, in order; --skip leaves some out, --only keeps only some. The first
# group is the default model's per-contender tables, which the report is written from.
TABLES = ("genai", "inprocess", "optimum", "llamacpp", "llama-server", "shootout")
PARTS = (*TABLES, "peers", "burst")


def selected(skip: str, only: str) -> set[str]:
    """The parts to run: all but `skip` (comma-separated), or only `only`. `burst` is the
    peers' burst probe alone, and runs only when asked for: a full run's peers part
    includes it."""
    wanted = set(filter(None, only.split(","))) if only else set(PARTS) - {"burst"}
    unknown = wanted - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown parts {sorted(unknown)}: choose from {', '.join(PARTS)}")
    return wanted - set(filter(None, skip.split(",")))


def command_line() -> str:
    """The command as it was typed, for the document."""
    args = " ".join(sys.argv[1:])
    if "MAKELEVEL" in os.environ:  # make exports it to what it runs
        return "make bench" + (f' ARGS="{args}"' if args else "")
    return f"python -m bench {args}".rstrip()


BENCH_LOCK = Path("/tmp/ovchat-bench.lock")


def under_bench_lock() -> bool:
    """Whether someone (the `flock` this run was started under, on a shared machine)
    holds the benchmarks' lock, so that the command written down says so."""
    import fcntl

    try:
        with BENCH_LOCK.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def machine_info(model: Path) -> dict[str, Any]:
    weights = weights_read_per_token(model)
    bandwidth = measure_bandwidth()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": platform.processor() or platform.machine(),
        "bandwidth_gbs": round(bandwidth, 1),
        "weights_mb": round(weights / 1e6, 1),
        "ceiling_tok_s": round(bandwidth * 1e9 / weights, 1),
        "command": command_line(),
    }


def default_model_tables(
    parts: set[str], model: Path, prompt_set: dict[str, str], logs: Path, extras: dict[str, Any]
) -> list[LevelResult]:
    """The per-contender tables and ovchat's probes on the default model."""
    from app.modelstore import smollm2
    from app.textmodel import TextModel

    text = TextModel.load(model)
    results: list[LevelResult] = []
    if "genai" in parts:
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
    if "inprocess" in parts:
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
    if "optimum" in parts:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = ovchat_cmd(model, port, "--engine", "optimum")
        res, info = contender_http("ovchat-optimum", cmd, url, prompt_set, None, logs)
        results += res
        extras["ovchat-optimum"] = info
    gguf = str(smollm2.gguf_path())
    llama_contenders: list[tuple[str, str, Path, Callable[[Path, str, int], list[str]]]] = [
        ("llamacpp", "llama-cpp-python", LLAMA_BIN / "python", llama_cpp_python_cmd),
        ("llama-server", "llama-server", LLAMA_BIN / "llama-server", llama_server_cmd),
    ]
    for key, name, binary, build_cmd in llama_contenders:
        if key not in parts:
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
    if "shootout" in parts:
        extras["shootout"], extras["shootout_pairs"] = single_stream_shootout(
            model, prompt_set["short"], logs
        )
    return results


def peers_part(
    parts: set[str], model: Path, prompt: str, logs: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """The side-by-side with the peers, or only its burst probe (merged into the last full
    run's figures, when there are some). Written to bench/results/peers.json and to its
    section of docs/BENCHMARKS.md."""
    burst_only = "peers" not in parts
    levels = tuple(int(level) for level in args.peer_levels.split(","))
    measured = peers.side_by_side(
        model,
        prompt,
        logs,
        levels=levels,
        rounds=args.peer_rounds,
        burst_only=burst_only,
        with_guidellm=not args.no_guidellm,
        llama_threads=peers.parse_threads(args.llama_threads, levels),
    )
    measured["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    locked = f"flock {BENCH_LOCK} " if under_bench_lock() else ""
    measured["command"] = locked + command_line()
    if burst_only and PEERS_JSON.is_file():
        measured = peers.merge_burst(json.loads(PEERS_JSON.read_text()), measured)
    result = peers.finish(measured)
    PEERS_JSON.write_text(json.dumps(result, indent=1))
    section = peers.render(result)
    print(section, flush=True)
    write_between(DOC, peers.START, peers.END, section, before="## Targets")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip", default="", help=f"comma-separated parts to skip: {PARTS}")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated parts to run, the rest skipped; `--only peers` is the "
        "side-by-side with the peers alone, `--only burst` its burst probe alone; neither "
        "rewrites the rest of docs/BENCHMARKS.md",
    )
    parser.add_argument(
        "--peer-rounds", type=int, default=peers.PEER_ROUNDS, help="interleaved rounds"
    )
    parser.add_argument(
        "--peer-levels",
        default=",".join(map(str, peers.PEER_LEVELS)),
        help="concurrency levels of the side-by-side (comma-separated)",
    )
    parser.add_argument("--no-guidellm", action="store_true", help="peers without guidellm")
    parser.add_argument(
        "--llama-threads",
        default="",
        help='the peers\' llama-server threads, for every level ("1") or per level '
        '("1:2,8:1"); default every core',
    )
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
    parts = selected(args.skip, args.only)

    from app.modelstore import store
    from app.textmodel import TextModel

    model = store.model_dir(ROOT / "model_store", store.DEFAULT_MODEL)
    prompt_set = prompts(TextModel.load(model))
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    tables = bool(parts & set(TABLES)) or args.reuse or args.sweep or args.phi3 or args.qwen
    if not tables:  # the peers' section alone: the rest of the document stays as it is
        peers_part(parts, model, prompt_set["short"], logs, args)
        print(f"wrote {DOC} (the peers section)")
        return 0

    machine = machine_info(model)
    print(json.dumps(machine), flush=True)
    results: list[LevelResult] = []
    extras: dict[str, Any] = {"machine": machine}
    if args.reuse:
        previous = json.loads((RESULTS / "latest.json").read_text())
        results = [LevelResult(**r) for r in previous["results"]]
        extras = previous["extras"]
        parts -= {*TABLES, "peers", "burst"}
    try:
        results += default_model_tables(parts, model, prompt_set, logs, extras)
        if args.sweep:
            extras["sweep"] = settings_sweep(model, prompt_set, TextModel.load(model), logs)
        if args.phi3:
            extras["phi3-shaped"] = phi3_shaped(machine["bandwidth_gbs"], logs)
        if args.qwen:
            levels = [int(level) for level in args.qwen_levels.split(",")]
            extras["qwen2.5-coder-1.5b"] = qwen_coder(machine["bandwidth_gbs"], logs, levels)
    finally:
        # Once, whatever failed: what was measured before it is kept.
        (RESULTS / "latest.json").write_text(
            json.dumps({"extras": extras, "results": [asdict(r) for r in results]}, indent=2)
        )
    write_report(results, extras, DOC, PLOT)
    if parts & {"peers", "burst"}:
        peers_part(parts, model, prompt_set["short"], logs, args)
    print(f"wrote {DOC} and {PLOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
