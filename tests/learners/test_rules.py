"""Update rules: frozen, validated specs that build the modules holding their weights."""

import dataclasses

import pytest

from amortized.errors import ConfigError
from amortized.learners import GradientStep, InContext, LearnedInit, LearnedUpdate, TransformerUpdate
from amortized.models import MLP, Linear


def test_the_default_is_the_recipe_that_keeps_improving():
    spec = TransformerUpdate()
    assert (spec.refinements, spec.scale_by_share, spec.momentum, spec.taper_refinements) == (
        8,
        True,
        True,
        True,
    )
    assert TransformerUpdate(refinements=1).momentum is False  # momentum follows refinements unless set
    assert spec.history == 0  # the ablation reading past values is off


def test_specs_are_frozen_plain_data():
    spec = TransformerUpdate(inputs=["gradients", "observations"], refinements=2)
    assert spec.inputs == ("observations", "gradients")  # canonical order, a tuple
    assert TransformerUpdate.from_value(spec.as_dict()) == spec
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.width = 8


def test_the_gradient_base_is_opt_in_and_not_for_in_context():
    assert not TransformerUpdate().gradient_base  # it helped on tanh networks, hurt on sinusoids
    learner = LearnedUpdate(MLP(2, 1, hidden=(32,)), rule={"gradient_base": True})
    assert learner.config["rule"]["gradient_base"]  # recorded, so checkpoints rebuild it
    with pytest.raises(ConfigError, match="InContext takes no gradient step"):
        InContext(2, rule={"gradient_base": True})


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"chunk_size": 0}, "chunk_size must be > 0"),
        ({"memory_tokens": -1}, "memory_tokens must be >= 0"),
        ({"width": 30, "heads": 4}, "divisible by heads"),
        ({"momentum": True, "refinements": 1}, "momentum needs refinements > 1"),
        ({"inputs": ["hessians"]}, "inputs must be a non-empty subset"),
        ({"inputs": ["newton"]}, "'newton' needs 'gradients' or 'observations' too"),
        ({"scale_by_share": 1}, "scale_by_share must be true or false"),
        ({"history": -1}, "history must be >= 0"),
        ({"history": 1.5}, "history must be an integer"),
        ({"history": True}, "history must be an integer"),
        ({"gradient_base": "yes"}, "gradient_base must be true or false"),
        ({"depht": 2}, r"unknown key\(s\) rule\.depht; valid: chunk_size, depth"),
    ],
)
def test_transformer_update_options_are_checked(options, match):
    with pytest.raises(ConfigError, match=match):
        TransformerUpdate.from_value(options)


@pytest.mark.parametrize("inner_lr", [0, -1.0, float("inf"), float("nan"), 1e7, "0.1", True])
def test_gradient_step_needs_a_finite_positive_step(inner_lr):
    with pytest.raises(ConfigError, match="inner_lr"):
        GradientStep(inner_lr=inner_lr)


def test_learners_take_their_own_kind_of_rule_and_record_it_resolved():
    learner = LearnedUpdate(Linear(2), rule={"width": 16, "depth": 1, "heads": 2})
    assert learner.config["rule"] == TransformerUpdate(width=16, depth=1, heads=2).for_size(3).as_dict()
    assert learner.config["rule"]["inputs"] == ["observations", "gradients", "newton"]
    larger = LearnedUpdate(Linear(64), rule={"width": 16, "depth": 1, "heads": 2})
    assert larger.config["rule"]["inputs"] == ["observations", "gradients"]  # 65 > NEWTON_DEFAULT_SIZE
    assert LearnedInit(Linear(2)).config["rule"] == {
        "inner_lr": 0.01,
        "learn_lr": False,
        "first_order": False,
    }
    with pytest.raises(ConfigError, match="rule must be a TransformerUpdate"):
        LearnedUpdate(Linear(2), rule=GradientStep())
