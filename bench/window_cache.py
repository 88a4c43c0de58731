"""Can a sliding-window model's KV cache be cut to its window without changing outputs?

Phi-3-mini attends only `sliding_window` (2047) tokens back, and its exported graph keeps
that window through genai's paged-attention rewrite, yet genai holds every block of a
sequence. Its score-based cache eviction, given a "recent" area that covers the window
(plus a block of slack, as only full blocks are evicted), can only drop blocks the model
can no longer attend. This runs the same random prompt greedily with and without that
eviction and prints whether the generated tokens are identical, with the cache each run
used at its peak and at its end. An experiment for a setting not built yet, so it is not
part of `make bench`.

    python bench/window_cache.py model_store/phi3-shaped/int4 3000 64"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

BLOCK = 32  # genai's KV block size on CPU
START = BLOCK  # the smallest start and evictable areas genai accepts


def window_recent_size(window: int) -> int:
    """The recent area, in whole blocks, that always holds the last `window` tokens."""
    return (window + 1 + BLOCK - 1) // BLOCK * BLOCK + BLOCK


def run(model: str, prompt: list[int], new_tokens: int, window: int | None) -> dict[str, Any]:
    import numpy as np
    import openvino as ov
    import openvino_genai as ov_genai

    sched = ov_genai.SchedulerConfig()
    sched.cache_size = 2
    sched.max_num_seqs = 8
    sched.max_num_batched_tokens = 256
    sched.dynamic_split_fuse = True
    sched.enable_prefix_caching = False
    if window is not None:
        recent = window_recent_size(window)
        sched.use_cache_eviction = True
        sched.cache_eviction_config = ov_genai.CacheEvictionConfig(
            START, recent, START + recent + BLOCK, ov_genai.AggregationMode.NORM_SUM, False
        )
    pipe = ov_genai.ContinuousBatchingPipeline(model, sched, "CPU", {"KV_CACHE_PRECISION": "u8"})
    config = ov_genai.GenerationConfig()
    config.max_new_tokens = new_tokens
    config.ignore_eos = True
    started = time.monotonic()
    ids: Any = np.asarray([prompt], dtype=np.int64)
    handle = pipe.add_request(0, ov.Tensor(ids), config)
    tokens: list[int] = []
    peak = last = 0.0
    while pipe.has_non_finished_requests():
        pipe.step()
        last = pipe.get_metrics().cache_usage
        peak = max(peak, last)
        if handle.can_read():
            for output in handle.read().values():
                tokens.extend(output.generated_ids)
    return {
        "tokens": tokens,
        "peak_cache_pct": round(peak, 2),
        "end_cache_pct": round(last, 2),
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> None:
    model, prompt_tokens, new_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    window = json.loads((Path(model) / "config.json").read_text()).get("sliding_window")
    if not isinstance(window, int):
        sys.exit(f"{model} has no sliding_window in its config")
    import numpy as np

    prompt = np.random.default_rng(1).integers(100, 30000, size=prompt_tokens).tolist()
    # Twice with every block first: on near-tied logits (the tiny test model on random
    # prompts) runs differ by themselves, and a comparison would then prove nothing.
    runs = [
        ("every block", run(model, prompt, new_tokens, None)),
        ("every block, again", run(model, prompt, new_tokens, None)),
        ("window only", run(model, prompt, new_tokens, window)),
    ]
    print(f"{model}: window {window}, prompt {prompt_tokens}, generated {new_tokens}")
    print("| cache | peak % | end % | seconds | tokens | same as the first |")
    print("|---|---|---|---|---|---|")
    first = runs[0][1]["tokens"]
    for name, result in runs:
        print(
            f"| {name} | {result['peak_cache_pct']} | {result['end_cache_pct']} "
            f"| {result['seconds']} | {len(result['tokens'])} | {result['tokens'] == first} |"
        )
    if runs[1][1]["tokens"] != first:
        print("the model is not deterministic on this prompt: nothing is shown")
    elif runs[2][1]["tokens"] == first:
        print("identical tokens with the window-only cache")
    else:
        print("TOKENS DIFFER with the window-only cache")


if __name__ == "__main__":
    main()
