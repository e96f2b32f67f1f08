"""The learner contract, checked over every registered learner (like scikit-learn's parametrize_with_checks).

Every class in :attr:`Learner.registry` must have a tiny recipe in :data:`RECIPES`; each recipe is run
through the same checks: ``init_state`` shapes and :class:`State` invariants, what a step advances,
``State.cat`` against stepping the tasks together, ``adapt`` building no graph, determinism,
the checkpoint round trip, ``State.detach`` and the library's errors for wrong-shaped inputs.
"""

from __future__ import annotations

import functools
import importlib
import json
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import amortized
import amortized.learners
from amortized.errors import AmortizedError, ShapeError
from amortized.learners import (
    SGD,
    Adam,
    BayesLinearRegression,
    EmpiricalSamples,
    FlowMatching,
    GaussianMixtureFit,
    InContext,
    LatentSGD,
    LatentUpdate,
    LearnedInit,
    LearnedUpdate,
    Learner,
    OrderScores,
    RandomOrder,
    State,
    VarianceOrder,
)
from amortized.learners.state import map_tensors
from amortized.models import MLP, Linear
from amortized.tasks import GaussianMixture, LinearClassification, LinearRegression, RandomSCM, TaskBatch

NUM_TASKS, NUM_POINTS, NUM_QUERY, BATCH = 3, 8, 5, 4
"""Tasks per batch, training points and query points per task, points per step."""
CLASSES, VARIABLES = 3, 4
RULE = {"width": 8, "depth": 1, "heads": 2, "chunk_size": 4, "memory_tokens": 2, "refinements": 2}
"""A tiny transformer rule that still exercises memory tokens, refinements, momentum and tapering."""
HISTORY = {**RULE, "history": 2}
"""The rule reading the values of the last two steps too."""
TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}


@dataclass(frozen=True)
class Recipe:
    """How to build one learner cheaply (``make(seed)``) and the kind of task it is checked on."""

    make: Callable[[int], Learner]
    kind: str
    """``regression``, ``classification``, ``generative`` or ``order``: the tiny family it reads."""
    variant: str = ""
    """What sets this recipe apart from the class's others of its kind (an option), for its test id."""
    grows: bool = False
    """The state's value gathers points (``[tasks, kept, D]``), so its size changes until full."""
    independent_predictions: bool = True
    """A task's predictions do not depend on the other tasks in the batch."""
    known_bugs: Mapping[str, str] = field(default_factory=dict)
    """Checks this learner fails because of a bug in the library: check name -> the bug (strict xfail)."""


COLLECTOR_CAT_BUG = (
    "a collector's value [tasks, kept, D] grows with the points read, so State.cat of states at "
    "different steps raises torch's RuntimeError (sizes must match in torch.cat)"
)


RECIPES: dict[str, tuple[Recipe, ...]] = {
    "SGD": (
        Recipe(lambda seed: SGD(Linear(2), lr=0.1, seed=seed), "regression"),
        Recipe(lambda seed: SGD(Linear(2, CLASSES), lr=0.1, task="classification"), "classification"),
    ),
    "Adam": (
        Recipe(lambda seed: Adam(Linear(2), lr=0.1, init="random", seed=seed), "regression"),
        Recipe(lambda seed: Adam(Linear(2, CLASSES), lr=0.1, task="classification"), "classification"),
    ),
    "BayesLinearRegression": (Recipe(lambda seed: BayesLinearRegression(2, noise=0.1), "regression"),),
    "LearnedInit": (
        Recipe(
            lambda seed: LearnedInit(
                MLP(2, hidden=(8,)), rule={"inner_lr": 0.1, "learn_lr": True}, seed=seed
            ),
            "regression",
        ),
        Recipe(
            lambda seed: LearnedInit(Linear(2, CLASSES), task="classification", seed=seed), "classification"
        ),
    ),
    "LearnedUpdate": (
        Recipe(lambda seed: LearnedUpdate(Linear(2), rule=RULE, seed=seed), "regression"),
        Recipe(
            lambda seed: LearnedUpdate(Linear(2, CLASSES), task="classification", rule=RULE, seed=seed),
            "classification",
        ),
        Recipe(lambda seed: LearnedUpdate(Linear(2), rule=HISTORY, seed=seed), "regression", "history"),
    ),
    "LatentUpdate": (
        Recipe(
            lambda seed: LatentUpdate(2, latent_dim=4, decoder_hidden=(8,), rule=RULE, seed=seed),
            "regression",
        ),
        Recipe(
            lambda seed: LatentUpdate(
                2, CLASSES, "classification", latent_dim=4, decoder_hidden=(8,), rule=RULE, seed=seed
            ),
            "classification",
        ),
        Recipe(
            lambda seed: LatentUpdate(2, latent_dim=4, decoder_hidden=(8,), rule=HISTORY, seed=seed),
            "regression",
            "history",
        ),
    ),
    "LatentSGD": (
        Recipe(
            lambda seed: LatentSGD(2, latent_dim=4, decoder_hidden=(8,), seed=seed),
            "regression",
        ),
        Recipe(
            lambda seed: LatentSGD(
                2, CLASSES, "classification", latent_dim=4, decoder_hidden=(8,), seed=seed
            ),
            "classification",
        ),
    ),
    "InContext": (
        Recipe(lambda seed: InContext(2, rule=RULE, seed=seed), "regression"),
        Recipe(lambda seed: InContext(2, CLASSES, "classification", rule=RULE, seed=seed), "classification"),
        Recipe(
            lambda seed: InContext(2, state="latent", rule=HISTORY, seed=seed), "regression", "latent-history"
        ),
        Recipe(
            lambda seed: InContext(2, CLASSES, "classification", state="latent", rule=RULE, seed=seed),
            "classification",
            "latent",
        ),
        Recipe(
            lambda seed: InContext(
                2, CLASSES, "classification", state="probabilities", rule=HISTORY, seed=seed
            ),
            "classification",
            "probabilities-history",
        ),
    ),
    "FlowMatching": (
        Recipe(
            lambda seed: FlowMatching(
                2, width=8, depth=1, heads=2, memory_tokens=2, integration_steps=2, seed=seed
            ),
            "generative",
        ),
    ),
    "EmpiricalSamples": (
        Recipe(
            lambda seed: EmpiricalSamples(2, capacity=BATCH),
            "generative",
            grows=True,
            known_bugs={"test_cat_of_tasks_at_different_steps": COLLECTOR_CAT_BUG},
        ),
    ),
    "GaussianMixtureFit": (
        Recipe(
            lambda seed: GaussianMixtureFit(2, max_components=2, capacity=BATCH, seed=seed),
            "generative",
            grows=True,
            # One generator draws every task's mixture components in turn.
            independent_predictions=False,
            known_bugs={"test_cat_of_tasks_at_different_steps": COLLECTOR_CAT_BUG},
        ),
    ),
    "OrderScores": (
        Recipe(
            lambda seed: OrderScores(VARIABLES, width=8, depth=1, heads=2, pair_width=4, seed=seed), "order"
        ),
    ),
    "RandomOrder": (
        Recipe(
            lambda seed: RandomOrder(VARIABLES, seed=seed),
            "order",
        ),
    ),
    "VarianceOrder": (
        Recipe(
            lambda seed: VarianceOrder(VARIABLES),
            "order",
        ),
    ),
}
"""Tiny recipes per registered learner class: a new learner fails the suite until it has one."""

OUTPUTS = {"regression": 1, "classification": CLASSES, "generative": 2, "order": 1}
"""The last dimension of ``predict``'s output per kind of task."""


def registered_learners() -> dict[str, type[Learner]]:
    """Every learner class the library registers, after importing every module under ``learners``."""
    for module in pkgutil.walk_packages(amortized.learners.__path__, "amortized.learners."):
        importlib.import_module(module.name)
    return {
        name: cls
        for name, cls in sorted(Learner.registry.items())
        if cls.__module__.split(".")[0] == "amortized"
    }


def _no_recipe(name: str) -> Callable[[int], Learner]:
    """A maker that fails the check: ``name`` is registered but has no recipe."""

    def fail(seed: int) -> Learner:
        pytest.fail(
            f"{name} is registered but has no tiny recipe in RECIPES (tests/learners/test_contract.py)"
        )

    return fail


def cases(check: str) -> list[Any]:
    """The parameters of ``check``: one per recipe (its known bug an xfail), one per class without one."""
    found = []
    for name in registered_learners():
        recipes = RECIPES.get(name) or (Recipe(_no_recipe(name), "regression"),)
        for recipe in recipes:
            label = name if len(recipes) == 1 else f"{name}-{recipe.kind}"
            label += f"-{recipe.variant}" if recipe.variant else ""
            bug = recipe.known_bugs.get(check)
            marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
            found.append(pytest.param(recipe, id=label, marks=marks))
    return found


CheckFunction = Callable[..., None]


def over_learners(check: CheckFunction) -> CheckFunction:
    """Run ``check`` once per recipe of every registered learner (argument ``recipe``)."""
    return pytest.mark.parametrize("recipe", cases(check.__name__))(check)


@functools.cache
def _tasks(kind: str) -> TaskBatch:
    """The tiny task batch of one kind (built once)."""
    families = {
        "regression": lambda: LinearRegression(dim=2, noise=0.1),
        "classification": lambda: LinearClassification(dim=2, num_classes=CLASSES),
        "generative": lambda: GaussianMixture(components=(2, 2)),
        "order": lambda: RandomSCM(variables=(3, VARIABLES)),
    }
    return families[kind]().sample(NUM_TASKS, NUM_POINTS, NUM_QUERY, torch.Generator().manual_seed(0))


@pytest.fixture
def tasks(recipe: Recipe) -> TaskBatch:
    """The tiny task batch of the recipe's kind (shared: tests must not modify it)."""
    return _tasks(recipe.kind)


def perturbed(learner: Learner, seed: int = 0) -> Learner:
    """``learner`` with seeded noise on every weight, so zero-initialised heads compute something."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in learner.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return learner


@pytest.fixture
def learner(recipe: Recipe) -> Learner:
    """The recipe's learner (seed 0) with perturbed weights."""
    return perturbed(recipe.make(0))


def leaves(tree: object) -> list[Tensor]:
    """The tensors of a state's carry (dataclasses, tuples and ``None`` around tensors)."""
    found: list[Tensor] = []

    def collect(tensor: Tensor) -> Tensor:
        found.append(tensor)
        return tensor

    map_tensors(collect, tree)
    return found


def state_tensors(state: State) -> dict[str, Tensor]:
    """Every tensor a state holds, by name."""
    named = {"value": state.value, "num_steps": state.num_steps, "num_seen": state.num_seen}
    named.update({f"carry[{i}]": leaf for i, leaf in enumerate(leaves(state.carry))})
    if state.query_x is not None:
        named["query_x"] = state.query_x
    return named


def chunk(tasks: TaskBatch, index: int) -> tuple[Tensor, Tensor]:
    """The ``index``-th mini-batch of ``BATCH`` training points of every task."""
    part = slice(index * BATCH, (index + 1) * BATCH)
    return tasks.x_train[:, part], tasks.y_train[:, part]


def adapted(learner: Learner, tasks: TaskBatch) -> State:
    """``adapt`` on the tasks' training points in two steps, in a fixed order."""
    return amortized.adapt(
        learner,
        tasks.x_train,
        tasks.y_train,
        batch_size=BATCH,
        num_steps=2,
        query_x=tasks.x_query,
        generator=torch.Generator().manual_seed(1),
    )


def predictions(learner: Learner, tasks: TaskBatch) -> Tensor:
    """Predictions at the query points after :func:`adapted`."""
    with torch.no_grad():
        return learner.predict(adapted(learner, tasks), tasks.x_query)


def assert_states_close(actual: State, expected: State) -> None:
    """Same tensors in the same places (within :data:`TOLERANCE`)."""
    got, want = state_tensors(actual), state_tensors(expected)
    assert got.keys() == want.keys()
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor, **TOLERANCE, msg=lambda text, n=name: f"{n}: {text}")


def assert_cat_equals_stepping_together(
    learner: Learner, recipe: Recipe, states: list[State], batches: list[tuple[Tensor, Tensor]]
) -> None:
    """Stepping each state on its batch then ``State.cat`` equals stepping the concatenated ones."""
    apart = State.cat([learner.step(state, x, y) for state, (x, y) in zip(states, batches, strict=True)])
    x, y = (torch.cat(parts) for parts in zip(*batches, strict=True))
    together = learner.step(State.cat(states), x, y)
    assert_states_close(together, apart)
    if recipe.independent_predictions:
        query_x = _tasks(recipe.kind).x_query  # the states are of its tasks, in order
        torch.testing.assert_close(
            learner.predict(together, query_x), learner.predict(apart, query_x), **TOLERANCE
        )


# --------------------------------------------------------------------------------------------------
# The registry


def test_every_registered_learner_has_a_recipe() -> None:
    missing = sorted(set(registered_learners()) - set(RECIPES))
    assert not missing, f"registered learners without a tiny recipe in RECIPES: {missing}"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_recipe_builds_the_registered_class_it_is_filed_under(name: str) -> None:
    registry = registered_learners()
    assert name in registry, f"RECIPES lists {name}, which is not a registered learner"
    for recipe in RECIPES[name]:
        built = recipe.make(0)
        assert type(built) is registry[name]
        assert built.task == recipe.kind


# --------------------------------------------------------------------------------------------------
# State invariants


@over_learners
def test_init_state_shapes(learner: Learner, tasks: TaskBatch) -> None:
    state = learner.init_state(NUM_TASKS, tasks.x_query)
    assert isinstance(state, State)
    assert state.value.shape[0] == NUM_TASKS == state.num_tasks
    for counter in (state.num_steps, state.num_seen):
        assert counter.shape == (NUM_TASKS,)
        assert not counter.any()
    for leaf in leaves(state.carry):
        assert leaf.shape[0] == NUM_TASKS, f"a carry tensor {tuple(leaf.shape)} without tasks on dim 0"
    if state.query_x is not None:
        assert state.query_x.shape[0] == NUM_TASKS


@over_learners
def test_a_step_advances_the_counters_and_keeps_the_shapes(
    learner: Learner, recipe: Recipe, tasks: TaskBatch
) -> None:
    with torch.no_grad():
        states = [learner.init_state(NUM_TASKS, tasks.x_query)]
        for index in range(2):
            states.append(learner.step(states[-1], *chunk(tasks, index)))
    for count, state in enumerate(states):
        assert state.num_steps.tolist() == [count] * NUM_TASKS
        assert state.num_seen.tolist() == [count * BATCH] * NUM_TASKS
        carry_shapes = [leaf.shape for leaf in leaves(state.carry)]
        assert carry_shapes == [leaf.shape for leaf in leaves(states[0].carry)]
        if state.query_x is not None:
            assert torch.equal(state.query_x, tasks.x_query)
    first = 1 if recipe.grows else 0  # a collector's value fills up in the first step (capacity BATCH)
    assert all(state.value.shape == states[first].value.shape for state in states[first:])
    assert all(state.value.shape[0] == NUM_TASKS for state in states)


@over_learners
def test_a_step_leaves_its_input_state_unchanged(learner: Learner, tasks: TaskBatch) -> None:
    with torch.no_grad():
        state = learner.step(learner.init_state(NUM_TASKS, tasks.x_query), *chunk(tasks, 0))
        before = {name: tensor.clone() for name, tensor in state_tensors(state).items()}
        learner.step(state, *chunk(tasks, 1))
    after = state_tensors(state)
    assert after.keys() == before.keys()
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), f"step changed its input state's {name} in place"


@over_learners
def test_predict_shape(learner: Learner, recipe: Recipe, tasks: TaskBatch) -> None:
    output = predictions(learner, tasks)
    assert output.shape == (NUM_TASKS, tasks.x_query.shape[1], OUTPUTS[recipe.kind])
    assert output.is_floating_point() and torch.isfinite(output).all()


@over_learners
def test_cat_of_task_batches_equals_stepping_them_together(
    learner: Learner, recipe: Recipe, tasks: TaskBatch
) -> None:
    first, second = tasks[:2], tasks[2:]
    with torch.no_grad():
        parts = [learner.init_state(len(part.x_query), part.x_query) for part in (first, second)]
        parts = [
            learner.step(state, *chunk(part, 0)) for state, part in zip(parts, (first, second), strict=True)
        ]
        assert_cat_equals_stepping_together(learner, recipe, parts, [chunk(first, 1), chunk(second, 1)])


@over_learners
def test_cat_of_tasks_at_different_steps(learner: Learner, recipe: Recipe, tasks: TaskBatch) -> None:
    """Tasks that have read different amounts of data (as training's greedy objective stacks them)."""
    first, second = tasks[:2], tasks[2:]
    with torch.no_grad():
        ahead = learner.step(learner.init_state(2, first.x_query), *chunk(first, 0))
        fresh = learner.init_state(1, second.x_query)
        assert_cat_equals_stepping_together(
            learner, recipe, [ahead, fresh], [chunk(first, 1), chunk(second, 0)]
        )


# --------------------------------------------------------------------------------------------------
# Graphs


@over_learners
def test_adapt_builds_no_graph_and_leaves_no_gradients(learner: Learner, tasks: TaskBatch) -> None:
    assert torch.is_grad_enabled()
    state = adapted(learner, tasks)
    for name, tensor in state_tensors(state).items():
        assert not tensor.requires_grad and tensor.grad_fn is None, f"adapt left a graph on {name}"
    assert all(parameter.grad is None for parameter in learner.parameters())
    assert torch.is_grad_enabled()


@over_learners
def test_detach_cuts_the_graph(learner: Learner, tasks: TaskBatch) -> None:
    state = learner.step(learner.init_state(NUM_TASKS, tasks.x_query), *chunk(tasks, 0))
    if learner.regime != "baseline":
        assert state.value.grad_fn is not None, "a learned learner's step is not differentiable"
    # Every float tensor of the state on a graph (baselines' states have none of their own).
    weight = torch.ones((), requires_grad=True)
    on_graph = replace(
        state,
        value=state.value * weight,
        carry=map_tensors(lambda t: t * weight if t.is_floating_point() else t, state.carry),
    )
    detached = on_graph.detach()
    assert on_graph.value.requires_grad  # detach returns a new state
    for name, tensor in state_tensors(detached).items():
        assert not tensor.requires_grad and tensor.grad_fn is None, f"detach kept the graph of {name}"
    assert_states_close(detached, on_graph)


# --------------------------------------------------------------------------------------------------
# Determinism and persistence


@over_learners
def test_the_same_seed_builds_the_same_weights(recipe: Recipe) -> None:
    first, second = recipe.make(0).state_dict(), recipe.make(0).state_dict()
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert torch.equal(second[name], tensor), name


@over_learners
def test_the_same_seed_gives_the_same_outputs_whatever_the_global_rng(
    recipe: Recipe, tasks: TaskBatch
) -> None:
    outputs = []
    for global_seed in (1, 2):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(global_seed)
            outputs.append(predictions(perturbed(recipe.make(0)), tasks))
    assert torch.equal(outputs[0], outputs[1])


@over_learners
def test_describe_rebuilds_the_learner_through_from_config(recipe: Recipe) -> None:
    learner = recipe.make(0)
    description = learner.describe()
    assert description["class"] == type(learner).__name__
    json.dumps(description)  # plain data
    rebuilt = type(learner).from_config(description["config"])
    assert rebuilt.describe() == description
    expected = learner.state_dict()
    assert rebuilt.state_dict().keys() == expected.keys()
    for name, tensor in rebuilt.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


@over_learners
def test_checkpoint_round_trip(learner: Learner, tasks: TaskBatch, tmp_path: Path) -> None:
    path = amortized.save(learner, tmp_path / "learner.pt")
    loaded = amortized.load(path)
    assert type(loaded) is type(learner)
    assert loaded.describe() == learner.describe()
    saved = learner.state_dict()
    assert loaded.state_dict().keys() == saved.keys()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    assert torch.equal(predictions(loaded, tasks), predictions(learner, tasks))


# --------------------------------------------------------------------------------------------------
# Errors


@over_learners
def test_step_rejects_wrong_shaped_inputs_with_shape_error(learner: Learner, tasks: TaskBatch) -> None:
    state = learner.init_state(NUM_TASKS, tasks.x_query)
    x, y = chunk(tasks, 0)
    wrong = {
        "an extra feature": (torch.cat([x, x[..., :1]], -1), y),
        "no task dimension": (x[0], y[0]),
        "another number of tasks": (torch.cat([x, x[:1]]), torch.cat([y, y[:1]])),
    }
    for what, (bad_x, bad_y) in wrong.items():
        with pytest.raises(ShapeError):
            learner.step(state, bad_x, bad_y)
            pytest.fail(f"step accepted x with {what}")


@over_learners
def test_predict_rejects_wrong_shaped_x_with_the_library_error(learner: Learner, tasks: TaskBatch) -> None:
    state = adapted(learner, tasks)
    x = tasks.x_query
    wrong = {
        "an extra feature": torch.cat([x, x[..., :1]], -1),
        "no task dimension": x[0],
        "another number of tasks": torch.cat([x, x[:1]]),
    }
    for what, bad in wrong.items():
        with pytest.raises(AmortizedError):
            learner.predict(state, bad)
            pytest.fail(f"predict accepted x with {what}")


UNTAPERED = {"refinements": 3, "taper_refinements": False}
WITHOUT_NEWTON = {**UNTAPERED, "inputs": ["observations", "gradients"]}


@pytest.mark.parametrize(
    "make",
    [
        lambda: LearnedUpdate(Linear(2), rule=WITHOUT_NEWTON),
        lambda: InContext(2, rule=UNTAPERED),
        lambda: LatentUpdate(2, rule=WITHOUT_NEWTON),
    ],
    ids=["parametric", "implicit", "explicit"],
)
def test_an_untapered_step_reads_nothing_back_from_the_device(make: Callable[[], Learner]) -> None:
    """On the ``meta`` device any read of a value on the host (``.item()``, ``bool(t)``) raises: the
    step itself never asks for one (the running ridge readout included). Tapering reads how many
    passes the tasks need and the Newton direction whether a curvature is indefinite; torch's CUDA
    solvers synchronize by themselves."""
    learner = make().to("meta")
    state = learner.init_state(3, torch.empty(3, 5, 2, device="meta"))
    state = learner._step(state, torch.empty(3, 4, 2, device="meta"), torch.empty(3, 4, 1, device="meta"))
    assert state.value.device.type == "meta"
