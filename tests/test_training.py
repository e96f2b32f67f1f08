import json
import os
import sys
import weakref

import numpy as np
import pytest
import torch

import amortized
from amortized.errors import ConfigError, FolderLockedError, NonFiniteError, ShapeError
from amortized.folders import lock_folder
from amortized.learners import SGD, InContext, LearnedInit, LearnedUpdate
from amortized.learners.base import minibatches
from amortized.models import Linear
from amortized.tasks import LinearClassification, LinearRegression
from amortized.training import (
    TrainConfig,
    draw_num_steps,
    evaluate_tasks,
    iteration_generator,
    loss_parts,
    meta_loss,
)

TINY = {"width": 16, "depth": 1, "heads": 2}
FAMILY = LinearRegression(dim=2, noise=0.1)


class _Box:
    def __init__(self, tensor):
        self.tensor = tensor


class SavedTensorMeter:
    """Peak bytes held by autograd for backward (saved tensors alive at once)."""

    def __init__(self):
        self.current = self.peak = 0

    def pack(self, tensor):
        size = tensor.numel() * tensor.element_size()
        self.current += size
        self.peak = max(self.peak, self.current)
        box = _Box(tensor)
        weakref.finalize(box, self._release, size)
        return box

    def _release(self, size):
        self.current -= size

    def __enter__(self):
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda box: box.tensor)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)


def peak_saved_bytes(objective, num_steps):
    learner = LearnedUpdate(Linear(2), rule={**TINY, "refinements": 1})  # one pass per step
    with SavedTensorMeter() as meter:
        amortized.train(
            learner,
            FAMILY,
            iterations=1,
            tasks_per_batch=4,
            batch_size=8,
            num_steps=num_steps,
            objective=objective,
            eval_every=0,
            chunk=4,
        )
    return meter.peak


def test_greedy_memory_does_not_grow_with_steps_but_full_does():
    greedy_short, greedy_long = peak_saved_bytes("greedy", 8), peak_saved_bytes("greedy", 32)
    full_short, full_long = peak_saved_bytes("full", 8), peak_saved_bytes("full", 32)
    assert greedy_long <= 1.05 * greedy_short
    assert full_long > 3 * full_short


def _meta_loss(learner, tasks, batches):
    learner.zero_grad()
    loss = meta_loss(learner, tasks, batches, objective="full")
    return loss, learner.representation.theta0.grad.clone(), learner.rule.log_lr.grad.clone()


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_full_meta_gradient_matches_finite_differences(first_order):
    learner = LearnedInit(
        Linear(2), rule={"inner_lr": 0.3, "learn_lr": True, "first_order": first_order}
    ).double()
    tasks = FAMILY.sample(3, 12, 5, torch.Generator().manual_seed(0)).to(torch.float64)
    batches = list(minibatches(tasks.x_train, tasks.y_train, 4, 3, torch.Generator().manual_seed(1)))
    _, grad_theta, _ = _meta_loss(learner, tasks, batches)
    numeric = torch.zeros_like(grad_theta)
    eps = 1e-6
    for i in range(grad_theta.numel()):
        with torch.no_grad():
            learner.representation.theta0[i] += eps
        plus = _meta_loss(learner, tasks, batches)[0]
        with torch.no_grad():
            learner.representation.theta0[i] -= 2 * eps
        minus = _meta_loss(learner, tasks, batches)[0]
        with torch.no_grad():
            learner.representation.theta0[i] += eps
        numeric[i] = (plus - minus) / (2 * eps)
    if first_order:
        assert not torch.allclose(grad_theta, numeric, rtol=1e-3)
    else:
        assert torch.allclose(grad_theta, numeric, rtol=1e-5, atol=1e-8)


def test_num_steps_range_is_drawn_log_uniformly_within_bounds():
    generator = torch.Generator().manual_seed(0)
    draws = [draw_num_steps((1, 64), generator) for _ in range(2000)]
    assert min(draws) == 1 and max(draws) == 64
    assert sum(d <= 8 for d in draws) / len(draws) == pytest.approx(0.5, abs=0.05)


def test_one_shot_training_draws_its_context_size_per_iteration(monkeypatch):
    """A one-shot learner trained on sizes 4 to 64 reads one batch of a drawn size per iteration."""
    sizes = []
    learner = InContext(2, rule=TINY)
    original = learner._step

    def recording(state, x, y):
        sizes.append(x.shape[1])
        return original(state, x, y)

    monkeypatch.setattr(learner, "_step", recording)
    amortized.train(learner, FAMILY, iterations=30, batch_size=(4, 64), num_steps=1, eval_every=0)
    assert min(sizes) >= 4 and max(sizes) <= 64 and len(set(sizes)) > 5


def test_training_is_deterministic_and_logs_evaluations():
    def run():
        learner = LearnedUpdate(Linear(2), rule=TINY)
        result = amortized.train(
            learner,
            FAMILY,
            iterations=6,
            tasks_per_batch=4,
            batch_size=4,
            num_steps=(1, 4),
            eval_every=3,
            eval_tasks=8,
            seed=5,
        )
        return learner, result

    (first, result), (second, _) = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True))
    assert [r["iteration"] for r in result.history] == list(range(1, 7))
    assert "eval_mse" in result.history[2] and "eval_excess_mse" in result.history[5]
    assert "eval_mse" not in result.history[0]


def test_resume_gives_the_same_weights_and_metrics(tmp_path):
    options = dict(tasks_per_batch=4, batch_size=4, num_steps=3, eval_every=2, eval_tasks=4, seed=2)
    straight = LearnedUpdate(Linear(2), rule=TINY)
    reference = amortized.train(straight, FAMILY, iterations=8, out_dir=tmp_path / "a", **options)

    interrupted = LearnedUpdate(Linear(2), rule=TINY)
    amortized.train(interrupted, FAMILY, iterations=8, out_dir=tmp_path / "b", checkpoint_every=4, **options)
    # Simulate a crash after iteration 4: keep only that checkpoint, then resume in a fresh learner.
    payload = torch.load(tmp_path / "b" / "checkpoint.pt.prev", weights_only=True)
    assert payload["iteration"] == 4
    (tmp_path / "b" / "checkpoint.pt.prev").replace(tmp_path / "b" / "checkpoint.pt")
    resumed = LearnedUpdate(Linear(2), rule=TINY)
    result = amortized.train(resumed, FAMILY, iterations=8, out_dir=tmp_path / "b", resume=True, **options)
    assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), resumed.parameters(), strict=True))
    strip = lambda history: [{k: v for k, v in r.items() if k != "seconds"} for r in history]  # noqa: E731
    assert strip(result.history) == strip(reference.history)
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 8


def test_a_second_training_into_the_same_out_dir_is_refused_and_the_lock_is_released(tmp_path):
    options = dict(iterations=2, tasks_per_batch=4, batch_size=4, num_steps=2, eval_every=0)
    with lock_folder(tmp_path):
        with pytest.raises(FolderLockedError, match=f"is locked by process {os.getpid()}"):
            amortized.train(LearnedUpdate(Linear(2), rule=TINY), FAMILY, out_dir=tmp_path, **options)
        assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "metrics.jsonl").exists()
    amortized.train(LearnedUpdate(Linear(2), rule=TINY), FAMILY, out_dir=tmp_path, **options)
    with lock_folder(tmp_path):  # training let go of the lock when it ended
        assert (tmp_path / "checkpoint.pt").is_file()


def test_ctrl_c_keeps_every_finished_iteration_and_resume_continues_from_it(tmp_path):
    options = dict(tasks_per_batch=4, batch_size=4, num_steps=3, eval_every=2, eval_tasks=4, seed=2)
    straight = LearnedUpdate(Linear(2), rule=TINY)
    reference = amortized.train(straight, FAMILY, iterations=8, out_dir=tmp_path / "a", **options)

    class Interrupting(type(FAMILY)):
        """The family, with Ctrl-C pressed while the sixth training batch is drawn."""

        draws = 0

        def sample(self, *args, **kwargs):
            type(self).draws += 1
            if type(self).draws == 7:  # the held-out evaluation tasks, then iterations 1-5 finish
                raise KeyboardInterrupt
            return super().sample(*args, **kwargs)

    interrupting = Interrupting(FAMILY.input_dim, noise=FAMILY.noise)
    with pytest.raises(KeyboardInterrupt):
        amortized.train(
            LearnedUpdate(Linear(2), rule=TINY),
            interrupting,
            iterations=8,
            out_dir=tmp_path / "b",
            checkpoint_every=100,
            **options,
        )
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["iteration"] == 5
    resumed = LearnedUpdate(Linear(2), rule=TINY)
    result = amortized.train(resumed, FAMILY, iterations=8, out_dir=tmp_path / "b", resume=True, **options)
    assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), resumed.parameters(), strict=True))
    strip = lambda history: [{k: v for k, v in r.items() if k != "seconds"} for r in history]  # noqa: E731
    assert strip(result.history) == strip(reference.history)


def test_non_finite_loss_stops_with_a_clear_error_or_is_skipped(tmp_path):
    def exploding():
        learner = LearnedUpdate(Linear(2), rule=TINY)
        torch.nn.init.constant_(learner.rule.chunks.direction.bias, float("inf"))
        return learner

    with pytest.raises(NonFiniteError, match="iteration 0"):
        amortized.train(exploding(), FAMILY, iterations=2, tasks_per_batch=2, batch_size=4, num_steps=2)
    result = amortized.train(
        exploding(),
        FAMILY,
        iterations=2,
        tasks_per_batch=2,
        batch_size=4,
        num_steps=2,
        on_nonfinite="skip",
        eval_every=0,
    )
    assert result.history == []


def test_a_skipped_last_iteration_still_finishes_the_run(tmp_path, monkeypatch):
    """The checkpoint of a run whose last iteration was skipped says the run is done (not resumable)."""
    calls, original = [], amortized.training.loss_parts

    def failing_last(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            return iter([(torch.tensor(float("nan")), True)])
        return original(*args, **kwargs)

    monkeypatch.setattr(amortized.training, "loss_parts", failing_last)
    options = dict(QUICK, iterations=3, on_nonfinite="skip", checkpoint_every=0)
    result = amortized.train(LearnedInit(Linear(2)), FAMILY, out_dir=tmp_path, **options)
    assert len(result.history) == 2 and result.iterations == 3
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["iteration"] == 3


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"iterations": 0}, "iterations"),
        ({"objective": "lazy"}, "objective"),
        ({"num_steps": (4, 2)}, "num_steps"),
        ({"batch_size": (0, 8)}, "batch_size must be > 0"),
        ({"batch_size": [8, 16, 32]}, r"batch_size range must be \(low, high\)"),
        ({"learning_rate": 0.1}, r"unknown key\(s\) train.learning_rate; valid:"),
        ({"seed": 2**63}, r"seed must be < 2\*\*63"),
        ({"seed": np.int64(-1)}, "seed must be >= 0"),
        ({"lr": float("inf")}, "lr must be a finite number"),
        ({"lr": 1e30}, r"lr must be <= 1e\+06"),
        ({"grad_clip": float("nan")}, "grad_clip must be a finite number"),
    ],
)
def test_bad_training_options_are_named(options, match):
    with pytest.raises(ConfigError, match=match):
        amortized.train(LearnedUpdate(Linear(2), rule=TINY), FAMILY, **options)


def test_learner_and_family_must_fit():
    with pytest.raises(ConfigError, match="input width 3 does not match the family's 2"):
        amortized.train(LearnedUpdate(Linear(3), rule=TINY), FAMILY, iterations=1)
    with pytest.raises(ConfigError, match="does not fit the family"):
        amortized.train(LearnedUpdate(Linear(2), rule=TINY), LinearClassification(2, 2), iterations=1)
    with pytest.raises(ConfigError, match="nothing to meta-train"):
        amortized.train(SGD(Linear(2), lr=0.1), FAMILY, iterations=1)


def test_config_round_trips_through_plain_data():
    config = TrainConfig(num_steps=[2, 8], objective="truncated")
    assert TrainConfig.from_dict(vars(config)).num_steps == (2, 8)


def test_first_order_maml_trains_with_truncated_windows():
    """Windows after the first reach no parameter (fixed step size, first-order): they are skipped."""
    family = LinearRegression(dim=2, noise=0.1)
    learner = LearnedInit(Linear(2), rule={"inner_lr": 0.1, "first_order": True})
    tasks = family.sample(64, 16, 16, torch.Generator().manual_seed(3))
    before = evaluate_tasks(learner, tasks, batch_size=4, num_steps=4, seed=1)["mse"]
    amortized.train(
        learner,
        family,
        iterations=60,
        objective="truncated",
        truncation=2,
        num_steps=4,
        batch_size=4,
        lr=3e-2,
        warmup=0,
        eval_every=0,
    )
    after = evaluate_tasks(learner, tasks, batch_size=4, num_steps=4, seed=1)["mse"]
    assert after < 0.9 * before, (before, after)


def test_the_largest_seed_still_draws_every_iteration():
    seed = TrainConfig(seed=2**63 - 1).seed
    draws = [torch.rand(1, generator=iteration_generator(seed, i)) for i in (0, 1)]
    assert not torch.equal(*draws)
    assert iteration_generator(3, 7).initial_seed() == 3 * 1_000_003 + 7  # as before: resume unchanged


QUICK = dict(iterations=2, tasks_per_batch=4, batch_size=4, num_steps=2, eval_every=0)
"""Two tiny iterations: enough to see what training prints, on what threads and where it writes."""


def test_progress_is_shown_by_default_and_can_be_turned_off(capsys):
    amortized.train(LearnedInit(Linear(2)), FAMILY, **QUICK)
    assert "LearnedInit: meta-training 2/2 iterations (100%)" in capsys.readouterr().err
    amortized.train(LearnedInit(Linear(2)), FAMILY, progress=False, **QUICK)
    assert capsys.readouterr().err == ""


def test_training_runs_on_one_thread_unless_told_and_restores_torchs_setting(monkeypatch):
    seen = []
    original = LearnedInit._step
    monkeypatch.setattr(
        LearnedInit,
        "_step",
        lambda *args, **kwargs: seen.append(torch.get_num_threads()) or original(*args, **kwargs),
    )
    torch.set_num_threads(2)  # the autouse fixture restores the suite's setting
    amortized.train(LearnedInit(Linear(2)), FAMILY, progress=False, **QUICK)
    assert set(seen) == {1} and torch.get_num_threads() == 2
    seen.clear()
    amortized.train(LearnedInit(Linear(2)), FAMILY, progress=False, threads=None, **QUICK)
    assert set(seen) == {2}
    with pytest.raises(ConfigError, match="threads must be > 0, got 0"):
        amortized.train(LearnedInit(Linear(2)), FAMILY, threads=0, **QUICK)


def test_tensorboard_events_hold_the_metrics_once_each_after_a_resume(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    options = dict(QUICK, iterations=4, eval_every=2, eval_tasks=4, checkpoint_every=2, progress=False)
    amortized.train(LearnedInit(Linear(2)), FAMILY, out_dir=tmp_path, tensorboard=True, **options)
    # Resume from iteration 2, as after a crash: iterations 3-4 are trained (and logged) again.
    (tmp_path / "checkpoint.pt.prev").replace(tmp_path / "checkpoint.pt")
    learner = LearnedInit(Linear(2))
    amortized.train(learner, FAMILY, out_dir=tmp_path, resume=True, tensorboard=True, **options)
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 1
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for name in ("loss", "eval_mse"):
        logged = [(event.step, event.value) for event in events.Scalars(name)]
        expected = [(r["iteration"], pytest.approx(r[name], rel=1e-6)) for r in records if name in r]
        assert logged == expected and len(logged) == (4 if name == "loss" else 2)


def test_tensorboard_needs_an_out_dir_and_names_the_package_it_needs(tmp_path, monkeypatch):
    learner = LearnedInit(Linear(2))
    with pytest.raises(ConfigError, match="tensorboard=True needs out_dir"):
        amortized.train(learner, FAMILY, tensorboard=True, **QUICK)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were missing
    with pytest.raises(
        ImportError, match=r"^tensorboard=True needs the tensorboard package: pip install tensorboard$"
    ):
        amortized.train(learner, FAMILY, out_dir=tmp_path, tensorboard=True, **QUICK)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_device_moves_the_learner_and_keeps_the_numbers_and_an_unusable_one_is_refused(tmp_path):
    default, placed = LearnedInit(Linear(2)), LearnedInit(Linear(2))
    amortized.train(default, FAMILY, progress=False, **QUICK)
    amortized.train(placed, FAMILY, progress=False, device="cpu", **QUICK)
    assert all(torch.equal(a, b) for a, b in zip(default.parameters(), placed.parameters(), strict=True))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"device 'cuda': torch .* sees no CUDA GPU"):
            amortized.train(LearnedInit(Linear(2)), FAMILY, device="cuda", out_dir=tmp_path / "run", **QUICK)
        assert not (tmp_path / "run").exists()


def test_meta_loss_checks_its_mini_batches_once_at_the_boundary():
    learner = LearnedUpdate(Linear(2), rule=TINY)
    tasks = FAMILY.sample(4, 8, 4, torch.Generator().manual_seed(0))
    batches = list(minibatches(tasks.x_train, tasks.y_train, 4, 2, torch.Generator().manual_seed(1)))
    as_float64 = [(x.double(), y.double()) for x, y in batches]
    assert meta_loss(learner, tasks, as_float64) == pytest.approx(
        meta_loss(learner, tasks, batches), rel=1e-6
    )
    spoiled = [(batches[0][0].clone().fill_(float("nan")), batches[0][1]), batches[1]]
    with pytest.raises(NonFiniteError, match="batch_x contains NaN or infinity"):
        meta_loss(learner, tasks, spoiled)
    with pytest.raises(ShapeError, match="a mini-batch holds 3 tasks but tasks 4; they must match"):
        meta_loss(learner, tasks, [(x[:3], y[:3]) for x, y in batches])
    checks = []
    original = type(learner).check_data
    learner.check_data = lambda *args: checks.append(args[0]) or original(learner, *args)
    learner.step = None  # the steps run unchecked: Learner.step is not called
    meta_loss(learner, tasks, batches)
    assert checks == ["batch", "batch", "query"]  # once per mini-batch, once for the queries


@pytest.mark.parametrize(
    ("objective", "expected_parts"), [("greedy", 2), ("truncated", 3), ("full", 1), ("final", 1)]
)
def test_an_objective_yields_parts_that_sum_to_it_and_marks_only_the_last(objective, expected_parts):
    """Greedy with chunk 3 over 6 steps: 2 parts; truncated windows of 2: 3 parts; full, final: 1."""
    learner = LearnedUpdate(Linear(2), rule=TINY)
    tasks = FAMILY.sample(4, 24, 4, torch.Generator().manual_seed(0))
    batches = list(minibatches(tasks.x_train, tasks.y_train, 4, 6, torch.Generator().manual_seed(1)))
    options = {"objective": objective, "chunk": 3, "truncation": 2}
    parts = list(loss_parts(learner, tasks, batches, **options))
    assert len(parts) == expected_parts
    assert [last for _, last in parts] == [False] * (expected_parts - 1) + [True]
    total = sum(loss.item() for loss, _ in parts)
    learner.zero_grad()
    assert meta_loss(learner, tasks, batches, **options) == pytest.approx(total, rel=1e-6)


def test_the_final_objective_is_the_last_steps_query_loss_with_gradients_through_every_step():
    learner = LearnedUpdate(Linear(2), rule=TINY)
    tasks = FAMILY.sample(4, 24, 4, torch.Generator().manual_seed(0))
    batches = list(minibatches(tasks.x_train, tasks.y_train, 4, 6, torch.Generator().manual_seed(1)))
    state = learner.init_state(tasks.num_tasks, tasks.x_query)
    for batch_x, batch_y in batches:
        state = learner.step(state, batch_x, batch_y)
    last = learner.query_loss(state, tasks.x_query, tasks.y_query).mean()
    first_only = meta_loss(learner, tasks, batches[:1], objective="final")
    learner.zero_grad()
    assert meta_loss(learner, tasks, batches, objective="final") == pytest.approx(last.item(), rel=1e-5)
    assert last.item() != pytest.approx(first_only, rel=1e-3)
    assert learner.representation.theta0.grad.abs().sum() > 0  # reached through all six steps
