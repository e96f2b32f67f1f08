"""The learner protocol: ``init_state``, ``step``, ``predict``, and the one adaptation loop."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from amortized.errors import DTypeError, NonFiniteError, ShapeError
from amortized.learners.state import State

if TYPE_CHECKING:
    from amortized.models.likelihoods import Likelihood
    from amortized.tasks.base import TaskBatch
from amortized.models.likelihoods import likelihood
from amortized.models.predictors import Predictor
from amortized.validation import check_choice, check_inputs, check_positive_int, check_seed, check_targets

TASK_LIKELIHOODS = {
    "regression": "gaussian",
    "classification": "categorical",
    "generative": "samples",
    "order": "order",
}
"""The kinds of task a learner can do, and the likelihood that scores each."""


class Learner(nn.Module):
    """A learner adapts to a batch of tasks by refining a :class:`State` over mini-batches.

    Subclasses set ``regime`` and implement ``init_state``, ``_step`` and ``_predict``, which the
    checked ``step`` and ``predict`` call. ``config`` holds the constructor arguments as plain data,
    so a checkpoint can rebuild the learner.
    """

    regime: ClassVar[str]
    registry: ClassVar[dict[str, type[Learner]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_") and hasattr(cls, "regime"):
            Learner.registry[cls.__name__] = cls
        if "predict" in vars(cls):
            # Written to the protocol before ``_predict``: its predictions are checked all the same.
            cls._predict = vars(cls)["predict"]
            cls.predict = Learner.predict

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

    @property
    def dtype(self) -> torch.dtype | None:
        """The float dtype of the learner's weights, which data are cast to; ``None`` if it has none
        (it then computes in the data's dtype)."""
        tensors = itertools.chain(self.parameters(), self.buffers())
        return next((t.dtype for t in tensors if t.is_floating_point()), None)

    @property
    def device(self) -> torch.device | None:
        """The device of the learner's weights, which data given to it are moved to; ``None`` if it has
        none (data are left where they are; such learners, e.g. the Bayes posterior, start their
        states on the CPU)."""
        tensor = next(itertools.chain(self.parameters(), self.buffers()), None)
        return None if tensor is None else tensor.device

    def step(self, state: State, x: Tensor, y: Tensor, *, check_finite: bool = True) -> State:
        """One refinement of the state on a mini-batch ``x`` ``[tasks, B, D]``, ``y``.

        Checks the state and the mini-batch (floats cast to :attr:`dtype`, moved to :attr:`device`),
        applies the learner's update (:meth:`_step`) and refuses a state holding NaN or infinity with a
        :class:`NonFiniteError` naming the step and the tasks, unless ``check_finite=False`` (a caller
        that checks the result itself). Meta-training checks its mini-batches once and calls
        :meth:`_step`, checking its loss instead.
        """
        state = self.check_state(state)
        x, y = self.check_data("batch", x, y)
        if x.shape[0] != state.num_tasks:
            raise ShapeError(
                f"the mini-batch holds {x.shape[0]} tasks but the state {state.num_tasks}; they must match"
            )
        new = self._step(state, x, y)
        if check_finite:
            self._refuse_nonfinite(new.value, state, "step")
        return new

    def _step(self, state: State, x: Tensor, y: Tensor) -> State:
        """The update itself, on a checked mini-batch: what a learner implements."""
        raise NotImplementedError

    def predict(self, state: State, x: Tensor | None = None, *, check_finite: bool = True) -> Tensor:
        """Means (regression) or logits (classification) at ``x`` ``[tasks, points, D]``.

        Checks the state (it must hold no NaN or infinity) and ``x`` (shape, float dtype cast to
        :attr:`dtype`, finite), calls :meth:`_predict`, and refuses non-finite predictions with a
        :class:`NonFiniteError` naming the tasks, unless ``check_finite=False`` (a caller that checks
        them itself).
        """
        state = self.check_state(state)
        bad = _nonfinite_tasks(state.value)
        if bad is not None:
            raise NonFiniteError(
                f"the state holds NaN or infinity for {_count(bad)} (tasks {_listed(bad)}); it cannot predict"
            )
        if x is not None:
            x = self.check_inputs("x", x)
            if x.shape[0] != state.num_tasks:
                raise ShapeError(
                    f"x holds {x.shape[0]} tasks but the state {state.num_tasks}; they must match"
                )
        prediction = self._predict(state, x)
        if check_finite:
            self._refuse_nonfinite(prediction, state, "predict")
        return prediction

    def _predict(self, state: State, x: Tensor | None) -> Tensor:
        """The predictions themselves, from a checked state and ``x``: what a learner implements."""
        raise NotImplementedError

    def check_state(self, state: object) -> State:
        """``state`` if it is a :class:`State`, its query points (if any) checked and in :attr:`dtype`."""
        if not isinstance(state, State):
            raise DTypeError(f"state must be a State from init_state or step, got {type(state).__name__}")
        if state.query_x is not None:
            state = replace(state, query_x=self.check_inputs("query_x", state.query_x))
        return state

    def _refuse_nonfinite(self, values: Tensor, state: State, action: str) -> None:
        """Raise if ``values`` (tasks first) hold NaN or infinity, naming the tasks and a likely cause.

        One check on the happy path; the diagnosis (weights, the state given, the data) only on failure.
        """
        bad = _nonfinite_tasks(values)
        if bad is None:
            return
        if action == "step":
            action = f"step {int(state.num_steps[bad.nonzero()[0, 0]]) + 1}"
            cause = "the data may be too large for this learner (standardise them), or its step size is"
        else:
            cause = "x may be too large for this learner (standardise it as the data adapted to)"
        for name, tensor in itertools.chain(self.named_parameters(), self.named_buffers()):
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                cause = f"the learner's weight {name} holds NaN or infinity"
                break
        else:
            if _nonfinite_tasks(state.value) is not None:
                cause = "the state it was given already held NaN or infinity"
        tasks = f"{_count(bad)} (tasks {_listed(bad)})"
        raise NonFiniteError(f"{action} gave NaN or infinity for {tasks}: {cause}")

    def query_loss(self, state: State, x: Tensor, y: Tensor) -> Tensor:
        """The meta-training loss ``[tasks]`` of ``state`` at query points ``x`` with targets ``y``.

        The likelihood's loss of the predictions (unchecked: meta-training checks the loss); a learner
        trained on another objective (a flow's velocity regression) overrides it.
        """
        return self.likelihood.loss(self._predict(state, x), y)

    def check_inputs(self, name: str, x: object) -> Tensor:
        """Validate inputs ``[tasks, points, input_dim]`` for this learner: cast to :attr:`dtype`, on
        :attr:`device`."""
        return self._placed(check_inputs(name, x, self.input_dim, self.dtype))

    def check_data(self, name: str, x: object, y: object) -> tuple[Tensor, Tensor]:
        """Validate a task batch's inputs and targets against this learner, floats cast to :attr:`dtype`,
        both moved to :attr:`device`."""
        dtype = self.dtype
        x = check_inputs(f"{name}_x" if name else "x", x, self.input_dim, dtype)
        y = check_targets(
            f"{name}_y" if name else "y",
            y,
            x,
            num_classes=self.num_classes,
            output_dim=self.output_dim,
            dtype=dtype,
        )
        return self._placed(x), self._placed(y)

    def place(self, tasks: TaskBatch) -> TaskBatch:
        """``tasks`` on :attr:`device`, so predictions meet the targets there (as they are if the
        learner has no weights)."""
        device = self.device
        return tasks if device is None else tasks.to(device)

    def _placed(self, tensor: Tensor) -> Tensor:
        device = self.device
        return tensor if device is None else tensor.to(device)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Learner:
        """Rebuild an (untrained) learner from the constructor arguments :meth:`describe` lists."""
        return cls(**config)

    def describe(self) -> dict[str, Any]:
        """The learner's class name and constructor arguments, as plain data."""
        return {"class": type(self).__name__, "config": dict(self.config)}


def _nonfinite_tasks(values: Tensor) -> Tensor | None:
    """The mask ``[tasks]`` of tasks whose ``values`` (tasks first) hold NaN or infinity, or ``None``."""
    finite = torch.isfinite(values)
    if bool(finite.all()):
        return None
    return ~(finite.flatten(1).all(1) if finite.dim() > 1 else finite)


def _count(bad: Tensor) -> str:
    """``"k of n tasks"`` for a mask of flagged tasks."""
    return f"{int(bad.sum())} of {len(bad)} tasks"


def _listed(bad: Tensor, most: int = 10) -> str:
    """The indices of the flagged tasks, the first ``most`` of them."""
    index = bad.nonzero().flatten().tolist()
    return ", ".join(map(str, index[:most])) + (", ..." if len(index) > most else "")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Build modules under ``seed`` without touching the caller's global RNG state."""
    check_seed("seed", seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def plain_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """A constructor's arguments (its ``locals()`` on entry) as plain data, for checkpoints.

    Models become their config, tuples become lists and numpy scalars Python numbers, so
    ``weights_only`` loading can read them.
    """

    def plain(value: Any) -> Any:
        if isinstance(value, Predictor):
            return plain(value.config)
        if hasattr(value, "as_dict"):
            return plain(value.as_dict())
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, tuple | list):
            return [plain(item) for item in value]
        if isinstance(value, np.generic):
            return value.item()
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
    order. Each task gets its own order; the same generator gives the same sequence, and without
    one the orders are drawn from seed 0, so the same call reads the same batches in every process.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0)
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


@torch.no_grad()
def adaptation(
    learner: Learner,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int,
    num_steps: int | None = None,
    query_x: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[State]:
    """The library's one adaptation loop: the state after each mini-batch, from ``init_state`` on.

    The data are checked once, when the first state is asked for; each state is checked for NaN.
    :func:`adapt` keeps the last state; the learning-rate tuner adapts with it.
    One-shot amortization is ``batch_size >= points``. Implicit learners need ``query_x``, the
    points to predict. Runs without building a graph.
    """
    x, y = learner.check_data("", x, y)
    if query_x is not None:
        query_x = learner.check_inputs("query_x", query_x)
        if query_x.shape[0] != x.shape[0]:
            raise ShapeError(f"query_x has {query_x.shape[0]} tasks but x has {x.shape[0]}; they must match")
    state = learner.init_state(x.shape[0], query_x)
    yield from refinements(learner, state, minibatches(x, y, batch_size, num_steps, generator))


def refinements(learner: Learner, state: State, batches: Iterable[tuple[Tensor, Tensor]]) -> Iterator[State]:
    """The loop itself: the state after each of ``batches``, from ``state``.

    The batches are taken as checked (:meth:`Learner.check_data`: the caller's boundary, once);
    each new state is checked for NaN. :func:`adaptation` runs it over the mini-batches of tensors,
    the evaluation's curves over the mini-batches of tasks they checked, the estimators over rows
    streamed from an array, the cost curve over fixed batches. Call it
    under ``torch.no_grad()`` (as they do) unless the states should keep a graph.
    """
    for batch_x, batch_y in batches:
        new = learner._step(state, batch_x, batch_y)
        learner._refuse_nonfinite(new.value, state, "step")
        state = new
        yield state


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
    """Adapt ``learner`` to tasks with data ``x``, ``y``: the last state of :func:`adaptation`.

    The mini-batches are read in an order drawn from ``generator`` (:func:`minibatches`; without one,
    from seed 0), so the same call gives the same state in every process.
    """
    states = adaptation(
        learner, x, y, batch_size=batch_size, num_steps=num_steps, query_x=query_x, generator=generator
    )
    return last_state(states)


def last_state(states: Iterable[State]) -> State:
    """The last of ``states`` (an adaptation's), keeping none of the others in memory."""
    return deque(states, maxlen=1)[0]


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
