from __future__ import annotations

from pathlib import Path

import pytest

from app.engine.base import Engine, EngineStartError
from app.modelstore.store import ResolvedModel
from app.server import create_app
from app.settings import Settings


def _never(settings: Settings, model: ResolvedModel) -> Engine:
    raise AssertionError("no engine may be built for a refused configuration")


def test_prompts_longer_than_a_step_without_split_fuse_refuse_to_start(
    tiny_model_dir: Path,
) -> None:
    # genai would abort its process on the first prompt longer than the step budget.
    settings = Settings(
        model=str(tiny_model_dir), dynamic_split_fuse=False, max_num_batched_tokens=256
    )
    with pytest.raises(EngineStartError, match=r"context length \(4096\)"):
        create_app(settings, engine_factory=_never)


def test_a_step_budget_below_max_num_seqs_refuses_to_start(tiny_model_dir: Path) -> None:
    settings = Settings(model=str(tiny_model_dir), max_num_seqs=32, max_num_batched_tokens=16)
    with pytest.raises(EngineStartError, match=r"\(16\) must be at least --max-num-seqs \(32\)"):
        create_app(settings, engine_factory=_never)


def test_a_step_budget_that_holds_the_context_may_go_without_split_fuse(
    tiny_model_dir: Path,
) -> None:
    built = []

    def factory(settings: Settings, model: ResolvedModel) -> Engine:
        built.append(model.name)
        raise EngineStartError("stop here")

    settings = Settings(
        model=str(tiny_model_dir), dynamic_split_fuse=False, max_num_batched_tokens=4096
    )
    with pytest.raises(EngineStartError, match="stop here"):
        create_app(settings, engine_factory=factory)
    assert built
