import pytest
import torch

from amortized import adapt
from amortized.errors import ConfigError, NonFiniteError
from amortized.learners import SGD, Adam, BayesLinearRegression, tune_learning_rate
from amortized.models import MLP, Linear, mse
from amortized.tasks import LinearClassification, LinearRegression

GRID = [0.003, 0.01, 0.03, 0.1, 0.3]


@pytest.fixture(scope="module")
def linear_tasks():
    family = LinearRegression(dim=8, noise=0.5)
    return family, family.sample(256, 512, 128, torch.Generator().manual_seed(0))


def query_mse(learner, tasks, num_steps=None, batch_size=32):
    state = adapt(
        learner,
        tasks.x_train,
        tasks.y_train,
        batch_size=batch_size,
        num_steps=num_steps,
        generator=torch.Generator().manual_seed(1),
    )
    return mse(learner.predict(state, tasks.x_query), tasks.y_query).mean().item()


def test_bayes_matches_the_analytic_expected_risk(linear_tasks):
    _, tasks = linear_tasks
    # E[MSE] = σ²(1 + E tr((XᵀX)⁻¹)) ≈ σ²(1 + p / (N - p - 1)) for p = 9 features incl. bias.
    analytic = 0.25 * (1 + 9 / (512 - 9 - 1))
    assert abs(query_mse(BayesLinearRegression(8, noise=0.5), tasks) - analytic) / analytic < 0.05


def test_bayes_beats_sgd_and_adam_at_every_learning_rate(linear_tasks):
    _, tasks = linear_tasks
    bayes = query_mse(BayesLinearRegression(8, noise=0.5), tasks)
    for lr in GRID:
        assert bayes < query_mse(SGD(Linear(8), lr), tasks)
        assert bayes < query_mse(Adam(Linear(8), lr), tasks)


def test_bayes_batch_by_batch_equals_all_at_once_in_float32_and_float64(linear_tasks):
    _, tasks = linear_tasks
    bayes = BayesLinearRegression(8, noise=0.5)
    sequential = adapt(bayes, tasks.x_train, tasks.y_train, batch_size=32)
    for dtype in (torch.float32, torch.float64):
        x, y = tasks.x_train.to(dtype), tasks.y_train.to(dtype)
        once = adapt(bayes, x, y, batch_size=512)
        assert once.value.dtype == dtype
        assert torch.allclose(sequential.value.double(), once.value.double(), atol=1e-4)
    variance = bayes.predictive_variance(sequential, tasks.x_query)
    assert variance.shape == (256, 128) and (variance > 0).all()


def test_bayes_is_accurate_with_little_data_and_tiny_noise():
    family = LinearRegression(dim=8, noise=0.01)
    tasks = family.sample(64, 4, 16, torch.Generator().manual_seed(0))
    state = adapt(BayesLinearRegression(8, noise=0.01), tasks.x_train, tasks.y_train, batch_size=2)
    assert torch.isfinite(state.value).all()


def test_tuned_adam_improves_over_sixteen_minibatches(linear_tasks):
    family, tasks = linear_tasks

    def make(lr):
        return Adam(Linear(8), lr)

    best, losses = tune_learning_rate(make, family, GRID, num_steps=16, batch_size=32)
    assert set(losses) == set(GRID) and losses[best] == min(losses.values())
    errors = [query_mse(make(best), tasks, num_steps=k) for k in (1, 4, 16)]
    assert errors[0] > 1.5 * errors[1] > 1.5 * errors[2]


def test_per_task_optimizers_classify_and_train_mlps():
    family = LinearClassification(dim=4, num_classes=3, temperature=0.3)
    tasks = family.sample(32, 256, 64, torch.Generator().manual_seed(0))
    learner = Adam(MLP(4, 3, hidden=(16,)), lr=0.03, task="classification", init="random")
    untrained = learner.likelihood.metrics(
        learner.predict(learner.init_state(32), tasks.x_query), tasks.y_query
    )["error"].mean()
    state = adapt(learner, tasks.x_train, tasks.y_train, batch_size=32, num_steps=16)
    error = learner.likelihood.metrics(learner.predict(state, tasks.x_query), tasks.y_query)["error"].mean()
    assert error < untrained - 0.2


def test_baseline_configuration_errors():
    with pytest.raises(ConfigError, match="lr"):
        SGD(Linear(2), lr=0)
    with pytest.raises(ConfigError, match="init"):
        SGD(Linear(2), lr=0.1, init="ones")
    with pytest.raises(ConfigError, match="noise"):
        BayesLinearRegression(2, noise=0)
    with pytest.raises(ConfigError, match="grid"):
        tune_learning_rate(lambda lr: SGD(Linear(2), lr), LinearRegression(2), [], num_steps=1, batch_size=1)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SGD(Linear(2), lr=float("inf")), "lr must be a finite number"),
        (lambda: SGD(Linear(2), lr=1e30), r"lr must be <= 1e\+06"),
        (lambda: Adam(Linear(2), lr=0.1, betas=(1, 1)), r"betas\[0\] must be < 1"),
        (lambda: Adam(Linear(2), lr=0.1, betas=(0.9, -0.1)), r"betas\[1\] must be >= 0"),
        (lambda: Adam(Linear(2), lr=0.1, betas=0.9), r"betas must be a pair"),
        (lambda: Adam(Linear(2), lr=0.1, eps=0), "eps must be > 0"),
        (lambda: BayesLinearRegression(2, noise=float("nan")), "noise must be a finite number"),
        (lambda: SGD(Linear(2), lr=0.1, seed=2**64), r"seed must be < 2\*\*63"),
    ],
)
def test_settings_that_can_only_give_non_finite_states_name_the_key(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_tuning_scores_a_diverging_rate_as_infinite_and_refuses_a_grid_that_only_diverges():
    family = LinearRegression(dim=2)
    tasks = {"num_steps": 8, "batch_size": 8, "num_tasks": 4, "num_query": 4}
    best, losses = tune_learning_rate(lambda lr: SGD(Linear(2), lr), family, [0.1, 1e6], **tasks)
    assert best == 0.1 and losses[1e6] == float("inf")
    with pytest.raises(NonFiniteError, match=r"every learning rate in \[1000000.0\] diverged in 8 steps"):
        tune_learning_rate(lambda lr: SGD(Linear(2), lr), family, [1e6], **tasks)
