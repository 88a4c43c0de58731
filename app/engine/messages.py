"""Typed messages between the server and its engine processes (pickled through a queue
one way and a pipe the other). One class per message, checked by mypy on both ends."""

from __future__ import annotations

from dataclasses import dataclass

from app.engine.base import EngineFinish, Grammar, PromptToken, SamplingParams

# ---------------------------------------------------------------------------- to the engine


@dataclass(frozen=True, slots=True)
class AddRequest:
    rid: int
    prompt_ids: list[int]
    params: SamplingParams


@dataclass(frozen=True, slots=True)
class CancelRequest:
    rid: int


@dataclass(frozen=True, slots=True)
class StopEngine:
    pass


ToEngine = AddRequest | CancelRequest | StopEngine

# ---------------------------------------------------------------------------- from the engine


@dataclass(frozen=True, slots=True)
class EngineReady:
    device: str
    # The KV cache's layout, for /metrics (vLLM's cache_config_info): tokens per block and
    # blocks in the cache; 0 where the engine could not tell.
    block_size: int = 0
    kv_blocks: int = 0


@dataclass(frozen=True, slots=True)
class EngineFailed:
    """The engine could not start; the message is for the operator."""

    message: str


@dataclass(frozen=True, slots=True)
class RequestTokens:
    rid: int
    token_ids: list[int]
    logprobs: list[float]
    finish: EngineFinish | None
    # The exact scoring engine's (app/engine/scoring_worker.py): alternatives per token,
    # and the scored prompt on a request's first message.
    top: tuple[tuple[tuple[int, float], ...], ...] = ()
    prompt: tuple[PromptToken, ...] | None = None


@dataclass(frozen=True, slots=True)
class StepStats:
    step_s: float
    requests: int  # the scheduler's requests, waiting ones included
    scheduled: int  # those that took part in this step
    cache_usage_pct: float
    drafted: int = 0  # speculative decoding: candidate tokens the step verified
    accepted: int = 0  # and those the model agreed with
    moved: int = 0  # requests moved to the plain pipeline, speculation having stopped paying
    pieces: int = 0  # prefill pacing: prompt pieces the step computed (not in the counts)


@dataclass(frozen=True, slots=True)
class StepOutput:
    """Everything one step produced."""

    tokens: list[RequestTokens]
    stats: StepStats


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """The engine gave up on one request. `rejected`: because of what the request itself
    asked for (a 400 for its client), not a fault of the server's."""

    rid: int
    message: str
    rejected: bool = False


@dataclass(frozen=True, slots=True)
class RunningCount:
    count: int  # requests the engine holds


@dataclass(frozen=True, slots=True)
class StepFault:
    """A step failed and the engine recovered without a restart: `failed` are the requests
    held responsible (each also gets its RequestFailed), `resumed` the others, which are
    replayed and continue where their clients are."""

    message: str
    failed: list[int]
    resumed: list[int]


FromEngine = (
    EngineReady
    | EngineFailed
    | StepOutput
    | RequestTokens
    | RequestFailed
    | RunningCount
    | StepFault
)

# ---------------------------------------------------------------------------- grammar checks


@dataclass(frozen=True, slots=True)
class CheckGrammar:
    key: int
    grammar: Grammar


@dataclass(frozen=True, slots=True)
class GrammarVerdict:
    key: int
    error: str | None  # None: the grammar compiled
    seconds: float


# ---------------------------------------------------------------------------- embeddings
# The embedding engine answers with EngineReady/EngineFailed when it starts, like the
# generation engine, then with one EmbedBatch per batch it ran.


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    rid: int
    inputs: list[list[int]]  # token ids, special tokens included, one list per input


@dataclass(frozen=True, slots=True)
class EmbedResult:
    rid: int
    # float32, little-endian, one row of `dimensions` per input: a list of Python floats
    # pickles at ~9 bytes a number and is rebuilt number by number on the other side.
    vectors: bytes
    dimensions: int


@dataclass(frozen=True, slots=True)
class BatchStats:
    requests: int  # requests answered by this batch
    inputs: int
    tokens: int  # real tokens
    padded_tokens: int  # tokens the model ran, padding included
    infers: int  # model runs: one per length bucket (and per chunk of a large bucket)
    seconds: float


@dataclass(frozen=True, slots=True)
class EmbedBatch:
    results: list[EmbedResult]
    failed: list[RequestFailed]
    stats: BatchStats


ToEmbedder = EmbedRequest | StopEngine
FromEmbedder = EngineReady | EngineFailed | EmbedBatch
