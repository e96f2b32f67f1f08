"""The running logistic regression, and ``InContext``'s logits built on it."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

import amortized
from amortized.errors import ConfigError
from amortized.learners import InContext, adapt
from amortized.learners.rules.logistic import RunningLogistic
from amortized.tasks import LinearClassification

from .conftest import TINY
from .test_learned import CLASSIFICATION_TRAINING

FAMILY = LinearClassification(dim=3, num_classes=3, temperature=0.3)


def _error(logits, labels):
    return float((logits.argmax(-1) != labels).float().mean())


def _running(x, y, batch_size, passes):
    num_tasks, points = y.shape
    logistic, seen = RunningLogistic.zeros(num_tasks, x.shape[-1], 3, x), torch.zeros(num_tasks)
    for _ in range(passes):
        for start in range(0, points, batch_size):
            batch = slice(start, start + batch_size)
            share = batch_size / (seen + batch_size)
            logistic = logistic.update(x[:, batch], y[:, batch], share, seen + batch_size)
            seen = seen + batch_size
    return logistic


def test_running_logistic_over_mini_batches_classifies_like_the_full_batch_fit():
    """Two passes of 16-point batches over 256 points: within 1.5 points of scikit-learn's logistic
    regression fitted to all of them (0.144 against 0.143 on this seed; chance is 0.67)."""
    tasks = FAMILY.sample(32, 256, 128, torch.Generator().manual_seed(0))
    logistic = _running(tasks.x_train, tasks.y_train, batch_size=16, passes=2)
    running = _error(logistic.logits(tasks.x_query), tasks.y_query)
    errors = [
        np.mean(LogisticRegression(C=10.0).fit(x, y).predict(xq) != yq)
        for x, y, xq, yq in zip(
            *(t.numpy() for t in (tasks.x_train, tasks.y_train, tasks.x_query, tasks.y_query)), strict=True
        )
    ]
    assert running < float(np.mean(errors)) + 0.015, (running, np.mean(errors))


def test_the_running_fit_improves_as_it_reads_more_points():
    tasks = FAMILY.sample(32, 256, 128, torch.Generator().manual_seed(1))
    errors = [
        _error(
            _running(tasks.x_train[:, :n], tasks.y_train[:, :n], 16, 1).logits(tasks.x_query), tasks.y_query
        )
        for n in (16, 64, 256)
    ]
    assert errors[0] > errors[1] > errors[2], errors


def test_in_context_logits_sit_on_the_logistic_base():
    """Untrained (its head starts at zero), the learner's logits are the base's plus its initial
    logits; without the base it is at chance."""
    tasks = FAMILY.sample(32, 64, 32, torch.Generator().manual_seed(2))

    def error(learner):
        order = torch.Generator().manual_seed(0)
        state = adapt(
            learner, tasks.x_train, tasks.y_train, batch_size=16, query_x=tasks.x_query, generator=order
        )
        return _error(learner.predict(state, tasks.x_query), tasks.y_query), state

    with_base, state = error(InContext(3, 3, "classification", rule=TINY))
    without, _ = error(InContext(3, 3, "classification", logistic_base=False, rule=TINY))
    torch.testing.assert_close(state.value, state.carry.base)
    assert with_base < 0.5 * without, (with_base, without)


def test_training_learns_corrections_on_top_of_the_base():
    """From one batch of 8 points the base alone has a query loss (cross-entropy) of 0.762 on these
    tasks; a few seconds of meta-training take the learner to 0.726 (0.726-0.738 over training seeds
    0-3; asserted: 0.015 lower): the prior and the calibration the base does not have."""
    tasks = FAMILY.sample(64, 8, 32, torch.Generator().manual_seed(3))
    learner = InContext(3, 3, "classification", rule=TINY)

    def query_loss():
        order = torch.Generator().manual_seed(0)
        state = adapt(
            learner, tasks.x_train, tasks.y_train, batch_size=8, query_x=tasks.x_query, generator=order
        )
        return float(F.cross_entropy(learner.predict(state, tasks.x_query).transpose(1, 2), tasks.y_query))

    untrained = query_loss()
    amortized.train(learner, FAMILY, **CLASSIFICATION_TRAINING)
    trained = query_loss()
    assert trained < untrained - 0.015, (trained, untrained)


def test_the_base_is_on_by_default_only_where_it_is_small_and_for_logits():
    assert InContext(3, 3, "classification", rule=TINY).logistic_base
    assert not InContext(64, 10, "classification", ridge_features=None, rule=TINY).logistic_base
    assert not InContext(3, 3, "classification", state="latent", rule=TINY).logistic_base
    assert not InContext(3, rule=TINY).logistic_base


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"state": "probabilities", "logistic_base": True}, "base of the 'logits' state"),
        ({"logistic_base": "yes"}, "logistic_base must be true or false"),
    ],
)
def test_the_base_refuses_what_it_cannot_be(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        InContext(3, 3, "classification", rule=TINY, **kwargs)


def test_a_base_too_large_for_its_curvature_is_refused_with_the_way_out():
    with pytest.raises(ConfigError, match="logistic_base = false"):
        InContext(300, 10, "classification", ridge_features=None, logistic_base=True, rule=TINY)


def test_configs_without_the_option_rebuild_the_learner_without_the_base():
    learner = InContext(3, 3, "classification", rule=TINY)
    old = {name: value for name, value in learner.config.items() if name != "logistic_base"}
    assert not InContext.from_config(old).logistic_base
