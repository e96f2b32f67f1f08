"""Labelled data sets as N-way classification tasks: each task relabels N random classes 0..N-1.

Sources: scikit-learn's digits, procedurally generated MNIST-1D, IDX files (MNIST, Fashion-MNIST)
and features files a user brings (``.npz``, a pair of ``.npy``, a torch file), memory-mapped where
the format allows. Nothing here downloads; file loaders read what is already on disk.
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
from amortized.statistics import safe_scale, streaming_moments
from amortized.tasks.base import TaskBatch, TaskFamily
from amortized.validation import check_choice, check_int, check_path, check_positive_int, check_seed

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

# IDX type codes (third byte of the magic number) and their big-endian numpy dtypes.
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _check_arrays(features: object, labels: object) -> tuple[np.ndarray, np.ndarray]:
    """Features as a float array ``[n, d]``, not copied (a memory map stays one), and labels as int64."""
    if isinstance(features, Tensor):
        x = features.detach().cpu()
        if not x.is_floating_point():
            raise DTypeError(f"features must be floating point, got {x.dtype}; convert them to float")
        x = (x.float() if x.dtype == torch.bfloat16 else x).numpy()
    else:
        x = features if isinstance(features, np.ndarray) else np.asarray(features)
    if x.ndim != 2:
        raise ShapeError(f"features must have shape [examples, features], got {tuple(x.shape)}")
    if x.dtype.kind != "f":
        raise DTypeError(f"features must be floating point, got {x.dtype}; convert them to float")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ShapeError(f"features is empty: shape {tuple(x.shape)}")
    y = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if y.ndim != 1 or len(y) != x.shape[0]:
        raise ShapeError(
            f"labels must have shape [examples] = [{x.shape[0]}] to match the features, got {tuple(y.shape)}"
        )
    if y.dtype.kind not in "iu":
        raise DTypeError(f"labels must be integer class ids, got dtype {y.dtype}")
    return x, y.astype(np.int64)


def _check_classes(labels: np.ndarray, classes: Sequence[int] | None, num_ways: int) -> list[int]:
    """The family's class ids, sorted: each occurs in ``labels``, and at least ``num_ways``."""
    check_int("num_ways", num_ways, low=2)
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


def _column_scaling(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale over all of ``x``, read in chunks; constant features keep scale 1.

    A feature counts as constant when its std is within rounding error of its magnitude, so
    float noise in a constant column is not blown up to unit scale.
    """
    largest = np.zeros(x.shape[1])

    def checked(chunk: np.ndarray) -> np.ndarray:
        if not np.isfinite(chunk).all():
            raise NonFiniteError("features contains NaN or infinity")
        np.maximum(largest, np.abs(chunk).max(0), out=largest)
        return chunk

    mean, std = streaming_moments(x, checked)
    return mean, safe_scale(std, largest, x.dtype.type)


def _projection(num_features: int, projection_dim: int | None, seed: int) -> Tensor | None:
    """A fixed Gaussian matrix scaled 1/sqrt(d), so unit-scale inputs stay unit scale."""
    if projection_dim is None:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_features, projection_dim, generator=generator) / math.sqrt(num_features)


class LabelledDataset(TaskFamily):
    """N-way classification tasks cut from a labelled data set.

    Each task draws ``num_ways`` distinct classes from ``classes`` (all classes when ``None``),
    maps them in random order to labels ``0..num_ways-1``, and draws its train and query points
    without replacement from the pooled examples of those classes. Inputs are standardised per
    feature with statistics over the whole ``features`` array, then optionally projected to
    ``projection_dim`` with a fixed Gaussian matrix drawn from ``seed``; both are applied to the
    rows a task draws, so ``features`` (a memory map, say) is never copied whole.
    ``params["classes"]`` ``[tasks, num_ways]`` holds the original class id of each label.
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
        self._mean, self._scale = _column_scaling(x)
        self._projection = _projection(x.shape[1], projection_dim, seed)
        self._setup(x, y, num_ways, chosen)

    def _setup(self, features: np.ndarray, labels: np.ndarray, num_ways: int, classes: list[int]) -> None:
        """Index the examples of ``classes`` by class, so a task's pool is a few contiguous runs."""
        self.num_ways = self.num_classes = num_ways
        self.classes = tuple(classes)
        self.input_dim = features.shape[1] if self._projection is None else self._projection.shape[1]
        self.output_dim = num_ways
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
        family._mean, family._scale, family._projection = self._mean, self._scale, self._projection
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

    def check_sample_size(self, what: str, num_tasks: int, num_points: int) -> None:
        """Also refuse (a ``DataError`` naming ``what``) tasks that the smallest classes cannot fill,
        so a configuration asking for more points than the data holds fails before any training."""
        super().check_sample_size(what, num_tasks, num_points)
        smallest = torch.argsort(self._counts)[: self.num_ways]
        if int(self._counts[smallest].sum()) < num_points:
            sizes = {int(self._class_ids[i]): int(self._counts[i]) for i in smallest}
            raise DataError(
                f"{what}: {self.name}: a {self.num_ways}-way task needs num_train + num_query = "
                f"{num_points} examples, but classes {list(sizes)} hold only "
                f"{list(sizes.values())} examples ({sum(sizes.values())} in all); use fewer "
                "points per task or classes with more examples"
            )

    def _rows(self, index: Tensor) -> Tensor:
        """Examples ``index`` (any shape), standardised and projected: ``[*index.shape, input_dim]``."""
        rows = np.asarray(self._features[index.reshape(-1).numpy()], dtype=np.float64)
        x = torch.from_numpy((rows - self._mean) / self._scale).float()
        if self._projection is not None:
            x = x @ self._projection
        return x.view(*index.shape, -1)

    def _sample(self, num_tasks, num_train, num_query, generator):
        num_points = num_train + num_query
        indices, ys, picked = [], [], []
        for _ in range(num_tasks):
            # The first num_ways of a permutation: distinct classes in a random label order.
            ways = torch.randperm(len(self.classes), generator=generator)[: self.num_ways]
            sizes = self._counts[ways]
            ends = sizes.cumsum(0)
            # Positions in the pool (the classes' runs laid end to end), without replacement.
            positions = torch.randperm(int(ends[-1]), generator=generator)[:num_points]
            label = torch.searchsorted(ends, positions, right=True)
            offset = positions - (ends - sizes)[label]
            indices.append(self._order[self._starts[ways][label] + offset])
            ys.append(label)
            picked.append(ways)
        x, y = self._rows(torch.stack(indices)), torch.stack(ys)
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
    check_int("num_samples", num_samples, low=10)  # one per class at least
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
    path = check_path("path", path)
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


def _find_idx(root: Path, prefix: str, kind: str, rank: int) -> Path:
    """The IDX file of ``prefix`` (train, t10k) and ``kind`` (images, labels) in ``root``.

    Both common namings are accepted, ``train-images-idx3-ubyte`` and ``train-images.idx3-ubyte``,
    each uncompressed (preferred) or gzipped.
    """
    names = [f"{prefix}-{kind}{separator}idx{rank}-ubyte" for separator in ("-", ".")]
    candidates = [name + suffix for name in names for suffix in ("", ".gz")]
    for name in candidates:
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root} holds none of {', '.join(candidates)}")


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

    Files are named ``train-images-idx3-ubyte`` or ``train-images.idx3-ubyte`` (and likewise
    ``train-labels``, ``t10k-images``, ``t10k-labels``), each optionally gzipped.

    ``split`` is ``"train"``, ``"test"`` (``t10k-*``) or ``"all"`` (both pooled). Images are
    flattened to ``rows * cols`` features scaled to [0, 1] before standardising.
    """
    check_choice("split", split, ("train", "test", "all"))
    root = check_path("root", root)
    if not root.is_dir():
        raise DataError(f"{name} directory {root} does not exist or is not a directory")
    prefixes = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[split]
    images, labels = [], []
    for prefix in prefixes:
        image_file = _find_idx(root, prefix, "images", 3)
        label_file = _find_idx(root, prefix, "labels", 1)
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


FEATURES_KEYS = ("features", "x", "X")
LABELS_KEYS = ("labels", "y", "Y")


def _pick_key(names: Sequence[str], path: Path, key: str | None, defaults: tuple[str, ...]) -> str:
    """``key`` if given, else the first of ``defaults`` present; raise listing the names present."""
    candidates = (key,) if key is not None else defaults
    for candidate in candidates:
        if candidate in names:
            return candidate
    raise DataError(f"{path} has no array named {' or '.join(map(repr, candidates))}; it holds {list(names)}")


def _npy_header(handle: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype from an ``.npy`` header at ``handle``'s position."""
    version = np.lib.format.read_magic(handle)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read(handle)
    if dtype.hasobject:
        raise DataError("it holds Python objects, which are never unpickled; save numeric arrays")
    return shape, fortran_order, dtype


def _npz_member(archive: zipfile.ZipFile, path: Path, key: str) -> np.ndarray:
    """Array ``key`` of an ``.npz``: memory-mapped if stored uncompressed (``np.savez``), else read."""
    info = archive.getinfo(f"{key}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        with archive.open(info) as member:
            shape, _, dtype = _npy_header(member)
            check_memory(
                f"array {key!r} of {path}",
                math.prod(shape) * dtype.itemsize,
                held="it",
                remedy="save it with np.savez (uncompressed) so it is memory-mapped",
                error=DataError,
            )
        with archive.open(info) as member:
            return np.lib.format.read_array(member, allow_pickle=False)
    with path.open("rb") as handle:
        handle.seek(info.header_offset)
        local = _read_exactly(handle, 30, path, f"the zip header of {key!r}")
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        handle.seek(info.header_offset + 30 + name_length + extra_length)
        shape, fortran_order, dtype = _npy_header(handle)
        offset = handle.tell()
    if not shape or math.prod(shape) == 0:
        return np.zeros(shape, dtype)
    order = "F" if fortran_order else "C"
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)


def _npz_arrays(
    path: Path, features_key: str | None, labels_key: str | None
) -> tuple[np.ndarray, np.ndarray]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name.removesuffix(".npy") for name in archive.namelist()]
            x_key = _pick_key(names, path, features_key, FEATURES_KEYS)
            y_key = _pick_key(names, path, labels_key, LABELS_KEYS)
            return _npz_member(archive, path, x_key), _npz_member(archive, path, y_key)
    except zipfile.BadZipFile as error:
        raise DataError(f"{path} is not a readable .npz archive: {error}") from error
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"could not read {path}: {error}") from error


def _npy_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"npy file {path} does not exist")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path} is not a readable .npy array: {error}") from error


def _torch_arrays(path: Path, features_key: str | None, labels_key: str | None) -> tuple[Tensor, Tensor]:
    """Tensors from a torch file (weights only, memory-mapped): a dict of tensors or a pair."""
    try:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # the legacy (pre-zip) format cannot be memory-mapped
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors for bad files
        raise DataError(
            f"{path} is not a torch file of tensors (loaded with weights_only=True): {error}"
        ) from None
    if isinstance(loaded, dict):
        names = [str(name) for name in loaded]
        return (
            loaded[_pick_key(names, path, features_key, FEATURES_KEYS)],
            loaded[_pick_key(names, path, labels_key, LABELS_KEYS)],
        )
    if isinstance(loaded, (tuple, list)) and len(loaded) == 2 and features_key is labels_key is None:
        return loaded[0], loaded[1]
    raise DataError(
        f"{path} holds a {type(loaded).__name__}; expected a dict of tensors (features and labels) "
        "or a (features, labels) pair"
    )


def FeaturesFile(
    path: str | os.PathLike,
    features_key: str | None = None,
    labels_key: str | None = None,
    num_ways: int = 5,
    classes: Sequence[int] | None = None,
    projection_dim: int | None = None,
    seed: int = 0,
    name: str | None = None,
    labels_path: str | os.PathLike | None = None,
) -> LabelledDataset:
    """Features ``[n, d]`` and labels ``[n]`` from a file (say, embeddings of images), memory-mapped.

    - ``.npz``: arrays named ``features_key`` and ``labels_key``, by default the first of
      ``features``, ``x``, ``X`` and of ``labels``, ``y``, ``Y``. Arrays saved uncompressed
      (``np.savez``) are memory-mapped; compressed ones (``np.savez_compressed``) are read.
    - ``.npy``: the features, memory-mapped, with their labels in the ``.npy`` file ``labels_path``.
    - ``.pt`` / ``.pth``: a dict of tensors (keys as for ``.npz``) or a ``(features, labels)``
      pair, loaded with ``weights_only=True`` (nothing is unpickled) and memory-mapped.

    Only the rows tasks draw are copied. ``name`` defaults to the file's stem.
    """
    path = check_path("path", path)
    if labels_path is not None:
        labels_path = check_path("labels_path", labels_path)
    if not path.is_file():
        raise DataError(f"features file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix != ".npy" and labels_path is not None:
        raise ConfigError(f"labels_path applies to .npy features; {path} holds its labels itself")
    if suffix == ".npy":
        if labels_path is None:
            raise DataError(
                f"{path} is a single .npy array: pass labels_path, the .npy file of its labels "
                "(or save both in one .npz)"
            )
        features, labels = _npy_array(path), _npy_array(labels_path)
    elif suffix == ".npz":
        features, labels = _npz_arrays(path, features_key, labels_key)
    elif suffix in (".pt", ".pth"):
        features, labels = _torch_arrays(path, features_key, labels_key)
    else:
        raise DataError(f"{path}: unknown features file type {suffix!r}; expected .npz, .npy or .pt/.pth")
    return LabelledDataset(features, labels, num_ways, classes, projection_dim, seed, name=name or path.stem)


NPZDataset = FeaturesFile
"""The earlier name of :func:`FeaturesFile`, kept for presets and code that use it."""
