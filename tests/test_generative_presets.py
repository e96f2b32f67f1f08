"""The gmm, alphabet and scm-order presets run end to end, with their fixed references and sample plots."""

import pytest
import torch

from amortized.config import Experiment
from amortized.errors import ConfigError
from amortized.experiments import RunFolder, evaluate_experiment, train_learners
from amortized.report import write_report

from .conftest import SILENT

FAST = [
    "train.iterations=3",
    "train.eval_every=0",
    "train.checkpoint_every=3",
    "train.num_train=64",
    "evaluation.steps=[1, 4]",
    "evaluation.sizes=[16, 32]",
    "evaluation.num_train=64",
    "evaluation.num_query=32",
    "evaluation.num_tasks=6",
    "evaluation.cost_sizes=[16]",
]
TINY = {
    "gmm": ["FlowMatching", "FlowMatching-one-shot"],
    "alphabet": ["FlowMatching", "FlowMatching-one-shot"],
    "scm-order": ["OrderScores", "OrderScores-one-shot"],
}


def run_preset(name, folder):
    shrink = [f"learners.{learner}.kwargs.{key}" for learner in TINY[name] for key in ("width=16", "depth=1")]
    shrink += [f"learners.{TINY[name][1]}.train.{key}=64" for key in ("batch_size", "num_train")]
    if name != "scm-order":
        shrink.append("baselines.GaussianMixtureFit.kwargs.max_components=2")
    experiment = Experiment.from_preset(name, [*FAST, *shrink])
    run = RunFolder.create(folder / name, experiment)
    trained = train_learners(experiment, run, progress=False, **SILENT)
    return experiment, run, evaluate_experiment(experiment, run, trained, **SILENT)


@pytest.mark.parametrize("name", ["gmm", "alphabet"])
def test_generative_presets_report_metrics_references_and_generated_samples(name, tmp_path):
    _, run, results = run_preset(name, tmp_path)
    assert results["task"] == "samples" and results["metric"] == "energy"
    assert set(results["learners"]) == {*TINY[name], "GaussianMixtureFit", "TrueSamples"}
    for entry in results["learners"].values():
        assert {point["k"] for point in entry["curves"]["steps"]} == {1, 4}
        assert {"energy", "nll"} <= set(entry["curves"]["steps"][0])
    reference = results["learners"]["TrueSamples"]
    assert reference["regime"] == "baseline" and reference["tune"] == "none"
    samples = results["samples"]
    assert torch.tensor(samples["truth"]).shape == (4, 32, 2)
    assert set(samples["generated"]) == set(results["learners"])
    assert all(torch.tensor(points).shape == (4, 32, 2) for points in samples["generated"].values())
    report = write_report(run.path, results).read_text()
    assert "![generated samples](samples.png)" in report and (run.path / "samples.png").is_file()
    assert "nothing learned or tuned" in report


def test_scm_order_preset_scores_orders_against_random_and_variance_sorting(tmp_path):
    _, run, results = run_preset("scm-order", tmp_path)
    assert results["task"] == "order" and results["metric"] == "violations"
    assert set(results["learners"]) == {*TINY["scm-order"], "RandomOrder", "VarianceOrder"}
    random = results["learners"]["RandomOrder"]["curves"]["steps"][0]["violations"]
    assert 0.2 < random < 0.8
    assert "samples" not in results and "Generated samples" not in write_report(run.path, results).read_text()


def test_fixed_references_take_no_learning_rate():
    with pytest.raises(ConfigError, match="no learning rate"):
        Experiment.from_preset("gmm", ["baselines.TrueSamples.lr_grid=[0.1]"])
    with pytest.raises(ConfigError, match="max_components"):
        Experiment.from_preset("gmm", ["baselines.TrueSamples.kwargs.max_components=3"])
