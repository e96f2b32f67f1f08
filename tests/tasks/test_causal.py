import pytest
import torch

from amortized.errors import ConfigError, ShapeError
from amortized.tasks import OrderMetrics, RandomSCM
from amortized.tasks.causal import edge_violations, order_ranks, ranking_loss


def chain(size: int) -> torch.Tensor:
    """The adjacency of 0 → 1 → ... → size - 1, one task."""
    return torch.diag(torch.ones(size - 1), 1)[None]


def test_batches_hold_samples_masks_queries_and_the_graph():
    family = RandomSCM(variables=(3, 6))
    batch = family.sample(40, 50, 1, torch.Generator().manual_seed(0))
    assert family.input_dim == family.output_dim == 6 and family.likelihood == "order"
    assert batch.x_train.shape == batch.y_train.shape == (40, 50, 6)
    assert batch.x_query.shape == batch.y_query.shape == (40, 6, 6)
    count = batch.params["num_variables"]
    assert set(count.tolist()) == {3, 4, 5, 6}
    present = torch.arange(6) < count[:, None]
    assert torch.equal(batch.y_train, present[:, None].expand(-1, 50, -1).float())
    assert torch.equal(batch.x_query, torch.diag_embed(present.float()))
    assert (batch.x_train[~present[:, None].expand(-1, 50, -1)] == 0).all()
    again = family.sample(40, 50, 1, torch.Generator().manual_seed(0))
    assert torch.equal(batch.x_train, again.x_train) and torch.equal(batch.y_query, again.y_query)


def test_graphs_are_acyclic_in_their_order_and_the_columns_are_shuffled():
    batch = RandomSCM().sample(300, 2, 1, torch.Generator().manual_seed(1))
    adjacency, position = batch.y_query, batch.params["order"]
    assert ((adjacency > 0) <= (position[:, :, None] < position[:, None, :])).all()
    assert edge_violations(position[..., None].float(), adjacency).max() == 0
    present = torch.arange(10) < batch.params["num_variables"][:, None]
    assert (adjacency.sum(1)[~present] == 0).all() and (adjacency.sum(2)[~present] == 0).all()
    # The column order is a random order: it violates about half of the edges.
    column_order = edge_violations(torch.zeros(300, 10, 1), adjacency).mean()
    assert 0.45 < column_order < 0.55
    assert adjacency.sum((1, 2)).float().mean() > 2


def test_standardising_hides_the_marginal_variance_shortcut():
    linear = {"nonlinear_share": 0.0, "variables": (5, 5)}
    raw = RandomSCM(standardize=False, **linear).sample(200, 200, 1, torch.Generator().manual_seed(2))
    scaled = RandomSCM(**linear).sample(200, 200, 1, torch.Generator().manual_seed(2))
    assert edge_violations(raw.x_train.var(1)[..., None], raw.y_query).mean() < 0.2
    torch.testing.assert_close(scaled.x_train.std(1, correction=0), torch.ones(200, 5))
    torch.testing.assert_close(scaled.x_train.mean(1), torch.zeros(200, 5), atol=1e-5, rtol=0)


def test_linear_mechanisms_leave_gaussian_noise_of_the_drawn_scale():
    family = RandomSCM(variables=(4, 4), nonlinear_share=0.0, standardize=False, noise=(0.5, 0.5))
    batch = family.sample(20, 2000, 1, torch.Generator().manual_seed(3))
    x, adjacency = batch.x_train, batch.y_query
    for task in range(20):
        for child in range(4):
            parents = adjacency[task, :, child].bool()
            design = torch.cat([x[task][:, parents], torch.ones(2000, 1)], 1)
            solution = torch.linalg.lstsq(design, x[task, :, child : child + 1]).solution
            residual = x[task, :, child : child + 1] - design @ solution
            assert abs(float(residual.std()) - 0.5) < 0.05


def test_nonlinear_tasks_are_drawn_at_their_share():
    for share, expected in ((0.0, 0.0), (1.0, 1.0)):
        batch = RandomSCM(nonlinear_share=share).sample(20, 5, 1, torch.Generator().manual_seed(4))
        assert batch.params["nonlinear"].mean() == expected
    mixed = RandomSCM(nonlinear_share=0.5).sample(400, 5, 1, torch.Generator().manual_seed(4))
    assert 0.4 < mixed.params["nonlinear"].mean() < 0.6


def test_violations_count_edges_whose_parent_comes_after_the_child():
    adjacency = chain(4)
    assert edge_violations(torch.tensor([[[0.0], [1.0], [2.0], [3.0]]]), adjacency) == 0
    assert edge_violations(torch.tensor([[[3.0], [2.0], [1.0], [0.0]]]), adjacency) == 1
    swapped = torch.tensor([[[1.0], [0.0], [2.0], [3.0]]])
    torch.testing.assert_close(edge_violations(swapped, adjacency), torch.tensor([1 / 3]))
    assert torch.equal(order_ranks(swapped), torch.tensor([[1, 0, 2, 3]]))
    assert edge_violations(torch.zeros(1, 4, 1), torch.zeros(1, 4, 4)) == 0
    with pytest.raises(ShapeError, match="order scores"):
        edge_violations(torch.zeros(1, 4), adjacency)


def test_ranking_loss_is_smaller_for_better_orders_and_metrics_report_both():
    adjacency = chain(5)
    right = torch.arange(5.0).view(1, 5, 1)
    assert ranking_loss(right, adjacency) < ranking_loss(torch.zeros(1, 5, 1), adjacency)
    assert ranking_loss(torch.zeros(1, 5, 1), adjacency) < ranking_loss(-right, adjacency)
    metrics = OrderMetrics()
    assert metrics.main_metric == "violations"
    assert set(metrics.metrics(right, adjacency)) == {"violations", "ranking_loss"}


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"variables": (1, 5)}, "variables"),
        ({"variables": (3, 2.5)}, "variables"),
        ({"nonlinear_share": 1.5}, "nonlinear_share"),
        ({"weight": (2.0, 1.0)}, "weight"),
        ({"noise": (0.0, 1.0)}, "noise"),
        ({"hidden": 0}, "hidden"),
        ({"weight": (0.5, float("inf"))}, "weight must be a range"),
        ({"noise": (0.3, 1e300)}, "noise must lie within"),
        ({"nonlinear_share": float("nan")}, "nonlinear_share must be a finite number"),
    ],
)
def test_bad_options_name_the_argument(options, match):
    with pytest.raises(ConfigError, match=match):
        RandomSCM(**options)
