"""The memory budget: sizes that cannot fit are refused in one line before anything is allocated."""

import pytest

from amortized.config import Experiment
from amortized.errors import ConfigError
from amortized.learners import FlowMatching, InContext, LatentUpdate, TransformerUpdate
from amortized.memory import BUDGET_ENV, DEFAULT_BUDGET, memory_budget
from amortized.models import MLP
from amortized.nn import Transformer, mlp
from amortized.tasks import GaussianProcess, LinearRegression

HUGE = 2**40


@pytest.fixture(autouse=True)
def default_budget(monkeypatch):
    monkeypatch.delenv(BUDGET_ENV, raising=False)


def _refused(*names: str):
    """``pytest.raises`` for a budget refusal naming ``names``, the estimate, the budget and the variable."""
    size = r"[\d.e+]+ [KMGT]?i?B"
    named = "".join(f"(?=.*{name})" for name in names)
    return pytest.raises(ConfigError, match=rf"^{named}.*needs about {size}.*budget of {size}.*{BUDGET_ENV}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("64G", 64 * 2**30), ("512MiB", 512 * 2**20), ("1.5 t", int(1.5 * 2**40)), ("4096", 4096)],
)
def test_the_budget_comes_from_the_environment(monkeypatch, text, expected):
    assert memory_budget() == DEFAULT_BUDGET == 8 * 2**30
    monkeypatch.setenv(BUDGET_ENV, text)
    assert memory_budget() == expected


@pytest.mark.parametrize("text", ["lots", "0", "-1G", "12 parsecs", ""])
def test_a_budget_that_is_not_a_size_is_refused(monkeypatch, text):
    monkeypatch.setenv(BUDGET_ENV, text)
    with pytest.raises(ConfigError, match=f"{BUDGET_ENV} must be a positive size"):
        memory_budget()


def test_sampling_beyond_the_budget_fails_before_drawing_anything(monkeypatch):
    family = LinearRegression(dim=1_000_000)

    def never(*args):
        raise AssertionError("sampling started")

    monkeypatch.setattr(LinearRegression, "_sample", never)
    with _refused("num_tasks=16, num_train=256, num_query=64", "LinearRegression", "1000000 inputs"):
        family.sample(16, 256, 64)


def test_the_budget_can_be_raised_or_lowered(monkeypatch):
    family = LinearRegression(dim=2)
    monkeypatch.setenv(BUDGET_ENV, "4K")
    family.sample(8, 16, 8)  # 8 tasks x 24 points x 4 values x 4 bytes = 3 KiB
    with _refused("num_tasks=16"):
        family.sample(16, 16, 8)
    monkeypatch.setenv(BUDGET_ENV, "8K")
    assert family.sample(16, 16, 8).num_tasks == 16


def test_a_gaussian_process_counts_its_kernel_matrices():
    # 100 001 points of 1 input are 1.2 MB of data, but each kernel matrix is 80 GB.
    with _refused("num_tasks=1, num_train=100000"):
        GaussianProcess().sample(1, 100_000, 1)


@pytest.mark.parametrize(
    ("build", "names"),
    [
        (lambda: Transformer(width=HUGE), ["width=1099511627776, depth=2"]),
        (lambda: mlp(3, HUGE), ["width=1099511627776"]),
        (lambda: MLP(2, hidden=(40, HUGE)), [r"mlp model of widths \[2, 40, 1099511627776, 1\]"]),
        (lambda: InContext(2, rule={"width": HUGE, "heads": 1}), ["width=1099511627776"]),
        (lambda: TransformerUpdate(memory_tokens=HUGE), ["memory_tokens=1099511627776, width=64"]),
        (lambda: FlowMatching(memory_tokens=HUGE), ["memory_tokens=1099511627776, width=64"]),
        (lambda: LatentUpdate(2, decoder_hidden=[HUGE]), [r"decoder_hidden=\[1099511627776\]"]),
    ],
)
def test_networks_beyond_the_budget_are_refused_before_their_layers_are_built(build, names):
    with _refused(*names, "for its weights"):
        build()


def test_a_network_within_a_raised_budget_is_built(monkeypatch):
    monkeypatch.setenv(BUDGET_ENV, "1M")  # width 256, depth 2: 1.6 million weights, 6 MiB
    with _refused("width=256, depth=2"):
        Transformer(width=256)
    monkeypatch.setenv(BUDGET_ENV, "7M")
    assert sum(p.numel() for p in Transformer(width=256).parameters()) == 2 * (12 * 256**2 + 13 * 256) + 512


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("evaluation.num_tasks=100000000000", ["evaluation.num_tasks=100000000000", "evaluation tasks"]),
        ("evaluation.cost_sizes=[100000000000]", ["evaluation.cost_tasks=2 with cost_sizes up to"]),
        ("train.num_train=10000000000", ["learners.LearnedUpdate.train: tasks_per_batch=8"]),
        (
            'learners.MAML.kwargs.model={kind = "mlp", hidden = [1099511627776]}',
            [r"learners.MAML: a mlp model of widths \[2, 1099511627776, 1\]"],
        ),
        (
            "family.dim=1000000; learners.InContext-one-shot.kwargs.ridge_features=false",
            ["baselines.Bayes: evaluation.num_tasks=16 with input_dim=1000000"],
        ),
    ],
)
def test_a_preset_beyond_the_budget_is_refused_naming_the_key(override, names):
    with _refused(*names):
        Experiment.from_preset("tiny", override.split("; "))


def test_inputs_too_wide_for_the_in_context_readout_are_refused_naming_the_learner():
    refusal = r"learners\.InContext-one-shot: the ridge readout .* ridge_features"
    with pytest.raises(ConfigError, match=refusal):
        Experiment.from_preset("tiny", ["family.dim=1000000"])
