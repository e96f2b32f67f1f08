"""Accumulated curvature for update rules: the loss's Hessian averaged over every point read.

A step that only reads its mini-batch can solve that batch, but a posterior (recursive least
squares, for a linear model) solves the system of every point read so far: its step is the batch's
gradient preconditioned by the accumulated curvature. :class:`RunningCurvature` keeps the running
mean of the batches' loss Hessians with respect to the task value (the same share weights as the
running mean of the points, re-reads included), and :meth:`RunningCurvature.newton` turns a gradient
into that step's direction. For a linear model with squared loss the Hessian does not depend on the
value and ``-share · newton(gradient)`` is the posterior update exactly (up to the prior's damping);
for other models it is an online Newton direction. Its cost is a ``P × P`` matrix per task, so it is
for values of at most :data:`MAX_SIZE` entries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from amortized.learners.running import running_average

MAX_SIZE = 1024
"""The largest value (entries) whose curvature a rule keeps: a ``P × P`` matrix per task, solved every
refinement."""
DAMPING = 1e-4
"""Damping relative to the curvature's mean diagonal, added to a unit-strength prior that fades as
``1 / points read``: directions the data have not constrained get a bounded step."""


def loss_hessian(loss_of: Callable[[Tensor], Tensor], value: Tensor) -> tuple[Tensor, Tensor]:
    """Per-task gradient ``[tasks, P]`` and Hessian ``[tasks, P, P]`` of the per-task losses
    ``loss_of(value)`` w.r.t. ``value``, from one forward pass.

    Detached, like the gradient features: a rule reads curvature, it does not differentiate it.
    """
    size = value.shape[1]
    zeros = value.new_zeros(value.shape[0], size, size)
    with torch.enable_grad():
        leaf = value.detach().requires_grad_()
        (grad,) = torch.autograd.grad(loss_of(leaf).sum(), leaf, create_graph=True)
        if not grad.requires_grad:
            return grad.detach(), zeros
        basis = torch.eye(size, dtype=value.dtype, device=value.device)[:, None]
        basis = basis.expand(-1, value.shape[0], -1)
        (rows,) = torch.autograd.grad(grad, leaf, basis, is_grads_batched=True, allow_unused=True)
    if rows is None:
        return grad.detach(), zeros
    hessian = rows.detach().transpose(0, 1)
    return grad.detach(), (hessian + hessian.transpose(1, 2)) / 2


@dataclass
class RunningCurvature:
    """The running mean ``[tasks, P, P]`` of the loss Hessians of the batches read."""

    mean: Tensor

    @classmethod
    def zeros_like(cls, value: Tensor) -> RunningCurvature:
        return cls(value.new_zeros(value.shape[0], value.shape[1], value.shape[1]))

    def update(self, hessian: Tensor, share: Tensor) -> RunningCurvature:
        """After a batch whose Hessian is ``hessian``, weighted by its ``share`` ``[tasks]`` of the points."""
        return RunningCurvature(running_average(self.mean, hessian, share))

    def newton(self, grad: Tensor, num_seen: Tensor) -> Tensor:
        """``(H̄ + δ I)^{-1} g`` for gradients ``[tasks, P]``, with ``num_seen`` ``[tasks]`` points read.

        ``δ = mean diag(H̄) · (DAMPING + 1 / num_seen)``: scale-free, and fading as evidence grows.
        Where ``H̄`` has an eigenvalue below ``-DAMPING · mean diag`` (a nonlinear model's curvature
        can be negative along some directions), the direction is saddle-free: ``(|H̄| + δ I)^{-1} g``,
        ``|H̄|`` having the absolute eigenvalues, so it still descends and its length stays bounded by
        ``|g| / δ`` (a plain solve there could divide by ``λ + δ`` near zero).
        """
        size = self.mean.shape[-1]
        diagonal = self.mean.diagonal(dim1=1, dim2=2)
        scale = diagonal.abs().mean(-1).clamp(min=1e-12)
        damping = scale * (DAMPING + 1 / num_seen.clamp(min=1).to(grad.dtype))
        identity = torch.eye(size, dtype=grad.dtype, device=grad.device)
        system = self.mean + damping[:, None, None] * identity
        direction = torch.linalg.solve(system, grad[..., None])[..., 0]
        floor = self.mean + (scale * DAMPING)[:, None, None] * identity
        indefinite = torch.linalg.cholesky_ex(floor).info > 0
        if not bool(indefinite.any()):
            return direction
        values, vectors = torch.linalg.eigh(self.mean[indefinite])
        inverse = 1 / (values.abs() + damping[indefinite, None])
        rotated = (vectors.transpose(1, 2) @ grad[indefinite, :, None])[..., 0]
        saddle_free = (vectors @ (inverse * rotated)[..., None])[..., 0]
        return direction.index_put((indefinite.nonzero()[:, 0],), saddle_free)
