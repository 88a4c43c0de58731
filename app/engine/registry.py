"""Engines by name, each with its own startup checks and its own constructor, so the server
knows no engine's internals. A new engine is one entry here and a module beside this one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.engine.base import Engine, EngineStartError
from app.modelstore.store import ResolvedModel
from app.settings import Settings
from app.textmodel import model_context_length


@dataclass(frozen=True)
class EngineKind:
    name: str
    check: Callable[[Settings, ResolvedModel], None]  # raises EngineStartError
    build: Callable[[Settings, ResolvedModel, str], Engine]  # (settings, model, device)


def _check_genai(settings: Settings, model: ResolvedModel) -> None:
    """Scheduler settings that genai accepts but cannot honour refuse to start (as vLLM
    refuses them): a step budget below max_num_seqs would leave running sequences without
    a token in some steps, and without split-fuse a prompt longer than the budget kills the
    engine process mid-step."""
    if settings.max_num_batched_tokens < settings.max_num_seqs:
        raise EngineStartError(
            f"--max-num-batched-tokens ({settings.max_num_batched_tokens}) must be at least "
            f"--max-num-seqs ({settings.max_num_seqs}): every running sequence needs its "
            f"token in each step"
        )
    if settings.speculative_decoding == "draft" and (
        settings.draft_model is None or not (settings.draft_model / "openvino_model.xml").is_file()
    ):
        raise EngineStartError(
            "--speculative-decoding draft needs --draft-model: the export folder of a "
            f"smaller model with the same tokenizer (got {settings.draft_model})"
        )
    if settings.dynamic_split_fuse:
        return
    context = model_context_length(model.path)
    if settings.max_num_batched_tokens < context:
        raise EngineStartError(
            f"--no-dynamic-split-fuse needs --max-num-batched-tokens >= the model's context "
            f"length ({context}), not {settings.max_num_batched_tokens}: without chunked "
            f"prefill a prompt must fit in one step"
        )


def _build_genai(settings: Settings, model: ResolvedModel, device: str) -> Engine:
    from app.engine.genai import GenaiEngine
    from app.engine.genai_worker import WorkerConfig

    config = WorkerConfig.from_settings(settings, str(model.path), device)
    return GenaiEngine(config, settings.grammar_check_timeout_s)


def _check_nothing(settings: Settings, model: ResolvedModel) -> None:
    pass


def _build_optimum(settings: Settings, model: ResolvedModel, device: str) -> Engine:
    from app.engine.optimum import OptimumEngine

    return OptimumEngine(model.path, device, settings.engine_properties())


ENGINES: dict[str, EngineKind] = {
    kind.name: kind
    for kind in (
        EngineKind("genai", _check_genai, _build_genai),
        EngineKind("optimum", _check_nothing, _build_optimum),
    )
}


def build_engine(settings: Settings, model: ResolvedModel) -> Engine:
    """The configured engine, checked and built; raises EngineStartError before the server
    binds when it cannot serve this model with these settings."""
    from app.engine.device import resolve_device

    kind = ENGINES[settings.engine]
    kind.check(settings, model)
    device = resolve_device(settings.device)
    engine = kind.build(settings, model, device)
    if not settings.exact_scoring:
        return engine
    return _with_scoring(settings, model, device, engine)


def _with_scoring(settings: Settings, model: ResolvedModel, device: str, engine: Engine) -> Engine:
    """The main engine with the exact scoring path beside it (app/engine/scoring.py)."""
    import logging

    from app.engine.scoring import LogitsRouter, ScoringEngine
    from app.engine.scoring_worker import ScoringWorkerConfig

    root = logging.getLogger()
    config = ScoringWorkerConfig(
        model_path=str(model.path),
        device=device,
        properties=settings.engine_properties(),
        log_level=logging.getLevelName(root.getEffectiveLevel()),
        log_format=settings.log_format,
    )
    return LogitsRouter(engine, lambda: ScoringEngine(config), settings.scoring_idle_s)
