"""Embed an image folder with a model you already have, for the ``embeddings`` preset.

The folder holds one sub-folder per class (``root/cat/001.jpg``, torchvision's ImageFolder layout).
Images are resized (shorter side), centre-cropped, normalised with ImageNet's statistics and
embedded in batches; the features and labels are written as two ``.npy`` files, filled in place, so
memory stays bounded by one batch however many images there are::

    python examples/extract_features.py IMAGES OUT_DIR --model timm:vit_small_patch14_dinov2.lvd142m \\
        --weights dinov2_vits14.pth
    amortized run embeddings --set family.path=OUT_DIR/features.npy \\
        --set family.labels_path=OUT_DIR/labels.npy

``--model`` names the network: ``timm:NAME`` (``timm.create_model`` without its classifier),
``torchvision:NAME`` (``torchvision.models.get_model`` with its classifier replaced by the identity)
or ``package.module:function``, a function of no arguments returning a module whose output is the
features. Nothing is downloaded: weights come from ``--weights`` (a state dict, loaded with
``weights_only=True``) or are whatever the model is built with. ``OUT_DIR/classes.json`` lists the
class names in label order.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEADS = ("fc", "head", "heads", "classifier")


def image_files(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """Every image under ``root``'s class folders, its label, and the class names (sorted)."""
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    if not classes:
        raise SystemExit(f"{root} has no class sub-folders (expected root/CLASS/IMAGE)")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in EXTENSIONS)
        files += found
        labels += [label] * len(found)
    if not files:
        raise SystemExit(f"no images ({', '.join(EXTENSIONS)}) under {root}")
    return files, labels, classes


def load_model(spec: str, weights: Path | None) -> nn.Module:
    """The network ``spec`` names, with ``weights`` loaded, its classifier removed, in eval mode."""
    source, _, name = spec.partition(":")
    if not name:
        raise SystemExit(f"--model must be timm:NAME, torchvision:NAME or module:function, got {spec!r}")
    module = {"timm": "timm", "torchvision": "torchvision.models"}.get(source, source)
    try:
        library = importlib.import_module(module)
    except ImportError as error:
        raise SystemExit(f"--model {spec}: cannot import {module} ({error})") from None
    if source == "timm":
        model = library.create_model(name, pretrained=False, num_classes=0)
    elif source == "torchvision":
        model = library.get_model(name, weights=None)
    else:
        model = getattr(library, name)()
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        missing, _ = model.load_state_dict(state, strict=False)
        if missing:
            raise SystemExit(f"{weights} lacks {len(missing)} of the model's weights, e.g. {missing[:3]}")
    if source == "torchvision":
        for head in HEADS:
            if hasattr(model, head):
                setattr(model, head, nn.Identity())
                break
    return model.eval()


def load_image(path: Path, size: int) -> torch.Tensor:
    """``[3, size, size]``: RGB, shorter side resized to ``size``, centre-cropped, normalised."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = size / min(image.size)
        width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
        image = image.resize((width, height), Image.Resampling.BICUBIC)
        left, top = (width - size) // 2, (height - size) // 2
        image = image.crop((left, top, left + size, top + size))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (pixels - mean) / std


@torch.no_grad()
def extract(
    root: Path, out_dir: Path, model: nn.Module, size: int = 224, batch_size: int = 64
) -> tuple[Path, Path]:
    """Write ``features.npy`` ``[images, d]`` (float32), ``labels.npy`` and ``classes.json``."""
    files, labels, classes = image_files(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    features = None
    for start in range(0, len(files), batch_size):
        batch = torch.stack([load_image(path, size) for path in files[start : start + batch_size]])
        embedded = model(batch).flatten(1).float().numpy()
        if features is None:
            shape = (len(files), embedded.shape[1])
            features = np.lib.format.open_memmap(out_dir / "features.npy", "w+", np.float32, shape)
        features[start : start + len(embedded)] = embedded
    features.flush()
    np.save(out_dir / "labels.npy", np.asarray(labels, dtype=np.int64))
    (out_dir / "classes.json").write_text(json.dumps(classes, indent=1))
    return out_dir / "features.npy", out_dir / "labels.npy"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", type=Path, help="folder with one sub-folder of images per class")
    parser.add_argument("out_dir", type=Path, help="where features.npy, labels.npy, classes.json go")
    parser.add_argument("--model", required=True, help="timm:NAME, torchvision:NAME or module:function")
    parser.add_argument("--weights", type=Path, help="a state dict for the model (no download)")
    parser.add_argument("--size", type=int, default=224, help="image side after resizing and cropping")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    model = load_model(args.model, args.weights)
    features, labels = extract(args.images, args.out_dir, model, args.size, args.batch_size)
    print(f"wrote {features} and {labels}; train with:")
    print(f"  amortized run embeddings --set family.path={features} --set family.labels_path={labels}")


if __name__ == "__main__":
    main()
