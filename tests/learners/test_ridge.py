"""The running ridge regression, and ``InContext``'s readout built on it."""

import pytest
import torch

import amortized
from amortized.errors import ConfigError
from amortized.learners import BayesLinearRegression, InContext
from amortized.learners.rules.ridge import RunningRidge
from amortized.tasks import LinearClassification, LinearRegression
from amortized.training import evaluate_tasks

from .conftest import TINY
from .test_learned import REGRESSION_TRAINING


def _closed_form(keys, values, query, penalty):
    system = keys.transpose(1, 2) @ keys + torch.diag(penalty)
    weights = torch.linalg.solve(system, keys.transpose(1, 2) @ values)
    leverage = (query * torch.linalg.solve(system, query.transpose(1, 2)).transpose(1, 2)).sum(-1)
    return query @ weights, leverage[..., None]


def test_running_ridge_over_batches_is_ridge_over_every_point_read():
    generator = torch.Generator().manual_seed(0)
    keys, values = torch.randn(3, 40, 5, generator=generator), torch.randn(3, 40, 2, generator=generator)
    query = torch.randn(3, 7, 5, generator=generator)
    penalty = torch.tensor([0.5, 1.0, 2.0, 0.1, 3.0])
    ridge, seen = RunningRidge.zeros(3, 5, 2, keys), torch.zeros(3)
    for start, stop in ((0, 8), (8, 24), (24, 40)):
        points = stop - start
        ridge = ridge.update(keys[:, start:stop], values[:, start:stop], points / (seen + points))
        seen = seen + points
    predictions, leverage = ridge.readout(query, seen, penalty)
    expected, expected_leverage = _closed_form(*(t.double() for t in (keys, values, query, penalty)))
    torch.testing.assert_close(predictions.double(), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(leverage.double(), expected_leverage, rtol=1e-4, atol=1e-5)


def test_the_readout_is_zero_before_any_point():
    ridge = RunningRidge.zeros(2, 4, 1, torch.zeros(()))
    predictions, _ = ridge.readout(torch.randn(2, 3, 4), torch.zeros(2), torch.ones(4))
    assert torch.equal(predictions, torch.zeros(2, 3, 1))


def test_an_untrained_in_context_learner_reads_the_posterior_mean():
    """With noise 1 and a unit prior, the readout's initial penalty is the prior's: its predictions
    are the Bayes posterior mean (up to the bias and learned keys, nearly unused at first)."""
    family = LinearRegression(4, noise=1.0)
    tasks = family.sample(64, 64, 32, torch.Generator().manual_seed(3))

    def excess(learner, k):
        return evaluate_tasks(learner, tasks, batch_size=16, num_steps=k, seed=1)["excess_mse"]

    learner, bayes = InContext(4, rule=TINY), BayesLinearRegression(4, noise=1.0)
    for k in (1, 4):
        assert excess(learner, k) < 1.1 * excess(bayes, k), (k, excess(learner, k), excess(bayes, k))


@pytest.mark.parametrize("base_gate", [False, True], ids=["ungated", "gated"])
def test_training_learns_the_prior_the_readout_starts_without(tiny_family, held_out, base_gate):
    """On tasks with little noise the unit prior over-shrinks from 8 points; training corrects it
    (k = 1 excess 0.200 → 0.087 on this seed, gated 0.095; Bayes's 0.0067)."""
    learner = InContext(2, base_gate=base_gate, rule=TINY)

    def excess(k):
        return evaluate_tasks(learner, held_out, batch_size=8, num_steps=k, seed=1)["excess_mse"]

    untrained = {k: excess(k) for k in (1, 4)}
    amortized.train(learner, tiny_family, lr=3e-3, **REGRESSION_TRAINING)
    trained = {k: excess(k) for k in (1, 4)}
    assert trained[1] < 0.5 * untrained[1], (trained, untrained)
    assert trained[4] < untrained[4], (trained, untrained)


def test_configs_without_ridge_features_rebuild_the_learner_without_the_readout():
    learner = InContext(2, rule=TINY)
    assert learner.config["ridge_features"] == 16
    old = {name: value for name, value in learner.config.items() if name != "ridge_features"}
    rebuilt = InContext.from_config(old)
    assert rebuilt.ridge_features is None
    assert rebuilt.state_dict().keys() == InContext(2, ridge_features=None, rule=TINY).state_dict().keys()


@pytest.mark.parametrize("value", [-1, 1.5, "16"])
def test_ridge_features_must_be_a_count(value):
    with pytest.raises(ConfigError, match="ridge_features"):
        InContext(2, ridge_features=value)


def test_inputs_too_wide_for_the_readout_are_refused_with_the_way_out():
    with pytest.raises(ConfigError, match="ridge_features = None"):
        InContext(1020)
    assert InContext(1020, ridge_features=None, rule=TINY).ridge_features is None


def test_false_turns_the_readout_off_as_a_preset_writes_it():
    assert InContext(2, ridge_features=False, rule=TINY).ridge_features is None


def _adapted(learner: InContext, tasks, num_steps: int):
    """The state after ``num_steps`` mini-batches of 8 of ``tasks``' training points (a fixed order)."""
    order = torch.Generator().manual_seed(1)
    x, y, query = tasks.x_train, tasks.y_train, tasks.x_query
    return amortized.adapt(learner, x, y, batch_size=8, num_steps=num_steps, query_x=query, generator=order)


def _gated(bias: float) -> InContext:
    learner = InContext(2, base_gate=True, rule=TINY)
    with torch.no_grad():
        learner.gate.bias.fill_(bias)
    return learner


def test_the_base_gate_decides_how_much_of_the_readout_s_move_the_predictions_follow():
    """Untrained (head and gate outputs zero) the predictions follow the readout's moves fully: over
    any number of steps they are the readout. A gate output of ``g - 1`` follows ``g`` of a move: from
    the initial value (zero), one step with the gate at -1 stays there and at -0.5 goes halfway."""
    tasks = LinearRegression(2, noise=0.1).sample(3, 24, 5, torch.Generator().manual_seed(0))

    def predictions(learner, num_steps):
        state = _adapted(learner, tasks, num_steps)
        return learner.predict(state), state.carry.readout

    followed, readout = predictions(_gated(0.0), 3)
    torch.testing.assert_close(followed, readout)
    assert readout.abs().min() > 0
    kept, _ = predictions(_gated(-1.0), 1)
    torch.testing.assert_close(kept, torch.zeros_like(kept))
    half, first_readout = predictions(_gated(-0.5), 1)
    torch.testing.assert_close(half, 0.5 * first_readout, rtol=1e-5, atol=1e-6)


def test_configs_without_the_base_gate_rebuild_the_learner_without_it():
    learner = InContext(2, base_gate=True, rule=TINY)
    assert learner.config["base_gate"] is True and learner.gate is not None
    old = {name: value for name, value in learner.config.items() if name != "base_gate"}
    rebuilt = InContext.from_config(old)
    assert rebuilt.gate is None
    assert rebuilt.state_dict().keys() == InContext(2, base_gate=False, rule=TINY).state_dict().keys()


def test_the_base_gate_is_opt_in_and_needs_a_base():
    assert InContext(2, rule=TINY).gate is None
    with pytest.raises(ConfigError, match=r"base_gate .*\(ridge_features\)"):
        InContext(2, ridge_features=None, base_gate=True, rule=TINY)
    with pytest.raises(ConfigError, match="logistic_base"):
        InContext(2, 3, "classification", logistic_base=False, ridge_features=None, base_gate=True)


def test_an_untrained_gate_follows_the_logistic_base_as_the_ungated_classifier_does():
    tasks = LinearClassification(2, num_classes=3).sample(3, 24, 5, torch.Generator().manual_seed(0))

    def logits(learner):
        return learner.predict(_adapted(learner, tasks, 3))

    gated = InContext(2, 3, "classification", base_gate=True, rule=TINY)
    assert gated.gate is not None
    torch.testing.assert_close(logits(gated), logits(InContext(2, 3, "classification", rule=TINY)))
