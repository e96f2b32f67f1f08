"""The learned transformer update: ``v ← v + h_φ(tokens)`` from the state, the mini-batch and its gradient.

State tokens hold chunks of ``v`` (and, with gradient inputs, of the normalised gradient and of
Adam's direction from running moments kept in the state) plus an embedding of the state's progress
(points seen, steps taken, gradient scale). Observation tokens hold ``[x, y, f(x; v)]``. Optional
memory tokens persist across steps (trained when gradients cross steps: ``truncated`` or ``full``
objectives).

What keeps an iterative learner improving as it reads more data belongs here, so every
representation gets it: ``refinements`` applies the transformer that many times per mini-batch, each
time with the gradient and predictions at the refined state and its displacement from the step's
start, so an early step can nearly solve its batch (as a posterior update solves a small linear
system) instead of taking one gradient-like move. ``scale_by_share`` multiplies each update by
``B / (seen + B)``, so the rule's outputs keep one scale while its steps shrink like a posterior's
(``1/t``) as evidence, re-reads included, accumulates. ``momentum`` (with refinements) adds the
previous refinement's update and the gradient change it caused: with a direction and the curvature
along it, refinements can act like conjugate-gradient or quasi-Newton steps. ``taper_refinements``
applies ``ceil(refinements · B / (seen + B))`` of them per step: as evidence accumulates the
posterior's system is better conditioned and its update nears a gradient step, so late steps (the
bulk of a long run, in training too) cost one pass.

``"newton"`` among the ``inputs`` (the default for values of at most :data:`NEWTON_DEFAULT_SIZE`
entries, except in ``LatentUpdate``, whose Hessian goes through the decoder) keeps the running mean
of the batches' loss Hessians in the carry (:mod:`~amortized.learners.rules.curvature`) and reads
the gradient preconditioned by it. Every step's first refinement adds the transformer's output to
the step ``-share · newton`` (only the first: later refinements would re-solve the batch alone and
forget the earlier ones). For a linear model with
squared loss that base step is recursive least squares, the posterior mean's own update up to the
prior, so the learned part starts from the right answer and learns the prior and the corrections;
without it, an update that reads one batch at a time cannot recover the curvature of the points read
before (in high dimension it barely learns at all within a CPU budget: ``python -m benchmarks paper``).

``gradient_base`` adds a gradient step to every step's first refinement, ``-rate · ∇L(B) / rms``,
where ``rms`` is the running root mean square of the task's gradients (over entries and steps, from
Adam's second moments), so the step is free of the loss's scale yet shrinks, like SGD's, as the
gradients do; its rate is learned per entry of the value times a learned function of the state's
progress (its own schedule, not scaled by the share). It is for values without the Newton base, such
as an MLP's weights: the transformer reads the gradient normalised, so on later passes it cannot take
the small, exactly scaled steps that keep fitting a task's network, and a gradient step can. Off by
default: it helped on random tanh networks, on linear models of digits and MNIST and on an MLP
of MNIST-1D (those presets turn it on) and hurt on sinusoids (README, "Every regime, measured"
and "Your own data").

``history`` (an ablation, off by default) lets the update also read the values at the start of the
last ``h`` steps: each chunk's token reads the same chunk of each of them, kept newest first in the
carry (zeros before they exist; the progress features gain one flag per entry, 1 once it exists).
The current value and momentum see one step; this shows whether a longer trajectory helps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from amortized.errors import ConfigError
from amortized.learners.base import loss_gradient
from amortized.learners.rules.curvature import MAX_SIZE, RunningCurvature, loss_hessian
from amortized.learners.rules.logistic import RunningLogistic
from amortized.learners.rules.moments import AdamMoments
from amortized.learners.rules.ridge import RunningRidge
from amortized.learners.rules.spec import RuleSpec, Target
from amortized.learners.state import State
from amortized.memory import check_parameters
from amortized.nn import ChunkTokens, ObservationTokens, ProgressEmbedding, Transformer
from amortized.validation import check_bool, check_divisible, check_positive_int

INPUT_CHOICES = ("observations", "gradients", "newton")
NEWTON_DEFAULT_SIZE = 64
"""The largest value (entries) whose rule reads the Newton direction by default: its cost, a Hessian
and a ``P × P`` solve per task and step, grows quickly past it (about 7× a plain step at 260)."""
LEGACY_TRANSFORMER_DEFAULTS = {
    "inputs": ["observations", "gradients"],
    "refinements": 1,
    "scale_by_share": False,
    "momentum": False,
    "taper_refinements": False,
}
"""The defaults before the recipe that keeps improving became the default (checkpoints that list
options flat were written then, some before these options existed)."""
ADAM_BETAS = (0.9, 0.999)
GRADIENT_BASE_RATE = 0.01
"""The gradient base's rate before meta-training, in units of the gradients' running RMS."""
RATE_GAIN = 10.0
"""The gradient base's log rate is ``RATE_GAIN`` times its parameters: meta-training's steps (about
its learning rate per iteration) can then move the rate by orders of magnitude within a budget, and
turn the base down where it does not help."""


@dataclass(frozen=True)
class TransformerUpdate(RuleSpec):
    """Options of the learned transformer update (see the module docstring for what each does)."""

    inputs: tuple[str, ...] | None = None
    """What the update reads besides the state: the mini-batch's points, its loss gradient, the Newton
    direction of the accumulated curvature (which also becomes the first refinement's base step).
    ``None``: observations and gradients, plus ``"newton"`` where the value has at most
    :data:`NEWTON_DEFAULT_SIZE` entries."""
    width: int = 64
    depth: int = 2
    heads: int = 4
    chunk_size: int = 32
    """Entries of the state per token."""
    memory_tokens: int = 0
    refinements: int = 8
    scale_by_share: bool = True
    momentum: bool | None = None
    """``None``: on exactly when there are refinements to carry it across."""
    taper_refinements: bool = True
    history: int = 0
    """Values of the last steps the update also reads (0: none, the update sees the current one)."""
    gradient_base: bool = False
    """Add a gradient step at a learned rate and schedule to every step's first refinement."""

    def __post_init__(self) -> None:
        if self.momentum is None:
            object.__setattr__(self, "momentum", isinstance(self.refinements, int) and self.refinements > 1)
        if self.inputs is not None:
            given = self.inputs
            inputs = tuple(given) if isinstance(given, Iterable) and not isinstance(given, str) else (given,)
            unknown = [name for name in inputs if name not in INPUT_CHOICES]
            if unknown or not inputs:
                raise ConfigError(f"inputs must be a non-empty subset of {INPUT_CHOICES}, got {given!r}")
            if inputs == ("newton",):
                raise ConfigError("inputs 'newton' needs 'gradients' or 'observations' too")
            object.__setattr__(self, "inputs", tuple(name for name in INPUT_CHOICES if name in inputs))
        for name in ("width", "depth", "heads", "chunk_size", "refinements"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("memory_tokens", self.memory_tokens, allow_zero=True)
        check_positive_int("history", self.history, allow_zero=True)
        check_parameters(
            f"memory_tokens={self.memory_tokens}, width={self.width}", self.memory_tokens * self.width
        )
        for name in ("scale_by_share", "momentum", "taper_refinements", "gradient_base"):
            check_bool(name, getattr(self, name))
        check_divisible("width", self.width, "heads", self.heads)
        if self.momentum and self.refinements == 1:
            raise ConfigError("momentum needs refinements > 1: it reads the previous refinement's update")

    def for_size(self, size: int) -> TransformerUpdate:
        """The spec with its inputs resolved for a value of ``size`` entries."""
        if self.inputs is not None:
            return self
        newton = ("newton",) if size <= NEWTON_DEFAULT_SIZE else ()
        return replace(self, inputs=("observations", "gradients", *newton))

    @property
    def uses_gradients(self) -> bool:
        return "gradients" in self._resolved_inputs

    @property
    def uses_newton(self) -> bool:
        return "newton" in self._resolved_inputs

    @property
    def _resolved_inputs(self) -> tuple[str, ...]:
        if self.inputs is None:
            raise ConfigError("the rule's inputs are resolved for a value's size first (for_size)")
        return self.inputs

    def build(self, target: Target) -> TransformerRule:
        return TransformerRule(self, target)


@dataclass
class TransformerCarry:
    """What the update keeps across steps: gradient moments (gradient inputs), memory tokens and,
    with ``history``, the values at the start of the last steps ``[tasks, history, *value]``."""

    moments: AdamMoments | None = None
    tokens: Tensor | None = None
    history: Tensor | None = None
    curvature: RunningCurvature | None = None


@dataclass
class InContextCarry(TransformerCarry):
    """``InContext``'s carry: the transformer's, plus, with its ridge readout, the running ridge
    regression and its last readout at the queries ``[tasks, queries, out]``, and, with its logistic
    base, the running logistic regression and its last logits there."""

    ridge: RunningRidge | None = None
    readout: Tensor | None = None
    logistic: RunningLogistic | None = None
    base: Tensor | None = None


def history_flags(state: State, length: int) -> Tensor:
    """``[tasks, length]``: entry ``j`` is 1 when the state took more than ``j`` steps, so the value of
    ``j + 1`` steps ago exists (the carry holds zeros in its place until then)."""
    steps = torch.arange(length, device=state.num_steps.device)
    return (state.num_steps[:, None] > steps).to(state.num_steps.dtype)


def pushed(history: Tensor, value: Tensor) -> Tensor:
    """``history`` (newest first) with ``value`` as its newest entry and its oldest dropped."""
    return torch.cat([value[:, None], history[:, :-1]], 1)


def refinement_counts(state: State, batch_points: int, refinements: int, taper: bool) -> tuple[Tensor, int]:
    """Transformer passes per task ``[tasks]`` for a step, all or tapered by the batch's share, and
    the most of them: ``refinements`` untapered, else read back from the device (the price of
    skipping passes)."""
    if not taper:
        return torch.full(state.num_seen.shape, refinements, device=state.num_seen.device), refinements
    counts = torch.ceil(refinements * state.share(batch_points) - 1e-6).long().clamp(min=1)
    return counts, int(counts.max())


def _rows(active: Tensor) -> slice | Tensor:
    """Every task as a plain slice when all are active (no copies), else the active tasks' indices."""
    return slice(None) if bool(active.all()) else active.nonzero().squeeze(1)


def _put(full: Tensor | None, rows: slice | Tensor, part: Tensor) -> Tensor:
    """``full`` with ``rows`` replaced by ``part``, out of place so autograd sees both."""
    return part if isinstance(rows, slice) else full.index_copy(0, rows, part)


class TransformerRule(nn.Module):
    """The module of a :class:`TransformerUpdate` for a flat value of ``target.size`` entries."""

    def __init__(self, spec: TransformerUpdate, target: Target) -> None:
        super().__init__()
        self.spec = spec = spec.for_size(target.size)
        refining = spec.refinements > 1
        num_features = (3 if spec.uses_gradients else 1) + refining
        num_features += spec.momentum * (1 + spec.uses_gradients) + spec.history + spec.uses_newton
        if spec.gradient_base and not spec.uses_gradients:
            raise ConfigError(
                "gradient_base scales the step by the gradients' running moments: add 'gradients' to inputs"
            )
        if spec.uses_newton and target.size > MAX_SIZE:
            raise ConfigError(
                f"inputs 'newton' keeps a {target.size} × {target.size} curvature matrix per task; it is "
                f"for values of at most {MAX_SIZE} entries (a smaller model or latent, or drop 'newton')"
            )
        self.chunks = ChunkTokens(target.size, spec.chunk_size, num_features, spec.width)
        self.progress = ProgressEmbedding(5 + spec.history + spec.uses_gradients + refining, spec.width)
        self.observations = (
            ObservationTokens(target.input_dim, target.output_dim, target.num_classes, spec.width, True)
            if "observations" in spec.inputs
            else None
        )
        self.transformer = Transformer(spec.width, spec.depth, spec.heads)
        if spec.memory_tokens:
            self.memory0 = nn.Parameter(torch.randn(spec.memory_tokens, spec.width) * 0.02)
        if spec.gradient_base:
            self.log_rate = nn.Parameter(torch.full((target.size,), math.log(GRADIENT_BASE_RATE) / RATE_GAIN))
            self.schedule = nn.Linear(5, 1)
            nn.init.zeros_(self.schedule.weight)
            nn.init.zeros_(self.schedule.bias)

    def _gradient_step(self, state: State, moments: AdamMoments, grad: Tensor, progress: Tensor) -> Tensor:
        """The gradient base step ``rate · grad / rms`` (see the module docstring)."""
        rms = moments.second_corrected(state.num_steps, ADAM_BETAS[1]).mean(-1, keepdim=True).sqrt()
        rate = (RATE_GAIN * (self.log_rate + self.schedule(progress))).exp()
        return rate * grad / (rms + 1e-12)

    def init(self, value: Tensor) -> State:
        carry = TransformerCarry()
        if self.spec.uses_gradients:
            carry.moments = AdamMoments.zeros_like(value)
        if self.spec.memory_tokens:
            carry.tokens = self.memory0.expand(value.shape[0], -1, -1)
        if self.spec.history:
            carry.history = value.new_zeros(value.shape[0], self.spec.history, value.shape[1])
        if self.spec.uses_newton:
            carry.curvature = RunningCurvature.zeros_like(value)
        return State.initial(value, carry)

    def step(self, target: Target, state: State, x: Tensor, y: Tensor) -> State:
        spec = self.spec
        carry = replace(state.carry)
        start = value = state.value
        points = x.shape[1]
        scale = state.share(points)[:, None] if spec.scale_by_share else torch.ones_like(value[:, :1])
        progress_features = state.progress_features(points)
        step_progress = progress_features
        if spec.history:
            step_progress = torch.cat([step_progress, history_flags(state, spec.history)], -1)
        counts, passes = refinement_counts(state, points, spec.refinements, spec.taper_refinements)
        num_chunks = self.chunks.num_chunks
        last_output = last_grad = last_rms = None
        for refinement in range(passes):
            rows = _rows(counts > refinement) if spec.taper_refinements else slice(None)
            task_value, task_x, task_y = value[rows], x[rows], y[rows]
            progress = step_progress[rows]
            features = [task_value]
            if spec.uses_newton and refinement == 0:
                grad, hessian = loss_hessian(target.loss_of(task_x, task_y), task_value)
                carry.curvature = carry.curvature.update(hessian, state.share(points))
            elif spec.uses_gradients or spec.uses_newton:
                grad, _ = loss_gradient(target.loss_of(task_x, task_y), task_value, create_graph=False)
            if spec.uses_newton:
                curvature = RunningCurvature(carry.curvature.mean[rows])
                newton = curvature.newton(grad, state.num_seen[rows] + points)
                features.append(newton)
            if spec.uses_gradients:
                if refinement == 0:
                    carry.moments, adam = carry.moments.update(grad, state.num_steps, ADAM_BETAS, 1e-12)
                rms = grad.square().mean(-1, keepdim=True).sqrt()
                features += [grad / (rms + 1e-12), adam[rows]]
                progress = torch.cat([progress, torch.log(rms + 1e-12) / 10], -1)
            if spec.refinements > 1:
                features.append(task_value - start[rows])
                fraction = refinement / counts[rows, None].to(task_value.dtype)
                progress = torch.cat([progress, fraction], -1)
            if spec.momentum and refinement == 0:
                features += [torch.zeros_like(task_value)] * (1 + spec.uses_gradients)
            elif spec.momentum:
                features.append(last_output[rows])
                if spec.uses_gradients:
                    features.append((grad - last_grad[rows]) / (last_rms[rows] + 1e-12))
            if spec.momentum and spec.uses_gradients:
                last_grad, last_rms = _put(last_grad, rows, grad), _put(last_rms, rows, rms)
            if spec.history:
                features += list(carry.history[rows].unbind(1))
            tokens = [self.chunks(features) + self.progress(progress)]
            if spec.memory_tokens:
                tokens.append(carry.tokens[rows])
            if self.observations is not None:
                tokens.append(self.observations(task_x, task_y, target.forward_value(task_value, task_x)))
            out = self.transformer(torch.cat(tokens, 1))
            if spec.memory_tokens:
                new_tokens = out[:, num_chunks : num_chunks + spec.memory_tokens]
                carry.tokens = _put(carry.tokens, rows, new_tokens)
            output = self.chunks.decode(out[:, :num_chunks])
            if spec.uses_newton and refinement == 0:
                output = output - newton
            last_output = _put(last_output, rows, output)
            update = scale[rows] * output
            if spec.gradient_base and refinement == 0:
                update = update - self._gradient_step(state, carry.moments, grad, progress_features)
            value = _put(value, rows, task_value + update)
        if spec.history:
            carry.history = pushed(carry.history, start)
        return state.advance(value, points, carry)
