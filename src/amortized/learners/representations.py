"""What a learned learner adapts per task, as a flat vector ``v`` read by ``f(x; v)``.

- :class:`ModelParameters` (parametric regime): ``θ`` of a fixed model (linear, MLP).
- :class:`Latent` (explicit regime): a latent ``z`` read by a learned decoder ``f_γ(x, z)``.

Each starts from a learned initial value; an update rule (:mod:`amortized.learners.rules`) refines it.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from amortized.models.predictors import Predictor
from amortized.validation import check_positive_int


class ModelParameters(nn.Module):
    """The flat parameters ``θ`` of a fixed model ``f(x; θ)``, from a learned ``θ_0``."""

    def __init__(self, model: Predictor, seed: int = 0) -> None:
        super().__init__()
        self.model = model
        self.theta0 = nn.Parameter(model.init(torch.Generator().manual_seed(seed)))

    @property
    def size(self) -> int:
        return self.model.num_params

    def initial(self, num_tasks: int) -> Tensor:
        return self.theta0.expand(num_tasks, -1)

    def forward(self, value: Tensor, x: Tensor) -> Tensor:
        return self.model(value, x)


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


class Latent(nn.Module):
    """A latent ``z`` ``[tasks, latent_dim]`` read by a learned :class:`LatentDecoder`, from ``z_0``."""

    def __init__(
        self, input_dim: int, output_dim: int, latent_dim: int, decoder_hidden: tuple[int, ...]
    ) -> None:
        super().__init__()
        check_positive_int("latent_dim", latent_dim)
        self.decoder = LatentDecoder(input_dim, latent_dim, output_dim, tuple(decoder_hidden))
        self.z0 = nn.Parameter(torch.zeros(latent_dim))

    @property
    def size(self) -> int:
        return self.z0.shape[0]

    def initial(self, num_tasks: int) -> Tensor:
        return self.z0.expand(num_tasks, -1)

    def forward(self, value: Tensor, x: Tensor) -> Tensor:
        return self.decoder(value, x)
