"""The scikit-learn estimators: sklearn's own checks, preprocessing, errors, and the bundled learners.

``check_estimator`` runs on estimators built from a tiny untrained learner saved to a checkpoint
(a path is a plain-string parameter, so sklearn's clone and parameter checks see a simple value).
Checks skipped there, and why:

- ``check_classifiers_train`` / ``check_regressors_train`` assert a minimum training accuracy
  (0.83) or R² (0.5); an untrained learner cannot reach it. They are run below on the bundled
  pretrained learners instead, which pass them.

sklearn itself skips the pandas checks when pandas is not installed and the array-API check unless
``SCIPY_ARRAY_API`` is set.

A :class:`Learner` object given as ``learner`` would also fail ``check_estimators_overwrite_params``:
``joblib.hash`` of a torch tensor differs from that of its deep copy, even unchanged, and the check
compares against a deep copy. ``test_fit_does_not_change_a_given_learner`` checks that instead.
"""

import atexit
import copy
import json
import shutil
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_iris, load_wine
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import (
    check_classifiers_train,
    check_regressors_train,
    parametrize_with_checks,
)

import amortized
from amortized import estimators
from amortized.errors import ConfigError, LabelError, NonFiniteError, ShapeError
from amortized.estimators import AmortizedClassifier, AmortizedRegressor, pretrained_path
from amortized.learners import InContext, LearnedUpdate
from amortized.models import Linear

TINY = {"width": 16, "depth": 1, "heads": 2}
WIDTH = 4
FEW_STEPS = 16
"""The steps the automatic schedule aims at for the untrained tiny learners: what these tests check
does not depend on how long they read."""


def tiny_learner(task="classification", classes=5):
    outputs = classes if task == "classification" else 1
    return LearnedUpdate(Linear(WIDTH, outputs), task=task, rule=TINY)


CHECKPOINTS = Path(tempfile.mkdtemp(prefix="amortized-estimator-tests-"))
atexit.register(shutil.rmtree, CHECKPOINTS, ignore_errors=True)


def tiny_checkpoint(task):
    """A tiny untrained learner saved to a file: sklearn's checks need estimators at collection."""
    path = CHECKPOINTS / f"tiny-{task}.pt"
    amortized.save(tiny_learner(task), path)
    return str(path)


SKIPPED_WITH_TINY_LEARNER = {
    "check_classifiers_train": "needs a trained learner; run on the pretrained one below",
    "check_regressors_train": "needs a trained learner; run on the pretrained one below",
}


@parametrize_with_checks(
    [
        AmortizedClassifier(tiny_checkpoint("classification"), num_steps=FEW_STEPS, random_state=0),
        AmortizedClassifier(
            tiny_checkpoint("classification"), num_steps=FEW_STEPS, calibrate=True, random_state=0
        ),
        AmortizedRegressor(tiny_checkpoint("regression"), num_steps=FEW_STEPS, random_state=0),
    ]
)
def test_sklearn_estimator_checks(estimator, check):
    name = check.func.__name__
    if name in SKIPPED_WITH_TINY_LEARNER:
        pytest.skip(SKIPPED_WITH_TINY_LEARNER[name])
    check(estimator)


def test_pretrained_learners_pass_the_training_checks():
    check_classifiers_train("AmortizedClassifier", AmortizedClassifier(random_state=0))
    check_regressors_train("AmortizedRegressor", AmortizedRegressor(random_state=0))


@pytest.fixture(scope="module")
def blobs():
    generator = np.random.default_rng(0)
    centres = generator.normal(size=(3, WIDTH)) * 3
    labels = generator.integers(0, 3, size=120)
    return centres[labels] + generator.normal(size=(120, WIDTH)), labels


def test_labels_of_any_type_are_mapped_and_restored(blobs):
    X, labels = blobs
    for names in (np.array(["cat", "dog", "eel"]), np.array([-7, 3, 40]), np.array([5.0, 1.0, 2.0])):
        y = names[labels]
        model = AmortizedClassifier(tiny_learner(), num_steps=FEW_STEPS, random_state=0).fit(X, y)
        assert list(model.classes_) == sorted(names)
        predicted = model.predict(X)
        assert predicted.dtype == y.dtype and set(predicted) <= set(names)
        proba = model.predict_proba(X)
        assert proba.shape == (len(X), 3) and np.allclose(proba.sum(1), 1)
        assert np.array_equal(model.classes_[proba.argmax(1)], predicted)
        assert np.allclose(np.exp(model.predict_log_proba(X)), proba)


def test_probabilities_are_a_softmax_over_the_present_classes_only():
    learner = tiny_learner(classes=10)
    torch.nn.init.normal_(
        learner.representation.theta0
    )  # the untrained update leaves θ at θ_0: make all logits differ
    X, y = np.random.default_rng(0).normal(size=(40, WIDTH)), np.arange(40) % 3
    model = AmortizedClassifier(learner, random_state=0).fit(X, y)
    with torch.no_grad():
        inputs = model._inputs(X).expand(model.n_members_, -1, -1)
        logits = learner.predict(model.state_, inputs).double().numpy()
    assert model.n_members_ > 1 and logits.shape == (model.n_members_, 40, 10)
    # each member's softmax over the 3 classes present, averaged over the members
    members = np.exp(logits[..., :3]) / np.exp(logits[..., :3]).sum(-1, keepdims=True)
    assert np.allclose(model.predict_proba(X), members.mean(0))


def test_narrow_inputs_are_padded_with_zero_columns(blobs):
    X, y = blobs
    narrow = X[:, :2]
    padded = np.hstack([narrow, np.zeros((len(X), WIDTH - 2))])
    a = AmortizedClassifier(tiny_learner(), num_steps=FEW_STEPS, random_state=0).fit(narrow, y)
    b = AmortizedClassifier(tiny_learner(), num_steps=FEW_STEPS, random_state=0).fit(padded, y)
    assert np.allclose(a.predict_proba(narrow), b.predict_proba(padded))
    inputs = a._inputs(narrow[:5])
    assert inputs.shape == (1, 5, WIDTH) and torch.equal(inputs[0, :, 2:], torch.zeros(5, WIDTH - 2))


@pytest.mark.parametrize("wide_inputs", ["project", "pca"])
def test_wide_inputs_are_reduced_to_standardised_columns(wide_inputs):
    generator = np.random.default_rng(1)
    X = generator.normal(size=(300, 3)) @ generator.normal(size=(3, 12)) * 5 + 100
    y = (X[:, 0] > 100).astype(int)
    model = AmortizedClassifier(
        tiny_learner(), num_steps=FEW_STEPS, wide_inputs=wide_inputs, random_state=0
    ).fit(X, y)
    assert model.projection_.shape == (12, WIDTH)
    inputs = model._inputs(X)[0].double()
    assert torch.allclose(inputs.mean(0), torch.zeros(WIDTH, dtype=torch.float64), atol=1e-5)
    if wide_inputs == "pca":  # rank 3: three unit-variance components, the rest constant (zero)
        assert torch.allclose(inputs.std(0, correction=0)[:3], torch.ones(3, dtype=torch.float64), atol=1e-4)
        assert inputs[:, 3:].abs().max() < 1e-4
    else:
        assert torch.allclose(inputs.std(0, correction=0), torch.ones(WIDTH, dtype=torch.float64), atol=1e-4)
    assert model.predict(X).shape == (300,)
    with pytest.raises(ShapeError, match="12 features but the learner reads at most 4"):
        AmortizedClassifier(tiny_learner(), wide_inputs="error").fit(X, y)


def test_memory_is_bounded_by_the_mini_batch(monkeypatch, blobs):
    X, y = blobs
    X, y = np.tile(X, (5, 1)), np.tile(y, 5)
    sizes = []
    original = estimators._Amortized._inputs

    def spy(self, rows):
        sizes.append(len(rows))
        return original(self, rows)

    monkeypatch.setattr(estimators._Amortized, "_inputs", spy)
    monkeypatch.setattr(estimators, "PREDICT_CHUNK_ROWS", 100)
    model = AmortizedClassifier(tiny_learner(), batch_size=32, num_passes=2, whiten=True, random_state=0)
    model.fit(X, y)
    # 2 passes over 600 rows in batches of 32: 38 steps (the last runs into a third pass), two runs
    # of 19 adapted side by side, so a step reads two batches
    assert (model.n_steps_, model.n_runs_, model.n_members_) == (38, 2, 2)
    assert max(sizes) == 2 * 32 and sum(sizes) == 19 * 2 * 32
    sizes.clear()
    model.predict(X)
    assert max(sizes) == 100 // 2 and sum(sizes) == 600  # chunks shrink with the states read
    sizes.clear()  # choosing whether to whiten adapts twice to 480 rows, predicts 120 held out in chunks
    AmortizedClassifier(tiny_learner(), batch_size=32, num_passes=2, random_state=0).fit(X, y)
    assert max(sizes) == 100 and sum(sizes) == 2 * (30 * 32 + 120) + 19 * 2 * 32


@pytest.mark.parametrize(
    ("rows", "batch_size", "num_steps"),
    [
        (20, 20, 256),
        (105, 64, 256),
        (1_000, 64, 256),
        (5_000, 64, 256),
        (10**6, 3907, 256),
        (2 * 10**6, 4096, 489),  # one pass needs more steps
    ],
)
def test_auto_schedule_aims_at_num_steps_and_caps_the_batch(rows, batch_size, num_steps):
    assert AmortizedClassifier()._schedule(rows) == (batch_size, num_steps)
    assert AmortizedRegressor()._schedule(rows) == (batch_size, num_steps)
    three_passes = AmortizedClassifier(batch_size=10, num_passes=3)._schedule(rows)
    assert three_passes == (min(10, rows), -(-3 * rows // min(10, rows)))


def test_auto_schedule_aims_at_fewer_steps_when_asked():
    assert AmortizedClassifier(num_steps=32)._schedule(1_000) == (64, 32)
    assert AmortizedRegressor(num_steps=32)._schedule(5_000) == (157, 32)


def test_runs_are_members_adapted_side_by_side_from_the_initial_state():
    X, y = load_iris(return_X_y=True)
    full_batch = {"batch_size": len(X), "random_state": 0}
    two_runs = AmortizedClassifier(horizon=4, num_passes=8, **full_batch).fit(X, y)
    one_run = AmortizedClassifier(horizon=None, num_passes=4, **full_batch).fit(X, y)
    longer = AmortizedClassifier(horizon=None, num_passes=8, **full_batch).fit(X, y)
    assert (two_runs.n_runs_, two_runs.n_members_, two_runs.n_steps_, one_run.n_members_) == (2, 2, 8, 1)
    # every step reads all rows, so both members equal the one 4-step run, and so does their ensemble
    assert torch.allclose(two_runs.state_.value, one_run.state_.value.expand(2, -1), atol=1e-5)
    assert np.allclose(two_runs.predict_proba(X), one_run.predict_proba(X), atol=1e-5)
    assert not torch.allclose(two_runs.state_.value[:1], longer.state_.value, atol=1e-3)


def test_runs_beyond_the_most_members_are_averaged_within_each(monkeypatch):
    X, y = load_iris(return_X_y=True)
    monkeypatch.setattr(estimators, "MAX_MEMBERS", 2)
    full_batch = {"batch_size": len(X), "random_state": 0}
    four_runs = AmortizedClassifier(horizon=2, num_passes=8, **full_batch).fit(X, y)
    one_run = AmortizedClassifier(horizon=None, num_passes=2, **full_batch).fit(X, y)
    assert (four_runs.n_runs_, four_runs.n_members_, four_runs.n_steps_) == (4, 2, 8)
    assert four_runs.state_.num_tasks == 2
    # each member's two 2-step runs read all rows at every step: their average is the one 2-step run
    assert torch.allclose(four_runs.state_.value, one_run.state_.value.expand(2, -1), atol=1e-5)


def test_torch_threads_are_set_during_fit_and_restored(monkeypatch, blobs):
    X, y = blobs
    seen = []
    original = LearnedUpdate._step
    monkeypatch.setattr(
        LearnedUpdate, "_step", lambda *args: seen.append(torch.get_num_threads()) or original(*args)
    )
    threads = torch.get_num_threads()
    AmortizedClassifier(tiny_learner(), num_steps=FEW_STEPS, n_threads=1).fit(X, y)
    assert set(seen) == {1} and torch.get_num_threads() == threads


@pytest.mark.parametrize(
    ("make", "X", "y", "error", "match"),
    [
        (AmortizedClassifier, [[np.inf, 1.0, 0.0, 0.0]] * 4, [0, 1, 0, 1], ValueError, "infinity"),
        (AmortizedRegressor, np.ones((4, WIDTH)), [1.0, np.nan, 0.0, 1.0], ValueError, "NaN"),
        (AmortizedRegressor, np.ones((4, WIDTH)), ["a", "b", "a", "b"], ValueError, "y holds strings"),
        (
            AmortizedRegressor,
            np.ones((4, WIDTH)),
            ["1.5", "2", "0", "1"],
            ValueError,
            r"strings \(dtype <U3\)",
        ),
        (
            AmortizedRegressor,
            np.ones((4, WIDTH)),
            np.array([1.5, "2", 0, 1], dtype=object),
            ValueError,
            "strings",
        ),
        (AmortizedClassifier, np.ones((4, WIDTH)), [1, 1, 1, 1], LabelError, "at least 2 classes"),
        (AmortizedClassifier, np.ones((4, WIDTH)), [0.5, 1.5, 2.5, 3.5], ValueError, "Unknown label type"),
        (AmortizedClassifier, np.ones(4), [0, 1, 0, 1], ValueError, "2D array"),
        (AmortizedClassifier, np.ones((4, WIDTH)), [0, 1, 0], ValueError, "inconsistent numbers of samples"),
    ],
)
def test_bad_inputs_raise_clear_errors(make, X, y, error, match):
    task = "classification" if make is AmortizedClassifier else "regression"
    with pytest.raises(error, match=match):
        make(tiny_learner(task)).fit(X, y)


def test_bad_options_and_learners_raise_clear_errors(blobs):
    X, y = blobs
    with pytest.raises(ConfigError, match="batch_size must be > 0"):
        AmortizedClassifier(tiny_learner(), batch_size=0).fit(X, y)
    with pytest.raises(ConfigError, match="num_passes must be an integer"):
        AmortizedClassifier(tiny_learner(), num_passes=1.5).fit(X, y)
    with pytest.raises(ConfigError, match="num_steps must be > 0"):
        AmortizedClassifier(tiny_learner(), num_steps=0).fit(X, y)
    with pytest.raises(ConfigError, match="horizon must be > 0"):
        AmortizedClassifier(tiny_learner(), horizon=0).fit(X, y)
    with pytest.raises(ConfigError, match="n_threads must be an integer"):
        AmortizedClassifier(tiny_learner(), n_threads="all").fit(X, y)
    with pytest.raises(ConfigError, match="wide_inputs"):
        AmortizedClassifier(tiny_learner(), wide_inputs="crop").fit(X, y)
    with pytest.raises(ConfigError, match="needs a regression learner"):
        AmortizedRegressor(tiny_learner()).fit(X, y.astype(float))
    with pytest.raises(ConfigError, match="implicit learner"):
        AmortizedClassifier(InContext(WIDTH, 5, task="classification", rule=TINY)).fit(X, y)
    with pytest.raises(ConfigError, match="learner must be"):
        AmortizedClassifier(learner=3).fit(X, y)
    model = AmortizedClassifier(tiny_learner(), num_steps=FEW_STEPS).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but AmortizedClassifier is expecting 4"):
        model.predict(X[:, :3])


def test_fit_does_not_change_a_given_learner(blobs):
    X, y = blobs
    learner = tiny_learner().train()
    before = {name: value.clone() for name, value in learner.state_dict().items()}
    AmortizedClassifier(learner, random_state=0).fit(X, y)
    assert learner.training
    assert all(torch.equal(before[name], value) for name, value in learner.state_dict().items())


def test_learner_from_a_checkpoint_file_or_run_folder(tmp_path, blobs):
    X, y = blobs
    learner = tiny_learner()
    amortized.save(learner, tmp_path / "checkpoint.pt")
    expected = AmortizedClassifier(learner, random_state=0).fit(X, y).predict_proba(X)
    run = tmp_path / "run"
    amortized.save(learner, run / "learners" / "Mine" / "checkpoint.pt")
    sources = (tmp_path, tmp_path / "checkpoint.pt", str(tmp_path / "checkpoint.pt"), run)
    for source in sources:
        assert np.allclose(AmortizedClassifier(source, random_state=0).fit(X, y).predict_proba(X), expected)
    amortized.save(learner, run / "learners" / "Other" / "checkpoint.pt")
    with pytest.raises(ConfigError, match=r"run folder of 2 learners; pass one of: .*Mine"):
        AmortizedClassifier(run).fit(X, y)
    with pytest.raises(ConfigError, match=r"holds no checkpoint\.pt"):
        AmortizedClassifier(tmp_path / "run" / "learners").fit(X, y)


def test_random_state_fixes_the_result():
    X, y = load_wine(return_X_y=True)
    runs = [AmortizedClassifier(random_state=seed).fit(X, y).predict_proba(X) for seed in (3, 3, 4)]
    assert np.array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])


@pytest.mark.parametrize(
    ("load", "margin"),
    [(load_iris, 0.4), (load_wine, 0.4), (load_breast_cancer, 0.25)],
    ids=["iris", "wine", "breast_cancer"],
)
def test_pretrained_classifier_beats_the_majority_class(load, margin):
    X, y = load(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    majority = np.mean(y_test == np.bincount(y_train).argmax())
    accuracy = AmortizedClassifier(random_state=0).fit(X_train, y_train).score(X_test, y_test)
    assert accuracy > majority + margin, (accuracy, majority)


def test_pretrained_regressor_beats_predicting_the_mean():
    generator = np.random.default_rng(0)
    X = generator.normal(size=(600, 5)) * [1, 10, 0.1, 3, 1] + 50
    y = X @ np.array([2.0, -0.3, 10.0, 0.5, 0.0]) + 7 + generator.normal(size=600)
    model = AmortizedRegressor(random_state=0).fit(X[:400], y[:400])
    assert model.score(X[400:], y[400:]) > 0.9  # R²: predicting the mean scores 0


def test_estimators_work_in_pipelines_and_cross_validation():
    X, y = load_iris(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), AmortizedClassifier(random_state=0))
    scores = cross_val_score(pipeline, X, y, cv=3)
    assert scores.mean() > 0.7, scores
    assert clone(AmortizedClassifier(batch_size=16)).get_params()["batch_size"] == 16


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_bundled_checkpoints_are_small_and_carry_cards(task):
    path = pretrained_path(task)
    assert path.stat().st_size < 4 * 2**20
    card = json.loads(path.with_suffix(".json").read_text())
    learner = amortized.load(path)
    assert card["learner"] == learner.describe()
    assert learner.task == task and card["prior"]["class"].startswith("Mixture")
    assert {"train_config", "train_cpu_seconds", "command", "evaluation"} <= set(card)


def test_inputs_and_targets_of_any_finite_scale_fit_as_if_standardised(blobs):
    X, labels = blobs
    expected = (
        AmortizedClassifier(tiny_learner(), num_steps=FEW_STEPS, random_state=0)
        .fit(X, labels)
        .predict_proba(X)
    )
    huge = AmortizedClassifier(tiny_learner(), num_steps=FEW_STEPS, random_state=0).fit(X * 1e300, labels)
    assert np.allclose(huge.predict_proba(X * 1e300), expected, atol=1e-5)
    y = X @ np.arange(1.0, WIDTH + 1)
    expected = (
        AmortizedRegressor(tiny_learner("regression"), num_steps=FEW_STEPS, random_state=0)
        .fit(X, y)
        .predict(X)
    )
    huge = AmortizedRegressor(tiny_learner("regression"), num_steps=FEW_STEPS, random_state=0).fit(
        X, y * 1e200
    )
    assert np.allclose(huge.predict(X) / 1e200, expected, rtol=1e-5)


def test_rows_too_far_from_the_fitted_data_are_named_not_predicted_as_garbage(blobs):
    X, labels = blobs
    model = AmortizedClassifier(tiny_learner(), num_steps=FEW_STEPS, random_state=0).fit(X, labels)
    far = X.copy()
    far[[3, 7]] *= 1e300
    with pytest.raises(
        NonFiniteError, match=r"2 rows of X \(rows 3, 7\) overflow torch\.float32 once standardised"
    ):
        model.predict(far)
    model.state_ = replace(model.state_, value=model.state_.value * 1e30)
    far = X.copy()
    far[5] *= 1e20
    with pytest.raises(NonFiniteError, match=r"1 rows of X \(rows 5\) give NaN or infinite outputs"):
        model.predict_proba(far)
    regressor = AmortizedRegressor(tiny_learner("regression"), num_steps=FEW_STEPS, random_state=0).fit(
        X, X[:, 0] * 1e300
    )
    far = X.copy()
    far[0] *= 1e10
    with pytest.raises(NonFiniteError, match=r"rows 0\) have predictions beyond float64's range"):
        regressor.predict(far)


def test_fit_temperature_recovers_the_scale_of_overconfident_logits():
    generator = np.random.default_rng(0)
    logits = generator.normal(size=(4000, 4)) * 2
    labels = np.array([generator.choice(4, p=np.exp(row) / np.exp(row).sum()) for row in logits])
    assert estimators.fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.1)
    assert estimators.fit_temperature(3 * logits, labels) == pytest.approx(3.0, rel=0.1)
    # A few perfectly separated rows do not give certainty: the prior keeps T from collapsing.
    assert estimators.fit_temperature(np.array([[5.0, 0.0], [0.0, 5.0]]), np.array([0, 1])) > 0.3


def test_reading_256_steps_beats_the_earlier_32_step_schedule():
    """The classifier's eight runs lower its log loss; the regressor's one long state fits a
    nonlinear target further (measured: 0.297 -> 0.281 on digits, R² 0.609 -> 0.709 on Friedman #3)."""
    from sklearn.datasets import load_digits, make_friedman3
    from sklearn.metrics import log_loss
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    losses = {
        num_steps: log_loss(
            y_test,
            AmortizedClassifier(num_steps=num_steps, random_state=0)
            .fit(X_train, y_train)
            .predict_proba(X_test),
        )
        for num_steps in (32, 256)
    }
    assert losses[256] < losses[32] - 0.01, losses
    X, y = make_friedman3(n_samples=1500, noise=0.1, random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    scores = {
        num_steps: AmortizedRegressor(num_steps=num_steps, random_state=0)
        .fit(X_train, y_train)
        .score(X_test, y_test)
        for num_steps in (32, 256)
    }
    assert scores[256] > scores[32] + 0.05, scores


def test_calibration_lowers_the_log_loss_on_digits_and_keeps_the_classes():
    from sklearn.datasets import load_digits
    from sklearn.metrics import log_loss
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    raw = AmortizedClassifier(random_state=0).fit(X_train, y_train)
    calibrated = AmortizedClassifier(calibrate=True, random_state=0).fit(X_train, y_train)
    assert calibrated.temperature_ < 0.9 and raw.temperature_ == 1.0
    assert np.array_equal(raw.predict(X_test), calibrated.predict(X_test))
    before, after = (
        log_loss(y_test, raw.predict_proba(X_test)),
        log_loss(y_test, calibrated.predict_proba(X_test)),
    )
    assert after < before - 0.01, (before, after)  # measured: 0.275 -> 0.226
    with pytest.raises(ConfigError, match="calibrate"):
        AmortizedClassifier(calibrate="yes").fit(X_train[:30], y_train[:30])


def test_a_learner_in_float64_adapts_to_the_same_predictions():
    """Rows and targets reach the learner in its dtype (they are streamed past Learner.step's cast)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(96, WIDTH))
    y = X @ rng.normal(size=WIDTH) + 0.1 * rng.normal(size=96)
    learner = tiny_learner("regression")
    single = AmortizedRegressor(learner, random_state=0).fit(X, y).predict(X)
    double = AmortizedRegressor(copy.deepcopy(learner).double(), random_state=0).fit(X, y).predict(X)
    np.testing.assert_allclose(double, single, rtol=1e-4, atol=1e-4)


def test_a_missing_value_counts_as_its_column_mean(blobs):
    """NaN in X is a missing value: left out of the column's statistics and read as the column's
    mean, which after standardisation adds nothing to f(x; θ) (as the zero padding the prior saw)."""
    X, y = blobs
    holes = X.copy()
    holes[::3, 1] = np.nan
    model = AmortizedClassifier(tiny_learner(), num_steps=FEW_STEPS, random_state=0).fit(holes, y)
    assert np.allclose(model.mean_[1], np.nanmean(holes[:, 1])) and np.allclose(
        model.scale_[1], np.nanstd(holes[:, 1])
    )
    filled = holes.copy()
    filled[::3, 1] = model.mean_[1]
    assert np.allclose(model.predict_proba(holes), model.predict_proba(filled))
    assert np.isfinite(model.predict_proba(np.full((2, WIDTH), np.nan))).all()


def test_the_pretrained_classifier_keeps_most_of_its_accuracy_with_a_fifth_of_the_values_missing():
    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    holes = np.random.default_rng(0).random(X.shape) < 0.2
    X_missing = np.where(holes, np.nan, X)
    full = AmortizedClassifier(random_state=0).fit(X_train, y_train).score(X_test, y_test)
    X_train_missing, X_test_missing, _, _ = train_test_split(
        X_missing, y, test_size=0.3, random_state=0, stratify=y
    )
    missing = AmortizedClassifier(random_state=0).fit(X_train_missing, y_train).score(X_test_missing, y_test)
    majority = np.mean(y_test == np.bincount(y_train).argmax())
    assert missing > majority + 0.25 and missing > full - 0.05, (missing, full, majority)


def test_more_classes_than_outputs_are_fitted_one_against_the_rest(blobs):
    """A 5-output learner on 7 classes: one binary task per class, adapted together; the logit of a
    class is its binary task's margin over the rest, so with fewer classes nothing changes."""
    generator = np.random.default_rng(1)
    centres = generator.normal(size=(7, WIDTH)) * 4
    labels = np.repeat(np.arange(7), 30)
    X = centres[labels] + generator.normal(size=(len(labels), WIDTH))
    model = AmortizedClassifier(tiny_learner(), num_steps=FEW_STEPS, random_state=0).fit(X, labels)
    assert model.one_vs_rest_ and model.state_.num_tasks == 7
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 7) and np.allclose(proba.sum(1), 1)
    binary = AmortizedClassifier(tiny_learner(), num_steps=FEW_STEPS, random_state=0).fit(X, labels == 3)
    # task 3 is class 3 against the rest (up to float32 rounding: batched arithmetic sums in another order)
    assert torch.allclose(binary.state_.value[0], model.state_.value[3], atol=1e-3)


def test_the_pretrained_classifier_separates_32_classes_one_against_the_rest():
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=3000,
        n_features=20,
        n_informative=15,
        n_classes=32,
        n_clusters_per_class=1,
        class_sep=2.0,
        random_state=0,
    )
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    accuracy = AmortizedClassifier(random_state=0).fit(X_train, y_train).score(X_test, y_test)
    assert accuracy > 0.7, accuracy  # chance 0.031; logistic regression 0.83


def test_whitening_decorrelates_the_inputs_and_drops_directions_without_spread():
    generator = np.random.default_rng(2)
    X = generator.normal(size=(200, WIDTH)).astype(np.float32)
    X[:, 3] = X[:, 0] + X[:, 1] * np.float32(0.7)  # collinear up to float32 rounding
    model = AmortizedClassifier(tiny_learner(), num_steps=FEW_STEPS, whiten=True, random_state=0)
    model.fit(X, generator.integers(0, 2, size=200))
    inputs = model._inputs(X)[0].double()
    covariance = inputs.T @ inputs / len(X)
    rank = np.linalg.matrix_rank(X - X.mean(0))
    assert rank < WIDTH
    expected = torch.diag(torch.tensor([1.0] * rank + [0.0] * (WIDTH - rank), dtype=torch.float64))
    assert torch.allclose(covariance, expected, atol=1e-5)  # no rounding noise blown up to unit scale
    plain = AmortizedClassifier(tiny_learner(), num_steps=FEW_STEPS, whiten=False, random_state=0).fit(
        X, np.arange(200) % 2
    )
    assert plain.projection_ is None


def test_choosing_whether_to_whiten_reads_at_most_32_steps_each_way(monkeypatch, blobs):
    X, y = blobs
    steps = []
    original = estimators._Amortized._adapt

    def spy(self, *args):
        original(self, *args)
        steps.append(self.n_steps_)

    monkeypatch.setattr(estimators._Amortized, "_adapt", spy)
    model = AmortizedRegressor(tiny_learner("regression"), num_steps=128, random_state=0)
    model.fit(X, y.astype(float))
    assert steps == [32, 32, 128]  # whitened and not on 96 rows, then all 120


def test_whitening_is_chosen_where_it_lowers_the_held_out_loss():
    """Five measurements of one size, the classes apart along a low-variance contrast (as the species
    of crabs): gradient steps crawl along it unless the inputs are whitened. On breast cancer,
    whitening scales noisy directions up to unit variance and hurts; ``"auto"`` tells them apart."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    generator = np.random.default_rng(0)
    size = generator.normal(size=(400, 1)) * 3
    labels = generator.integers(0, 2, size=400)
    contrast = (2 * labels - 1)[:, None] * 0.25 + generator.normal(size=(400, 1)) * 0.25
    X = size @ [[1.0, 0.9, 1.1, 0.95, 1.05]] + contrast @ [[1.0, -1.0, 0.5, -0.5, 0.0]]
    X += generator.normal(size=X.shape) * 0.05
    cancer = train_test_split(*load_breast_cancer(return_X_y=True), test_size=0.3, random_state=0)
    for (X_train, X_test, y_train, y_test), whitened in [
        ((X[:280], X[280:], labels[:280], labels[280:]), True),
        (cancer, False),
    ]:
        scores = {
            whiten: AmortizedClassifier(whiten=whiten, random_state=0)
            .fit(X_train, y_train)
            .score(X_test, y_test)
            for whiten in (False, True)
        }
        assert abs(scores[True] - scores[False]) > 0.015, scores  # measured: 0.883 / 0.900, 0.977 / 0.953
        auto = AmortizedClassifier(random_state=0).fit(X_train, y_train)
        assert auto.whitened_ is whitened and auto.score(X_test, y_test) == scores[whitened]


def test_whiten_options_are_checked_and_wide_inputs_are_not_judged_twice(monkeypatch):
    generator = np.random.default_rng(3)
    X, y = generator.normal(size=(60, 3)), np.arange(60) % 2
    for bad in ("yes", 1, None):
        with pytest.raises(ConfigError, match="whiten must be True, False or 'auto'"):
            AmortizedClassifier(tiny_learner(), num_steps=FEW_STEPS, whiten=bad).fit(X, y)
    judged = []
    original = estimators._Amortized._whitening_helps
    monkeypatch.setattr(
        estimators._Amortized, "_whitening_helps", lambda self, *a: judged.append(1) or original(self, *a)
    )
    wide = generator.normal(size=(60, WIDTH + 3))
    for wide_inputs, whitened in (("pca", True), ("project", False)):
        model = AmortizedClassifier(
            tiny_learner(), num_steps=FEW_STEPS, wide_inputs=wide_inputs, random_state=0
        ).fit(wide, y)
        assert model.whitened_ is whitened
    assert not judged  # a reduction to the learner's width decides it
    assert AmortizedClassifier(tiny_learner(), num_steps=FEW_STEPS, random_state=0).fit(X, y).whitened_ in (
        True,
        False,
    )
    assert judged == [1]
    assert (
        AmortizedClassifier(tiny_learner(), num_steps=FEW_STEPS, random_state=0).fit(X[:, :1], y).whitened_
        is False
    )


def test_fitting_a_data_frame_with_auto_whitening_and_calibration_warns_of_nothing():
    pd = pytest.importorskip("pandas")
    generator = np.random.default_rng(4)
    X = pd.DataFrame(generator.normal(size=(80, 3)), columns=["a", "b", "c"])
    y = (X["a"] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = AmortizedClassifier(tiny_learner(), num_steps=FEW_STEPS, calibrate=True, random_state=0).fit(
            X, y
        )
        AmortizedRegressor(tiny_learner("regression"), num_steps=FEW_STEPS, random_state=0).fit(X, X["b"])
    assert model.predict(X).shape == (80,)


def test_a_held_out_row_far_from_the_others_is_left_out_of_the_choices_not_an_error():
    """Row 7 is held out of the adaptations that choose whitening and the temperature (seed 0); once
    standardised by the other rows it overflows float32. The choices leave it out; the final
    adaptation reads it with the others, whose statistics then include it."""
    X = np.random.default_rng(0).normal(size=(200, 3))
    X[7] = 1e39
    y = np.arange(200) % 2
    model = AmortizedClassifier(tiny_learner(), num_steps=FEW_STEPS, calibrate=True, random_state=0)
    held_out, _ = model._held_out_split(len(X))
    assert 7 in held_out
    model.fit(X, y)
    assert np.isfinite(model.temperature_) and np.isfinite(model.predict_proba(X)).all()
    AmortizedRegressor(tiny_learner("regression"), num_steps=FEW_STEPS, random_state=0).fit(
        X, X[:, 0].clip(-3, 3)
    )
