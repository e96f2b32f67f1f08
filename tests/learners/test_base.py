import pytest
import torch

from amortized import adapt
from amortized.errors import DTypeError, LabelError, NonFiniteError, ShapeError
from amortized.learners import SGD, LearnedInit, State, minibatches
from amortized.learners.rules import AdamMoments, TransformerCarry
from amortized.models import Linear


def test_minibatches_cover_each_pass_once_then_reshuffle():
    x = torch.arange(10.0).view(1, 10, 1).repeat(2, 1, 1)
    y = x.clone()
    batches = list(minibatches(x, y, 4, num_steps=6, generator=torch.Generator().manual_seed(0)))
    assert [b[0].shape[1] for b in batches] == [4, 4, 2, 4, 4, 2]
    first_pass = torch.cat([b[0] for b in batches[:3]], 1)
    second_pass = torch.cat([b[0] for b in batches[3:]], 1)
    assert torch.equal(first_pass.sort(1).values, x) and torch.equal(second_pass.sort(1).values, x)
    assert not torch.equal(first_pass, second_pass)
    assert not torch.equal(first_pass[0], first_pass[1])
    assert all(torch.equal(bx, by) for bx, by in batches)


def test_minibatches_default_is_one_pass_and_seed_fixes_order():
    x, y = torch.randn(3, 9, 2), torch.randint(0, 3, (3, 9))
    one = list(minibatches(x, y, 4, generator=torch.Generator().manual_seed(1)))
    two = list(minibatches(x, y, 4, generator=torch.Generator().manual_seed(1)))
    assert len(one) == 3
    assert all(torch.equal(a[1], b[1]) for a, b in zip(one, two, strict=True))


def test_adapt_counts_steps_and_points():
    learner = SGD(Linear(2), lr=0.1)
    x, y = torch.randn(3, 10, 2), torch.randn(3, 10, 1)
    state = adapt(learner, x, y, batch_size=4, num_steps=5)
    assert torch.equal(state.num_steps, torch.full((3,), 5.0))
    assert torch.equal(state.num_seen, torch.tensor([4.0 + 4 + 2 + 4 + 4] * 3))


def test_state_cat_and_detach_reach_the_typed_carry():
    moments = AdamMoments.zeros_like(torch.ones(2, 3))
    a = State.initial(torch.ones(2, 3, requires_grad=True), TransformerCarry(moments, torch.ones(2, 4, 5)))
    b = a.advance(a.value * 2, 5, TransformerCarry(moments, torch.ones(2, 4, 5, requires_grad=True) * 2))
    both = State.cat([a, b])
    assert both.value.shape == (4, 3) and torch.equal(both.num_seen, torch.tensor([0.0, 0, 5, 5]))
    assert both.carry.moments.first.shape == (4, 3) and both.carry.tokens.shape == (4, 4, 5)
    assert torch.equal(both.carry.tokens[:, 0, 0], torch.tensor([1.0, 1, 2, 2]))
    detached = b.detach()
    assert not detached.value.requires_grad and not detached.carry.tokens.requires_grad
    with pytest.raises(TypeError, match="not dict"):
        State.cat([State.initial(torch.ones(1, 2), {"m": torch.ones(1, 2)})] * 2)
    features = b.progress_features(5)
    assert features.shape == (2, 5) and torch.allclose(features[:, 0], torch.full((2,), 0.5))


@pytest.mark.parametrize(
    ("x", "y", "error", "match"),
    [
        (
            torch.randn(3, 10),
            torch.randn(3, 10, 1),
            ShapeError,
            r"x must have shape \[tasks, points, features\]",
        ),
        (torch.randn(3, 10, 5), torch.randn(3, 10, 1), ShapeError, "input width 2"),
        (torch.randn(3, 10, 2), torch.randn(3, 9, 1), ShapeError, "y must have shape"),
        (torch.randint(0, 3, (3, 10, 2)), torch.randn(3, 10, 1), DTypeError, "floating-point"),
        (torch.full((3, 10, 2), float("nan")), torch.randn(3, 10, 1), NonFiniteError, "NaN"),
        (torch.randn(3, 10, 2), torch.full((3, 10, 1), float("inf")), NonFiniteError, "y contains"),
        (torch.randn(3, 0, 2), torch.randn(3, 0, 1), ShapeError, "empty"),
        ([[1.0]], torch.randn(3, 10, 1), DTypeError, "torch.Tensor"),
    ],
)
def test_adapt_rejects_bad_regression_data(x, y, error, match):
    with pytest.raises(error, match=match):
        adapt(SGD(Linear(2), lr=0.1), x, y, batch_size=4)


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (torch.randn(3, 10, 2).double(), torch.randn(3, 10, 1), "x is torch.float64 but"),
        (torch.randn(3, 10, 2), torch.randn(3, 10, 1).half(), "y is torch.float16 but"),
    ],
)
def test_a_learner_with_weights_refuses_data_of_another_float_dtype(x, y, match):
    with pytest.raises(DTypeError, match=match):
        adapt(LearnedInit(Linear(2)), x, y, batch_size=4)


def test_adapt_rejects_bad_labels():
    learner = SGD(Linear(2, 3), lr=0.1, task="classification")
    x = torch.randn(2, 6, 2)
    with pytest.raises(LabelError, match=r"\[0, 2\]"):
        adapt(learner, x, torch.full((2, 6), 3), batch_size=3)
    with pytest.raises(DTypeError, match="integer class labels"):
        adapt(learner, x, torch.zeros(2, 6), batch_size=3)
    with pytest.raises(ShapeError, match="query_x has 1 tasks"):
        adapt(learner, x, torch.zeros(2, 6, dtype=torch.long), batch_size=3, query_x=torch.randn(1, 2, 2))


@pytest.mark.parametrize(
    ("make_state", "x", "y", "error", "match"),
    [
        (lambda s: s, torch.randn(3, 4, 5), torch.randn(3, 4, 1), ShapeError, "batch_x has 5 features"),
        (lambda s: s, torch.randn(3, 4, 2), torch.ones(3, 4, 1).long(), DTypeError, "batch_y must be a fl"),
        (lambda s: s, torch.full((3, 4, 2), float("nan")), torch.randn(3, 4, 1), NonFiniteError, "batch_x"),
        (lambda s: s, torch.randn(2, 4, 2), torch.randn(2, 4, 1), ShapeError, "2 tasks but the state 3"),
        (lambda s: s.value, torch.randn(3, 4, 2), torch.randn(3, 4, 1), DTypeError, "state must be a State"),
    ],
)
def test_step_checks_the_state_and_the_mini_batch(make_state, x, y, error, match):
    learner = SGD(Linear(2), lr=0.1)
    state = make_state(learner.init_state(3))
    with pytest.raises(error, match=match):
        learner.step(state, x, y)


def test_step_on_a_checked_batch_equals_the_update():
    learner = SGD(Linear(2), lr=0.1)
    state, x, y = learner.init_state(3), torch.randn(3, 4, 2), torch.randn(3, 4, 1)
    assert torch.equal(learner.step(state, x, y).value, learner._step(state, x, y).value)
