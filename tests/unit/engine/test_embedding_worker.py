"""The embedding worker's arithmetic: buckets, pooling over real tokens only, normalization."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.embedding_worker import bucket, normalize, pool

# Two rows of three positions, two features; row 1 has two real tokens and one pad whose
# hidden state (99) must never count.
HIDDEN = np.array([[[1, 2], [3, 4], [5, 9]], [[2, 0], [4, -8], [99, 99]]], dtype=np.float32)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("mean", [[3, 5], [3, -4]]),
        ("max", [[5, 9], [4, 0]]),
        ("cls", [[1, 2], [2, 0]]),
        ("lasttoken", [[5, 9], [4, -8]]),
        ("mean_sqrt_len", [[9 / np.sqrt(3), 15 / np.sqrt(3)], [6 / np.sqrt(2), -8 / np.sqrt(2)]]),
    ],
)
def test_pooling_sees_only_real_tokens(mode: str, expected: list[list[float]]) -> None:
    pooled = pool(HIDDEN, [3, 2], mode)
    assert pooled.dtype == np.float32
    np.testing.assert_allclose(pooled, np.array(expected, dtype=np.float32), rtol=1e-6)


def test_normalize_gives_unit_rows_and_leaves_zero_alone() -> None:
    out = normalize(np.array([[3, 4], [0, 0]], dtype=np.float32))
    assert out.tolist() == [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]


def test_buckets_are_multiples_of_16() -> None:
    assert [bucket(n) for n in (1, 16, 17, 255, 256)] == [16, 16, 32, 256, 256]
