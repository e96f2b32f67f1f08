"""The report of a run: ``report.md`` (tables, plots, a summary in plain words) from ``results.json``.

Plots are drawn with matplotlib's Agg canvas directly (no pyplot, no display, no global backend
change). Every number in the report comes from ``results.json``; nothing is recomputed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator

from amortized.errors import RunFileError
from amortized.folders import read_jsonl

PLAIN = FuncFormatter(lambda value, _: f"{value:g}")
"""Tick labels as plain numbers (0.3, 2) rather than powers of ten."""


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3g}"


def _cell(point: dict[str, Any] | None, metric: str) -> str:
    if point is None or metric not in point:
        return "–"
    stderr = point.get(f"{metric}_stderr")
    return f"{_fmt(point[metric])} ± {stderr:.2g}" if stderr else _fmt(point[metric])


def _entries(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Learners and baselines, then the reference (labelled as such)."""
    entries = list(results["learners"].items())
    if results.get("reference"):
        entries.append((f"{results['reference']['name']} (reference)", results["reference"]))
    return entries


def _mode(entry: dict[str, Any]) -> str:
    return "iterative" if entry.get("iterative", True) else "one-shot"


def metric_names(results: dict[str, Any]) -> list[str]:
    """The metrics present in the results, main metric first."""
    names = [results["metric"]]
    for _, entry in _entries(results):
        for point in entry["curves"]["steps"]:
            names += [k for k in point if k not in names and _is_metric(k)]
    return names


def _is_metric(key: str) -> bool:
    return key not in ("k", "n", "points_seen", "seconds", "lr") and not key.endswith(("_stderr", "_ratio"))


def _table(results: dict[str, Any], curve: list[str], metric: str, key: str) -> list[str]:
    """A markdown table: one row per learner, one column per ``k`` (or ``N``), plus the best row."""
    values = sorted({p[key] for _, e in _entries(results) for p in _curve(e, curve)})
    label = "k" if key == "k" else "N"
    lines = [
        f"| learner | {' | '.join(f'{label}={v}' for v in values)} |",
        "|---" * (len(values) + 1) + "|",
    ]
    best: dict[int, tuple[float, str]] = {}
    for name, entry in _entries(results):
        points = {p[key]: p for p in _curve(entry, curve)}
        lines.append(f"| {name} | {' | '.join(_cell(points.get(v), metric) for v in values)} |")
        if entry is results.get("reference"):
            continue
        for value, point in points.items():
            if metric in point and (value not in best or point[metric] < best[value][0]):
                best[value] = (point[metric], name)
    lines.append(f"| *best* | {' | '.join(best[v][1] if v in best else '–' for v in values)} |")
    return lines


def _curve(entry: dict[str, Any], curve: list[str]) -> list[dict[str, Any]]:
    found: Any = entry["curves"]
    for part in curve:
        found = found.get(part, []) if isinstance(found, dict) else []
    return found


def _at(points: list[dict[str, Any]], key: str, value: int) -> dict[str, Any] | None:
    return next((p for p in points if p[key] == value), None)


def _changed(before: dict[str, Any], after: dict[str, Any], metric: str) -> str:
    """'improved', 'got worse' or 'no clear change', judged against two standard errors."""
    noise = 2 * math.hypot(before.get(f"{metric}_stderr", 0.0), after.get(f"{metric}_stderr", 0.0))
    delta = after[metric] - before[metric]
    if abs(delta) <= noise:
        return "no clear change"
    return "improved" if delta < 0 else "got worse"


VERDICTS = {
    "improved": "more steps helped",
    "got worse": "more steps hurt",
    "no clear change": "no clear change",
}


def summary(results: dict[str, Any]) -> list[str]:
    """A short plain-language summary generated from the numbers (lower is better throughout)."""
    metric = results["metric"]
    steps = results["evaluation"]["steps"]
    first, last = steps[0], steps[-1]
    lines = []
    learners = results["learners"]
    best = []
    for k in steps:
        scored = [(p[metric], n) for n, e in learners.items() if (p := _at(e["curves"]["steps"], "k", k))]
        if scored:
            value, name = min(scored)
            best.append(f"k={k}: {name} ({_fmt(value)})")
    lines.append(f"Best {metric} at each number of steps k — " + "; ".join(best) + ".")
    for name, entry in learners.items():
        points = entry["curves"]["steps"]
        start, end = _at(points, "k", first), _at(points, "k", last)
        if not entry.get("iterative", True) or start is None or end is None:
            continue
        change = (end[metric] - start[metric]) / start[metric] * 100 if start[metric] else 0.0
        text = (
            f"{name}: {metric} {_fmt(start[metric])} at k={first} → {_fmt(end[metric])} at k={last} "
            f"({change:+.0f}%): {VERDICTS[_changed(start, end, metric)]}"
        )
        trained = entry.get("trained_steps")
        at_trained = _at(points, "k", trained) if trained else None
        if at_trained is not None and trained < last:
            text += (
                f"; beyond its trained {trained} steps, {_fmt(at_trained[metric])} → {_fmt(end[metric])} "
                f"({_changed(at_trained, end, metric)})"
            )
        lines.append(text + ".")
    reference = results.get("reference")
    if reference:
        ref = _at(reference["curves"]["steps"], "k", last)
        ratios = sorted(
            (p[f"{metric}_ratio"], n)
            for n, e in learners.items()
            if (p := _at(e["curves"]["steps"], "k", last)) and f"{metric}_ratio" in p
        )
        if ref and ratios:
            listed = ", ".join(f"{n} {r:.2f}×" for r, n in ratios)
            lines.append(
                f"Gap to the Bayes limit at k={last} ({metric} {_fmt(ref[metric])}): {listed} "
                "(1.00× is Bayes-optimal)."
            )
    for shift in results.get("ood", {}):
        scored = [
            (p[metric], n) for n, e in learners.items() if (p := _at(_curve(e, ["ood", shift]), "k", last))
        ]
        if scored:
            value, name = min(scored)
            lines.append(
                f"Out of distribution ({shift}): best at k={last} is {name} ({metric} {_fmt(value)})."
            )
    costs = [(n, e["cost"][-1]) for n, e in learners.items() if e.get("cost")]
    if costs:
        size = max(c["n"] for _, c in costs)
        by_mode = {}
        for name, cost in costs:
            mode = _mode(learners[name])
            if cost["n"] == size and (
                mode not in by_mode or cost["peak_bytes"] > by_mode[mode][1]["peak_bytes"]
            ):
                by_mode[mode] = (name, cost)
        parts = [
            f"{mode} {name} used {c['peak_bytes'] / 2**20:.1f} MB" for mode, (name, c) in by_mode.items()
        ]
        lines.append(f"Memory of one adaptation at N={size} (largest per mode): " + "; ".join(parts) + ".")
    return lines


def summary_table(results: dict[str, Any]) -> str:
    """A plain-text table for the terminal: each learner's main metric at a few ``k``."""
    metric = results["metric"]
    steps = results["evaluation"]["steps"]
    rows = [["learner", "regime", "mode", "train CPU s", f"k={steps[0]}", f"k={steps[-1]}"]]
    if results.get("reference"):
        rows[0].append("× Bayes")
    for name, entry in _entries(results):
        points = entry["curves"]["steps"]
        start, end = _at(points, "k", steps[0]), _at(points, "k", steps[-1])
        row = [
            name,
            entry.get("regime", "reference"),
            _mode(entry) if "regime" in entry else "exact",
            f"{entry.get('train_cpu_seconds', 0.0):.0f}",
            _fmt(start[metric]) if start else "–",
            _fmt(end[metric]) if end else "–",
        ]
        if results.get("reference"):
            row.append(f"{end[f'{metric}_ratio']:.2f}" if end and f"{metric}_ratio" in end else "–")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return f"{metric} (lower is better)\n" + "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Plots


def _figure(columns: int = 1) -> tuple[Figure, list[Any]]:
    figure = Figure(figsize=(6.4 * columns, 4.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, columns, squeeze=False)[0]
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
    axis.set_yscale("log")
    axis.yaxis.set_major_formatter(PLAIN)
    axis.yaxis.set_minor_formatter(PLAIN)


def _plot_curves(axis: Any, results: dict[str, Any], curve: list[str], key: str, metric: str) -> None:
    values: set[int] = set()
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
    _log2_axis(axis, sorted(values))
    if metric in ("mse", "excess_mse"):
        _log_y(axis)
    axis.set_ylabel(f"{metric} (lower is better)")
    axis.grid(True, which="major", alpha=0.3)


def _save(figure: Figure, path: Path) -> str:
    figure.savefig(path, dpi=110)
    return path.name


def plot_steps(results: dict[str, Any], path: Path) -> str:
    """Main metric against the number of steps ``k``, with the trained range and one pass marked."""
    metric = results["metric"]
    figure, (axis,) = _figure()
    _plot_curves(axis, results, ["steps"], "k", metric)
    evaluation = results["evaluation"]
    one_pass = -(-evaluation["num_train"] // evaluation["batch_size"])
    axis.axvline(one_pass, color="gray", linestyle="-.", linewidth=1, label=f"one pass (k={one_pass})")
    trained = [
        e["trained_steps"]
        for e in results["learners"].values()
        if e.get("iterative") and "trained_steps" in e
    ]
    if trained:
        axis.axvline(
            max(trained), color="gray", linestyle=":", linewidth=1, label=f"trained up to k={max(trained)}"
        )
    axis.set_xlabel(
        f"steps k (mini-batches of {evaluation['batch_size']}; one-shot: one step on the same points)"
    )
    axis.set_title(f"{results['preset']}: {metric} vs steps")
    axis.legend(fontsize=7)
    return _save(figure, path)


def plot_sizes(results: dict[str, Any], path: Path) -> str:
    metric = results["metric"]
    figure, (axis,) = _figure()
    _plot_curves(axis, results, ["size"], "n", metric)
    axis.set_xlabel(f"training points N (one pass in mini-batches of {results['evaluation']['batch_size']})")
    axis.set_title(f"{results['preset']}: {metric} vs data set size")
    axis.legend(fontsize=7)
    return _save(figure, path)


def plot_ood(results: dict[str, Any], path: Path) -> str:
    metric = results["metric"]
    shifts = list(results["ood"])
    figure, axes = _figure(len(shifts))
    for axis, shift in zip(axes, shifts, strict=True):
        _plot_curves(axis, results, ["ood", shift], "k", metric)
        axis.set_xlabel("steps k")
        axis.set_title(f"out of distribution: {shift}")
    axes[0].legend(fontsize=7)
    return _save(figure, path)


def plot_cost(results: dict[str, Any], path: Path) -> str:
    """Adaptation time and peak tensor memory against ``N``, one-shot against iterative."""
    figure, (time_axis, memory_axis) = _figure(2)
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
    time_axis.set_title(f"adaptation time ({tasks} tasks at once)")
    memory_axis.set_title("peak tensor memory of one adaptation")
    time_axis.legend(fontsize=7)
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


def plot_training(metrics_path: Path, path: Path) -> str | None:
    """Meta-training loss per learner from the run's ``metrics.jsonl``."""
    if not metrics_path.is_file():
        return None
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for record in read_jsonl(metrics_path):
        if "iteration" not in record or "loss" not in record:
            raise RunFileError(f"{metrics_path} is not a training log: a record has no iteration and loss")
        xs, ys = curves.setdefault(record.get("learner", "learner"), ([], []))
        xs.append(record["iteration"])
        ys.append(record["loss"])
    if not curves:
        return None
    figure, (axis,) = _figure()
    for index, (name, (xs, ys)) in enumerate(curves.items()):
        window = max(1, len(ys) // 50)
        smooth = [
            sum(ys[max(0, i - window + 1) : i + 1]) / len(ys[max(0, i - window + 1) : i + 1])
            for i in range(len(ys))
        ]
        axis.plot(xs, smooth, label=name, color=f"C{index % 10}")
    axis.set_yscale("log")
    axis.set_xlabel("meta-training iteration")
    axis.set_ylabel("query loss (moving average)")
    axis.set_title("meta-training")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7)
    return _save(figure, path)


# --------------------------------------------------------------------------------------------------
# report.md


def write_report(run_dir: str | Path, results: dict[str, Any]) -> Path:
    """Write ``report.md`` and its plots into ``run_dir``; returns the report's path."""
    run_dir = Path(run_dir)
    metric = results["metric"]
    evaluation = results["evaluation"]
    one_pass = -(-evaluation["num_train"] // evaluation["batch_size"])
    lines = [f"# {results['preset']}", ""]
    if results.get("description"):
        lines += [results["description"], ""]
    lines += [
        f"Tasks: `{results['family']}`. Every learner is evaluated on the same "
        f"{evaluation['num_tasks']} tasks and reads the same mini-batch sequence: "
        f"{evaluation['num_train']} training points per task in mini-batches of "
        f"{evaluation['batch_size']} (k > {one_pass} re-reads the data), {evaluation['num_query']} query "
        "points. One-shot learners take one step on the points the first k mini-batches hold. Values are "
        "means ± standard errors over tasks; lower is better.",
        "",
        "## Summary",
        "",
        *[f"- {line}" for line in summary(results)],
        "",
        "## Learners",
        "",
        "| learner | class | regime | mode | meta-training | trained k |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in results["learners"].items():
        if entry["regime"] == "baseline" and entry.get("tune") == "none":
            training = "nothing learned or tuned"
        elif entry["regime"] == "baseline":
            training = f"lr tuned {entry.get('tune', '')} over {entry.get('lr_grid', [])}"
        else:
            training = (
                f"{entry.get('train_iterations', '?')} iterations, "
                f"{entry.get('train_cpu_seconds', 0.0):.0f} s CPU ({entry['train_seconds']:.0f} s wall)"
            )
        trained = entry.get("trained_steps", "–")
        lines.append(
            f"| {name} | {entry['class']} | {entry['regime']} | {_mode(entry)} | {training} | {trained} |"
        )
    if results.get("reference"):
        reference = results["reference"]
        lines.append(f"| {reference['name']} | {reference['class']} | exact Bayes posterior | – | – | – |")

    lines += [
        "",
        f"## {metric} against steps k",
        "",
        f"![{metric} vs k]({plot_steps(results, run_dir / 'steps.png')})",
        "",
    ]
    for name in metric_names(results):
        lines += [f"### {name}", "", *_table(results, ["steps"], name, "k"), ""]
    if results.get("reference"):
        lines += [f"### {metric} ÷ Bayes", ""]
        lines += _table(results, ["steps"], f"{metric}_ratio", "k")
        lines += [""]

    if results.get("samples"):
        lines += [
            "## Generated samples",
            "",
            "Held-out samples of the first tasks (grey) and each generator's samples from the same noise, "
            "after one pass over the task's training points (one step for one-shot learners).",
            "",
            f"![generated samples]({plot_samples(results, run_dir / 'samples.png')})",
            "",
        ]

    lines += [
        "## Data set size N",
        "",
        f"One pass over N points in mini-batches of {evaluation['batch_size']}; one-shot learners read all "
        "N at once.",
        "",
        f"![{metric} vs N]({plot_sizes(results, run_dir / 'size.png')})",
        "",
        *_table(results, ["size"], metric, "n"),
        "",
    ]
    if results.get("ood"):
        lines += [
            "## Out of distribution",
            "",
            f"![out of distribution]({plot_ood(results, run_dir / 'ood.png')})",
            "",
        ]
        for shift, family in results["ood"].items():
            lines += [
                f"### {shift}",
                "",
                f"Tasks: `{family}`.",
                "",
                *_table(results, ["ood", shift], metric, "k"),
                "",
            ]

    if any(entry.get("cost") for entry in results["learners"].values()):
        lines += [
            "## Cost of one adaptation",
            "",
            f"Wall time and peak tensor memory to adapt to {evaluation.get('cost_tasks')} tasks at once "
            "(one pass for iterative learners, one step for one-shot ones).",
            "",
            f"![cost]({plot_cost(results, run_dir / 'cost.png')})",
            "",
            "| learner | mode | " + " | ".join(f"N={n}" for n in evaluation["cost_sizes"]) + " |",
            "|---|---|" + "---|" * len(evaluation["cost_sizes"]),
        ]
        for name, entry in results["learners"].items():
            cells = {
                p["n"]: f"{p['seconds'] * 1000:.0f} ms, {p['peak_bytes'] / 2**20:.2f} MB"
                for p in entry["cost"]
            }
            row = " | ".join(cells.get(n, "–") for n in evaluation["cost_sizes"])
            lines.append(f"| {name} | {_mode(entry)} | {row} |")
        lines += [""]

    training = plot_training(run_dir / "metrics.jsonl", run_dir / "training.png")
    if training:
        lines += ["## Meta-training", "", f"![meta-training]({training})", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
