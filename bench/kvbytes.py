"""KV cache bytes per token of an OpenVINO model at each cache precision: as openvino-genai
accounts them in its block budget (one request of 1279 prompt tokens, +1 generated = 40
blocks of 32, in a 1 GiB cache, and the share of the cache it then uses) and as its cache
tensors really take them (their shapes after genai's paged-attention rewrite, compiled
for the CPU at that precision). The two differ for u4, which genai counts as a byte.

    python bench/kvbytes.py model_store/phi3-shaped/int4 u8 u4 f16"""

from __future__ import annotations

import json
import sys
from typing import Any

BLOCK = 32
BLOCKS = 40


def accounted_kib(model: str, precision: str) -> float:
    import numpy as np
    import openvino as ov
    import openvino_genai as ov_genai

    sched = ov_genai.SchedulerConfig()
    sched.cache_size = 1
    sched.max_num_batched_tokens = 2048
    sched.max_num_seqs = 4
    sched.enable_prefix_caching = False
    props = {} if precision == "auto" else {"KV_CACHE_PRECISION": precision}
    pipe = ov_genai.ContinuousBatchingPipeline(model, sched, "CPU", props)
    config = ov_genai.GenerationConfig()
    config.max_new_tokens = 2
    config.ignore_eos = True
    prompt: Any = np.arange(100, 100 + BLOCK * BLOCKS - 1, dtype=np.int64)[None, :]
    handle = pipe.add_request(0, ov.Tensor(prompt), config)
    pipe.step()  # the whole prompt in one step, and its first token
    share = pipe.get_metrics().cache_usage / 100
    handle.cancel()
    return float(share * 2**30 / (BLOCKS * BLOCK) / 1024)


def real_kib(model: str, precision: str) -> float:
    import openvino as ov
    from openvino._offline_transformations import paged_attention_transformation

    core = ov.Core()
    graph = core.read_model(f"{model}/openvino_model.xml")
    paged_attention_transformation(graph, False, False)
    props = {} if precision == "auto" else {"KV_CACHE_PRECISION": precision}
    total = 0.0
    for port in core.compile_model(graph, "CPU", props).inputs:
        if port.get_any_name().startswith(("key_cache.", "value_cache.")):
            elements = 1
            for dim in list(port.get_partial_shape())[1:]:  # [blocks, heads, rows, width]
                elements *= dim.get_length()
            total += elements * port.get_element_type().bitwidth / 8 / BLOCK
    return total / 1024


def main() -> None:
    model, *precisions = sys.argv[1:]
    result = {
        p: {"accounted": round(accounted_kib(model, p), 1), "real": round(real_kib(model, p), 1)}
        for p in precisions or ["auto"]
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
