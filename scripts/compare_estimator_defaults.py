"""Old estimator defaults against the current ones, on synthetic data no default was chosen on.

``python scripts/compare_estimator_defaults.py OLD_DIR`` where ``OLD_DIR`` holds ``classifier.pt``
and ``regressor.pt`` of an earlier release, e.g. extracted with
``git show 118e0d1:src/amortized/pretrained/classifier.pt > OLD_DIR/classifier.pt`` (and the
regressor): those are fitted without whitening (the earlier behaviour), the bundled ones with the
current defaults. ``--old-options JSON`` fits the earlier side with those estimator options
instead, and without ``OLD_DIR`` it uses the bundled checkpoints: ``--old-options '{"num_steps":
32}'`` compares the earlier 32-step schedule with the current one; ``--new-options JSON`` fits
the current side with options other than the defaults (a candidate default).

Data: scikit-learn's ``make_classification`` (3 classes, 6 or 20 features, 5% or 20% of labels
flipped), ``make_regression`` (12 features, two noise levels) and Friedman #2 and #3, 1,500 rows,
and two small noisy sets of 100 rows (``make_classification``, 2 classes, 10% of labels flipped;
``make_regression``, noise 30), seeds 0-2, one 70/30 split each; the score is accuracy or R² on the
test split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from sklearn import datasets
from sklearn.model_selection import train_test_split

from amortized import AmortizedClassifier, AmortizedRegressor


def cases(seed: int) -> list[tuple[str, bool, tuple]]:
    """``(name, is_classification, (X, y))`` for one seed."""
    found = []
    for features, flip in ((6, 0.05), (20, 0.2)):
        data = datasets.make_classification(
            n_samples=1500,
            n_features=features,
            n_informative=max(2, features // 2),
            n_classes=3,
            flip_y=flip,
            random_state=seed,
        )
        found.append((f"make_classification d={features} flip={flip}", True, data))
    for noise in (5.0, 50.0):
        data = datasets.make_regression(
            n_samples=1500, n_features=12, n_informative=6, noise=noise, random_state=seed
        )
        found.append((f"make_regression d=12 noise={noise:g}", False, data))
    found.append(("friedman2", False, datasets.make_friedman2(n_samples=1500, noise=50, random_state=seed)))
    found.append(("friedman3", False, datasets.make_friedman3(n_samples=1500, noise=0.1, random_state=seed)))
    small = datasets.make_classification(
        n_samples=100, n_features=8, n_informative=4, flip_y=0.1, random_state=seed
    )
    found.append(("make_classification d=8 n=100 flip=0.1", True, small))
    small = datasets.make_regression(
        n_samples=100, n_features=8, n_informative=4, noise=30.0, random_state=seed
    )
    found.append(("make_regression d=8 n=100 noise=30", False, small))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "old",
        type=Path,
        nargs="?",
        help="folder with the earlier classifier.pt and regressor.pt (default: bundled)",
    )
    parser.add_argument(
        "--old-options",
        type=json.loads,
        default={"whiten": False},
        help='estimator options of the earlier side, as JSON (default: {"whiten": false})',
    )
    parser.add_argument(
        "--new-options",
        type=json.loads,
        default={},
        help="estimator options of the current side, as JSON (default: {}, the defaults)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for seed in (0, 1, 2):
        for name, is_classification, (X, y) in cases(seed):
            X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
            make = AmortizedClassifier if is_classification else AmortizedRegressor
            old_path = args.old and args.old / ("classifier.pt" if is_classification else "regressor.pt")
            old_model = make(old_path, random_state=0, **args.old_options)
            old = old_model.fit(X_train, y_train).score(X_test, y_test)
            new = make(random_state=0, **args.new_options).fit(X_train, y_train).score(X_test, y_test)
            print(f"{name} seed={seed}: earlier {old:.3f}, now {new:.3f} ({new - old:+.3f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
