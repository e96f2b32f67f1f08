"""Representations: what a composed learner adapts per task."""

import pytest
import torch

from amortized.errors import ConfigError
from amortized.learners import Latent, LatentDecoder, ModelParameters
from amortized.models import Linear


def test_model_parameters_start_from_a_learned_theta0_shared_by_all_tasks():
    representation = ModelParameters(Linear(3), seed=0)
    assert representation.size == 4
    initial = representation.initial(5)
    assert initial.shape == (5, 4) and torch.equal(initial[0], initial[4])
    assert representation(initial, torch.randn(5, 7, 3)).shape == (5, 7, 1)


def test_the_linear_skip_decoder_starts_as_an_exact_linear_model_of_x():
    torch.manual_seed(0)
    decoder = LatentDecoder(3, 6, 2, (16,), linear_skip=True)
    z = torch.randn(4, 6)
    a, b = torch.randn(4, 5, 3), torch.randn(4, 5, 3)
    offset = decoder(z, a) + decoder(z, b) - decoder(z, a + b)
    torch.testing.assert_close(offset, offset[:, :1].expand_as(offset))  # f(a) + f(b) - f(a + b) = f(0)
    plain = LatentDecoder(3, 6, 2, (16,))
    offset = plain(z, a) + plain(z, b) - plain(z, a + b)
    assert (offset - offset[:, :1]).abs().max() > 1e-3  # a FiLM MLP alone is not linear


def test_any_linear_model_is_one_latent_away():
    """With the skip, some z gives any weights: the explicit class contains the parametric one."""
    torch.manual_seed(0)
    decoder = LatentDecoder(3, 8, 1, (16,), linear_skip=True)
    weights = torch.randn(4, 1)  # [w; b] of one linear task
    target = weights.flatten() - decoder.skip.bias
    z = torch.linalg.lstsq(decoder.skip.weight, target[:, None]).solution.T
    x = torch.randn(1, 10, 3)
    expected = x @ weights[:3] + weights[3]
    torch.testing.assert_close(decoder(z, x), expected, atol=1e-4, rtol=1e-4)


def test_skip_features_make_the_skip_a_linear_model_on_learned_features():
    """With ``skip_features`` the untrained decoder is ``[x, 1, tanh(g(x))] · A z``: affine in z (so
    a Newton step on z is a least-squares fit on the features) and no longer linear in x."""
    torch.manual_seed(0)
    decoder = LatentDecoder(3, 6, 2, (16,), linear_skip=True, skip_features=5)
    x, z1, z2 = torch.randn(4, 7, 3), torch.randn(4, 6), torch.randn(4, 6)
    zero = decoder(torch.zeros(4, 6), x)
    torch.testing.assert_close(decoder(z1 + z2, x) - zero, decoder(z1, x) - zero + decoder(z2, x) - zero)
    a, b = torch.randn(4, 5, 3), torch.randn(4, 5, 3)
    offset = decoder(z1, a) + decoder(z1, b) - decoder(z1, a + b)
    assert (offset - offset[:, :1]).abs().max() > 1e-3
    features = torch.tanh(decoder.features(x))
    assert features.shape == (4, 7, 5)
    keys = torch.cat([x, torch.ones_like(x[..., :1]), features], -1)
    weights = decoder.skip(z1).view(4, 9, 2)
    torch.testing.assert_close(decoder(z1, x), keys @ weights)


def test_skip_features_need_the_linear_skip():
    with pytest.raises(ConfigError, match="skip_features widens the decoder's linear skip"):
        Latent(2, 1, 4, (8,), linear_skip=False, skip_features=4)
    with pytest.raises(ConfigError, match="skip_features"):
        Latent(2, 1, 4, (8,), linear_skip=True, skip_features=-1)


@pytest.mark.parametrize(
    ("hidden", "match"), [((), r"layer widths \(at least one\)"), ((0,), "decoder_hidden")]
)
def test_the_latent_decoder_needs_hidden_widths(hidden, match):
    with pytest.raises(ConfigError, match=match):
        Latent(2, 1, 4, hidden)
