"""scikit-learn estimators over a trained learner: ``fit`` is amortized inference, not training.

``AmortizedClassifier().fit(X, y).predict(X_new)`` adapts a meta-trained learner to ``(X, y)``:
the learner's state (``θ`` of a fixed model) is refined over mini-batches of the rows, with no
gradient step on the network itself. Rows are streamed from the numpy array one step's mini-batches
at a time, so memory beyond ``X`` is bounded by those mini-batches (at most ``MAX_MEMBERS`` of them,
see below), plus the shuffled order of the rows read (four bytes per row and pass) and, for
classifiers, the mapped labels (one byte per row and class when there are more classes than the
learner's outputs); any number of rows can be read.

Which learner: a parametric learner (``LearnedUpdate`` over a small ``MLP``, as bundled; or over a
``Linear`` model) ends adaptation with a state ``θ`` that predicts at any new point in one cheap
forward pass. An implicit (``InContext``) learner's state is its predictions at query points fixed
before adaptation, so ``predict`` on new rows would need the training data again; those learners
are rejected.

How the rows are read. ``fit`` reads ``num_steps`` mini-batches (256), or one pass if the rows
need more: the rows are shuffled, pass after pass, and cut into mini-batches of equal size. That
stream is split into runs of at most ``horizon`` steps, each refined from the learner's initial
state. The runs are adapted side by side as a batch of states (one mini-batch each per step: one
step of the network serves them all) and are the members of an ensemble: the classifier averages
their predicted probabilities, the regressor their predictions. The bundled learners were
meta-trained to refine a state for 1 to 32 steps and keep improving well past that on held-out
prior tasks (``python scripts/pretrained_horizon.py``). The regressor, whose MLP keeps fitting a
nonlinear target, refines one state for all 256 steps (``horizon=256``; Friedman #1 R² 0.740
after 32 steps in the earlier release, 0.773 after 256), while the classifier averages eight runs of 32 steps
(``horizon=32``), whose average is better calibrated than one run. Beyond ``MAX_MEMBERS`` runs
(16; huge data sets), each member reads several runs one after another and averages their
states. With the defaults (``"auto"``):

- up to ``64 · num_steps`` rows: ``num_steps`` batches of 64, re-reading the rows as many times
  as that takes (iris: each of 150 rows about 109 times), since small data sets gain from re-reading;
- up to ``4096 · num_steps`` rows: one pass in ``num_steps`` steps of ``rows / num_steps`` rows each;
- beyond that: one pass in batches of 4096, in runs of ``horizon`` steps.

Preprocessing, computed from ``X`` in a streaming pass:

- features are standardised (zero mean, unit variance; constant features are only centred); a
  missing value (NaN) is left out of its column's statistics and read as the column's mean, 0 once
  standardised, which adds nothing to ``f(x; θ)`` (the prior has no missing values, so the learner
  is not told which values were imputed);
- the standardised features may be whitened (``whiten``): rotated onto their principal directions
  and scaled to unit variance, directions with no spread dropped. The bundled learners read the
  loss gradient and take few steps; on correlated features (sizes of the same body, say) the
  direction that separates the classes can have a small variance, where gradient steps crawl, and
  whitening makes every direction equally easy. But it also scales noisy directions up to unit
  variance. So by default (``"auto"``) ``fit`` adapts to 80% of the rows (at most 16,384) both ways,
  in at most 32 steps each, and keeps the way with the lower loss on the other 20% (at most 4,096):
  a quarter of the time of the final adaptation's 256 steps;
- inputs narrower than the learner's width are padded with zero columns. A zero column contributes
  nothing to ``f(x; θ)`` whatever ``θ`` is, and the bundled learners were meta-trained on tasks with
  a random number of informative features, the rest zero, so padding is exactly the case they saw;
- wider inputs are reduced to the learner's width (``wide_inputs``): ``"project"`` multiplies by a
  fixed Gaussian matrix (seed 0) and re-standardises, ``"pca"`` keeps the leading principal
  components scaled to unit variance (needs a features × features covariance), ``"error"`` refuses;
- regression targets are standardised and predictions mapped back;
- class labels of any type are mapped to ``0..C-1`` (sorted) and restored on prediction. The
  bundled classifier has 10 outputs and was meta-trained on tasks whose ``C <= 10`` labels occupy the
  first ``C`` outputs; predictions use only those ``C`` logits (the absent classes' probability is
  zero by construction), so ``predict_proba`` is a softmax over ``C`` logits. With more classes
  than the learner has outputs, each class is fitted against the rest (one binary task per class
  on the same rows, adapted together as a batch of tasks) and a class's logit is its task's margin
  over the rest.
"""

from __future__ import annotations

import copy
import itertools
import os
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from amortized.checkpoints import load
from amortized.errors import ConfigError, LabelError, NonFiniteError, ShapeError
from amortized.learners.base import Learner, last_state, refinements
from amortized.learners.state import State
from amortized.statistics import principal_directions, safe_scale, streaming_moments
from amortized.training import torch_threads
from amortized.validation import check_bool, check_choice, check_positive_int

try:
    from sklearn.utils.validation import validate_data

    ALLOW_NAN = {"ensure_all_finite": "allow-nan"}
except ImportError:  # scikit-learn < 1.6

    def validate_data(estimator: BaseEstimator, *args: Any, **kwargs: Any) -> Any:
        return estimator._validate_data(*args, **kwargs)

    ALLOW_NAN = {"force_all_finite": "allow-nan"}


WIDE_INPUTS = ("project", "pca", "error")
AUTO_BATCH_SIZES = (64, 4096)
DEFAULT_NUM_STEPS = 256
CLASSIFIER_HORIZON, REGRESSOR_HORIZON = 32, 256
PROJECTION_SEED = 0
NO_VARIANCE = 1e-6
"""A projected column whose standard deviation is below this share of the largest one's is dropped
(set to 0): collinear columns, such as every level of a one-hot encoding, leave directions whose
spread is rounding noise, which whitening would blow up to unit variance."""
PREDICT_CHUNK_ROWS = 4096
CALIBRATION_SHARE, CALIBRATION_ROWS, MIN_CALIBRATION_ROWS = 0.2, 4096, 20
"""The share of rows (at most ``CALIBRATION_ROWS``) the temperature is fitted on, and whitening is
judged on, held out of an adaptation to the others; data sets smaller than ``MIN_CALIBRATION_ROWS``
are not calibrated (and with ``whiten="auto"`` are whitened)."""
MAX_MEMBERS = 16
"""The most runs adapted side by side, whose predictions are averaged: a step reads this many
mini-batches at most, and ``predict`` evaluates this many states per task at most."""
SELECTION_ROWS, SELECTION_STEPS = 16_384, 32
"""The most rows ``whiten="auto"`` adapts to for each choice (the rest of a larger data set is not
needed to tell them apart), and the most steps it reads them in (one run of the bundled learners'
training horizon, a fraction of the final adaptation)."""
TEMPERATURES, TEMPERATURE_PRIOR = (0.05, 20.0), 0.5
"""The range the temperature is searched in, and the spread of its prior on the log scale."""
PRETRAINED = {"classification": "classifier.pt", "regression": "regressor.pt"}


def pretrained_path(task: str) -> Path:
    """The bundled checkpoint for ``task`` (``"classification"`` or ``"regression"``)."""
    check_choice("task", task, tuple(PRETRAINED))
    return Path(str(resources.files("amortized.pretrained").joinpath(PRETRAINED[task])))


def _checkpoint_in(path: Path) -> Path:
    """The checkpoint a path names: a file, a folder holding ``checkpoint.pt``, or a run folder with
    one learner (``learners/NAME/checkpoint.pt``)."""
    if not path.is_dir():
        return path
    if (path / "checkpoint.pt").exists():
        return path / "checkpoint.pt"
    found = sorted((path / "learners").glob("*/checkpoint.pt"))
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(str(candidate.parent) for candidate in found)
        raise ConfigError(f"{path} is a run folder of {len(found)} learners; pass one of: {names}")
    raise ConfigError(f"{path} holds no checkpoint.pt (nor learners/NAME/checkpoint.pt)")


def load_learner(source: Learner | str | os.PathLike | None, task: str) -> Learner:
    """The learner an estimator adapts: the bundled one, one from a checkpoint or run folder, or a copy.

    A given :class:`Learner` is deep-copied, so fitting never changes the estimator's parameters.
    The estimators compute on the CPU (rows stream from NumPy arrays), so the copy is moved there.
    """
    if source is None:
        learner = load(pretrained_path(task), check_size=False)  # bundled, digest-checked: sound
    elif isinstance(source, Learner):
        learner = copy.deepcopy(source).cpu()
    elif isinstance(source, str | os.PathLike):
        learner = load(_checkpoint_in(Path(source)))
    else:
        raise ConfigError(
            f"learner must be None (the bundled one), a Learner, or a checkpoint file or run folder; "
            f"got {type(source).__name__}"
        )
    if learner.task != task:
        raise ConfigError(f"this estimator needs a {task} learner, but the given learner does {learner.task}")
    if learner.regime == "implicit":
        raise ConfigError(
            f"{type(learner).__name__} is an implicit learner: its state holds predictions at query points "
            "fixed before adaptation, so it cannot predict at new rows after fit; use a parametric learner "
            "(e.g. LearnedUpdate) or an explicit one"
        )
    return learner.eval()


def _unit_scale(std: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``std``, with 1 for columns constant at unit scale (projected columns beyond the data's rank)."""
    return safe_scale(std, np.maximum(np.abs(mean), 1.0))


def _log_sum_exp(logits: np.ndarray) -> np.ndarray:
    """``log Σ exp`` over the last axis, kept as an axis of size 1."""
    peak = logits.max(-1, keepdims=True)
    return peak + np.log(np.exp(logits - peak).sum(-1, keepdims=True))


def _shuffled_stream(num_rows: int, length: int, rng: np.random.RandomState) -> np.ndarray:
    """``length`` row indices: shuffled passes over ``num_rows`` rows, one after another (int32
    when that holds them: the order of every row read is kept)."""
    dtype = np.int32 if num_rows <= np.iinfo(np.int32).max else np.int64
    stream = np.empty(-(-length // num_rows) * num_rows, dtype=dtype)
    for start in range(0, len(stream), num_rows):
        stream[start : start + num_rows] = rng.permutation(num_rows)
    return stream[:length]


def _finite_mean(losses: np.ndarray) -> float:
    """The mean of the finite losses, infinite if there are none."""
    finite = losses[np.isfinite(losses)]
    return float(finite.mean()) if len(finite) else float("inf")


def _refuse_nonfinite_rows(finite: np.ndarray, first: int, problem: str) -> None:
    """Raise :class:`NonFiniteError` naming the rows of ``X`` whose flag in ``finite`` ``[rows]`` is
    false (``first`` is the index in ``X`` of the first row)."""
    if finite.all():
        return
    rows = first + np.flatnonzero(~finite)
    shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
    raise NonFiniteError(
        f"{len(rows)} rows of X (rows {shown}) {problem}: they lie too far from the data fit read"
    )


class _Amortized(BaseEstimator):
    """What the classifier and regressor share: loading, preprocessing, the streaming adaptation loop."""

    _task: str

    def __init__(
        self,
        learner: Learner | str | os.PathLike | None = None,
        *,
        batch_size: int | str = "auto",
        num_passes: int | str = "auto",
        num_steps: int = DEFAULT_NUM_STEPS,
        horizon: int | None = REGRESSOR_HORIZON,
        wide_inputs: str = "pca",
        whiten: bool | str = "auto",
        n_threads: int | None = 1,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.learner = learner
        self.batch_size = batch_size
        self.num_passes = num_passes
        self.num_steps = num_steps
        self.horizon = horizon
        self.wide_inputs = wide_inputs
        self.whiten = whiten
        self.n_threads = n_threads
        self.random_state = random_state

    def _check_options(self) -> None:
        for name in ("batch_size", "num_passes"):
            if getattr(self, name) != "auto":
                check_positive_int(name, getattr(self, name))
        check_positive_int("num_steps", self.num_steps)
        if self.horizon is not None:
            check_positive_int("horizon", self.horizon)
        if self.n_threads is not None:
            check_positive_int("n_threads", self.n_threads)
        check_choice("wide_inputs", self.wide_inputs, WIDE_INPUTS)
        if not isinstance(self.whiten, bool) and not (isinstance(self.whiten, str) and self.whiten == "auto"):
            raise ConfigError(
                f"whiten must be True, False or 'auto', got {type(self.whiten).__name__} {self.whiten!r}"
            )

    def _schedule(self, num_rows: int, num_steps: int | None = None) -> tuple[int, int]:
        """The mini-batch size and the number of steps: ``"auto"`` aims at ``num_steps`` (by default
        ``self.num_steps``; see the module docstring), given passes read them that many times."""
        num_steps = num_steps or self.num_steps
        batch_size = self.batch_size
        if batch_size == "auto":
            smallest, largest = AUTO_BATCH_SIZES
            batch_size = min(max(-(-num_rows // num_steps), smallest), largest)
        batch_size = min(batch_size, num_rows)
        one_pass = -(-num_rows // batch_size)
        if self.num_passes == "auto":
            return batch_size, max(num_steps, one_pass)
        return batch_size, -(-self.num_passes * num_rows // batch_size)

    def _fit_preprocessing(self, X: np.ndarray, targets: np.ndarray) -> None:
        """Standardisation and whitening (with ``"auto"``, if it lowers the loss on held-out rows)."""
        whiten = self.whiten
        if self.n_features_in_ > self.learner_.input_dim:  # reduced: "pca" whitens, "project" does not
            whiten = self.wide_inputs == "pca"
        elif whiten == "auto":
            whiten = self._whitening_helps(X, targets)
        self.whitened_ = bool(whiten)
        self._fit_inputs(X, self.whitened_)

    def _whitening_helps(self, X: np.ndarray, targets: np.ndarray) -> bool:
        """Whether adapting to whitened inputs gives a lower loss on held-out rows than to standardised
        ones (each adapting to at most ``SELECTION_ROWS`` of the others); yes for data sets too small
        to hold rows out, no for one feature (whitening would only rescale it)."""
        if self.n_features_in_ < 2:
            return False
        if len(X) < MIN_CALIBRATION_ROWS:
            return True
        held_out, kept = self._held_out_split(len(X), SELECTION_ROWS)
        num_steps = min(self.num_steps, SELECTION_STEPS)
        losses = []
        for whiten in (True, False):
            self._fit_inputs(X[kept], whiten)
            self._adapt_to(X[kept], targets[kept], num_steps)
            losses.append(self._held_out_loss(X[held_out], targets[held_out]))
        return losses[0] <= losses[1]

    def _held_out_split(self, num_rows: int, most_kept: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows held out (``CALIBRATION_SHARE``, at most ``CALIBRATION_ROWS``) and rows kept, sorted."""
        order = check_random_state(self.random_state).permutation(num_rows)
        size = min(CALIBRATION_ROWS, max(1, round(CALIBRATION_SHARE * num_rows)))
        stop = None if most_kept is None else size + most_kept
        return np.sort(order[:size]), np.sort(order[size:stop])

    def _adapt_to(self, X: np.ndarray, targets: np.ndarray, num_steps: int | None = None) -> None:
        raise NotImplementedError

    def _held_out_loss(self, X: np.ndarray, targets: np.ndarray) -> float:
        raise NotImplementedError

    def _fit_inputs(self, X: np.ndarray, whiten: bool) -> None:
        """Standardisation, then whitening or the reduction to the learner's width if ``X`` is wider."""
        width = self.learner_.input_dim
        self.mean_, std = streaming_moments(X)
        self.scale_ = _unit_scale(std, self.mean_)
        self.projection_ = self.projection_offset_ = None
        wide = self.n_features_in_ > width
        if wide and self.wide_inputs == "error":
            raise ShapeError(
                f"X has {self.n_features_in_} features but the learner reads at most {width}; "
                "set wide_inputs='project' or 'pca' to reduce them, or use a wider learner"
            )
        if wide and self.wide_inputs == "project":
            generator = np.random.default_rng(PROJECTION_SEED)
            projection = generator.standard_normal((self.n_features_in_, width)) / np.sqrt(
                self.n_features_in_
            )
        elif wide or whiten:
            projection = principal_directions(X, min(width, self.n_features_in_), self._standardise)
        else:
            return
        mean, std = streaming_moments(X, lambda chunk: self._standardise(chunk) @ projection)
        flat = std <= NO_VARIANCE * std.max()  # a direction the columns span only through rounding
        projection[:, flat], mean[flat], std[flat] = 0.0, 0.0, 1.0
        scale = _unit_scale(std, mean)
        self.projection_ = projection / scale
        self.projection_offset_ = mean / scale

    def _standardise(self, rows: np.ndarray) -> np.ndarray:
        """Standardised features; a missing value (NaN) at its column's mean, 0."""
        z = (rows - self.mean_) / self.scale_
        missing = np.isnan(z)
        if missing.any():
            z[missing] = 0.0
        return z

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def _more_tags(self) -> dict[str, bool]:  # scikit-learn < 1.6
        return {"allow_nan": True}

    def _inputs(self, rows: np.ndarray) -> torch.Tensor:
        """Rows of ``X`` as learner inputs ``[1, rows, width]``: standardised, projected or padded."""
        z = self._standardise(np.asarray(rows, dtype=np.float64))
        if self.projection_ is not None:
            z = z @ self.projection_ - self.projection_offset_
        tensor = torch.zeros(1, len(z), self.learner_.input_dim, dtype=self.learner_.dtype)
        tensor[0, :, : z.shape[1]] = torch.from_numpy(z)
        return tensor

    def _adapt(self, X: np.ndarray, targets: np.ndarray, num_steps: int | None = None) -> None:
        """Refine the learner's state over shuffled passes of mini-batches, in runs of ``horizon`` steps.

        The runs are adapted side by side as a batch of states, one mini-batch each per step (at
        most ``MAX_MEMBERS``; further runs follow within each member, their states averaged).
        ``targets`` ``[rows, T]`` are ``T`` tasks on the same rows, adapted together (a state each).
        ``num_steps`` replaces ``self.num_steps`` as what an ``"auto"`` schedule aims at.
        """
        num_tasks = 1 if targets.ndim == 1 else targets.shape[1]
        batch_size, total_steps = self._schedule(len(X), num_steps)
        num_runs = 1 if self.horizon is None else -(-total_steps // self.horizon)
        num_members = min(num_runs, MAX_MEMBERS)
        member_steps = -(-total_steps // num_members)
        runs_per_member = -(-num_runs // num_members)
        bounds = [round(i * member_steps / runs_per_member) for i in range(runs_per_member + 1)]
        rng = check_random_state(self.random_state)
        order = _shuffled_stream(len(X), num_members * member_steps * batch_size, rng)
        order = order.reshape(num_members, member_steps, batch_size)
        value_sum = 0.0
        for first, stop in itertools.pairwise(bounds):
            batches = (self._batch(X, targets, order[:, step], num_tasks) for step in range(first, stop))
            initial = self.learner_.init_state(num_members * num_tasks)
            state = last_state(refinements(self.learner_, initial, batches))
            value_sum = value_sum + (stop - first) * state.value
        if runs_per_member > 1:
            state = replace(state, value=value_sum / member_steps)
        self.state_: State = state
        self.n_steps_, self.n_runs_ = num_members * member_steps, num_members * runs_per_member
        self.batch_size_, self.num_passes_ = batch_size, self.n_steps_ * batch_size / len(X)
        self.n_members_ = num_members

    def _batch(
        self, X: np.ndarray, targets: np.ndarray, rows: np.ndarray, num_tasks: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step's inputs and targets for every member's state: ``rows`` ``[members, B]``."""
        num_members, batch_size = rows.shape
        rows = np.sort(rows, axis=1)  # reading X in row order
        inputs = self._inputs(X[rows.ravel()]).reshape(num_members, batch_size, -1)
        member_targets = torch.cat([self._targets(targets[member_rows]) for member_rows in rows])
        return inputs.repeat_interleave(num_tasks, 0), member_targets

    def _targets(self, rows: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def _outputs(self, X: Any, held_out: bool = False) -> np.ndarray:
        """The learner's outputs (means or logits) at the rows of ``X``, computed chunk by chunk.

        Rows where they are NaN or infinite are a :class:`NonFiniteError` naming them. With
        ``held_out``, ``X`` is rows ``fit`` validated and held out of an adaptation: they are not
        validated again, and a row too far from the rows adapted to comes back non-finite for the
        caller to leave out (the final adaptation reads it with the others).
        """
        if not held_out:
            check_is_fitted(self, "state_")
            X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32], **ALLOW_NAN)
        outputs = None
        chunk_rows = max(1, PREDICT_CHUNK_ROWS // self.state_.num_tasks)  # a state per task reads every row
        with torch_threads(self.n_threads), torch.no_grad():
            for start in range(0, len(X), chunk_rows):
                rows = X[start : start + chunk_rows]
                inputs = self._inputs(rows)
                finite = torch.isfinite(inputs[0]).all(1).numpy()
                if not held_out:
                    _refuse_nonfinite_rows(finite, start, f"overflow {inputs.dtype} once standardised")
                inputs = inputs.nan_to_num(posinf=0.0, neginf=0.0).expand(self.state_.num_tasks, -1, -1)
                predicted = self.learner_.predict(self.state_, inputs, check_finite=False)
                chunk = self._combine(predicted.double().numpy())
                chunk[~finite] = np.nan
                if not held_out:
                    _refuse_nonfinite_rows(np.isfinite(chunk).all(1), start, "give NaN or infinite outputs")
                if outputs is None:
                    outputs = np.empty((len(X), chunk.shape[1]), dtype=np.float64)
                outputs[start : start + len(rows)] = chunk
        return outputs

    def _combine(self, outputs: np.ndarray) -> np.ndarray:
        """The members' mean output ``[rows, ·]`` from the learner's ``[members, rows, outputs]``."""
        return outputs.mean(0)


class AmortizedClassifier(ClassifierMixin, _Amortized):
    """A classifier that adapts a meta-trained learner to ``(X, y)`` by amortized inference.

    Parameters
    ----------
    learner : None, Learner, or path
        ``None`` uses the bundled pretrained classifier (``amortized/pretrained/classifier.pt``);
        a path is a checkpoint file, a folder holding ``checkpoint.pt`` or a run folder of one learner
        (else the error lists its learners' folders); a ``Learner`` is
        copied. It must be a classification learner whose state predicts at new points.
    batch_size : int or "auto"
        Rows per adaptation step (the bundled learner was meta-trained on 64); ``"auto"``: see the
        module docstring.
    num_passes : int or "auto"
        Passes over the rows, each in a new random order; ``"auto"`` reads ``num_steps`` mini-batches
        (at least one pass).
    num_steps : int
        The number of steps ``"auto"`` batch sizes and passes aim at (see the module docstring).
    horizon : int or None
        Most steps one state is refined for; longer reading is split into runs from the initial
        state, adapted side by side, whose predictions are averaged (32 for the classifier, 256 for
        the regressor: see the module docstring); ``None`` refines one state over everything.
    wide_inputs : {"pca", "project", "error"}
        What to do with more features than the learner reads (see the module docstring).
    whiten : bool or "auto"
        Rotate the standardised features onto their principal directions, scaled to unit variance,
        before the learner reads them; ``"auto"`` does it if that lowers the loss on held-out rows
        (see the module docstring); ``"pca"`` for wide inputs always does. On the data sets of
        ``python -m benchmarks real_data estimators``, always whitening lifted crabs from 0.870 to
        0.947 accuracy and diamonds from 0.953 to 0.960 R², but dropped breast cancer from 0.970 to
        0.950 and wine from 0.993 to 0.978; ``"auto"`` scored 0.947, 0.955, 0.970 and 0.982.
    calibrate : bool
        Fit a temperature dividing the logits so that ``predict_proba`` is calibrated: on 20% of the
        rows (at most 4096) after adapting to the other 80%, before adapting to all of them (one more
        adaptation); predicted classes do not change. Skipped below 20 rows. Off by default: on digits
        and iris it lowered the log loss (0.267 to 0.215, 0.149 to 0.128; ``python -m benchmarks
        estimators``), on breast cancer it raised it (0.097 to 0.111), on the real data sets of
        ``python -m benchmarks real_data`` it left the log loss at or below logistic regression's on
        8 of 15 sets against 11 without, and the bundled learner's probabilities are already
        calibrated on data like its prior (fitted temperatures near 1).
    n_threads : int or None
        Torch threads during ``fit`` and ``predict`` (restored afterwards); ``None`` keeps torch's.
    random_state : int, RandomState or None
        Seeds the order the rows are read in, and the rows held out to choose whether to whiten and to
        fit the temperature (a ``RandomState`` is drawn from for each, so ``whiten="auto"`` and its
        choice given explicitly read the rows in different orders; an int seeds each the same).

    Attributes
    ----------
    temperature_ : the fitted temperature (1.0 without ``calibrate``); ``whitened_`` : whether the
    inputs were whitened;
    classes_ : the class labels, sorted; ``learner_`` : the learner adapted; ``state_`` : its
    adapted state; ``mean_``, ``scale_`` : the feature standardisation; ``projection_``,
    ``projection_offset_`` : the reduction of wide inputs (``None`` if not needed);
    ``batch_size_``, ``num_passes_`` (a fraction of the last pass counts), ``n_steps_``, ``n_runs_``,
    ``n_members_`` : how the rows were read (``state_`` holds a state per member);
    ``one_vs_rest_`` : whether there were more classes than the learner's outputs, so that each was
    fitted against the rest (``state_`` then holds a state per class).
    """

    _task = "classification"

    def __init__(
        self,
        learner: Learner | str | os.PathLike | None = None,
        *,
        batch_size: int | str = "auto",
        num_passes: int | str = "auto",
        num_steps: int = DEFAULT_NUM_STEPS,
        horizon: int | None = CLASSIFIER_HORIZON,
        wide_inputs: str = "pca",
        whiten: bool | str = "auto",
        calibrate: bool = False,
        n_threads: int | None = 1,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        super().__init__(
            learner,
            batch_size=batch_size,
            num_passes=num_passes,
            num_steps=num_steps,
            horizon=horizon,
            wide_inputs=wide_inputs,
            whiten=whiten,
            n_threads=n_threads,
            random_state=random_state,
        )
        self.calibrate = calibrate

    def fit(self, X: Any, y: Any) -> AmortizedClassifier:
        """Adapt the learner to ``(X, y)``; labels of any type are mapped to ``0..C-1``."""
        self._check_options()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], **ALLOW_NAN)
        check_classification_targets(y)
        self.classes_, labels = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise LabelError(
                f"y holds 1 class ({self.classes_.tolist()}); a classifier needs at least 2 classes"
            )
        self.learner_ = load_learner(self.learner, self._task)
        self.one_vs_rest_ = len(self.classes_) > self.learner_.num_classes
        check_bool("calibrate", self.calibrate)
        self.temperature_ = 1.0
        with torch_threads(self.n_threads), torch.no_grad():
            self._fit_preprocessing(X, labels)
            if self.calibrate and len(X) >= MIN_CALIBRATION_ROWS:
                self.temperature_ = self._held_out_temperature(X, labels)
            self._adapt_classes(X, labels)
        return self

    def _adapt_to(self, X: np.ndarray, targets: np.ndarray, num_steps: int | None = None) -> None:
        self._adapt_classes(X, targets, num_steps)

    def _held_out_loss(self, X: np.ndarray, targets: np.ndarray) -> float:
        """The mean negative log-likelihood of the labels ``targets`` (``0..C-1``) on the rows it is
        finite for (infinite if none)."""
        logits = self._logits(X, held_out=True)
        losses = np.log(np.exp(logits).sum(1)) - logits[np.arange(len(X)), targets]
        return _finite_mean(losses)

    def _adapt_classes(self, X: np.ndarray, labels: np.ndarray, num_steps: int | None = None) -> None:
        """Adapt to the labels, or with more classes than the learner has outputs, to each class
        against the rest: one binary task per class on the same rows, adapted together."""
        if self.one_vs_rest_:
            labels = labels[:, None] == np.arange(len(self.classes_))
        self._adapt(X, labels, num_steps)

    def _combine(self, outputs: np.ndarray) -> np.ndarray:
        """The log of the members' mean probabilities ``[rows, C]`` from the learner's logits
        ``[members · tasks, rows, outputs]``; one against the rest, each class's margin over the rest.
        """
        one_vs_rest = getattr(self, "one_vs_rest_", False)
        num_classes = 2 if one_vs_rest else len(self.classes_)
        logits = outputs[..., :num_classes].reshape(self.n_members_, -1, outputs.shape[1], num_classes)
        log_probabilities = logits - _log_sum_exp(logits)
        peak = log_probabilities.max(0)
        mean = peak + np.log(np.exp(log_probabilities - peak).mean(0))
        if not one_vs_rest:
            return mean[0]
        return (mean[..., 1] - mean[..., 0]).T

    def _held_out_temperature(self, X: np.ndarray, labels: np.ndarray) -> float:
        """The temperature fitted on rows held out of an adaptation to the others.

        A state's confidence on the rows it read says little about new rows (on separable data it
        can grow without bound), so the temperature is fitted on ``CALIBRATION_SHARE`` of the rows
        (at most ``CALIBRATION_ROWS``) after adapting to the rest.
        """
        held_out, kept = self._held_out_split(len(X))
        self._adapt_classes(X[kept], labels[kept])
        logits = self._logits(X[held_out], held_out=True)
        finite = np.isfinite(logits).all(1)
        return fit_temperature(logits[finite], labels[held_out][finite]) if finite.any() else 1.0

    def _targets(self, rows: np.ndarray) -> torch.Tensor:
        """Labels ``[1, rows]``, or one binary task per column ``[classes, rows]``."""
        labels = torch.from_numpy(rows.astype(np.int64))
        return labels[None] if labels.dim() == 1 else labels.T.contiguous()

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``[rows, classes]``, columns in the order of ``classes_``."""
        logits = self._logits(X)
        probabilities = np.exp(logits)
        return probabilities / probabilities.sum(1, keepdims=True)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log class probabilities ``[rows, classes]``."""
        logits = self._logits(X)
        return logits - np.log(np.exp(logits).sum(1, keepdims=True))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row, as one of ``classes_``."""
        best = self._logits(X).argmax(1)
        return self.classes_[best]

    def _logits(self, X: Any, held_out: bool = False) -> np.ndarray:
        """The logits of the fitted classes only, divided by the temperature, largest per row 0."""
        check_is_fitted(self, "state_")
        outputs = self._outputs(X, held_out)
        logits = outputs[:, : len(self.classes_)] / getattr(self, "temperature_", 1.0)
        return logits - logits.max(1, keepdims=True)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature ``T`` minimising the log loss of ``softmax(logits / T)`` on ``labels``, with
    a prior ``log T ~ N(0, TEMPERATURE_PRIOR²)``.

    The prior keeps a few perfectly separated rows from driving ``T`` to zero (certainty that one
    mistake on new rows would punish without bound). Searched on a log grid over ``TEMPERATURES``
    and refined; dividing all logits by one positive number never changes the predicted class.
    """
    logits = logits - logits.max(1, keepdims=True)
    chosen = logits[np.arange(len(labels)), labels]

    def log_loss(temperature: float) -> float:
        scaled = logits / temperature
        total = np.sum(np.log(np.exp(scaled).sum(1)) - chosen / temperature)
        return float(total + np.log(temperature) ** 2 / (2 * TEMPERATURE_PRIOR**2))

    low, high = np.log(TEMPERATURES)
    for _ in range(3):
        grid = np.exp(np.linspace(low, high, 25))
        best = int(np.argmin([log_loss(t) for t in grid]))
        spacing = (high - low) / 24
        low, high = np.log(grid[best]) - spacing, np.log(grid[best]) + spacing
    return float(grid[best])


def _refuse_strings(y: Any) -> None:
    """Raise if regression targets are strings, even numeric ones (``"1.5"``): they are not numbers."""
    values = np.asarray(y)
    kind = values.dtype.kind
    if kind in "US" or (kind == "O" and any(isinstance(value, str | bytes) for value in values.flat)):
        raise ValueError(
            f"y holds strings (dtype {values.dtype}); AmortizedRegressor needs numeric targets: "
            "convert them first, e.g. y.astype(float)"
        )


class AmortizedRegressor(RegressorMixin, _Amortized):
    """A regressor that adapts a meta-trained learner to ``(X, y)`` by amortized inference.

    Parameters and attributes are those of :class:`AmortizedClassifier`, with a regression learner
    (``None`` uses ``amortized/pretrained/regressor.pt``) and ``y_mean_``, ``y_scale_`` instead of
    ``classes_``. ``y`` is one target per row; it is standardised for the learner and predictions
    are mapped back to its scale.
    """

    _task = "regression"

    def fit(self, X: Any, y: Any) -> AmortizedRegressor:
        """Adapt the learner to ``(X, y)`` with ``y`` standardised; ``y`` must be numbers, not strings."""
        self._check_options()
        _refuse_strings(y)
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=True, **ALLOW_NAN)
        self.learner_ = load_learner(self.learner, self._task)
        if self.learner_.output_dim != 1:
            outputs = self.learner_.output_dim
            raise ConfigError(
                f"AmortizedRegressor predicts one target, but the learner has {outputs} outputs"
            )
        mean, std = streaming_moments(np.asarray(y, dtype=np.float64).reshape(-1, 1))
        self.y_mean_, self.y_scale_ = float(mean[0]), float(_unit_scale(std, mean)[0])
        with torch_threads(self.n_threads), torch.no_grad():
            self._fit_preprocessing(X, y)
            self._adapt(X, y)
        return self

    def _adapt_to(self, X: np.ndarray, targets: np.ndarray, num_steps: int | None = None) -> None:
        self._adapt(X, targets, num_steps)

    def _held_out_loss(self, X: np.ndarray, targets: np.ndarray) -> float:
        """The mean squared error on the standardised scale of ``y``."""
        standardised = (targets - self.y_mean_) / self.y_scale_
        return _finite_mean((self._outputs(X, held_out=True)[:, 0] - standardised) ** 2)

    def _targets(self, rows: np.ndarray) -> torch.Tensor:
        standardised = (rows.astype(np.float64) - self.y_mean_) / self.y_scale_
        return torch.from_numpy(standardised).to(self.learner_.dtype)[None, :, None]

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets ``[rows]`` on the scale of the ``y`` given to ``fit``."""
        outputs = self._outputs(X)[:, 0]
        with np.errstate(over="ignore"):  # overflow is refused below, naming the rows
            predictions = outputs * self.y_scale_ + self.y_mean_
        _refuse_nonfinite_rows(
            np.isfinite(predictions), 0, "have predictions beyond float64's range on the scale of y"
        )
        return predictions
