import pytest
import torch

import amortized
from amortized.checkpoints import load_checkpoint, save_checkpoint
from amortized.errors import CheckpointError
from amortized.learners import InContext, LatentSGD, LearnedInit, LearnedUpdate
from amortized.models import MLP, Linear


@pytest.mark.parametrize(
    "learner",
    [
        LearnedInit(MLP(2, 1, hidden=(8,)), rule={"inner_lr": 0.05, "learn_lr": True}),
        LatentSGD(2, latent_dim=4, decoder_hidden=(8,)),
        InContext(2, 3, task="classification", rule={"width": 16, "depth": 1, "heads": 2}),
    ],
    ids=lambda learner: type(learner).__name__,
)
def test_save_and_load_rebuild_the_same_learner(tmp_path, learner):
    with torch.no_grad():
        for parameter in learner.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    amortized.save(learner, tmp_path / "learner.pt")
    loaded = amortized.load(tmp_path / "learner.pt")
    assert type(loaded) is type(learner) and loaded.config == learner.config
    for a, b in zip(learner.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("learner", "legacy_top"),
    [
        (
            LearnedUpdate(Linear(2), rule={"width": 16, "depth": 1, "heads": 2, "memory_tokens": 2}),
            ("theta0",),
        ),
        (LatentSGD(2, latent_dim=4, decoder_hidden=(8,)), ("z0", "decoder")),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, tuple) else "",
)
def test_checkpoints_from_before_rules_were_composed_still_load(tmp_path, learner, legacy_top):
    """Checkpoints used to list the rule's options flat and keep every weight at the top level."""
    with torch.no_grad():
        for parameter in learner.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    description = learner.describe()
    flat_config = {**description["config"], **description["config"]["rule"]}
    del flat_config["rule"]
    flat_weights = {
        name.removeprefix("representation.").removeprefix("rule."): value
        for name, value in learner.state_dict().items()
    }
    assert any(name.startswith(legacy_top) for name in flat_weights)
    legacy = {"learner": {"class": description["class"], "config": flat_config}, "weights": flat_weights}
    save_checkpoint(tmp_path / "old.pt", legacy)
    loaded = amortized.load(tmp_path / "old.pt")
    assert loaded.config == learner.config
    x, y = torch.randn(2, 6, 2), torch.randn(2, 6, 1)
    adapted = [
        amortized.adapt(model, x, y, batch_size=3, generator=torch.Generator().manual_seed(0))
        for model in (learner, loaded)
    ]
    torch.testing.assert_close(loaded.predict(adapted[1], x), learner.predict(adapted[0], x), rtol=0, atol=0)


def test_in_context_checkpoints_from_before_its_rule_and_linear_head_still_load(tmp_path):
    rule = {"width": 16, "depth": 1, "heads": 2, "memory_tokens": 2, "refinements": 1}
    learner = InContext(2, linear_head=False, rule={**rule, "taper_refinements": False})
    with torch.no_grad():
        for parameter in learner.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    old_config = {"input_dim": 2, "output_dim": 1, "task": "regression", "seed": 0, "scale_by_share": True}
    old_config.update(width=16, depth=1, heads=2, memory_tokens=2)
    legacy = {"learner": {"class": "InContext", "config": old_config}, "weights": learner.state_dict()}
    save_checkpoint(tmp_path / "old.pt", legacy)
    loaded = amortized.load(tmp_path / "old.pt")
    assert loaded.config == learner.config and not loaded.linear_head
    x, y, query = torch.randn(2, 6, 2), torch.randn(2, 6, 1), torch.randn(2, 3, 2)
    predictions = [
        model.predict(amortized.adapt(model, x, y, batch_size=3, query_x=query, generator=torch.Generator()))
        for model in (learner, loaded)
    ]
    torch.testing.assert_close(predictions[0], predictions[1], rtol=0, atol=0)


def test_corrupt_checkpoint_falls_back_to_the_previous_good_one(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"iteration": 1})
    save_checkpoint(path, {"iteration": 2})
    assert load_checkpoint(path)["iteration"] == 2
    path.write_bytes(path.read_bytes()[:20])
    assert load_checkpoint(path)["iteration"] == 1
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(path, fallback=False)


def test_foreign_and_missing_files_are_clear_errors(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an amortized checkpoint"):
        amortized.load(foreign)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        amortized.load(tmp_path / "missing.pt")
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable"):
        amortized.load(text)


def test_checkpoint_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "amortized-checkpoint", "payload": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
