import pytest
import torch

from amortized.errors import ConfigError
from amortized.tasks import MixtureClassification, MixtureRegression


@pytest.mark.parametrize(
    "family", [MixtureRegression(max_dim=6), MixtureClassification(max_dim=6, max_classes=4)], ids=repr
)
def test_tasks_have_random_width_padded_with_zeros_and_standardised_inputs(family):
    batch = family.sample(64, 200, 50, torch.Generator().manual_seed(0))
    again = family.sample(64, 200, 50, torch.Generator().manual_seed(0))
    assert torch.equal(batch.x_train, again.x_train) and torch.equal(batch.y_train, again.y_train)
    assert batch.x_train.shape == (64, 200, 6) and batch.x_query.shape == (64, 50, 6)
    dims = batch.params["dims"].long()
    assert dims.min() >= 1 and dims.max() <= 6 and len(set(dims.tolist())) > 2
    for task, dim in enumerate(dims.tolist()):
        assert torch.equal(batch.x_train[task, :, dim:], torch.zeros(200, 6 - dim))
        assert torch.equal(batch.x_query[task, :, dim:], torch.zeros(50, 6 - dim))
        std, mean = torch.std_mean(batch.x_train[task, :, :dim], 0, correction=0)
        assert torch.allclose(mean, torch.zeros(dim), atol=1e-5) and torch.allclose(std, torch.ones(dim))


def test_regression_targets_are_standardised_and_noise_is_varied():
    batch = MixtureRegression(max_dim=4, noise=(0.05, 1.0)).sample(
        128, 300, 100, torch.Generator().manual_seed(1)
    )
    std, mean = torch.std_mean(batch.y_train, 1, correction=0)
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-5) and torch.allclose(
        std, torch.ones_like(std)
    )
    residual = (batch.y_query - batch.f_query).square().mean((1, 2))
    assert residual.min() < 0.01 and residual.max() > 0.3  # nearly noiseless and very noisy tasks


def test_classification_uses_only_the_first_c_labels():
    family = MixtureClassification(max_dim=3, max_classes=5)
    batch = family.sample(200, 100, 50, torch.Generator().manual_seed(2))
    classes = batch.params["num_classes"]
    assert set(classes.tolist()) == {2, 3, 4, 5}
    assert (batch.y_train.amax(1) < classes).all() and (batch.y_query.amax(1) < classes).all()
    absent = torch.arange(5) >= classes[:, None]
    assert torch.isneginf(batch.f_query[absent[:, None, :].expand_as(batch.f_query)]).all()
    accuracy = (batch.f_query.argmax(-1) == batch.y_query).float().mean()
    assert accuracy > 0.6  # the true logits predict the labels: tasks are learnable


def test_bad_options_raise():
    with pytest.raises(ConfigError, match="min_dim must be <= max_dim"):
        MixtureRegression(max_dim=2, min_dim=3)
    with pytest.raises(ConfigError, match="max_classes must be >= 2"):
        MixtureClassification(max_classes=1)
    with pytest.raises(ConfigError, match="linear_share"):
        MixtureRegression(linear_share=1.5)
    with pytest.raises(ConfigError, match="noise must be a range"):
        MixtureRegression(noise=(0.1, float("inf")))
    with pytest.raises(ConfigError, match="correlation must be a finite number"):
        MixtureRegression(correlation=float("nan"))
    with pytest.raises(ConfigError, match="imbalance must be <= 1e"):
        MixtureClassification(imbalance=1e300)
