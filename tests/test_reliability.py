"""Bad input, interruption and corrupt files: nothing but documented errors, nothing lost."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import amortized
from amortized.errors import AmortizedError
from amortized.learners import (
    SGD,
    BayesLinearRegression,
    FlowMatching,
    InContext,
    LearnedUpdate,
    OrderScores,
)
from amortized.models import Linear
from amortized.tasks import Alphabet, GaussianMixture, LinearClassification, LinearRegression, RandomSCM

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TINY = {"width": 16, "depth": 1, "heads": 2}


@FAST
@given(
    num_tasks=st.integers(-2, 4),
    num_train=st.integers(-2, 6),
    num_query=st.integers(-2, 3),
    dim=st.integers(-1, 4),
)
def test_sampling_returns_the_documented_shapes_or_a_documented_error(num_tasks, num_train, num_query, dim):
    try:
        batch = LinearRegression(dim=dim).sample(num_tasks, num_train, num_query)
    except AmortizedError:
        return
    assert batch.x_train.shape == (num_tasks, num_train, dim)
    assert batch.y_query.shape == (num_tasks, num_query, 1)


tensors = st.builds(
    lambda shape, fill, dtype: (
        torch.full(shape, fill).to(dtype) if fill == fill and abs(fill) < 1e9 else torch.full(shape, fill)
    ),
    shape=st.lists(st.integers(0, 3), min_size=1, max_size=4).map(tuple),
    fill=st.sampled_from([0.0, 1.5, -2.0, float("nan"), float("inf")]),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.int64]),
)


@FAST
@given(
    x=tensors, y=tensors, batch_size=st.integers(-1, 4), num_steps=st.one_of(st.none(), st.integers(-1, 3))
)
def test_adapt_raises_only_documented_errors(x, y, batch_size, num_steps):
    for learner in (SGD(Linear(2), lr=0.1), BayesLinearRegression(2, noise=0.5)):
        try:
            state = amortized.adapt(learner, x, y, batch_size=batch_size, num_steps=num_steps)
        except AmortizedError:
            continue
        assert torch.isfinite(learner.predict(state, x.float())).all()


@FAST
@given(
    labels=st.lists(st.integers(-2, 4), min_size=1, max_size=6),
    dtype=st.sampled_from([torch.int64, torch.int32]),
)
def test_classification_labels_are_checked(labels, dtype):
    learner = InContext(2, 3, task="classification", rule=TINY)
    x = torch.randn(1, len(labels), 2)
    y = torch.tensor([labels], dtype=dtype)
    try:
        state = amortized.adapt(learner, x, y, batch_size=2, query_x=x)
    except AmortizedError:
        assert min(labels) < 0 or max(labels) > 2
        return
    assert learner.predict(state).shape == (1, len(labels), 3)


@FAST
@given(
    options=st.dictionaries(
        st.sampled_from(["iterations", "batch_size", "num_steps", "objective", "lr", "chunk", "colour"]),
        st.one_of(st.integers(-2, 3), st.sampled_from(["greedy", "fast", 0.5, (3, 1)])),
        max_size=3,
    )
)
def test_training_options_raise_only_documented_errors(options):
    options = {"eval_every": 0, "tasks_per_batch": 2, "iterations": 1, **options}
    with contextlib.suppress(AmortizedError):
        amortized.train(LearnedUpdate(Linear(2), rule=TINY), LinearRegression(2), **options)


@FAST
@given(x=tensors, y=tensors)
def test_step_raises_only_documented_errors(x, y):
    learners = (
        SGD(Linear(2), lr=0.1),
        FlowMatching(2, width=16, depth=1, heads=2, memory_tokens=2),
        OrderScores(2, width=16, depth=1, heads=2, pair_width=4),
    )
    for learner in learners:
        state = learner.init_state(max(1, x.shape[0]) if x.dim() else 1)
        try:
            learner.step(state, x, y)
        except AmortizedError:
            continue


ranges = st.one_of(
    st.tuples(st.integers(-1, 12), st.integers(-1, 12)),
    st.tuples(st.floats(-1, 3), st.floats(-1, 3)),
    st.sampled_from([None, "wide", (1,), (1, 2, 3)]),
)


@FAST
@given(
    family=st.sampled_from(["gmm", "alphabet", "scm"]),
    first=ranges,
    second=ranges,
    number=st.one_of(st.floats(-2, 5), st.sampled_from([True, "x", None, float("nan")])),
    num_tasks=st.integers(-1, 3),
    num_train=st.integers(-1, 5),
)
def test_generative_and_causal_families_raise_only_documented_errors(
    family, first, second, number, num_tasks, num_train
):
    makers = {
        "gmm": lambda: GaussianMixture(components=first, scale=second, mean_bound=number),
        "alphabet": lambda: Alphabet(size=first, width=second, rotation=number),
        "scm": lambda: RandomSCM(variables=first, noise=second, nonlinear_share=number),
    }
    try:
        batch = makers[family]().sample(num_tasks, num_train, 2)
    except AmortizedError:
        return
    assert batch.x_train.shape[:2] == (num_tasks, num_train)
    assert torch.isfinite(batch.x_train).all() and torch.isfinite(batch.y_train).all()


SCRIPT = """
import sys, amortized
from amortized.learners import LearnedUpdate
from amortized.models import Linear
from amortized.tasks import LinearRegression
learner = LearnedUpdate(Linear(2), rule={"width": 16, "depth": 1, "heads": 2})
amortized.train(learner, LinearRegression(2), iterations=int(sys.argv[2]), tasks_per_batch=4, batch_size=4,
                num_steps=(1, 4), eval_every=5, eval_tasks=4, checkpoint_every=1, out_dir=sys.argv[1],
                resume=True, seed=3)
"""


def _train(out_dir: Path, iterations: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(out_dir), str(iterations)])


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    assert _train(tmp_path / "straight", 40).wait(timeout=300) == 0
    victim = _train(tmp_path / "killed", 40)
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=60)
    interrupted_at = torch.load(checkpoint, weights_only=True)["iteration"]
    assert 0 < interrupted_at < 40
    assert _train(tmp_path / "killed", 40).wait(timeout=300) == 0
    straight = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    resumed = torch.load(checkpoint, weights_only=True)
    for name, value in straight["weights"].items():
        assert torch.equal(value, resumed["weights"][name]), name
    strip = lambda history: [{k: v for k, v in r.items() if k != "seconds"} for r in history]  # noqa: E731
    assert strip(resumed["history"]) == strip(straight["history"])
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 40


def test_classification_family_data_is_valid_for_learners():
    batch = LinearClassification(2, 3).sample(2, 5, 2)
    learner = InContext(2, 3, task="classification", rule=TINY)
    state = amortized.adapt(learner, batch.x_train, batch.y_train, batch_size=2, query_x=batch.x_query)
    assert torch.isfinite(learner.predict(state)).all()
