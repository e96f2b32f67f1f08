import json

import pytest
from matplotlib.image import imread

from amortized.errors import RunFileError
from amortized.evaluation import add_reference_ratios
from amortized.report import plot_training, summary, summary_table, write_report


def curve(values, stderr=0.01, key="k", batch=8):
    return [
        {
            key: x,
            "points_seen": x * batch,
            "mse": v,
            "mse_stderr": stderr,
            "nll": v + 1,
            "nll_stderr": stderr,
            "seconds": 0.01 * x,
        }
        for x, v in values.items()
    ]


def learner(regime, iterative, steps, trained=4):
    return {
        "class": "X",
        "regime": regime,
        "iterative": iterative,
        "train_seconds": 12.0,
        "train_cpu_seconds": 11.0,
        "train_iterations": 100,
        "trained_steps": trained,
        "curves": {
            "steps": curve(steps),
            "size": curve({16: 1.0, 64: 0.5}, key="n"),
            "ood": {"noisier": curve(steps)},
        },
        "cost": [
            {"n": 64, "k": 8 if iterative else 1, "seconds": 0.1, "peak_bytes": 2**20},
            {
                "n": 256,
                "k": 32 if iterative else 1,
                "seconds": 0.3,
                "peak_bytes": (2**20 if iterative else 2**22),
            },
        ],
    }


@pytest.fixture
def results():
    results = {
        "preset": "synthetic",
        "description": "made-up numbers",
        "family": "LinearRegression(dim=2)",
        "task": "regression",
        "metric": "mse",
        "evaluation": {
            "steps": [1, 4, 16],
            "num_train": 32,
            "batch_size": 8,
            "num_query": 8,
            "num_tasks": 10,
            "cost_sizes": [64, 256],
            "cost_tasks": 2,
        },
        "ood": {"noisier": "LinearRegression(dim=2, noise=1.0)"},
        "learners": {
            "Improver": learner("parametric", True, {1: 2.0, 4: 0.5, 16: 0.2}),
            "Flat": learner("implicit", True, {1: 1.0, 4: 1.0, 16: 1.005}),
            "Worse": learner("explicit", True, {1: 1.0, 4: 0.4, 16: 3.0}),
            "OneShot": learner("implicit", False, {1: 0.9, 4: 0.6, 16: 0.6}, trained=1),
        },
        "reference": {
            "name": "Bayes",
            "class": "BayesLinearRegression",
            "curves": {
                "steps": curve({1: 0.5, 4: 0.2, 16: 0.1}),
                "size": curve({16: 0.3, 64: 0.2}, key="n"),
                "ood": {"noisier": curve({1: 0.5, 4: 0.2, 16: 0.1})},
            },
        },
    }
    add_reference_ratios(results)
    return results


def test_summary_states_the_best_learner_whether_steps_helped_and_the_gap_to_bayes(results):
    text = "\n".join(summary(results))
    assert "k=1: OneShot (0.9); k=4: Worse (0.4); k=16: Improver (0.2)" in text
    assert "Improver: mse 2 at k=1 → 0.2 at k=16 (-90%): more steps helped" in text
    assert "beyond its trained 4 steps, 0.5 → 0.2 (improved)" in text
    assert "Flat: mse 1 at k=1 → 1 at k=16 (+0%): no clear change" in text
    assert "Worse: mse 1 at k=1 → 3 at k=16 (+200%): more steps hurt" in text
    assert "OneShot: mse" not in text  # a one-shot learner takes one step whatever k is
    assert "Gap to the Bayes limit at k=16 (mse 0.1): Improver 2.00×, OneShot 6.00×" in text
    assert "Out of distribution (noisier): best at k=16 is Improver" in text
    assert "iterative Improver used 1.0 MB; one-shot OneShot used 4.0 MB" in text


def test_summary_table_lists_every_learner_and_the_reference(results):
    table = summary_table(results)
    lines = table.splitlines()
    assert lines[0] == "mse (lower is better)"
    assert lines[1].split() == ["learner", "regime", "mode", "train", "CPU", "s", "k=1", "k=16", "×", "Bayes"]
    rows = {line.split()[0]: line.split() for line in lines[3:]}
    assert rows["Improver"][-3:] == ["2", "0.2", "2.00"]
    assert rows["OneShot"][2] == "one-shot"
    assert rows["Bayes"][-1] == "1.00"


def test_report_has_tables_plots_and_summary(results, tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"learner": "Improver", "iteration": i, "loss": 1 / i}) + "\n" for i in range(1, 20)
        )
    )
    path = write_report(tmp_path, results)
    report = path.read_text()
    for heading in (
        "## Summary",
        "### mse",
        "### nll",
        "### mse ÷ Bayes",
        "## Data set size N",
        "### noisier",
        "## Cost of one adaptation",
        "## Meta-training",
    ):
        assert heading in report
    assert "| Improver | 2 ± 0.01 | 0.5 ± 0.01 | 0.2 ± 0.01 |" in report
    assert "| *best* | OneShot | Worse | Improver |" in report
    for plot in ("steps.png", "size.png", "ood.png", "cost.png", "training.png"):
        assert f"]({plot})" in report
        image = imread(tmp_path / plot)
        assert image.shape[0] > 300 and image.shape[1] > 500


def test_report_without_reference_or_shifts(results, tmp_path):
    results["reference"] = None
    results["ood"] = {}
    for entry in results["learners"].values():
        entry["curves"]["ood"] = {}
    report = write_report(tmp_path, results).read_text()
    assert "Bayes" not in report and "## Out of distribution" not in report
    assert "× Bayes" not in summary_table(results)


def test_training_plot_skips_a_last_record_cut_short_and_names_a_foreign_log(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"learner": "A", "iteration": 1, "loss": 0.5}\n{"learner": "A", "iter')
    assert plot_training(metrics, tmp_path / "training.png") == "training.png"
    metrics.write_text('{"step": 1, "value": 0.5}\n')
    with pytest.raises(RunFileError, match=f"{metrics} is not a training log"):
        plot_training(metrics, tmp_path / "training.png")
