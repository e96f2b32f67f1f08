"""The report of a run: ``report.md`` (tables, plots, a summary in plain words, provenance).

Plots are drawn with matplotlib's Agg canvas directly (no pyplot, no display, no global backend
change). Every number in the report comes from ``results.json`` and the training records of
``metrics.jsonl``; nothing is recomputed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from amortized.report.plots import (
    plot_cost,
    plot_ood,
    plot_samples,
    plot_sizes,
    plot_steps,
    plot_training,
    read_training,
    shift_description,
)
from amortized.report.tables import (
    _mode,
    _table,
    _text,
    metric_names,
    summary,
    summary_table,
    undertrained,
)

__all__ = [
    "plot_cost",
    "plot_ood",
    "plot_samples",
    "plot_sizes",
    "plot_steps",
    "plot_training",
    "read_training",
    "shift_description",
    "summary",
    "summary_table",
    "undertrained",
    "write_report",
]


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
        (
            "platform",
            record.get("platform", "–") + (f", device {record['device']}" if "device" in record else ""),
        ),
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
