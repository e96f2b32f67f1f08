"""Column statistics of arrays too large to copy, read chunk by chunk (memory-mapped files, 10⁶ rows)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

STATISTICS_CHUNK_BYTES = 8 * 2**20
"""About how many bytes of float64 one chunk of a streaming pass holds."""


def chunk_rows(num_features: int) -> int:
    """Rows per chunk of a streaming pass over ``num_features`` columns."""
    return max(1, STATISTICS_CHUNK_BYTES // (8 * max(1, num_features)))


def streaming_moments(
    X: np.ndarray, transform: Callable[[np.ndarray], np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations of ``transform(X)`` (or ``X``), chunk by chunk in float64.

    Chunks are combined with Chan et al.'s pairwise update, so no ``[rows, features]`` temporary
    beyond one chunk is made. Each column is divided by the largest magnitude read so far (the
    running sums rescaled when it grows), so squares cannot overflow: any finite values give finite
    moments, up to float64's largest. NaN entries (missing values) are left out of their column's
    moments; a column with no value has mean 0 and standard deviation 0.
    """
    count, mean, m2, scale = 0, None, None, None
    step = chunk_rows(X.shape[1])
    for start in range(0, len(X), step):
        chunk = np.asarray(X[start : start + step], dtype=np.float64)
        if transform is not None:
            chunk = transform(chunk)
        present = ~np.isnan(chunk)
        chunk = np.where(present, chunk, 0.0)
        largest = np.abs(chunk).max(0)
        if scale is None:
            scale = np.where(largest > 0, largest, 1.0)
        else:
            grown = np.maximum(scale, largest)
            mean, m2, scale = mean * (scale / grown), m2 * np.square(scale / grown), grown
        chunk = chunk / scale
        size = present.sum(0)
        chunk_mean = chunk.sum(0) / np.maximum(size, 1)
        chunk_m2 = np.square(np.where(present, chunk - chunk_mean, 0.0)).sum(0)
        if mean is None:
            count, mean, m2 = size, chunk_mean, chunk_m2
            continue
        delta = chunk_mean - mean
        total = np.maximum(count + size, 1)
        mean = mean + delta * size / total
        m2 = m2 + chunk_m2 + np.square(delta) * count * size / total
        count = count + size
    return mean * scale, np.sqrt(m2 / np.maximum(count, 1)) * scale


def safe_scale(std: np.ndarray, magnitude: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """``std``, with 1 where a column is constant: its spread within ``dtype``'s rounding of ``magnitude``.

    Dividing by such a spread would blow rounding noise up to unit scale.
    """
    tolerance = 100 * np.finfo(dtype).eps * np.abs(magnitude)
    return np.where(std > tolerance, std, 1.0)


def principal_directions(
    X: np.ndarray, count: int, transform: Callable[[np.ndarray], np.ndarray] | None = None
) -> np.ndarray:
    """The ``count`` leading eigenvectors ``[columns, count]`` of the second-moment matrix of the
    rows of ``X`` (after ``transform``, e.g. standardisation: then of their covariance), read chunk by
    chunk in float64, so memory holds one chunk and a ``columns × columns`` matrix."""
    moments = np.zeros((X.shape[1], X.shape[1]))
    step = chunk_rows(X.shape[1])
    for start in range(0, len(X), step):
        chunk = np.asarray(X[start : start + step], dtype=np.float64)
        if transform is not None:
            chunk = transform(chunk)
        moments += chunk.T @ chunk
    _, vectors = np.linalg.eigh(moments / len(X))
    return vectors[:, ::-1][:, :count]
