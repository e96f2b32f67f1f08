"""Generative learners: briefly meta-trained, they beat their trivial references."""

import dataclasses

import pytest
import torch

import amortized
from amortized import adapt
from amortized.errors import ConfigError, ShapeError
from amortized.learners import (
    EmpiricalSamples,
    FlowMatching,
    GaussianMixtureFit,
)
from amortized.tasks import GaussianMixture
from amortized.tasks.generative import energy_distance

TINY_FLOW = {"width": 16, "depth": 1, "heads": 2, "memory_tokens": 4, "integration_steps": 4}


@pytest.fixture(scope="module")
def two_blobs():
    """Mixtures of two well-separated blobs: a single Gaussian fitted to them is a poor generator."""
    return GaussianMixture(components=(2, 2), scale=(0.1, 0.3), mean_bound=3.0)


@pytest.fixture(scope="module")
def blob_tasks(two_blobs):
    return two_blobs.sample(32, 64, 64, torch.Generator().manual_seed(7))


def energy(learner, tasks, *, batch_size, num_steps=None, context=None):
    context = tasks if context is None else context
    state = adapt(learner, context.x_train, context.y_train, batch_size=batch_size, num_steps=num_steps)
    with torch.no_grad():
        return float(energy_distance(learner.predict(state, tasks.x_query), tasks.y_query).mean())


def test_untrained_flow_returns_its_noise_at_the_samples_mean_and_scale(blob_tasks):
    learner = FlowMatching(2, **TINY_FLOW)
    state = adapt(learner, blob_tasks.x_train, blob_tasks.y_train, batch_size=16)
    generated = learner.predict(state, blob_tasks.x_query)
    mean, std = (
        blob_tasks.y_train.mean(1, keepdim=True),
        blob_tasks.y_train.std(1, keepdim=True, correction=0),
    )
    torch.testing.assert_close(generated, mean + std * blob_tasks.x_query, atol=1e-4, rtol=1e-4)
    # Mini-batches of 16 give the same running moments as one step on all 64 points.
    one_shot = adapt(learner, blob_tasks.x_train, blob_tasks.y_train, batch_size=64)
    torch.testing.assert_close(state.carry.moments.mean, one_shot.carry.moments.mean)
    torch.testing.assert_close(state.carry.moments.square, one_shot.carry.moments.square)
    assert learner.sample(state, 5, torch.Generator().manual_seed(0)).shape == (32, 5, 2)
    with pytest.raises(ConfigError, match="noise"):
        learner.predict(state)
    with pytest.raises(ShapeError, match="x has 3 features but the learner was built for input width 2"):
        learner.predict(state, torch.zeros(32, 5, 3))


def test_a_flow_step_reads_the_current_memory_and_the_batch(blob_tasks):
    """The new memory depends on the memory it replaces and on the mini-batch's samples, and the memory
    chooses what its own pool attends to."""
    learner = FlowMatching(2, **TINY_FLOW)
    x, y = blob_tasks.x_train[:4, :16], blob_tasks.y_train[:4, :16]
    with torch.no_grad():
        read = learner.step(learner.init_state(4), x, y)
        moved = read.value + torch.randn(read.value.shape, generator=torch.Generator().manual_seed(0))
        shifted = dataclasses.replace(read, value=moved)
        after = learner.step(read, x, y)
        from_shifted = learner.step(shifted, x, y)
        assert (from_shifted.value - after.value).abs().max() > 1e-3
        assert (learner.step(read, x, y + 1.0).value - after.value).abs().max() > 1e-3
        asked = from_shifted.carry.memory_pool.read() - after.carry.memory_pool.read()
        assert asked.abs().max() > 1e-3
        torch.testing.assert_close(from_shifted.carry.pool.read(), after.carry.pool.read())


def test_the_flow_pool_keeps_every_sample_read(blob_tasks):
    """Mini-batches of 16 pool like one step on all 64 samples once the running moments settle."""
    learner = FlowMatching(2, **TINY_FLOW)
    x, y = blob_tasks.x_train, blob_tasks.y_train
    with torch.no_grad():
        # Four different batches with the same per-coordinate mean and scale (each coordinate's values
        # shuffled apart, each point with its reflection), so the standardisation never moves.
        offsets = y[:, :8] - y[:, :8].mean(1, keepdim=True)
        generator = torch.Generator().manual_seed(0)
        batches = []
        for _ in range(4):
            orders = [torch.randperm(8, generator=generator) for _ in range(2)]
            shuffled = torch.stack([offsets[:, order, c] for c, order in enumerate(orders)], -1)
            batches.append(torch.cat([shuffled, -shuffled], 1))
        y = y[:, :1] + torch.cat(batches, 1)
        batched = learner.init_state(len(y))
        for start in range(0, 64, 16):
            batched = learner.step(batched, x[:, start : start + 16], y[:, start : start + 16])
        whole = learner.step(learner.init_state(len(y)), x, y)
    torch.testing.assert_close(batched.carry.pool.read(), whole.carry.pool.read(), atol=1e-5, rtol=1e-5)


def test_flow_matching_beats_a_fitted_gaussian_and_reads_its_context(two_blobs, blob_tasks):
    learner = FlowMatching(2, **TINY_FLOW)
    untrained = energy(learner, blob_tasks, batch_size=16, num_steps=4)
    result = amortized.train(
        learner,
        two_blobs,
        iterations=200,
        tasks_per_batch=8,
        batch_size=16,
        num_steps=(1, 4),
        num_query=64,
        objective="final",  # the presets' objective
        lr=1e-2,
        warmup=5,
        eval_every=0,
    )
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    trained = energy(learner, blob_tasks, batch_size=16, num_steps=4)
    state = adapt(learner, blob_tasks.x_train, blob_tasks.y_train, batch_size=16, num_steps=4)
    # The same samples' mean and scale, but the memory tokens of another task.
    swapped = dataclasses.replace(state, value=state.value.roll(1, 0))
    with torch.no_grad():
        other_memory = float(
            energy_distance(learner.predict(swapped, blob_tasks.x_query), blob_tasks.y_query).mean()
        )
    standard_normal = float(energy_distance(blob_tasks.x_query, blob_tasks.y_query).mean())
    true_samples = energy(EmpiricalSamples(2), blob_tasks, batch_size=64)
    # Untrained, the flow is a Gaussian with the samples' mean and scale: far better than N(0, I).
    assert untrained < 0.5 * standard_normal, (untrained, standard_normal)
    assert trained < 0.7 * untrained, (trained, untrained)  # measured 0.12-0.15 vs 0.31 over 3 seeds
    assert trained < 0.7 * other_memory, (trained, other_memory)  # measured 0.12-0.15 vs 0.31-0.32
    assert true_samples < 0.2 * trained, (true_samples, trained)


def test_references_of_generative_tasks(blob_tasks):
    subset = blob_tasks[:6]
    empirical = EmpiricalSamples(2, capacity=32)
    state = adapt(empirical, subset.x_train, subset.y_train, batch_size=16)
    assert state.value.shape == (6, 32, 2)
    assert torch.equal(empirical.predict(state, subset.x_query), state.value.repeat(1, 2, 1))
    kept = (state.value[:, :, None] == subset.y_train[:, None]).all(-1).any(-1)
    assert kept.all()  # the first 32 samples read, each one of the task's own
    with pytest.raises(ConfigError, match="no samples"):
        empirical.predict(empirical.init_state(6), subset.x_query)
    fitted = energy(GaussianMixtureFit(2, max_components=3), subset, batch_size=64)
    gaussian = energy(FlowMatching(2, **TINY_FLOW), subset, batch_size=64)
    assert fitted < 0.5 * gaussian, (fitted, gaussian)


@pytest.mark.parametrize("make", [lambda: FlowMatching(2, **TINY_FLOW, seed=3)])
def test_flow_saves_and_loads(tmp_path, make):
    learner = make()
    with torch.no_grad():
        learner.head.bias.fill_(0.5)
    amortized.save(learner, tmp_path / "learner.pt")
    loaded = amortized.load(tmp_path / "learner.pt")
    assert type(loaded) is type(learner) and loaded.config == learner.config
    for name, value in learner.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
