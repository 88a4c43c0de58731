"""The contract between the generation core and an inference backend: token ids in,
token ids out, typed; no HTTP and no wire format on this side."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

EngineFinish = Literal["stop", "length"]


GrammarKind = Literal["json_schema", "structural_tag", "regex", "ebnf"]


@dataclass(frozen=True, slots=True)
class Grammar:
    kind: GrammarKind
    text: str


@dataclass(frozen=True, slots=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0  # 0 means greedy decoding
    top_p: float = 1.0
    top_k: int = 0  # 0 disables top-k
    seed: int = 0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    # Every eos id of the model's generation config: Phi-3 has three, and stopping on
    # `<|endoftext|>` alone runs on past `<|end|>`.
    stop_token_ids: frozenset[int] = field(default_factory=frozenset)
    ignore_eos: bool = False
    min_p: float = 0.0
    logprobs: bool = False  # report each chosen token's log-probability
    json_schema: str | None = None  # constrain the output to JSON valid against it
    # Or to this structural tag (xgrammar's JSON form, as genai takes it): a forced call
    # in a chat template's own format, tags and all.
    structural_tag: str | None = None
    # Or to a regular expression, or to an EBNF grammar (xgrammar's dialect, which is
    # llama.cpp's GBNF).
    regex: str | None = None
    ebnf: str | None = None
    # What only the exact scoring engine serves (app/engine/scoring_worker.py), which
    # computes every logit: the top alternatives of each chosen token, biases added to
    # logits before sampling (token id, bias), and the prompt's own log-probabilities
    # (with that many alternatives per prompt token; None: not asked).
    top_logprobs: int = 0
    logit_bias: tuple[tuple[int, float], ...] = ()
    prompt_logprobs: int | None = None

    def with_seed(self, seed: int) -> SamplingParams:
        return replace(self, seed=seed)

    @property
    def grammar(self) -> Grammar | None:
        """What constrains the output, as the engine's grammar compiler is given it."""
        if self.structural_tag is not None:
            return Grammar("structural_tag", self.structural_tag)
        if self.json_schema is not None:
            return Grammar("json_schema", self.json_schema)
        if self.regex is not None:
            return Grammar("regex", self.regex)
        if self.ebnf is not None:
            return Grammar("ebnf", self.ebnf)
        return None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def needs_logits(self) -> bool:
        """Whether only an engine that sees every logit can serve these parameters (a
        budget of 0 tokens too: it is scoring, or nothing, never a step)."""
        return (
            self.top_logprobs > 0
            or bool(self.logit_bias)
            or self.prompt_logprobs is not None
            or self.max_new_tokens == 0
        )


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """Tokens produced since the previous delta; `finish` is set on the last one
    (`stop`: an eos id was produced, it is included in `token_ids`)."""

    token_ids: tuple[int, ...]
    finish: EngineFinish | None = None
    logprobs: tuple[float, ...] = ()  # one per token id, when SamplingParams.logprobs
    # With SamplingParams.top_logprobs: per token id, the most likely tokens at its
    # position as (token id, log-probability), most likely first.
    top: tuple[tuple[tuple[int, float], ...], ...] = ()
    # With SamplingParams.prompt_logprobs, on the first delta: the prompt's tokens scored.
    prompt: tuple[PromptToken, ...] | None = None


@dataclass(frozen=True, slots=True)
class PromptToken:
    """A prompt token's log-probability given the tokens before it (None for the first,
    which nothing predicts, as OpenAI reports it) and its position's top alternatives."""

    token_id: int
    logprob: float | None
    top: tuple[tuple[int, float], ...] = ()


class EngineError(RuntimeError):
    """The engine could not serve a request it had accepted (crash, failed step)."""


class RequestRejected(EngineError):
    """The engine refused the request's parameters: the client's error, not the server's."""


class EngineStartError(RuntimeError):
    """The engine could not load the model; the message says why, for the operator."""


@dataclass(frozen=True, slots=True)
class EngineStats:
    running: int = 0  # sequences being decoded
    waiting: int = 0  # sequences the engine holds but has not scheduled yet
    kv_usage: float = 0.0  # fraction of the KV cache in use
    # Speculative decoding since the engine started: candidate tokens verified, and those
    # the model agreed with (their ratio is the acceptance rate).
    draft_tokens: int = 0
    accepted_tokens: int = 0
    moved_requests: int = 0  # moved off speculation, it having stopped paying
    prefill_pieces: int = 0  # prompt pieces prefill pacing fed the engine, since it started
    # The KV cache's layout (tokens per block, blocks in the cache); 0 when not known.
    block_size: int = 0
    kv_blocks: int = 0


# What an engine can do beyond plain sampling; requests needing more are refused with 400.
LOGPROBS = "logprobs"
STRUCTURED_OUTPUT = "structured_output"
PENALTIES = "presence_frequency_penalties"
MIN_P = "min_p"
# Every logit of every position: top_logprobs, logit_bias, the prompt's log-probabilities.
LOGITS = "logits"


class Engine(Protocol):
    name: str
    capabilities: frozenset[str]

    async def start(self) -> None:
        """Begin loading the model; an engine that loads elsewhere may return early."""
        ...

    async def wait_ready(self) -> None:
        """Return once the model is loaded (raise EngineStartError if it cannot be)."""
        ...

    async def close(self) -> None: ...

    def is_ready(self) -> bool: ...

    def pid(self) -> int | None:
        """The engine's own process, when it has one (its memory is the model's)."""
        ...

    def running(self) -> int:
        """Requests the engine itself holds (running or queued in its scheduler)."""
        ...

    def stats(self) -> EngineStats: ...

    def on_step(self, callback: Callable[[float], None]) -> None:
        """Have `callback(seconds)` called for every engine step."""
        ...

    async def check(self, params: SamplingParams) -> None:
        """Raise RequestRejected, before the request is admitted, if anything in `params`
        would fail inside the engine (a grammar that does not compile): what fails there
        fails every request batched with it."""
        ...

    def generate(
        self, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncGenerator[TokenDelta, None]:
        """Stream the completion of `prompt_ids`. Closing the iterator early (client gone)
        cancels the request in the engine."""
        ...
