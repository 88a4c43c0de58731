"""One replica's capacity, as docs/SCALING.md and the Kubernetes resources use it: ovchat
served as a pod runs it (`ovchat serve` with its defaults: the default chat model and,
beside it, the default embedding model), streamed chat load at 1, 4, 8 and 16 concurrent
streams, and the resident memory of the server and of each engine process, sampled all
the while.

    flock /tmp/ovchat-bench.lock .venv/bin/python bench/scaling.py

writes its tables into docs/SCALING.md (between the scaling markers) and prints them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import LevelResult, http_stream, run_level  # noqa: E402
from bench.report import write_between  # noqa: E402
from bench.run import OUT_TOKENS, RESULTS, free_port, prompts, server  # noqa: E402

LEVELS = (1, 4, 8, 16)
DOC = ROOT / "docs" / "SCALING.md"
START, END = "<!-- scaling:start -->", "<!-- scaling:end -->"
MIB = 2**20


def requests_for(level: int) -> int:
    return max(3 * level, 6)


class ProcessRss:
    """Peak resident memory per process of the server's tree, by role: the server itself,
    each model's engine process (the pids /health names), and every other child."""

    def __init__(self, pid: int, engines: dict[int, str]) -> None:
        self.pid = pid
        self.engines = engines
        self.peak: dict[str, int] = {}
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _role(self, process: psutil.Process) -> str:
        if process.pid == self.pid:
            return "server"
        return self.engines.get(process.pid, "other children")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                now: dict[str, int] = {}
                for process in [root, *root.children(recursive=True)]:
                    role = self._role(process)
                    now[role] = now.get(role, 0) + process.memory_info().rss
                for role, rss in now.items():
                    self.peak[role] = max(self.peak.get(role, 0), rss)
                self.peak_total = max(self.peak_total, sum(now.values()))
            except psutil.Error:
                pass
            self._stop.wait(0.1)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        return {"total": self.peak_total, **self.peak}


def engine_pids(url: str) -> dict[int, str]:
    health = httpx.get(f"{url}/health", timeout=5).json()
    return {
        model["pid"]: f"engine {name}"
        for name, model in health["models"].items()
        if model.get("pid") is not None
    }


def gauges(url: str) -> dict[str, float]:
    """The queue and cache gauges of the chat model, as a scrape sees them."""
    values = {}
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith("#") or "smollm2" not in line:
            continue
        name = line.split("{", 1)[0]
        if name in (
            "ovchat_requests_running",
            "ovchat_requests_waiting",
            "ovchat_kv_cache_usage_ratio",
        ):
            values[name] = float(line.rsplit(" ", 1)[1])
    return values


async def level_with_gauges(
    url: str, model: str, prompt_name: str, prompt: str, level: int
) -> tuple[LevelResult, dict[str, float]]:
    """A level, and the peak of each gauge scraped every 500 ms while it ran."""
    peaks: dict[str, float] = {}
    done = asyncio.Event()

    async def scrape() -> None:
        while not done.is_set():
            for name, value in (await asyncio.to_thread(gauges, url)).items():
                peaks[name] = max(peaks.get(name, 0.0), value)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.5)

    scraper = asyncio.create_task(scrape())
    try:
        result = await run_level(
            "ovchat",
            http_stream(url, model),
            prompt_name,
            prompt,
            level,
            requests_for(level),
            OUT_TOKENS,
        )
    finally:
        done.set()
        await scraper
    return result, peaks


async def cold_prefill(url: str, model: str, prompt: str, count: int = 4) -> dict[str, Any]:
    """TTFT of long prompts that share no prefix (each opens with its own number), one at a
    time: the prefill cost a request pays when the prefix cache cannot help it."""
    stream = http_stream(url, model)
    ttfts = []
    for i in range(count):
        started = time.perf_counter()
        async for _ in stream(f"Story {i * 7919}. {prompt}", 1):
            ttfts.append(time.perf_counter() - started)
            break
    return {"requests": count, "ttft_p50_ms": round(statistics.median(ttfts) * 1000, 1)}


def mib(value: int) -> str:
    return f"{value / MIB:.0f}"


def render(info: dict[str, Any]) -> str:
    machine = info["machine"]
    lines = [
        START,
        f"Measured {machine['date']} on {machine['cores']} cores, "
        f"{machine['memory_gb']} GiB (load average {machine['load']} when it began: the "
        "machine is shared, so compare ratios, not single figures), by "
        f"`{machine['command']}`: one replica as the pod runs "
        f"it (`{machine['serve']}`: {', '.join(info['models'])}), streamed chat completions "
        f"on `{info['chat_model']}`, greedy, exactly {OUT_TOKENS} output tokens each, "
        f"a {info['prompt_tokens']['short']}-token prompt; requests per level: 3 x streams "
        "(at least 6). Memory is the peak resident set, sampled every 100 ms, of the "
        "server's process and of each engine process; the gauges are the peaks of "
        "`/metrics` scraped every 500 ms.",
        "",
        "| streams | output tok/s | TTFT p50 ms | TTFT p90 ms | TPOT p50 ms "
        "| ITL p99 ms | errors | peak waiting | peak running | peak KV use "
        "| RSS total MiB | " + " | ".join(f"RSS {role} MiB" for role in info["roles"]) + " |",
        "|" + "---|" * (11 + len(info["roles"])),
    ]
    for row in info["levels"]:
        r, g, rss = row["result"], row["gauges"], row["rss"]
        lines.append(
            f"| {r['concurrency']} | {r['output_tok_per_s']:.0f} "
            f"| {r['ttft_p50_ms']:.0f} | {r['ttft_p90_ms']:.0f} | {r['tpot_p50_ms']:.1f} "
            f"| {r['itl_p99_ms']:.1f} | {r['errors']} "
            f"| {g.get('ovchat_requests_waiting', 0):.0f} "
            f"| {g.get('ovchat_requests_running', 0):.0f} "
            f"| {g.get('ovchat_kv_cache_usage_ratio', 0):.3f} | {mib(rss['total'])} | "
            + " | ".join(mib(rss.get(role, 0)) for role in info["roles"])
            + " |"
        )
    idle, prefill = info["idle_rss"], info["prefill"]
    rate = info["prompt_tokens"]["long"] / prefill["ttft_p50_ms"] * 1000
    lines += [
        "",
        f"Idle after loading: {mib(idle['total'])} MiB in all ("
        + ", ".join(f"{role} {mib(idle.get(role, 0))}" for role in info["roles"])
        + f"); ready {info['ready_s']:.1f} s after spawn.",
        "",
        f"Cold prefill: a {info['prompt_tokens']['long']}-token prompt that shares no prefix "
        f"with any before it, alone on the replica: TTFT p50 {prefill['ttft_p50_ms']:.0f} ms "
        f"over {prefill['requests']} requests, {rate:.0f} prompt tokens/s.",
        END,
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument(
        "--model",
        help="a chat model of the model store, served alone (default: `ovchat serve`'s "
        "defaults, the default chat and embedding models)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]

    from app.modelstore import store
    from app.textmodel import TextModel

    chat_model = args.model or store.DEFAULT_MODEL
    text = TextModel.load(store.model_dir(ROOT / "model_store", chat_model))
    prompt_set = prompts(text)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [sys.executable, "-m", "app", "serve", "--port", str(port), "--log-level", "warning"]
    if args.model:
        serve += ["--model", args.model]
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {
        "machine": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "load": round(os.getloadavg()[0], 1),
            "command": ".venv/bin/python bench/scaling.py"
            + (f" {' '.join(sys.argv[1:])}" if sys.argv[1:] else ""),
            "serve": "ovchat serve" + (f" --model {args.model}" if args.model else ""),
        },
        "chat_model": chat_model,
        "prompt_tokens": {name: len(text.encode(p)) for name, p in prompt_set.items()},
        "levels": [],
    }
    with server(serve, f"{url}/health", logs / "scaling.log") as (ready_s, pid):
        info["ready_s"] = ready_s
        engines = engine_pids(url)
        health = httpx.get(f"{url}/health", timeout=5).json()
        info["models"] = list(health["models"])
        sampler = ProcessRss(pid, engines)
        asyncio.run(asyncio.sleep(2))
        info["idle_rss"] = sampler.stop()
        # warm-up: the first requests compile kernels the measured ones should not pay for
        asyncio.run(level_with_gauges(url, chat_model, "short", prompt_set["short"], 2))
        for level in levels:
            sampler = ProcessRss(pid, engines)
            result, peaks = asyncio.run(
                level_with_gauges(url, chat_model, "short", prompt_set["short"], level)
            )
            row = {"result": asdict(result), "gauges": peaks, "rss": sampler.stop()}
            print(json.dumps(row), flush=True)
            info["levels"].append(row)
        info["prefill"] = asyncio.run(cold_prefill(url, chat_model, prompt_set["long"]))
        print(json.dumps(info["prefill"]), flush=True)
    info["roles"] = ["server", *sorted(engines.values()), "other children"]
    (RESULTS / "scaling.json").write_text(json.dumps(info, indent=2) + "\n")
    section = render(info)
    print(section)
    if not args.no_write:
        write_between(DOC, START, END, section, before="## Memory and resources")
    return 0


if __name__ == "__main__":
    sys.exit(main())
