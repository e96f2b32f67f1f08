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

from amortized.errors import ConfigError
from amortized.learners.rules.logistic import with_intercept
from amortized.memory import check_parameters
from amortized.models.predictors import Predictor
from amortized.nn import mlp
from amortized.validation import check_bool, check_positive_int, check_seed, check_widths


class ModelParameters(nn.Module):
    """The flat parameters ``θ`` of a fixed model ``f(x; θ)``, from a learned ``θ_0``."""

    def __init__(self, model: Predictor, seed: int = 0) -> None:
        super().__init__()
        self.model = model
        self.theta0 = nn.Parameter(model.init(torch.Generator().manual_seed(check_seed("seed", seed))))

    @property
    def size(self) -> int:
        return self.model.num_params

    def initial(self, num_tasks: int) -> Tensor:
        return self.theta0.expand(num_tasks, -1)

    def forward(self, value: Tensor, x: Tensor) -> Tensor:
        return self.model(value, x)


class LatentDecoder(nn.Module):
    """``f_γ(x, z)``: an MLP on ``x`` whose hidden layers ``z`` modulates (FiLM: scale and shift).

    Multiplicative conditioning lets a latent select functions that concatenating ``z`` to ``x`` can
    only approximate with a much wider network. With ``linear_skip``, the decoder adds
    ``[x, 1] · A z``, a linear model whose weights are linear in ``z``: the decoder then contains every
    linear model exactly, so the explicit solution class contains the parametric one, and a linear
    task needs no precision from the MLP. The MLP's output layer then starts at zero: the decoder
    starts as a linear model and learns departures from it.

    ``skip_features`` (with ``linear_skip``) widens the skip's inputs to ``[x, 1, tanh(g(x))]``, ``g``
    a learned map to that many features: the skip is then a linear model on learned features whose
    weights are linear in ``z``, so a Newton step on ``z`` is a least-squares fit on those features,
    the explicit counterpart of :class:`~amortized.learners.implicit.InContext`'s ridge readout.
    """

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        output_dim: int,
        hidden: tuple[int, ...],
        linear_skip: bool = False,
        skip_features: int = 0,
    ) -> None:
        super().__init__()
        widths = [input_dim, *hidden]
        keys = input_dim + 1 + skip_features
        count = sum((a + 1) * b for a, b in itertools.pairwise([*widths, output_dim]))
        count += sum((latent_dim + 1) * 2 * width for width in hidden)
        count += (latent_dim + 1) * keys * output_dim if linear_skip else 0
        check_parameters(f"latent_dim={latent_dim}, decoder_hidden={list(hidden)}", count)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.films = nn.ModuleList(nn.Linear(latent_dim, 2 * width) for width in hidden)
        self.out = nn.Linear(widths[-1], output_dim)
        self.features = mlp(input_dim, hidden[0], skip_features) if skip_features else None
        self.skip = None
        if linear_skip:
            self.skip = nn.Linear(latent_dim, keys * output_dim)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        h = x
        for layer, film in zip(self.layers, self.films, strict=True):
            scale, shift = film(z)[:, None, :].chunk(2, dim=-1)
            h = F.gelu(layer(h) * (1 + scale) + shift)
        out = self.out(h)
        if self.skip is not None:
            keys = with_intercept(x)
            if self.features is not None:
                keys = torch.cat([keys, torch.tanh(self.features(x))], -1)
            out = out + keys @ self.skip(z).view(z.shape[0], keys.shape[-1], out.shape[-1])
        return out


class Latent(nn.Module):
    """A latent ``z`` ``[tasks, latent_dim]`` read by a learned :class:`LatentDecoder`, from ``z_0``."""

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        latent_dim: int,
        decoder_hidden: tuple[int, ...],
        linear_skip: bool = False,
        skip_features: int = 0,
    ) -> None:
        super().__init__()
        check_positive_int("latent_dim", latent_dim)
        check_bool("linear_skip", linear_skip)
        check_positive_int("skip_features", skip_features, allow_zero=True)
        if skip_features and not linear_skip:
            raise ConfigError("skip_features widens the decoder's linear skip: set linear_skip = true")
        decoder_hidden = check_widths("decoder_hidden", decoder_hidden, allow_empty=False)
        self.decoder = LatentDecoder(
            input_dim, latent_dim, output_dim, decoder_hidden, linear_skip, skip_features
        )
        self.z0 = nn.Parameter(torch.zeros(latent_dim))

    @property
    def size(self) -> int:
        return self.z0.shape[0]

    def initial(self, num_tasks: int) -> Tensor:
        return self.z0.expand(num_tasks, -1)

    def forward(self, value: Tensor, x: Tensor) -> Tensor:
        return self.decoder(value, x)
