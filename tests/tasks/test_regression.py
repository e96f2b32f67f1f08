import math

import pytest
import torch

from amortized.errors import ConfigError
from amortized.tasks import GaussianProcess, LinearRegression, NonlinearRegression, Sinusoid

FAMILIES = [
    LinearRegression(dim=3, noise=0.5),
    LinearRegression(dim=2, noise=0.1, bias=False, inputs="uniform"),
    NonlinearRegression(dim=2, noise=0.1, hidden=(16, 16), activation="relu"),
    Sinusoid(),
    GaussianProcess(dim=2),
]


@pytest.mark.parametrize("family", FAMILIES, ids=repr)
def test_shapes_and_dtypes(family):
    batch = family.sample(5, 7, 3, torch.Generator().manual_seed(0))
    dim = family.input_dim
    assert batch.x_train.shape == (5, 7, dim) and batch.x_query.shape == (5, 3, dim)
    assert batch.y_train.shape == (5, 7, 1) and batch.y_query.shape == (5, 3, 1)
    assert batch.f_query.shape == (5, 3, 1)
    assert batch.x_train.dtype == batch.y_train.dtype == torch.float32
    assert torch.isfinite(batch.y_train).all()


@pytest.mark.parametrize("family", FAMILIES, ids=repr)
def test_same_seed_same_tasks_other_seed_other_tasks(family):
    first = family.sample(4, 6, 2, torch.Generator().manual_seed(3))
    again = family.sample(4, 6, 2, torch.Generator().manual_seed(3))
    other = family.sample(4, 6, 2, torch.Generator().manual_seed(4))
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.y_query, again.y_query)
    assert not torch.equal(first.y_train, other.y_train)


def test_linear_noise_variance_and_weight_prior_match_configuration():
    family = LinearRegression(dim=4, noise=0.5, weight_std=2.0)
    batch = family.sample(2000, 40, 10, torch.Generator().manual_seed(0))
    f_train = batch.x_train @ batch.params["weights"] + batch.params["bias"][:, None, :]
    noise_var = (batch.y_train - f_train).var().item()
    assert abs(noise_var - 0.25) / 0.25 < 0.05
    assert abs(batch.params["weights"].std().item() - 2.0) / 2.0 < 0.05
    assert torch.allclose(
        batch.f_query, batch.x_query @ batch.params["weights"] + batch.params["bias"][:, None]
    )


def test_linear_without_bias_and_uniform_inputs():
    batch = LinearRegression(dim=3, bias=False, inputs="uniform").sample(50, 20, 5)
    assert torch.all(batch.params["bias"] == 0)
    assert batch.x_train.abs().max() <= 1.0
    assert abs(batch.x_train.var().item() - 1 / 3) < 0.05


def test_sinusoid_matches_maml_ranges():
    batch = Sinusoid().sample(1000, 10, 10, torch.Generator().manual_seed(0))
    amplitude, phase = batch.params["amplitude"], batch.params["phase"]
    assert amplitude.min() >= 0.1 and amplitude.max() <= 5.0
    assert phase.min() >= 0 and phase.max() <= math.pi
    assert batch.x_train.min() >= -5 and batch.x_train.max() <= 5
    expected = amplitude[:, None, None] * torch.sin(batch.x_query - phase[:, None, None])
    assert torch.allclose(batch.y_query, expected)


def test_gaussian_process_function_scale_follows_kernel_scale():
    family = GaussianProcess(dim=1, scale=(2.0, 2.0), lengthscale=(0.5, 0.5), noise=0.0)
    batch = family.sample(500, 20, 5, torch.Generator().manual_seed(0))
    assert abs(batch.y_train.var().item() - 4.0) / 4.0 < 0.1


def test_nonlinear_regression_is_not_linear():
    family = NonlinearRegression(dim=1, noise=0.0, hidden=(32,), activation="tanh")
    batch = family.sample(200, 64, 8, torch.Generator().manual_seed(0))
    x = torch.cat([batch.x_train, torch.ones_like(batch.x_train)], -1)
    fit = torch.linalg.lstsq(x, batch.y_train).solution
    residual = (x @ fit - batch.y_train).square().mean()
    assert residual > 1e-3 * batch.y_train.var()


@pytest.mark.parametrize(
    "make",
    [
        lambda: LinearRegression(dim=0),
        lambda: LinearRegression(dim=2, noise=-1),
        lambda: LinearRegression(dim=2, inputs="cauchy"),
        lambda: NonlinearRegression(dim=2, activation="swish"),
        lambda: GaussianProcess(lengthscale=(0.0, 1.0)),
        lambda: Sinusoid(x_range=(1.0, -1.0)),
    ],
)
def test_impossible_configuration_is_a_clear_error(make):
    with pytest.raises(ConfigError):
        make()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Sinusoid(amplitude=(1, float("inf"))), r"amplitude must be a range .* finite numbers"),
        (lambda: Sinusoid(phase=(float("nan"), 1.0)), "phase must be a range"),
        (lambda: Sinusoid(x_range=(1.0, 1.0)), "x_range must be .* low < high"),
        (lambda: LinearRegression(dim=2, noise=1e300), r"noise must be <= 1e\+06"),
        (lambda: LinearRegression(dim=2, weight_std=float("nan")), "weight_std must be a finite number"),
        (lambda: GaussianProcess(x_bound=float("inf")), "x_bound must be a finite number"),
        (lambda: NonlinearRegression(dim=2, noise=float("-inf")), "noise must be a finite number"),
    ],
)
def test_settings_that_can_only_give_non_finite_data_name_the_key(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


@pytest.mark.parametrize("sizes", [(0, 5, 5), (2, 0, 5), (2, 5, -1), (2.5, 5, 5)])
def test_non_positive_sizes_are_rejected(sizes):
    with pytest.raises(ConfigError, match="num_"):
        LinearRegression(dim=2).sample(*sizes)


def test_task_batch_selection_and_cast():
    batch = LinearRegression(dim=2).sample(6, 4, 3)
    part = batch[1:3]
    assert part.num_tasks == 2 and torch.equal(part.params["weights"], batch.params["weights"][1:3])
    assert batch.to(torch.float64).x_train.dtype == torch.float64
    assert batch.to("cpu").x_train is batch.x_train  # already there: nothing copied
    moved = batch.to("meta")  # a device without a GPU: shapes, no data
    tensors = [moved.x_train, moved.y_train, moved.x_query, moved.y_query, moved.f_query]
    assert all(t.device.type == "meta" for t in [*tensors, *moved.params.values()])
