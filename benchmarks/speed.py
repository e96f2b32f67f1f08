"""Speed: meta-training throughput of every learner, and a MAML meta-step against ``higher``.

Throughput uses the quickstart settings (linear regression in 8 dimensions, 16 tasks per batch,
mini-batches of 32, ``k = 8`` steps, transformers of width 64 and depth 2) and times iterations of
``amortized.train`` after warm-up iterations. Learners built on gradient steps (``LearnedInit``,
``LatentSGD``) train with the ``full`` objective (second order through their steps), the others with
``greedy``, as in the test suite.

The MAML comparison runs a second-order meta-step on sinusoid regression (1-40-40-1 ReLU MLP, 5 inner
SGD steps of learning rate 0.01, 10 support and 10 query points, 25 tasks per meta-batch) through the
library's own path (``LearnedInit`` and the ``full`` training objective, whose loss is the mean of the
query losses after each inner step) and through ``higher`` with the same objective, in the same
process. Both start from the same weights and must give the same meta-gradient before they are timed.
"""

from __future__ import annotations

import statistics
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

import amortized
from amortized.learners import InContext, LatentSGD, LatentUpdate, LearnedInit, LearnedUpdate, Learner
from amortized.learners.base import minibatches
from amortized.models import MLP, Linear
from amortized.tasks import LinearRegression, Sinusoid
from amortized.tasks.base import TaskBatch
from amortized.training import meta_loss

DIM = 8
QUICKSTART = {"tasks_per_batch": 16, "batch_size": 32, "num_steps": 8}
TRANSFORMER = {"width": 64, "depth": 2, "heads": 4}
MAML = {"hidden": (40, 40), "inner_lr": 0.01, "inner_steps": 5, "support": 10, "query": 10, "tasks": 25}
TOY = {
    "throughput": {"tasks_per_batch": 4, "batch_size": 8, "num_steps": 2},
    "transformer": {"width": 16, "depth": 1, "heads": 2},
    "maml": {**MAML, "hidden": (8,), "inner_steps": 2, "tasks": 2},
}
GRADIENT_TOLERANCE = 1e-5


def _learners(transformer: dict[str, int]) -> dict[str, tuple[Learner, str]]:
    """Each learner class, with the objective it meta-trains with."""
    return {
        "LearnedInit (MAML)": (LearnedInit(Linear(DIM), rule={"inner_lr": 0.03}), "full"),
        "LearnedUpdate (observations + gradients)": (LearnedUpdate(Linear(DIM), rule=transformer), "greedy"),
        "LearnedUpdate (gradients)": (
            LearnedUpdate(Linear(DIM), rule={"inputs": ["gradients"], **transformer}),
            "greedy",
        ),
        "LearnedUpdate (observations)": (
            LearnedUpdate(Linear(DIM), rule={"inputs": ["observations"], **transformer}),
            "greedy",
        ),
        "LatentUpdate": (LatentUpdate(DIM, rule=transformer), "greedy"),
        "LatentSGD (CAVIA)": (LatentSGD(DIM), "full"),
        "InContext": (InContext(DIM, rule=transformer), "greedy"),
    }


def throughput(
    learner: Learner, objective: str, sizes: dict[str, int], *, warmup: int, seconds: float
) -> dict[str, float]:
    """Meta-training tasks per second: ``warmup`` iterations, then about ``seconds`` of timed ones."""
    family = LinearRegression(dim=DIM, noise=0.5)
    options = {**sizes, "objective": objective, "eval_every": 0, "checkpoint_every": 0, "seed": 0}
    options.update(progress=False, threads=None)  # timed as the runner's --threads sets torch
    warm = amortized.train(learner, family, iterations=warmup, **options)
    iterations = max(3, round(seconds * warmup / max(warm.train_seconds, 1e-9)))
    timed = amortized.train(learner, family, iterations=iterations, **options)
    return {
        "iterations": iterations,
        "ms_per_iteration": 1e3 * timed.train_seconds / iterations,
        "tasks_per_second": sizes["tasks_per_batch"] * iterations / timed.train_seconds,
    }


def _maml_tasks(setup: dict[str, Any], seed: int) -> tuple[TaskBatch, list]:
    """One meta-batch of sinusoid tasks and the support mini-batches of its inner steps."""
    generator = torch.Generator().manual_seed(seed)
    tasks = Sinusoid().sample(setup["tasks"], setup["support"], setup["query"], generator)
    batches = minibatches(tasks.x_train, tasks.y_train, setup["support"], setup["inner_steps"], generator)
    return tasks, list(batches)


def _torch_network(learner: LearnedInit) -> nn.Sequential:
    """An ``nn.Sequential`` MLP holding the same weights as ``learner.representation.theta0``."""
    layers: list[nn.Module] = []
    parts = learner.representation.model.layers(learner.representation.theta0.detach()[None])
    for i, (weight, bias) in enumerate(parts):
        linear = nn.Linear(weight.shape[1], weight.shape[2])
        with torch.no_grad():
            linear.weight.copy_(weight[0].T)
            linear.bias.copy_(bias[0, 0])
        layers.append(linear)
        if i < len(parts) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _flat_gradient(network: nn.Sequential) -> torch.Tensor:
    """The network's gradient in ``LearnedInit``'s flat layout (weights as ``[in, out]``, then bias)."""
    linears = [m for m in network if isinstance(m, nn.Linear)]
    return torch.cat([t for m in linears for t in (m.weight.grad.T.reshape(-1), m.bias.grad)])


def ours_meta_loss(learner: LearnedInit, tasks: TaskBatch, batches: list) -> float:
    """The library's meta-gradient: the ``full`` objective's windowed backward over all steps."""
    return meta_loss(learner, tasks, batches, objective="full")


def higher_meta_loss(
    network: nn.Module, tasks: TaskBatch, batches: list, inner_lr: float, higher: Any
) -> float:
    """The same objective with ``higher``: a differentiable inner loop per task, as its examples do."""
    inner = torch.optim.SGD(network.parameters(), lr=inner_lr)
    num_tasks, num_steps = tasks.num_tasks, len(batches)
    total = 0.0
    for t in range(num_tasks):
        with higher.innerloop_ctx(network, inner, copy_initial_weights=False) as (model, optimizer):
            task_loss = 0.0
            for batch_x, batch_y in batches:
                optimizer.step((model(batch_x[t]) - batch_y[t]).square().mean())
                task_loss = task_loss + (model(tasks.x_query[t]) - tasks.y_query[t]).square().mean()
            loss = task_loss / (num_tasks * num_steps)
            loss.backward()
            total += loss.item()
    return total


def maml_versus_higher(setup: dict[str, Any], *, steps: int, warmup: int, seed: int = 0) -> dict[str, Any]:
    """Median meta-step time (zero grad, meta-gradient, Adam step) of ours and ``higher``; the ratio.

    Raises if the two meta-gradients differ by more than ``GRADIENT_TOLERANCE`` (relative to the
    largest entry): a timing of two different computations would mean nothing.
    """
    try:
        import higher
    except ImportError:
        return {"status": "skipped: `higher` is not installed (pip install higher)"}
    learner = LearnedInit(MLP(1, 1, hidden=setup["hidden"]), seed=seed, rule={"inner_lr": setup["inner_lr"]})
    network = _torch_network(learner)
    tasks, batches = _maml_tasks(setup, seed)

    ours_loss = ours_meta_loss(learner, tasks, batches)
    theirs_loss = higher_meta_loss(network, tasks, batches, setup["inner_lr"], higher)
    ours_grad, theirs_grad = learner.representation.theta0.grad, _flat_gradient(network)
    difference = float((ours_grad - theirs_grad).abs().max())
    scale = float(theirs_grad.abs().max())
    if difference > GRADIENT_TOLERANCE * max(1.0, scale):
        raise AssertionError(
            f"meta-gradients differ by {difference:.2e} (largest entry {scale:.2e}): the comparison is void"
        )

    ours_optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    theirs_optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)

    def ours() -> None:
        ours_optimizer.zero_grad(set_to_none=True)
        ours_meta_loss(learner, tasks, batches)
        ours_optimizer.step()

    def theirs() -> None:
        theirs_optimizer.zero_grad(set_to_none=True)
        higher_meta_loss(network, tasks, batches, setup["inner_lr"], higher)
        theirs_optimizer.step()

    times: dict[str, list[float]] = {"ours": [], "higher": []}
    for i in range(warmup + steps):
        for name, meta_step in (("ours", ours), ("higher", theirs)):
            began = time.perf_counter()
            meta_step()
            if i >= warmup:
                times[name].append(time.perf_counter() - began)
    ours_ms = 1e3 * statistics.median(times["ours"])
    higher_ms = 1e3 * statistics.median(times["higher"])
    return {
        "status": "ok",
        "higher_version": metadata.version("higher"),
        "steps": steps,
        "warmup": warmup,
        "meta_loss": {"ours": ours_loss, "higher": theirs_loss},
        "max_gradient_difference": difference,
        "largest_gradient_entry": scale,
        "ours_ms": ours_ms,
        "higher_ms": higher_ms,
        "speedup": higher_ms / ours_ms,
    }


def main(out_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Run both speed benchmarks; ``quick`` runs toy sizes for a few iterations (a smoke test)."""
    sizes = TOY["throughput"] if quick else QUICKSTART
    transformer = TOY["transformer"] if quick else TRANSFORMER
    maml_setup = TOY["maml"] if quick else MAML
    rows = []
    for name, (learner, objective) in _learners(transformer).items():
        measured = throughput(
            learner, objective, sizes, warmup=1 if quick else 3, seconds=0.0 if quick else 3.0
        )
        rows.append({"learner": name, "objective": objective, **measured})
    maml = maml_versus_higher(maml_setup, steps=3 if quick else 50, warmup=1 if quick else 5)
    return {
        "settings": {
            "throughput": {"family": f"LinearRegression(dim={DIM}, noise=0.5)", **sizes, **transformer},
            "maml": {**maml_setup, "second_order": True, "meta_optimizer": "Adam(lr=1e-3)"},
        },
        "throughput": rows,
        "maml": maml,
    }


def report(result: dict[str, Any]) -> str:
    """Markdown tables of the throughput and the MAML comparison."""
    settings = result["settings"]["throughput"]
    lines = [
        f"Meta-training throughput on {settings['family']}, {settings['tasks_per_batch']} tasks per batch, "
        f"mini-batches of {settings['batch_size']}, k = {settings['num_steps']} steps, transformers of "
        f"width {settings['width']} and depth {settings['depth']} (timed after warm-up iterations).",
        "",
        "| learner | objective | ms / iteration | tasks / s |",
        "| --- | --- | ---: | ---: |",
    ]
    for row in result["throughput"]:
        lines.append(
            f"| {row['learner']} | {row['objective']} | {row['ms_per_iteration']:.1f} | "
            f"{row['tasks_per_second']:.0f} |"
        )
    maml, setup = result["maml"], result["settings"]["maml"]
    lines += [
        "",
        f"Second-order MAML meta-step against `higher` on sinusoid regression: "
        f"1-{'-'.join(str(h) for h in setup['hidden'])}-1 ReLU MLP, "
        f"{setup['inner_steps']} inner SGD steps (lr {setup['inner_lr']}), {setup['support']} support and "
        f"{setup['query']} query points, {setup['tasks']} tasks per meta-batch, {setup['meta_optimizer']}.",
    ]
    if maml["status"] != "ok":
        lines.append(f"{maml['status']}.")
        return "\n".join(lines)
    lines += [
        "",
        "| | median ms / meta-step |",
        "| --- | ---: |",
        f"| amortized (`LearnedInit`, objective `full`) | {maml['ours_ms']:.2f} |",
        f"| higher {maml['higher_version']} | {maml['higher_ms']:.2f} |",
        "",
        f"amortized is **{maml['speedup']:.1f}×** faster (median of {maml['steps']} meta-steps after "
        f"{maml['warmup']} warm-up steps, alternating in one process). Same meta-gradient: largest "
        f"difference {maml['max_gradient_difference']:.1e} (largest entry "
        f"{maml['largest_gradient_entry']:.1e}).",
    ]
    return "\n".join(lines)
