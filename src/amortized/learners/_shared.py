"""Update rules shared by the parametric and explicit learners, which differ only in ``f``.

Parametric learners refine ``θ`` of a fixed model; explicit learners refine a latent ``z`` read by a
learned decoder. Both are a flat per-task vector ``v`` with ``f(x; v)`` given by ``_forward``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from amortized.errors import ConfigError
from amortized.learners.base import Learner, loss_gradient
from amortized.learners.state import State
from amortized.nn import ChunkTokens, ObservationTokens, ProgressEmbedding, Transformer
from amortized.validation import check_positive_int

INPUT_CHOICES = ("observations", "gradients")
ADAM_BETAS = (0.9, 0.999)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Build modules under ``seed`` without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def check_update_inputs(inputs: tuple[str, ...] | list[str] | str) -> tuple[str, ...]:
    """A non-empty tuple drawn from ``("observations", "gradients")``."""
    inputs = (inputs,) if isinstance(inputs, str) else tuple(inputs)
    unknown = [name for name in inputs if name not in INPUT_CHOICES]
    if unknown or not inputs:
        raise ConfigError(f"inputs must be a non-empty subset of {INPUT_CHOICES}, got {inputs!r}")
    return tuple(name for name in INPUT_CHOICES if name in inputs)


def _adam_direction(memory: dict[str, Tensor], grad: Tensor, num_steps: Tensor) -> Tensor:
    """Adam's bias-corrected direction ``m̂ / sqrt(v̂)``, updating the moments held in ``memory``."""
    beta1, beta2 = ADAM_BETAS
    memory["grad_m"] = beta1 * memory["grad_m"] + (1 - beta1) * grad
    memory["grad_v"] = beta2 * memory["grad_v"] + (1 - beta2) * grad.square()
    t = (num_steps + 1)[:, None]
    m_hat = memory["grad_m"] / (1 - beta1**t)
    v_hat = memory["grad_v"] / (1 - beta2**t)
    return m_hat / (v_hat.sqrt() + 1e-12)


def _rows(active: Tensor) -> slice | Tensor:
    """Every task as a plain slice when all are active (no copies), else the active tasks' indices."""
    return slice(None) if bool(active.all()) else active.nonzero().squeeze(1)


def _put(full: Tensor | None, rows: slice | Tensor, part: Tensor) -> Tensor:
    """``full`` with ``rows`` replaced by ``part``, out of place so autograd sees both."""
    return part if isinstance(rows, slice) else full.index_copy(0, rows, part)


class _VectorLearner(Learner):
    """A learner whose state value is a flat per-task vector read by ``_forward(v, x)``."""

    def _forward(self, value: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _loss_of(self, x: Tensor, y: Tensor):
        return lambda value: self.likelihood.loss(self._forward(value, x), y)

    def predict(self, state: State, x: Tensor | None = None) -> Tensor:
        if x is None:
            raise ConfigError(f"{type(self).__name__}.predict needs the points x to predict")
        return self._forward(state.value, x)


class _GradientStep(_VectorLearner):
    """``v ← v - α ∇_v L(B; v)`` from a learned ``v_0``; ``α`` per entry and learned if asked.

    Meta-gradients flow through the inner gradient (second order) unless ``first_order``.
    """

    def _init_step_size(self, size: int, inner_lr: float, learn_lr: bool, first_order: bool):
        if not inner_lr > 0:
            raise ConfigError(f"inner_lr must be > 0, got {inner_lr!r}")
        log_lr = torch.full((size,), math.log(inner_lr))
        if learn_lr:
            self.log_lr = nn.Parameter(log_lr)
        else:
            self.register_buffer("log_lr", log_lr)
        self.first_order = bool(first_order)

    def _step(self, state: State, x: Tensor, y: Tensor) -> State:
        create_graph = torch.is_grad_enabled() and not self.first_order
        grad, _ = loss_gradient(self._loss_of(x, y), state.value, create_graph=create_graph)
        return state.advance(state.value - self.log_lr.exp() * grad, x.shape[1])


class _TransformerUpdate(_VectorLearner):
    """``v ← v + h_φ(tokens)``: a transformer reads the state and the mini-batch and outputs an update.

    State tokens hold chunks of ``v`` (and, with gradient inputs, of the normalised gradient and of
    Adam's direction from running moments kept in the state) plus an embedding of the state's
    progress (points seen, steps taken, gradient scale). Observation tokens hold ``[x, y, f(x; v)]``.
    Optional memory tokens persist across steps (trained when gradients cross steps: ``truncated``
    or ``full`` objectives).

    ``refinements > 1`` applies the transformer that many times per mini-batch, each time with the
    gradient and predictions at the refined state and its displacement from the step's start: an
    early step can then nearly solve its batch (as a posterior update solves a small linear system)
    instead of taking one gradient-like move. ``scale_by_share`` multiplies each update by
    ``B / (seen + B)``, so the rule's outputs keep one scale while its steps shrink like a
    posterior's (``1/t``) as evidence, re-reads included, accumulates. ``momentum`` (with
    refinements) adds the previous refinement's update and the gradient change it caused: with a
    direction and the curvature along it, refinements can act like conjugate-gradient or
    quasi-Newton steps rather than preconditioned gradient steps. ``taper_refinements`` applies
    ``ceil(refinements · B / (seen + B))`` of them per step: as evidence accumulates the posterior's
    system is better conditioned and its update nears a gradient step, so late steps (the bulk of a
    long run, in training too) cost one pass.
    """

    def _build(
        self,
        size: int,
        inputs: tuple[str, ...],
        width: int,
        depth: int,
        heads: int,
        chunk_size: int,
        memory_tokens: int,
        refinements: int = 1,
        scale_by_share: bool = False,
        momentum: bool = False,
        taper_refinements: bool = False,
    ) -> None:
        self.inputs = check_update_inputs(inputs)
        self.scale_by_share = bool(scale_by_share)
        self.uses_gradients = "gradients" in self.inputs
        self.refinements = check_positive_int("refinements", refinements)
        refining = self.refinements > 1
        if momentum and not refining:
            raise ConfigError("momentum needs refinements > 1: it reads the previous refinement's update")
        self.momentum = bool(momentum)
        self.taper_refinements = bool(taper_refinements)
        num_features = (3 if self.uses_gradients else 1) + refining
        num_features += self.momentum * (1 + self.uses_gradients)
        self.chunks = ChunkTokens(size, chunk_size, num_features, width)
        self.progress = ProgressEmbedding(5 + self.uses_gradients + refining, width)
        self.observations = (
            ObservationTokens(self.input_dim, self.output_dim, self.num_classes, width, True)
            if "observations" in self.inputs
            else None
        )
        self.transformer = Transformer(width, depth, heads)
        self.memory_tokens = memory_tokens
        if memory_tokens:
            self.memory0 = nn.Parameter(torch.randn(memory_tokens, width) * 0.02)

    def _initial(self, value: Tensor) -> State:
        memory = {}
        if self.uses_gradients:
            memory = {"grad_m": torch.zeros_like(value), "grad_v": torch.zeros_like(value)}
        if self.memory_tokens:
            memory["tokens"] = self.memory0.expand(value.shape[0], -1, -1)
        return State.initial(value, memory)

    def _refinement_counts(self, state: State, batch_points: int) -> Tensor:
        """Transformer passes per task ``[tasks]`` for this step: all, or tapered by the batch's share."""
        if not self.taper_refinements:
            return torch.full(state.num_seen.shape, self.refinements, device=state.num_seen.device)
        counts = torch.ceil(self.refinements * state.share(batch_points) - 1e-6)
        return counts.long().clamp(min=1)

    def _step(self, state: State, x: Tensor, y: Tensor) -> State:
        memory = dict(state.memory)
        start = value = state.value
        points = x.shape[1]
        scale = state.share(points)[:, None] if self.scale_by_share else torch.ones_like(value[:, :1])
        step_progress = state.progress_features(points)
        counts = self._refinement_counts(state, points)
        num_chunks = self.chunks.num_chunks
        last_output = last_grad = last_rms = None
        for refinement in range(int(counts.max())):
            rows = _rows(counts > refinement)
            task_value, task_x, task_y = value[rows], x[rows], y[rows]
            progress = step_progress[rows]
            features = [task_value]
            if self.uses_gradients:
                loss_of = self._loss_of(task_x, task_y)
                grad, _ = loss_gradient(loss_of, task_value, create_graph=False)
                if refinement == 0:
                    adam = _adam_direction(memory, grad, state.num_steps)
                rms = grad.square().mean(-1, keepdim=True).sqrt()
                features += [grad / (rms + 1e-12), adam[rows]]
                progress = torch.cat([progress, torch.log(rms + 1e-12) / 10], -1)
            if self.refinements > 1:
                features.append(task_value - start[rows])
                fraction = refinement / counts[rows, None].to(task_value.dtype)
                progress = torch.cat([progress, fraction], -1)
            if self.momentum and refinement == 0:
                features += [torch.zeros_like(task_value)] * (1 + self.uses_gradients)
            elif self.momentum:
                features.append(last_output[rows])
                if self.uses_gradients:
                    features.append((grad - last_grad[rows]) / (last_rms[rows] + 1e-12))
            if self.momentum and self.uses_gradients:
                last_grad, last_rms = _put(last_grad, rows, grad), _put(last_rms, rows, rms)
            tokens = [self.chunks(features) + self.progress(progress)]
            if self.memory_tokens:
                tokens.append(memory["tokens"][rows])
            if self.observations is not None:
                tokens.append(self.observations(task_x, task_y, self._forward(task_value, task_x)))
            out = self.transformer(torch.cat(tokens, 1))
            if self.memory_tokens:
                new_tokens = out[:, num_chunks : num_chunks + self.memory_tokens]
                memory["tokens"] = _put(memory["tokens"], rows, new_tokens)
            output = self.chunks.decode(out[:, :num_chunks])
            last_output = _put(last_output, rows, output)
            value = _put(value, rows, task_value + scale[rows] * output)
        return state.advance(value, points, memory)
