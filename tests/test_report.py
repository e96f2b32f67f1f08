import json

import pytest
from matplotlib.image import imread

from amortized.errors import RunFileError
from amortized.evaluation import add_reference_ratios
from amortized.report import (
    plot_training,
    read_training,
    shift_description,
    summary,
    summary_table,
    undertrained,
    write_report,
)
from amortized.report.plots import _value_at


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
    assert (
        "Lowest mse by number of steps: OneShot at k=1 (0.9); Worse at k=4 (0.4); Improver at k=16 (0.2)."
        in text
    )
    assert (
        "Closest learned learner to the Bayes posterior: at k=1, OneShot at 1.80× the Bayes mse; "
        "at k=16, Improver at 2.00× the Bayes mse" in text
    )
    assert "Improver: mse 2 at k=1 → 0.2 at k=16 (-90%): more steps helped" in text
    assert "beyond its trained 4 steps, 0.5 → 0.2 (improved)" in text
    assert "Flat: mse 1 at k=1 → 1 at k=16 (+0%): no clear change" in text
    assert "Worse: mse 1 at k=1 → 3 at k=16 (+200%): more steps hurt" in text
    assert "OneShot: mse" not in text  # a one-shot learner takes one step whatever k is
    assert "Gap to the Bayes limit at k=16 (mse 0.1): Improver 2.00×, OneShot 6.00×" in text
    assert "Out of distribution (noisier): best at k=16 is Improver" in text
    assert "iterative Improver used 1.0 MB; one-shot OneShot used 4.0 MB" in text


def records(name, values, key="eval_mse", every=10):
    """Training records of ``name``: ``values`` of ``key`` at iterations every, 2 * every, ..."""
    return [
        {"learner": name, "iteration": every * (i + 1), "loss": 1.0, key: v} for i, v in enumerate(values)
    ]


def test_a_log_scaled_training_loss_is_judged_on_its_geometric_mean(results):
    """Log losses are negative below 1: the trend is that of exp(mean log loss), not a share of it."""
    for name in ("Improver", "Flat"):
        results["learners"][name]["loss_scale"] = "log"
    falling = [-1.0] * 60 + [-1.0 - 0.02 * i for i in range(40)]  # still falling at the end
    training = {
        "Improver": records("Improver", [-1.5] * 100, key="loss", every=1),
        "Flat": records("Flat", falling, key="loss", every=1),
        "Worse": records("Worse", [1.0] * 100, key="loss", every=1),
        "OneShot": records("OneShot", [1.0] * 100, key="loss", every=1),
    }
    found, unjudged = undertrained(results, training)
    assert unjudged == [] and set(found) <= {"Improver", "Flat"}
    assert found["Flat"] == "its training loss still fell 33% over the last fifth of meta-training"
    assert "Improver" not in found or "training loss" not in found["Improver"]


def test_summary_names_learners_that_look_under_trained_and_why(results):
    results["learners"]["SGD"] = {**learner("baseline", True, {1: 1.0, 4: 0.3, 16: 0.1}), "tune": "per_k"}
    # a fixed reference (nothing tuned, e.g. the task's own samples) is no yardstick for training
    results["learners"]["Oracle"] = {
        **learner("baseline", True, {1: 0.01, 4: 0.01, 16: 0.01}),
        "tune": "none",
    }
    training = {
        "Improver": records("Improver", [5, 4, 3, 2, 1, 1, 1, 1, 1, 1]),  # flat over its last two fifths
        "Flat": records("Flat", [5, 4, 3, 2, 1.5, 1.4, 1.3, 1.2, 1.0, 0.8]),  # still falling 28%
        "Worse": records("Worse", [3.0] * 30, key="loss", every=1),  # training loss only: flat
        "OneShot": records("OneShot", [1.0, 0.5]),  # too few records to judge
    }
    found, unjudged = undertrained(results, training)
    assert found == {
        "Improver": "1.7× or more the mse of the tuned baseline SGD at every k up to its trained k=4",
        "Flat": "its held-out mse still fell 28% over the last fifth of meta-training",
    }
    assert unjudged == ["OneShot"]
    text = "\n".join(summary(results, training))
    assert "Possibly under-trained" in text and "**Flat** (its held-out mse still fell 28%" in text
    assert "Too few iterations were logged to judge whether OneShot was still improving." in text

    training = {name: records(name, [1.0] * 10) for name in ("Improver", "Flat", "Worse", "OneShot")}
    del results["learners"]["SGD"], results["learners"]["Oracle"]
    assert "No learner looks under-trained" in "\n".join(summary(results, training))


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
    results["provenance"] = {
        "command": "amortized run tiny --set 'evaluation.steps=[1, 4]'",
        "amortized": "0.1.0",
        "torch": "2.4.0",
        "python": "3.11.7",
        "platform": "Linux",
        "git": {"commit": "0" * 40, "uncommitted_changes": False},
        "seeds": {"train": {"Improver": 0, "Flat": 0}, "evaluation": 7},
        "train_cpu_seconds": 61.0,
        "train_wall_seconds": 70.0,
        "evaluation_cpu_seconds": 10.0,
        "evaluation_wall_seconds": 11.0,
        "cpu_seconds": 71.0,
        "wall_seconds": 81.0,
        "command_wall_seconds": 50.0,
        "finished": "2025-01-01T00:00:00+0000",
    }
    path = write_report(tmp_path, results)
    report = path.read_text()
    assert "| command | `amortized run tiny --set 'evaluation.steps=[1, 4]'` |" in report
    assert f"| git commit | {'0' * 40} |" in report and "| seeds | meta-training 0, evaluation 7 |" in report
    assert "| CPU time | 1 min 11 s: meta-training 1 min 1 s, evaluation 10.0 s" in report
    assert "this command took 50.0 s" in report
    assert "Shifted: noise – → 1.0." in report
    for heading in (
        "## Summary",
        "## Provenance",
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


def test_training_plot_skips_a_last_record_cut_short_and_names_a_foreign_log(results, tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"learner": "A", "iteration": 1, "loss": 0.5}\n{"learner": "A", "iter')
    training = read_training(metrics)
    assert training == {"A": [{"learner": "A", "iteration": 1, "loss": 0.5}]}
    assert plot_training(training, tmp_path / "training.png", results) == "training.png"
    metrics.write_text('{"step": 1, "value": 0.5}\n')
    with pytest.raises(RunFileError, match=f"{metrics} is not a training log"):
        read_training(metrics)


def test_training_plot_puts_the_held_out_metric_beside_one_loss_panel_per_learner(results, tmp_path):
    training = {
        "Improver": records("Improver", [2.0, 1.0, 0.5]),
        "Flat": [{"learner": "Flat", "iteration": i, "loss": -1.0 / i} for i in range(1, 4)],  # log-scale
    }
    plot_training(training, tmp_path / "training.png", results)
    with_held_out = imread(tmp_path / "training.png")
    plot_training({"Flat": training["Flat"]}, tmp_path / "training.png", results)
    alone = imread(tmp_path / "training.png")
    assert with_held_out.shape[1] == 3 * alone.shape[1]  # held-out metric, Improver's loss, Flat's loss


def test_a_shift_is_described_by_the_options_it_changed():
    assert shift_description("LinearRegression(dim=2, noise=0.1)", "LinearRegression(dim=2, noise=0.5)") == (
        "noise 0.1 → 0.5"
    )
    digits = "LabelledDataset(name='digits-train', seed=0, classes=(0, 2, 3))"
    held_out = "LabelledDataset(name='digits-test', seed=0, classes=(1, 4))"
    assert (
        shift_description(digits, held_out)
        == "name 'digits-train' → 'digits-test', classes (0, 2, 3) → (1, 4)"
    )
    assert shift_description("odd", "other") == "other"


def test_each_learner_s_trained_k_is_marked_on_its_own_curve():
    assert _value_at([1, 4, 16], [1.0, 0.25, 0.1], 4) == 0.25
    assert _value_at([1, 4, 16], [1.0, 0.25, 0.1], 2) == pytest.approx(0.5)  # halfway on log-log axes
    assert _value_at([1, 4], [1.0, 0.25], 8) is None


def test_names_from_an_edited_results_file_stay_inside_their_table_cell(results, tmp_path):
    name = next(iter(results["learners"]))
    results["learners"]["evil | name\nwith lines"] = results["learners"].pop(name)
    report = write_report(tmp_path, results).read_text()
    rows = [line for line in report.splitlines() if line.startswith("|") and "evil" in line]
    assert rows and all("| evil \\| name with lines |" in row for row in rows)
    assert not any(line.startswith("with lines |") for line in report.splitlines())
