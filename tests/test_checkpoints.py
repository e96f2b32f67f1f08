import re

import numpy as np
import pytest
import torch

import amortized
from amortized.checkpoints import checkpoint_identity, load_checkpoint, previous_path, save_checkpoint
from amortized.errors import CheckpointError
from amortized.learners import InContext, LatentSGD, LearnedInit, LearnedUpdate
from amortized.models import MLP, Linear
from amortized.tasks import LinearRegression

TINY = {"width": 16, "depth": 1, "heads": 2}


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
    learner = InContext(2, linear_head=False, ridge_features=None, rule={**rule, "taper_refinements": False})
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


def perturbed(learner):
    """``learner`` with random weights, so each tensor's bytes are unique in its checkpoint file."""
    with torch.no_grad():
        for parameter in learner.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return learner


def tiny(**options):
    return perturbed(LatentSGD(2, latent_dim=4, decoder_hidden=(8,), **options))


def flip_a_bit(path, tensor):
    """Flip one bit of ``tensor``'s bytes where the checkpoint file at ``path`` holds them."""
    data = bytearray(path.read_bytes())
    at = data.find(tensor.detach().numpy().tobytes())
    assert at >= 0
    data[at + 1] ^= 0x04
    path.write_bytes(bytes(data))


def assert_same_weights(learner, other):
    for a, b in zip(learner.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_flipped_bit_in_the_weights_is_a_one_line_error_naming_the_file(tmp_path):
    learner, path = tiny(), tmp_path / "learner.pt"
    amortized.save(learner, path)
    assert len(torch.load(path, weights_only=True)["sha256"]) == 64
    flip_a_bit(path, learner.state_dict()["representation.decoder.layers.0.weight"])
    with pytest.raises(CheckpointError, match="does not match its sha256 digest") as caught:
        amortized.load(path)
    assert str(caught.value) == f"{path} is damaged: its content does not match its sha256 digest"


def test_numpy_integers_are_accepted_and_saved_as_plain_numbers(tmp_path):
    learner = LatentSGD(np.int64(2), latent_dim=np.int64(4), decoder_hidden=[np.int64(8)])
    amortized.save(learner, tmp_path / "learner.pt")
    config = amortized.load(tmp_path / "learner.pt").config
    assert config == learner.config and type(config["input_dim"]) is int
    assert type(config["decoder_hidden"][0]) is int


def test_nan_weights_are_refused_on_load_even_with_a_matching_digest(tmp_path):
    learner, path = tiny(), tmp_path / "learner.pt"
    with torch.no_grad():
        learner.representation.z0[1] = float("nan")
    amortized.save(learner, path)
    with pytest.raises(CheckpointError, match=r"damaged: its weight representation\.z0 holds NaN"):
        amortized.load(path)


def test_a_wrong_or_missing_digest_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"iteration": 1})
    payload = torch.load(path, weights_only=True)
    assert load_checkpoint(path) == {"format": "amortized-checkpoint", "version": 2, "iteration": 1}
    for changed in ({"iteration": 2}, {"iteration": 2, "version": 1}):
        torch.save({**payload, **changed}, path)
        with pytest.raises(CheckpointError, match="does not match its sha256 digest"):
            load_checkpoint(path, fallback=False)
    del payload["sha256"]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="does not match its sha256 digest"):
        load_checkpoint(path, fallback=False)


def test_checkpoints_without_a_digest_still_load(tmp_path):
    learner = tiny()
    old = {"format": "amortized-checkpoint", "version": 1}
    torch.save({**old, "learner": learner.describe(), "weights": learner.state_dict()}, tmp_path / "old.pt")
    assert_same_weights(learner, amortized.load(tmp_path / "old.pt"))


def test_a_damaged_checkpoint_falls_back_to_the_previous_one_of_the_same_learner(tmp_path):
    first, second, path = tiny(), tiny(), tmp_path / "learner.pt"
    amortized.save(first, path)
    amortized.save(second, path)
    flip_a_bit(path, second.state_dict()["representation.decoder.layers.0.weight"])
    with pytest.warns(
        UserWarning,
        match=f"does not match its sha256 digest; using {re.escape(str(path))}.prev, the previous",
    ):
        assert_same_weights(first, amortized.load(path))
    with pytest.raises(CheckpointError, match=r"does not match its sha256 digest$"):
        load_checkpoint(path, fallback=False)


@pytest.mark.parametrize(
    "other",
    [
        lambda: InContext(2, 3, task="classification", rule={"width": 16, "depth": 1, "heads": 2}),
        lambda: tiny(seed=1),
    ],
    ids=["another class", "another config"],
)
def test_the_previous_checkpoint_of_another_learner_is_never_used(tmp_path, other):
    learner, path = tiny(), tmp_path / "learner.pt"
    amortized.save(other(), path)
    amortized.save(learner, path)
    intact = path.read_bytes()
    flip_a_bit(path, learner.state_dict()["representation.decoder.layers.0.weight"])
    with pytest.raises(
        CheckpointError, match=f"{re.escape(str(path))}.prev holds another learner or run, so it is not used$"
    ):
        amortized.load(path)
    path.write_bytes(intact[: len(intact) // 2])
    with pytest.raises(
        CheckpointError, match=r"not a readable.*nothing says it holds the same learner"
    ) as caught:
        amortized.load(path)
    assert "\n" not in str(caught.value) and "rename it to learner.pt" in str(caught.value)


def test_a_truncated_or_missing_checkpoint_falls_back_when_the_caller_names_what_it_expects(tmp_path):
    path = tmp_path / "checkpoint.pt"
    run = {"learner": {"class": "SGD", "config": {}}, "train_config": {"seed": 0}, "family": "Tasks()"}
    save_checkpoint(path, {**run, "iteration": 1})
    save_checkpoint(path, {**run, "iteration": 2})
    assert load_checkpoint(path)["iteration"] == 2
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"not a readable.*is not used in its place"):
        load_checkpoint(path)
    with pytest.warns(UserWarning, match=f"not a readable.*; using {re.escape(str(path))}.prev"):
        assert load_checkpoint(path, identity=checkpoint_identity(run))["iteration"] == 1
    another_run = checkpoint_identity({**run, "train_config": {"seed": 1}})
    with pytest.raises(CheckpointError, match="holds another learner or run"):
        load_checkpoint(path, identity=another_run)
    with pytest.raises(CheckpointError, match=r"not a readable[^;]*$"):
        load_checkpoint(path, fallback=False, identity=checkpoint_identity(run))
    path.unlink()
    with pytest.warns(
        UserWarning, match=f"no checkpoint at {re.escape(str(path))}; using {re.escape(str(path))}.prev"
    ):
        assert load_checkpoint(path, identity=checkpoint_identity(run))["iteration"] == 1


def test_training_resumes_from_the_previous_checkpoint_of_the_same_run_when_the_last_is_damaged(tmp_path):
    family = LinearRegression(dim=2, noise=0.1)
    options = dict(tasks_per_batch=2, batch_size=4, num_steps=2, eval_every=0, checkpoint_every=2, seed=3)
    straight = LearnedUpdate(Linear(2), rule=TINY)
    amortized.train(straight, family, iterations=4, **options)
    out = tmp_path / "run"
    amortized.train(LearnedUpdate(Linear(2), rule=TINY), family, iterations=4, out_dir=out, **options)
    checkpoint = out / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:-100])
    another_seed = options | {"seed": 4}
    with pytest.raises(CheckpointError, match="holds another learner or run"):
        amortized.train(
            LearnedUpdate(Linear(2), rule=TINY),
            family,
            iterations=4,
            out_dir=out,
            resume=True,
            **another_seed,
        )
    resumed = LearnedUpdate(Linear(2), rule=TINY)
    with pytest.warns(UserWarning, match="the previous checkpoint of the same learner"):
        result = amortized.train(resumed, family, iterations=4, out_dir=out, resume=True, **options)
    assert [record["iteration"] for record in result.history] == [1, 2, 3, 4]
    assert_same_weights(straight, resumed)


def test_saving_to_a_directory_is_refused(tmp_path):
    with pytest.raises(
        CheckpointError, match=f"^{re.escape(str(tmp_path))} is a directory; save to a file in it"
    ):
        amortized.save(tiny(), tmp_path)
    assert tmp_path.is_dir() and not previous_path(tmp_path).exists()


def test_a_huge_description_with_small_weights_fails_before_building_the_learner(tmp_path, monkeypatch):
    small = InContext(2, rule={"width": 16, "depth": 1, "heads": 2})
    description = small.describe()
    description["config"]["rule"] |= {"width": 4096, "depth": 8}
    save_checkpoint(tmp_path / "huge.pt", {"learner": description, "weights": small.state_dict()})
    build = InContext.__init__

    def only_on_meta(self, *args, **kwargs):
        assert torch.get_default_device().type == "meta", "the learner was built in memory"
        build(self, *args, **kwargs)

    monkeypatch.setattr(InContext, "__init__", only_on_meta)
    with pytest.raises(
        CheckpointError,
        match=r"weights do not match the learner's config \(missing weight transformer\.blocks\.1\.",
    ) as caught:
        amortized.load(tmp_path / "huge.pt")
    assert re.search(r"and \d+ more; size mismatch for \S+: .*4096.* and \d+ more\)$", str(caught.value))
    assert "\n" not in str(caught.value)


def test_foreign_and_missing_files_are_clear_errors(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an amortized checkpoint"):
        amortized.load(foreign)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        amortized.load(tmp_path / "missing.pt")
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable") as caught:
        amortized.load(text)
    assert "\n" not in str(caught.value)


def test_checkpoint_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "amortized-checkpoint", "payload": Evil()}, path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert (
        str(caught.value)
        == f"{path} is not a readable amortized checkpoint (it would run code (print) when loaded)"
    )


def test_a_checkpoint_without_what_the_caller_reads_is_refused_by_name(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"weights": {}, "history": []})
    with pytest.raises(CheckpointError, match=r"lacks iteration, train_seconds: it is not the checkpoint"):
        load_checkpoint(path, keys=("weights", "iteration", "train_seconds"))
    assert load_checkpoint(path, keys=("weights",))["history"] == []


def test_the_bundled_learners_load_without_the_meta_build_and_give_the_same_weights(monkeypatch):
    from amortized.estimators import load_learner, pretrained_path
    from amortized.learners import LearnedUpdate

    checked = amortized.load(pretrained_path("classification"))
    build = LearnedUpdate.__init__

    def never_on_meta(self, *args, **kwargs):
        assert torch.get_default_device().type != "meta", "the bundled learner was built on the meta device"
        build(self, *args, **kwargs)

    monkeypatch.setattr(LearnedUpdate, "__init__", never_on_meta)
    bundled = load_learner(None, "classification")
    for (name, value), (_, expected) in zip(
        bundled.state_dict().items(), checked.state_dict().items(), strict=True
    ):
        assert torch.equal(value, expected), name
    with pytest.raises(AssertionError, match="meta device"):
        amortized.load(pretrained_path("classification"))  # the default, checked load builds on meta first
