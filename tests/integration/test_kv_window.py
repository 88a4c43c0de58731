"""A sliding-window model's KV cache cut to its window: read from the graph, wired into the
engine, and the same tokens out as with every block kept.

The model is tiny-phi3-window: a 64-token window, random weights at a scale where every
token depends on what the model attends (test_outputs_depend_on_the_window_and_only_on_it
shows it does, and that the graph applies the window), so a cache that dropped a block
still in the window would change the tokens (test_a_cache_cut_inside_the_window_changes_
the_tokens shows that it does)."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.engine.base import SamplingParams
from app.engine.genai import GenaiEngine
from app.engine.genai_worker import WorkerConfig, cache_window, generation_config
from app.engine.genai_worker import scheduler_config as worker_scheduler_config
from app.engine.kv_window import EvictionAreas, model_window
from app.settings import Settings

WINDOW = 64
PROMPT = 600  # ~9 windows: most of each prompt's blocks are out of reach by its end
NEW_TOKENS = 160
GREEDY = SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0, ignore_eos=True)
# A model this sensitive to its context is as sensitive to rounding: in bf16 (the CPU's
# default here) or with a quantized cache, how requests share a step changes its tokens.
# In f32 they do not, so runs with different batches and cache hits compare exactly.
EXACT = {"kv_cache_precision": "f32", "INFERENCE_PRECISION_HINT": "f32"}


def prompts(count: int, seed: int = 7) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    # The tokenizer has ~650 tokens; ids past it have no embedding row worth reading.
    return [rng.integers(10, 600, size=PROMPT).tolist() for _ in range(count)]


def worker_config(model: Path, **settings: Any) -> WorkerConfig:
    """The engine's config for these settings; an upper-case key is an OpenVINO property."""
    props = {k: v for k, v in settings.items() if k.isupper()}
    fields = {k: v for k, v in settings.items() if not k.isupper()}
    cfg = WorkerConfig.from_settings(Settings(**fields), str(model), "CPU")
    return replace(cfg, properties=cfg.properties | props)


def run_in_process(
    model: Path,
    batch: list[list[int]],
    window: int | None,
    recent: int | None = None,
    **settings: Any,
) -> tuple[list[list[int]], float, float]:
    """Generate for every prompt at once, in order of arrival, with the engine's own
    scheduler and generation configs (`recent` overrides the recent area it derives from
    the window); returns the tokens, and the cache's peak and final use in percent."""
    import openvino as ov
    import openvino_genai as ov_genai

    cfg = worker_config(model, **settings)
    sched = worker_scheduler_config(cfg, window)
    if recent is not None:
        start = sched.cache_eviction_config.get_start_size()
        sched.cache_eviction_config = ov_genai.CacheEvictionConfig(
            start, recent, start + recent + start, ov_genai.AggregationMode.NORM_SUM, False
        )
    pipe = ov_genai.ContinuousBatchingPipeline(str(model), sched, "CPU", cfg.properties)
    handles = [
        pipe.add_request(i, ov.Tensor(np.asarray([p], dtype=np.int64)), generation_config(GREEDY))
        for i, p in enumerate(batch)
    ]
    out: list[list[int]] = [[] for _ in batch]
    peak = 0.0
    while pipe.has_non_finished_requests():
        pipe.step()
        peak = max(peak, pipe.get_metrics().cache_usage)
        for i, handle in enumerate(handles):
            if handle.can_read():
                for output in handle.read().values():
                    out[i].extend(output.generated_ids)
    return out, peak, pipe.get_metrics().cache_usage


def test_window_is_read_from_the_graph(
    window_model_dir: Path, default_model_dir: Path, tmp_path: Path
) -> None:
    assert model_window(str(window_model_dir), 4096, 32) == WINDOW
    # No window in the config: nothing to read.
    assert model_window(str(default_model_dir), 2048, 32) is None
    # A window as long as the context would free nothing.
    assert model_window(str(window_model_dir), 64 + 2 * 32, 32) is None
    # A config that names a window it does not use (as Qwen2's do) keeps every block.
    unused = tmp_path / "unused"
    shutil.copytree(window_model_dir, unused)
    config = json.loads((unused / "config.json").read_text())
    (unused / "config.json").write_text(json.dumps(config | {"use_sliding_window": False}))
    assert model_window(str(unused), 4096, 32) is None
    # A config that declares a window the graph does not apply (a model exported without
    # one, here the default model with a window written into its config) keeps every block.
    undeclared = tmp_path / "undeclared"
    shutil.copytree(default_model_dir, undeclared)
    config = json.loads((undeclared / "config.json").read_text())
    (undeclared / "config.json").write_text(json.dumps(config | {"sliding_window": 64}))
    assert model_window(str(undeclared), 2048, 32) is None


def test_outputs_depend_on_the_window_and_only_on_it(window_model_dir: Path) -> None:
    (base,) = prompts(1)
    far = base[:100] + prompts(1, seed=8)[0][100:300] + base[300:]  # out of every window
    near = base[:-40] + prompts(1, seed=9)[0][-40:]  # within the first token's window
    (tokens,), _, _ = run_in_process(window_model_dir, [base], None, **EXACT)
    assert run_in_process(window_model_dir, [far], None, **EXACT)[0] == [tokens]
    (changed,), _, _ = run_in_process(window_model_dir, [near], None, **EXACT)
    assert changed[:20] != tokens[:20]


def test_window_cache_gives_the_tokens_of_the_full_cache(window_model_dir: Path) -> None:
    """Three prompts decoding together, and the first once more, alone (its prefix blocks
    cached from the first run, where eviction had freed most of them)."""
    batch = prompts(3)
    full, full_peak, full_end = run_in_process(window_model_dir, batch, None, **EXACT)
    windowed, peak, end = run_in_process(window_model_dir, batch + batch[:1], WINDOW, **EXACT)
    assert windowed == [*full, full[0]]
    # Same tokens from fewer blocks: a sequence ends holding its areas, not its length.
    blocks = 32
    assert EvictionAreas.for_window(WINDOW, blocks).tokens_per_sequence(blocks) == 224
    assert end < full_end / 2
    assert peak <= full_peak


def test_window_cache_with_the_default_cache_precision(window_model_dir: Path) -> None:
    """With the default (quantized) cache, the same batch in the same schedule: the step
    budget that the window cache gets (no pacer runs beside it) for both."""
    batch = prompts(3, seed=12)
    same = {"max_num_batched_tokens": 16}
    full, _, _ = run_in_process(window_model_dir, batch, None, **same)
    assert run_in_process(window_model_dir, batch, WINDOW, **same)[0] == full


def test_a_cache_cut_inside_the_window_changes_the_tokens(window_model_dir: Path) -> None:
    """The comparison above can fail: a recent area of one block (32 tokens of a 64-token
    window) loses context the model attends, and the tokens change."""
    batch = prompts(3)
    full, _, _ = run_in_process(window_model_dir, batch, None, **EXACT)
    cut, _, _ = run_in_process(window_model_dir, batch, WINDOW, recent=32, **EXACT)
    assert cut != full


def test_engine_cuts_the_cache_to_the_window_by_default(window_model_dir: Path) -> None:
    """Through the engine process, with the server's default scheduler settings: the
    window is found, the cache holds little more than it, and streams come out as the full
    cache gives them in process."""
    # 50 blocks: the two full contexts would take 48, their windows at most 14.
    on = worker_config(window_model_dir, kv_cache_tokens=1600, **EXACT)
    off = worker_config(window_model_dir, kv_cache_window=False)
    assert (cache_window(on), cache_window(off)) == (WINDOW, None)
    assert cache_window(replace(on, device="GPU.0")) is None  # checked on CPU only
    batch = prompts(2, seed=11)
    expected, _, _ = run_in_process(window_model_dir, batch, None, **EXACT)
    late_usage: list[float] = []

    async def scenario() -> list[list[int]]:
        engine = GenaiEngine(on)
        await engine.start()
        await engine.wait_ready()
        try:

            async def one(prompt: list[int]) -> list[int]:
                tokens: list[int] = []
                async for delta in engine.generate(prompt, GREEDY):
                    tokens += delta.token_ids
                    if len(tokens) > NEW_TOKENS - 20:
                        late_usage.append(engine.stats().kv_usage)
                return tokens

            return list(await asyncio.gather(*(one(p) for p in batch)))
        finally:
            await engine.close()

    assert asyncio.run(scenario()) == expected
    assert late_usage and max(late_usage) <= 14 / 50


@pytest.mark.parametrize(("tokens", "blocks"), [(20480, 640), (1000, 32), (33, 2)])
def test_kv_cache_tokens_sizes_the_cache_in_blocks(
    tiny_model_dir: Path, tokens: int, blocks: int
) -> None:
    for precision in ("u4", "u8"):
        settings = Settings(kv_cache_tokens=tokens, kv_cache_precision=precision)
        sched = worker_scheduler_config(
            WorkerConfig.from_settings(settings, str(tiny_model_dir), "CPU")
        )
        assert (sched.num_kv_blocks, sched.cache_size) == (blocks, 0)
