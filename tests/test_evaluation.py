import math

import pytest
import torch

import amortized
from amortized.errors import ConfigError
from amortized.evaluation import (
    EvaluationConfig,
    PeakTensorMemory,
    TaskSuite,
    add_reference_ratios,
    baseline_curves,
    cost_curve,
    learner_curves,
    size_curve,
    step_curve,
    summarize,
)
from amortized.learners import SGD, BayesLinearRegression, InContext, LearnedUpdate
from amortized.models import Linear
from amortized.tasks import LinearRegression

FAMILY = LinearRegression(dim=2, noise=0.1)
TINY = {"width": 16, "depth": 1, "heads": 2}


@pytest.fixture(scope="module")
def tasks():
    return FAMILY.sample(12, 24, 16, torch.Generator().manual_seed(3))


def query_mse(learner, tasks, state):
    return learner.likelihood.metrics(learner.predict(state, tasks.x_query), tasks.y_query)["mse"].mean()


def test_summarize_gives_means_and_standard_errors_over_tasks():
    values = torch.tensor([1.0, 2.0, 3.0, 6.0])
    out = summarize({"mse": values})
    assert out["mse"] == pytest.approx(3.0)
    assert out["mse_stderr"] == pytest.approx(values.std().item() / 2)


def test_step_curve_matches_separate_adaptations_over_the_same_sequence(tasks):
    learner = SGD(Linear(2), lr=0.1)
    points = step_curve(learner, tasks, steps=[1, 3, 7], batch_size=8, seed=5)
    assert [p["k"] for p in points] == [1, 3, 7]
    assert [p["points_seen"] for p in points] == [8, 24, 56]  # k = 7 is beyond one pass of 24 points
    for point in points:
        state = amortized.adapt(
            learner,
            tasks.x_train,
            tasks.y_train,
            batch_size=8,
            num_steps=point["k"],
            generator=torch.Generator().manual_seed(5),
        )
        assert point["mse"] == pytest.approx(query_mse(learner, tasks, state).item(), rel=1e-5)
        assert point["seconds"] >= 0 and point["mse_stderr"] > 0


def test_one_shot_reads_the_points_the_first_k_batches_hold(tasks):
    bayes = BayesLinearRegression(2, noise=0.1)
    iterative = step_curve(bayes, tasks, steps=[1, 2, 3], batch_size=8, seed=5)
    one_shot = step_curve(bayes, tasks, steps=[1, 2, 3, 9], batch_size=8, seed=5, one_shot=True)
    # The exact posterior does not depend on how the same points are batched...
    for a, b in zip(iterative, one_shot, strict=False):
        assert a["mse"] == pytest.approx(b["mse"], rel=1e-4)
    # ...and a one-shot learner never reads a point twice: past one pass it has seen all 24 points.
    assert [p["points_seen"] for p in one_shot] == [8, 16, 24, 24]
    assert one_shot[-1]["mse"] == one_shot[-2]["mse"]


def test_size_curve_reads_each_point_once(tasks):
    learner = SGD(Linear(2), lr=0.1)
    points = size_curve(learner, tasks, sizes=[4, 8, 20], batch_size=8, seed=1)
    assert [(p["n"], p["k"]) for p in points] == [(4, 1), (8, 1), (20, 3)]
    one_shot = size_curve(learner, tasks, sizes=[20], batch_size=8, seed=1, one_shot=True)
    assert one_shot[0]["k"] == 1
    with pytest.raises(ConfigError, match="needs 64 training points"):
        size_curve(learner, tasks, sizes=[64], batch_size=8, seed=1)


def test_bayes_reference_beats_sgd_and_ratios_are_relative_to_it():
    config = EvaluationConfig(
        steps=[1, 4], sizes=[8, 16], batch_size=4, num_train=16, num_query=16, num_tasks=32
    )
    shifted = LinearRegression(dim=2, noise=0.5)
    suite = TaskSuite.sample(FAMILY, {"noisier": shifted}, config)
    reference = learner_curves(
        BayesLinearRegression(2, 0.1),
        suite,
        config,
        one_shot=True,
        ood_learners={"noisier": BayesLinearRegression(2, 0.5)},
    )
    sgd = learner_curves(SGD(Linear(2), lr=0.05), suite, config)
    assert set(sgd) == {"steps", "size", "ood"} and [p["k"] for p in sgd["ood"]["noisier"]] == [1, 4]
    results = {"metric": "mse", "learners": {"SGD": {"curves": sgd}}, "reference": {"curves": reference}}
    add_reference_ratios(results)
    for point, ref in zip(sgd["steps"], reference["steps"], strict=True):
        assert point["mse"] > 2 * ref["mse"]  # four steps of SGD from zero are far from the posterior mean
        assert point["mse_ratio"] == pytest.approx(point["mse"] / ref["mse"])
        assert ref["mse_ratio"] == pytest.approx(1.0)
    assert all("mse_ratio" in p for p in sgd["size"] + sgd["ood"]["noisier"])


def test_baselines_are_tuned_per_k_on_other_tasks_and_never_pick_a_diverging_rate():
    config = EvaluationConfig(steps=[1, 8], sizes=[16], batch_size=4, num_train=16, num_query=8, num_tasks=16)
    suite = TaskSuite.sample(FAMILY, {}, config)
    grid = [0.01, 0.3, 50.0]
    curves = baseline_curves(lambda lr: SGD(Linear(2), lr=lr), suite, config, grid=grid)
    assert [p["lr"] for p in curves["steps"]] == [0.3, 0.3]
    assert curves["steps"][1]["mse"] < 0.5 * curves["steps"][0]["mse"]
    assert all(math.isfinite(p["mse"]) and p["lr"] in grid for p in curves["steps"] + curves["size"])
    once = baseline_curves(
        lambda lr: SGD(Linear(2), lr=lr), suite, config, grid=grid, tune="once", tune_steps=8
    )
    assert {p["lr"] for p in once["steps"] + once["size"]} == {0.3}
    with pytest.raises(ConfigError, match="per_k"):
        baseline_curves(lambda lr: SGD(Linear(2), lr=lr), suite, config, grid=grid, tune="always")


def test_peak_tensor_memory_counts_new_storage_once_and_releases_it():
    with PeakTensorMemory() as meter:
        big = torch.zeros(1000)
        view = big.view(10, 100)
        big.add_(1.0)
        assert meter.current == 4000
        del big, view
        assert meter.current == 0
        small = torch.ones(10)
    assert meter.peak == 4000 and small.sum() == 10


def test_one_shot_memory_grows_with_n_while_iterative_memory_is_bounded():
    options = {"sizes": [64, 1024], "batch_size": 16, "num_tasks": 2, "num_query": 8, "seed": 0}
    iterative = cost_curve(LearnedUpdate(Linear(2), rule=TINY), FAMILY, **options)
    one_shot = cost_curve(InContext(2, rule=TINY), FAMILY, one_shot=True, **options)
    assert [(p["n"], p["k"]) for p in iterative] == [(64, 4), (1024, 64)]
    assert [p["k"] for p in one_shot] == [1, 1]
    assert iterative[1]["peak_bytes"] < 1.5 * iterative[0]["peak_bytes"]
    assert one_shot[1]["peak_bytes"] > 8 * one_shot[0]["peak_bytes"]
    assert all(p["seconds"] > 0 for p in iterative + one_shot)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"step": [1]}, r"unknown key\(s\) evaluation.step; valid: .*steps"),
        ({"steps": [1, 1]}, "duplicates"),
        ({"steps": []}, "non-empty list"),
        ({"batch_size": 0}, "evaluation.batch_size must be > 0"),
        ({"ood": {"noisier": 1.0}}, "evaluation.ood"),
    ],
)
def test_bad_evaluation_options_are_named(values, match):
    with pytest.raises(ConfigError, match=match):
        EvaluationConfig.from_dict(values)
