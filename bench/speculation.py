"""Speculative decoding against plain decoding, on the same machine in the same minutes:
ovchat servers on the default model, with and without `--speculative-decoding
prompt-lookup`, and llama.cpp's llama-server on the GGUF the model is made from (one
stream, `--parallel 1`: its best configuration there), all up at once, at 1 and 8
streams, on a copy-heavy workload (repeat this text) and on free generation, in
interleaved rounds (order reversed every round).

    .venv/bin/python bench/speculation.py --rounds 3

writes its table into docs/BENCHMARKS.md (between the speculation markers) and prints it;
the acceptance rate and the requests moved off speculation are read from each run's
/metrics counters. llama-server needs `make bench-llamacpp`; without it, it is left out."""

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
from bench.servers import EXTRA, LLAMA_BIN, llama_server_cmd, ready_url  # noqa: E402
from bench.texts import DOCUMENT  # noqa: E402

LEVELS = (1, 8)
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


LLAMA = "llama-server"
# llama-server's own n-gram speculation: of its kinds (ngram-simple, -map-k, -mod, -cache,
# each at its defaults, and ngram-simple with n 4, m 16), ngram-mod was the fastest here on
# both workloads for one stream.
LLAMA_SPEC = "llama-server, ngram-mod"
LLAMAS = {LLAMA: (), LLAMA_SPEC: ("--spec-type", "ngram-mod")}


def counters(url: str) -> tuple[float, float, float]:
    """Candidates drafted, those accepted, requests moved off speculation."""
    found: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("ovchat_spec_decode_"):
            found[line.split("{")[0].split(" ")[0]] = float(line.rsplit(" ", 1)[1])

    def total(what: str) -> float:
        return found.get(f"ovchat_spec_decode_{what}_total", 0.0)

    return total("num_draft_tokens"), total("num_accepted_tokens"), total("moved_requests")


async def rounds(urls: dict[str, str], count: int) -> dict[str, Any]:
    streams = {
        name: http_stream(url, "bench", extra=EXTRA[LLAMA] if name in LLAMAS else None)
        for name, url in urls.items()
    }
    for stream in streams.values():
        async for _ in stream("warm up", 8):
            pass
    names = list(urls)
    keys = [(work, level) for work in WORKLOADS for level in LEVELS]
    tok: dict[str, dict[Any, list[float]]] = {n: {k: [] for k in keys} for n in names}
    accepted: dict[str, list[float]] = {work: [] for work in WORKLOADS}
    moved: dict[Any, list[float]] = {k: [] for k in keys}
    for round_ in range(count):
        order = names if round_ % 2 == 0 else names[::-1]
        for work, level in keys:
            for name in order:
                ours = name not in LLAMAS
                if not ours and level > 1:
                    continue  # one stream: llama-server's best is `--parallel 1` there
                before = counters(urls[name]) if ours else (0.0, 0.0, 0.0)
                result = await run_level(
                    name, streams[name], work, WORKLOADS[work], level, 2 * level, OUT_TOKENS
                )
                after = counters(urls[name]) if ours else (0.0, 0.0, 0.0)
                tok[name][(work, level)].append(result.output_tok_per_s)
                drafted = after[0] - before[0]
                if name == "prompt-lookup":
                    moved[(work, level)].append(after[2] - before[2])
                    if drafted:
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
    memory = {name: engine_memory(url) for name, url in urls.items() if name not in LLAMAS}
    return {"tok_s": tok, "accepted": accepted, "moved": moved, "memory": memory}


def engine_memory(url: str) -> float:
    """The engine process's resident memory (ovchat_model_memory_bytes), in MB."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("ovchat_model_memory_bytes"):
            return float(line.rsplit(" ", 1)[1]) / 1e6
    return 0.0


def markers(model: str) -> tuple[str, str]:
    """The doc section a model's run writes: the default model's, or one of its own."""
    from app.modelstore import store

    tag = "speculation" if model == store.DEFAULT_MODEL else f"speculation-{model}"
    return f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"


def gguf(model: str) -> str:
    """The GGUF the model's export is made from: what llama-server serves."""
    from app.modelstore import qwen_coder, smollm2

    if model == qwen_coder.NAME:
        return str(qwen_coder.gguf_file(ROOT / "model_store"))
    return str(smollm2.gguf_path())


def report(data: dict[str, Any], command: str, count: int, model: str, llama_cmd: str = "") -> str:
    start, end = markers(model)
    tok = data["tok_s"]
    names = ["plain", "prompt-lookup", "plain, no DQ", "prompt-lookup, no DQ"]
    exact = all(name in tok for name in names[2:])
    llama = (
        "llama-server on the GGUF the int4 model is made from, one stream, `--parallel 1` "
        "(its best configuration there), plain and with its own n-gram speculation "
        "(`--spec-type ngram-mod`); the llama-server ratio is against the faster of the "
        "two in each round"
        if llama_cmd
        else "no llama-server (not built: `make bench-llamacpp`)"
    )
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    pairs = (
        "with the defaults and with dynamic quantization off (the pair whose greedy "
        "output is equal token for token on any text)"
        if exact
        else "with the defaults"
    )
    lines = [
        start,
        f"## Speculative decoding (prompt lookup) against plain decoding: {model}",
        "",
        f"Measured {date} with `{command}`: {2 + 2 * exact} ovchat servers on {model}, "
        "all up at once: plain and `--speculative-decoding prompt-lookup` (5 candidates a "
        "step, one for requests arriving while more than 4 sequences run; once more than "
        "4 run and under half the candidates are accepted, the speculating requests move "
        f"to the plain pipeline), {pairs}, and "
        f"{llama}; {count} interleaved rounds, {OUT_TOKENS} streamed tokens a request "
        "(eos ignored), greedy. Copy: the model asked to repeat a 180-token text; free: a "
        "story; each level sends twice as many requests as streams. Ratios are medians of "
        "the per-round ratios; moved: requests moved off speculation per run (median).",
        "",
        "| workload | streams | plain tok/s | lookup tok/s | lookup / plain | moved "
        + ("| plain, no DQ | lookup, no DQ | lookup / plain, no DQ " if exact else "")
        + "| llama-server tok/s | llama-server ngram-mod tok/s | lookup / llama-server |",
        "|---" * (9 + 3 * exact) + "|",
    ]

    def ratio(a: list[float], b: list[float]) -> float:
        return statistics.median(x / y for x, y in zip(a, b, strict=True))

    for work in WORKLOADS:
        for level in LEVELS:
            key = (work, level)
            plain, lookup = tok["plain"][key], tok["prompt-lookup"][key]
            peer = tok.get(LLAMA, {}).get(key) or []
            peer_spec = tok.get(LLAMA_SPEC, {}).get(key) or []
            best = [max(a, b) for a, b in zip(peer, peer_spec, strict=True)]
            versus = (
                f"| {statistics.median(peer):.1f} | {statistics.median(peer_spec):.1f} "
                f"| {ratio(lookup, best):.2f} |"
                if best
                else "| | | |"
            )
            row = (
                f"| {work} | {level} | {statistics.median(plain):.1f} "
                f"| {statistics.median(lookup):.1f} | {ratio(lookup, plain):.2f} "
                f"| {statistics.median(data['moved'][key]):.0f} "
            )
            if exact:
                bare = tok["plain, no DQ"][key]
                bare_lookup = tok["prompt-lookup, no DQ"][key]
                row += (
                    f"| {statistics.median(bare):.1f} | {statistics.median(bare_lookup):.1f} "
                    f"| {ratio(bare_lookup, bare):.2f} "
                )
            lines.append(row + versus)
    rates = ", ".join(
        f"{work} {statistics.median(values):.0%}"
        for work, values in data["accepted"].items()
        if values
    )
    lines += ["", f"Candidates accepted (median per run): {rates}."]
    memory = data.get("memory", {})
    if memory.get("plain") and memory.get("prompt-lookup"):
        lines.append(
            f"Engine process memory after the run: plain {memory['plain']:.0f} MB, "
            f"prompt lookup {memory['prompt-lookup']:.0f} MB (its second pipeline holds "
            "another copy of the weights)."
        )
    if llama_cmd:
        lines += [
            "",
            f"llama-server as started: `{llama_cmd}`, and with `--spec-type ngram-mod`.",
        ]
    lines.append(end)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--llama-threads",
        type=int,
        default=1,
        help="llama-server's --threads (1 was its best for one stream in the peers run)",
    )
    parser.add_argument(
        "--model", default=None, help="a model of the store (default: the default model)"
    )
    parser.add_argument(
        "--no-exact-pair",
        action="store_true",
        help="leave out the pair without dynamic quantization (a big model's run is long)",
    )
    args = parser.parse_args()
    from app.modelstore import store

    name = args.model or store.DEFAULT_MODEL
    model = store.model_dir(ROOT / "model_store", name)
    contenders = {
        who: flags
        for who, flags in CONTENDERS.items()
        if not (args.no_exact_pair and "no DQ" in who)
    }
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    urls = {}
    with ExitStack() as stack:
        for who, extra in contenders.items():
            port = free_port()
            urls[who] = f"http://127.0.0.1:{port}"
            stack.enter_context(
                server(
                    ovchat_cmd(model, port, *extra),
                    f"{urls[who]}/health",
                    logs / f"speculation-{who}.log",
                )
            )
        llama_cmd: list[str] = []
        binary = LLAMA_BIN / "llama-server"
        for who, flags in LLAMAS.items() if binary.exists() else ():
            port = free_port()
            urls[who] = f"http://127.0.0.1:{port}"
            cmd = llama_server_cmd(
                binary, gguf(name), port, parallel=1, threads=args.llama_threads
            ) + list(flags)
            llama_cmd = llama_cmd or cmd
            log = logs / f"speculation-{who.replace(', ', '-')}.log"
            stack.enter_context(server(cmd, ready_url(LLAMA, urls[who]), log))
        data = asyncio.run(rounds(urls, args.rounds))
    command = "python bench/speculation.py " + " ".join(sys.argv[1:])
    shown = " ".join(str(part).replace(str(ROOT) + "/", "") for part in llama_cmd)
    section = report(data, command.strip(), args.rounds, name, shown)
    # A model's own section goes after the default model's.
    write_between(DOC, *markers(name), section, before="<!-- export-profiles:start -->")
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
