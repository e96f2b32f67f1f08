"""The learner protocol: ``init_state``, ``step``, ``predict``, and the one adaptation loop."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from amortized.errors import DTypeError, ShapeError
from amortized.learners.state import State

if TYPE_CHECKING:
    from amortized.models.likelihoods import Likelihood
from amortized.models.likelihoods import likelihood
from amortized.models.predictors import Predictor
from amortized.validation import check_choice, check_inputs, check_positive_int, check_targets

TASK_LIKELIHOODS = {
    "regression": "gaussian",
    "classification": "categorical",
    "generative": "samples",
    "order": "order",
}
"""The kinds of task a learner can do, and the likelihood that scores each."""


class Learner(nn.Module):
    """A learner adapts to a batch of tasks by refining a :class:`State` over mini-batches.

    Subclasses set ``regime`` and implement ``init_state``, ``_step`` (called by the checked ``step``)
    and ``predict``. ``config`` holds
    the constructor arguments as plain data, so a checkpoint can rebuild the learner.
    """

    regime: ClassVar[str]
    registry: ClassVar[dict[str, type[Learner]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_") and hasattr(cls, "regime"):
            Learner.registry[cls.__name__] = cls

    def __init__(self, input_dim: int, output_dim: int, task: str, noise: float | None = None) -> None:
        super().__init__()
        check_choice("task", task, tuple(TASK_LIKELIHOODS))
        self.input_dim = check_positive_int("input_dim", input_dim)
        self.output_dim = check_positive_int("output_dim", output_dim)
        self.task = task
        self.num_classes = output_dim if task == "classification" else None
        self.likelihood: Likelihood = likelihood(TASK_LIKELIHOODS[task], noise)
        self.config: dict[str, Any] = {}

    def init_state(self, num_tasks: int, query_x: Tensor | None = None) -> State:
        """The state before any data (``θ_0``, ``z_0`` or ``ŷ_0``) for ``num_tasks`` tasks."""
        raise NotImplementedError

    def step(self, state: State, x: Tensor, y: Tensor) -> State:
        """One refinement of the state on a mini-batch ``x`` ``[tasks, B, D]``, ``y``.

        Checks the state and the mini-batch, then applies the learner's update (:meth:`_step`).
        """
        if not isinstance(state, State):
            raise DTypeError(f"state must be a State from init_state or step, got {type(state).__name__}")
        x, y = self.check_data("batch", x, y)
        if x.shape[0] != state.num_tasks:
            raise ShapeError(
                f"the mini-batch holds {x.shape[0]} tasks but the state {state.num_tasks}; they must match"
            )
        return self._step(state, x, y)

    def _step(self, state: State, x: Tensor, y: Tensor) -> State:
        """The update itself, on a checked mini-batch: what a learner implements."""
        raise NotImplementedError

    def predict(self, state: State, x: Tensor | None = None) -> Tensor:
        """Means (regression) or logits (classification) at ``x`` ``[tasks, points, D]``."""
        raise NotImplementedError

    def query_loss(self, state: State, x: Tensor, y: Tensor) -> Tensor:
        """The meta-training loss ``[tasks]`` of ``state`` at query points ``x`` with targets ``y``.

        The likelihood's loss of the predictions; a learner trained on another objective (a flow's
        velocity regression) overrides it.
        """
        return self.likelihood.loss(self.predict(state, x), y)

    def check_data(self, name: str, x: object, y: object) -> tuple[Tensor, Tensor]:
        """Validate a task batch's inputs and targets against this learner."""
        x = check_inputs(f"{name}_x" if name else "x", x, self.input_dim)
        y = check_targets(
            f"{name}_y" if name else "y",
            y,
            x,
            num_classes=self.num_classes,
            output_dim=self.output_dim,
        )
        dtype = next((p.dtype for p in self.parameters() if p.is_floating_point()), None)
        for label, value in (("x", x), ("y", y)):
            if dtype is not None and value.is_floating_point() and value.dtype != dtype:
                raise DTypeError(
                    f"{name + '_' if name else ''}{label} is {value.dtype} but the learner computes in "
                    f"{dtype}: convert the data first (.to({dtype}); numpy arrays are float64)"
                )
        return x, y

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Learner:
        """Rebuild an (untrained) learner from the constructor arguments :meth:`describe` lists."""
        return cls(**config)

    def describe(self) -> dict[str, Any]:
        """The learner's class name and constructor arguments, as plain data."""
        return {"class": type(self).__name__, "config": dict(self.config)}


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Build modules under ``seed`` without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def plain_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """A constructor's arguments (its ``locals()`` on entry) as plain data, for checkpoints.

    Models become their config and tuples become lists, so ``weights_only`` loading can read them.
    """

    def plain(value: Any) -> Any:
        if isinstance(value, Predictor):
            return value.config
        if hasattr(value, "as_dict"):
            return value.as_dict()
        if isinstance(value, tuple | list):
            return [plain(item) for item in value]
        return value

    return {name: plain(value) for name, value in arguments.items() if name not in ("self", "__class__")}


def minibatches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    num_steps: int | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """The sequence of mini-batches adaptation reads: passes over the data in a random order.

    ``num_steps=None`` is one pass. More steps than batches in a pass start a new pass, in a new
    order. Each task gets its own order; the same generator gives the same sequence.
    """
    num_tasks, num_points = x.shape[:2]
    check_positive_int("batch_size", batch_size)
    batch_size = min(batch_size, num_points)
    per_pass = -(-num_points // batch_size)
    total = per_pass if num_steps is None else check_positive_int("num_steps", num_steps)
    for step in range(total):
        position = step % per_pass
        if position == 0:
            order = torch.rand(num_tasks, num_points, generator=generator).argsort(dim=1).to(x.device)
        index = order[:, position * batch_size : (position + 1) * batch_size]
        yield (
            x.gather(1, index[..., None].expand(-1, -1, x.shape[-1])),
            y.gather(1, index if y.dim() == 2 else index[..., None].expand(-1, -1, y.shape[-1])),
        )


def adapt(
    learner: Learner,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int,
    num_steps: int | None = None,
    query_x: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> State:
    """Adapt ``learner`` to tasks with data ``x``, ``y``: ``init_state``, then ``step`` per mini-batch.

    This is the library's one adaptation loop; one-shot amortization is ``batch_size >= points``.
    Runs without building a graph. Implicit learners need ``query_x``, the points to predict.
    """
    x, y = learner.check_data("", x, y)
    if query_x is not None:
        query_x = check_inputs("query_x", query_x, learner.input_dim)
        if query_x.shape[0] != x.shape[0]:
            raise ShapeError(f"query_x has {query_x.shape[0]} tasks but x has {x.shape[0]}; they must match")
    with torch.no_grad():
        state = learner.init_state(x.shape[0], query_x)
        for batch_x, batch_y in minibatches(x, y, batch_size, num_steps, generator):
            state = learner.step(state, batch_x, batch_y)
    return state


def loss_gradient(loss_of: Any, value: Tensor, *, create_graph: bool) -> tuple[Tensor, Tensor]:
    """Per-task gradient of ``loss_of(value)`` (``[tasks]`` losses) w.r.t. ``value``, and the losses.

    Works under ``torch.no_grad`` (adaptation) as well as inside meta-training. With
    ``create_graph`` the gradient stays differentiable (second-order meta-gradients); otherwise it
    is detached.
    """
    differentiable = torch.is_grad_enabled() and value.requires_grad
    with torch.enable_grad():
        leaf = value if differentiable else value.detach().requires_grad_()
        losses = loss_of(leaf)
        (grad,) = torch.autograd.grad(losses.sum(), leaf, create_graph=create_graph)
    return grad, losses.detach()
