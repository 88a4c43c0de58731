"""The engine process's recovery from failed steps (app/engine/genai_worker._Worker), on a
scripted pipeline that fails the way genai's does: a step that raises leaves it
mid-iteration until every request is cancelled and one step is taken. The real pipeline is
in tests/integration/test_engine_faults.py; faults it cannot produce on demand (one that
recurs at a request's k-th token, one that is not the grammar's) are scripted here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from app.engine.base import SamplingParams
from app.engine.genai_worker import _Worker
from app.engine.messages import (
    AddRequest,
    CancelRequest,
    RequestFailed,
    RequestTokens,
    StepFault,
    StepOutput,
)
from app.engine.pacing import PrefillPacer, PrefixLedger

GRAMMAR = '{"type": "object"}'


@dataclass
class Handle:
    prompt: list[int]
    config: Any
    generated: list[int] = field(default_factory=list)
    unread: list[int] = field(default_factory=list)
    status: str = "RUNNING"

    def next_token(self) -> int:
        # Deterministic from the whole sequence so far, as greedy decoding is.
        sequence = self.prompt + self.generated
        return (sum(sequence) * 7 + len(sequence) * 13) % 97 + 3

    def can_read(self) -> bool:
        return bool(self.unread) or self.status != "RUNNING"

    def read(self) -> dict[int, Any]:
        tokens, self.unread = self.unread, []
        finish = "LENGTH" if self.status == "FINISHED" else "NONE"
        return {
            0: SimpleNamespace(generated_ids=tokens, generated_log_probs=[], finish_reason=finish)
        }

    def get_status(self) -> Any:
        return SimpleNamespace(name=self.status)

    def cancel(self) -> None:
        if self.status == "RUNNING":
            self.status = "CANCELLED"


class Pipe:
    """`fault(handle)` says whether sampling this handle's next token raises."""

    def __init__(self, fault: Callable[[Handle], str | None]) -> None:
        self.fault = fault
        self.handles: list[Handle] = []
        self.broken = False
        self.steps = 0

    drafts = False  # genai's speculative pipelines take only requests that draft

    def add_request(self, _: int, tensor: Any, config: Any) -> Handle:
        assert bool(config.num_assistant_tokens) == self.drafts
        handle = Handle([int(t) for t in tensor.data[0]], config)
        self.handles.append(handle)
        return handle

    def tokens(self, handle: Handle) -> int:
        """Tokens a step gives this handle."""
        return 1

    def step(self) -> None:
        self.steps += 1
        live = [h for h in self.handles if h.status == "RUNNING"]
        if self.broken:
            if live:
                raise RuntimeError("Internal error: already in scheduling phase")
            self.broken = False
            return
        for handle in live:
            message = self.fault(handle)
            if message is not None:
                self.broken = True
                raise RuntimeError(message)
        for handle in live:
            left = handle.config.max_new_tokens - len(handle.generated)
            for _ in range(min(self.tokens(handle), left)):
                token = handle.next_token()
                handle.generated.append(token)
                handle.unread.append(token)
            if len(handle.generated) >= handle.config.max_new_tokens:
                handle.status = "FINISHED"

    def get_metrics(self) -> Any:
        return SimpleNamespace(requests=0, scheduled_requests=0, cache_usage=0.0)


class SpeculativePipe(Pipe):
    """genai's speculative pipeline as the worker sees it: every request drafts, and a
    decoding step gives the model's own token after the candidates `accepted(handle)`
    says it took (the tokens are the model's either way: verification keeps output the
    plain decoder's)."""

    drafts = True

    def __init__(
        self,
        accepted: Callable[[Handle], int],
        fault: Callable[[Handle], str | None] = lambda handle: None,
    ) -> None:
        super().__init__(fault)
        self.accepted = accepted

    def tokens(self, handle: Handle) -> int:
        drafted = handle.config.num_assistant_tokens
        return 1 + (min(self.accepted(handle), drafted) if handle.generated else 0)


class Out:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, messages: list[Any]) -> None:
        self.sent += messages


def drive(worker: _Worker, limit: int = 2000, settle: bool = True) -> None:
    for _ in range(limit):
        worker.admit_probation()
        worker.feed()
        if not worker.stepping:
            if not worker.probation:
                break
            continue
        worker.step()
        worker.flush()
    else:
        assert not settle, "the worker did not settle"


def outcome(out: Out) -> dict[int, tuple[list[int], str]]:
    """Per request: the tokens delivered and how it ended ('stop'/'length' or 'failed')."""
    result: dict[int, tuple[list[int], str]] = {}
    for message in out.sent:
        items = message.tokens if isinstance(message, StepOutput) else [message]
        for item in items:
            if isinstance(item, RequestTokens):
                tokens, _ = result.get(item.rid, ([], ""))
                result[item.rid] = (tokens + item.token_ids, item.finish or "")
            elif isinstance(item, RequestFailed):
                tokens, _ = result.get(item.rid, ([], ""))
                result[item.rid] = (tokens, "failed")
    return result


def alone(prompt: list[int], n: int) -> list[int]:
    handle = Handle(prompt, SimpleNamespace(max_new_tokens=n))
    for _ in range(n):
        handle.generated.append(handle.next_token())
    return handle.generated


def add(worker: _Worker, rid: int, prompt: list[int], n: int, grammar: str | None = None) -> None:
    params = SamplingParams(max_new_tokens=n, temperature=0, json_schema=grammar)
    worker.handle_message(AddRequest(rid, prompt, params))


def has_grammar(handle: Handle) -> bool:
    return handle.config.structured_output_config is not None


def test_a_grammar_that_fails_to_compile_fails_alone() -> None:
    def fault(handle: Handle) -> str | None:
        broken = has_grammar(handle) and handle.prompt == [9] and not handle.generated
        return "xgrammar-src/cpp/json_schema_converter.cc: Cannot find field" if broken else None

    pipe, out = Pipe(fault), Out()
    worker = _Worker(pipe, out)  # type: ignore[arg-type]
    add(worker, 1, [1, 2], 12)
    add(worker, 2, [3, 4], 12, GRAMMAR)
    drive(worker, 3, settle=False)  # both well started
    add(worker, 3, [9], 5, GRAMMAR)
    drive(worker)
    seen = outcome(out)
    assert seen[3] == ([], "failed")
    assert seen[1] == (alone([1, 2], 12), "length")
    assert seen[2] == (alone([3, 4], 12), "length")  # regenerated, checked, continued
    faults = [m for m in out.sent if isinstance(m, StepFault)]
    assert [(f.failed, sorted(f.resumed)) for f in faults] == [([3], [1, 2])]
    rejected = [m for m in out.sent if isinstance(m, RequestFailed)]
    assert rejected[0].rejected and "grammar" in rejected[0].message


def test_a_fault_that_recurs_at_a_requests_kth_token_ends() -> None:
    """It would recur on every replay; the request present at every fault is failed."""

    def fault(handle: Handle) -> str | None:
        recurring = has_grammar(handle) and len(handle.generated) == 4
        return "xgrammar-src/cpp/grammar_matcher.cc: check failed" if recurring else None

    pipe, out = Pipe(fault), Out()
    worker = _Worker(pipe, out)  # type: ignore[arg-type]
    add(worker, 1, [5], 10, GRAMMAR)
    drive(worker)
    assert outcome(out)[1][1] == "failed"
    assert len([m for m in out.sent if isinstance(m, StepFault)]) == 3
    assert not worker.requests and pipe.steps < 100


def test_a_fault_that_is_not_a_grammars_blames_no_grammar() -> None:
    faults = iter([True])

    def fault(handle: Handle) -> str | None:
        return "device lost" if handle.prompt == [7] and next(faults, False) else None

    pipe, out = Pipe(fault), Out()
    worker = _Worker(pipe, out)  # type: ignore[arg-type]
    add(worker, 1, [7], 6)
    add(worker, 2, [8], 6, GRAMMAR)  # unsampled when the fault comes: not its fault
    drive(worker)
    seen = outcome(out)
    assert seen[1] == (alone([7], 6), "length") and seen[2] == (alone([8], 6), "length")


def test_faults_with_no_culprit_and_no_good_step_between_end_the_process() -> None:
    pipe, out = Pipe(lambda handle: "device lost"), Out()
    worker = _Worker(pipe, out)  # type: ignore[arg-type]
    add(worker, 1, [7], 6)
    with pytest.raises(RuntimeError, match="device lost"):
        drive(worker)
    assert outcome(out)[1] == ([], "failed")


def test_a_replay_that_diverges_fails_without_finishing() -> None:
    diverge = {"on": False}

    def fault(handle: Handle) -> str | None:
        if has_grammar(handle) and len(handle.generated) == 3 and not diverge["on"]:
            diverge["on"] = True
            return "device lost"
        return None

    pipe, out = Pipe(fault), Out()
    worker = _Worker(pipe, out)  # type: ignore[arg-type]
    original = Handle.next_token
    add(worker, 1, [2], 6, GRAMMAR)
    drive(worker, 3, settle=False)
    Handle.next_token = lambda self: 99  # type: ignore[method-assign]  # the replay differs
    try:
        drive(worker)
    finally:
        Handle.next_token = original  # type: ignore[method-assign]
    finished = [
        item
        for m in out.sent
        if isinstance(m, StepOutput)
        for item in m.tokens
        if item.rid == 1 and item.finish
    ]
    assert outcome(out)[1][1] == "failed" and not finished


def test_speculation_drafts_fully_only_while_the_batch_has_room() -> None:
    from app.engine.genai_worker import Speculation, WorkerConfig, pipeline_properties
    from app.settings import Settings

    settings = Settings(
        speculative_decoding="prompt-lookup", num_assistant_tokens=6, speculation_busy_at=2
    )
    config = WorkerConfig.from_settings(settings, "/m", "CPU")
    speculation = config.speculation
    assert speculation == Speculation("prompt-lookup", 6, 3, 2)
    # With room in a 64-token step: all 6; past busy_at: one; a small step caps the share.
    assert [speculation.drafted(running, 64) for running in range(5)] == [6, 6, 6, 1, 1]
    assert [speculation.drafted(running, 16) for running in range(3)] == [6, 6, 4]
    properties = pipeline_properties(config)
    assert properties["prompt_lookup"] is True
    # Dynamic quantization stays as the user set it: with it, verifying is 2-4x faster.
    assert "DYNAMIC_QUANTIZATION_GROUP_SIZE" not in properties
    exact = Settings(speculative_decoding="prompt-lookup", dynamic_quantization=False)
    assert exact.engine_properties()["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == "0"
    plain = WorkerConfig.from_settings(Settings(), "/m", "CPU")
    assert plain.speculation is None
    assert "prompt_lookup" not in pipeline_properties(plain)
    assert "DYNAMIC_QUANTIZATION_GROUP_SIZE" not in plain.properties


def paced(pipe: Pipe, out: Out, pace: int = 32) -> _Worker:
    pacer: PrefillPacer[Any] = PrefillPacer(pace, PrefixLedger(32, capacity=1000))
    return _Worker(pipe, out, pacer=pacer)  # type: ignore[arg-type]


def test_a_long_prompt_enters_in_pieces_while_another_decodes() -> None:
    pipe, out = Pipe(lambda handle: None), Out()
    worker = paced(pipe, out)
    add(worker, 1, [1, 2], 20)
    drive(worker, 2, settle=False)  # decoding
    long_prompt = list(range(10, 110))
    add(worker, 2, long_prompt, 4)
    drive(worker)
    added = [(len(h.prompt), h.config.max_new_tokens) for h in pipe.handles]
    # Pieces of 32, 64 and 96 tokens that sample one token each, then the request.
    assert added == [(2, 20), (32, 1), (64, 1), (96, 1), (100, 4)]
    assert [h.prompt for h in pipe.handles[1:]] == [long_prompt[:n] for n in (32, 64, 96, 100)]
    seen = outcome(out)  # the pieces' tokens go nowhere
    assert seen == {1: (alone([1, 2], 20), "length"), 2: (alone(long_prompt, 4), "length")}


def test_with_nothing_decoding_a_long_prompt_goes_in_whole() -> None:
    pipe, out = Pipe(lambda handle: None), Out()
    worker = paced(pipe, out)
    add(worker, 1, list(range(10, 110)), 3)
    drive(worker)
    assert [len(h.prompt) for h in pipe.handles] == [100]


def test_cancelling_a_request_cancels_its_piece() -> None:
    pipe, out = Pipe(lambda handle: None), Out()
    worker = paced(pipe, out)
    add(worker, 1, [1, 2], 20)
    drive(worker, 2, settle=False)
    add(worker, 2, list(range(10, 110)), 4)
    worker.feed()
    piece = pipe.handles[-1]
    assert len(piece.prompt) == 32 and piece.status == "RUNNING"
    worker.handle_message(CancelRequest(2))
    assert piece.status == "CANCELLED" and not worker.pieces
    assert worker.pacer is not None and not worker.pacer
    drive(worker)
    assert set(outcome(out)) == {1} and len(pipe.handles) == 2


def test_a_fault_during_a_piece_fails_no_request() -> None:
    faults = iter([True])

    def fault(handle: Handle) -> str | None:
        return "device lost" if len(handle.prompt) == 64 and next(faults, False) else None

    pipe, out = Pipe(fault), Out()
    worker = paced(pipe, out)
    add(worker, 1, [1, 2], 20)
    drive(worker, 2, settle=False)
    long_prompt = list(range(10, 110))
    add(worker, 2, long_prompt, 4)
    drive(worker)
    pieces = [len(h.prompt) for h in pipe.handles if h.config.max_new_tokens == 1]
    # The failed piece was cancelled; request 1 went back in to prefill again, so with
    # nothing decoding request 2 followed whole.
    assert pieces == [32, 64] and len(pipe.handles[-1].prompt) == 100
    assert outcome(out) == {1: (alone([1, 2], 20), "length"), 2: (alone(long_prompt, 4), "length")}
    assert not worker.pieces and not worker.pacer


def test_the_step_budget_is_large_only_where_the_pacer_runs() -> None:
    from app.engine.genai_worker import WorkerConfig, pace_tokens, step_budget
    from app.settings import Settings

    paced = WorkerConfig.from_settings(Settings(), "/m", "CPU")
    assert (pace_tokens(paced, None), step_budget(paced, None)) == (32, 256)
    # The window cache drops blocks a piece computed: no pacer, and a budget of one token
    # per sequence so that a long prompt cannot freeze the streams.
    assert (pace_tokens(paced, 2047), step_budget(paced, 2047)) == (0, 16)
    uncached = WorkerConfig.from_settings(Settings(enable_prefix_caching=False), "/m", "CPU")
    assert step_budget(uncached, None) == 16
    # Pacing turned off: the budget is the user's, as given.
    unpaced = WorkerConfig.from_settings(Settings(prefill_pace_tokens=0), "/m", "CPU")
    assert (pace_tokens(unpaced, None), step_budget(unpaced, None)) == (0, 256)
    # A pace is whole KV blocks (32 tokens on CPU).
    odd = WorkerConfig.from_settings(Settings(prefill_pace_tokens=70), "/m", "CPU")
    assert pace_tokens(odd, None) == 64


def speculating(
    accepted: Callable[[Handle], int], busy_at: int = 2, step_budget: int = 64
) -> tuple[Pipe, SpeculativePipe, Out, _Worker]:
    from app.engine.genai_worker import Speculation

    plain, speculative, out = Pipe(lambda handle: None), SpeculativePipe(accepted), Out()
    speculation = Speculation("prompt-lookup", 4, 3, busy_at)
    worker = _Worker(plain, out, speculation, step_budget, speculative=speculative)  # type: ignore[arg-type]
    return plain, speculative, out, worker


def moved(out: Out) -> int:
    return sum(m.stats.moved for m in out.sent if isinstance(m, StepOutput))


def running(pipe: Pipe) -> list[Handle]:
    return [h for h in pipe.handles if h.status == "RUNNING"]


def test_a_busy_batch_whose_candidates_fail_moves_to_the_plain_pipeline() -> None:
    plain, speculative, out, worker = speculating(lambda handle: 0)
    for rid in range(1, 5):
        add(worker, rid, [rid, 7], 40)
    assert len(running(speculative)) == 4 and not plain.handles  # all start speculating
    drive(worker, 12, settle=False)
    # Busy (4 > 2) and nothing accepted once judged: all four now decode plainly, each
    # re-added as its prompt plus what it had generated, and the speculative pipeline has
    # stepped once more to free them.
    assert not running(speculative) and len(running(plain)) == 4 and moved(out) == 4
    assert all(len(h.prompt) > 2 for h in plain.handles)
    add(worker, 5, [5, 7], 40)  # one arriving now joins them
    assert len(running(plain)) == 5
    drive(worker)
    assert outcome(out) == {rid: (alone([rid, 7], 40), "length") for rid in range(1, 6)}
    assert not running(speculative)


def test_a_busy_batch_whose_candidates_are_accepted_keeps_speculating() -> None:
    plain, speculative, out, worker = speculating(lambda handle: 4)
    for rid in range(1, 5):
        add(worker, rid, [rid, 7], 80)
    drive(worker)
    assert not plain.handles and moved(out) == 0
    assert outcome(out) == {rid: (alone([rid, 7], 80), "length") for rid in range(1, 5)}
    # The fourth arrived with three running (busy_at 2): one candidate a step, so two
    # tokens a step, and the batch took half the steps plain decoding would.
    assert [h.config.num_assistant_tokens for h in speculative.handles] == [4, 4, 4, 1]
    assert speculative.steps <= 80 // 2 + 1


def test_at_low_load_a_request_whose_candidates_fail_is_left_alone() -> None:
    """It costs a few percent; re-added, it would be re-read in a multi-token pass."""
    plain, speculative, out, worker = speculating(lambda handle: 0)
    add(worker, 1, [3, 7], 30)
    add(worker, 2, [4, 7], 30)
    drive(worker)
    drafts = [h.config.num_assistant_tokens for h in speculative.handles]
    assert drafts == [4, 4] and not plain.handles and moved(out) == 0
    assert outcome(out) == {rid: (alone([rid + 2, 7], 30), "length") for rid in (1, 2)}


def test_a_long_context_finishes_where_it_is_drafting_one() -> None:
    plain, speculative, out, worker = speculating(lambda handle: 0, step_budget=8)
    long = list(range(1, 20))  # more than two steps' budget: re-reading it would stall
    add(worker, 1, long, 30)
    for rid in range(2, 5):
        add(worker, rid, [rid], 30)
    drive(worker)
    assert [
        h.config.num_assistant_tokens for h in speculative.handles if h.prompt[:19] == long
    ] == [4, 1]
    assert len(plain.handles) == 3 and moved(out) == 3
    assert outcome(out)[1] == (alone(long, 30), "length")


def test_requests_that_could_not_move_never_speculate() -> None:
    plain, speculative, out, worker = speculating(lambda handle: 4)
    add(worker, 1, [2, 7], 10, GRAMMAR)  # a grammar's state is not carried over
    penalised = SamplingParams(max_new_tokens=10, temperature=0, presence_penalty=0.5)
    worker.handle_message(AddRequest(2, [3, 7], penalised))
    assert len(plain.handles) == 2 and not speculative.handles
    add(worker, 3, [4, 7], 10)  # the plain pipeline is running: no split batch
    assert len(plain.handles) == 3
    drive(worker)
    assert not speculative.handles
    assert outcome(out)[3] == (alone([4, 7], 10), "length")


def test_a_fault_in_one_pipeline_re_adds_only_its_requests() -> None:
    from app.engine.genai_worker import Speculation

    faults = iter([True])
    long = list(range(1, 20))

    def fault(handle: Handle) -> str | None:
        late = handle.prompt[:19] == long and len(handle.generated) >= 5 and bool(plain.handles)
        return "device lost" if late and next(faults, False) else None

    plain, speculative, out = Pipe(lambda handle: None), SpeculativePipe(lambda h: 0, fault), Out()
    worker = _Worker(plain, out, Speculation("prompt-lookup", 4, 3, 2), 8, speculative=speculative)  # type: ignore[arg-type]
    add(worker, 1, long, 30)
    for rid in range(2, 5):
        add(worker, rid, [rid], 30)
    drive(worker)
    # The three short ones had moved to the plain pipeline, the long one stayed; the
    # fault in the speculative pipeline re-added it alone, there.
    (fault_message,) = [m for m in out.sent if isinstance(m, StepFault)]
    assert fault_message.resumed == [1] and fault_message.failed == []
    assert len(plain.handles) == 3
    assert outcome(out) == {1: (alone(long, 30), "length")} | {
        rid: (alone([rid], 30), "length") for rid in range(2, 5)
    }


@pytest.mark.parametrize(("accepted", "burst_in"), [(4, "speculative"), (0, "plain")])
def test_a_busy_burst_speculates_only_if_the_last_requests_candidates_were_accepted(
    accepted: int, burst_in: str
) -> None:
    plain, speculative, out, worker = speculating(lambda handle: accepted)
    worker.pacer = PrefillPacer(32, PrefixLedger(32, capacity=1000))  # holds a burst
    add(worker, 1, [1, 7], 40)  # alone: it speculates whatever came before
    drive(worker)
    assert len(speculative.handles) == 1 and not plain.handles
    for rid in range(2, 6):  # four at once, more than busy_at
        add(worker, rid, [rid, 7], 12)
    drive(worker)
    burst = speculative.handles[1:] if burst_in == "speculative" else plain.handles
    assert len(burst) == 4 and moved(out) == 0  # all in one pipeline, none moved
    assert outcome(out) == {1: (alone([1, 7], 40), "length")} | {
        rid: (alone([rid, 7], 12), "length") for rid in range(2, 6)
    }


def test_once_free_text_was_seen_a_busy_batch_moves_before_it_is_judged() -> None:
    plain, speculative, out, worker = speculating(lambda handle: 0)
    add(worker, 1, [1, 7], 40)  # alone, judged: none of its candidates were right
    drive(worker)
    for rid in range(2, 6):  # arriving one by one: the fourth makes the batch busy
        add(worker, rid, [rid, 7], 40)
    assert len(running(speculative)) == 3 and len(running(plain)) == 1
    worker.step()  # the three move on the first step, none of them judged yet
    assert not running(speculative) and len(running(plain)) == 4
    drive(worker)
    assert moved(out) == 3
    assert outcome(out) == {rid: (alone([rid, 7], 40), "length") for rid in range(1, 6)}
