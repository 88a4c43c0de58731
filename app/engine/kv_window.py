"""How much of a sequence's KV cache a sliding-window model can still attend.

Phi-3-mini looks back only 2047 tokens (`sliding_window` in its config, kept by the export in
every attention layer), yet openvino-genai holds every block of a sequence, so a 4k context
costs twice the cache the model can use. genai's cache eviction can free the rest exactly:
with a "recent" area that always covers the window, it only drops blocks the attention mask
already hides. This holds only when every layer has the same window, which the config alone
cannot promise (Gemma-style models mix windowed and full layers, Qwen2 configs name a window
they do not use), so the window is read from the graph after genai's own paged-attention
rewrite: one value on every layer, or no eviction."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("app.engine.worker")

# The PagedAttention operation's inputs are positional; sliding_window is the eleventh
# (query, key, value, key_cache, value_cache, past_lens, subsequence_begins, block_indices,
# block_indices_begins, scale, sliding_window, ...).
_SLIDING_WINDOW_INPUT = 10


def kv_block_size(device: str) -> int:
    """Tokens per KV block as genai lays the cache out on this device."""
    return 16 if device.upper().startswith("GPU") else 32


@dataclass(frozen=True)
class EvictionAreas:
    """genai's CacheEvictionConfig areas, in tokens and whole blocks."""

    start: int
    recent: int
    max_cache: int

    @classmethod
    def for_window(cls, window: int, block: int) -> EvictionAreas:
        # The recent area must always hold the last `window` tokens and the one being
        # generated; genai counts it in whole blocks and the newest block may be nearly
        # empty, so one block more. The start and evictable areas take genai's minimum of a
        # block each: the mask hides whatever they keep.
        recent = -(-(window + 1) // block) * block + block
        return cls(start=block, recent=recent, max_cache=block + recent + block)

    def tokens_per_sequence(self, block: int) -> int:
        """The most tokens one decoding sequence keeps: eviction runs once a block fills."""
        return self.max_cache + block


def config_window(model_path: str) -> int | None:
    """The sliding window the model's config declares, if any."""
    config = json.loads((Path(model_path) / "config.json").read_text())
    window = config.get("sliding_window")
    if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
        return None
    if config.get("use_sliding_window") is False:
        return None
    return window


def graph_windows(model_path: str) -> set[int]:
    """The sliding window of every attention layer, as genai's paged-attention rewrite sets
    it (0: the layer attends to everything)."""
    import openvino as ov
    from openvino._offline_transformations import paged_attention_transformation

    model = ov.Core().read_model(str(Path(model_path) / "openvino_model.xml"))
    paged_attention_transformation(model, False, False)
    outputs = [
        op.input_value(_SLIDING_WINDOW_INPUT)
        for op in model.get_ordered_ops()
        if op.get_type_name() == "PagedAttentionExtension"
    ]
    if not outputs:
        return set()
    # Each window is a small constant expression (a negated, converted constant): evaluate
    # them all in one tiny model rather than constant-folding the whole graph, which would
    # unpack every weight (minutes for Phi-3-mini).
    windows: Any = ov.Core().compile_model(ov.Model(outputs, []), "CPU")({})
    return {int(value) for value in windows.values()}


def model_window(model_path: str, context_length: int, block: int) -> int | None:
    """The window to keep when every layer shares one that is shorter than the context
    (so eviction frees something), else None: every block is kept."""
    declared = config_window(model_path)
    if declared is None:
        return None
    try:
        windows = graph_windows(model_path)
    except Exception as exc:  # an export this code cannot read: keep everything
        logger.warning("Could not read the attention window from the graph (%s)", exc)
        return None
    if len(windows) != 1 or 0 in windows:
        logger.info(
            "Config declares a %d-token window but the graph's layers have %s: every KV "
            "block is kept",
            declared,
            sorted(windows) or "no paged attention",
        )
        return None
    (window,) = windows
    if EvictionAreas.for_window(window, block).max_cache >= context_length:
        return None  # the window spans the whole context: nothing would ever be freed
    return window
