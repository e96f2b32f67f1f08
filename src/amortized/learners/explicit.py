"""Explicit learners: a latent ``z`` refined from the data, read by a learned decoder ``f_γ(x, z)``.

- :class:`LatentUpdate`: a transformer maps ``z`` and the mini-batch (observations and/or
  ``∂L/∂z`` through the decoder) to an update of ``z`` (neural-process style, iterated).
- :class:`LatentSGD`: ``z`` refined by plain gradient steps (CAVIA / prompt tuning): the
  non-amortized corner of the taxonomy, beside the amortized one.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from amortized.learners._shared import (
    _GradientStep,
    _TransformerUpdate,
    seeded,
)
from amortized.learners.base import plain_arguments
from amortized.learners.state import State
from amortized.validation import check_positive_int


class LatentDecoder(nn.Module):
    """``f_γ(x, z)``: an MLP on ``x`` whose hidden layers ``z`` modulates (FiLM: scale and shift).

    Multiplicative conditioning lets a latent select functions (e.g. the weights of a linear map)
    that concatenating ``z`` to ``x`` can only approximate with a much wider network.
    """

    def __init__(self, input_dim: int, latent_dim: int, output_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        widths = [input_dim, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.films = nn.ModuleList(nn.Linear(latent_dim, 2 * width) for width in hidden)
        self.out = nn.Linear(widths[-1], output_dim)

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        h = x
        for layer, film in zip(self.layers, self.films, strict=True):
            scale, shift = film(z)[:, None, :].chunk(2, dim=-1)
            h = F.gelu(layer(h) * (1 + scale) + shift)
        return self.out(h)


class _LatentLearner:
    """Mixin: the latent ``z_0`` and decoder shared by the explicit learners."""

    def _build_latent(self, latent_dim: int, decoder_hidden: tuple[int, ...]) -> None:
        check_positive_int("latent_dim", latent_dim)
        self.decoder = LatentDecoder(self.input_dim, latent_dim, self.output_dim, decoder_hidden)
        self.z0 = nn.Parameter(torch.zeros(latent_dim))

    def _forward(self, value: Tensor, x: Tensor) -> Tensor:
        return self.decoder(value, x)


class LatentUpdate(_LatentLearner, _TransformerUpdate):
    """A transformer refines ``z`` from the mini-batch; the decoder ``f_γ(x, z)`` predicts."""

    regime = "explicit"

    def __init__(
        self,
        input_dim: int,
        output_dim: int = 1,
        task: str = "regression",
        latent_dim: int = 32,
        decoder_hidden: tuple[int, ...] = (64, 64),
        inputs: tuple[str, ...] | list[str] = ("observations", "gradients"),
        width: int = 64,
        depth: int = 2,
        heads: int = 4,
        chunk_size: int = 32,
        memory_tokens: int = 0,
        refinements: int = 1,
        scale_by_share: bool = False,
        momentum: bool = False,
        taper_refinements: bool = False,
        seed: int = 0,
    ) -> None:
        config = plain_arguments(locals())
        super().__init__(input_dim, output_dim, task, None)
        decoder_hidden = tuple(decoder_hidden)
        with seeded(seed):
            self._build_latent(latent_dim, decoder_hidden)
            self._build(
                latent_dim,
                inputs,
                width,
                depth,
                heads,
                chunk_size,
                memory_tokens,
                refinements,
                scale_by_share,
                momentum,
                taper_refinements,
            )
        self.config = config

    def init_state(self, num_tasks: int, query_x: Tensor | None = None) -> State:
        return self._initial(self.z0.expand(num_tasks, -1))


class LatentSGD(_LatentLearner, _GradientStep):
    """CAVIA: ``z ← z - α ∂L/∂z`` through the learned decoder, from a learned ``z_0``."""

    regime = "explicit"

    def __init__(
        self,
        input_dim: int,
        output_dim: int = 1,
        task: str = "regression",
        latent_dim: int = 32,
        decoder_hidden: tuple[int, ...] = (64, 64),
        inner_lr: float = 0.1,
        learn_lr: bool = False,
        first_order: bool = False,
        seed: int = 0,
    ) -> None:
        config = plain_arguments(locals())
        super().__init__(input_dim, output_dim, task, None)
        decoder_hidden = tuple(decoder_hidden)
        with seeded(seed):
            self._build_latent(latent_dim, decoder_hidden)
        self._init_step_size(latent_dim, inner_lr, learn_lr, first_order)
        self.config = config

    def init_state(self, num_tasks: int, query_x: Tensor | None = None) -> State:
        return State.initial(self.z0.expand(num_tasks, -1))
