"""Estimators: the bundled pretrained classifier against scikit-learn's, and fit cost at scale.

Accuracy: breast_cancer, wine, iris and digits, 5 stratified 70/30 splits each (seeds 0-4);
``AmortizedClassifier`` (bundled learner; with its defaults, and reading each row once in
mini-batches of 64) against ``LogisticRegression`` (standardised inputs, ``max_iter=1000``) and
``RandomForestClassifier`` (100 trees); digits (64 features) also with ``wide_inputs="project"``
instead of the default PCA; always and never whitening (the default ``whiten="auto"`` chooses).
Time is fit + predict on the split, in this process.

Calibration: the same splits, test log loss of ``AmortizedClassifier`` with and without
``calibrate=True`` against ``LogisticRegression``.

Missing values: the same splits with none, 20% and 50% of the entries of ``X`` (train and test) set to NaN
at random (``numpy.random.default_rng(seed)``); test accuracy of ``AmortizedClassifier`` (NaN read as
the column mean) against ``LogisticRegression`` after a mean ``SimpleImputer`` and
``HistGradientBoostingClassifier`` (NaN handled natively).

Regression: diabetes and Friedman #1 (2,000 rows, noise 1), 5 random 70/30 splits;
``AmortizedRegressor`` against ``LinearRegression`` and ``RandomForestRegressor``; R² on the test split.

Horizon: digits (5 splits) read in mini-batches of 64 for 1, 2, 5 and 10 passes (20 steps a pass),
refining one state throughout (``horizon=None``) or in runs of 32 steps side by side, their
predictions averaged (the default).

Scale: synthetic 3-class data with 20 features (labels from a random linear softmax) of 10^4, 10^5
and 10^6 training rows. Each size runs in its own subprocess so its peak RSS is its own: the data is
written in chunks into one preallocated float64 array (no temporaries), then ``fit`` runs and the
peak resident memory is read. The numbers are the RSS before the data, the data's size, the peak,
and the fit and predict times, with ``LogisticRegression`` fitted afterwards for reference accuracy
(its memory is not measured: the peak is read before it runs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

FEATURES, CLASSES, TEST_ROWS = 20, 3, 10_000
DATASETS = ("breast_cancer", "wine", "iris", "digits")
SIZES = (10_000, 100_000, 1_000_000)
QUICK = {"splits": 2, "sizes": (2_000,)}


def _classifiers() -> dict[str, Any]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from amortized import AmortizedClassifier

    return {
        "AmortizedClassifier": lambda seed: AmortizedClassifier(random_state=seed),
        "AmortizedClassifier (batches of 64, 1 pass)": lambda seed: AmortizedClassifier(
            batch_size=64, num_passes=1, random_state=seed
        ),
        "AmortizedClassifier (random projection)": lambda seed: AmortizedClassifier(
            wide_inputs="project", random_state=seed
        ),
        "AmortizedClassifier (whiten=True)": lambda seed: AmortizedClassifier(whiten=True, random_state=seed),
        "AmortizedClassifier (whiten=False)": lambda seed: AmortizedClassifier(
            whiten=False, random_state=seed
        ),
        "LogisticRegression": lambda seed: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "RandomForestClassifier": lambda seed: RandomForestClassifier(n_estimators=100, random_state=seed),
    }


def accuracy(splits: int) -> dict[str, Any]:
    """Mean and std of test accuracy and of fit + predict seconds per data set and classifier."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    results: dict[str, Any] = {}
    for name in DATASETS:
        X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        results[name] = {"rows": len(X), "features": X.shape[1], "classes": len(np.unique(y))}
        for label, make in _classifiers().items():
            scores, seconds, whitened = [], [], 0
            for seed in range(splits):
                X_train, X_test, y_train, y_test = train_test_split(
                    X, y, test_size=0.3, random_state=seed, stratify=y
                )
                began = time.perf_counter()
                model = make(seed).fit(X_train, y_train)
                predicted = model.predict(X_test)
                seconds.append(time.perf_counter() - began)
                scores.append(float(np.mean(predicted == y_test)))
                whitened += bool(getattr(model, "whitened_", False))
            results[name][label] = {
                "accuracy_mean": round(statistics.mean(scores), 4),
                "accuracy_std": round(statistics.pstdev(scores), 4),
                "splits_whitened": whitened,
                "seconds_mean": round(statistics.mean(seconds), 4),
            }
    return results


def calibration(splits: int) -> dict[str, Any]:
    """Mean test log loss per data set: the classifier without and with ``calibrate``, and LogReg."""
    from sklearn import datasets
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from amortized import AmortizedClassifier

    models = {
        "AmortizedClassifier": lambda seed: AmortizedClassifier(random_state=seed),
        "AmortizedClassifier (calibrate=True)": lambda seed: AmortizedClassifier(
            calibrate=True, random_state=seed
        ),
        "LogisticRegression": lambda seed: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
    }
    results: dict[str, Any] = {}
    for name in DATASETS:
        X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        losses: dict[str, list[float]] = {label: [] for label in models}
        for seed in range(splits):
            X_train, X_test, y_train, y_test = train_test_split(
                X, y, test_size=0.3, random_state=seed, stratify=y
            )
            for label, make in models.items():
                probabilities = make(seed).fit(X_train, y_train).predict_proba(X_test)
                losses[label].append(log_loss(y_test, probabilities, labels=np.unique(y)))
        results[name] = {label: round(statistics.mean(values), 4) for label, values in losses.items()}
    return results


MISSING_SHARES = (0.0, 0.2, 0.5)


def missing(splits: int) -> dict[str, Any]:
    """Mean test accuracy per data set, share of missing entries and classifier."""
    from sklearn import datasets
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from amortized import AmortizedClassifier

    models = {
        "AmortizedClassifier": lambda seed: AmortizedClassifier(random_state=seed),
        "LogisticRegression (mean imputed)": lambda seed: make_pipeline(
            SimpleImputer(), StandardScaler(), LogisticRegression(max_iter=1000)
        ),
        "HistGradientBoostingClassifier": lambda seed: HistGradientBoostingClassifier(random_state=seed),
    }
    results: dict[str, Any] = {}
    for name in DATASETS:
        X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        results[name] = {}
        for share in MISSING_SHARES:
            scores: dict[str, list[float]] = {label: [] for label in models}
            for seed in range(splits):
                holes = np.random.default_rng(seed).random(X.shape) < share
                X_train, X_test, y_train, y_test = train_test_split(
                    np.where(holes, np.nan, X), y, test_size=0.3, random_state=seed, stratify=y
                )
                for label, make in models.items():
                    predicted = make(seed).fit(X_train, y_train).predict(X_test)
                    scores[label].append(float(np.mean(predicted == y_test)))
            results[name][str(share)] = {label: round(statistics.mean(v), 4) for label, v in scores.items()}
    return results


def regression(splits: int) -> dict[str, Any]:
    """Mean test R² per data set and regressor."""
    from sklearn.datasets import load_diabetes, make_friedman1
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import train_test_split

    from amortized import AmortizedRegressor

    data = {
        "diabetes": load_diabetes(return_X_y=True),
        "friedman1": make_friedman1(2000, noise=1.0, random_state=0),
    }
    regressors = {
        "AmortizedRegressor": lambda seed: AmortizedRegressor(random_state=seed),
        "LinearRegression": lambda seed: LinearRegression(),
        "RandomForestRegressor": lambda seed: RandomForestRegressor(n_estimators=100, random_state=seed),
    }
    results: dict[str, Any] = {}
    for name, (X, y) in data.items():
        results[name] = {"rows": len(X), "features": X.shape[1]}
        for label, make in regressors.items():
            scores = []
            for seed in range(splits):
                X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=seed)
                scores.append(float(make(seed).fit(X_train, y_train).score(X_test, y_test)))
            results[name][label] = round(statistics.mean(scores), 4)
    return results


def horizon(splits: int, passes: tuple[int, ...] = (1, 2, 5, 10)) -> list[dict[str, Any]]:
    """Digits accuracy against the number of steps, with one state or an ensemble of runs of 32 steps."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from amortized import AmortizedClassifier

    X, y = load_digits(return_X_y=True)
    rows = []
    for num_passes in passes:
        row: dict[str, Any] = {"passes": num_passes}
        for label, limit in (("one_state", None), ("runs_of_32", 32)):
            scores = []
            for seed in range(splits):
                X_train, X_test, y_train, y_test = train_test_split(
                    X, y, test_size=0.3, random_state=seed, stratify=y
                )
                model = AmortizedClassifier(
                    batch_size=64, num_passes=num_passes, horizon=limit, random_state=0
                )
                scores.append(model.fit(X_train, y_train).score(X_test, y_test))
            row["steps"] = model.n_steps_
            row[label] = round(statistics.mean(scores), 4)
        rows.append(row)
    return rows


def _rss_mb() -> float:
    """Current resident memory of this process, in MB (Linux ``/proc``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _synthetic(rows: int, weights: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of standard-normal features with labels from ``softmax(x W)``, written chunk by chunk."""
    generator = np.random.default_rng(seed)
    X, y = np.empty((rows, FEATURES)), np.empty(rows, dtype=np.int64)
    for start in range(0, rows, 65_536):
        stop = min(rows, start + 65_536)
        X[start:stop] = generator.standard_normal((stop - start, FEATURES))
        logits = X[start:stop] @ weights
        probabilities = np.exp(logits - logits.max(1, keepdims=True))
        probabilities /= probabilities.sum(1, keepdims=True)
        y[start:stop] = (probabilities.cumsum(1) < generator.random((stop - start, 1))).sum(1)
    return X, y


def scale_run(rows: int) -> dict[str, Any]:
    """One size, measured in this (fresh) process; see the module docstring."""
    from sklearn.linear_model import LogisticRegression

    from amortized import AmortizedClassifier

    weights = np.random.default_rng(0).standard_normal((FEATURES, CLASSES))
    X_test, y_test = _synthetic(TEST_ROWS, weights, seed=1)
    rss_before = _rss_mb()
    X, y = _synthetic(rows, weights, seed=2)
    rss_with_data = _rss_mb()
    model = AmortizedClassifier(random_state=0)
    began = time.perf_counter()
    model.fit(X, y)
    fit_seconds = time.perf_counter() - began
    peak = _peak_rss_mb()
    began = time.perf_counter()
    score = float(model.score(X_test, y_test))
    predict_seconds = time.perf_counter() - began
    began = time.perf_counter()
    reference = LogisticRegression(max_iter=1000).fit(X, y)
    reference_seconds = time.perf_counter() - began
    bayes = float(np.mean((X_test @ weights).argmax(1) == y_test))
    return {
        "rows": rows,
        "features": FEATURES,
        "steps": model.n_steps_,
        "fit_seconds": round(fit_seconds, 2),
        "predict_seconds_10k_rows": round(predict_seconds, 3),
        "rss_before_data_mb": round(rss_before, 1),
        "data_mb": round((X.nbytes + y.nbytes) / 2**20, 1),
        "rss_with_data_mb": round(rss_with_data, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_above_data_mb": round(peak - rss_with_data, 1),
        "accuracy": round(score, 4),
        "logistic_regression_accuracy": round(float(reference.score(X_test, y_test)), 4),
        "logistic_regression_fit_seconds": round(reference_seconds, 2),
        "bayes_accuracy": round(bayes, 4),
    }


def scale(sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    """Each size in its own subprocess (with this process's torch threads), for an honest peak RSS."""
    results = []
    for rows in sizes:
        completed = subprocess.run(
            [sys.executable, __file__, "--rows", str(rows), "--threads", str(torch.get_num_threads())],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        results.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    return results


def main(out_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Run every part; ``quick`` uses 2 splits and one small size (a smoke run)."""
    splits, sizes = (QUICK["splits"], QUICK["sizes"]) if quick else (5, SIZES)
    return {
        "accuracy": accuracy(splits),
        "calibration": calibration(splits),
        "missing": missing(splits),
        "regression": regression(splits),
        "horizon": horizon(splits),
        "scale": scale(sizes),
        "splits": splits,
    }


def _table(title: str, columns: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table with its title, after a blank line."""
    lines = ["", title, "", "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def report(result: dict[str, Any]) -> str:
    """Markdown tables of every part: accuracy, calibration, missing values, regression, horizon, scale."""
    labels = list(next(iter(result["accuracy"].values())))[3:]
    lines = [
        f"Test accuracy, mean ± std over {result['splits']} splits (fit + predict seconds)",
        "",
        "| data set | " + " | ".join(labels) + " |",
        "| --- |" + " --- |" * len(labels),
    ]
    for name, row in result["accuracy"].items():
        cells = [
            f"{row[k]['accuracy_mean']:.3f} ± {row[k]['accuracy_std']:.3f} ({row[k]['seconds_mean']:.2f} s)"
            for k in labels
        ]
        lines.append(
            f"| {name} ({row['rows']}×{row['features']}, {row['classes']} classes) | "
            + " | ".join(cells)
            + " |"
        )
    if "calibration" in result:
        models = list(next(iter(result["calibration"].values())))
        lines += _table(
            f"Test log loss, mean over {result['splits']} splits (`calibrate=True`: a temperature fitted on "
            "20% of the rows held out of a first adaptation)",
            ["data set", *models],
            [[name, *(f"{row[m]:.3f}" for m in models)] for name, row in result["calibration"].items()],
        )
    if "missing" in result:
        models = list(next(iter(next(iter(result["missing"].values())).values())))
        lines += _table(
            f"Test accuracy with a share of the entries of X missing (NaN), mean over {result['splits']} "
            "splits",
            ["data set", "missing", *models],
            [
                [name, f"{float(share):.0%}", *(f"{row[m]:.3f}" for m in models)]
                for name, shares in result["missing"].items()
                for share, row in shares.items()
            ],
        )
    regressors = list(next(iter(result["regression"].values())))[2:]
    lines += [
        "",
        f"Test R², mean over {result['splits']} splits",
        "",
        "| data set | " + " | ".join(regressors) + " |",
        "| --- |" + " --- |" * len(regressors),
    ]
    for name, row in result["regression"].items():
        cells = " | ".join(f"{row[k]:.3f}" for k in regressors)
        lines.append(f"| {name} ({row['rows']}×{row['features']}) | {cells} |")
    lines += [
        "",
        "Digits accuracy against steps read in batches of 64: one state, or an ensemble of runs of 32 steps",
        "",
        "| passes | steps | one state | runs of 32 |",
        "| --- | --- | --- | --- |",
    ]
    for row in result["horizon"]:
        lines.append(f"| {row['passes']} | {row['steps']} | {row['one_state']} | {row['runs_of_32']} |")
    lines += [
        "",
        "| rows | steps | fit s | peak RSS MB | data MB | peak above data MB | accuracy | LogReg | Bayes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["scale"]:
        lines.append(
            f"| {row['rows']:,} | {row['steps']} | {row['fit_seconds']} | {row['peak_rss_mb']} "
            f"| {row['data_mb']} "
            f"| {row['peak_above_data_mb']} | {row['accuracy']} | {row['logistic_regression_accuracy']} "
            f"| {row['bayes_accuracy']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="One scale measurement; run all with `python -m benchmarks estimators`."
    )
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps(scale_run(args.rows)))
