"""Labelled data sets as N-way classification tasks: each task relabels N random classes 0..N-1.

Sources: scikit-learn's digits, procedurally generated MNIST-1D, IDX files (MNIST, Fashion-MNIST)
and ``.npz`` archives. Nothing here downloads; file loaders read what is already on disk.
"""

from __future__ import annotations

import gzip
import math
import operator
import os
import random
import struct
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

from amortized.errors import ConfigError, DataError, DTypeError, NonFiniteError, ShapeError
from amortized.memory import check_memory
from amortized.tasks.base import TaskBatch, TaskFamily
from amortized.validation import check_choice, check_positive_int, check_seed

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

# IDX type codes (third byte of the magic number) and their big-endian numpy dtypes.
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _check_arrays(features: object, labels: object) -> tuple[Tensor, np.ndarray]:
    """Features as a float tensor ``[n, d]`` (all finite) and labels as int64 ``[n]``."""
    x = features if isinstance(features, Tensor) else torch.as_tensor(np.asarray(features))
    x = x.detach().cpu()
    if x.dim() != 2:
        raise ShapeError(f"features must have shape [examples, features], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise DTypeError(f"features must be floating point, got {x.dtype}; convert them to float")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ShapeError(f"features is empty: shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise NonFiniteError("features contains NaN or infinity")
    y = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if y.ndim != 1 or len(y) != x.shape[0]:
        raise ShapeError(
            f"labels must have shape [examples] = [{x.shape[0]}] to match the features, got {tuple(y.shape)}"
        )
    if y.dtype.kind not in "iu":
        raise DTypeError(f"labels must be integer class ids, got dtype {y.dtype}")
    return (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x), y.astype(np.int64)


def _check_classes(labels: np.ndarray, classes: Sequence[int] | None, num_ways: int) -> list[int]:
    """The family's class ids, sorted: each occurs in ``labels``, and at least ``num_ways``."""
    check_positive_int("num_ways", num_ways)
    if num_ways < 2:
        raise ConfigError(f"num_ways must be >= 2, got {num_ways}")
    present = np.unique(labels).tolist()
    if classes is None:
        chosen = present
    else:
        chosen = _class_ids("classes", classes)
        missing = sorted(set(chosen) - set(present))
        if missing:
            raise ConfigError(f"classes {missing} do not occur in the labels; present: {present}")
    if len(chosen) < num_ways:
        raise ConfigError(
            f"num_ways={num_ways} needs at least {num_ways} classes, but only {len(chosen)} are "
            f"available: {chosen}"
        )
    return chosen


def _class_ids(name: str, values: Sequence[int]) -> list[int]:
    """Distinct integer class ids, sorted."""
    try:
        ids = [operator.index(v) for v in values]
    except TypeError as error:
        raise ConfigError(f"{name} must be a sequence of integer class ids, got {values!r}") from error
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{name} holds duplicate class ids: {ids}")
    return sorted(ids)


def _standardise(x: Tensor) -> Tensor:
    """Zero mean and unit std per feature; constant features are only centred.

    A feature counts as constant when its std is within rounding error of its magnitude, so
    float noise in a constant column is not blown up to unit scale.
    """
    std, mean = torch.std_mean(x, dim=0, correction=0)
    tolerance = 100 * torch.finfo(x.dtype).eps * x.abs().amax(dim=0)
    return (x - mean) / torch.where(std > tolerance, std, torch.ones_like(std))


def _project(x: Tensor, projection_dim: int | None, seed: int) -> Tensor:
    """Multiply by a fixed Gaussian matrix scaled 1/sqrt(d): unit-scale inputs stay unit scale."""
    if projection_dim is None:
        return x
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(x.shape[1], projection_dim, generator=generator, dtype=x.dtype)
    return x @ (weights / math.sqrt(x.shape[1]))


class LabelledDataset(TaskFamily):
    """N-way classification tasks cut from a labelled data set.

    Each task draws ``num_ways`` distinct classes from ``classes`` (all classes when ``None``),
    maps them in random order to labels ``0..num_ways-1``, and draws its train and query points
    without replacement from the pooled examples of those classes. Inputs are standardised per
    feature over the whole ``features`` array, then optionally projected to ``projection_dim``
    with a fixed Gaussian matrix drawn from ``seed``. ``params["classes"]`` ``[tasks, num_ways]``
    holds the original class id of each label.
    """

    def __init__(
        self,
        features: np.ndarray | Tensor,
        labels: np.ndarray | Tensor,
        num_ways: int,
        classes: Sequence[int] | None = None,
        projection_dim: int | None = None,
        seed: int = 0,
        name: str = "dataset",
    ) -> None:
        x, y = _check_arrays(features, labels)
        chosen = _check_classes(y, classes, num_ways)
        if projection_dim is not None:
            check_positive_int("projection_dim", projection_dim)
        self.name = name
        self.projection_dim = projection_dim
        self.seed = check_seed("seed", seed)
        self._setup(_project(_standardise(x), projection_dim, seed).float(), y, num_ways, chosen)

    def _setup(self, features: Tensor, labels: np.ndarray, num_ways: int, classes: list[int]) -> None:
        """Index the examples of ``classes`` by class, so a task's pool is a few contiguous runs."""
        self.num_ways = self.num_classes = num_ways
        self.classes = tuple(classes)
        self.input_dim, self.output_dim = features.shape[1], num_ways
        self._features, self._labels = features, labels
        class_ids = np.asarray(classes, dtype=np.int64)
        members = np.flatnonzero(np.isin(labels, class_ids))
        family_index = np.searchsorted(class_ids, labels[members])
        counts = np.bincount(family_index, minlength=len(classes))
        self._class_ids = torch.from_numpy(class_ids)
        self._order = torch.from_numpy(members[np.argsort(family_index, kind="stable")])
        self._counts = torch.from_numpy(counts)
        self._starts = self._counts.cumsum(0) - self._counts

    def _subset(self, classes: list[int], name: str) -> LabelledDataset:
        """A family over ``classes`` sharing this one's standardised, projected features."""
        family = type(self).__new__(type(self))
        family.name, family.projection_dim, family.seed = name, self.projection_dim, self.seed
        family._setup(self._features, self._labels, self.num_ways, classes)
        return family

    def split(
        self, holdout_classes: int | Sequence[int], seed: int = 0
    ) -> tuple[LabelledDataset, LabelledDataset]:
        """Split the classes into a training family and a held-out (out-of-distribution) family.

        ``holdout_classes`` is a number of classes, drawn at random from ``seed``, or the class
        ids themselves. Both families keep this one's standardisation and projection.
        """
        if isinstance(holdout_classes, int) and not isinstance(holdout_classes, bool):
            check_positive_int("holdout_classes", holdout_classes)
            check_seed("seed", seed)
            generator = torch.Generator().manual_seed(seed)
            picks = torch.randperm(len(self.classes), generator=generator)[:holdout_classes]
            held_out = sorted(self.classes[i] for i in picks.tolist())
        else:
            held_out = _class_ids("holdout_classes", holdout_classes)
            unknown = sorted(set(held_out) - set(self.classes))
            if unknown:
                raise ConfigError(
                    f"holdout_classes {unknown} are not classes of {self.name}: {list(self.classes)}"
                )
        kept = [c for c in self.classes if c not in held_out]
        for side, ids in (("training", kept), ("held-out", held_out)):
            if len(ids) < self.num_ways:
                raise ConfigError(
                    f"the {side} side of the split has {len(ids)} classes {ids}, fewer than "
                    f"num_ways={self.num_ways}; {len(self.classes)} classes are available"
                )
        return self._subset(kept, f"{self.name}-train"), self._subset(held_out, f"{self.name}-test")

    def _check_task_size(self, num_points: int) -> None:
        """Raise if even the largest classes cannot fill a task, rather than failing at random."""
        smallest = torch.argsort(self._counts)[: self.num_ways]
        if int(self._counts[smallest].sum()) < num_points:
            sizes = {int(self._class_ids[i]): int(self._counts[i]) for i in smallest}
            raise DataError(
                f"{self.name}: a {self.num_ways}-way task needs num_train + num_query = "
                f"{num_points} examples, but classes {list(sizes)} hold only "
                f"{list(sizes.values())} examples ({sum(sizes.values())} in all); use fewer "
                "points per task or classes with more examples"
            )

    def _sample(self, num_tasks, num_train, num_query, generator):
        num_points = num_train + num_query
        self._check_task_size(num_points)
        xs, ys, picked = [], [], []
        for _ in range(num_tasks):
            # The first num_ways of a permutation: distinct classes in a random label order.
            ways = torch.randperm(len(self.classes), generator=generator)[: self.num_ways]
            sizes = self._counts[ways]
            ends = sizes.cumsum(0)
            # Positions in the pool (the classes' runs laid end to end), without replacement.
            positions = torch.randperm(int(ends[-1]), generator=generator)[:num_points]
            label = torch.searchsorted(ends, positions, right=True)
            offset = positions - (ends - sizes)[label]
            xs.append(self._features[self._order[self._starts[ways][label] + offset]])
            ys.append(label)
            picked.append(ways)
        x, y = torch.stack(xs), torch.stack(ys)
        return TaskBatch(
            x_train=x[:, :num_train],
            y_train=y[:, :num_train],
            x_query=x[:, num_train:],
            y_query=y[:, num_train:],
            params={"classes": self._class_ids[torch.stack(picked)]},
        )


def Digits(
    num_ways: int = 5,
    classes: Sequence[int] | None = None,
    projection_dim: int | None = None,
    seed: int = 0,
) -> LabelledDataset:
    """scikit-learn's 8x8 handwritten digits (1797 examples, 64 features, 10 classes)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return LabelledDataset(x, y, num_ways, classes, projection_dim, seed, name="digits")


def MNIST1D(
    num_ways: int = 5,
    num_samples: int = 5000,
    classes: Sequence[int] | None = None,
    projection_dim: int | None = None,
    seed: int = 0,
) -> LabelledDataset:
    """MNIST-1D generated locally (40 features, 10 classes); its train and test parts pooled.

    ``seed`` seeds both the generator and the projection. The generator reseeds numpy's and
    Python's global RNGs, so their states are restored afterwards.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as error:
        raise ImportError('MNIST1D needs the mnist1d package: pip install "amortized[data]"') from error
    check_positive_int("num_samples", num_samples)
    if num_samples < 10:
        raise ConfigError(f"num_samples must be >= 10 (one per class), got {num_samples}")
    check_seed("seed", seed)
    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    x = np.concatenate([data["x"], data["x_test"]])
    y = np.concatenate([data["y"], data["y_test"]])
    return LabelledDataset(x, y, num_ways, classes, projection_dim, seed, name="mnist1d")


def _read_exactly(handle: BinaryIO, size: int, path: Path, what: str) -> bytes:
    """``size`` bytes from ``handle``, or a :class:`DataError` saying the file ends before ``what``."""
    data = handle.read(size)
    if len(data) < size:
        raise DataError(f"{path} is truncated: it ends inside {what}")
    return data


def read_idx(path: str | os.PathLike, *, magic: int | None = None) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped when its name ends in ``.gz``.

    ``magic`` is the expected magic number (2051 for images, 2049 for labels) when known. The header
    fixes the data's size, which is checked against the memory budget (:mod:`amortized.memory`);
    at most one byte more is then read, so a small ``.gz`` that inflates far beyond what its header
    declares is refused without being decompressed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file {path} does not exist")
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as handle:
            start = _read_exactly(handle, 4, path, "the 4-byte IDX magic number")
            found = int.from_bytes(start, "big")
            if magic is not None and found != magic:
                raise DataError(f"{path} has magic number {found}, expected {magic}")
            code, ndim = start[2], start[3]
            if start[:2] != b"\0\0" or code not in _IDX_DTYPES:
                raise DataError(f"{path} is not an IDX file: bad magic number {found:#010x}")
            dims = _read_exactly(handle, 4 * ndim, path, f"the sizes of its {ndim} dimensions")
            shape = struct.unpack(f">{ndim}I", dims)
            dtype = np.dtype(_IDX_DTYPES[code])
            size = math.prod(shape) * dtype.itemsize
            check_memory(
                f"{path}'s header (shape {shape}, {dtype})",
                size,
                held="its data",
                remedy="check that the file is an intact IDX file",
                error=DataError,
            )
            data = handle.read(size + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"could not read {path}: {error}") from error
    if len(data) != size:
        problem = "is truncated" if len(data) < size else "has trailing data"
        raise DataError(
            f"{path} {problem}: its header (shape {shape}, {dtype}) implies {size} bytes of data after it"
        )
    return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(root: Path, stem: str) -> Path:
    """``root/stem`` or ``root/stem.gz``, whichever exists (uncompressed first)."""
    for name in (stem, f"{stem}.gz"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root} holds neither {stem} nor {stem}.gz")


def IDXDataset(
    root: str | os.PathLike,
    split: str = "train",
    num_ways: int = 5,
    classes: Sequence[int] | None = None,
    projection_dim: int | None = None,
    seed: int = 0,
    name: str = "idx",
) -> LabelledDataset:
    """Images and labels from the standard IDX files in ``root`` (MNIST's layout and names).

    ``split`` is ``"train"``, ``"test"`` (``t10k-*``) or ``"all"`` (both pooled). Images are
    flattened to ``rows * cols`` features scaled to [0, 1] before standardising.
    """
    check_choice("split", split, ("train", "test", "all"))
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{name} directory {root} does not exist or is not a directory")
    prefixes = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[split]
    images, labels = [], []
    for prefix in prefixes:
        image_file = _find_idx(root, f"{prefix}-images-idx3-ubyte")
        label_file = _find_idx(root, f"{prefix}-labels-idx1-ubyte")
        images.append(read_idx(image_file, magic=IMAGES_MAGIC))
        labels.append(read_idx(label_file, magic=LABELS_MAGIC))
        if len(images[-1]) != len(labels[-1]):
            raise DataError(
                f"{image_file} holds {len(images[-1])} images but {label_file} holds {len(labels[-1])} labels"
            )
    if len({image.shape[1:] for image in images}) > 1:
        raise DataError(
            f"train and t10k images in {root} differ in size: {images[0].shape[1:]} vs {images[1].shape[1:]}"
        )
    x = np.concatenate(images).reshape(sum(map(len, images)), -1).astype(np.float32) / 255
    y = np.concatenate(labels)
    return LabelledDataset(x, y, num_ways, classes, projection_dim, seed, name=name)


def MNIST(
    root: str | os.PathLike,
    split: str = "train",
    num_ways: int = 5,
    classes: Sequence[int] | None = None,
    projection_dim: int | None = None,
    seed: int = 0,
) -> LabelledDataset:
    """MNIST from its IDX files in ``root`` (784 features, 10 classes); see ``IDXDataset``."""
    return IDXDataset(root, split, num_ways, classes, projection_dim, seed, name="mnist")


def FashionMNIST(
    root: str | os.PathLike,
    split: str = "train",
    num_ways: int = 5,
    classes: Sequence[int] | None = None,
    projection_dim: int | None = None,
    seed: int = 0,
) -> LabelledDataset:
    """Fashion-MNIST from its IDX files in ``root`` (784 features, 10 classes); see IDXDataset."""
    return IDXDataset(root, split, num_ways, classes, projection_dim, seed, name="fashion-mnist")


def _npz_key(archive: np.lib.npyio.NpzFile, path: Path, key: str | None, defaults: tuple) -> str:
    """``key`` if given, else the first of ``defaults`` present; raise listing the keys present."""
    candidates = (key,) if key is not None else defaults
    for candidate in candidates:
        if candidate in archive.files:
            return candidate
    raise DataError(
        f"{path} has no array named {' or '.join(map(repr, candidates))}; it holds {archive.files}"
    )


def NPZDataset(
    path: str | os.PathLike,
    features_key: str | None = None,
    labels_key: str | None = None,
    num_ways: int = 5,
    classes: Sequence[int] | None = None,
    projection_dim: int | None = None,
    seed: int = 0,
    name: str | None = None,
) -> LabelledDataset:
    """Features ``[n, d]`` and labels ``[n]`` from an ``.npz`` archive.

    Without explicit keys, features are the first of ``features``, ``x``, ``X`` and labels the
    first of ``labels``, ``y``, ``Y``. ``name`` defaults to the file's stem.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"npz file {path} does not exist")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path} is not a readable .npz archive: {error}") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path} is a single .npy array, not an .npz archive")
    with archive:
        x_key = _npz_key(archive, path, features_key, ("features", "x", "X"))
        y_key = _npz_key(archive, path, labels_key, ("labels", "y", "Y"))
        try:
            x, y = archive[x_key], archive[y_key]
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise DataError(f"could not read {x_key!r} and {y_key!r} from {path}: {error}") from error
    return LabelledDataset(x, y, num_ways, classes, projection_dim, seed, name=name or path.stem)
