import numpy as np
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


def _informative_columns(batch):
    dims = batch.params["dims"].long().tolist()
    return [(task, column) for task, dim in enumerate(dims) for column in range(dim)]


def test_irrelevant_features_are_ignored_by_the_target():
    def ignored(irrelevant):
        family = MixtureRegression(max_dim=6, linear_share=1.0, noise=(1e-3, 1e-3), irrelevant=irrelevant)
        batch = family.sample(64, 200, 10, torch.Generator().manual_seed(3))
        count = 0
        for task, dim in enumerate(batch.params["dims"].long().tolist()):
            # the informative columns alone: a full-rank fit (torch's batched least squares has been
            # seen to return zeros now and then for a rank-deficient task, such as one padded with zeros)
            x = torch.cat([batch.x_train[task, :, :dim], torch.ones(200, 1)], -1)
            weights = torch.linalg.lstsq(x, batch.y_train[task]).solution
            count += int((weights[:dim, 0].abs() < 1e-3).sum())
        return count

    assert ignored(0.0) == 0
    assert ignored(1.0) > 20  # of about 180 informative columns, a uniform [0, 1] share ignored


def test_transformed_features_are_skewed_heavy_tailed_or_discrete():
    def reshaped(transformed):
        family = MixtureClassification(max_dim=6, max_classes=3, transformed=transformed)
        batch = family.sample(64, 300, 10, torch.Generator().manual_seed(4))
        discrete = skewed = 0
        for task, column in _informative_columns(batch):
            values = batch.x_train[task, :, column]
            discrete += len(values.unique()) <= 5
            skewed += values.pow(3).mean().abs() > 1.5  # standardised: the third moment
        return discrete, skewed

    assert reshaped(0.0) == (0, 0)
    discrete, skewed = reshaped(1.0)
    assert discrete > 10 and skewed > 10


def test_missing_entries_read_as_the_mean_and_tasks_stay_learnable():
    from sklearn.linear_model import LogisticRegression

    def fitted(missing):
        """Per-task logistic regression on the observed training inputs: query accuracy, majority's."""
        family = MixtureClassification(max_dim=4, max_classes=3, missing=missing, linear_share=1.0)
        batch = family.sample(16, 400, 400, torch.Generator().manual_seed(5))
        accuracy, majority = [], []
        for task in range(16):
            y_train, y_query = batch.y_train[task].numpy(), batch.y_query[task].numpy()
            model = LogisticRegression(max_iter=500).fit(batch.x_train[task].numpy(), y_train)
            accuracy.append(model.score(batch.x_query[task].numpy(), y_query))
            majority.append((y_query == np.bincount(y_train).argmax()).mean())
        return batch, np.mean(accuracy), np.mean(majority)

    batch, accuracy, majority = fitted(0.6)
    zeros = [float((batch.x_train[t, :, c] == 0).float().mean()) for t, c in _informative_columns(batch)]
    assert 0.2 < sum(zeros) / len(zeros) < 0.4 and max(zeros) > 0.45  # shares uniform in [0, 0.6]
    assert (batch.x_query == 0).float().mean() > 0.1  # query rows miss entries too
    _, complete, _ = fitted(0.0)
    assert majority + 0.1 < accuracy < complete - 0.03  # measured: 0.51, 0.71, 0.79


@pytest.mark.parametrize("option", ["irrelevant", "transformed", "missing"])
def test_shares_of_real_table_features_must_be_between_0_and_1(option):
    with pytest.raises(ConfigError, match=f"{option} must be <= 1"):
        MixtureRegression(**{option: 1.5})
    with pytest.raises(ConfigError, match=option):
        MixtureClassification(**{option: "half"})
