"""The scoring process's arithmetic, without a model: log-probabilities, alternatives, the
prompt's scores and the server's own sampling."""

from __future__ import annotations

import math

import numpy as np

from app.engine.base import SamplingParams
from app.engine.scoring_worker import Sampler, log_softmax, score_prompt, top_k


def params(**kwargs: object) -> SamplingParams:
    return SamplingParams(max_new_tokens=4, **kwargs)  # type: ignore[arg-type]


def test_log_softmax_rows_sum_to_one() -> None:
    rows = log_softmax(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=np.float32))
    assert np.allclose(np.exp(rows).sum(axis=1), 1.0)
    assert math.isclose(rows[1, 0], -math.log(3))


def test_top_k_is_most_likely_first_with_ties_in_id_order() -> None:
    row = np.array([-2.0, -0.5, -0.5, -3.0, -0.1])
    assert top_k(row, 3) == ((4, -0.1), (1, -0.5), (2, -0.5))
    assert top_k(row, 0) == ()
    assert len(top_k(row, 10)) == 5


def test_the_first_prompt_token_has_no_score_and_each_next_is_scored_by_the_row_before() -> None:
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]]))
    scored = score_prompt(logits, [0, 1, 2], 2)
    assert scored[0].logprob is None and scored[0].top == ()
    assert math.isclose(scored[1].logprob or 0, math.log(0.25))
    assert math.isclose(scored[2].logprob or 0, math.log(0.8))
    assert [t for t, _ in scored[2].top] == [2, 0]


def test_greedy_follows_the_bias_not_the_model() -> None:
    logits = np.array([0.0, 5.0, 1.0])
    rng = np.random.default_rng(0)
    assert Sampler(params(temperature=0.0), rng, set()).choose(logits) == 1
    biased = params(temperature=0.0, logit_bias=((1, -100.0),))
    assert Sampler(biased, rng, set()).choose(logits) == 2
    forced = params(temperature=0.0, logit_bias=((0, 100.0),))
    assert Sampler(forced, rng, set()).choose(logits) == 0


def test_penalties_apply_to_what_was_seen_and_generated() -> None:
    logits = np.array([2.0, 1.9, 0.0])
    rng = np.random.default_rng(0)
    repeated = Sampler(params(temperature=0.0, repetition_penalty=1.2), rng, {0})
    assert repeated.choose(logits) == 1  # 2.0 / 1.2 < 1.9
    present = Sampler(params(temperature=0.0, presence_penalty=0.5), rng, set())
    assert present.choose(logits) == 0
    present.chose(0)
    assert present.choose(logits) == 1


def test_sampling_is_seeded_and_top_k_one_is_greedy() -> None:
    logits = np.zeros(50)
    draws = [
        [Sampler(params(seed=7), np.random.default_rng(7), set()).choose(logits) for _ in range(3)]
        for _ in range(2)
    ]
    assert draws[0] == draws[1]
    logits[9] = 1.0
    one = Sampler(params(temperature=1.0, top_k=1), np.random.default_rng(1), set())
    assert {one.choose(logits) for _ in range(20)} == {9}
    nucleus = Sampler(params(temperature=1.0, top_p=0.01), np.random.default_rng(1), set())
    assert {nucleus.choose(logits) for _ in range(20)} == {9}
