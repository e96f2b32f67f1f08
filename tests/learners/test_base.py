from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from amortized import adapt
from amortized.errors import DTypeError, LabelError, NonFiniteError, ShapeError
from amortized.learners import SGD, BayesLinearRegression, InContext, LearnedInit, Learner, State, minibatches
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


def test_minibatches_without_a_generator_read_the_same_order_in_every_process():
    x, y = torch.randn(3, 9, 2), torch.randint(0, 3, (3, 9))
    torch.manual_seed(1)  # the global generator, random per process, plays no part
    first = list(minibatches(x, y, 4, num_steps=5))
    torch.manual_seed(2)
    second = list(minibatches(x, y, 4, num_steps=5))
    seeded = list(minibatches(x, y, 4, num_steps=5, generator=torch.Generator().manual_seed(0)))
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[0], c[0])
        for a, b, c in zip(first, second, seeded, strict=True)
    )


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


def test_adapt_rejects_bad_labels():
    learner = SGD(Linear(2, 3), lr=0.1, task="classification")
    x = torch.randn(2, 6, 2)
    with pytest.raises(LabelError, match=r"\[0, 2\]"):
        adapt(learner, x, torch.full((2, 6), 3), batch_size=3)
    with pytest.raises(DTypeError, match=r"integer class labels, got torch\.float32 with fractional"):
        adapt(learner, x, torch.full((2, 6), 0.5), batch_size=3)
    with pytest.raises(NonFiniteError, match="y contains NaN"):
        adapt(learner, x, torch.full((2, 6), float("nan")), batch_size=3)
    with pytest.raises(DTypeError, match=r"integer class labels, got torch\.bool"):
        adapt(learner, x, torch.zeros(2, 6, dtype=torch.bool), batch_size=3)
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


FLOATS = st.sampled_from([torch.float64, torch.float16, torch.bfloat16, torch.float32])
FAST = settings(max_examples=8, deadline=None)


@FAST
@given(x_dtype=FLOATS, y_dtype=FLOATS, query_dtype=FLOATS)
def test_floats_of_any_precision_are_cast_to_the_learners_dtype(x_dtype, y_dtype, query_dtype):
    """What numpy gives (float64) or half precision works, exactly as the same values in float32."""
    generator = torch.Generator().manual_seed(0)
    x, y, query = (torch.randn(shape, generator=generator) for shape in ((2, 6, 2), (2, 6, 1), (2, 3, 2)))
    x, y, query = x.to(x_dtype), y.to(y_dtype), query.to(query_dtype)
    learner = LearnedInit(Linear(2))
    state = adapt(learner, x, y, batch_size=3, generator=torch.Generator().manual_seed(1))
    expected = adapt(learner, x.float(), y.float(), batch_size=3, generator=torch.Generator().manual_seed(1))
    assert state.value.dtype == torch.float32 and torch.equal(state.value, expected.value)
    assert torch.equal(learner.predict(state, query), learner.predict(state, query.float()))
    in_context = InContext(2, rule={"width": 8, "depth": 1, "heads": 2})
    direct = in_context.step(in_context.init_state(2, query), x, y)  # query points as given
    as_float = in_context.step(in_context.init_state(2, query.float()), x.float(), y.float())
    assert torch.equal(in_context.predict(direct, query), in_context.predict(as_float))
    through_adapt = adapt(in_context, x, y, batch_size=6, query_x=query)  # the points in another order
    torch.testing.assert_close(in_context.predict(through_adapt), in_context.predict(as_float))


def test_data_given_to_a_learner_move_to_its_weights_device():
    """A learner on a GPU takes data from the CPU: checked there, then moved (``meta`` stands in)."""
    x, y = torch.randn(2, 6, 2), torch.randn(2, 6, 1)
    learner = LearnedInit(Linear(2))
    assert learner.device == torch.device("cpu") and learner.check_data("", x, y)[0] is x
    learner.to("meta")
    moved_x, moved_y = learner.check_data("", x, y)
    assert moved_x.device.type == moved_y.device.type == "meta"
    assert learner.check_inputs("query_x", x).device.type == "meta"
    with pytest.raises(NonFiniteError, match="x contains NaN or infinity"):
        learner.check_data("", x.clone().fill_(float("nan")), y)  # checked before it moves
    assert SGD(Linear(2), lr=0.1).device is not None and BayesLinearRegression(2, 0.5).device is None


def test_class_labels_may_be_whole_floats():
    learner = SGD(Linear(2, 3), lr=0.1, task="classification")
    x, labels = torch.randn(2, 6, 2), torch.randint(0, 3, (2, 6))
    as_floats = adapt(learner, x.double(), labels.double(), batch_size=3, generator=torch.Generator())
    assert torch.equal(
        as_floats.value, adapt(learner, x, labels, batch_size=3, generator=torch.Generator()).value
    )


@pytest.mark.parametrize(
    ("make_state", "x", "error", "match"),
    [
        (lambda s: s, torch.full((3, 4, 2), float("nan")), NonFiniteError, "x contains NaN"),
        (lambda s: s, torch.full((3, 4, 2), 1e300, dtype=torch.float64), NonFiniteError, "too large for"),
        (lambda s: s, torch.ones(3, 4, 2, dtype=torch.long), DTypeError, "x must be a floating-point"),
        (lambda s: s, torch.ones(3, 4, 5), ShapeError, "x has 5 features"),
        (lambda s: s, torch.ones(2, 4, 2), ShapeError, "x holds 2 tasks but the state 3"),
        (lambda s: s.value, torch.ones(3, 4, 2), DTypeError, "state must be a State"),
        (
            lambda s: replace(s, value=s.value.index_fill(0, torch.tensor([1]), float("nan"))),
            torch.ones(3, 4, 2),
            NonFiniteError,
            r"state holds NaN or infinity for 1 of 3 tasks \(tasks 1\)",
        ),
    ],
)
def test_predict_checks_the_state_and_x(make_state, x, error, match):
    learner = SGD(Linear(2), lr=0.1)
    state = make_state(adapt(learner, torch.randn(3, 4, 2), torch.randn(3, 4, 1), batch_size=4))
    with pytest.raises(error, match=match):
        learner.predict(state, x)


def test_a_diverging_step_names_the_step_and_the_tasks():
    learner = SGD(Linear(2), lr=1.0)
    x, y = torch.randn(3, 8, 2), torch.randn(3, 8, 1)
    x[1] *= 1e10  # finite, but the gradient steps of task 1 overflow
    with pytest.raises(NonFiniteError, match=r"step [2-9] gave NaN or infinity for 1 of 3 tasks \(tasks 1\)"):
        adapt(learner, x, y, batch_size=8, num_steps=8)
    state = learner.init_state(3)
    for _ in range(8):  # meta-training steps unchecked: it checks its loss instead
        state = learner.step(state, x, y, check_finite=False)
    assert not torch.isfinite(state.value[1]).all() and torch.isfinite(state.value[[0, 2]]).all()
    with pytest.raises(NonFiniteError, match="the state it was given already held NaN"):
        learner.step(state, x[:, :4], y[:, :4])


def test_nan_weights_are_named_when_they_spoil_a_step():
    learner = LearnedInit(Linear(2))
    with torch.no_grad():
        learner.representation.theta0[0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"step 1 .* 3 of 3 tasks .*weight representation\.theta0"):
        adapt(learner, torch.randn(3, 4, 2), torch.randn(3, 4, 1), batch_size=4)


class _Legacy(Learner):
    """A learner written to the protocol before ``_predict``: it overrides ``predict`` itself."""

    regime = "baseline"

    def init_state(self, num_tasks, query_x=None):
        return State.initial(torch.zeros(num_tasks, 1))

    def predict(self, state, x=None):
        return torch.full((*x.shape[:2], 1), float("inf"))


def test_a_learner_that_overrides_predict_is_checked_all_the_same():
    learner = _Legacy(2, 1, "regression")
    with pytest.raises(NonFiniteError, match=r"predict gave NaN or infinity for 2 of 2 tasks \(tasks 0, 1\)"):
        learner.predict(learner.init_state(2), torch.zeros(2, 3, 2))
    assert torch.isinf(learner.predict(learner.init_state(2), torch.zeros(2, 3, 2), check_finite=False)).all()
    with pytest.raises(NonFiniteError, match="x contains NaN"):
        learner.predict(learner.init_state(2), torch.full((2, 3, 2), float("nan")), check_finite=False)


def test_adaptation_yields_each_state_and_adapt_keeps_the_last():
    from amortized.learners import SGD, adapt, adaptation
    from amortized.models import Linear

    learner = SGD(Linear(2), 0.1)
    x = torch.randn(3, 20, 2, generator=torch.Generator().manual_seed(0))
    y = x.sum(-1, keepdim=True)
    states = list(
        adaptation(learner, x, y, batch_size=8, num_steps=5, generator=torch.Generator().manual_seed(1))
    )
    assert [int(state.num_steps[0]) for state in states] == [1, 2, 3, 4, 5]
    assert [int(state.num_seen[0]) for state in states] == [8, 16, 20, 28, 36]  # a pass is 8 + 8 + 4
    last = adapt(learner, x, y, batch_size=8, num_steps=5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(last.value, states[-1].value)
    assert not states[-1].value.requires_grad
    losses = [float(learner.likelihood.loss(learner.predict(s, x), y).mean()) for s in states]
    assert losses[-1] < 0.5 * losses[0]  # SGD on a linear target: each step moves towards it
