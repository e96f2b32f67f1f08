import pytest
import torch

from amortized.errors import ConfigError, ShapeError
from amortized.models import MLP, Linear, predictor_from_config


def test_linear_matches_explicit_formula():
    model = Linear(3, 2)
    theta = torch.randn(4, model.num_params)
    x = torch.randn(4, 5, 3)
    weight, bias = theta[:, :6].view(4, 3, 2), theta[:, 6:].view(4, 1, 2)
    assert model.num_params == 8
    assert torch.allclose(model(theta, x), x @ weight + bias, atol=1e-6)


def test_mlp_matches_torch_modules_per_task():
    model = MLP(3, 2, hidden=(5,), activation="tanh")
    theta = torch.randn(2, model.num_params)
    x = torch.randn(2, 4, 3)
    out = model(theta, x)
    for task in range(2):
        (w1, b1), (w2, b2) = [(w[task], b[task, 0]) for w, b in model.layers(theta)]
        expected = torch.tanh(x[task] @ w1 + b1) @ w2 + b2
        assert torch.allclose(out[task], expected, atol=1e-6)


def test_shared_theta_broadcasts_over_tasks_and_gradients_are_per_task():
    model = MLP(2, 1, hidden=(8,))
    theta = model.init(torch.Generator().manual_seed(0))
    x = torch.randn(3, 6, 2)
    assert model(theta, x).shape == (3, 6, 1)
    batched = theta.expand(3, -1).clone().requires_grad_()
    model(batched, x).sum().backward()
    single = theta.clone().requires_grad_()
    model(single, x[1:2]).sum().backward()
    assert torch.allclose(batched.grad[1], single.grad, atol=1e-5)


def test_config_round_trip_and_errors():
    model = MLP(4, 3, hidden=(7, 6), activation="gelu", bias=False)
    rebuilt = predictor_from_config(model.config)
    assert rebuilt.num_params == model.num_params == 4 * 7 + 7 * 6 + 6 * 3
    with pytest.raises(ConfigError):
        predictor_from_config({"kind": "cnn"})
    with pytest.raises(ShapeError, match="theta"):
        model(torch.zeros(2, 5), torch.zeros(2, 3, 4))
    with pytest.raises(ShapeError, match="features"):
        Linear(2)(torch.zeros(1, 3), torch.zeros(1, 3, 5))
