import pytest
import torch

from amortized.errors import ConfigError
from amortized.tasks import LinearClassification, NonlinearClassification


@pytest.mark.parametrize(
    "family",
    [
        LinearClassification(dim=3, num_classes=4, temperature=0.3),
        NonlinearClassification(dim=2, num_classes=3),
    ],
    ids=repr,
)
def test_shapes_labels_and_reproducibility(family):
    batch = family.sample(5, 8, 4, torch.Generator().manual_seed(0))
    assert batch.x_train.shape == (5, 8, family.input_dim)
    assert batch.y_train.shape == (5, 8) and batch.y_train.dtype == torch.int64
    assert batch.y_train.min() >= 0 and batch.y_train.max() < family.num_classes
    assert batch.f_query.shape == (5, 4, family.num_classes)
    again = family.sample(5, 8, 4, torch.Generator().manual_seed(0))
    assert torch.equal(batch.y_train, again.y_train)


def test_linear_labels_follow_softmax_of_true_logits():
    family = LinearClassification(dim=2, num_classes=3, temperature=1.0)
    batch = family.sample(400, 2, 50, torch.Generator().manual_seed(0))
    expected = torch.softmax(batch.x_query @ batch.params["weights"], -1)
    observed = torch.nn.functional.one_hot(batch.y_query, 3).float()
    assert torch.allclose(batch.f_query, batch.x_query @ batch.params["weights"])
    assert (observed.mean((0, 1)) - expected.mean((0, 1))).abs().max() < 0.01


def test_low_temperature_makes_labels_nearly_deterministic():
    batch = LinearClassification(dim=4, num_classes=4, temperature=0.01).sample(50, 2, 100)
    assert (batch.f_query.argmax(-1) == batch.y_query).float().mean() > 0.97


@pytest.mark.parametrize(
    "make",
    [
        lambda: LinearClassification(dim=2, num_classes=1),
        lambda: LinearClassification(dim=2, temperature=0.0),
        lambda: NonlinearClassification(dim=2, hidden=(0,)),
        lambda: LinearClassification(dim=2, temperature=float("inf")),
        lambda: NonlinearClassification(dim=2, temperature=1e-300),  # logits would overflow
    ],
)
def test_impossible_configuration_is_a_clear_error(make):
    with pytest.raises(ConfigError):
        make()
