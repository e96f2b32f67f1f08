"""The checkers every option goes through: integers, seeds, finite numbers and ranges."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from amortized.errors import ConfigError, NonFiniteError
from amortized.validation import (
    MAX_MAGNITUDE,
    check_device,
    check_inputs,
    check_int_list,
    check_int_or_range,
    check_positive_int,
    check_range,
    check_real,
    check_seed,
)

FAST = settings(max_examples=60, deadline=None)
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**400), 10**400))


@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(3), torch.tensor(3).item()])
def test_integral_numbers_of_any_type_are_integers(value):
    result = check_positive_int("width", value)
    assert result == 3 and type(result) is int


@pytest.mark.parametrize(
    ("value", "match"),
    [(True, "width must be an integer, got bool"), (3.0, "got float"), ("3", "got str"), (0, "must be > 0")],
)
def test_what_is_not_a_positive_integer_is_refused_naming_the_key(value, match):
    with pytest.raises(ConfigError, match=match):
        check_positive_int("width", value)


@FAST
@given(st.integers(-(2**70), 2**70))
def test_seeds_are_the_integers_torch_takes(seed):
    if 0 <= seed < 2**63:
        assert check_seed("train.seed", seed) == seed
        torch.Generator().manual_seed(seed)
    else:
        with pytest.raises(ConfigError, match=r"train\.seed must be (>= 0|< 2\*\*63)"):
            check_seed("train.seed", seed)


@FAST
@given(NUMBERS)
def test_a_real_is_accepted_exactly_when_finite_and_in_bounds(value):
    inside = 0 < value <= MAX_MAGNITUDE
    try:
        result = check_real("lr", value, positive=True, high=MAX_MAGNITUDE)
    except ConfigError as error:
        assert not inside and str(error).startswith("lr must be")
    else:
        assert inside and result == float(value)


@FAST
@given(NUMBERS)
def test_below_is_strict(value):
    inside = 0 <= value < 1
    try:
        check_real("betas[0]", value, low=0, below=1)
    except ConfigError as error:
        assert not inside and "betas[0]" in str(error)
    else:
        assert inside


@FAST
@given(st.tuples(NUMBERS, NUMBERS), st.booleans())
def test_a_range_is_an_ordered_pair_of_finite_numbers_within_the_limit(pair, positive):
    low, high = pair
    valid = all(abs(end) <= MAX_MAGNITUDE for end in pair) and low <= high and (low > 0 or not positive)
    try:
        result = check_range("amplitude", pair, positive=positive, high=MAX_MAGNITUDE)
    except ConfigError as error:
        assert not valid and str(error).startswith("amplitude must")
    else:
        assert valid and result == (float(low), float(high))


@pytest.mark.parametrize("value", [None, "ab", (1.0,), (1.0, 2.0, 3.0), (1.5, 3)])
def test_what_is_not_a_range_of_integers_is_refused(value):
    with pytest.raises(ConfigError, match="components must be a range"):
        check_range("components", value, integer=True)


@FAST
@given(
    dtype=st.sampled_from([torch.float64, torch.float16, torch.bfloat16]),
    scale=st.sampled_from([1.0, 1e30, 1e100, 1e300]),
)
def test_inputs_are_cast_to_the_dtype_asked_for_unless_they_overflow_it(dtype, scale):
    x = torch.ones(1, 2, 3, dtype=torch.float64) * scale
    x = x.to(dtype)
    if not torch.isfinite(x).all():
        with pytest.raises(NonFiniteError, match="x contains NaN or infinity"):
            check_inputs("x", x, 3, torch.float32)
    elif float(x.abs().max()) > torch.finfo(torch.float32).max:
        with pytest.raises(NonFiniteError, match=r"x holds values too large for torch\.float32"):
            check_inputs("x", x, 3, torch.float32)
    else:
        cast = check_inputs("x", x, 3, torch.float32)
        assert cast.dtype == torch.float32 and torch.equal(cast, x.float())


def test_int_lists_are_sorted_positive_and_distinct():
    assert check_int_list("steps", [8, 1, 2]) == [1, 2, 8]
    for bad, match in (
        ([], "non-empty"),
        ([1, 1], "duplicates"),
        ([1, 0], "steps entry"),
        ("1,2", "non-empty"),
    ):
        with pytest.raises(ConfigError, match=match):
            check_int_list("steps", bad)


def test_an_int_or_a_range_of_them():
    assert check_int_or_range("num_steps", 4) == 4
    assert check_int_or_range("num_steps", [1, 64]) == (1, 64)
    for bad, match in (
        ([64, 1], "low <= high"),
        ([1, 2, 3], r"\(low, high\)"),
        (0, "num_steps"),
        ([1, 1.5], "num_steps"),
    ):
        with pytest.raises(ConfigError, match=match):
            check_int_or_range("num_steps", bad)


def test_devices_are_checked_against_what_this_torch_can_use():
    assert check_device("device", "cpu") == torch.device("cpu")
    assert check_device("device", torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="device: unknown device 'tpu'; use 'cpu'"):
        check_device("device", "tpu")
    with pytest.raises(ConfigError, match="device must be a device name such as 'cpu' or 'cuda', got 0"):
        check_device("device", 0)
    with pytest.raises(ConfigError, match="device 'meta' cannot train or evaluate"):
        check_device("device", "meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(ConfigError, match=r"--device 'cuda:1': torch .* sees no CUDA GPU on this machine"):
        check_device("--device", "cuda:1")


def test_the_option_vocabulary_names_the_option_and_the_rule():
    from amortized.validation import check_int, check_keys, check_real_list, check_str, check_widths

    assert check_int("ways", 3, low=2, high=5) == 3
    with pytest.raises(ConfigError, match="ways must be >= 2, got 1"):
        check_int("ways", 1, low=2)
    with pytest.raises(ConfigError, match="ways must be <= 5, got 6"):
        check_int("ways", 6, high=5)
    assert check_widths("hidden", [64, 32]) == (64, 32) and check_widths("hidden", []) == ()
    with pytest.raises(ConfigError, match=r"hidden must be a list of layer widths \(at least one\)"):
        check_widths("hidden", [], allow_empty=False)
    with pytest.raises(ConfigError, match="hidden must be a list of layer widths"):
        check_widths("hidden", "64")
    assert check_real_list("grid", [0.1, 1], positive=True) == [0.1, 1.0]
    with pytest.raises(ConfigError, match=r"grid must be > 0, got -1\.0"):
        check_real_list("grid", [0.1, -1], positive=True)
    with pytest.raises(ConfigError, match="grid must be a non-empty list of numbers"):
        check_real_list("grid", [])
    with pytest.raises(ConfigError, match="path must be a string, got int 3"):
        check_str("path", 3)
    assert check_keys("train", {"lr": 1}, ["lr", "iterations"]) == {"lr": 1}
    with pytest.raises(ConfigError, match=r"unknown key\(s\) train\.lrr; valid: iterations, lr"):
        check_keys("train", {"lrr": 1}, ["lr", "iterations"])
    with pytest.raises(ConfigError, match=r"learners\.X needs a 'class' key"):
        check_keys("learners.X", {}, ["class"], required=["class"])
    with pytest.raises(ConfigError, match="data must be a table, got str"):
        check_keys("data", "here", ["root"])


def test_lists_of_options_may_be_any_collection_but_a_string():
    import numpy as np

    from amortized.learners.rules import TransformerUpdate
    from amortized.validation import check_real_list, check_widths

    assert check_widths("hidden", np.array([40, 40])) == (40, 40)
    assert check_real_list("grid", np.array([0.1, 1.0])) == [0.1, 1.0]
    assert TransformerUpdate(inputs={"gradients", "observations"}).inputs == ("observations", "gradients")
    with pytest.raises(ConfigError, match=r"inputs must be a non-empty subset .* got 3$"):
        TransformerUpdate(inputs=3)
