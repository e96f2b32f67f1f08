import math

import pytest
import torch

from amortized.errors import ConfigError
from amortized.models import Categorical, Gaussian, cross_entropy, error_rate, gaussian_nll, likelihood, mse


def test_regression_metrics_per_task():
    pred = torch.zeros(2, 4, 1)
    y = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(1, 4, 1).repeat(2, 1, 1) * torch.tensor([1.0, 2.0]).view(
        2, 1, 1
    )
    assert torch.allclose(mse(pred, y), torch.tensor([1.0, 4.0]))
    expected = 0.5 / 0.25 + math.log(0.5) + 0.5 * math.log(2 * math.pi)
    assert gaussian_nll(pred[:1], y[:1], 0.5).item() == pytest.approx(expected, rel=1e-6)
    metrics = Gaussian(0.5).metrics(pred, y, f_true=torch.zeros_like(y))
    assert set(metrics) == {"mse", "nll", "excess_mse"} and torch.all(metrics["excess_mse"] == 0)


def test_classification_metrics_per_task():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0]], [[2.0, 0.0], [2.0, 0.0]]])
    y = torch.tensor([[0, 1], [0, 1]])
    assert torch.equal(error_rate(logits, y), torch.tensor([0.0, 0.5]))
    assert cross_entropy(logits, y)[0] == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-5)
    metrics = Categorical().metrics(logits, y, f_true=logits)
    assert torch.allclose(metrics["excess_error"], torch.zeros(2), atol=1e-6)
    wrong = Categorical().metrics(-logits, y, f_true=logits)
    assert torch.all(wrong["excess_error"] > 0.5)


def test_unknown_likelihood():
    assert likelihood("gaussian").name == "gaussian"
    with pytest.raises(ConfigError, match="poisson"):
        likelihood("poisson")
