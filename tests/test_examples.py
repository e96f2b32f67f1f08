"""The example scripts run (smoke runs at toy budgets)."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_generate_samples_example_prints_scores_for_each_generator():
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "generate_samples.py"), "--iterations", "4"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = run.stdout.strip().splitlines()
    assert [line.split(":")[0].strip() for line in lines] == ["FlowMatching", "GaussianMixtureFit"]
    assert all("energy distance" in line and "true-density NLL" in line for line in lines)


TINY_MODEL = '''
import torch
from torch import nn


def tiny():
    """A random convolutional embedder: 3 channels to 6 features."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
'''


IMAGES_PER_CLASS = 32


def test_extract_features_embeds_an_image_folder_for_the_embeddings_preset(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from amortized.config import Experiment

    generator = np.random.default_rng(0)
    for label, name in enumerate(["ant", "bee", "cat", "dog", "eel", "fox"]):
        (tmp_path / "images" / name).mkdir(parents=True)
        for index in range(IMAGES_PER_CLASS):
            pixels = (generator.random((20 + index % 4, 16, 3)) * 40 + 35 * label).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{index}.png")
    (tmp_path / "tiny_model.py").write_text(TINY_MODEL)
    torch.save({"encoder.weight": torch.zeros(6, 3)}, tmp_path / "bad.pt")  # not this model's
    command = [sys.executable, str(EXAMPLES / "extract_features.py"), str(tmp_path / "images")]
    command += [str(tmp_path / "out"), "--model", "tiny_model:tiny", "--size", "12", "--batch-size", "5"]
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=True, env=env, cwd=tmp_path
    )
    assert "amortized run embeddings --set family.path=" in run.stdout
    features = np.load(tmp_path / "out" / "features.npy")
    labels = np.load(tmp_path / "out" / "labels.npy")
    assert features.shape == (6 * IMAGES_PER_CLASS, 6) and features.dtype == np.float32
    assert np.isfinite(features).all()
    assert labels.tolist() == [label for label in range(6) for _ in range(IMAGES_PER_CLASS)]
    # Brighter classes give different embeddings: the random features still tell classes apart.
    means = np.stack([features[labels == label].mean(0) for label in range(6)])
    assert np.linalg.norm(means[0] - means[5]) > 0.1
    experiment = Experiment.from_preset(
        "embeddings",
        [
            f"family.path={tmp_path / 'out' / 'features.npy'}",
            f"family.labels_path={tmp_path / 'out' / 'labels.npy'}",
            "family.num_ways=2",
            "family.holdout_classes=2",
            "family.projection_dim=4",
            # A small folder: 2-way tasks of at most 2 * 32 examples, sizes the shipped preset exceeds.
            "train.num_train=48",
            "train.num_query=16",
            "evaluation.num_train=48",
            "evaluation.num_query=16",
            "evaluation.sizes=[8, 16, 32, 48]",
            "evaluation.cost_sizes=[16, 32, 48]",
        ],
    )
    assert experiment.family.input_dim == 4 and len(experiment.family.classes) == 4
    bad = subprocess.run(
        [*command[:-4], "--model", "tiny_model:tiny", "--weights", str(tmp_path / "bad.pt")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert bad.returncode != 0 and "lacks" in bad.stderr
