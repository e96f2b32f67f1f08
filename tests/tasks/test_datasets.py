"""Labelled data sets as N-way tasks: sampling, standardisation, class splits and file loaders."""

from __future__ import annotations

import gzip
import random
import struct
import sys
import tracemalloc

import numpy as np
import pytest
import torch

from amortized import statistics
from amortized.errors import ConfigError, DataError, DTypeError, NonFiniteError, ShapeError
from amortized.tasks import (
    MNIST,
    MNIST1D,
    Digits,
    FashionMNIST,
    FeaturesFile,
    LabelledDataset,
    NPZDataset,
    read_idx,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def all_points(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and query points of each task, concatenated: ``[tasks, points, ...]``."""
    x = torch.cat([batch.x_train, batch.x_query], dim=1)
    return x, torch.cat([batch.y_train, batch.y_query], dim=1)


def traced(num_classes: int = 6, per_class: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A data set whose feature 0 is the class id and feature 1 the example index."""
    labels = np.repeat(np.arange(num_classes) * 10, per_class)  # class ids 0, 10, 20, ...
    index = np.arange(len(labels), dtype=np.float64)
    return np.stack([labels.astype(np.float64), index], axis=1), labels


def untrace(x: torch.Tensor, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recover (class id, example index) from standardised traced features."""
    mean, std = features.mean(0), features.std(0)
    raw = x.double().numpy() * std + mean
    return np.rint(raw[..., 0]).astype(int), np.rint(raw[..., 1]).astype(int)


@pytest.fixture(scope="module")
def digits() -> LabelledDataset:
    return Digits()


# --- Digits and the sampling contract ---------------------------------------------------------


def test_digits_shapes_and_dtypes(digits):
    batch = digits.sample(4, 10, 15, gen())
    assert (digits.input_dim, digits.output_dim, digits.num_classes) == (64, 5, 5)
    assert digits.is_classification and digits.classes == tuple(range(10))
    assert batch.x_train.shape == (4, 10, 64) and batch.x_query.shape == (4, 15, 64)
    assert batch.y_train.shape == (4, 10) and batch.y_query.shape == (4, 15)
    assert batch.x_train.dtype == torch.float32 and batch.y_train.dtype == torch.int64
    assert batch.f_query is None
    _, y = all_points(batch)
    assert y.min() >= 0 and y.max() < 5
    classes = batch.params["classes"]
    assert classes.shape == (4, 5) and classes.dtype == torch.int64
    assert all(len(set(row.tolist())) == 5 for row in classes)
    assert classes.min() >= 0 and classes.max() <= 9


def test_classes_are_permuted_per_task(digits):
    classes = digits.sample(20, 5, 5, gen()).params["classes"]
    assert len({tuple(row.tolist()) for row in classes}) > 1
    # The same set of classes shows up in different label orders across tasks.
    assert len({tuple(row.tolist()) for row in classes.sort(dim=1).values}) > 1
    assert not (classes == classes.sort(dim=1).values).all()


def test_labels_follow_params_and_points_are_disjoint():
    features, labels = traced()
    family = LabelledDataset(features, labels, num_ways=3)
    batch = family.sample(16, 10, 14, gen(1))
    x, y = all_points(batch)
    class_id, index = untrace(x, features)
    expected = torch.gather(batch.params["classes"], 1, y).numpy()
    np.testing.assert_array_equal(class_id, expected)
    assert all(len(set(row)) == 24 for row in index.tolist())  # train and query disjoint


def test_standardised_over_the_whole_dataset():
    full = Digits(num_ways=10)
    x, _ = all_points(full.sample(1, 1000, 797, gen()))  # every one of the 1797 examples
    std = x[0].std(0, unbiased=False)
    assert x[0].mean(0).abs().max() < 1e-5
    constant = std < 1e-6  # blank border pixels are only centred
    assert 0 < int(constant.sum()) < 64
    assert torch.allclose(std[~constant], torch.ones(()), atol=1e-4)
    assert (x[0][:, constant] == 0).all()


def test_reproducible_with_the_same_generator_seed(digits):
    first, second = digits.sample(3, 7, 9, gen(5)), digits.sample(3, 7, 9, gen(5))
    other = digits.sample(3, 7, 9, gen(6))
    for a, b in ((first.x_train, second.x_train), (first.y_query, second.y_query)):
        assert torch.equal(a, b)
    assert torch.equal(first.params["classes"], second.params["classes"])
    assert not torch.equal(first.x_train, other.x_train)


def test_projection_changes_input_dim_and_is_fixed_by_seed():
    family = Digits(num_ways=10, projection_dim=16)
    assert family.input_dim == 16
    x, _ = all_points(family.sample(1, 1000, 797, gen()))
    assert x.shape == (1, 1797, 16)
    assert 0.5 < float(x.pow(2).mean()) < 2  # unit scale kept
    same = Digits(num_ways=10, projection_dim=16).sample(1, 1000, 797, gen())
    other = Digits(num_ways=10, projection_dim=16, seed=1).sample(1, 1000, 797, gen())
    assert torch.equal(x, all_points(same)[0])
    assert not torch.equal(x, all_points(other)[0])


# --- class splits -------------------------------------------------------------------------------


def test_split_classes_are_disjoint_and_test_draws_only_held_out():
    digits = Digits(num_ways=3)
    train, test = digits.split(4, seed=0)
    assert set(train.classes).isdisjoint(test.classes)
    assert set(train.classes) | set(test.classes) == set(range(10))
    assert (len(train.classes), len(test.classes)) == (6, 4)
    assert (train.num_ways, test.num_ways) == (3, 3) == (train.num_classes, test.num_classes)
    for family in (train, test):
        drawn = set(family.sample(30, 5, 5, gen()).params["classes"].flatten().tolist())
        assert drawn <= set(family.classes)
    assert digits.split(4, seed=0)[1].classes == test.classes
    assert digits.split(4, seed=1)[1].classes != test.classes


def test_split_shares_standardisation_and_projection():
    parent = Digits(num_ways=2, projection_dim=8)
    rows, _ = all_points(Digits(num_ways=10, projection_dim=8).sample(1, 1000, 797, gen()))
    train, test = parent.split([7, 8, 9])
    assert test.classes == (7, 8, 9) and train.classes == tuple(range(7))
    assert train.input_dim == test.input_dim == 8
    x, _ = all_points(test.sample(4, 10, 10, gen()))
    matches = (x.reshape(-1, 1, 8) == rows[0].reshape(1, -1, 8)).all(-1).any(1)
    assert matches.all()  # each sampled row is a row of the parent's transformed data


def test_split_errors(digits):
    with pytest.raises(ConfigError, match="held-out side"):
        digits.split(3)
    with pytest.raises(ConfigError, match="training side"):
        digits.split(6)
    with pytest.raises(ConfigError, match=r"\[11\]"):
        digits.split([0, 1, 2, 3, 11])


# --- MNIST-1D ---------------------------------------------------------------------------------


def test_mnist1d_small():
    pytest.importorskip("mnist1d")
    python_state, numpy_state = random.getstate(), np.random.get_state()
    family = MNIST1D(num_ways=3, num_samples=500)
    assert random.getstate() == python_state  # mnist1d reseeds the global RNGs; restored
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])
    assert (family.input_dim, family.classes) == (40, tuple(range(10)))
    x, _ = all_points(family.sample(1, 100, 50, gen()))
    assert x.shape == (1, 150, 40) and torch.isfinite(x).all()
    train, test = family.split(5)
    assert set(train.classes).isdisjoint(test.classes)


def test_mnist1d_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(ImportError, match=r'pip install "amortized\[data\]"'):
        MNIST1D()


# --- IDX files ----------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path, array: np.ndarray, magic: int) -> None:
    data = idx_bytes(array, magic)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


def write_split(root, prefix: str, per_class: int, gz: bool, separator: str = "-") -> None:
    """Tiny 3x4 images whose pixels are 20 * (class + 1); 10 classes."""
    labels = np.repeat(np.arange(10), per_class)
    images = np.broadcast_to(20 * (labels + 1)[:, None, None], (len(labels), 3, 4))
    suffix = ".gz" if gz else ""
    write_idx(root / f"{prefix}-images{separator}idx3-ubyte{suffix}", images, 2051)
    write_idx(root / f"{prefix}-labels{separator}idx1-ubyte{suffix}", labels, 2049)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("separator", ["-", "."])
def test_both_common_idx_namings_are_read(tmp_path, separator, gz):
    write_split(tmp_path, "train", per_class=4, gz=gz, separator=separator)
    family = MNIST(tmp_path, num_ways=10)
    assert family.input_dim == 12 and len(family.classes) == 10
    family.sample(1, 20, 20, gen())


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    array = np.arange(24).reshape(2, 3, 4)
    path = tmp_path / ("images.gz" if gz else "images")
    write_idx(path, array, 2051)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)


def test_mnist_and_fashion_mnist_from_idx(tmp_path):
    write_split(tmp_path, "train", per_class=6, gz=False)
    write_split(tmp_path, "t10k", per_class=2, gz=True)
    train = MNIST(tmp_path, num_ways=3)
    assert train.input_dim == 12 and train.name == "mnist"
    batch = train.sample(5, 10, 8, gen())
    x, y = all_points(batch)
    assert x.shape == (5, 18, 12) and y.max() < 3
    # Images are constant, 20 * (class + 1) / 255 before standardising: recover each one's class.
    values = 20 * np.arange(1, 11) / 255
    standardised = (values - values.mean()) / values.std()
    class_id = np.abs(x[..., :1].numpy() - standardised).argmin(-1)
    np.testing.assert_array_equal(class_id, torch.gather(batch.params["classes"], 1, y).numpy())
    test = FashionMNIST(tmp_path, split="test", num_ways=4, classes=[1, 2, 3, 4])
    assert test.classes == (1, 2, 3, 4) and test.name == "fashion-mnist"
    test.sample(2, 4, 4, gen())
    with pytest.raises(DataError, match="needs num_train"):
        test.sample(1, 5, 4, gen())  # 4 classes x 2 test images = 8 examples
    both = MNIST(tmp_path, split="all", num_ways=10)
    both.sample(1, 40, 40, gen())  # 10 classes x 8 images pooled
    with pytest.raises(ConfigError, match="split"):
        MNIST(tmp_path, split="validation")


def test_idx_errors(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        MNIST(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"none of train-images-idx3-ubyte, .*train-images\.idx3-ubyte\.gz"):
        MNIST(tmp_path)
    write_split(tmp_path, "train", per_class=3, gz=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    good_labels = labels.read_bytes()
    write_idx(labels, np.repeat(np.arange(10), 3), 2051)
    with pytest.raises(DataError, match="magic number 2051, expected 2049"):
        MNIST(tmp_path)
    labels.write_bytes(good_labels[:-5])
    with pytest.raises(DataError, match="truncated"):
        MNIST(tmp_path)
    write_idx(labels, np.repeat(np.arange(10), 2), 2049)
    with pytest.raises(DataError, match=r"30 images but .* 20 labels"):
        MNIST(tmp_path)
    labels.write_bytes(b"\x00\x00\x08")
    with pytest.raises(DataError, match="truncated"):
        read_idx(labels)
    gz = tmp_path / "broken.gz"
    gz.write_bytes(gzip.compress(good_labels)[:-12])
    with pytest.raises(DataError, match="could not read"):
        read_idx(gz)
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "absent")


def test_a_gzip_bomb_is_refused_without_being_decompressed(tmp_path, monkeypatch):
    monkeypatch.delenv("AMORTIZED_MEMORY_BUDGET", raising=False)
    bomb = tmp_path / "bomb-idx3-ubyte.gz"
    # A header for 2 images of 2x2 pixels, then 32 MiB of zeros: about 32 KiB on disk.
    bomb.write_bytes(gzip.compress(idx_bytes(np.zeros((2, 2, 2)), 2051) + bytes(32 * 2**20), mtime=0))
    assert bomb.stat().st_size < 64 * 2**10
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"has trailing data: its header \(shape \(2, 2, 2\), uint8\)"):
            read_idx(bomb, magic=2051)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{peak} bytes allocated reading a file whose header declares 8"


@pytest.mark.parametrize("gz", [False, True])
def test_a_header_declaring_more_than_the_memory_budget_is_refused(tmp_path, monkeypatch, gz):
    monkeypatch.delenv("AMORTIZED_MEMORY_BUDGET", raising=False)
    path = tmp_path / ("huge.gz" if gz else "huge")
    header = struct.pack(">I3I", 2051, 2**31, 2**16, 2**16)
    path.write_bytes(gzip.compress(header) if gz else header)
    declared = r"header \(shape \(2147483648, 65536, 65536\), uint8\) needs about 8.39e\+06 TiB"
    with pytest.raises(DataError, match=rf"{declared} for its data, above the memory budget of 8 GiB"):
        read_idx(path)
    monkeypatch.setenv("AMORTIZED_MEMORY_BUDGET", "1K")
    write_idx(path, np.zeros((2, 40, 40)), 2051)  # 3.1 KiB of pixels
    with pytest.raises(
        DataError, match=r"needs about 3.12 KiB for its data, above the memory budget of 1 KiB"
    ):
        read_idx(path)


# --- npz archives -------------------------------------------------------------------------------


def test_npz_dataset(tmp_path):
    features, labels = traced()
    np.savez(tmp_path / "default.npz", features=features, labels=labels)
    np.savez(tmp_path / "xy.npz", x=features, y=labels)
    np.savez(tmp_path / "custom.npz", inputs=features, targets=labels)
    for family in (
        NPZDataset(tmp_path / "default.npz", num_ways=3),
        NPZDataset(tmp_path / "xy.npz", num_ways=3),
        NPZDataset(tmp_path / "custom.npz", "inputs", "targets", num_ways=3),
    ):
        assert family.input_dim == 2 and family.classes == tuple(range(0, 60, 10))
        family.sample(2, 4, 4, gen())
    assert NPZDataset(tmp_path / "xy.npz").name == "xy"


def test_npz_errors(tmp_path):
    features, labels = traced()
    np.savez(tmp_path / "odd.npz", inputs=features, labels=labels)
    with pytest.raises(DataError, match=r"'features' or 'x' or 'X'.*\['inputs', 'labels'\]"):
        NPZDataset(tmp_path / "odd.npz")
    with pytest.raises(DataError, match="'targets'"):
        NPZDataset(tmp_path / "odd.npz", "inputs", "targets")
    with pytest.raises(DataError, match="does not exist"):
        NPZDataset(tmp_path / "absent.npz")
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(DataError, match="not a readable"):
        NPZDataset(tmp_path / "text.npz")
    np.save(tmp_path / "array.npy", features)
    with pytest.raises(DataError, match=r"single \.npy"):
        NPZDataset(tmp_path / "array.npy")


# --- errors -------------------------------------------------------------------------------------


def test_too_few_examples_for_the_task_size():
    features, labels = traced(num_classes=6, per_class=3)
    family = LabelledDataset(features, labels, num_ways=5, name="tiny")
    family.sample(2, 10, 5, gen())  # 15 points fit in any 5 classes of 3
    with pytest.raises(DataError, match=r"tiny: .* 16 examples.*hold only \[3, 3, 3, 3, 3\]"):
        family.sample(2, 10, 6, gen())


def test_invalid_construction():
    features, labels = traced()
    with pytest.raises(ConfigError, match="at least 10 classes"):
        Digits(num_ways=10, classes=[0, 1, 2, 3, 4])
    with pytest.raises(ConfigError, match="num_ways must be >= 2"):
        LabelledDataset(features, labels, num_ways=1)
    with pytest.raises(ConfigError, match=r"\[5\] do not occur"):
        LabelledDataset(features, labels, num_ways=2, classes=[0, 5])
    with pytest.raises(ConfigError, match="duplicate"):
        LabelledDataset(features, labels, num_ways=2, classes=[0, 0, 10])
    with pytest.raises(ConfigError, match="projection_dim"):
        LabelledDataset(features, labels, num_ways=2, projection_dim=0)
    broken = features.copy()
    broken[3, 1] = np.nan
    with pytest.raises(NonFiniteError):
        LabelledDataset(broken, labels, num_ways=2)
    with pytest.raises(DTypeError, match="floating point"):
        LabelledDataset(features.astype(int), labels, num_ways=2)
    with pytest.raises(DTypeError, match="integer"):
        LabelledDataset(features, labels.astype(float), num_ways=2)
    with pytest.raises(ShapeError, match="labels"):
        LabelledDataset(features, labels[:-1], num_ways=2)
    with pytest.raises(ShapeError, match="features"):
        LabelledDataset(features[:, 0], labels, num_ways=2)


def test_torch_inputs_accepted():
    features, labels = traced()
    family = LabelledDataset(torch.from_numpy(features), torch.from_numpy(labels), num_ways=2)
    assert family.input_dim == 2


@pytest.mark.parametrize(("sizes", "name"), [((0, 5, 5), "num_tasks"), ((2, 0, 5), "num_train")])
def test_non_positive_sizes(digits, sizes, name):
    with pytest.raises(ConfigError, match=name):
        digits.sample(*sizes, generator=gen())


# --- features files (embeddings a user brings) ----------------------------------------------------


def test_features_files_of_every_format_give_the_same_tasks(tmp_path):
    features, labels = traced()
    np.savez(tmp_path / "stored.npz", features=features, labels=labels)
    np.savez_compressed(tmp_path / "compressed.npz", x=features, y=labels)
    np.save(tmp_path / "features.npy", features)
    np.save(tmp_path / "labels.npy", labels)
    torch.save(
        {"features": torch.from_numpy(features), "labels": torch.from_numpy(labels)}, tmp_path / "dict.pt"
    )
    torch.save((torch.from_numpy(features), torch.from_numpy(labels)), tmp_path / "pair.pth")
    expected = LabelledDataset(features, labels, num_ways=3).sample(4, 6, 6, gen())
    families = [
        FeaturesFile(tmp_path / "stored.npz", num_ways=3),
        FeaturesFile(tmp_path / "compressed.npz", num_ways=3),
        FeaturesFile(tmp_path / "features.npy", num_ways=3, labels_path=tmp_path / "labels.npy"),
        FeaturesFile(tmp_path / "dict.pt", num_ways=3),
        FeaturesFile(tmp_path / "pair.pth", num_ways=3),
    ]
    for family in families:
        batch = family.sample(4, 6, 6, gen())
        assert torch.equal(batch.x_train, expected.x_train) and torch.equal(batch.y_query, expected.y_query)
    assert isinstance(families[0]._features, np.memmap)  # uncompressed members are mapped, not read
    assert isinstance(families[2]._features, np.memmap)
    assert families[3].name == "dict"


def test_a_large_features_file_is_mapped_not_copied(tmp_path, monkeypatch):
    monkeypatch.setattr(statistics, "STATISTICS_CHUNK_BYTES", 2**18)  # statistics in chunks of 256 KiB
    rows, width = 20_000, 128  # 10 MiB of float32
    generator = np.random.default_rng(0)
    np.save(tmp_path / "features.npy", generator.normal(size=(rows, width)).astype(np.float32))
    np.save(tmp_path / "labels.npy", np.arange(rows) % 50)
    np.savez(
        tmp_path / "both.npz",
        features=np.load(tmp_path / "features.npy"),
        labels=np.load(tmp_path / "labels.npy"),
    )
    for path, options in (
        ("features.npy", {"labels_path": tmp_path / "labels.npy"}),
        ("both.npz", {}),
    ):
        tracemalloc.start()
        try:
            family = FeaturesFile(tmp_path / path, num_ways=5, **options)
            family.sample(8, 32, 32, gen())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 3 * 2**20, f"{path}: {peak / 2**20:.1f} MiB allocated for a 10 MiB file"


def test_features_file_errors_name_the_problem(tmp_path):
    features, labels = traced()
    np.save(tmp_path / "features.npy", features)
    with pytest.raises(DataError, match="labels_path"):
        FeaturesFile(tmp_path / "features.npy")
    with pytest.raises(DataError, match="does not exist"):
        FeaturesFile(tmp_path / "features.npy", labels_path=tmp_path / "absent.npy")
    np.savez(tmp_path / "both.npz", features=features, labels=labels)
    with pytest.raises(ConfigError, match=r"labels_path applies to \.npy features"):
        FeaturesFile(tmp_path / "both.npz", labels_path=tmp_path / "features.npy")
    (tmp_path / "table.csv").write_text("1,2\n")
    with pytest.raises(DataError, match=r"unknown features file type '.csv'"):
        FeaturesFile(tmp_path / "table.csv")
    torch.save({"inputs": torch.zeros(3, 2)}, tmp_path / "odd.pt")
    with pytest.raises(DataError, match=r"no array named 'features' or 'x' or 'X'.*\['inputs'\]"):
        FeaturesFile(tmp_path / "odd.pt")
    torch.save(
        {"features": torch.zeros(3, 2), "labels": torch.arange(3), "note": Note()}, tmp_path / "code.pt"
    )
    with pytest.raises(DataError, match="weights_only=True"):
        FeaturesFile(tmp_path / "code.pt")
    torch.save([torch.zeros(3, 2)], tmp_path / "single.pt")
    with pytest.raises(DataError, match=r"holds a list; expected a dict of tensors"):
        FeaturesFile(tmp_path / "single.pt")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match=r"not a readable \.npy"):
        FeaturesFile(tmp_path / "features.npy", labels_path=tmp_path / "objects.npy")
    broken = features.copy()
    broken[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", broken)
    np.save(tmp_path / "labels.npy", labels)
    with pytest.raises(NonFiniteError, match="NaN"):
        FeaturesFile(tmp_path / "nan.npy", labels_path=tmp_path / "labels.npy")


class Note:
    """An object a torch file can pickle but ``weights_only`` loading refuses."""
