"""What the window cache (kv_cache_window) costs and keeps on a sliding-window model.

Runs one random prompt longer than the window greedily, with the engine's own scheduler
config (app/engine/genai_worker.py), twice with every block kept and once with the cache
cut to the model's window, in process. Prints for each run the time to first token, the
decode time per token (median), the cache in use at the end, and whether its tokens equal
the first run's. The second full run is a determinism check: on near-tied logits runs can
differ by themselves, and the comparison would then prove nothing. Part of
`make bench ARGS=--phi3`; alone:

    python bench/window_cache.py model_store/phi3-shaped/int4 2600 24"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Sized in tokens at u4, as a Phi-3-mini server in 6 GB runs (bench/realistic.py CONTEXT_FLAGS),
# with a step budget that prefills in 256-token chunks.
SETTINGS = {"kv_cache_tokens": 8192, "kv_cache_precision": "u4", "max_num_batched_tokens": 256}


def run(model: str, prompt: list[int], new_tokens: int, window: int | None) -> dict[str, Any]:
    import numpy as np
    import openvino as ov
    import openvino_genai as ov_genai

    from app.engine.base import SamplingParams
    from app.engine.genai_worker import WorkerConfig, generation_config, scheduler_config
    from app.settings import Settings

    cfg = WorkerConfig.from_settings(Settings(**SETTINGS), model, "CPU")  # type: ignore[arg-type]
    pipe = ov_genai.ContinuousBatchingPipeline(
        model, scheduler_config(cfg, window), "CPU", cfg.properties
    )
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0, ignore_eos=True)
    ids: Any = np.asarray([prompt], dtype=np.int64)
    started = time.perf_counter()
    handle = pipe.add_request(0, ov.Tensor(ids), generation_config(params))
    tokens: list[int] = []
    steps: list[float] = []
    ttft = 0.0
    while pipe.has_non_finished_requests():
        step_started = time.perf_counter()
        pipe.step()
        step_s = time.perf_counter() - step_started
        if handle.can_read():
            for output in handle.read().values():
                if tokens:
                    steps.append(step_s)
                else:
                    ttft = time.perf_counter() - started
                tokens.extend(output.generated_ids)
    return {
        "tokens": tokens,
        "ttft_s": round(ttft, 2),
        "tpot_ms": round(1000 * float(np.median(steps)), 1),
        "end_cache_pct": round(pipe.get_metrics().cache_usage, 1),
    }


def compare(model: str, prompt_tokens: int, new_tokens: int) -> dict[str, Any]:
    import numpy as np

    from app.engine.kv_window import kv_block_size, model_window
    from app.textmodel import model_context_length

    window = model_window(model, model_context_length(Path(model)), kv_block_size("CPU"))
    if window is None:
        sys.exit(f"{model} has no sliding window shorter than its context")
    vocab = json.loads((Path(model) / "config.json").read_text())["vocab_size"]
    prompt = np.random.default_rng(1).integers(100, vocab - 100, size=prompt_tokens).tolist()
    runs = {
        "every block": run(model, prompt, new_tokens, None),
        "every block, again": run(model, prompt, new_tokens, None),
        "window only": run(model, prompt, new_tokens, window),
    }
    first = runs["every block"]["tokens"]
    for result in runs.values():
        result["same_tokens"] = result.pop("tokens") == first
    return {
        "window": window,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "settings": SETTINGS,
        "runs": runs,
    }


def main() -> None:
    model, prompt_tokens, new_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    result = compare(model, prompt_tokens, new_tokens)
    print(f"{model}: window {result['window']}, prompt {prompt_tokens}, generated {new_tokens}")
    print("| cache | TTFT s | TPOT ms | end cache % | same tokens as the first |")
    print("|---|---|---|---|---|")
    for name, r in result["runs"].items():
        print(
            f"| {name} | {r['ttft_s']} | {r['tpot_ms']} | {r['end_cache_pct']} "
            f"| {r['same_tokens']} |"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
