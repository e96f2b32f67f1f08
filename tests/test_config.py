import inspect
import re
import sys
import typing

import numpy as np
import pytest
import torch

from amortized.config import Experiment
from amortized.errors import AmortizedError, ConfigError, DataError
from amortized.learners import InContext, LearnedInit, LearnedUpdate
from amortized.preset_files import (
    apply_overrides,
    dump_toml,
    list_presets,
    load_preset,
    parse_value,
    preset_directory,
    preset_names,
)
from amortized.tasks import LinearRegression

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

DATA_PRESETS = ("mnist", "fashion-mnist", "embeddings")


def tiny(*overrides):
    return Experiment.from_preset("tiny", list(overrides))


def test_presets_ship_inside_the_package_with_descriptions():
    assert preset_directory().parent.name == "amortized"
    names = preset_names()
    for required in (
        "quickstart",
        "tiny",
        "linear-regression",
        "sinusoid",
        "digits",
        "mnist",
        "fashion-mnist",
    ):
        assert required in names
    assert all(description for _, description in list_presets())


@pytest.mark.parametrize("name", [n for n in preset_names() if n not in DATA_PRESETS])
def test_every_preset_builds(name):
    """As shipped: every task a run samples, up to the cost curve's largest, fits the family's data."""
    experiment = Experiment.from_preset(name)
    assert experiment.learners and experiment.family.input_dim > 0
    for spec in experiment.learners:
        learner = spec.build(experiment.family)
        assert learner.input_dim == experiment.family.input_dim


@pytest.mark.parametrize(
    ("name", "option"),
    [("mnist", "data.root=DIR"), ("fashion-mnist", "data.root=DIR"), ("embeddings", "family.path=FILE")],
)
def test_file_based_presets_say_how_to_give_the_data(name, option, tmp_path):
    with pytest.raises(DataError, match=rf"--set {re.escape(option)}"):
        Experiment.from_preset(name)
    key = option.split("=")[0]
    with pytest.raises(DataError, match="does not exist"):
        Experiment.from_preset(name, [f"{key}={tmp_path / 'missing'}"])


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("evaluation.cost_sizes=[4096]", "evaluation.cost_tasks=8 with cost_sizes up to 4096"),
        ("evaluation.sizes=[8, 1024]", "evaluation: num_train=1024 and num_query=64"),
        ("train.num_train=1024", "learners.LearnedUpdate.train"),
    ],
)
def test_tasks_larger_than_a_datasets_classes_are_refused_before_training(override, named):
    with pytest.raises(DataError, match=rf"{re.escape(named)}.*: digits-train: .* hold only"):
        Experiment.from_preset("digits", [override])


def test_embeddings_hold_out_classes_and_read_a_second_file_out_of_distribution(tmp_path):
    generator = np.random.default_rng(0)
    # Enough examples per class for the preset's largest tasks (the cost curve's 2,048 points).
    imagenet = generator.normal(size=(9000, 24))
    np.savez(tmp_path / "imagenet.npz", features=imagenet, labels=np.arange(9000) % 20)
    np.save(tmp_path / "cifar.npy", generator.normal(size=(1000, 24)).astype(np.float32))
    np.save(tmp_path / "cifar-labels.npy", np.arange(1000) % 10)
    experiment = Experiment.from_preset(
        "embeddings",
        [
            f"family.path={tmp_path / 'imagenet.npz'}",
            f"evaluation.ood.cifar10.path={tmp_path / 'cifar.npy'}",
            f"evaluation.ood.cifar10.labels_path={tmp_path / 'cifar-labels.npy'}",
        ],
    )
    held_out, cifar = experiment.ood_families["held_out_classes"], experiment.ood_families["cifar10"]
    assert len(experiment.family.classes) == 10 and len(held_out.classes) == 10
    assert not set(held_out.classes) & set(experiment.family.classes)
    assert cifar.classes == tuple(range(10)) and cifar.input_dim == experiment.family.input_dim == 64
    assert cifar.sample(2, 8, 8, torch.Generator().manual_seed(0)).x_train.shape == (2, 8, 64)


def test_quickstart_covers_every_regime_one_shot_and_iterative_with_baselines_and_bayes():
    experiment = Experiment.from_preset("quickstart")
    learners = [spec.build(experiment.family) for spec in experiment.learners]
    assert {learner.regime for learner in learners} == {"parametric", "explicit", "implicit"}
    assert {spec.one_shot for spec in experiment.learners} == {True, False}
    assert {spec.cls for spec in experiment.baselines} == {"SGD", "Adam", "BayesLinearRegression"}


def test_learners_are_built_with_widths_from_the_family_and_per_learner_training():
    experiment = tiny("family.dim=3")
    learners = {spec.name: spec for spec in experiment.learners}
    update = learners["LearnedUpdate"].build(experiment.family)
    assert isinstance(update, LearnedUpdate) and update.representation.model.input_dim == 3
    maml = learners["MAML"]
    assert isinstance(maml.build(experiment.family), LearnedInit)
    assert (maml.train.objective, maml.train.num_steps, maml.train.iterations) == ("full", 2, 20)
    one_shot = learners["InContext-one-shot"]
    assert isinstance(one_shot.build(experiment.family), InContext)
    assert one_shot.one_shot and one_shot.train.num_steps == 1 and one_shot.train.batch_size == 16


def test_overrides_reach_tables_and_named_learners():
    experiment = tiny(
        "train.iterations=7",
        "family.noise=0.3",
        "evaluation.steps=[1, 3]",
        "learners.LearnedUpdate.train.lr=0.01",
        "learners.LearnedUpdate.kwargs.rule.width=8",
        "baselines.SGD.lr_grid=[0.5]",
    )
    assert experiment.train.iterations == 7 and experiment.family.noise == 0.3
    assert experiment.evaluation.steps == [1, 3]
    update = experiment.learners[0]
    assert update.train.lr == 0.01 and update.train.iterations == 7 and update.kwargs["rule"]["width"] == 8
    assert experiment.baselines[0].lr_grid == [0.5]
    assert experiment.config["train"]["iterations"] == 7


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("train.iterationz=3", r"unknown key\(s\) train\.iterationz; valid: .*iterations"),
        ("train.iterations=abc", r"train: iterations must be an integer, got str 'abc'"),
        ("train.lr=fast", r"train: lr must be a finite number, got str 'fast'"),
        ("train.num_steps=[1, 2, 3]", r"train: num_steps range must be \(low, high\)"),
        ("family.noise=loud", r"family: noise must be a finite number, got str 'loud'"),
        ("family.colour=red", r"unknown key\(s\) family\.colour; valid: .*noise"),
        ("family.class=Spiral", r"unknown task family 'Spiral'.*valid: .*LinearRegression"),
        ("evaluation.steps=4", r"evaluation\.steps must be a non-empty list of positive integers, got 4"),
        (
            "learners.LearnedUpdate.kwargs.rule.width=wide",
            r"learners\.LearnedUpdate: rule\.width must be an integer, got str 'wide'",
        ),
        ("learners.LearnedUpdate.kwargs.depht=2", r"learners\.LearnedUpdate\.kwargs\.depht; valid: .*rule"),
        (
            "learners.LearnedUpdate.kwargs.rule.depht=2",
            r"learners\.LearnedUpdate: unknown key\(s\) rule\.depht; valid: .*depth",
        ),
        ("learners.LearnedUpdate.class=Oracle", r"unknown learner class 'Oracle'.*valid: .*InContext"),
        ("learners.LearnedUpdate.one_shot=yes", r"learners\.LearnedUpdate\.one_shot must be true or false"),
        ("learners.Oracle.train.lr=1", r"no learner named 'Oracle'; valid: LearnedUpdate, MAML"),
        ("learners.MAML.train.objective=magic", r"unknown objective 'magic'"),
        ("baselines.SGD.kwargs.lr=0.1", r"tuned from lr_grid"),
        (
            "baselines.SGD.tune=sometimes",
            r"unknown baselines\.SGD\.tune 'sometimes'; choose one of 'per_k', 'once'",
        ),
        ("baselines.Bayes.lr_grid=[1.0]", r"takes its options from the family"),
        (
            "baselines.SGD.lr_grid=[0.1, inf]",
            r"SGD\.lr_grid must be a finite number, got float inf",
        ),
        ("baselines.SGD.lr_grid=[nan]", r"baselines\.SGD\.lr_grid must be a finite number, got float nan"),
        ("baselines.SGD.lr_grid=[1e30]", r"baselines\.SGD\.lr_grid must be <= 1e\+06, got 1e\+30"),
        ("train.seed=9223372036854775808", r"train: seed must be < 2\*\*63"),
        ("train.seed=-1", r"train: seed must be >= 0"),
        ("train.lr=inf", r"train: lr must be a finite number"),
        ("family.class=Sinusoid", r"unknown key\(s\) family\.dim"),
        ("seed=3", r"unknown key 'seed'.*valid: preset, description, data, family"),
        ("train", r"--set expects key=value"),
        ("train..lr=1", r"--set expects key=value"),
    ],
)
def test_mistakes_name_the_key_and_list_valid_choices(override, match):
    with pytest.raises(ConfigError, match=match):
        tiny(override)


def test_bayes_reference_needs_a_linear_regression_family():
    config = load_preset("tiny")[1]
    config["family"] = {"class": "Sinusoid"}
    with pytest.raises(ConfigError, match="Bayes reference only for LinearRegression"):
        Experiment.from_config("tiny", config)


def test_unknown_preset_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown preset 'quickstrat'; valid presets: .*quickstart"):
        load_preset("quickstrat")
    with pytest.raises(ConfigError, match="does not exist"):
        load_preset(str(tmp_path / "mine.toml"))
    broken = tmp_path / "broken.toml"
    broken.write_text("[family\nclass = 1")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_preset(str(broken))


def test_a_preset_can_be_a_toml_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(dump_toml(load_preset("tiny")[1]))
    experiment = Experiment.from_preset(str(path), ["family.dim=4"])
    assert experiment.name == "mine" and experiment.family.input_dim == 4


def test_held_out_classes_become_the_out_of_distribution_family():
    experiment = Experiment.from_preset("digits")
    held_out = experiment.ood_families["held_out_classes"]
    assert len(held_out.classes) == 4 and not set(held_out.classes) & set(experiment.family.classes)
    config = load_preset("tiny")[1]
    config["family"]["holdout_classes"] = 2
    with pytest.raises(ConfigError, match="holdout_classes applies to labelled data sets"):
        Experiment.from_config("tiny", config)


def test_out_of_distribution_overrides_build_shifted_families():
    experiment = tiny()
    shifted = experiment.ood_families["noisier"]
    assert isinstance(shifted, LinearRegression) and shifted.noise == 0.5 and shifted.dim == 2


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("1e-3", 1e-3),
        ("true", True),
        ("[1, 16]", [1, 16]),
        ('"x y"', "x y"),
        ("/data/mnist", "/data/mnist"),
    ],
)
def test_override_values_are_toml_or_bare_strings(text, value):
    assert parse_value(text) == value


def test_dump_toml_round_trips():
    data = {
        "description": 'quote " and \\ and ünïcode',
        "seed": 3,
        "rate": 1e-3,
        "flag": False,
        "steps": [1, 2],
        "family": {"class": "LinearRegression", "dim": 2},
        "evaluation": {"ood": {"needs quotes": {"noise": 0.5}}},
        "learners": [{"name": "a", "kwargs": {"model": {"kind": "mlp", "hidden": [4]}}}, {"name": "b"}],
    }
    assert tomllib.loads(dump_toml(data)) == data
    preset = load_preset("quickstart")[1]
    assert tomllib.loads(dump_toml(preset)) == preset


def test_apply_overrides_does_not_touch_the_original():
    config = load_preset("tiny")[1]
    apply_overrides(config, ["train.iterations=1", "learners.MAML.kwargs.rule.inner_lr=0.5"])
    assert config["train"]["iterations"] == 20 and config["learners"][1]["kwargs"]["rule"]["inner_lr"] == 0.1


class _Unknown:
    """A value of no type any option takes."""

    def __repr__(self) -> str:
        return "Unknown()"


def _wrong_values(hint: object) -> list[object]:
    """Values of a type an option annotated ``hint`` does not take."""
    text = str(hint)
    wrong: list[object] = [_Unknown()]
    if "str" not in text:
        wrong.append("zzz")
    if "float" not in text and ("int" in text or "bool" in text):
        wrong.append(2.5)
    if text == "<class 'bool'>":
        wrong.append(1)
    if "int" in text and "bool" not in text:
        wrong.append(True)
    return wrong


DATA_FAMILIES = ("Digits", "MNIST1D", "MNIST", "FashionMNIST", "FeaturesFile", "NPZDataset", "IDXDataset")
"""Families read from files or generated at length: their file options are tested with the loaders."""
REQUIRED = {"input_dim": 2, "dim": 2, "lr": 0.1, "noise": 0.5, "output_dim": 1}
"""Values for the positional arguments a preset fills in from the family."""


def _presettable():
    """(constructor, its required arguments, an option, a value of the wrong type for it)."""
    from amortized.config import FAMILIES, PREDICTORS
    from amortized.learners import Learner
    from amortized.learners.rules import GradientStep, TransformerUpdate
    from amortized.models import Linear

    factories = [family for name, family in FAMILIES.items() if name not in DATA_FAMILIES]
    factories += [*PREDICTORS.values(), *Learner.registry.values(), TransformerUpdate, GradientStep]
    for factory in factories:
        parameters = inspect.signature(factory).parameters
        hints = typing.get_type_hints(factory.__init__)
        needed = {
            name: REQUIRED[name]
            for name, parameter in parameters.items()
            if name in REQUIRED and parameter.default is parameter.empty
        }
        if "model" in parameters:
            needed["model"] = Linear(2)
        for name, parameter in parameters.items():
            if name in needed or name == "seed" or parameter.default is parameter.empty or name not in hints:
                continue
            for value in _wrong_values(hints[name]):
                yield pytest.param(factory, needed, name, value, id=f"{factory.__name__}.{name}={value!r}")


@pytest.mark.parametrize(("factory", "needed", "name", "value"), list(_presettable()))
def test_every_presettable_option_is_checked_by_its_own_constructor(factory, needed, name, value):
    """What a preset can name refuses a value of the wrong type itself, with the library's error
    naming the option: presets need no type checker of their own."""
    with pytest.raises(AmortizedError, match=re.escape(name)):
        factory(**needed, **{name: value})


def test_paths_and_held_out_classes_of_the_wrong_type_are_named():
    from amortized.tasks import FeaturesFile
    from amortized.tasks.datasets import IDXDataset

    with pytest.raises(ConfigError, match="path must be a path"):
        FeaturesFile(3)
    with pytest.raises(ConfigError, match="labels_path must be a path"):
        FeaturesFile("features.npy", labels_path=3)
    with pytest.raises(ConfigError, match="root must be a path"):
        IDXDataset(3)
    with pytest.raises(ConfigError, match="preset must be a string"):
        tiny("preset=3")
    config = load_preset("tiny")[1]
    config["family"] = {"class": "Digits", "holdout_classes": 2.5}
    with pytest.raises(ConfigError, match=r"^family: .*holdout_classes"):
        Experiment.from_config("tiny", config)
