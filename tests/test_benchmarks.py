"""Smoke test: the benchmark runner and the cost and speed benchmarks work at toy sizes."""

import json

import pytest
import torch

from benchmarks import cost
from benchmarks.__main__ import main, run_benchmark


def test_runner_writes_json_and_readme_for_cost_and_speed(tmp_path):
    out, readme = tmp_path / "results", tmp_path / "README.md"
    code = main(["cost", "speed", "--quick", "--threads", "1", "--out", str(out), "--readme", str(readme)])
    assert code == 0

    cost_record = json.loads((out / "cost.json").read_text())
    assert cost_record["quick"] and cost_record["machine"]["torch"] == torch.__version__
    for rows in cost_record["result"]["series"].values():
        assert [row["status"] for row in rows] == ["ok"]
        assert rows[0]["seconds"] > 0
    assert (out / "cost.png").stat().st_size > 0

    speed = json.loads((out / "speed.json").read_text())["result"]
    assert len(speed["throughput"]) == 7
    assert all(row["tasks_per_second"] > 0 for row in speed["throughput"])
    if speed["maml"]["status"] == "ok":
        assert speed["maml"]["max_gradient_difference"] < 1e-5

    text = readme.read_text()
    assert "--quick --threads 1" in text and "Quick run at toy sizes" in text
    assert "| InContext one-shot | 64 |" in text and "![cost](results/cost.png)" in text
    assert "LearnedUpdate (gradients)" in text


def test_runner_skips_a_benchmark_that_does_not_exist_yet(tmp_path):
    status, note = run_benchmark("not_written", tmp_path, quick=True, command="python -m benchmarks")
    assert status == "skipped" and "benchmarks/not_written.py does not exist yet" in note
    assert not list(tmp_path.iterdir())


def test_runner_rejects_unknown_benchmark_names(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["nonsense", "--out", str(tmp_path)])
    assert "unknown benchmark(s) ['nonsense']" in capsys.readouterr().err


def test_fit_slope_reads_powers_on_log_log_axes():
    sizes = [2**k for k in range(8, 12)]
    assert cost.fit_slope(sizes, [3.0 * n for n in sizes]) == pytest.approx(1.0)
    assert cost.fit_slope(sizes, [1e-6 * n * n for n in sizes]) == pytest.approx(2.0)
    assert cost.fit_slope(sizes[:1], [1.0]) is None


def test_iterative_report_checks_each_target():
    from benchmarks.iterative import STEPS, report

    def curve(values):
        return {str(k): {"excess_mse": v, "error": v} for k, v in zip(STEPS, values, strict=True)}

    falling = [0.8 / 2**i for i in range(len(STEPS))]
    rising = [*falling[:-1], falling[-2] * 1.2]
    result = {
        "linear-regression": {
            "family": "LinearRegression(...)",
            "metric": "excess_mse",
            "learner": {"iterations": 1, "train_cpu_seconds": 1, "train_wall_seconds": 1},
            "curve": curve(rising),
            "sgd": curve([3 * v for v in falling]),
            "bayes": curve([v / 1.4 for v in falling]),
        },
        "linear-classification": {
            "family": "LinearClassification(...)",
            "metric": "error",
            "learner": {"iterations": 1, "train_cpu_seconds": 1, "train_wall_seconds": 1},
            "curve": curve(falling),
            "sgd": curve([v / 2 for v in falling]),
            "logistic_regression_error": falling[STEPS.index(32)] - 0.005,
            "bayes_error": 0.0,
        },
    }
    text = report(result)
    regression, classification = text.split("#### linear-classification")
    assert "met at k = [1, 2, 4, 8, 16, 32] of" in regression
    assert "never increasing with k: not met (largest step-to-step ratio 1.200)" in regression
    assert "below tuned SGD at every k: met" in regression
    assert "gap +0.0050" in classification
    assert "never increasing with k: met" in classification
    assert "below tuned SGD at every k: not met" in classification
