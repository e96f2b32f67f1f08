"""The report's figures, drawn with matplotlib's Agg canvas directly (no pyplot, no display, no
global backend change)."""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

from amortized.errors import RunFileError
from amortized.folders import read_jsonl
from amortized.report.tables import _curve, _entries, _mode

PLAIN = FuncFormatter(lambda value, _: f"{value:g}")
"""Tick labels as plain numbers (0.3, 2) rather than powers of ten."""


def _figure(columns: int = 1, *, width: float = 6.4, sharey: bool = False) -> tuple[Figure, list[Any]]:
    figure = Figure(figsize=(width * columns, 4.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, columns, squeeze=False, sharey=sharey)[0]
    return figure, list(axes)


def _style(entry: dict[str, Any], index: int) -> dict[str, Any]:
    if "regime" not in entry:
        return {"color": "black", "linestyle": "--", "linewidth": 1.5}
    style = {"color": f"C{index % 10}", "marker": "o", "markersize": 3}
    if entry["regime"] == "baseline":
        style["linestyle"] = ":"
    elif not entry.get("iterative", True):
        style["linestyle"] = "--"
    return style


def _log2_axis(axis: Any, values: list[int]) -> None:
    """A base-2 log x axis labelled with the evaluated values as plain integers."""
    axis.set_xscale("log", base=2)
    axis.xaxis.set_minor_locator(NullLocator())
    axis.set_xticks(values, labels=[str(v) for v in values])


def _log_y(axis: Any) -> None:
    """A log y axis labelled with plain numbers; call it once the data is drawn.

    Over more than a decade and a half only powers of ten are labelled (labels at every minor tick
    would overlap); over less, the minor ticks at 2 and 5 times a power of ten are labelled too.
    """
    axis.set_yscale("log")
    axis.yaxis.set_major_formatter(PLAIN)
    low, high = axis.get_ylim()
    if high / low > 10**1.5:
        axis.yaxis.set_minor_formatter(NullFormatter())
    else:
        axis.yaxis.set_minor_locator(LogLocator(subs=(2, 5)))
        axis.yaxis.set_minor_formatter(PLAIN)


def _legend(figure: Figure, axes: list[Any], extra: list[Any] = ()) -> None:
    """One legend for the whole figure, right of its panels: every line of every panel, named once."""
    named: dict[str, Any] = {}
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            named.setdefault(label, handle)
    for handle in extra:
        named.setdefault(handle.get_label(), handle)
    figure.legend(list(named.values()), list(named), loc="outside right upper", fontsize=7)


def _plot_curves(
    axis: Any, results: dict[str, Any], curve: list[str], key: str, metric: str
) -> dict[str, tuple[list[int], list[float]]]:
    """Every entry's curve on ``axis``; returns each learner's drawn points (for markers on them)."""
    values: set[int] = set()
    drawn = {}
    for index, (name, entry) in enumerate(_entries(results)):
        points = [p for p in _curve(entry, curve) if metric in p]
        if not points:
            continue
        xs = [p[key] for p in points]
        values.update(xs)
        ys = [p[metric] for p in points]
        errors = [p.get(f"{metric}_stderr", 0.0) for p in points]
        label = name if "regime" not in entry else f"{name} ({_mode(entry)})"
        style = _style(entry, index)
        axis.plot(xs, ys, label=label, **style)
        axis.fill_between(
            xs,
            [y - e for y, e in zip(ys, errors, strict=True)],
            [y + e for y, e in zip(ys, errors, strict=True)],
            color=style["color"],
            alpha=0.15,
            linewidth=0,
        )
        drawn[name] = (xs, ys)
    _log2_axis(axis, sorted(values))
    if metric in ("mse", "excess_mse"):
        _log_y(axis)
    axis.set_ylabel(f"{metric} (lower is better)")
    axis.grid(True, which="major", alpha=0.3)
    return drawn


def _save(figure: Figure, path: Path) -> str:
    figure.savefig(path, dpi=110)
    return path.name


def _value_at(xs: list[int], ys: list[float], x: int) -> float | None:
    """The curve's value at ``x``, interpolated on log-log axes between evaluated points."""
    for (x0, y0), (x1, y1) in zip(zip(xs, ys, strict=True), zip(xs[1:], ys[1:], strict=True), strict=False):
        if x0 <= x <= x1 and y0 > 0 and y1 > 0:
            share = math.log(x / x0) / math.log(x1 / x0) if x1 > x0 else 0.0
            return y0 * (y1 / y0) ** share
    return ys[xs.index(x)] if x in xs else None


def plot_steps(results: dict[str, Any], path: Path) -> str:
    """Main metric against the number of steps ``k``; one pass and each learner's trained k marked."""
    metric = results["metric"]
    figure, (axis,) = _figure(width=8.0)
    drawn = _plot_curves(axis, results, ["steps"], "k", metric)
    evaluation = results["evaluation"]
    one_pass = -(-evaluation["num_train"] // evaluation["batch_size"])
    axis.axvline(one_pass, color="gray", linestyle="-.", linewidth=1, label=f"one pass (k={one_pass})")
    marker = {"marker": "D", "markersize": 9, "markerfacecolor": "none", "markeredgewidth": 1.8}
    marked = []
    for index, (name, entry) in enumerate(results["learners"].items()):
        trained = entry.get("trained_steps")
        if not entry.get("iterative") or not trained or name not in drawn:
            continue
        value = _value_at(*drawn[name], trained)
        if value is not None:
            axis.plot([trained], [value], color=f"C{index % 10}", linestyle="none", zorder=5, **marker)
            marked.append(name)
    extra = []
    if marked:
        extra.append(
            Line2D([], [], color="gray", linestyle="none", label="largest k it was trained on", **marker)
        )
    axis.set_xlabel(
        f"steps k (mini-batches of {evaluation['batch_size']}; one-shot: one step on the same points)"
    )
    axis.set_title(f"{results['preset']}: {metric} vs steps")
    _legend(figure, [axis], extra)
    return _save(figure, path)


def plot_sizes(results: dict[str, Any], path: Path) -> str:
    metric = results["metric"]
    figure, (axis,) = _figure(width=8.0)
    _plot_curves(axis, results, ["size"], "n", metric)
    axis.set_xlabel(f"training points N (one pass in mini-batches of {results['evaluation']['batch_size']})")
    axis.set_title(f"{results['preset']}: {metric} vs data set size")
    _legend(figure, [axis])
    return _save(figure, path)


def _options(text: str) -> dict[str, str] | None:
    """The options of a family's repr, ``Name(a=1, b=(2, 3))``, as text; ``None`` if it is not one."""
    match = re.fullmatch(r"\w+\((.*)\)", text.strip(), flags=re.DOTALL)
    if match is None:
        return None
    options, depth, current = {}, 0, ""
    for char in match.group(1) + ",":
        depth += (char in "([{") - (char in ")]}")
        if char == "," and depth == 0:
            key, sep, value = current.strip().partition("=")
            if sep:
                options[key] = value
            current = ""
        else:
            current += char
    return options


def shift_description(family: str, shifted: str) -> str:
    """What a shift changed, from the two families' reprs: ``noise 0.1 → 0.5``."""
    before, after = _options(family), _options(shifted)
    if before is None or after is None:
        return shifted
    changes = [
        f"{key} {before.get(key, '–')} → {after.get(key, '–')}"
        for key in dict.fromkeys([*before, *after])
        if before.get(key) != after.get(key)
    ]
    return ", ".join(changes) or "no option changed"


def plot_ood(results: dict[str, Any], path: Path) -> str:
    """The step curves in distribution, then out of it (one panel per shift, on the same y axis)."""
    metric = results["metric"]
    shifts = list(results["ood"])
    figure, axes = _figure(1 + len(shifts), width=4.8, sharey=True)
    _plot_curves(axes[0], results, ["steps"], "k", metric)
    axes[0].set_title("in distribution (as meta-trained)", fontsize=9)
    for axis, shift in zip(axes[1:], shifts, strict=True):
        _plot_curves(axis, results, ["ood", shift], "k", metric)
        change = shift_description(results["family"], results["ood"][shift])
        axis.set_title(textwrap.fill(f"{shift}: {change}", 48), fontsize=9)
    for axis in axes:
        axis.set_xlabel("steps k")
        axis.tick_params(labelleft=True)
    _legend(figure, axes)
    return _save(figure, path)


def plot_cost(results: dict[str, Any], path: Path) -> str:
    """Adaptation time and peak tensor memory against ``N``, one-shot against iterative."""
    figure, (time_axis, memory_axis) = _figure(2, width=5.2)
    for index, (name, entry) in enumerate(results["learners"].items()):
        points = entry.get("cost") or []
        if not points:
            continue
        style = _style(entry, index)
        label = f"{name} ({_mode(entry)})"
        sizes = [p["n"] for p in points]
        time_axis.plot(sizes, [p["seconds"] for p in points], label=label, **style)
        memory_axis.plot(sizes, [p["peak_bytes"] / 2**20 for p in points], label=label, **style)
    tasks = results["evaluation"].get("cost_tasks")
    for axis, label in ((time_axis, "seconds per adaptation"), (memory_axis, "peak tensor memory (MB)")):
        _log2_axis(axis, results["evaluation"]["cost_sizes"])
        _log_y(axis)
        axis.set_xlabel("training points N")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
    time_axis.set_title(f"adaptation time ({tasks} tasks at once)", fontsize=9)
    memory_axis.set_title("peak tensor memory of one adaptation", fontsize=9)
    _legend(figure, [time_axis, memory_axis])
    return _save(figure, path)


def plot_samples(results: dict[str, Any], path: Path) -> str:
    """Generated samples against the held-out truth: one row per task, one column per generator."""
    samples = results["samples"]
    names = list(samples["generated"])
    rows, columns = len(samples["truth"]), len(names) + 1
    figure = Figure(figsize=(2.4 * columns, 2.4 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for row, truth in enumerate(samples["truth"]):
        xs, ys = zip(*truth, strict=True)
        for column, name in enumerate(["truth (held out)", *names]):
            axis = axes[row][column]
            axis.scatter(xs, ys, s=3, color="0.75" if column else "black")
            if column:
                gx, gy = zip(*samples["generated"][name][row], strict=True)
                axis.scatter(gx, gy, s=3, color=f"C{(column - 1) % 10}")
            axis.set_xlim(min(xs) - 1, max(xs) + 1)
            axis.set_ylim(min(ys) - 1, max(ys) + 1)
            axis.set_aspect("equal")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name, fontsize=8)
    return _save(figure, path)


def read_training(metrics_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Each learner's meta-training records from a run's ``metrics.jsonl`` (none if it is missing)."""
    if not metrics_path.is_file():
        return {}
    training: dict[str, list[dict[str, Any]]] = {}
    for record in read_jsonl(metrics_path):
        if "iteration" not in record or "loss" not in record:
            raise RunFileError(f"{metrics_path} is not a training log: a record has no iteration and loss")
        training.setdefault(record.get("learner", "learner"), []).append(record)
    return training


def _moving_average(values: list[float]) -> list[float]:
    """The mean over a window of a fiftieth of the values, ending at each one."""
    window = max(1, len(values) // 50)
    return [
        sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
        for i in range(len(values))
    ]


def plot_training(
    training: dict[str, list[dict[str, Any]]], path: Path, results: dict[str, Any]
) -> str | None:
    """Meta-training: the held-out metric of every learner on one axis, each learner's loss on its own.

    The held-out metric (``eval_<metric>`` records) is one quantity for every learner; training
    losses are not (each learner's objective, loss scale and k differ), so each gets its own panel.
    """
    if not training:
        return None
    metric, learners = results["metric"], list(results["learners"])
    colors = {
        name: f"C{(learners.index(name) if name in learners else index) % 10}"
        for index, name in enumerate(training)
    }
    held_out = {
        name: [(r["iteration"], r[f"eval_{metric}"]) for r in records if f"eval_{metric}" in r]
        for name, records in training.items()
    }
    held_out = {name: points for name, points in held_out.items() if points}
    panels = len(training) + bool(held_out)
    columns = min(panels, 3)
    rows = -(-panels // columns)
    figure = Figure(figsize=(4.6 * columns, 3.4 * rows + 0.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = list(figure.subplots(rows, columns, squeeze=False).flat)
    for axis in axes[panels:]:
        axis.set_visible(False)
    if held_out:
        axis = axes.pop(0)
        for name, points in held_out.items():
            xs, ys = zip(*points, strict=True)
            axis.plot(xs, ys, marker="o", markersize=3, color=colors[name], label=name)
        if all(y > 0 for points in held_out.values() for _, y in points):
            _log_y(axis)
        axis.set_title(f"held-out {metric} (after each learner's trained k)", fontsize=9)
        axis.set_ylabel(f"{metric} (lower is better)")
        axis.set_xlabel("meta-training iteration")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    for axis, (name, records) in zip(axes, training.items(), strict=False):
        losses = [r["loss"] for r in records]
        axis.plot([r["iteration"] for r in records], _moving_average(losses), color=colors[name])
        if all(loss > 0 for loss in losses):
            _log_y(axis)
        entry = results["learners"].get(name, {})
        objective = ", ".join(
            text
            for text in (
                entry.get("objective"),
                f"{entry['loss_scale']} loss" if "loss_scale" in entry else None,
            )
            if text
        )
        axis.set_title(f"{name}: training loss" + (f" ({objective})" if objective else ""), fontsize=9)
        axis.set_xlabel("meta-training iteration")
        axis.set_ylabel("loss (moving average)")
        axis.grid(True, alpha=0.3)
    figure.suptitle(
        "meta-training (training losses are each learner's own objective: compare shapes, not values)",
        fontsize=9,
    )
    return _save(figure, path)


# --------------------------------------------------------------------------------------------------
# report.md
