"""Presets checked into an :class:`Experiment`: every key and value, the families, learners, baselines.

Presets are plain TOML files, found, read and overridden by :mod:`amortized.preset_files`.

A preset has these parts (the shipped ones are in ``amortized/presets/*.toml``)::

    description = "one line"
    [data]        root = "DIR"              # where file-based data sets (MNIST's IDX files) live
    [family]      class = "LinearRegression", plus its constructor options
    [train]       TrainConfig fields, shared by every learner
    [evaluation]  EvaluationConfig fields; [evaluation.ood.NAME] holds family overrides per shift
    [[learners]]  name, class, one_shot, kwargs (constructor options), train (per-learner overrides)
    [[baselines]] name, class, kwargs, lr_grid, tune ("per_k" | "once"), tune_steps

Widths and the kind of task are filled in from the family, so a learner's ``kwargs`` hold only
what matters (a parametric learner's ``model = {kind = "mlp", hidden = [40, 40]}``). An unknown key
is named with the valid ones listed (:func:`~amortized.validation.check_keys`); every value is checked
where it goes, by the constructor or dataclass that takes it (the same checkers as in Python), and a
refusal is prefixed with where in the preset it came from (``family: noise must be ...``).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from amortized import tasks as task_families
from amortized.errors import ConfigError, DataError
from amortized.evaluation import TUNE_MODES, EvaluationConfig
from amortized.learners import BayesLinearRegression, Learner
from amortized.memory import check_memory
from amortized.models.predictors import MLP, Linear
from amortized.preset_files import read_preset
from amortized.tasks.base import TaskFamily
from amortized.tasks.datasets import LabelledDataset
from amortized.training import TrainConfig
from amortized.validation import (
    MAX_MAGNITUDE,
    check_bool,
    check_choice,
    check_keys,
    check_positive_int,
    check_real_list,
    check_str,
)

FAMILIES: dict[str, Callable[..., TaskFamily]] = {
    name: getattr(task_families, name)
    for name in (
        "LinearRegression",
        "NonlinearRegression",
        "Sinusoid",
        "GaussianProcess",
        "LinearClassification",
        "NonlinearClassification",
        "Digits",
        "MNIST1D",
        "MNIST",
        "FashionMNIST",
        "FeaturesFile",
        "NPZDataset",
        "GaussianMixture",
        "Alphabet",
        "RandomSCM",
    )
}
"""Task families a preset can name in ``[family] class``."""

TUNED_BASELINES = ("SGD", "Adam")
REFERENCE = "BayesLinearRegression"
FIXED_BASELINES = ("GaussianMixtureFit", "EmpiricalSamples", "RandomOrder", "VarianceOrder")
"""References with nothing to learn or tune (of generative and causal tasks): run as they are."""
PREDICTORS = {"linear": Linear, "mlp": MLP}
TRAIN_KEYS = tuple(field.name for field in dataclasses.fields(TrainConfig))

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# --------------------------------------------------------------------------------------------------
# Keys of preset tables (each value is checked by the constructor or dataclass it goes to)


def _parameter_names(factory: Callable[..., Any]) -> list[str]:
    """The options a constructor takes by name: the keys its table may hold."""
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [
        name
        for name, parameter in inspect.signature(factory).parameters.items()
        if parameter.kind not in kinds
    ]


def _check_class(where: str, name: Any, registry: dict[str, Any], kind: str) -> Any:
    if name not in registry:
        raise ConfigError(f"unknown {kind} {name!r} in {where}; valid: {', '.join(sorted(registry))}")
    return registry[name]


# --------------------------------------------------------------------------------------------------
# Building families, learners and baselines


def build_family(table: dict[str, Any], data: dict[str, Any], where: str = "family") -> TaskFamily:
    """A task family from its table (``class`` plus options); ``root`` comes from ``data.root``."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table of the family's class and options, got {table!r}")
    table = dict(table)
    if "class" not in table:
        raise ConfigError(f"{where} needs a 'class' key; valid: {', '.join(FAMILIES)}")
    name = table.pop("class")
    factory = _check_class(f"{where}.class", name, FAMILIES, "task family")
    schema = _parameter_names(factory)
    check_keys(where, table, [*schema, "holdout_classes"])
    table.pop("holdout_classes", None)
    if "root" in schema and "root" not in table:
        root = data.get("root", "")
        if not root:
            raise DataError(
                f"the {name} family reads its IDX files from a directory: pass --set data.root=DIR, with DIR "
                "holding train-images-idx3-ubyte and train-labels-idx1-ubyte (optionally .gz); nothing is "
                "downloaded"
            )
        table["root"] = root
    if "path" in schema and not table.get("path"):
        raise DataError(
            f"the {name} family reads a features file: pass --set {where}.path=FILE (.npz; .npy with "
            f"--set {where}.labels_path=FILE; .pt); nothing is downloaded"
        )
    return _construct(where, factory, table)


def _families(config: dict[str, Any]) -> tuple[TaskFamily, dict[str, TaskFamily]]:
    """The training family and the out-of-distribution ones (held-out classes, other options).

    Both may be given: a family of embeddings holds out classes and is also scored on a second
    file (``evaluation.ood.NAME.path``); a shifted family uses all of its classes.
    """
    table, data = config["family"], config.get("data", {})
    family = build_family(table, data)
    shifted: dict[str, TaskFamily] = {}
    holdout = table.get("holdout_classes")
    if holdout is not None:
        if not isinstance(family, LabelledDataset):
            raise ConfigError(f"family.holdout_classes applies to labelled data sets, not {table['class']}")
        split = {"holdout_classes": holdout, "seed": table.get("seed", 0)}
        family, shifted["held_out_classes"] = _construct("family", family.split, split)
    for name, overrides in config.get("evaluation", {}).get("ood", {}).items():
        if not isinstance(overrides, dict):
            raise ConfigError(f"evaluation.ood.{name} must be a table of family options, got {overrides!r}")
        shifted[name] = build_family({**table, **overrides}, data, f"evaluation.ood.{name}")
    return family, shifted


def _fill(
    where: str, factory: Callable[..., Any], kwargs: dict[str, Any], family: TaskFamily
) -> dict[str, Any]:
    """Fill input/output widths, the kind of task and a predictor spec's widths from the family."""
    parameters = inspect.signature(factory).parameters
    filled = dict(kwargs)
    defaults = {
        "input_dim": family.input_dim,
        "output_dim": family.output_dim,
        "task": "classification" if family.is_classification else "regression",
    }
    for key, value in defaults.items():
        if key in parameters and key not in filled:
            filled[key] = value
    if "model" in parameters:
        filled["model"] = _predictor(f"{where}.kwargs.model", filled.get("model", {"kind": "linear"}), family)
    return filled


def _predictor(where: str, spec: Any, family: TaskFamily) -> dict[str, Any]:
    """A predictor config (``kind`` plus options) with the family's input and output widths."""
    if not isinstance(spec, dict):
        raise ConfigError(
            f"{where} must be a table such as {{kind = 'mlp', hidden = [40, 40]}}, got {spec!r}"
        )
    spec = {"kind": "linear", **spec}
    factory = _check_class(f"{where}.kind", spec["kind"], PREDICTORS, "model kind")
    check_keys(where, {k: v for k, v in spec.items() if k != "kind"}, _parameter_names(factory))
    return {"input_dim": family.input_dim, "output_dim": family.output_dim, **spec}


def _construct(where: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``factory(**kwargs)``, a wrong argument or a refused option named as ``where``'s."""
    try:
        return factory(**kwargs)
    except (TypeError, ConfigError) as error:
        raise ConfigError(f"{where}: {error}") from None


def _check_sizes(
    family: TaskFamily,
    shifted: dict[str, TaskFamily],
    evaluation: EvaluationConfig,
    learners: Sequence[LearnerSpec],
) -> None:
    """Refuse task batches beyond the memory budget before anything is sampled or built.

    Each learner's training batch, the evaluation tasks (the step and size curves and each shift,
    held together, so their estimates add up) and the cost curve's tasks, estimated by the
    families' ``sample_bytes``.
    """
    for spec in learners:
        train = spec.train
        num_train = train.num_train or train.max_steps * train.max_batch_size
        family.check_sample_size(
            f"learners.{spec.name}.train: tasks_per_batch={train.tasks_per_batch}, "
            f"num_train={num_train}, num_query={train.num_query}",
            train.tasks_per_batch,
            num_train + train.num_query,
        )
    tasks, query = evaluation.num_tasks, evaluation.num_query
    held = [(family, evaluation.num_train), (family, max(evaluation.sizes))]
    held += [(source, evaluation.num_train) for source in shifted.values()]
    check_memory(
        f"evaluation.num_tasks={tasks} with num_train={evaluation.num_train}, sizes up to "
        f"{max(evaluation.sizes)} and num_query={query}",
        sum(source.sample_bytes(tasks, points + query) for source, points in held),
        held=f"the evaluation tasks ({len(held)} batches of {type(family).__name__})",
        remedy="use fewer tasks or points",
    )
    for source, points in held:
        source.check_sample_size(f"evaluation: num_train={points} and num_query={query}", 1, points + query)
    family.check_sample_size(
        f"evaluation.cost_tasks={evaluation.cost_tasks} with cost_sizes up to "
        f"{max(evaluation.cost_sizes)} and num_query={query}",
        evaluation.cost_tasks,
        max(evaluation.cost_sizes) + query,
    )


@dataclass
class LearnerSpec:
    """One ``[[learners]]`` entry: what to build, how to meta-train it, and whether it is one-shot."""

    name: str
    cls: str
    kwargs: dict[str, Any]
    train: TrainConfig
    one_shot: bool

    def build(self, family: TaskFamily) -> Learner:
        factory = Learner.registry[self.cls]
        where = f"learners.{self.name}"
        return _construct(where, factory, _fill(where, factory, self.kwargs, family))


@dataclass
class BaselineSpec:
    """One ``[[baselines]]`` entry: a per-task optimizer with a tuned rate, the Bayes reference, or a
    fixed reference (nothing to tune)."""

    name: str
    cls: str
    kwargs: dict[str, Any]
    lr_grid: list[float]
    tune: str
    tune_steps: int | None

    @property
    def is_reference(self) -> bool:
        return self.cls == REFERENCE

    @property
    def is_fixed(self) -> bool:
        """A reference with no learning rate (:data:`FIXED_BASELINES`)."""
        return self.cls in FIXED_BASELINES

    def make(self, family: TaskFamily) -> Callable[[float], Learner]:
        """A function from a learning rate to the baseline learner (a fixed baseline ignores it)."""
        where = f"baselines.{self.name}"
        factory = Learner.registry[self.cls]
        kwargs = _fill(where, factory, self.kwargs, family)
        if self.is_fixed:
            return lambda lr: _construct(where, factory, kwargs)
        return lambda lr: _construct(where, factory, {**kwargs, "lr": lr})

    def reference(self, family: TaskFamily) -> Learner:
        """The exact Bayes posterior mean for ``family`` (a :class:`amortized.tasks.LinearRegression`)."""
        if not isinstance(family, task_families.LinearRegression):
            raise ConfigError(
                f"baselines.{self.name}: {REFERENCE} is the Bayes reference only for LinearRegression "
                f"families, not {type(family).__name__}; remove it from the preset"
            )
        options = {"input_dim": family.dim, "noise": family.noise, "weight_std": family.weight_std}
        return _construct(f"baselines.{self.name}", BayesLinearRegression, {**options, "bias": family.bias})


def _check_name(where: str, name: Any) -> str:
    """A learner's or baseline's name: how ``--set`` and the report address it."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where} must be letters, digits, '.', '_' or '-' (a string), got {name!r}")
    return name


def _entries(where: str, entries: Any) -> list[Any]:
    """``[[learners]]`` or ``[[baselines]]``: a list of tables."""
    if not isinstance(entries, list):
        raise ConfigError(f"{where} must be a list of tables ([[{where}]]), got {type(entries).__name__}")
    return entries


def _entry_label(table: str, index: int, entry: Any) -> str:
    """``learners.NAME`` (how ``--set`` addresses an entry), or ``learners[INDEX]`` if it has no name."""
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"{table}.{name}" if isinstance(name, str) else f"{table}[{index}]"


def _learner_spec(index: int, entry: Any, shared: dict[str, Any]) -> LearnerSpec:
    where = _entry_label("learners", index, entry)
    check_keys(where, entry, ("name", "class", "one_shot", "kwargs", "train"), required=("name", "class"))
    name = _check_name(f"{where}.name", entry["name"])
    learned = {k: v for k, v in Learner.registry.items() if v.regime != "baseline"}
    factory = _check_class(f"{where}.class", entry["class"], learned, "learner class")
    kwargs = check_keys(f"{where}.kwargs", entry.get("kwargs", {}), _parameter_names(factory))
    overrides = check_keys(f"{where}.train", entry.get("train", {}), TRAIN_KEYS)
    one_shot = check_bool(f"{where}.one_shot", entry.get("one_shot", False))
    options = {**shared, **overrides}
    if one_shot and "num_steps" not in overrides:
        options["num_steps"] = 1
    train_config = _construct(f"{where}.train", TrainConfig, options)
    return LearnerSpec(name, entry["class"], kwargs, train_config, one_shot)


def _baseline_spec(index: int, entry: Any) -> BaselineSpec:
    where = _entry_label("baselines", index, entry)
    schema = ("name", "class", "kwargs", "lr_grid", "tune", "tune_steps")
    check_keys(where, entry, schema, required=("name", "class"))
    name = _check_name(f"{where}.name", entry["name"])
    valid = {k: Learner.registry[k] for k in (*TUNED_BASELINES, REFERENCE, *FIXED_BASELINES)}
    factory = _check_class(f"{where}.class", entry["class"], valid, "baseline class")
    kwargs = check_keys(f"{where}.kwargs", entry.get("kwargs", {}), _parameter_names(factory))
    if entry["class"] == REFERENCE:
        extra = sorted(set(entry) - {"name", "class"})
        if extra or kwargs:
            raise ConfigError(f"{where}: the Bayes reference takes its options from the family; drop {extra}")
        return BaselineSpec(name, REFERENCE, {}, [], "once", None)
    if entry["class"] in FIXED_BASELINES:
        extra = sorted(set(entry) - {"name", "class", "kwargs"})
        if extra:
            raise ConfigError(f"{where}: {entry['class']} has no learning rate to tune; drop {extra}")
        return BaselineSpec(name, entry["class"], kwargs, [], "none", None)
    if "lr" in kwargs:
        raise ConfigError(
            f"{where}.kwargs.lr: the rate is tuned from lr_grid; use lr_grid = [{kwargs['lr']}]"
        )
    grid = entry.get("lr_grid", [0.001, 0.01, 0.1, 1.0])
    grid = check_real_list(f"{where}.lr_grid", grid, positive=True, high=MAX_MAGNITUDE)
    tune = check_choice(f"{where}.tune", entry.get("tune", "per_k"), TUNE_MODES)
    tune_steps = entry.get("tune_steps")
    if tune_steps is not None:
        tune_steps = check_positive_int(f"{where}.tune_steps", tune_steps)
    return BaselineSpec(name, entry["class"], kwargs, grid, tune, tune_steps)


@dataclass
class Experiment:
    """A preset, checked and built: families, learner and baseline specs, settings."""

    name: str
    description: str
    config: dict[str, Any]
    family: TaskFamily
    ood_families: dict[str, TaskFamily]
    train: TrainConfig
    evaluation: EvaluationConfig
    learners: list[LearnerSpec]
    baselines: list[BaselineSpec]

    @classmethod
    def from_config(cls, name: str, config: dict[str, Any]) -> Experiment:
        """Check every key and value of a preset (naming the first bad one) and build its families."""
        top = ("preset", "description", "data", "family", "train", "evaluation", "learners", "baselines")
        check_keys("", config, top, required=("family", "learners"))
        description = check_str("description", config.get("description", ""))
        check_str("preset", config.get("preset", name))
        data = check_keys("data", config.get("data", {}), ("root",))
        if "root" in data:
            check_str("data.root", data["root"])
        train_table = check_keys("train", config.get("train", {}), TRAIN_KEYS)
        evaluation = EvaluationConfig.from_dict(
            config.get("evaluation", {})
        )  # its messages name evaluation.KEY
        shared = asdict(_construct("train", TrainConfig, train_table))
        learners = [
            _learner_spec(i, e, train_table) for i, e in enumerate(_entries("learners", config["learners"]))
        ]
        baselines = [
            _baseline_spec(i, e) for i, e in enumerate(_entries("baselines", config.get("baselines", [])))
        ]
        names = [spec.name for spec in [*learners, *baselines]]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"learner and baseline names must be unique; repeated: {duplicates}")
        if not learners:
            raise ConfigError("the preset lists no [[learners]]")
        if sum(spec.is_reference for spec in baselines) > 1:
            raise ConfigError(f"at most one {REFERENCE} reference per preset")
        family, shifted = _families(config)
        _check_sizes(family, shifted, evaluation, learners)
        experiment = cls(
            name,
            description,
            copy.deepcopy(config),
            family,
            shifted,
            TrainConfig(**shared),
            evaluation,
            learners,
            baselines,
        )
        for spec in learners:
            spec.build(family)
        for spec in baselines:
            if spec.is_reference:
                reference = spec.reference(family)
                reference.check_state_size(
                    f"baselines.{spec.name}: evaluation.num_tasks", evaluation.num_tasks
                )
            else:
                spec.make(family)(1.0)
        return experiment

    @classmethod
    def from_preset(cls, name: str, overrides: Sequence[str] = ()) -> Experiment:
        """The experiment a preset (a name or a path to a TOML file) describes, with ``--set`` overrides."""
        return cls.from_config(*read_preset(name, overrides))
