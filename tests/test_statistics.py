"""Streaming column statistics: exact at any finite scale, one chunk in memory at a time."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amortized import statistics


@settings(max_examples=25, deadline=None)
@given(
    scales=st.lists(st.sampled_from([1e-300, 1e-5, 1.0, 1e154, 1e300]), min_size=2, max_size=2),
    rows=st.integers(1, 40),
    seed=st.integers(0, 3),
)
def test_streaming_moments_are_finite_and_exact_at_any_finite_scale(scales, rows, seed):
    X = np.random.default_rng(seed).normal(size=(rows, 2)) * scales + np.array(scales) * 3
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(statistics, "STATISTICS_CHUNK_BYTES", 8 * 2 * 7)  # chunks of 7 rows
        mean, std = statistics.streaming_moments(X)
    scaled = X / scales
    assert np.allclose(mean / scales, scaled.mean(0), rtol=1e-9, atol=1e-12)
    assert np.allclose(std / scales, scaled.std(0), rtol=1e-9, atol=1e-9)


def test_safe_scale_leaves_constant_columns_unscaled():
    std = np.array([0.5, 1e-20, 0.0, 1e-20])
    magnitude = np.array([1.0, 3.0, 0.0, 1e-19])  # the last is small, not constant
    assert statistics.safe_scale(std, magnitude).tolist() == [0.5, 1.0, 1.0, 1e-20]
    assert statistics.safe_scale(np.array([1e-4]), np.array([1.0]), np.float32).tolist() == [1e-4]
    assert statistics.safe_scale(np.array([1e-6]), np.array([1e3]), np.float32).tolist() == [1.0]


def test_principal_directions_read_in_chunks_match_an_eigendecomposition_of_the_whole(monkeypatch):
    monkeypatch.setattr(statistics, "STATISTICS_CHUNK_BYTES", 8 * 5 * 7)  # 7 rows per chunk
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 5)) @ np.diag([5.0, 3.0, 1.0, 0.5, 0.1])
    mean = X.mean(0)
    directions = statistics.principal_directions(X, 2, lambda rows: rows - mean)
    _, vectors = np.linalg.eigh(np.cov(X.T, bias=True))
    for found, expected in zip(directions.T, vectors[:, ::-1].T, strict=False):
        assert abs(found @ expected) == pytest.approx(1.0, abs=1e-9)  # the same axis, up to sign
    assert directions.shape == (5, 2)
