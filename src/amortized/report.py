"""The report of a run: ``report.md`` (tables, plots, a summary in plain words, provenance).

Plots are drawn with matplotlib's Agg canvas directly (no pyplot, no display, no global backend
change). Every number in the report comes from ``results.json`` and the training records of
``metrics.jsonl``; nothing is recomputed.
"""

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

PLAIN = FuncFormatter(lambda value, _: f"{value:g}")
"""Tick labels as plain numbers (0.3, 2) rather than powers of ten."""


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3g}"


def _text(value: object) -> str:
    """``value`` as one markdown table cell: results.json may be edited, so names are not trusted."""
    return " ".join(str(value).split()).replace("|", "\\|")


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
        lines.append(f"| {_text(name)} | {' | '.join(_cell(points.get(v), metric) for v in values)} |")
        if entry is results.get("reference"):
            continue
        for value, point in points.items():
            if metric in point and (value not in best or point[metric] < best[value][0]):
                best[value] = (point[metric], name)
    lines.append(f"| *best* | {' | '.join(_text(best[v][1]) if v in best else '–' for v in values)} |")
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


TREND_DROP = 0.10
"""A learner whose loss fell by more than this share over the last fifth of meta-training was still
improving when training stopped: it looks under-trained."""
TREND_RECORDS = 2
"""Records each of the two last fifths of meta-training needs for the trend to be judged."""
FAR_WORSE = 1.5
"""A learned learner at least this many times a tuned baseline's metric at every k it was trained
for has not learned what a per-task optimizer finds alone: it looks under-trained."""


def _is_learned(entry: dict[str, Any]) -> bool:
    return entry.get("regime", "reference") not in ("baseline", "reference")


def _label(name: str, entry: dict[str, Any]) -> str:
    return f"{name} (baseline)" if entry.get("regime") == "baseline" else name


def _best_by_k(results: dict[str, Any]) -> str | None:
    """Which learner has the lowest main metric at each k, consecutive k with one winner grouped."""
    metric, learners = results["metric"], results["learners"]
    winners: list[tuple[int, str, float]] = []
    for k in results["evaluation"]["steps"]:
        scored = [(p[metric], n) for n, e in learners.items() if (p := _at(e["curves"]["steps"], "k", k))]
        if scored:
            value, name = min(scored)
            winners.append((k, name, value))
    groups: list[list[tuple[int, str, float]]] = []
    for winner in winners:
        if groups and groups[-1][-1][1] == winner[1]:
            groups[-1].append(winner)
        else:
            groups.append([winner])
    if not groups:
        return None
    parts = []
    for group in groups:
        (k0, name, v0), (k1, _, v1) = group[0], group[-1]
        where = f"k={k0}" if k0 == k1 else f"k={k0}–{k1}"
        values = _fmt(v0) if k0 == k1 else f"{_fmt(v0)} → {_fmt(v1)}"
        parts.append(f"{_label(name, learners[name])} at {where} ({values})")
    return f"Lowest {metric} by number of steps: " + "; ".join(parts) + "."


def _bayes_gap(results: dict[str, Any]) -> str | None:
    """How far the best learned learner is from the Bayes reference at the first and last k."""
    if not results.get("reference"):
        return None
    metric, steps = results["metric"], results["evaluation"]["steps"]
    found = []
    for k in dict.fromkeys((steps[0], steps[-1])):
        ratios = [
            (p[f"{metric}_ratio"], n)
            for n, e in results["learners"].items()
            if _is_learned(e) and (p := _at(e["curves"]["steps"], "k", k)) and f"{metric}_ratio" in p
        ]
        if ratios:
            ratio, name = min(ratios)
            found.append(f"at k={k}, {name} at {ratio:.2f}× the Bayes {metric}")
    if not found:
        return None
    return "Closest learned learner to the Bayes posterior: " + "; ".join(found) + " (1.00× is optimal)."


def _trend(records: list[dict[str, Any]], key: str, logged: bool = False) -> float | None:
    """How much ``key`` fell over the last fifth of the records' iterations, against the fifth before.

    A share of the earlier mean (0.2: it fell by a fifth); ``None`` if either fifth holds fewer than
    :data:`TREND_RECORDS` records or a value that is not positive (a share of it means nothing).
    ``logged``: the values are logs of the loss (``loss_scale = "log"``, negative once the loss is
    below 1), so the share is that of the geometric means.
    """
    points = [(r["iteration"], r[key]) for r in records if isinstance(r.get(key), int | float)]
    if not points:
        return None
    end = max(iteration for iteration, _ in points)
    last = [v for i, v in points if i > 0.8 * end]
    before = [v for i, v in points if 0.6 * end < i <= 0.8 * end]
    if min(len(last), len(before)) < TREND_RECORDS:
        return None
    if logged:
        return 1 - math.exp(sum(last) / len(last) - sum(before) / len(before))
    if min(last + before) <= 0:
        return None
    return 1 - (sum(last) / len(last)) / (sum(before) / len(before))


def undertrained(
    results: dict[str, Any], training: dict[str, list[dict[str, Any]]]
) -> tuple[dict[str, str], list[str]]:
    """Learned learners that look under-trained, each with why, and those whose trend cannot be judged.

    Two rules, simple on purpose: (1) the learner was still improving when meta-training stopped:
    its held-out metric (``eval_<metric>`` in ``metrics.jsonl``; the training loss if too few
    evaluations were logged) fell by more than :data:`TREND_DROP` over the last fifth of the
    iterations, against the fifth before; (2) it is at least :data:`FAR_WORSE` times the metric of
    a baseline with a tuned learning rate (a per-task optimizer, not a fixed reference such as the
    task's own samples) at every k it was trained for (every k, for a one-shot learner).
    """
    metric, learners = results["metric"], results["learners"]
    baselines = {
        n: e
        for n, e in learners.items()
        if e.get("regime") == "baseline" and e.get("tune") in ("per_k", "once")
    }
    found: dict[str, str] = {}
    unjudged = []
    for name, entry in learners.items():
        if not _is_learned(entry):
            continue
        records = training.get(name, [])
        reasons = []
        for key, what in ((f"eval_{metric}", f"held-out {metric}"), ("loss", "training loss")):
            drop = _trend(records, key, logged=key == "loss" and entry.get("loss_scale") == "log")
            if drop is not None:
                if drop > TREND_DROP:
                    reasons.append(
                        f"its {what} still fell {100 * drop:.0f}% over the last fifth of meta-training"
                    )
                break
        else:
            unjudged.append(name)
        trained = entry.get("trained_steps") if entry.get("iterative", True) else None
        points = [
            p for p in entry["curves"]["steps"] if metric in p and (trained is None or p["k"] <= trained)
        ]
        for baseline, other in baselines.items():
            pairs = [
                (p[metric], q[metric]) for p in points if (q := _at(other["curves"]["steps"], "k", p["k"]))
            ]
            if pairs and all(base > 0 and mine >= FAR_WORSE * base for mine, base in pairs):
                low = min(mine / base for mine, base in pairs)
                where = f"up to its trained k={trained}" if trained is not None else ""
                reasons.append(
                    f"{low:.1f}× or more the {metric} of the tuned baseline {baseline} at every k "
                    f"{where}".rstrip()
                )
                break
        if reasons:
            found[name] = "; ".join(reasons)
    return found, unjudged


def _undertrained_lines(results: dict[str, Any], training: dict[str, list[dict[str, Any]]]) -> list[str]:
    found, unjudged = undertrained(results, training)
    lines = []
    if found:
        listed = "; ".join(f"**{name}** ({why})" for name, why in found.items())
        lines.append(
            f"Possibly under-trained, so their numbers understate what they can do (train longer with "
            f"--set train.iterations=N): {listed}."
        )
    elif not unjudged and any(_is_learned(e) for e in results["learners"].values()):
        lines.append(
            f"No learner looks under-trained: none was still improving by more than {100 * TREND_DROP:.0f}% "
            f"over the last fifth of meta-training, and none is {FAR_WORSE}× a tuned baseline at every "
            "k it was trained for."
        )
    if unjudged:
        lines.append(
            f"Too few iterations were logged to judge whether {', '.join(unjudged)} "
            f"{'was' if len(unjudged) == 1 else 'were'} still improving."
        )
    return lines


def summary(results: dict[str, Any], training: dict[str, list[dict[str, Any]]] | None = None) -> list[str]:
    """A short plain-language summary generated from the numbers (lower is better throughout).

    ``training`` holds each learner's records from the run's ``metrics.jsonl``, for the
    under-training check (:func:`undertrained`).
    """
    metric = results["metric"]
    steps = results["evaluation"]["steps"]
    first, last = steps[0], steps[-1]
    learners = results["learners"]
    lines = [line for line in (_best_by_k(results), _bayes_gap(results)) if line]
    if training is not None:
        lines += _undertrained_lines(results, training)
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


def write_report(run_dir: str | Path, results: dict[str, Any]) -> Path:
    """Write ``report.md`` and its plots into ``run_dir``; returns the report's path."""
    run_dir = Path(run_dir)
    metric = results["metric"]
    evaluation = results["evaluation"]
    one_pass = -(-evaluation["num_train"] // evaluation["batch_size"])
    history = read_training(run_dir / "metrics.jsonl")
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
        *[f"- {line}" for line in summary(results, history)],
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
            f"| {_text(name)} | {_text(entry['class'])} | {_text(entry['regime'])} | {_mode(entry)} "
            f"| {training} | {trained} |"
        )
    if results.get("reference"):
        reference = results["reference"]
        lines.append(
            f"| {_text(reference['name'])} | {_text(reference['class'])} "
            "| exact Bayes posterior | – | – | – |"
        )

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
                f"Shifted: {shift_description(results['family'], family)}. Tasks: `{family}`.",
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
            lines.append(f"| {_text(name)} | {_mode(entry)} | {row} |")
        lines += [""]

    plot = plot_training(history, run_dir / "training.png", results)
    if plot:
        lines += ["## Meta-training", "", f"![meta-training]({plot})", ""]
    lines += _provenance(results.get("provenance"))
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def _seconds(value: float) -> str:
    minutes, seconds = divmod(round(value), 60)
    return f"{value:.1f} s" if value < 60 else f"{minutes} min {seconds} s"


def _provenance(record: dict[str, Any] | None) -> list[str]:
    """The report's last section: how the results were made (results written before it have none)."""
    if not record:
        return []
    git = record.get("git")
    commit = "not a git checkout"
    if git:
        commit = f"{git['commit']}" + (" with uncommitted changes" if git.get("uncommitted_changes") else "")
    seeds = record.get("seeds", {})
    train_seeds = ", ".join(map(str, sorted(set(seeds.get("train", {}).values())))) or "–"
    rows = [
        ("command", f"`{record['command']}`".replace("|", "\\|") if record.get("command") else "–"),
        ("versions", f"amortized {record['amortized']}, torch {record['torch']}, Python {record['python']}"),
        ("git commit", commit),
        ("platform", record.get("platform", "–")),
        (
            "seeds",
            f"meta-training {train_seeds}, evaluation {seeds.get('evaluation', '–')}",
        ),
        (
            "CPU time",
            f"{_seconds(record['cpu_seconds'])}: meta-training {_seconds(record['train_cpu_seconds'])}, "
            f"evaluation {_seconds(record['evaluation_cpu_seconds'])} (summed over learners and baselines)",
        ),
        (
            "wall time",
            f"{_seconds(record['wall_seconds'])} summed over learners and baselines (meta-training "
            f"{_seconds(record['train_wall_seconds'])}, evaluation "
            f"{_seconds(record['evaluation_wall_seconds'])}; some may have run at once)"
            + (
                f"; this command took {_seconds(record['command_wall_seconds'])}"
                if record.get("command_wall_seconds") is not None
                else ""
            ),
        ),
        ("finished", record.get("finished", "–")),
    ]
    return ["## Provenance", "", "| | |", "|---|---|", *[f"| {key} | {value} |" for key, value in rows], ""]
