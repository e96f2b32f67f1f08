import pytest
import torch

import amortized
from amortized.checkpoints import load_checkpoint, save_checkpoint
from amortized.errors import CheckpointError
from amortized.learners import InContext, LatentSGD, LearnedInit
from amortized.models import MLP


@pytest.mark.parametrize(
    "learner",
    [
        LearnedInit(MLP(2, 1, hidden=(8,)), inner_lr=0.05, learn_lr=True),
        LatentSGD(2, latent_dim=4, decoder_hidden=(8,)),
        InContext(2, 3, task="classification", width=16, depth=1, heads=2),
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
