"""docs/BENCHMARKS.md and its plot from one run's results."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from bench.loadgen import LevelResult

DOC = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
PLOT = DOC.with_name("benchmarks.png")
# A section measured apart (bench/ab.py, speculation.py, burst.py, the peers) and kept
# across runs: `<!-- NAME:start -->` ... `<!-- NAME:end -->`.
_SECTION = re.compile(r"<!-- ([\w-]+):start -->.*?<!-- \1:end -->", re.DOTALL)

COLUMNS = [
    ("concurrency", "conc."),
    ("ttft_p50_ms", "TTFT p50 ms"),
    ("ttft_p90_ms", "TTFT p90 ms"),
    ("tpot_p50_ms", "TPOT p50 ms"),
    ("itl_p50_ms", "ITL p50 ms"),
    ("itl_p99_ms", "ITL p99 ms"),
    ("req_per_s", "req/s"),
    ("output_tok_per_s", "out tok/s"),
    ("errors", "errors"),
    ("incomplete", "incomplete"),
]


def _find(results: list[LevelResult], who: str, prompt: str, level: int) -> LevelResult | None:
    for r in results:
        if (r.contender, r.prompt, r.concurrency) == (who, prompt, level):
            return r
    return None


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return "n/a"
    return f"{a / b:.2f}"


def targets(results: list[LevelResult], extras: dict[str, Any]) -> list[tuple[str, str, str]]:
    def tok(who: str, level: int, prompt: str = "short") -> float | None:
        r = _find(results, who, prompt, level)
        return r.output_tok_per_s if r else None

    def decode(who: str) -> float | None:
        r = _find(results, who, "short", 1)
        return 1000 / r.tpot_p50_ms if r and r.tpot_p50_ms else None

    # Single-stream ratios from the shootout (contenders in turns, all up at once) when it
    # ran; the per-contender tables were taken minutes apart.
    duel: dict[str, float] = extras.get("shootout", {})

    def single(who: str) -> float | None:
        # A contender that was not built is absent from the shootout too.
        return duel.get(who) if duel else decode(who)

    best: dict[str, float] = extras.get("shootout_pairs", {}).get("best_tok_s", {})

    def single_ratio(who: str) -> str:
        ratio = _ratio(single("ovchat-genai"), single(who))
        if who in best and "ovchat-genai" in best:
            ratio += f" (best turn of each: {_ratio(best['ovchat-genai'], best[who])})"
        return ratio

    scaling = extras.get("scaling")
    if scaling:
        medians = scaling["median_tok_s"]
        rounds = ", ".join(f"{r:.2f}" for r in scaling["c32_over_c16_per_round"])
        scaled = (
            " -> ".join(f"{medians[str(c)]:.0f}" for c in (8, 16, 32))
            + f" (medians of {scaling['rounds']} interleaved rounds; c32 / c16: median"
            f" {scaling['c32_over_c16_median']:.2f}, per round {rounds})"
        )
        c8_over_c1 = (
            f"{scaling['c8_over_c1_median']:.2f} (median of the per-round ratios: "
            + ", ".join(f"{r:.2f}" for r in scaling["c8_over_c1_per_round"])
            + ")"
        )
    else:
        scaled = " -> ".join(f"{tok('ovchat-genai', c) or 0:.0f}" for c in (8, 16, 32))
        c8_over_c1 = _ratio(tok("ovchat-genai", 8), tok("ovchat-genai", 1))
    pairs = extras.get("shootout_pairs")
    overhead = (
        f"{pairs['http_over_inprocess_median']:.3f} (median of {pairs['rounds']} paired rounds;"
        f" server CPU {pairs['server_cpu_us_per_token']:.0f} us per streamed token)"
        if pairs
        else _ratio(single("ovchat-genai"), single("in-process"))
    )
    rows = [
        ("single-stream decode tokens/s (1 / TPOT p50), HTTP / in-process", ">= 0.95", overhead),
        ("aggregate c8 / c1 (genai)", ">= 4", c8_over_c1),
        ("aggregate c8 -> c16 -> c32", "rising or flat", scaled),
        (
            "genai / optimum aggregate at c8",
            ">= 5",
            _ratio(tok("ovchat-genai", 8), tok("ovchat-optimum", 8)),
        ),
        (
            "genai / llama-cpp-python single-stream decode",
            ">= 1.2",
            single_ratio("llama-cpp-python"),
        ),
        (
            "genai / llama-server (llama.cpp's C++ server) aggregate at c8",
            ">= 2",
            _ratio(tok("ovchat-genai", 8), tok("llama-server", 8)),
        ),
        (
            "genai / llama-server single-stream decode",
            "(no target)",
            single_ratio("llama-server"),
        ),
    ]
    ceiling = extras["machine"]["ceiling_tok_s"]
    one = single("ovchat-genai")
    if one:
        rows.append(
            (
                "single-stream decode / bandwidth ceiling",
                ">= 0.80",
                f"{one / ceiling:.2f} ({one:.0f} of {ceiling:.0f} tok/s)",
            )
        )
    phi3 = extras.get("phi3-shaped")
    if phi3:
        one = next((lv for lv in phi3["levels"] if lv["concurrency"] == 1), None)
        if one and one["tpot_p50_ms"]:
            decode = 1000 / one["tpot_p50_ms"]
            rows.append(
                (
                    "single-stream decode / bandwidth ceiling, Phi-3-mini-shaped",
                    ">= 0.80",
                    f"{decode / phi3['ceiling_tok_s']:.2f}"
                    f" ({decode:.1f} of {phi3['ceiling_tok_s']:.1f} tok/s)",
                )
            )
    qwen = extras.get("qwen2.5-coder-1.5b", {}).get("contenders", {}).get("ovchat-genai")
    if qwen:
        one = next((lv for lv in qwen["levels"] if lv["concurrency"] == 1), None)
        if one and one["tpot_p50_ms"]:
            decode = 1000 / one["tpot_p50_ms"]
            ceiling = extras["qwen2.5-coder-1.5b"]["ceiling_tok_s"]
            rows.append(
                (
                    "single-stream decode / bandwidth ceiling, Qwen2.5-Coder-1.5B",
                    ">= 0.80",
                    f"{decode / ceiling:.2f} ({decode:.1f} of {ceiling:.1f} tok/s)",
                )
            )
    if "prefix_cache" in extras:
        p = extras["prefix_cache"]
        rows.append(
            (
                "TTFT with a cached 1000-token system prompt / first",
                "<= 0.30",
                f"{p['ratio']:.2f} ({p['second_ttft_ms']:.0f} / {p['first_ttft_ms']:.0f} ms)",
            )
        )
    if "long_prompt" in extras:
        p = extras["long_prompt"]
        rows.append(
            (
                "ITL p99 of 8 streams with a 3000-token prompt arriving / without",
                "< 3",
                f"{p['ratio']:.2f} ({p['itl_p99_with_long_prompt_ms']:.0f}"
                f" / {p['itl_p99_ms']:.0f} ms; worst gap {p['itl_max_with_long_prompt_ms']:.0f}"
                f" / {p['itl_max_ms']:.0f} ms)",
            )
        )
    if "startup" in extras:
        rows.append(
            (
                "startup to ready, second start (compiled-model cache)",
                "<= 5 s",
                f"{extras['startup']['second_s']:.1f} s"
                f" (first {extras['startup']['first_s']:.1f} s)",
            )
        )
    incomplete = sum(r.incomplete + r.errors for r in results if r.contender == "ovchat-genai")
    incomplete += scaling["failed"] if scaling else 0
    rows.append(("ovchat requests incomplete or failed", "0", str(incomplete)))
    return rows


def write_report(results: list[LevelResult], extras: dict[str, Any], doc: Path, plot: Path) -> None:
    machine = extras["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured {machine['date']} with `{machine['command']}` (all contenders in one run).",
        "",
        f"Machine: {machine['cores']} cores, {machine['memory_gb']} GiB, {machine['cpu']}; "
        f"memory read bandwidth {machine['bandwidth_gbs']} GB/s (all cores: the best of an "
        f"OpenBLAS matrix-vector product over 1 GiB and threaded numpy reductions, measured "
        f"in the same run). Default model SmolLM2-135M-Instruct int4: "
        f"{machine['weights_mb']} MB of weights read per token, so one stream's decode ceiling "
        f"is {machine['ceiling_tok_s']} tokens/s. Weights read per token are the model's "
        f"constants less an untied embedding table, which decoding only looks up.",
        "",
        "Workload: streaming chat completions, greedy, exactly 128 output tokens each (eos "
        "ignored: `ignore_eos` for ovchat and llama-server, a logit_bias banning the eos id for "
        "llama-cpp-python, which has no ignore_eos), "
        "short (~50 token) and long (~1000 token) prompts, as many requests per level as "
        "streams (at least 4), load generated by `bench/loadgen.py` in a separate process "
        "on loopback.",
        "",
        "## Targets",
        "",
        "| target | goal | measured |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in targets(results, extras)]
    if "shootout" in extras:
        shares = ", ".join(f"{who} {tok:.1f}" for who, tok in extras["shootout"].items())
        rounds = extras.get("shootout_pairs", {}).get("rounds", 3)
        bests = extras.get("shootout_pairs", {}).get("best_tok_s", {})
        fastest = ", ".join(f"{who} {tok:.1f}" for who, tok in bests.items()) or "n/a"
        lines += [
            "",
            "Single-stream decode tokens/s taken in turns (every contender up at once, one "
            f"stream at a time, {rounds} rounds of 4 requests, order reversed every round, "
            f"medians): {shares}. The ratios above come from these; HTTP / in-process is the "
            "median of the ratios of the two back-to-back turns of each round. Best turn of "
            f"each: {fastest}. The tables below were taken minutes apart on a machine whose "
            "speed drifts.",
        ]
    if "scaling" in extras:
        sc = extras["scaling"]
        per_level = "; ".join(
            f"c{level} " + ", ".join(f"{v:.0f}" for v in values)
            for level, values in sc["tok_s"].items()
        )
        lines += [
            "",
            f"Scaling rows: {sc['rounds']} rounds on one ovchat server, the levels back to back "
            "(requests as in the tables), order reversed every round, so each round's ratios "
            f"compare runs seconds apart. Aggregate tokens/s per round: {per_level}.",
        ]
    lines += [
        "",
        "## Memory and startup",
        "",
        "| contender | ready after | peak RSS (server + engine) |",
        "|---|---|---|",
    ]
    for name, info in extras.items():
        if isinstance(info, dict) and "peak_rss_mb" in info:
            lines.append(f"| {name} | {info['ready_s']:.1f} s | {info['peak_rss_mb']:.0f} MB |")
        elif isinstance(info, dict) and "skipped" in info:
            lines.append(f"| {name} | skipped: {info['skipped']} | |")
    if "phi3-shaped" in extras:
        p = extras["phi3-shaped"]
        lines += [
            "",
            "## Phi-3-mini-shaped model (real sizes, random weights: Phi-3-mini's speed)",
            "",
            f"{p['weights_mb']:.0f} MB of weights read per token, so one stream's ceiling is "
            f"{p['ceiling_tok_s']:.1f} tokens/s; ready after {p['ready_s']:.1f} s, peak RSS "
            f"(server + engine) {p['peak_rss_mb']:.0f} MB with a 4 GB KV cache.",
            "",
            "| conc. | TTFT p50 ms | TPOT p50 ms | out tok/s | single-stream decode / ceiling |",
            "|---|---|---|---|---|",
        ]
        for level in p["levels"]:
            decode = 1000 / level["tpot_p50_ms"] if level["tpot_p50_ms"] else float("nan")
            share = f"{decode / p['ceiling_tok_s']:.2f}" if level["concurrency"] == 1 else ""
            lines.append(
                f"| {level['concurrency']} | {level['ttft_p50_ms']} | {level['tpot_p50_ms']} | "
                f"{level['output_tok_per_s']} | {share} |"
            )
    if "qwen2.5-coder-1.5b" in extras:
        lines += qwen_section(extras["qwen2.5-coder-1.5b"])
    if "phi3-shaped" in extras and "contexts" in extras["phi3-shaped"]:
        c = extras["phi3-shaped"]["contexts"]
        kib = {k: v["real"] for k, v in c["kv_kib_per_token"].items()}
        counted = {k: v["accounted"] for k, v in c["kv_kib_per_token"].items()}
        full = 8 * 4096 * kib["u4"] / 2**20
        from app.engine.kv_window import EvictionAreas

        areas = EvictionAreas.for_window(2047, 32)  # Phi-3-mini's window, CPU blocks
        kept = areas.tokens_per_sequence(32)
        window_tokens = 7 * kept + 4096 + 256
        window_gib = window_tokens * kib["u4"] / 2**20
        limit = ""
        if "memory_limit_bytes" in c:
            limit = (
                f" The server ran in a memory cgroup capped at "
                f"{c['memory_limit_bytes'] / 1e9:.0f} GB (page cache dropped first, so the "
                f"weights' file pages were charged to it): peak charged usage "
                f"{c['max_usage_bytes'] / 1e9:.2f} GB, {c['oom_kills']} OOM kills. RSS "
                f"counts the memory-mapped weight file too; OpenVINO computes from its own "
                f"repacked copy, so the kernel reclaims those file pages under the limit "
                f"without slowing decoding."
            )
        held_at_once = (
            f"all {c['contexts']} held at once (the last first token came at "
            f"{c['last_first_token_s']:.0f} s, the first request ended at "
            f"{c['first_finish_s']:.0f} s)"
            if c.get("held_at_once")
            else "NOT all held at once (a request ended before the last one started)"
        )
        lines += [
            "",
            f"Contexts: {c['contexts']} requests, each a {c['prompt_tokens']}-token prompt "
            f"(distinct, so no shared prefix blocks) plus {max(c['completion_tokens'])} "
            f"generated tokens, a {c['prompt_tokens'] + max(c['completion_tokens'])}-token "
            f"context, with `{c['flags']}` and the cache cut to the model's 2047-token "
            f"attention window (`--kv-cache-window`, the default): {held_at_once}; peak RSS "
            f"(server + engine) {c['peak_rss_mb']:.0f} MB, completion tokens "
            f"{c['completion_tokens']}, {c['duration_s']:.0f} s in all (prefill is "
            f"compute-bound on 2 cores).{limit}",
            "",
            f"KV cache per token (`bench/kvbytes.py`, the cache tensors' real size): u8 "
            f"{kib['u8']} KiB, u4 {kib['u4']} KiB, f16 {kib['f16']} KiB. openvino-genai's "
            f"block budget counts u4 as a byte ({counted['u4']} KiB), so ovchat gives it twice "
            f"`--kv-cache-gb` at u4 and the cache takes what was asked (`--kv-cache-tokens` "
            f"counts blocks and needs no correction). Holding every block, 8 full 4096-token "
            f"contexts would need {full:.1f} GiB of KV cache at u4, the most compact, on top "
            f"of the compiled weights and runtime (2.9 GB of anonymous memory with the cache "
            f"empty, measured apart from this run), more than 6 GB. Phi-3-mini attends only "
            f"its last 2047 tokens, so once a prompt is in, the window cache keeps at most "
            f"{kept} of them a sequence ({areas.start} start, {areas.recent} recent covering the "
            f"window, {areas.max_cache - areas.start - areas.recent} "
            f"evictable, and the block being filled). Seven of those, one 4096-token prompt "
            f"prefilling and the next one's first 256-token chunk are {window_tokens} tokens, "
            f"{window_gib:.2f} GiB at u4.",
        ]
    if "phi3-shaped" in extras and "window_cache" in extras["phi3-shaped"]:
        w = extras["phi3-shaped"]["window_cache"]
        lines += [
            "",
            f"Window cache cost (`python bench/window_cache.py model_store/phi3-shaped/int4 "
            f"{w['prompt_tokens']} {w['new_tokens']}`): one {w['prompt_tokens']}-token random "
            f"prompt, {w['new_tokens']} tokens greedily, in process with the engine's "
            f"scheduler config ({', '.join(f'{k}={v}' for k, v in w['settings'].items())}); "
            f"the model's window is {w['window']} tokens.",
            "",
            "| cache | TTFT s | TPOT ms (median) | cache in use at the end, % | same tokens as "
            "the first run |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {r['ttft_s']} | {r['tpot_ms']} | {r['end_cache_pct']} | "
            f"{'yes' if r['same_tokens'] else 'NO'} |"
            for name, r in w["runs"].items()
        ]
    if "sweep" in extras:
        lines += [
            "",
            "## Engine settings sweep (default model)",
            "",
            "One setting changed at a time; single-stream decode is 1 / TPOT p50, aggregates "
            "are 8 or 32 streams of 128 tokens, the stall ratio is the long-prompt probe's (ITL "
            "p99 of 8 streams with a 3000-token prompt arriving / without) and their worst "
            "gap in that run, then that "
            "prompt's own TTFT while the 8 streams decode, and the TTFT of a 3000-token prompt "
            "sent alone.",
            "",
            "| variant | 1-stream decode tok/s | c8 short tok/s | c8 long tok/s | c32 short tok/s "
            "| stall ratio (p99) | worst gap ms | 3000-token TTFT under load ms | alone ms "
            "| failed |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in extras["sweep"]:
            lines.append(
                f"| {row['variant']} | {row['decode_tok_s']:.1f} | {row['c8_tok_s']:.0f} "
                f"| {row['c8_long_tok_s']:.0f} | {row['c32_tok_s']:.0f} "
                f"| {row['stall_ratio']:.2f} | {row['stall_max_ms']:.0f} "
                f"| {row['long_prompt_ttft_ms']:.0f} | {row['alone_ttft_ms']:.0f} "
                f"| {row['failed']} |"
            )
    contenders = list(dict.fromkeys(r.contender for r in results))
    for prompt in ("short", "long"):
        for who in contenders:
            rows = [r for r in results if r.contender == who and r.prompt == prompt]
            if not rows:
                continue
            lines += [
                "",
                f"## {who}, {prompt} prompts",
                "",
                "| " + " | ".join(h for _, h in COLUMNS) + " |",
                "|" + "---|" * len(COLUMNS),
            ]
            for r in rows:
                lines.append("| " + " | ".join(str(getattr(r, k)) for k, _ in COLUMNS) + " |")
    lines += ["", "![aggregate tokens/s and TTFT against concurrency](benchmarks.png)", ""]
    document = "\n".join(lines)
    previous = doc.read_text() if doc.is_file() else ""
    document = keep_sections(previous, document)
    doc.write_text(document)
    _plot(results, plot)


def keep_sections(previous: str, document: str) -> str:
    """`document` with the marked sections of `previous` (measured apart, by their own
    commands) put back in, in their order, before its Targets."""
    sections = [m.group(0) for m in _SECTION.finditer(previous)]
    if not sections:
        return document
    kept = "\n\n".join(sections)
    head, found, tail = document.partition("\n## Targets")
    if found:
        return head + "\n" + kept + "\n\n## Targets" + tail
    return document + "\n\n" + kept


def _plot(results: list[LevelResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for column, prompt in enumerate(("short", "long")):
        for who in dict.fromkeys(r.contender for r in results):
            rows = [r for r in results if r.contender == who and r.prompt == prompt]
            if not rows:
                continue
            levels = [r.concurrency for r in rows]
            axes[0][column].plot(levels, [r.output_tok_per_s for r in rows], marker="o", label=who)
            axes[1][column].plot(levels, [r.ttft_p50_ms for r in rows], marker="o", label=who)
        axes[0][column].set_title(f"aggregate output tokens/s, {prompt} prompts")
        axes[1][column].set_title(f"TTFT p50 (ms), {prompt} prompts")
        for row in (0, 1):
            axes[row][column].set_xscale("log", base=2)
            axes[row][column].set_xlabel("concurrent streams")
            axes[row][column].grid(alpha=0.3)
        axes[1][column].set_yscale("log")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def qwen_section(q: dict[str, Any]) -> list[str]:
    """The real 1.5B model (`make bench ARGS="--qwen"`), ovchat against llama-server on the
    GGUF it was made from."""
    lines = [
        "",
        "## Qwen2.5-Coder-1.5B-Instruct (the real 1.5B model, `--qwen`)",
        "",
        f"int4 export of the Q4_K_M GGUF; {q['weights_mb']:.0f} MB of weights read per token, "
        f"so one stream's ceiling is {q['ceiling_tok_s']:.1f} tokens/s. llama-server serves "
        "the GGUF itself. 128 tokens per request, eos ignored.",
        "",
        "| contender | conc. | TTFT p50 ms | TPOT p50 ms | out tok/s | ready after | peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, info in q["contenders"].items():
        if "skipped" in info:
            lines.append(f"| {name} | skipped: {info['skipped']} | | | | | |")
            continue
        for level in info["levels"]:
            lines.append(
                f"| {name} | {level['concurrency']} | {level['ttft_p50_ms']} | "
                f"{level['tpot_p50_ms']} | {level['output_tok_per_s']} | "
                f"{info['ready_s']:.1f} s | {info['peak_rss_mb']:.0f} MB |"
            )
    return lines


def write_between(doc: Path, start: str, end: str, section: str, before: str | None = None) -> None:
    """`section` (its markers included) in place of what `doc` has between `start` and
    `end`; new, before the heading `before` when the document has it, else at the end."""
    text = doc.read_text() if doc.is_file() else "# Benchmarks\n"
    if start in text and end in text:
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = head + section + tail
    elif before is not None and f"\n{before}" in text:
        head, _, tail = text.partition(f"\n{before}")
        text = head + "\n" + section + f"\n\n{before}" + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text)
