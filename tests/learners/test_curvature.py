"""Accumulated curvature: per-task loss Hessians, their running mean and the Newton direction."""

import pytest
import torch

from amortized.errors import ConfigError
from amortized.learners import LearnedUpdate
from amortized.learners.rules.curvature import DAMPING, RunningCurvature, loss_hessian
from amortized.models import MLP, Linear


def _linear_tasks(num_tasks=3, points=40, dim=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_tasks, points, dim, generator=generator)
    y = x @ torch.randn(num_tasks, dim, 1, generator=generator) + 0.3
    return x, y + 0.1 * torch.randn(y.shape, generator=generator)


def test_the_hessian_of_a_squared_loss_is_the_design_s_gram_matrix():
    x, y = _linear_tasks()
    learner = LearnedUpdate(Linear(3))
    value = torch.randn(3, 4, dtype=torch.float64)
    _, hessian = loss_hessian(learner.loss_of(x.double(), y.double()), value)
    design = torch.cat([x, torch.ones_like(x[..., :1])], -1).double()
    gram = design.transpose(1, 2) @ design / x.shape[1]
    scale = hessian[:, -1, -1] / gram[:, -1, -1]  # the loss's constant factor (mean squared error: 2)
    torch.testing.assert_close(hessian, scale[:, None, None] * gram)
    torch.testing.assert_close(scale, torch.full_like(scale, scale[0].item()))


def test_the_hessian_of_each_task_is_its_own():
    model = MLP(2, 1, hidden=(4,), activation="tanh")
    x, y = torch.randn(2, 8, 2, dtype=torch.float64), torch.randn(2, 8, 1, dtype=torch.float64)
    learner = LearnedUpdate(model)
    value = torch.randn(2, model.num_params, dtype=torch.float64)
    _, hessian = loss_hessian(learner.loss_of(x, y), value)
    for task in range(2):
        one = torch.autograd.functional.hessian(
            lambda v, task=task: learner.loss_of(x[task : task + 1], y[task : task + 1])(v[None])[0],
            value[task],
        )
        torch.testing.assert_close(hessian[task], one)


def test_one_newton_step_from_any_value_lands_on_the_least_squares_solution():
    x, y = _linear_tasks(points=64)
    learner = LearnedUpdate(Linear(3))
    x, y = x.double(), y.double()
    value = torch.randn(3, 4, dtype=torch.float64)
    loss_of = learner.loss_of(x, y)
    grad, hessian = loss_hessian(loss_of, value)
    leaf = value.clone().requires_grad_()
    (expected,) = torch.autograd.grad(loss_of(leaf).sum(), leaf)
    torch.testing.assert_close(grad, expected)  # the gradient comes with the Hessian
    curvature = RunningCurvature.zeros_like(value).update(hessian, torch.ones(3))
    solution = value - curvature.newton(grad, torch.full((3,), 10**6))
    design = torch.cat([x, torch.ones_like(x[..., :1])], -1)
    exact = torch.linalg.lstsq(design, y).solution[..., 0]
    assert (solution - exact).abs().max() < 1e-3  # the damping, 1e-4 of the curvature, barely pulls back
    assert (value.detach() - exact).abs().max() > 0.5


def test_the_running_curvature_weighs_each_batch_by_its_share_of_the_points():
    first, second = torch.eye(2)[None] * 2, torch.eye(2)[None] * 6
    curvature = RunningCurvature.zeros_like(torch.zeros(1, 2))
    curvature = curvature.update(first, torch.tensor([1.0])).update(second, torch.tensor([0.25]))
    torch.testing.assert_close(curvature.mean, torch.eye(2)[None] * 3)  # 32 points at 2, then 8 at 6


def test_the_damping_fades_with_the_points_read():
    curvature = RunningCurvature(torch.eye(2)[None] * 4)
    grad = torch.ones(1, 2)
    early, late = (curvature.newton(grad, torch.tensor([n])) for n in (1, 10_000))
    torch.testing.assert_close(early, grad / (4 * (2 + DAMPING)))
    torch.testing.assert_close(late, grad / (4 * (1 + DAMPING + 1e-4)))


def test_an_untrained_newton_update_is_recursive_least_squares_over_mini_batches():
    x, y = _linear_tasks(num_tasks=2, points=64, seed=3)
    learner = LearnedUpdate(Linear(3), rule={"inputs": ["gradients", "newton"], "width": 16, "heads": 2})
    state = learner.init_state(2)
    for start in range(0, 64, 16):
        state = learner.step(state, x[:, start : start + 16], y[:, start : start + 16])
    design = torch.cat([x, torch.ones_like(x[..., :1])], -1)
    exact = torch.linalg.lstsq(design, y).solution[..., 0]
    assert (state.value - exact).abs().max() < 0.05


def test_newton_inputs_refuse_values_too_large_for_a_curvature_matrix():
    with pytest.raises(ConfigError, match="curvature matrix per task"):
        LearnedUpdate(MLP(8, 1, hidden=(64, 64)), rule={"inputs": ["gradients", "newton"]})


def test_the_latent_learner_reads_the_newton_direction_only_when_asked():
    from amortized.learners import LatentUpdate

    assert not LatentUpdate(2, latent_dim=8, decoder_hidden=(16,)).rule.spec.uses_newton
    learner = LatentUpdate(
        2, latent_dim=8, decoder_hidden=(16,), rule={"inputs": ["observations", "gradients", "newton"]}
    )
    x, y = _linear_tasks(num_tasks=2, points=16, dim=2)
    state = learner.step(learner.init_state(2), x, y)
    assert state.carry.curvature.mean.shape == (2, 8, 8)
    assert torch.isfinite(state.value).all()


def test_where_the_curvature_is_indefinite_the_newton_direction_still_descends():
    """A saddle: the plain solve would climb along the negative direction; the saddle-free one descends,
    and a positive-definite task in the same batch keeps its exact solve."""
    saddle = torch.diag(torch.tensor([2.0, -1.0], dtype=torch.float64))
    bowl = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    curvature = RunningCurvature(torch.stack([saddle, bowl]))
    grad = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    direction = curvature.newton(grad, torch.full((2,), 10**6))
    assert (direction * grad).sum(-1).min() > 0  # -direction descends for both tasks
    damping = 1.5 * (DAMPING + 1e-6)  # the saddle's mean |diagonal| times the relative damping
    torch.testing.assert_close(direction[0], grad[0] / (torch.tensor([2.0, 1.0]).double() + damping))
    exact = torch.linalg.solve(bowl + 1.5 * (DAMPING + 1e-6) * torch.eye(2).double(), grad[1])
    torch.testing.assert_close(direction[1], exact)


def test_a_slightly_negative_eigenvalue_cannot_make_the_newton_direction_explode():
    """An eigenvalue just below zero, but above ``-δ``: ``H̄ + δ I`` is still positive definite, yet
    nearly singular, so a plain solve divides by ``λ + δ ≈ 0``. The direction stays within ``|g| / δ``
    (the saddle-free bound), as the explicit learner's Newton step needs (it diverged on such tasks)."""
    num_seen = torch.tensor([100.0])
    scale = 1.0  # mean |diagonal| of diag(2, -ε): (2 + ε) / 2 ≈ 1
    damping = scale * (DAMPING + 1 / 100)
    nearly_cancelling = -0.999 * damping
    curvature = RunningCurvature(
        torch.diag(torch.tensor([2.0, nearly_cancelling], dtype=torch.float64))[None]
    )
    grad = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    direction = curvature.newton(grad, num_seen)
    assert direction.norm() <= 1.01 / damping  # the plain solve: 1 / (0.001 δ), a thousand times longer
    assert (direction * grad).sum() > 0
