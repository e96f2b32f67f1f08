"""The report's words and tables: the summary in plain words, the metric tables and the terminal table.

Everything comes from ``results.json`` and the training records of ``metrics.jsonl``; nothing is
recomputed.
"""

from __future__ import annotations

import math
from typing import Any


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
