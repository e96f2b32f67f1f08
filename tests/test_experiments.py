import json
import shutil
import subprocess

import pytest
import torch

import amortized.training
from amortized.checkpoints import load_checkpoint
from amortized.config import Experiment
from amortized.errors import CheckpointError, ConfigError
from amortized.experiments import (
    RunFolder,
    _agree,
    evaluate_experiment,
    git_commit,
    load_trained,
    train_learners,
)
from amortized.learners import InContext, LatentUpdate, LearnedUpdate
from amortized.models import Linear

from .conftest import FAST, SILENT

# Fewer iterations and a smaller evaluation than the tiny preset: every test here runs in seconds.


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A run folder of the tiny preset, trained and evaluated."""
    experiment = Experiment.from_preset("tiny", FAST)
    run = RunFolder.create(tmp_path_factory.mktemp("run") / "tiny", experiment)
    trained = train_learners(experiment, run, progress=False, **SILENT)
    results = evaluate_experiment(experiment, run, trained, **SILENT)
    return experiment, run, results


def test_run_folder_holds_config_checkpoints_metrics_and_results(finished):
    experiment, run, results = finished
    assert run.config_path.is_file() and run.experiment().config == experiment.config
    for spec in experiment.learners:
        folder = run.learner_dir(spec.name)
        assert load_checkpoint(folder / "checkpoint.pt")["iteration"] == 6
        assert (folder / "evaluation.json").is_file()
    records = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    assert {r["learner"] for r in records} == {spec.name for spec in experiment.learners}
    assert json.loads(run.results_path.read_text()) == results


def test_results_follow_the_documented_schema(finished):
    results = finished[2]
    assert results["metric"] == "mse" and results["task"] == "regression"
    assert set(results["learners"]) == {
        "LearnedUpdate",
        "MAML",
        "LatentUpdate",
        "InContext-one-shot",
        "SGD",
        "Adam",
    }
    for name, entry in results["learners"].items():
        assert entry["regime"] in ("parametric", "explicit", "implicit", "baseline")
        assert isinstance(entry["iterative"], bool) and isinstance(entry["train_seconds"], float)
        assert isinstance(entry["train_cpu_seconds"], float)
        steps, size = entry["curves"]["steps"], entry["curves"]["size"]
        assert [p["k"] for p in steps] == [1, 4] and [p["n"] for p in size] == [8, 16]
        for point in steps + size + entry["curves"]["ood"]["noisier"]:
            for metric in ("mse", "nll", "excess_mse"):
                assert isinstance(point[metric], float) and point[f"{metric}_stderr"] >= 0
            assert point["points_seen"] >= 1 and point["seconds"] >= 0 and "mse_ratio" in point
        assert [c["n"] for c in entry["cost"]] == [8, 16]
        assert entry["iterative"] == (name != "InContext-one-shot")
    reference = results["reference"]
    assert reference["class"] == "BayesLinearRegression"
    assert all(p["mse_ratio"] == pytest.approx(1.0) for p in reference["curves"]["steps"])


def test_evaluation_uses_the_same_tasks_for_every_learner(finished):
    _, _, results = finished
    sgd = results["learners"]["SGD"]["curves"]["steps"]
    reference = results["reference"]["curves"]["steps"]
    # Excess MSE is measured against the same noiseless targets: mse - excess_mse is the noise
    # term of the query points, identical for every learner when the tasks are identical.
    noise = [p["mse"] - p["excess_mse"] for p in reference]
    for point, expected in zip(sgd, noise, strict=True):
        assert point["mse"] - point["excess_mse"] == pytest.approx(expected, abs=0.05)


def interrupt_after_checkpoint(monkeypatch, learner_dir, iteration):
    """Make training stop (as Ctrl-C would) right after ``learner_dir``'s checkpoint at ``iteration``."""
    real = amortized.training.save_checkpoint

    def save_then_interrupt(path, payload):
        real(path, payload)
        if path.parent == learner_dir and payload["iteration"] == iteration:
            raise KeyboardInterrupt

    monkeypatch.setattr(amortized.training, "save_checkpoint", save_then_interrupt)


def test_an_interrupted_run_resumes_without_redoing_finished_work(tmp_path, monkeypatch):
    experiment = Experiment.from_preset("tiny", FAST)
    run = RunFolder.create(tmp_path / "run", experiment)
    interrupt_after_checkpoint(monkeypatch, run.learner_dir("LatentUpdate"), 3)
    with pytest.raises(KeyboardInterrupt):
        train_learners(experiment, run, progress=False, **SILENT)
    monkeypatch.undo()
    finished = load_checkpoint(run.learner_dir("LearnedUpdate") / "checkpoint.pt")
    assert finished["iteration"] == 6
    assert load_checkpoint(run.learner_dir("LatentUpdate") / "checkpoint.pt")["iteration"] == 3
    with pytest.raises(ConfigError, match=r"LatentUpdate, InContext-one-shot.*train --resume"):
        load_trained(experiment, run)

    trained_calls = []
    real_train = amortized.experiments.train

    def spy(learner, family, config, **options):
        start = (
            load_checkpoint(options["out_dir"] / "checkpoint.pt")["iteration"]
            if (options["out_dir"] / "checkpoint.pt").exists()
            else 0
        )
        trained_calls.append((options["out_dir"].name, start))
        return real_train(learner, family, config, **options)

    monkeypatch.setattr(amortized.experiments, "train", spy)
    resumed = RunFolder.open(run.path)
    trained = train_learners(resumed.experiment(), resumed, progress=False, **SILENT)
    assert trained_calls == [("LatentUpdate", 3), ("InContext-one-shot", 0)]
    assert (
        load_checkpoint(run.learner_dir("LearnedUpdate") / "checkpoint.pt")["train_seconds"]
        == (finished["train_seconds"])
    )
    history = [
        json.loads(line)
        for line in (run.learner_dir("LatentUpdate") / "metrics.jsonl").read_text().splitlines()
    ]
    assert [record["iteration"] for record in history] == [1, 2, 3, 4, 5, 6]

    evaluate_experiment(experiment, run, trained, **SILENT)
    computed = []
    evaluate_experiment(experiment, run, trained, log=computed.append)
    assert computed and all(message.endswith("evaluation cached") for message in computed)


def test_learners_train_on_the_callers_torch_threads(tmp_path, monkeypatch):
    """The command line's --threads holds for training, not ``train``'s own default of one thread."""
    seen = []

    def record_threads(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise KeyboardInterrupt  # enough: the threads training would run on are known

    monkeypatch.setattr(amortized.training, "_train", record_threads)
    experiment = Experiment.from_preset("tiny", FAST)
    torch.set_num_threads(2)  # as `--threads 2` does; the autouse fixture restores the suite's
    with pytest.raises(KeyboardInterrupt):
        train_learners(experiment, RunFolder.create(tmp_path / "run", experiment), progress=False, **SILENT)
    assert seen == [2]


def test_a_resumed_interrupted_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, finished):
    experiment = Experiment.from_preset("tiny", FAST)
    run = RunFolder.create(tmp_path / "run", experiment)
    interrupt_after_checkpoint(monkeypatch, run.learner_dir("LearnedUpdate"), 3)
    with pytest.raises(KeyboardInterrupt):
        train_learners(experiment, run, progress=False, **SILENT)
    monkeypatch.undo()
    trained = train_learners(experiment, run, progress=False, **SILENT)
    results = evaluate_experiment(experiment, run, trained, **SILENT)
    uninterrupted = finished[2]["learners"]["LearnedUpdate"]["curves"]["steps"]
    assert [p["mse"] for p in results["learners"]["LearnedUpdate"]["curves"]["steps"]] == pytest.approx(
        [p["mse"] for p in uninterrupted], rel=1e-5
    )


def test_a_folder_is_never_overwritten_or_mixed_with_another_config(tmp_path, finished):
    experiment, run, _ = finished
    with pytest.raises(ConfigError, match=r"already exists and is not empty.*--resume"):
        RunFolder.create(run.path, experiment)
    with pytest.raises(ConfigError, match="not a run folder"):
        RunFolder.open(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        RunFolder.open(tmp_path / "missing")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"not empty; it is not a run folder \(no config.toml\)"):
        RunFolder.create(tmp_path / "notes", experiment)
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        RunFolder.create(tmp_path / "notes" / "a.txt", experiment)
    other = Experiment.from_preset("tiny", [*FAST, "learners.LearnedUpdate.kwargs.rule.width=8"])
    with pytest.raises(CheckpointError, match="another learner or training config"):
        load_trained(other, run)


def test_a_checkpoint_agrees_with_a_learner_whose_rule_gained_an_option_since():
    """A rule option added since a checkpoint was written (``history``) takes its default."""
    current = LearnedUpdate(Linear(2), rule={"width": 8, "depth": 1, "heads": 2}).describe()["config"]
    saved = {**current, "rule": {k: v for k, v in current["rule"].items() if k != "history"}}
    assert _agree(saved, current)
    other = {**saved, "rule": {**saved["rule"], "width": 16}}
    assert not _agree(other, current)
    assert not _agree(saved, {**current, "rule": {**current["rule"], "history": 2}})
    assert not _agree(saved, {**current, "rule": {**current["rule"], "unheard_of": 1}})


def test_an_in_context_checkpoint_from_before_the_ridge_readout_is_not_taken_for_today_s_default():
    rule = {"width": 8, "depth": 1, "heads": 2}
    current = InContext(2, rule=rule).describe()["config"]
    saved = {k: v for k, v in current.items() if k != "ridge_features"}
    assert not _agree(saved, current)
    assert _agree(saved, InContext(2, ridge_features=None, rule=rule).describe()["config"])


def test_an_in_context_checkpoint_from_before_the_base_gate_agrees_with_the_ungated_default():
    rule = {"width": 8, "depth": 1, "heads": 2}
    current = InContext(2, rule=rule).describe()["config"]
    saved = {k: v for k, v in current.items() if k != "base_gate"}
    assert _agree(saved, current)
    assert not _agree(saved, InContext(2, base_gate=True, rule=rule).describe()["config"])


def test_a_latent_checkpoint_from_before_skip_features_agrees_with_the_plain_skip():
    current = LatentUpdate(2, latent_dim=4, decoder_hidden=(8,), rule={"width": 8}).describe()["config"]
    saved = {k: v for k, v in current.items() if k != "skip_features"}
    assert _agree(saved, current)
    wider = LatentUpdate(2, latent_dim=4, decoder_hidden=(8,), skip_features=4, rule={"width": 8})
    assert not _agree(saved, wider.describe()["config"])


def test_learners_are_not_resumed_or_scored_on_a_family_they_were_not_trained_on(finished):
    _, run, _ = finished
    other = Experiment.from_preset("tiny", [*FAST, "family.noise=0.3"])
    for use in (load_trained, lambda experiment, run: train_learners(experiment, run, **SILENT)):
        with pytest.raises(
            CheckpointError, match=r"trained on LinearRegression\(dim=2, noise=0.1,.*noise=0.3,"
        ):
            use(other, run)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_provenance_names_the_commit_of_the_package_s_own_checkout_only(tmp_path):
    package = tmp_path / "repo" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    assert git_commit(package) is None  # not a checkout (or one that does not track the package)

    def git(*arguments):
        command = ["git", "-C", str(package), "-c", "user.name=t", "-c", "user.email=t@t", *arguments]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    git("add", "__init__.py")
    git("commit", "-q", "-m", "first")
    assert git_commit(package) == {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": False}
    (package / "__init__.py").write_text("x = 1\n")
    assert git_commit(package)["uncommitted_changes"] is True
