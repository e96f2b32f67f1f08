"""Per-task baselines with nothing learned: SGD, Adam, and the exact Bayes posterior mean.

They run through the same adaptation loop and mini-batch sequence as the learned learners, so
comparisons are like for like.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from amortized.errors import ConfigError, NonFiniteError
from amortized.learners.base import Learner, adapt, loss_gradient, plain_arguments
from amortized.learners.rules.moments import AdamMoments
from amortized.learners.state import State
from amortized.memory import check_memory
from amortized.models.predictors import Linear, Predictor, predictor_from_config
from amortized.tasks.base import TaskFamily
from amortized.validation import (
    MAX_MAGNITUDE,
    check_bool,
    check_choice,
    check_real,
    check_real_list,
    check_seed,
)


class _PerTaskOptimizer(Learner):
    """A fixed model trained per task from a fixed initial ``θ`` by a gradient method."""

    regime = "baseline"

    def __init__(
        self,
        model: Predictor | dict,
        lr: float,
        task: str = "regression",
        init: str = "zeros",
        seed: int = 0,
    ) -> None:
        config = plain_arguments(locals())
        model = predictor_from_config(model) if isinstance(model, dict) else model
        super().__init__(model.input_dim, model.output_dim, task, None)
        self.model = model
        self.lr = check_real("lr", lr, positive=True, high=MAX_MAGNITUDE)
        check_choice("init", init, ("zeros", "random"))
        theta0 = model.init(torch.Generator().manual_seed(check_seed("seed", seed)))
        self.register_buffer("theta0", torch.zeros_like(theta0) if init == "zeros" else theta0)
        self.config = config

    def _gradient(self, state: State, x: Tensor, y: Tensor) -> Tensor:
        loss_of = lambda theta: self.likelihood.loss(self.model(theta, x), y)  # noqa: E731
        return loss_gradient(loss_of, state.value, create_graph=False)[0]

    def _predict(self, state: State, x: Tensor | None) -> Tensor:
        if x is None:
            raise ConfigError(f"{type(self).__name__}.predict needs the points x to predict")
        return self.model(state.value, x)


class SGD(_PerTaskOptimizer):
    """Plain per-task SGD: ``θ ← θ - lr ∇L(B; θ)``."""

    def init_state(self, num_tasks: int, query_x: Tensor | None = None) -> State:
        return State.initial(self.theta0.expand(num_tasks, -1).clone())

    def _step(self, state: State, x: Tensor, y: Tensor) -> State:
        return state.advance(state.value - self.lr * self._gradient(state, x, y), x.shape[1])


class Adam(_PerTaskOptimizer):
    """Per-task Adam with bias correction, its moments kept in the state."""

    def __init__(
        self,
        model: Predictor | dict,
        lr: float,
        task: str = "regression",
        init: str = "zeros",
        seed: int = 0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        config = plain_arguments(locals())
        super().__init__(model, lr, task, init, seed)
        if isinstance(betas, str) or not isinstance(betas, Sequence) or len(betas) != 2:
            raise ConfigError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (
            check_real("betas[0]", betas[0], low=0, below=1),
            check_real("betas[1]", betas[1], low=0, below=1),
        )
        self.eps = check_real("eps", eps, positive=True)
        self.config = config

    def init_state(self, num_tasks: int, query_x: Tensor | None = None) -> State:
        theta = self.theta0.expand(num_tasks, -1).clone()
        return State.initial(theta, AdamMoments.zeros_like(theta))

    def _step(self, state: State, x: Tensor, y: Tensor) -> State:
        grad = self._gradient(state, x, y)
        moments, direction = state.carry.update(grad, state.num_steps, self.betas, self.eps)
        return state.advance(state.value - self.lr * direction, x.shape[1], moments)


@dataclass
class Posterior:
    """Bayesian linear regression's sufficient statistics: precision ``[tasks, P, P]``, ``Φᵀy / σ²``."""

    precision: Tensor
    scaled_xty: Tensor


class BayesLinearRegression(Learner):
    """The exact posterior mean of Bayesian linear regression, updated batch by batch.

    Prior ``w ~ N(0, weight_std² I)`` (bias included when ``bias=True``), noise ``N(0, noise²)``: the
    Bayes-optimal predictor under squared error for :class:`~amortized.tasks.LinearRegression`. The
    state keeps the posterior precision and ``Φᵀy / noise²``; solves run in float64 for stability.
    """

    regime = "baseline"

    def __init__(self, input_dim: int, noise: float, weight_std: float = 1.0, bias: bool = True) -> None:
        config = plain_arguments(locals())
        noise = check_real("noise", noise, positive=True, high=MAX_MAGNITUDE)
        weight_std = check_real("weight_std", weight_std, positive=True, high=MAX_MAGNITUDE)
        super().__init__(input_dim, 1, "regression", noise)
        self.model = Linear(input_dim, 1, bias=bias)
        self.noise, self.weight_std, self.bias = noise, weight_std, check_bool("bias", bias)
        self.config = config

    def _features(self, x: Tensor) -> Tensor:
        x = x.double()
        return torch.cat([x, torch.ones_like(x[..., :1])], -1) if self.bias else x

    def check_state_size(self, what: str, num_tasks: int) -> None:
        """Refuse ``num_tasks`` posteriors, before they are allocated, if they exceed the memory budget:
        each holds a ``P × P`` float64 precision matrix, a copy and its Cholesky factor."""
        check_memory(
            f"{what}={num_tasks} with input_dim={self.input_dim}",
            3 * num_tasks * self.model.num_params**2 * torch.finfo(torch.float64).bits // 8,
            held="the Bayes posteriors' precision matrices",
            remedy="use fewer tasks or inputs",
        )

    def init_state(self, num_tasks: int, query_x: Tensor | None = None) -> State:
        self.check_state_size("num_tasks", num_tasks)
        size = self.model.num_params
        precision = torch.eye(size, dtype=torch.float64) / self.weight_std**2
        posterior = Posterior(
            precision.expand(num_tasks, -1, -1).clone(), torch.zeros(num_tasks, size, dtype=torch.float64)
        )
        return State.initial(torch.zeros(num_tasks, size), posterior)

    def _step(self, state: State, x: Tensor, y: Tensor) -> State:
        phi = self._features(x)
        precision = state.carry.precision + phi.mT @ phi / self.noise**2
        scaled_xty = state.carry.scaled_xty + (phi.mT @ y.double()).squeeze(-1) / self.noise**2
        chol = torch.linalg.cholesky(precision)
        mean = torch.cholesky_solve(scaled_xty[..., None], chol).squeeze(-1)
        return state.advance(mean.to(x.dtype), x.shape[1], Posterior(precision, scaled_xty))

    def _predict(self, state: State, x: Tensor | None) -> Tensor:
        if x is None:
            raise ConfigError("BayesLinearRegression.predict needs the points x to predict")
        return self.model(state.value.to(x.dtype), x)

    def predictive_variance(self, state: State, x: Tensor) -> Tensor:
        """Posterior predictive variance of ``f(x)`` (without observation noise), ``[tasks, points]``."""
        phi = self._features(x)
        chol = torch.linalg.cholesky(state.carry.precision)
        solved = torch.cholesky_solve(phi.mT, chol)
        return (phi * solved.mT).sum(-1).to(x.dtype)


def tune_learning_rate(
    make_learner: Callable[[float], Learner],
    family: TaskFamily,
    grid: Sequence[float],
    *,
    num_steps: int,
    batch_size: int,
    num_tasks: int = 64,
    num_query: int = 64,
    num_train: int | None = None,
    seed: int = 12345,
) -> tuple[float, dict[float, float]]:
    """The learning rate from ``grid`` with the lowest mean query loss after ``num_steps`` steps.

    Tuned on tasks drawn from ``family`` with ``seed``, which should differ from evaluation tasks.
    Returns the best rate and the loss at every rate (a diverged rate scores infinity); if every
    rate diverges, that is a :class:`NonFiniteError`.
    """
    grid = check_real_list("grid", grid, positive=True, high=MAX_MAGNITUDE)
    generator = torch.Generator().manual_seed(check_seed("seed", seed))
    tasks = family.sample(num_tasks, num_train or num_steps * batch_size, num_query, generator)
    losses = {}
    for lr in grid:
        learner = make_learner(lr)
        placed = learner.place(tasks)
        order = torch.Generator().manual_seed(seed + 1)
        try:
            state = adapt(
                learner,
                placed.x_train,
                placed.y_train,
                batch_size=batch_size,
                num_steps=num_steps,
                generator=order,
            )
            with torch.no_grad():
                loss = learner.likelihood.loss(learner.predict(state, placed.x_query), placed.y_query)
        except NonFiniteError:
            losses[lr] = float("inf")
            continue
        value = float(loss.mean())
        losses[lr] = value if value == value else float("inf")
    best = min(losses, key=losses.get)
    if losses[best] == float("inf"):
        raise NonFiniteError(
            f"every learning rate in {list(grid)} diverged in {num_steps} steps; try lower ones"
        )
    return best, losses
