"""Generative tasks: a task is a 2-D distribution, its data are samples of it.

Every family here is a Gaussian mixture whose parameters are random per task, so the true density of
each task is known exactly and generated samples can be scored under it:

- :class:`GaussianMixture`: a random number of components with random weights, means and scales.
- :class:`Alphabet`: point clouds on the strokes of a letter. A letter is a few polylines and arcs
  (:data:`GLYPHS`, drawn here, nothing is downloaded), randomly scaled, rotated, sheared and shifted
  per task. Its density is an equal-weight mixture of isotropic Gaussians centred at ``resolution``
  points equally spaced along the strokes: samples come from exactly that mixture.

A generative task fits the library's :class:`TaskBatch` as the regression from base noise to
samples with an unknown pairing: ``y`` holds the task's samples and ``x`` an independent standard
normal draw per point. A generative learner reads only the samples of its context and predicts, at
query noise ``x``, a generated sample each (its transport of the noise). ``f_query`` holds the true
mixture, packed by :func:`pack_mixture` (``[tasks, components, 1 + 2 * dim]``): as the true logits are
the truth a classifier is scored against, the true density is what generated samples are scored
against (:class:`SampleMetrics`). ``params`` holds the same mixture unpacked.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from amortized.errors import ConfigError, ShapeError
from amortized.tasks import _sampling as draw
from amortized.tasks.base import TaskBatch, TaskFamily
from amortized.validation import MAX_MAGNITUDE, check_positive_int, check_range, check_real

Point = tuple[float, float]


# --------------------------------------------------------------------------------------------------
# Mixtures and the metrics of generated samples


def pack_mixture(log_weights: Tensor, means: Tensor, scales: Tensor) -> Tensor:
    """Diagonal Gaussian mixtures as one tensor ``[tasks, K, 1 + 2D]``: log weight, means, log scales.

    Absent components have log weight ``-inf``.
    """
    return torch.cat([log_weights[..., None], means, scales.log()], -1)


def unpack_mixture(packed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The log weights ``[tasks, K]``, means and scales ``[tasks, K, D]`` of :func:`pack_mixture`."""
    dim = (packed.shape[-1] - 1) // 2
    return packed[..., 0], packed[..., 1 : 1 + dim], packed[..., 1 + dim :].exp()


def mixture_log_prob(points: Tensor, mixture: Tensor) -> Tensor:
    """Log density ``[tasks, points]`` of ``points`` ``[tasks, points, D]`` under packed mixtures."""
    log_weights, means, scales = unpack_mixture(mixture)
    if points.shape[-1] != means.shape[-1] or points.shape[0] != means.shape[0]:
        raise ShapeError(
            f"points {tuple(points.shape)} do not match mixtures of {means.shape[0]} tasks in "
            f"{means.shape[-1]} dimensions"
        )
    z = (points[:, :, None, :] - means[:, None]) / scales[:, None]
    log_normal = (
        -0.5 * z.square().sum(-1)
        - scales.log().sum(-1)[:, None]
        - 0.5 * points.shape[-1] * math.log(2 * math.pi)
    )
    return torch.logsumexp(log_weights[:, None] + log_normal, -1)


def energy_distance(samples: Tensor, reference: Tensor) -> Tensor:
    """Unbiased squared energy distance per task between two sample sets ``[tasks, n, D]``, ``[tasks, m, D]``.

    ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` with the within-set means over distinct pairs, so two sets
    drawn from the same distribution score 0 on average (single draws can be slightly negative).
    """
    if samples.shape[0] != reference.shape[0] or samples.shape[-1] != reference.shape[-1]:
        raise ShapeError(
            f"energy distance needs sample sets of the same tasks and width, got {tuple(samples.shape)} "
            f"and {tuple(reference.shape)}"
        )

    def within(points: Tensor) -> Tensor:
        count = points.shape[1]
        if count < 2:
            raise ShapeError(f"energy distance needs at least 2 samples per set, got {count}")
        return torch.cdist(points, points).sum((1, 2)) / (count * (count - 1))

    between = torch.cdist(samples, reference).mean((1, 2))
    return 2 * between - within(samples) - within(reference)


class SampleMetrics:
    """Scores generated samples against held-out samples of the same task and its true density.

    The role a likelihood plays for prediction: ``loss`` (the energy distance, used where a loss of
    predictions is asked for) and ``metrics``. ``energy`` is the main metric; ``nll`` is the mean
    negative log density of the generated samples under the true mixture (a generator that collapses
    onto the densest region scores well on it, so it is reported next to ``energy``, not instead).
    """

    name = "samples"
    main_metric = "energy"

    def loss(self, samples: Tensor, y: Tensor) -> Tensor:
        return energy_distance(samples, y)

    def metrics(self, samples: Tensor, y: Tensor, mixture: Tensor | None = None) -> dict[str, Tensor]:
        out = {"energy": energy_distance(samples, y)}
        if mixture is not None:
            out["nll"] = -mixture_log_prob(samples, mixture).mean(-1)
        return out


# --------------------------------------------------------------------------------------------------
# Families


def _log_uniform(shape: tuple[int, ...], low: float, high: float, generator) -> Tensor:
    return torch.exp(draw.uniform(shape, math.log(low), math.log(high), generator))


class _MixtureFamily(TaskFamily):
    """Samples tasks from per-task diagonal Gaussian mixtures; subclasses draw the mixtures."""

    dim = 2
    noise = None

    def __init__(self) -> None:
        self.input_dim = self.output_dim = self.dim

    @property
    def likelihood(self) -> str:
        """``"samples"``: generated samples are scored by :class:`SampleMetrics`."""
        return "samples"

    def _mixtures(self, num_tasks: int, generator) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Log weights ``[tasks, K]``, means and scales ``[tasks, K, dim]``, and other task parameters."""
        raise NotImplementedError

    def _sample(self, num_tasks, num_train, num_query, generator):
        log_weights, means, scales, extra = self._mixtures(num_tasks, generator)
        num_points = num_train + num_query
        component = torch.multinomial(log_weights.exp(), num_points, replacement=True, generator=generator)
        index = component[..., None].expand(-1, -1, self.dim)
        points = means.gather(1, index) + scales.gather(1, index) * draw.normal(
            (num_tasks, num_points, self.dim), generator
        )
        noise = draw.normal((num_tasks, num_points, self.dim), generator)
        return TaskBatch(
            x_train=noise[:, :num_train],
            y_train=points[:, :num_train],
            x_query=noise[:, num_train:],
            y_query=points[:, num_train:],
            f_query=pack_mixture(log_weights, means, scales),
            params={"log_weights": log_weights, "means": means, "scales": scales, **extra},
        )


class GaussianMixture(_MixtureFamily):
    """2-D Gaussian mixtures with a random number of components in ``components`` (inclusive).

    Means are uniform in ``[-mean_bound, mean_bound]²``, each component's two scales log-uniform in
    ``scale``, and weights proportional to uniform draws in ``[1, weight_ratio]``.
    """

    def __init__(
        self,
        components: tuple[int, int] = (1, 5),
        mean_bound: float = 3.0,
        scale: tuple[float, float] = (0.1, 0.6),
        weight_ratio: float = 3.0,
    ) -> None:
        super().__init__()
        self.components = check_range("components", components, integer=True)
        self.mean_bound = check_real("mean_bound", mean_bound, low=0, high=MAX_MAGNITUDE)
        self.scale = check_range("scale", scale, high=MAX_MAGNITUDE)
        self.weight_ratio = check_real("weight_ratio", weight_ratio, low=1, high=MAX_MAGNITUDE)

    def _mixtures(self, num_tasks, generator):
        low, high = self.components
        count = low + torch.randint(high - low + 1, (num_tasks, 1), generator=generator)
        present = torch.arange(high) < count
        weights = draw.uniform((num_tasks, high), 1.0, self.weight_ratio, generator) * present
        log_weights = (weights / weights.sum(-1, keepdim=True)).log()
        means = draw.uniform((num_tasks, high, self.dim), -self.mean_bound, self.mean_bound, generator)
        scales = _log_uniform((num_tasks, high, self.dim), *self.scale, generator)
        return log_weights, means, scales, {"components": count.view(-1)}


def _arc(centre: Point, radii: Point, start: float, end: float, segments: int = 24) -> list[Point]:
    """Points of an elliptic arc from ``start`` to ``end`` degrees (counter-clockwise if increasing)."""
    angles = torch.linspace(math.radians(start), math.radians(end), segments + 1)
    return [(centre[0] + radii[0] * math.cos(a), centre[1] + radii[1] * math.sin(a)) for a in angles.tolist()]


def _bowl(top: float, bottom: float, left: float, right: float) -> list[Point]:
    """The right-hand bowl of B, D, P and R: across, around a half ellipse, and back."""
    radius = (top - bottom) / 2
    centre = (right - radius, (top + bottom) / 2)
    return [(left, top), *_arc(centre, (radius, radius), 90, -90), (left, bottom)]


GLYPHS: dict[str, list[list[Point]]] = {
    "A": [[(-0.7, -1), (0, 1), (0.7, -1)], [(-0.35, 0), (0.35, 0)]],
    "B": [[(-0.6, -1), (-0.6, 1)], _bowl(1, 0, -0.6, 0.5), _bowl(0, -1, -0.6, 0.65)],
    "C": [_arc((0, 0), (0.7, 1), 45, 315)],
    "D": [[(-0.6, -1), (-0.6, 1)], [(-0.6, 1), *_arc((-0.05, 0), (0.65, 1), 90, -90), (-0.6, -1)]],
    "E": [[(0.6, 1), (-0.6, 1), (-0.6, -1), (0.6, -1)], [(-0.6, 0), (0.4, 0)]],
    "F": [[(0.6, 1), (-0.6, 1), (-0.6, -1)], [(-0.6, 0), (0.4, 0)]],
    "G": [[*_arc((0, 0), (0.7, 1), 45, 360), (0.1, 0)]],
    "H": [[(-0.6, -1), (-0.6, 1)], [(0.6, -1), (0.6, 1)], [(-0.6, 0), (0.6, 0)]],
    "I": [[(0, -1), (0, 1)], [(-0.4, 1), (0.4, 1)], [(-0.4, -1), (0.4, -1)]],
    "J": [[(0.4, 1), (0.4, -0.4), *_arc((0, -0.4), (0.4, 0.6), 0, -180)]],
    "K": [[(-0.6, -1), (-0.6, 1)], [(0.6, 1), (-0.6, 0), (0.6, -1)]],
    "L": [[(-0.6, 1), (-0.6, -1), (0.6, -1)]],
    "M": [[(-0.7, -1), (-0.7, 1), (0, -0.2), (0.7, 1), (0.7, -1)]],
    "N": [[(-0.6, -1), (-0.6, 1), (0.6, -1), (0.6, 1)]],
    "O": [_arc((0, 0), (0.7, 1), 0, 360, 48)],
    "P": [[(-0.6, -1), (-0.6, 1)], _bowl(1, 0, -0.6, 0.6)],
    "Q": [_arc((0, 0), (0.7, 1), 0, 360, 48), [(0.2, -0.5), (0.8, -1.1)]],
    "R": [[(-0.6, -1), (-0.6, 1)], _bowl(1, 0, -0.6, 0.6), [(-0.1, 0), (0.6, -1)]],
    "S": [[*_arc((0, 0.5), (0.6, 0.5), 30, 270), *_arc((0, -0.5), (0.6, 0.5), 90, -150)]],
    "T": [[(-0.7, 1), (0.7, 1)], [(0, 1), (0, -1)]],
    "U": [[(-0.6, 1), *_arc((0, -0.4), (0.6, 0.6), 180, 360), (0.6, 1)]],
    "V": [[(-0.7, 1), (0, -1), (0.7, 1)]],
    "W": [[(-0.8, 1), (-0.4, -1), (0, 0.4), (0.4, -1), (0.8, 1)]],
    "X": [[(-0.7, 1), (0.7, -1)], [(-0.7, -1), (0.7, 1)]],
    "Y": [[(-0.7, 1), (0, 0), (0.7, 1)], [(0, 0), (0, -1)]],
    "Z": [[(-0.6, 1), (0.6, 1), (-0.6, -1), (0.6, -1)]],
}
"""Capital letters as strokes (polylines; arcs as fine polylines) in the box ``[-0.8, 0.8] × [-1.1, 1]``."""


def glyph_points(letter: str, resolution: int) -> Tensor:
    """``resolution`` points ``[resolution, 2]`` equally spaced along the strokes of ``letter``.

    Each point is the midpoint of one of ``resolution`` equal pieces of the strokes' total length, so
    every stroke gets points in proportion to its length.
    """
    if letter not in GLYPHS:
        raise ConfigError(f"unknown letter {letter!r}; valid: {''.join(GLYPHS)}")
    segments = []
    for stroke in GLYPHS[letter]:
        corners = torch.tensor(stroke, dtype=torch.float64)
        segments.append(torch.stack([corners[:-1], corners[1:]], 1))
    segments = torch.cat(segments)
    lengths = (segments[:, 1] - segments[:, 0]).norm(dim=-1)
    ends = lengths.cumsum(0)
    positions = (torch.arange(resolution, dtype=torch.float64) + 0.5) / resolution * ends[-1]
    which = torch.searchsorted(ends, positions).clamp(max=len(segments) - 1)
    along = ((positions - (ends[which] - lengths[which])) / lengths[which]).clamp(0, 1)[:, None]
    start, end = segments[which, 0], segments[which, 1]
    return (start + along * (end - start)).float()


class Alphabet(_MixtureFamily):
    """Point clouds sampled along the strokes of a random letter from ``letters`` (see :data:`GLYPHS`).

    Per task: a letter, a size (half-height log-uniform in ``size``), a rotation (uniform within
    ``±rotation`` degrees), a horizontal shear (uniform within ``±shear``), a shift (uniform within
    ``±shift`` per axis) and a stroke width (the Gaussian jitter's scale, log-uniform in ``width``).
    The density is the equal-weight mixture of isotropic Gaussians at ``resolution`` points along the
    transformed strokes, and samples are drawn from it. ``params["letter"]`` is the letter's index
    in ``letters``; hold letters out for out-of-distribution evaluation by giving another ``letters``.
    """

    def __init__(
        self,
        letters: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        size: tuple[float, float] = (1.2, 2.0),
        rotation: float = 15.0,
        shear: float = 0.2,
        shift: float = 0.5,
        width: tuple[float, float] = (0.04, 0.1),
        resolution: int = 128,
    ) -> None:
        super().__init__()
        if not isinstance(letters, str) or not letters:
            raise ConfigError(f"letters must be a non-empty string of capital letters, got {letters!r}")
        unknown = sorted(set(letters) - set(GLYPHS))
        if unknown:
            raise ConfigError(f"letters holds {unknown}, which have no glyph; valid: {''.join(GLYPHS)}")
        self.letters = letters
        self.size = check_range("size", size, high=MAX_MAGNITUDE)
        self.width = check_range("width", width, high=MAX_MAGNITUDE)
        self.rotation, self.shear, self.shift = (
            check_real(name, value, low=0, high=MAX_MAGNITUDE)
            for name, value in (("rotation", rotation), ("shear", shear), ("shift", shift))
        )
        self.resolution = check_positive_int("resolution", resolution)
        self._strokes = torch.stack([glyph_points(letter, resolution) for letter in letters])

    def _mixtures(self, num_tasks, generator):
        letter = torch.randint(len(self.letters), (num_tasks,), generator=generator)
        size = _log_uniform((num_tasks, 1, 1), *self.size, generator)
        angle = torch.deg2rad(draw.uniform((num_tasks,), -self.rotation, self.rotation, generator))
        shear = draw.uniform((num_tasks,), -self.shear, self.shear, generator)
        shift = draw.uniform((num_tasks, 1, 2), -self.shift, self.shift, generator)
        width = _log_uniform((num_tasks, 1, 1), *self.width, generator)
        cos, sin, zero, one = angle.cos(), angle.sin(), torch.zeros_like(angle), torch.ones_like(angle)
        rotate = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        skew = torch.stack([torch.stack([one, shear], -1), torch.stack([zero, one], -1)], -2)
        transform = rotate @ skew * size
        means = self._strokes[letter] @ transform.transpose(1, 2) + shift
        scales = width.expand(-1, self.resolution, self.dim)
        log_weights = torch.full((num_tasks, self.resolution), -math.log(self.resolution))
        return log_weights, means, scales, {"letter": letter}
