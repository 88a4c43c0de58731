"""Engines by name, with their own startup checks (app/engine/registry.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.engine.base import EngineStartError
from app.engine.registry import ENGINES, build_engine
from app.modelstore import store
from app.settings import Settings


def _model(folder: Path) -> store.ResolvedModel:
    return store.resolve(str(folder), folder)


def test_every_configurable_engine_is_registered() -> None:
    from typing import get_args

    assert set(ENGINES) == set(get_args(Settings.model_fields["engine"].annotation))


def test_prompts_longer_than_a_step_without_split_fuse_refuse_to_start(
    tiny_model_dir: Path,
) -> None:
    # genai would abort its process on the first prompt longer than the step budget.
    settings = Settings(
        model=str(tiny_model_dir), dynamic_split_fuse=False, max_num_batched_tokens=256
    )
    with pytest.raises(EngineStartError, match=r"context length \(4096\)"):
        build_engine(settings, _model(tiny_model_dir))


def test_a_step_budget_below_max_num_seqs_refuses_to_start(tiny_model_dir: Path) -> None:
    settings = Settings(model=str(tiny_model_dir), max_num_seqs=32, max_num_batched_tokens=16)
    with pytest.raises(EngineStartError, match=r"\(16\) must be at least --max-num-seqs \(32\)"):
        build_engine(settings, _model(tiny_model_dir))


def test_a_step_budget_that_holds_the_context_may_go_without_split_fuse(
    tiny_model_dir: Path,
) -> None:
    settings = Settings(
        model=str(tiny_model_dir), dynamic_split_fuse=False, max_num_batched_tokens=4096
    )
    engine = build_engine(settings, _model(tiny_model_dir))
    assert engine.name == "genai" and not engine.is_ready()


def test_the_optimum_engine_has_no_scheduler_to_check(tiny_model_dir: Path) -> None:
    settings = Settings(model=str(tiny_model_dir), engine="optimum", max_num_seqs=32)
    ENGINES["optimum"].check(settings, _model(tiny_model_dir))


def test_draft_speculation_without_a_draft_model_refuses_to_start(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    for draft in (None, tmp_path):  # none given, or a folder with no export in it
        settings = Settings(
            model=str(tiny_model_dir), speculative_decoding="draft", draft_model=draft
        )
        with pytest.raises(EngineStartError, match="needs --draft-model"):
            build_engine(settings, _model(tiny_model_dir))
