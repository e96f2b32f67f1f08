"""Tokenizers shared by the learners: observations, a state vector in chunks, progress."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from amortized.memory import check_parameters
from amortized.nn.mlp import mlp


class ObservationTokens(nn.Module):
    """One token per observed point from ``[x, y]`` and, optionally, the current prediction there.

    Class labels enter one-hot; predicted logits enter as probabilities, so their scale is bounded.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        num_classes: int | None,
        width: int,
        with_prediction: bool,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.with_prediction = with_prediction
        self.embed = mlp(input_dim + output_dim * (2 if with_prediction else 1), width)

    def targets(self, y: Tensor) -> Tensor:
        """Targets as features: one-hot labels, or the regression values as they are."""
        return F.one_hot(y, self.num_classes).float() if self.num_classes else y

    def forward(self, x: Tensor, y: Tensor, prediction: Tensor | None = None) -> Tensor:
        parts = [x, self.targets(y).to(x.dtype)]
        if self.with_prediction:
            parts.append(prediction.softmax(-1) if self.num_classes else prediction)
        return self.embed(torch.cat(parts, -1))


class ChunkTokens(nn.Module):
    """A flat per-task vector (``θ`` or ``z``) as tokens of ``chunk_size`` entries, and back.

    Each token embeds its chunk of every feature vector given (e.g. the value and its normalised
    gradient) plus a learned embedding of the chunk's position in the vector. The head maps tokens
    back to an update of the same size as ``direction * exp(log_scale)``: tokens pass through
    LayerNorm, so magnitudes that span orders of magnitude (early versus late steps) are easier to
    produce as a log-scale than as a raw value. The direction starts at zero, so an untrained update
    leaves the state where it is.
    """

    def __init__(self, size: int, chunk_size: int, num_features: int, width: int) -> None:
        super().__init__()
        self.size = size
        self.chunk_size = min(chunk_size, size)
        self.num_chunks = -(-size // self.chunk_size)
        self.padding = self.num_chunks * self.chunk_size - size
        inputs = num_features * self.chunk_size
        count = (inputs + 1) * width + self.num_chunks * width + 2 * (width + 1) * self.chunk_size
        check_parameters(f"width={width}, chunk_size={chunk_size}", count)
        self.embed = nn.Linear(num_features * self.chunk_size, width)
        self.position = nn.Parameter(torch.randn(self.num_chunks, width) * 0.02)
        self.direction = nn.Linear(width, self.chunk_size)
        self.log_scale = nn.Linear(width, self.chunk_size)
        for layer in (self.direction, self.log_scale):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _chunks(self, vector: Tensor) -> Tensor:
        vector = F.pad(vector, (0, self.padding))
        return vector.view(vector.shape[0], self.num_chunks, self.chunk_size)

    def forward(self, features: list[Tensor]) -> Tensor:
        """Tokens ``[tasks, chunks, width]`` from feature vectors, each ``[tasks, size]``."""
        chunks = torch.cat([self._chunks(f) for f in features], -1)
        return self.embed(chunks) + self.position

    def decode(self, tokens: Tensor) -> Tensor:
        """An update ``[tasks, size]`` from the chunk tokens."""
        log_scale = self.log_scale(tokens).clamp(max=10.0)
        update = self.direction(tokens) * torch.exp(log_scale)
        return update.flatten(1)[:, : self.size]


class ProgressEmbedding(nn.Module):
    """Embeds :meth:`amortized.learners.state.State.progress_features` (and any extra per-task
    scalars) into the width."""

    def __init__(self, num_features: int, width: int) -> None:
        super().__init__()
        self.embed = mlp(num_features, width)

    def forward(self, features: Tensor) -> Tensor:
        return self.embed(features)[:, None, :]
