"""The openvino-genai engine process.

ContinuousBatchingPipeline.step(), add_request() and read() hold the GIL for the whole
step, so they run here, in a process of their own, never in a thread of the server: the
server's event loop stays free while this loop batches every request in flight into the
same steps. Requests come in through a multiprocessing queue; everything one loop turn
produces goes out as one list through a pipe, written by this loop itself: a queue's feeder
thread would need the GIL that step() holds, so each step's tokens would leave a step late,
and the server reads the pipe from its event loop with no thread of its own. The messages
both ways are the typed ones of app/engine/messages.py.

A step that fails (a grammar genai cannot compile, say) fails only the request that caused
it when that can be told apart; the engine replays the others and keeps serving (see
_Worker.recover). The server checks grammars before admitting a request
(app/engine/grammar_check.py), so this is the net under that check, not the check."""

from __future__ import annotations

import itertools
import logging
import queue
import time
from collections import deque
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any, Literal

from app.engine.base import EngineFinish, SamplingParams
from app.engine.grammar_check import structured_output_config
from app.engine.kv_window import EvictionAreas, kv_block_size, model_window
from app.engine.messages import (
    AddRequest,
    CancelRequest,
    EngineFailed,
    EngineReady,
    FromEngine,
    RequestFailed,
    RequestTokens,
    RunningCount,
    StepFault,
    StepOutput,
    StepStats,
    StopEngine,
    ToEngine,
)
from app.engine.pacing import Piece, PrefillPacer, PrefixLedger
from app.settings import Settings

logger = logging.getLogger("app.engine.worker")


@dataclass(frozen=True)
class Speculation:
    """Speculative decoding: candidate tokens from n-grams of the prompt (prompt lookup) or
    from a draft model, verified by the model in one pass, so greedy output is the plain
    decoder's token for token and sampled output keeps its distribution (genai verifies
    by rejection).

    It pays while the engine has compute to spare and costs when the batch is full, and
    genai fixes a request's drafting when the request is added (its speculative pipeline
    takes no request that drafts nothing, and is slower per step than the plain one even
    when nothing is drafted). So the engine runs both pipelines: speculation is on while
    the batch is small, or while the candidates of those speculating are mostly accepted
    (until they have been judged, of those that speculated last); once more than
    `busy_at` sequences run and they are not, every speculating request moves to the
    plain pipeline, where the rest of the batch then joins it."""

    mode: Literal["prompt-lookup", "draft"]
    num_assistant_tokens: int
    max_ngram_size: int
    busy_at: int
    draft_model: str | None = None
    min_acceptance: float = 0.5

    # Decoding steps a request drafts before its acceptance is judged. Every step of a
    # speculating request verifies num_assistant_tokens positions whether lookup found
    # candidates or not (genai pads them), so in a busy batch each step of waiting costs:
    # judged after 8, a batch of 8 free-text streams ran at 0.94x of plain decoding.
    JUDGED_AFTER = 4

    def drafted(self, running: int, step_budget: int) -> int:
        """Candidates a request arriving now drafts: all of them while the batch has room,
        and never more than its share of the step budget leaves (a sequence verifies its
        candidates and its own token in the same step, and one that cannot fit waits)."""
        if running > self.busy_at:
            return 1
        share = step_budget // (running + 1) - 1
        return max(1, min(self.num_assistant_tokens, share))

    @staticmethod
    def suits(params: SamplingParams) -> bool:
        """Whether a request may speculate. One that speculates may have to move to the
        plain pipeline, re-added as its prompt plus what it generated; a grammar's state
        and the penalties counted over generated tokens alone would not survive that."""
        return (
            params.grammar is None and not params.presence_penalty and not params.frequency_penalty
        )


@dataclass(frozen=True)
class WorkerConfig:
    model_path: str
    device: str
    properties: dict[str, str]
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_cache_gb: int
    kv_cache_tokens: int
    kv_cache_window: bool
    enable_prefix_caching: bool
    dynamic_split_fuse: bool
    speculation: Speculation | None = None
    prefill_pace: int = 0
    log_level: str = "INFO"
    log_format: str = "text"

    @classmethod
    def from_settings(cls, settings: Settings, model_path: str, device: str) -> WorkerConfig:
        return cls(
            model_path=model_path,
            device=device,
            properties=settings.engine_properties(),
            max_num_seqs=settings.max_num_seqs,
            max_num_batched_tokens=settings.max_num_batched_tokens,
            kv_cache_gb=settings.kv_cache_gb,
            kv_cache_tokens=settings.kv_cache_tokens,
            kv_cache_window=settings.kv_cache_window,
            enable_prefix_caching=settings.enable_prefix_caching,
            dynamic_split_fuse=settings.dynamic_split_fuse,
            speculation=None
            if settings.speculative_decoding == "off"
            else Speculation(
                mode=settings.speculative_decoding,
                num_assistant_tokens=settings.num_assistant_tokens,
                max_ngram_size=settings.max_ngram_size,
                busy_at=settings.speculation_busy_at,
                draft_model=str(settings.draft_model) if settings.draft_model else None,
                min_acceptance=settings.speculation_min_acceptance,
            ),
            prefill_pace=settings.prefill_pace_tokens,
            log_level=settings.log_level,
            log_format=settings.log_format,
        )


def generation_config(params: SamplingParams) -> Any:
    import openvino_genai as ov_genai

    config = ov_genai.GenerationConfig()
    config.max_new_tokens = params.max_new_tokens
    config.stop_token_ids = set(params.stop_token_ids)
    config.ignore_eos = params.ignore_eos
    if params.greedy:
        config.do_sample = False
    else:
        config.do_sample = True
        config.temperature = params.temperature
        config.top_p = params.top_p
        config.top_k = params.top_k if params.top_k > 0 else 2**31 - 1
        config.rng_seed = params.seed
        config.min_p = params.min_p
    if params.logprobs:
        config.logprobs = 1
    grammar = params.grammar
    if grammar is not None:
        config.structured_output_config = structured_output_config(grammar)
    config.presence_penalty = params.presence_penalty
    config.frequency_penalty = params.frequency_penalty
    config.repetition_penalty = params.repetition_penalty
    return config


# openvino-genai 2026.4 sizes its KV block budget with element_type.size(), which rounds
# a 4-bit element up to a byte, while the cache tensors it allocates hold two per byte: a
# u4 cache given N GiB takes N/2. The budget is doubled so that kv_cache_gb is the memory
# a u4 cache really takes (an integration test checks genai's accounting against the
# cache tensors' shapes on the pinned release, and fails once genai corrects it).
U4_CACHE_BUDGET_FACTOR = 2


def cache_budget_gb(cfg: WorkerConfig) -> int:
    """The cache_size to give genai so that the cache occupies cfg.kv_cache_gb GiB."""
    u4 = cfg.properties.get("KV_CACHE_PRECISION") == "u4"
    return cfg.kv_cache_gb * (U4_CACHE_BUDGET_FACTOR if u4 else 1)


def scheduler_config(cfg: WorkerConfig, window: int | None = None) -> Any:
    """genai's scheduler settings; `window`, when given, is the sliding window every layer
    of the model shares, and the cache then keeps only the blocks it can reach."""
    import openvino_genai as ov_genai

    sched = ov_genai.SchedulerConfig()
    sched.max_num_seqs = cfg.max_num_seqs
    sched.max_num_batched_tokens = step_budget(cfg, window)
    block = kv_block_size(cfg.device)
    if cfg.kv_cache_tokens:
        # Counted in blocks, the cache is exact whatever the precision (no u4 correction)
        # and may be any size, not only whole GiB.
        sched.num_kv_blocks = -(-cfg.kv_cache_tokens // block)
        sched.cache_size = 0
    else:
        sched.cache_size = cache_budget_gb(cfg)
    sched.enable_prefix_caching = cfg.enable_prefix_caching
    sched.dynamic_split_fuse = cfg.dynamic_split_fuse
    if window is not None:
        areas = EvictionAreas.for_window(window, block)
        sched.use_cache_eviction = True
        # No RoPE re-rotation: kept keys stay at their true positions, as the full cache
        # has them. The aggregation mode only ranks blocks outside the window.
        sched.cache_eviction_config = ov_genai.CacheEvictionConfig(
            areas.start,
            areas.recent,
            areas.max_cache,
            ov_genai.AggregationMode.NORM_SUM,
            False,
        )
    return sched


def cache_window(cfg: WorkerConfig) -> int | None:
    """The sliding window the KV cache is cut to, when kv_cache_window is on and the model
    has one shorter than its context; logged either way, so a user sees what happened."""
    if not cfg.kv_cache_window:
        return None
    if cfg.speculation is not None:
        # genai's speculative pipelines fail a step once cache eviction scores a draft's
        # prefill ("aggregated SnapKV scores ... larger than the window"): every block kept.
        logger.info("KV cache keeps every block: the window cache is off with speculation")
        return None
    if not cfg.device.upper().startswith("CPU"):
        # Exactness rests on how the attention kernel masks a compacted block table, which
        # the tests check on the CPU plugin only.
        logger.info("KV cache keeps every block: the window cache is checked on CPU only")
        return None
    from app.textmodel import model_context_length

    block = kv_block_size(cfg.device)
    window = model_window(cfg.model_path, model_context_length(Path(cfg.model_path)), block)
    if window is None:
        logger.info("KV cache keeps every block (the model has no shorter sliding window)")
    else:
        logger.info(
            "KV cache keeps each sequence's last %d-token attention window: at most %d "
            "tokens a sequence once its prompt is in",
            window,
            EvictionAreas.for_window(window, block).tokens_per_sequence(block),
        )
    return window


def _finish_name(reason: Any) -> EngineFinish | None:
    name = getattr(reason, "name", str(reason)).upper()
    if name == "STOP":
        return "stop"
    if name == "LENGTH":
        return "length"
    return None


def _last_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[-1].strip() if lines else type(exc).__name__


def _grammar_fault(exc: BaseException) -> bool:
    """Raised by genai's bundled grammar compiler (its sources sit under xgrammar-src)."""
    return "xgrammar" in str(exc).lower()


# A step that fails leaves genai's scheduler mid-iteration: every sequence still counts as
# scheduled and the next step refuses to run. Cancelling every request and stepping once
# clears that (measured on 2026.4: the pipeline then serves as before and frees every
# block), so the engine recovers by re-adding the requests it held. Two bounds keep that
# from going round in circles: a request present at this many faults that no single
# culprit explained is failed (a fault that comes back at its k-th token would otherwise
# recur on every replay), and this many such faults in a row with no good step between
# them end the process, which the server then restarts: the last resort.
MAX_FAULTS_PER_REQUEST = 3
MAX_CONSECUTIVE_FAULTS = 2


@dataclass
class _Request:
    """A request the engine holds, with the tokens it has delivered.

    After a fault it is re-added where its client is: its prompt followed by what was
    delivered, for the tokens left (greedy text then goes on as it would have; a sampled
    one goes on as a new sample of the same model, and penalties count the delivered
    tokens as prompt). A request with a grammar cannot resume that way (genai would start
    the grammar over), so it is regenerated from the start with its seed and its tokens
    are checked against those delivered before new ones go out; it fails if they differ
    (batch composition can tip a sampled or near-tied token)."""

    rid: int
    prompt_ids: list[int]
    params: SamplingParams
    handle: Any = None
    delivered: list[int] = field(default_factory=list)
    replayed: int = 0  # while replaying: delivered tokens regenerated so far
    replaying: bool = False
    # Produced a token since it was (re)added. genai compiles a request's grammar when it
    # first samples it, so a grammar fault while one unsampled request has a grammar is
    # that request's fault.
    sampled: bool = False
    faults: int = 0  # faults it was held during that no single culprit explained
    drafted: int = 0  # candidate tokens it drafts a step, with speculative decoding
    pipe: Any = None  # the pipeline its handle (or its prompt's pieces) is in
    proposed: int = 0  # candidates it drafted while decoding, and those accepted
    taken: int = 0
    judged: int = 0  # decoding steps counted in `proposed`
    frugal: bool = False  # drafts one candidate a step from now on

    @property
    def unproven(self) -> bool:
        return self.params.grammar is not None and not self.sampled

    def resumable(self) -> tuple[list[int], SamplingParams]:
        """The prompt and parameters that continue this request from where it is."""
        if self.params.grammar is not None or not self.delivered:
            self.replaying = bool(self.delivered)
            self.replayed = 0
            return self.prompt_ids, self.params
        left = self.params.max_new_tokens - len(self.delivered)
        return self.prompt_ids + self.delivered, replace(self.params, max_new_tokens=left)


@dataclass
class _PieceRun:
    request: _Request
    upto: int
    handle: Any
    pipe: Any


def kv_capacity_tokens(cfg: WorkerConfig) -> int:
    """About how many tokens the KV cache holds: its budget over a token's keys and values
    at one byte an element (the CPU plugin's u8 default), from the model's config."""
    if cfg.kv_cache_tokens:
        return cfg.kv_cache_tokens
    import json

    config = json.loads((Path(cfg.model_path) / "config.json").read_text())
    heads = config.get("num_attention_heads", 1)
    head_dim = config.get("head_dim") or config.get("hidden_size", heads) // heads
    per_token = (
        2 * config.get("num_hidden_layers", 1) * config.get("num_key_value_heads", heads) * head_dim
    )
    return int(cfg.kv_cache_gb * 2**30 // max(per_token, 1))


def pace_tokens(cfg: WorkerConfig, window: int | None) -> int:
    """The prefill pace the worker keeps (whole KV blocks), 0 when it does not pace: off,
    no tighter than genai's budget, or without the prefix cache it rests on keeping every
    block (`window`: the window cache, which drops blocks a piece computed)."""
    block = kv_block_size(cfg.device)
    pace = cfg.prefill_pace // block * block
    if not pace or pace >= cfg.max_num_batched_tokens:
        return 0  # genai's own budget paces as tightly
    if not cfg.enable_prefix_caching or window is not None:
        return 0
    return pace


def step_budget(cfg: WorkerConfig, window: int | None) -> int:
    """genai's step budget. Without the pacer that was asked for, a large budget would let
    a long prompt freeze every stream for a whole chunk: it is cut to one token per
    sequence, which leaves a prompt the slack of the running ones."""
    if cfg.prefill_pace and not pace_tokens(cfg, window):
        return min(cfg.max_num_batched_tokens, cfg.max_num_seqs)
    return cfg.max_num_batched_tokens


def pacer(cfg: WorkerConfig, window: int | None, blocks: int = 0) -> PrefillPacer[_Request] | None:
    """The prefill pacer, if it runs; `blocks`: the KV cache's, as counted at startup (0:
    estimated from the model's config)."""
    pace = pace_tokens(cfg, window)
    budget = step_budget(cfg, window)
    if not pace:
        if budget < cfg.max_num_batched_tokens:
            logger.info(
                "Prefill pacing off (it needs the prefix cache, with every block kept): "
                "step budget %d tokens instead of %d",
                budget,
                cfg.max_num_batched_tokens,
            )
        return None
    logger.info(
        "Prefill pacing: at most %d new prompt tokens a step while sequences decode "
        "(%d while none does)",
        pace,
        budget,
    )
    block = kv_block_size(cfg.device)
    return PrefillPacer(pace, PrefixLedger(block, blocks or kv_capacity_tokens(cfg) // block))


class _Worker:
    def __init__(
        self,
        pipe: Any,
        out: Connection,
        speculation: Speculation | None = None,
        step_budget: int = 16,
        pacer: PrefillPacer[_Request] | None = None,
        speculative: Any = None,
    ) -> None:
        import numpy as np
        import openvino as ov

        self._np = np
        self._ov = ov
        self.pipe = pipe  # plain decoding
        self.speculative = speculative  # genai's speculative pipeline, with speculation on
        # Pipelines holding cancelled sequences: genai frees their blocks in its next step.
        self.untidy: dict[int, Any] = {}
        self.out = out
        self.requests: dict[int, _Request] = {}
        # Suspects of a grammar fault that could not be told apart: re-added one at a
        # time, each once the one before has proven its grammar (or left), so the next
        # fault names its culprit.
        self.probation: deque[_Request] = deque()
        self.probing: _Request | None = None
        self.outbox: list[FromEngine] = []
        self.genai_ids = itertools.count(1)  # a replay needs a fresh id: genai keys state by it
        self.faults = 0
        self.moved = 0  # moves to the plain pipeline not yet reported in a step's stats
        # Acceptance of the requests that last left the speculative pipeline, judged (a
        # running average, halving the weight of the past at each).
        self.recent_acceptance: float | None = None
        self.speculation = speculation
        self.step_budget = step_budget
        self.pacer = pacer
        self.pieces: dict[int, _PieceRun] = {}  # by request id: one piece in flight each

    def flush(self) -> None:
        if self.outbox:
            self.out.send(self.outbox)
            self.outbox.clear()

    def add(self, request: _Request) -> None:
        prompt, params = request.resumable()
        tensor = self._ov.Tensor(self._np.asarray([prompt], dtype=self._np.int64))
        config = generation_config(params)
        pipe = request.pipe if request.pipe is not None else self.route(request)
        request.drafted = 0
        if pipe is self.speculative and self.speculation is not None:
            request.drafted = (
                1
                if request.frugal
                else self.speculation.drafted(len(self.requests), self.step_budget)
            )
            config.num_assistant_tokens = request.drafted
            config.max_ngram_size = self.speculation.max_ngram_size
        request.handle = pipe.add_request(next(self.genai_ids), tensor, config)
        request.pipe = pipe
        request.sampled = False

    def route(self, request: _Request) -> Any:
        """The pipeline a request starts in. The one the others run in: a batch split over
        both would take two steps a round (unless the batch is busy and speculation is
        known not to pay: those speculating are about to move). With none placed yet (the
        first request, or a burst the pacer holds), the speculative one, but for a busy
        batch only if speculation is known to pay: one that speculated without knowing
        would spend its first steps verifying candidates before any request could be
        judged, then re-read every context in the plain pipeline."""
        if self.speculative is None or not Speculation.suits(request.params):
            return self.pipe
        others = [r.pipe for r in self.requests.values() if r is not request]
        if any(pipe is self.pipe for pipe in others):
            return self.pipe
        pays = self.speculation_pays()
        if any(pipe is self.speculative for pipe in others):
            return self.pipe if self.crowded and pays is False else self.speculative
        if self.crowded and not pays:
            return self.pipe
        return self.speculative

    def remember_acceptance(self, request: _Request) -> None:
        """Counts a request that leaves the speculative pipeline into recent_acceptance."""
        if request.pipe is self.speculative and request.judged >= Speculation.JUDGED_AFTER:
            rate = request.taken / max(request.proposed, 1)
            last = self.recent_acceptance
            self.recent_acceptance = rate if last is None else (last + rate) / 2

    @property
    def crowded(self) -> bool:
        assert self.speculation is not None
        return len(self.requests) > self.speculation.busy_at

    def speculation_pays(self) -> bool | None:
        """Whether the speculating requests that have been judged see enough of their
        candidates accepted; while none has been, whether those that speculated last did
        (traffic that copies keeps copying); None before any."""
        assert self.speculation is not None
        judged = [
            r
            for r in self.requests.values()
            if r.pipe is self.speculative and r.judged >= Speculation.JUDGED_AFTER
        ]
        proposed = sum(r.proposed for r in judged)
        if proposed:
            return sum(r.taken for r in judged) >= self.speculation.min_acceptance * proposed
        last = self.recent_acceptance
        return None if last is None else last >= self.speculation.min_acceptance

    def rebalance(self) -> None:
        """After a step: speculation off where it stopped paying (see Speculation)."""
        if self.speculative is None or self.speculation is None:
            return
        speculating = [
            r
            for r in self.requests.values()
            if r.pipe is self.speculative and r.handle is not None and not r.replaying
        ]
        if not speculating:
            return
        # At low load a request whose candidates fail keeps drafting: it costs a few
        # percent (docs/BENCHMARKS.md), and a re-added request's context is re-read in a
        # multi-token pass, whose numerics would make its greedy output differ from plain
        # decoding's where the model nearly ties.
        if not self.crowded or self.speculation_pays() is not False:
            return
        for request in speculating:
            # Re-read in the plain pipeline, a long context would stall the batch for more
            # than the steps it saves; it finishes where it is, drafting one token (the
            # prefix cache holds its context's full blocks: only the rest is read again).
            if len(request.prompt_ids) + len(request.delivered) <= 2 * self.step_budget:
                self.moved += self.move(request, self.pipe)
            elif not request.frugal:
                request.frugal = True
                self.move(request, self.speculative)

    def move(self, request: _Request, pipe: Any) -> bool:
        """Re-adds a running request in `pipe`, as its prompt plus what it generated."""
        if len(request.delivered) >= request.params.max_new_tokens:
            return False  # its last token is out; genai ends it in its next step
        logger.debug(
            "Request %d re-added %s after %d tokens (%d of %d candidates accepted)",
            request.rid,
            "decoding plainly" if pipe is self.pipe else "drafting one token",
            len(request.delivered),
            request.taken,
            request.proposed,
        )
        self.remember_acceptance(request)
        self.release(request)
        request.pipe = pipe
        try:
            self.add(request)
        except Exception as exc:
            self.fail(request, f"the request could not be moved: {_last_line(exc)}")
            return False
        return True

    def release(self, request: _Request) -> None:
        if request.handle is not None:
            self.cancel(request.handle, request.pipe)
            request.handle = None

    def cancel(self, handle: Any, pipe: Any) -> None:
        handle.cancel()
        self.untidy[id(pipe)] = pipe

    def add_piece(self, request: _Request, upto: int) -> None:
        """A request for prompt[:upto] that samples one token greedily and ends, so that
        its KV blocks stay in the prefix cache for the request itself (app/engine/pacing),
        in the pipeline it is routed to when its first piece goes in. (The pacer's ledger
        counts the blocks of both pipelines' caches as one cache's: it evicts sooner than
        either does, never later.)"""
        ids = self._np.asarray([request.prompt_ids[:upto]], dtype=self._np.int64)
        config = generation_config(SamplingParams(max_new_tokens=1, temperature=0.0))
        if request.pipe is None:
            request.pipe = self.route(request)
        if request.pipe is self.speculative and self.speculation is not None:
            config.num_assistant_tokens = 1
            config.max_ngram_size = self.speculation.max_ngram_size
        handle = request.pipe.add_request(next(self.genai_ids), self._ov.Tensor(ids), config)
        self.pieces[request.rid] = _PieceRun(request, upto, handle, request.pipe)

    def feed(self) -> None:
        """What the pacer lets into the engine before the next step."""
        if self.pacer is None or not self.pacer:
            return
        decoding = any(r.handle is not None and r.sampled for r in self.requests.values())
        for action in self.pacer.plan(decoding):
            request = action.item
            try:
                if isinstance(action, Piece):
                    self.add_piece(request, action.upto)
                else:
                    self.add(request)
            except Exception as exc:  # invalid generation config, prompt too long, ...
                if isinstance(action, Piece):
                    self.pacer.drop(request)
                self.fail(request, _last_line(exc), rejected=True)

    def end_pieces(self, cancel: bool) -> None:
        """Collects pieces that ended (all of them, cancelled, when `cancel`)."""
        for rid, run in list(self.pieces.items()):
            status = run.handle.get_status().name
            if cancel and status == "RUNNING":
                self.cancel(run.handle, run.pipe)
            elif status == "RUNNING":
                continue
            del self.pieces[rid]
            if self.pacer is not None:
                self.pacer.piece_done(run.request, run.upto, computed=status == "FINISHED")

    def fail(self, request: _Request, message: str, rejected: bool = False) -> None:
        self.requests.pop(request.rid, None)
        self.forget(request)
        self.release(request)
        if request in self.probation:
            self.probation.remove(request)
        self.outbox.append(RequestFailed(request.rid, message, rejected))

    def forget(self, request: _Request) -> None:
        """Takes a request that leaves out of the pacer's line and cancels its piece."""
        if self.pacer is not None:
            self.pacer.drop(request)
        run = self.pieces.pop(request.rid, None)
        if run is not None:
            self.cancel(run.handle, run.pipe)

    def handle_message(self, message: ToEngine) -> bool:
        """False when the engine must stop."""
        if isinstance(message, StopEngine):
            for request in self.requests.values():
                self.release(request)
            for run in self.pieces.values():
                self.cancel(run.handle, run.pipe)
            # genai frees a cancelled sequence's blocks in its next step; without one, its
            # teardown reports every such block as leaked (once a layer with the window
            # cache).
            for pipe in self.untidy.values():
                pipe.step()
            return False
        if isinstance(message, AddRequest):
            request = _Request(message.rid, message.prompt_ids, message.params)
            if self.pacer is not None:
                self.requests[message.rid] = request
                self.pacer.submit(request, request.prompt_ids)
                return True
            try:
                self.add(request)
            except Exception as exc:  # invalid generation config, prompt too long, ...
                self.outbox.append(RequestFailed(message.rid, _last_line(exc), rejected=True))
            else:
                self.requests[message.rid] = request
        elif isinstance(message, CancelRequest):
            cancelled = self.requests.pop(message.rid, None)
            if cancelled is not None:
                self.forget(cancelled)
                self.release(cancelled)
                if cancelled in self.probation:
                    self.probation.remove(cancelled)
        return True

    def admit_probation(self) -> None:
        probing = self.probing
        if probing is not None and probing.rid in self.requests and probing.unproven:
            return
        self.probing = None
        if not self.probation:
            return
        request = self.probation.popleft()
        try:
            self.add(request)
        except Exception as exc:
            self.fail(request, _last_line(exc), rejected=True)
            return
        self.probing = request

    def step(self) -> None:
        pieces = len(self.pieces)
        started = time.perf_counter()
        for pipe in self.busy_pipes():
            try:
                pipe.step()
            except Exception as exc:
                self.recover(exc, pipe)
                return
            self.untidy.pop(id(pipe), None)
        step_s = time.perf_counter() - started
        self.faults = 0
        self.end_pieces(cancel=False)
        self.collect(step_s, pieces)
        self.rebalance()

    def busy_pipes(self) -> list[Any]:
        """The pipelines holding anything to step: sequences, pieces or cancelled ones."""
        busy = [run.pipe for run in self.pieces.values()]
        busy += [r.pipe for r in self.requests.values() if r.handle is not None]
        busy += self.untidy.values()
        return [pipe for pipe in self.pipes if any(b is pipe for b in busy)]

    @property
    def pipes(self) -> list[Any]:
        return [self.pipe] if self.speculative is None else [self.pipe, self.speculative]

    @property
    def stepping(self) -> bool:
        """Whether genai holds anything to step."""
        return bool(self.busy_pipes())

    def collect(self, step_s: float, pieces: int = 0) -> None:
        events: list[RequestTokens] = []
        drafted = accepted = 0
        for request in list(self.requests.values()):
            handle = request.handle
            if handle is None:  # on probation
                continue
            tokens: list[int] = []
            logprobs: list[float] = []
            finish: EngineFinish | None = None
            if handle.can_read():
                for output in handle.read().values():
                    tokens.extend(output.generated_ids)
                    if request.params.logprobs:
                        logprobs.extend(output.generated_log_probs)
                    finish = _finish_name(output.finish_reason) or finish
            status = handle.get_status().name
            if status == "IGNORED":  # the scheduler could never fit it (KV cache too small)
                self.fail(request, "request does not fit in the KV cache")
                continue
            if request.drafted and request.sampled and tokens and status == "RUNNING":
                # A decoding step gives one token of the model's own beside the candidates
                # it accepted. Not counted: the prefill step (it drafts nothing) and the
                # last step, whose candidates past the end are neither right nor wrong.
                taken = min(len(tokens) - 1, request.drafted)
                drafted += request.drafted
                accepted += taken
                request.proposed += request.drafted
                request.taken += taken
                request.judged += 1
            if tokens:
                request.sampled = True
            if status != "RUNNING":
                del self.requests[request.rid]
                self.remember_acceptance(request)
                finish = finish or "length"
            if request.replaying:
                fresh = self.replayed(request, tokens, logprobs, finish)
                if fresh is None:  # failed, or still regenerating what its client has
                    continue
                tokens, logprobs = fresh
            request.delivered.extend(tokens)
            if tokens or finish:
                events.append(RequestTokens(request.rid, tokens, logprobs, finish))
        if events or pieces:
            metrics = [pipe.get_metrics() for pipe in self.pipes]
            stats = StepStats(
                step_s,
                max(0, sum(m.requests for m in metrics) - pieces),
                max(0, sum(m.scheduled_requests for m in metrics) - pieces),
                max(m.cache_usage for m in metrics),
                drafted,
                accepted,
                self.moved,
                pieces,
            )
            self.moved = 0
            self.outbox.append(StepOutput(events, stats))
            if not self.requests:
                self.outbox.append(RunningCount(0))

    def replayed(
        self,
        request: _Request,
        tokens: list[int],
        logprobs: list[float],
        finish: EngineFinish | None,
    ) -> tuple[list[int], list[float]] | None:
        """The part of a replayed request's new tokens that its client has not seen; None
        while there is none yet, or when the replay diverged (the request is failed)."""
        expected = request.delivered[request.replayed : request.replayed + len(tokens)]
        diverged = tokens[: len(expected)] != expected
        request.replayed += len(expected)
        if request.replayed == len(request.delivered):
            request.replaying = False
        if diverged or (request.replaying and finish is not None):
            request.replaying = False
            self.fail(request, "the request could not be resumed after an engine fault")
            return None
        if request.replaying:
            return None
        return tokens[len(expected) :], logprobs[len(expected) :]

    def recover(self, exc: Exception, pipe: Any) -> None:
        """A step of `pipe` failed. Fail the request that caused it when it can be told
        apart, re-add the others where their clients are; see MAX_FAULTS_PER_REQUEST."""
        reason = _last_line(exc)
        logger.error("Engine step failed: %s", reason)
        held = [r for r in self.requests.values() if r.handle is not None and r.pipe is pipe]
        suspects = [r for r in held if r.unproven] if _grammar_fault(exc) else []
        self.end_pieces(cancel=True)  # the pacer feeds their requests again
        for request in held:
            request.handle.cancel()
            request.handle = None
            if len(suspects) != 1:
                request.faults += 1  # a fault not explained by one culprit counts for all
        try:
            pipe.step()  # frees what was cancelled and clears the failed iteration
            self.untidy.pop(id(pipe), None)
        except Exception as second:
            self.give_up(f"engine step failed: {reason}; recovery failed: {_last_line(second)}")
            raise
        if len(suspects) != 1:
            self.faults += 1  # a fault no single culprit explains
            if self.faults > MAX_CONSECUTIVE_FAULTS:
                self.give_up(f"engine step failed {self.faults} times unexplained: {reason}")
                raise exc
        failed: list[int] = []
        if len(suspects) == 1:
            (culprit,) = suspects
            self.fail(culprit, f"the engine could not run this request's grammar: {reason}", True)
            failed.append(culprit.rid)
        else:
            self.probation.extend(suspects)
        resumed = []
        for request in held:
            if request.rid in failed or request in self.probation:
                continue
            if request.faults >= MAX_FAULTS_PER_REQUEST:
                self.fail(request, f"the engine failed {request.faults} times running it: {reason}")
                failed.append(request.rid)
                continue
            if len(request.delivered) >= request.params.max_new_tokens:
                del self.requests[request.rid]  # its last token went out before the fault
                self.outbox.append(RequestTokens(request.rid, [], [], "length"))
                continue
            try:
                self.add(request)
            except Exception as add_exc:
                self.fail(request, f"the request could not be resumed: {_last_line(add_exc)}")
                failed.append(request.rid)
                continue
            resumed.append(request.rid)
        self.outbox.append(StepFault(reason, failed, resumed + [r.rid for r in self.probation]))
        self.outbox.append(RunningCount(len(self.requests)))

    def give_up(self, message: str) -> None:
        for request in list(self.requests.values()):
            self.fail(request, message)
        self.probation.clear()
        self.flush()


def pipeline_properties(cfg: WorkerConfig) -> dict[str, Any]:
    """The speculative pipeline's properties: the OpenVINO ones and genai's speculative
    decoding mode (the plain pipeline takes cfg.properties)."""
    properties: dict[str, Any] = dict(cfg.properties)
    speculation = cfg.speculation
    if speculation is None:
        return properties
    if speculation.mode == "prompt-lookup":
        properties["prompt_lookup"] = True
    else:
        import openvino_genai as ov_genai

        properties["draft_model"] = ov_genai.draft_model(speculation.draft_model, cfg.device)
    logger.info(
        "Speculative decoding: %s, %d candidate tokens a step (one once more than %d "
        "sequences run; in the plain pipeline once they do and less than %.0f%% of the "
        "candidates are accepted)",
        speculation.mode,
        speculation.num_assistant_tokens,
        speculation.busy_at,
        100 * speculation.min_acceptance,
    )
    return properties


def cache_blocks(pipe: Any, cfg: WorkerConfig) -> int:
    """How many KV blocks the cache holds. Counted in blocks it is exact; sized in GiB, genai
    does not say, but its usage share does: a request of one block's worth of tokens fills
    one block, 1/N of the cache. Stepping it also runs the model's first inference before
    the server reports ready, which the first client would otherwise wait for. `pipe` is
    the plain pipeline (a speculative one takes no plain request)."""
    block = kv_block_size(cfg.device)
    if cfg.kv_cache_tokens:
        return -(-cfg.kv_cache_tokens // block)
    import numpy as np
    import openvino as ov
    import openvino_genai as ov_genai

    config = ov_genai.GenerationConfig()
    config.max_new_tokens = 2
    config.ignore_eos = True
    # One token repeated for a block: no real prompt starts so, so the block the prefix
    # cache keeps of the probe is never reused.
    prompt: Any = np.full((1, block - 1), 1, dtype=np.int64)
    try:
        handle = pipe.add_request(0, ov.Tensor(prompt), config)  # the server's ids start at 1
        pipe.step()
        share = pipe.get_metrics().cache_usage / 100
        handle.cancel()
        pipe.step()
    except Exception as exc:  # the metric is left out, the engine serves as before
        logger.warning("Could not count the KV cache's blocks: %s", _last_line(exc))
        return 0
    return round(1 / share) if share > 0 else 0


def run(cfg: WorkerConfig, inbox: Queue[ToEngine], out: Connection) -> None:
    from app.logs import configure

    configure(cfg.log_level, cfg.log_format)
    try:
        import openvino_genai as ov_genai

        started = time.monotonic()
        window = cache_window(cfg)
        sched = scheduler_config(cfg, window)
        pipe = ov_genai.ContinuousBatchingPipeline(
            cfg.model_path, sched, cfg.device, dict(cfg.properties)
        )
        speculative = (
            None
            if cfg.speculation is None
            else ov_genai.ContinuousBatchingPipeline(
                cfg.model_path, sched, cfg.device, pipeline_properties(cfg)
            )
        )
        logger.info(
            "Model loaded once by the engine process from %s on %s in %.2f s",
            cfg.model_path,
            cfg.device,
            time.monotonic() - started,
        )
    except Exception as exc:  # reported to the server, which refuses to start
        out.send([EngineFailed(f"{type(exc).__name__}: {exc}")])
        return
    blocks = cache_blocks(pipe, cfg)
    out.send([EngineReady(cfg.device, kv_block_size(cfg.device), blocks)])
    worker = _Worker(
        pipe,
        out,
        cfg.speculation,
        step_budget(cfg, window),
        pacer(cfg, window, blocks),
        speculative,
    )
    while True:
        try:
            worker.flush()
            # Idle: block for work. Busy: take whatever arrived since the last step.
            busy = worker.requests or worker.probation
            messages = [] if busy else [inbox.get()]
            while True:
                try:
                    messages.append(inbox.get_nowait())
                except queue.Empty:
                    break
        except (EOFError, OSError):  # BrokenPipeError included
            return  # the server is gone
        for message in messages:
            if not worker.handle_message(message):
                return
        worker.admit_probation()
        worker.feed()
        if messages:
            worker.outbox.append(RunningCount(len(worker.requests)))
        if not worker.stepping:
            continue
        worker.flush()  # refusals and counts go out now, not after a step that may be long
        worker.step()
