"""The exact scoring engine's process: the model's exported stateful graph run through
OpenVINO directly, which returns the logits of every position it is given, with sampling
done here in numpy. It serves what openvino-genai's continuous batching cannot (that
reports only the chosen token's log-probability and has no logits hook): the top
alternatives of each token, `logit_bias`, and the prompt's own log-probabilities.

Every sequence has an infer request of its own, so its KV cache is its own state and
sequences never pad against each other: a prompt's logits are the same however many
requests run beside it. Sequences take turns, one infer each per round, so a long prompt
delays the others by one prefill and no more. The compiled model is the one optimum-intel's
OVModelForCausalLM compiles from the same files with the same properties, so the
log-probabilities here equal a log-softmax over its logits.

Reported log-probabilities are the model's own (a log-softmax of the raw logits, as vLLM
reports them by default): logit_bias, penalties and temperature shape what is sampled,
not what is reported."""

from __future__ import annotations

import logging
import queue
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from app.engine.base import EngineFinish, PromptToken, SamplingParams
from app.engine.messages import (
    AddRequest,
    CancelRequest,
    EngineFailed,
    EngineReady,
    RequestFailed,
    RequestTokens,
    StopEngine,
    ToEngine,
)

logger = logging.getLogger("app.engine.scoring_worker")

# Prompt rows turned into log-probabilities at a time: a row is the vocabulary in float64
# (0.4 MB for a 49k vocabulary), so a 4k-token prompt never needs 1.6 GB at once.
ROWS_PER_CHUNK = 256


@dataclass(frozen=True)
class ScoringWorkerConfig:
    model_path: str
    device: str
    properties: dict[str, str]
    log_level: str = "INFO"
    log_format: str = "text"


def log_softmax(logits: Any) -> Any:
    """Rows of logits as log-probabilities, in float64 so that the reported values do not
    depend on the order of float32 sums."""
    import numpy as np

    rows = np.asarray(logits, dtype=np.float64)
    top = rows.max(axis=-1, keepdims=True)
    shifted = rows - top
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def top_k(row: Any, k: int) -> tuple[tuple[int, float], ...]:
    """The k most likely tokens of one row of log-probabilities, most likely first; equal
    values in token-id order, so the answer is deterministic."""
    import numpy as np

    if k <= 0:
        return ()
    k = min(k, row.shape[-1])
    candidates = np.argpartition(-row, k - 1)[:k]
    order = sorted(candidates.tolist(), key=lambda t: (-row[t], t))
    return tuple((int(t), float(row[t])) for t in order)


def score_prompt(logits: Any, ids: list[int], alternatives: int) -> tuple[PromptToken, ...]:
    """Each prompt token's log-probability given those before it (the first has none) and
    its position's `alternatives` most likely tokens."""
    out = [PromptToken(ids[0], None)]
    for start in range(0, len(ids) - 1, ROWS_PER_CHUNK):
        rows = log_softmax(logits[start : start + ROWS_PER_CHUNK])
        for offset, row in enumerate(rows):
            if start + offset + 1 >= len(ids):
                break
            token = ids[start + offset + 1]
            out.append(PromptToken(token, float(row[token]), top_k(row, alternatives)))
    return tuple(out)


@dataclass
class Sampler:
    """The server's own sampling, in the order genai applies it: penalties, then the
    bias, then greedy choice or temperature, top-k, top-p and min-p, then a draw from the
    request's seeded generator."""

    params: SamplingParams
    rng: Any
    seen: set[int]  # prompt and generated tokens: what the repetition penalty covers
    counts: dict[int, int] = field(default_factory=dict)  # generated tokens

    def choose(self, logits: Any) -> int:
        import numpy as np

        p = self.params
        x = np.array(logits, dtype=np.float64)
        if p.repetition_penalty != 1.0 and self.seen:
            ids = np.fromiter(self.seen, dtype=np.int64)
            picked = x[ids]
            x[ids] = np.where(
                picked > 0, picked / p.repetition_penalty, picked * p.repetition_penalty
            )
        if (p.presence_penalty or p.frequency_penalty) and self.counts:
            ids = np.fromiter(self.counts, dtype=np.int64)
            times = np.fromiter(self.counts.values(), dtype=np.float64)
            x[ids] -= p.presence_penalty + p.frequency_penalty * times
        for token, bias in p.logit_bias:
            x[token] += bias
        if p.greedy:
            return int(np.argmax(x))
        x = x / p.temperature
        if p.top_k and p.top_k < x.shape[0]:
            cut = np.partition(x, -p.top_k)[-p.top_k]
            x[x < cut] = -np.inf
        probs = np.exp(x - x.max())
        probs /= probs.sum()
        if p.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            cumulative = np.cumsum(probs[order])
            # Keep the smallest prefix whose mass reaches top_p (the first token always).
            drop = order[np.searchsorted(cumulative, p.top_p) + 1 :]
            probs[drop] = 0.0
        if p.min_p > 0.0:
            probs[probs < p.min_p * probs.max()] = 0.0
        probs /= probs.sum()
        return int(self.rng.choice(probs.shape[0], p=probs))

    def chose(self, token: int) -> None:
        self.seen.add(token)
        self.counts[token] = self.counts.get(token, 0) + 1


class Sequence:
    """One request: its own infer request (so its own KV state) and its sampler."""

    def __init__(self, compiled: Any, rid: int, prompt_ids: list[int], params: SamplingParams):
        import numpy as np

        self.rid = rid
        self.params = params
        self.ids = list(prompt_ids)
        self.request = compiled.create_infer_request()
        self.request.reset_state()
        self.sampler = Sampler(params, np.random.default_rng(params.seed), set(prompt_ids))
        self.produced = 0
        self.fed = 0  # tokens the KV state holds

    def _infer(self, new: list[int]) -> Any:
        import numpy as np

        start = self.fed
        self.fed += len(new)
        result = self.request.infer(
            {
                "input_ids": np.array([new], dtype=np.int64),
                "attention_mask": np.ones((1, self.fed), dtype=np.int64),
                "position_ids": np.arange(start, self.fed, dtype=np.int64)[None, :],
                "beam_idx": np.zeros(1, dtype=np.int32),
            }
        )
        return result["logits"][0]

    def step(self) -> RequestTokens:
        """One infer: the whole prompt first, then the last chosen token; out comes the
        next token (or, with a budget of 0, only the prompt's scores)."""
        p = self.params
        first = self.fed == 0
        if first and p.max_new_tokens == 0 and p.prompt_logprobs is None:
            return RequestTokens(self.rid, [], [], "length")
        logits = self._infer(self.ids[self.fed :])
        prompt = None
        if first and p.prompt_logprobs is not None:
            prompt = score_prompt(logits, self.ids, p.prompt_logprobs)
        if p.max_new_tokens == 0:
            return RequestTokens(self.rid, [], [], "length", prompt=prompt)
        row = logits[-1]
        token = self.sampler.choose(row)
        self.sampler.chose(token)
        self.ids.append(token)
        self.produced += 1
        reported = log_softmax(row)
        finish: EngineFinish | None = None
        if not p.ignore_eos and token in p.stop_token_ids:
            finish = "stop"
        elif self.produced >= p.max_new_tokens:
            finish = "length"
        top = (top_k(reported, p.top_logprobs),) if p.top_logprobs else ()
        return RequestTokens(
            self.rid, [token], [float(reported[token])], finish, top=top, prompt=prompt
        )


def _drain(inbox: Queue[ToEngine], block: bool) -> list[ToEngine]:
    messages: list[ToEngine] = []
    try:
        messages.append(inbox.get(timeout=None) if block else inbox.get_nowait())
        while True:
            messages.append(inbox.get_nowait())
    except queue.Empty:
        pass
    return messages


def compile_model(cfg: ScoringWorkerConfig) -> Any:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(Path(cfg.model_path) / "openvino_model.xml")
    return core.compile_model(model, cfg.device, cfg.properties)


def run(cfg: ScoringWorkerConfig, inbox: Queue[ToEngine], out: Connection) -> None:
    from app.logs import configure

    configure(cfg.log_level, cfg.log_format)
    try:
        compiled = compile_model(cfg)
    except Exception as exc:  # the server reports why it could not load
        out.send([EngineFailed(f"{type(exc).__name__}: {exc}")])
        return
    out.send([EngineReady(cfg.device)])
    logger.info("Scoring engine ready: %s on %s", cfg.model_path, cfg.device)
    active: dict[int, Sequence] = {}
    while True:
        for message in _drain(inbox, block=not active):
            if isinstance(message, StopEngine):
                return
            if isinstance(message, CancelRequest):
                active.pop(message.rid, None)
            elif isinstance(message, AddRequest):
                try:
                    active[message.rid] = Sequence(
                        compiled, message.rid, message.prompt_ids, message.params
                    )
                except Exception as exc:
                    out.send([RequestFailed(message.rid, f"{type(exc).__name__}: {exc}")])
        batch: list[RequestTokens | RequestFailed] = []
        for sequence in list(active.values()):
            try:
                tokens = sequence.step()
            except Exception as exc:
                # One sequence's failure is its own: its state is its own infer request.
                logger.exception("Scoring request %d failed", sequence.rid)
                batch.append(RequestFailed(sequence.rid, f"{type(exc).__name__}: {exc}"))
                del active[sequence.rid]
                continue
            batch.append(tokens)
            if tokens.finish is not None:
                del active[sequence.rid]
        if batch:
            out.send(batch)
