"""Implicit learners of generative tasks, and the references they are compared with.

:class:`FlowMatching` generates samples of a task's distribution: a transformer velocity field
``v(x_t, t | memory)`` transports standard normal noise to samples, conditioned on memory tokens
that summarise the task's observations. Each step reads a mini-batch and refines the memory; one
step over all the data is one-shot amortization. It is trained by conditional flow matching.

References, with nothing learned (regime ``"baseline"``): :class:`GaussianMixtureFit` (a per-task
scikit-learn mixture fitted to every point seen) and :class:`EmpiricalSamples` (the task's own
samples: the floor of the sample metrics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from amortized.errors import ConfigError, ShapeError
from amortized.learners.base import Learner, plain_arguments, seeded
from amortized.learners.running import RunningAttention, RunningMoments
from amortized.learners.state import State
from amortized.memory import check_parameters
from amortized.nn import ProgressEmbedding, Transformer, mlp
from amortized.validation import check_positive_int, check_seed

TIME_FREQUENCIES = (1.0, 2.0, 4.0, 8.0)
"""Frequencies (in multiples of π) of the Fourier features of the flow time ``t``."""


def _flow_times(noise: Tensor) -> Tensor:
    """Flow times ``[tasks, points, 1]``, stratified over ``(0, 1)`` with an offset drawn from ``noise``.

    Point ``i`` of ``Q`` gets ``t = (i + u) / Q``, with ``u = Φ(Σ noise / sqrt(Q))`` uniform per task:
    the training loss needs no random state of its own (a resumed run equals an uninterrupted one)
    and the offset depends on any single point's noise only through a ``1/sqrt(Q)`` share.
    """
    count = noise.shape[1]
    offset = torch.special.ndtr(noise[..., 0].sum(1, keepdim=True) / math.sqrt(count))
    steps = torch.arange(count, dtype=noise.dtype, device=noise.device)
    return ((steps + offset) / count)[..., None]


@dataclass
class FlowEvidence:
    """What :class:`FlowMatching` keeps of the samples read besides its memory tokens."""

    moments: RunningMoments
    """Running mean and mean square of the samples (the data units generated samples return to)."""
    pool: RunningAttention
    """Learned queries' attention over every sample read so far, exact over any batch split."""
    memory_pool: RunningAttention
    """Attention over every sample read by queries computed from the memory when each batch was read."""


class FlowMatching(Learner):
    """Generates samples of a task from its observations by conditional flow matching.

    The state is ``memory_tokens`` tokens summarising the samples seen, plus evidence kept as running
    statistics: the samples' mean and scale, and an attention pool, learned queries' softmax attention
    over every sample read so far (:class:`~amortized.learners.running.RunningAttention`). Nothing read
    is forgotten: the pool after any batch split equals one pass over all the samples, exactly once
    the running moments that standardise each batch have settled (one step on all points is one-shot
    amortization). A second pool asks what the memory wants to know: its queries are a learned map of
    the current memory, so each batch is weighed by what the state held when it was read. A step
    standardises the mini-batch's samples, adds them to both pools, and computes the new memory with a
    transformer from learned latents plus both pools' readouts, an embedding of the state's progress,
    and the current memory: a learned update of the task state from the state and the mini-batch.
    ``predict(state, noise)`` integrates the velocity field ``v(x_t, t | memory)``
    (``integration_steps`` midpoint steps from ``t = 0`` to 1) from ``noise`` ``[tasks, Q, D]`` and
    returns the generated samples in data units; it works at any noise, so it is also the learner's
    sampler (:meth:`sample`). The velocity head starts at zero: untrained, the learner returns its
    noise, rescaled to the samples' mean and scale.

    Training regresses ``v`` onto ``x_1 - x_0`` at ``x_t = (1 - t) x_0 + t x_1`` for the query pairs
    (noise ``x_0``, held-out sample ``x_1``, standardised), through :meth:`query_loss`. The pools'
    queries, keys and values learn best with gradients through every batch's share of the pools
    (``objective = "final"`` or ``"full"``; the greedy objective reaches only the last batch's
    share). ``"final"`` scores the last step alone, so an iteration costs a fraction of ``"full"``'s.
    """

    regime = "implicit"

    def __init__(
        self,
        input_dim: int = 2,
        width: int = 64,
        depth: int = 2,
        heads: int = 4,
        memory_tokens: int = 16,
        integration_steps: int = 8,
        seed: int = 0,
    ) -> None:
        config = plain_arguments(locals())
        super().__init__(input_dim, input_dim, "generative")
        self.memory_tokens = check_positive_int("memory_tokens", memory_tokens)
        self.integration_steps = check_positive_int("integration_steps", integration_steps)
        width = check_positive_int("width", width)
        check_parameters(f"memory_tokens={memory_tokens}, width={width}", memory_tokens * width)
        self.heads = check_positive_int("heads", heads)
        with seeded(seed):
            self.samples = mlp(input_dim, width)
            self.latents = nn.Parameter(torch.randn(memory_tokens, width))
            self.pool_queries = nn.Parameter(torch.randn(memory_tokens, width) / math.sqrt(width))
            self.pool_norm = nn.LayerNorm(width)
            self.pool_keys_values = nn.Linear(width, 2 * width)
            self.pool_out = nn.Linear(width, width)
            self.progress = ProgressEmbedding(5, width)
            self.reader = Transformer(width, depth, heads)
            self.queries = mlp(input_dim + 1 + 2 * len(TIME_FREQUENCIES), width)
            self.velocity = Transformer(width, depth, heads)
            self.head = nn.Linear(width, input_dim)
            self.memory_queries = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width))
            self.memory_pool_out = nn.Linear(width, width)
        for layer in (self.head, self.memory_pool_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.register_buffer("frequencies", torch.tensor(TIME_FREQUENCIES) * math.pi, persistent=False)
        self.config = config

    def init_state(self, num_tasks: int, query_x: Tensor | None = None) -> State:
        tokens = self.latents.expand(num_tasks, -1, -1)
        zeros = tokens.new_zeros(num_tasks, self.input_dim)
        pooled = tokens.new_zeros(num_tasks, self.heads, self.memory_tokens, tokens.shape[-1] // self.heads)
        empty = RunningAttention.empty(pooled)
        evidence = FlowEvidence(RunningMoments(zeros, torch.ones_like(zeros)), empty, empty)
        return State.initial(tokens, evidence)

    def _step(self, state: State, x: Tensor, y: Tensor) -> State:
        """Refine the memory from the samples ``y`` of a mini-batch (``x``, their noise, is not read)."""
        batch = y.shape[1]
        share = state.share(batch)
        moments = state.carry.moments.update(y, share)
        tokens = self.samples((y - moments.mean[:, None]) / moments.scale[:, None])
        tasks, _, width = tokens.shape
        keys_values = self.pool_keys_values(self.pool_norm(tokens)).view(tasks, batch, 2, self.heads, -1)
        keys, values = keys_values.permute(2, 0, 3, 1, 4)
        queries = self.pool_queries.view(self.memory_tokens, self.heads, -1).transpose(0, 1)
        pool = state.carry.pool.update(queries @ keys.transpose(-1, -2), values, share)
        asked = (
            self.memory_queries(state.value).view(tasks, self.memory_tokens, self.heads, -1).transpose(1, 2)
        )
        scale = (width // self.heads) ** -0.5
        memory_pool = state.carry.memory_pool.update(scale * asked @ keys.transpose(-1, -2), values, share)
        latents = self.latents + self.pool_out(self._heads_joined(pool))
        latents = latents + self.memory_pool_out(self._heads_joined(memory_pool))
        latents = latents + self.progress(state.progress_features(batch))
        shared = torch.cat([latents, state.value], 1)
        memory = self.reader(shared, num_shared=shared.shape[1])[:, : self.memory_tokens]
        return state.advance(memory, batch, FlowEvidence(moments, pool, memory_pool))

    def _heads_joined(self, pool: RunningAttention) -> Tensor:
        """A pool's readout ``[tasks, memory_tokens, width]``, its heads side by side."""
        pooled = pool.read()
        return pooled.transpose(1, 2).reshape(pooled.shape[0], self.memory_tokens, -1)

    def _velocity(self, state: State, points: Tensor, time: Tensor) -> Tensor:
        """``v(x_t, t | memory)`` for standardised points ``[tasks, Q, D]`` at times ``[tasks, Q, 1]``."""
        angles = time * self.frequencies
        queries = self.queries(torch.cat([points, time, angles.sin(), angles.cos()], -1))
        out = self.velocity(torch.cat([state.value, queries], 1), num_shared=self.memory_tokens)
        return self.head(out[:, self.memory_tokens :])

    def _predict(self, state: State, x: Tensor | None) -> Tensor:
        """Generated samples ``[tasks, Q, D]``: the noise ``x`` (checked by ``predict``) transported along
        the flow."""
        if x is None:
            raise ConfigError(
                "FlowMatching.predict transports noise to samples: pass x, standard normal noise "
                "[tasks, samples, dim] (or call sample(state, num_samples))"
            )
        points = x
        size = 1.0 / self.integration_steps
        for index in range(self.integration_steps):
            start = torch.full_like(points[..., :1], index * size)
            half = points + 0.5 * size * self._velocity(state, points, start)
            points = points + size * self._velocity(state, half, start + 0.5 * size)
        moments = state.carry.moments
        return moments.mean[:, None] + moments.scale[:, None] * points

    def sample(self, state: State, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``num_samples`` generated samples per task, from fresh noise."""
        check_positive_int("num_samples", num_samples)
        shape = (state.num_tasks, num_samples, self.input_dim)
        noise = torch.randn(shape, generator=generator).to(self.latents.device)
        return self.predict(state, noise)

    def query_loss(self, state: State, x: Tensor, y: Tensor) -> Tensor:
        """Conditional flow-matching loss per task for noise ``x`` and held-out samples ``y``."""
        moments = state.carry.moments
        target_points = (y - moments.mean[:, None]) / moments.scale[:, None]
        time = _flow_times(x)
        between = (1 - time) * x + time * target_points
        error = self._velocity(state, between, time) - (target_points - x)
        return error.square().sum(-1).mean(-1)


# --------------------------------------------------------------------------------------------------
# References (nothing learned)


class _Collector(Learner):
    """A reference that keeps the samples it reads (up to ``capacity`` per task) as its state."""

    regime = "baseline"

    def __init__(self, input_dim: int, capacity: int) -> None:
        super().__init__(input_dim, input_dim, "generative")
        self.capacity = check_positive_int("capacity", capacity)

    def init_state(self, num_tasks: int, query_x: Tensor | None = None) -> State:
        return State.initial(torch.zeros(num_tasks, 0, self.input_dim))

    def _step(self, state: State, x: Tensor, y: Tensor) -> State:
        kept = torch.cat([state.value, y], 1)[:, : self.capacity]
        return state.advance(kept, y.shape[1])

    def _seen(self, state: State, x: Tensor | None) -> tuple[Tensor, Tensor]:
        """The samples kept and the noise ``x`` (checked by ``predict``), once there are both."""
        if x is None:
            raise ShapeError(
                f"{type(self).__name__}.predict needs noise x of shape [{state.num_tasks}, samples, "
                f"{self.input_dim}]"
            )
        if state.value.shape[1] == 0:
            raise ConfigError(f"{type(self).__name__} has seen no samples: take a step first")
        return state.value, x


class EmpiricalSamples(_Collector):
    """The task's own samples: ``predict`` returns the first samples read (cycling if too few).

    As a generator it is the true distribution, so its scores are the floor a generator can reach
    with as many samples (energy distance ≈ 0, ``nll`` the task's entropy).
    """

    def __init__(self, input_dim: int = 2, capacity: int = 4096) -> None:
        config = plain_arguments(locals())
        super().__init__(input_dim, capacity)
        self.config = config

    def _predict(self, state: State, x: Tensor | None) -> Tensor:
        seen, noise = self._seen(state, x)
        index = torch.arange(noise.shape[1], device=seen.device) % seen.shape[1]
        return seen[:, index]


class GaussianMixtureFit(_Collector):
    """A scikit-learn ``GaussianMixture`` (full covariances) fitted per task to every sample read.

    The number of components is chosen from 1 to ``max_components`` by BIC. ``predict`` maps the
    noise ``x`` through a component drawn per point (``seed``), ``mean + chol(cov) x``.
    """

    def __init__(
        self, input_dim: int = 2, max_components: int = 5, capacity: int = 4096, seed: int = 0
    ) -> None:
        config = plain_arguments(locals())
        super().__init__(input_dim, capacity)
        self.max_components = check_positive_int("max_components", max_components)
        self.seed = check_seed("seed", seed, bits=32)  # scikit-learn's GaussianMixture takes 32 bits
        self.config = config

    def _fit(self, points: np.ndarray):
        from sklearn.mixture import GaussianMixture

        best, best_bic = None, math.inf
        for count in range(1, min(self.max_components, len(points)) + 1):
            model = GaussianMixture(count, covariance_type="full", reg_covar=1e-4, random_state=self.seed)
            model.fit(points)
            bic = model.bic(points)
            if bic < best_bic:
                best, best_bic = model, bic
        return best

    def _predict(self, state: State, x: Tensor | None) -> Tensor:
        from threadpoolctl import threadpool_limits

        seen, noise = self._seen(state, x)
        rng = np.random.default_rng(self.seed)
        samples = []
        # One thread: scikit-learn's parallel k-means is many times slower on small, busy machines.
        with threadpool_limits(1):
            for points, draws in zip(seen.double().cpu().numpy(), noise.double().cpu().numpy(), strict=True):
                model = self._fit(points)
                weights = model.weights_ / model.weights_.sum()
                component = rng.choice(len(weights), size=len(draws), p=weights)
                chol = np.linalg.cholesky(model.covariances_)[component]
                samples.append(model.means_[component] + np.einsum("nij,nj->ni", chol, draws))
        return torch.as_tensor(np.stack(samples), dtype=noise.dtype, device=noise.device)
