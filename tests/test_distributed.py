"""Distributed meta-training: gloo ranks on CPU equal one process with the same global task batch.

Starting processes (mostly importing torch) dominates the time, so the two tests of the ranks share
one start of two ranks that run every scenario; the CLI test starts ``torchrun`` once.
"""

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch

import amortized
from amortized import distributed
from amortized.checkpoints import load_checkpoint
from amortized.cli import main
from amortized.errors import ConfigError, DistributedError
from amortized.learners import LearnedInit, LearnedUpdate
from amortized.learners.base import minibatches
from amortized.models import Linear
from amortized.tasks import LinearRegression
from amortized.training import iteration_generator
from tests.test_lifeline import kill_all, wait_until_ended

FAMILY = LinearRegression(dim=2, noise=0.1)
COMMON = {
    "iterations": 3,
    "tasks_per_batch": 8,
    "batch_size": 4,
    "num_query": 8,
    "warmup": 1,
    "lr": 1e-2,
    "eval_every": 0,
    "checkpoint_every": 0,
}
RESUMED = {**COMMON, "iterations": 4, "checkpoint_every": 2, "num_steps": (1, 5), "chunk": 2}
WORLD = 2
START_TIMEOUT = 120


def _update():
    return LearnedUpdate(Linear(2), rule={"width": 16, "depth": 1, "heads": 2})


def _scenarios():
    """Learners and objectives whose gradients reach DDP in different ways."""
    return {
        # several greedy chunks per iteration, k drawn per iteration
        "update-greedy": (_update, {"num_steps": (1, 5), "chunk": 2}),
        # θ0 only enters the first chunk, which backpropagates under no_sync
        "init-greedy": (
            lambda: LearnedInit(Linear(2), rule={"learn_lr": True}),
            {"num_steps": 4, "chunk": 3},
        ),
        # second-order MAML, two windows of steps per iteration
        "maml-truncated": (
            lambda: LearnedInit(Linear(2), rule={"inner_lr": 0.1}),
            {"objective": "truncated", "num_steps": 4, "truncation": 3},
        ),
    }


def _join_rank(rank, world, store):
    torch.set_num_threads(1)
    distributed.init(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world, timeout=timedelta(seconds=30)
    )


class _DyingFamily(LinearRegression):
    """Linear-regression tasks; rank 1 notes the time and dies (``os._exit``) at its third task batch."""

    def __init__(self, folder):
        super().__init__(dim=2, noise=0.1)
        self._folder, self._calls = folder, 0

    def _sample(self, *args):
        self._calls += 1
        if distributed.rank() == 1 and self._calls == 3:
            (self._folder / "died").write_text(repr(time.time()))
            os._exit(17)
        return super()._sample(*args)


def _ranks_main(rank, world, store, folder):
    """Every scenario, a resumable run, a run resumed from a one-process checkpoint; then rank 1 dies."""
    folder = Path(folder)
    _join_rank(rank, world, store)
    for name, (make, options) in _scenarios().items():
        learner = make()
        amortized.train(learner, FAMILY, **COMMON, **options)
        torch.save(learner.state_dict(), folder / f"{name}-{rank}.pt")
    amortized.train(_update(), FAMILY, out_dir=folder / "on-2", **RESUMED)
    learner = _update()
    amortized.train(learner, FAMILY, out_dir=folder / "1-then-2", resume=True, **RESUMED)
    torch.save(learner.state_dict(), folder / f"1-then-2-{rank}.pt")
    try:
        amortized.train(_update(), _DyingFamily(folder), **{**COMMON, "iterations": 1000})
    except Exception as error:
        (folder / f"error-{rank}.txt").write_text(f"{time.time()!r}\n{type(error).__name__}: {error}")
        raise


def _start_ranks(target, folder):
    context = multiprocessing.get_context("spawn")
    store = folder / "store"
    ranks = [
        context.Process(target=target, args=(rank, WORLD, str(store), str(folder))) for rank in range(WORLD)
    ]
    for process in ranks:
        process.start()
    return ranks


def _join(ranks, seconds):
    deadline = time.monotonic() + seconds
    for process in ranks:
        process.join(max(0.0, deadline - time.monotonic()))
    alive = [process for process in ranks if process.is_alive()]
    for process in alive:
        process.kill()
    return alive


def _assert_same_weights(expected, actual):
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-4, msg=name)


def _stopped_copy(run, target):
    """A copy of a finished run as it was when it stopped at its previous checkpoint."""
    target.mkdir()
    shutil.copy(run / "checkpoint.pt.prev", target / "checkpoint.pt")
    return target


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Two gloo ranks run :func:`_ranks_main` once; both tests read what they left."""
    folder = tmp_path_factory.mktemp("ranks")
    uninterrupted = _update()
    amortized.train(uninterrupted, FAMILY, out_dir=folder / "on-1", **RESUMED)
    _stopped_copy(folder / "on-1", folder / "1-then-2")
    ranks = _start_ranks(_ranks_main, folder)
    alive = _join(ranks, START_TIMEOUT)
    ended = time.time()
    return {
        "folder": folder,
        "ranks": ranks,
        "alive": alive,
        "ended": ended,
        "uninterrupted": uninterrupted.state_dict(),
    }


def test_two_gloo_ranks_equal_one_process_with_the_same_global_batch_and_resume_across_sizes(two_ranks):
    folder = two_ranks["folder"]
    assert not two_ranks["alive"], "the ranks did not finish"
    for name, (make, options) in _scenarios().items():
        learner = make()
        amortized.train(learner, FAMILY, **COMMON, **options)
        for rank in range(WORLD):
            _assert_same_weights(learner.state_dict(), torch.load(folder / f"{name}-{rank}.pt"))

    # rank 0 alone wrote: one line per iteration, and the same losses as one process
    on_two = folder / "on-2"
    lines = (on_two / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == RESUMED["iterations"]
    two, one = load_checkpoint(on_two / "checkpoint.pt"), load_checkpoint(folder / "on-1" / "checkpoint.pt")
    _assert_same_weights(one["weights"], two["weights"])
    for mine, theirs in zip(two["history"], one["history"], strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-5)

    # stopped on 2 ranks, finished alone; stopped alone, finished on 2 ranks
    finished_alone = _update()
    resumed = _stopped_copy(on_two, folder / "2-then-1")
    amortized.train(finished_alone, FAMILY, out_dir=resumed, resume=True, **RESUMED)
    _assert_same_weights(two_ranks["uninterrupted"], finished_alone.state_dict())
    for rank in range(WORLD):
        _assert_same_weights(two_ranks["uninterrupted"], torch.load(folder / f"1-then-2-{rank}.pt"))


def test_a_rank_that_dies_ends_the_others_with_a_clear_error_not_a_hang(two_ranks):
    folder, ranks = two_ranks["folder"], two_ranks["ranks"]
    assert not two_ranks["alive"], f"ranks still running {START_TIMEOUT} s after the start"
    assert ranks[1].exitcode == 17
    assert ranks[0].exitcode != 0
    died = float((folder / "died").read_text())
    raised, message = (folder / "error-0.txt").read_text().split("\n", 1)
    assert float(raised) - died < 30
    assert two_ranks["ended"] - died < 60
    assert message.startswith("DistributedError: rank 0 of 2 lost contact with the other ranks")
    assert "meta-training iteration 3" in message


def test_ranks_take_equal_slices_of_the_global_batch_in_order():
    generator = iteration_generator(0, 0)
    tasks = FAMILY.sample(8, 12, 4, generator)
    batches = list(minibatches(tasks.x_train, tasks.y_train, 4, 3, generator))
    for rank in range(4):
        mine, my_batches = distributed.rank_slice(tasks, batches, rank, 4)
        part = slice(2 * rank, 2 * rank + 2)
        assert torch.equal(mine.x_train, tasks.x_train[part])
        assert torch.equal(mine.y_query, tasks.y_query[part])
        assert all(torch.equal(x, whole[0][part]) for (x, _), whole in zip(my_batches, batches, strict=True))


def test_a_global_batch_that_does_not_split_evenly_is_refused():
    with pytest.raises(ConfigError, match=r"tasks_per_batch \(6\).*world size \(4\)"):
        distributed.check_split(6, 4)


def test_alone_replicas_change_nothing():
    replicas = distributed.Replicas(_update())
    assert not replicas.distributed and replicas.is_main and replicas.world_size == 1
    assert replicas.forward(lambda a, b: a + b, 2, 3, last=False) == 5
    assert replicas.mean(1.5) == 1.5
    assert replicas.from_main(lambda: "once") == "once"


def test_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "12.5")
    assert distributed.default_timeout() == timedelta(seconds=12.5)
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(ConfigError, match=distributed.TIMEOUT_ENV):
        distributed.default_timeout()


def test_init_outside_torchrun_says_how_to_launch(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(
        DistributedError, match="RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT are not set"
    ) as error:
        distributed.init("gloo")
    assert "torchrun --nproc-per-node N script.py" in str(error.value) and "--nproc N" in str(error.value)
    assert not torch.distributed.is_initialized()


def test_amortized_train_nproc_2_runs_torchrun_and_matches_one_process(tmp_path, capsys):
    threads = torch.get_num_threads()
    options = ["--quiet", "--set", "train.iterations=4", "--set", "train.checkpoint_every=2"]
    try:
        assert main(["train", "tiny", "--out", str(tmp_path / "two"), "--nproc", "2", *options]) == 0
        two = capsys.readouterr().out
        assert main(["train", "tiny", "--out", str(tmp_path / "one"), *options]) == 0
    finally:
        torch.set_num_threads(threads)
    learners = sorted(path.name for path in (tmp_path / "one" / "learners").iterdir())
    assert learners == sorted(path.name for path in (tmp_path / "two" / "learners").iterdir())
    for name in learners:
        expected = load_checkpoint(tmp_path / "one" / "learners" / name / "checkpoint.pt")
        actual = load_checkpoint(tmp_path / "two" / "learners" / name / "checkpoint.pt")
        _assert_same_weights(expected["weights"], actual["weights"])
        lines = (tmp_path / "two" / "learners" / name / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == 4, "metrics written by more than one rank"
    assert two.count("4 iterations") == len(learners), "the worker processes printed too"


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (children, their children, ...), from ``/proc``."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return sorted(found)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
def test_killing_the_parent_of_nproc_2_ends_torchrun_and_both_ranks(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "amortized", "train", "tiny", "--out", str(run), "--nproc", "2"]
    options = ["--quiet", "--set", "train.iterations=100000", "--set", "train.checkpoint_every=0"]
    stderr = tmp_path / "stderr"
    with stderr.open("w") as log:
        parent = subprocess.Popen([*command, *options], stdout=subprocess.DEVNULL, stderr=log)
    children: list[int] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT
        # Rank 0 writes a line per iteration once both ranks train.
        while not any(path.stat().st_size for path in run.glob("learners/*/metrics.jsonl")):
            assert parent.poll() is None, f"the run ended before training: {stderr.read_text()}"
            assert time.monotonic() < deadline, f"no training after {START_TIMEOUT} s"
            time.sleep(0.2)
        children = _descendants(parent.pid)
        assert len(children) >= 3, f"expected torchrun and two ranks under the parent, found {children}"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        survivors = wait_until_ended(children, 20)
        assert not survivors, f"{len(survivors)} of torchrun and its ranks outlived their parent by 20 s"
    finally:
        if parent.poll() is None:
            parent.kill()
        kill_all([*children, *(pid for child in children for pid in _descendants(child))])
