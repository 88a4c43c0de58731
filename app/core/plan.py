"""What a validated request asks the core to do, in no API's terms: the output of every
dialect's validator and the only input of the generation core."""

from __future__ import annotations

from dataclasses import dataclass

from app.core.tools import ToolPlan
from app.engine.base import SamplingParams
from app.textmodel import TextModel


@dataclass(frozen=True)
class Limits:
    """The request limits a validator enforces (from the settings)."""

    max_n: int
    max_stop_sequences: int
    max_messages: int
    max_tool_calls: int


@dataclass(frozen=True)
class ModelContext:
    """What a validator may know of the server: the served model and what its engine can
    do. Small on purpose, so validators are tested without HTTP or an engine."""

    text: TextModel
    engine_name: str
    capabilities: frozenset[str]
    limits: Limits


@dataclass(frozen=True)
class ChoicePlan:
    """One engine request: a prompt and how to sample it. `prompt` indexes the request's
    prompts (text completions may send several; each gets `n` choices)."""

    prompt_ids: list[int]
    params: SamplingParams
    prompt: int = 0


@dataclass(frozen=True)
class GenerationPlan:
    choices: list[ChoicePlan]
    prompt_tokens: int  # every prompt's tokens, counted once (usage.prompt_tokens)
    stops: list[str]
    tools: ToolPlan | None = None  # tool calls are parsed out of the output
    logprobs: bool = False  # report the chosen tokens' log-probabilities
    schema_param: str = "response_format"  # the field a grammar the engine refuses came from
