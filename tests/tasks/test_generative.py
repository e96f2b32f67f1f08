import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from amortized.errors import ConfigError, ShapeError
from amortized.tasks import Alphabet, GaussianMixture, SampleMetrics
from amortized.tasks.generative import (
    GLYPHS,
    energy_distance,
    glyph_points,
    mixture_log_prob,
    pack_mixture,
    unpack_mixture,
)

FAMILIES = {"gmm": GaussianMixture, "alphabet": Alphabet}


@pytest.mark.parametrize("name", FAMILIES)
def test_batches_hold_noise_samples_and_the_true_mixture(name):
    family = FAMILIES[name]()
    batch = family.sample(3, 20, 7, torch.Generator().manual_seed(0))
    assert batch.x_train.shape == batch.y_train.shape == (3, 20, 2)
    assert batch.x_query.shape == batch.y_query.shape == (3, 7, 2)
    assert family.input_dim == family.output_dim == 2 and family.likelihood == "samples"
    log_weights, means, scales = unpack_mixture(batch.f_query)
    torch.testing.assert_close(log_weights, batch.params["log_weights"])
    torch.testing.assert_close(means, batch.params["means"])
    torch.testing.assert_close(scales, batch.params["scales"])
    torch.testing.assert_close(log_weights.exp().sum(-1), torch.ones(3))
    again = family.sample(3, 20, 7, torch.Generator().manual_seed(0))
    assert torch.equal(batch.y_train, again.y_train) and torch.equal(batch.x_query, again.x_query)


def test_samples_follow_their_mixture():
    family = GaussianMixture(components=(3, 3))
    batch = family.sample(4, 4000, 10, torch.Generator().manual_seed(1))
    weights, means, _ = batch.params["log_weights"].exp(), batch.params["means"], batch.params["scales"]
    expected_mean = (weights[..., None] * means).sum(1)
    torch.testing.assert_close(batch.y_train.mean(1), expected_mean, atol=0.1, rtol=0)
    # The noise paired with each sample is standard normal and independent of it.
    assert abs(float(batch.x_train.std()) - 1) < 0.03
    own = mixture_log_prob(batch.y_train, batch.f_query).mean()
    other = mixture_log_prob(batch.y_train.roll(1, 0), batch.f_query).mean()
    assert own > other + 1


def test_mixture_log_prob_matches_torch_distributions():
    generator = torch.Generator().manual_seed(2)
    batch = GaussianMixture(components=(2, 4)).sample(5, 3, 9, generator)
    log_weights, means, scales = unpack_mixture(batch.f_query)
    for task in range(5):
        present = log_weights[task].isfinite()
        reference = MixtureSameFamily(
            Categorical(logits=log_weights[task, present]),
            Independent(Normal(means[task, present], scales[task, present]), 1),
        )
        torch.testing.assert_close(
            mixture_log_prob(batch.y_query[task : task + 1], batch.f_query[task : task + 1])[0],
            reference.log_prob(batch.y_query[task]),
        )
    with pytest.raises(ShapeError, match="do not match"):
        mixture_log_prob(torch.zeros(5, 3, 3), batch.f_query)


def test_pack_and_unpack_are_inverse():
    log_weights = torch.tensor([[math.log(0.25), math.log(0.75)]])
    means, scales = torch.randn(1, 2, 2), torch.rand(1, 2, 2) + 0.1
    unpacked = unpack_mixture(pack_mixture(log_weights, means, scales))
    for got, want in zip(unpacked, (log_weights, means, scales), strict=True):
        torch.testing.assert_close(got, want)


def test_energy_distance_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    generator = torch.Generator().manual_seed(3)
    a, b = torch.randn(8, 300, 2, generator=generator), torch.randn(8, 300, 2, generator=generator)
    same = energy_distance(a, b)
    assert same.abs().max() < 0.05
    shifted = energy_distance(a + torch.tensor([1.0, 0.0]), b)
    assert (shifted > 0.2).all() and shifted.mean() > 10 * same.abs().mean()
    torch.testing.assert_close(energy_distance(a, b + 1), energy_distance(b + 1, a))
    with pytest.raises(ShapeError):
        energy_distance(a, torch.randn(7, 300, 2))
    with pytest.raises(ShapeError, match="at least 2"):
        energy_distance(a[:, :1], b)


def test_sample_metrics_score_true_samples_better_than_a_standard_normal():
    batch = GaussianMixture().sample(16, 200, 200, torch.Generator().manual_seed(4))
    metrics = SampleMetrics()
    true = metrics.metrics(batch.y_train, batch.y_query, batch.f_query)
    normal = metrics.metrics(batch.x_train, batch.y_query, batch.f_query)
    assert set(true) == {"energy", "nll"} and metrics.main_metric == "energy"
    assert true["energy"].mean() < 0.02 < 0.3 < normal["energy"].mean()
    assert true["nll"].mean() < normal["nll"].mean() - 2
    torch.testing.assert_close(metrics.loss(batch.y_train, batch.y_query), true["energy"])


def test_gaussian_mixture_draws_a_random_number_of_components():
    batch = GaussianMixture(components=(2, 4)).sample(200, 2, 1, torch.Generator().manual_seed(5))
    present = batch.params["log_weights"].isfinite().sum(-1)
    assert torch.equal(present, batch.params["components"])
    assert set(present.tolist()) == {2, 3, 4}
    assert batch.params["scales"].min() >= 0.1 and batch.params["scales"].max() <= 0.6


def test_glyph_points_are_equally_spaced_along_the_strokes():
    points = glyph_points("L", 100)
    steps = (points[1:] - points[:-1]).norm(dim=-1)
    torch.testing.assert_close(steps, torch.full_like(steps, 3.2 / 100))  # L's strokes are 2 + 1.2 long
    for letter in GLYPHS:
        assert glyph_points(letter, 64).abs().max() <= 1.2


def test_alphabet_samples_lie_on_their_letter_strokes():
    family = Alphabet(letters="OX", width=(0.05, 0.05), rotation=0.0, shear=0.0, shift=0.0, size=(1, 1))
    batch = family.sample(6, 500, 1, torch.Generator().manual_seed(6))
    letters = batch.params["letter"]
    assert set(letters.tolist()) <= {0, 1}
    strokes = torch.stack([glyph_points(letter, 128) for letter in "OX"])[letters]
    nearest = torch.cdist(batch.y_train, strokes).amin(-1)
    assert nearest.mean() < 0.06 and nearest.max() < 0.3
    ring = batch.y_train[letters == 0].norm(dim=-1)
    assert ring.mean() > 0.6  # an O has no points near its centre, an X does


def test_alphabet_letters_can_be_held_out():
    assert Alphabet(letters="ABC").sample(20, 5, 1).params["letter"].max() <= 2
    with pytest.raises(ConfigError, match="no glyph"):
        Alphabet(letters="Aa")
    with pytest.raises(ConfigError, match="unknown letter"):
        glyph_points("?", 8)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: GaussianMixture(components=(0, 3)), "components"),
        (lambda: GaussianMixture(components=(1.5, 3)), "integers"),
        (lambda: GaussianMixture(scale=(0.5, 0.1)), "scale"),
        (lambda: GaussianMixture(weight_ratio=0.5), "weight_ratio"),
        (lambda: Alphabet(width=(0, 1)), "width"),
        (lambda: Alphabet(rotation=-1), "rotation"),
        (lambda: Alphabet(resolution=0), "resolution"),
        (lambda: GaussianMixture(mean_bound=float("inf")), "mean_bound must be a finite number"),
        (lambda: GaussianMixture(scale=(0.1, 1e300)), "scale must lie within"),
        (lambda: Alphabet(shift=float("nan")), "shift must be a finite number"),
    ],
)
def test_bad_options_name_the_argument(make, match):
    with pytest.raises(ConfigError, match=match):
        make()
