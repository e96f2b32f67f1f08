"""Cost against data size: adaptation wall time and peak memory for N points per task.

Series, on linear regression in 8 dimensions with one task and 64 query points:

- ``InContext`` one-shot: all N points in one step (standard in-context learning);
- ``InContext`` iterative: the same learner over mini-batches of a fixed size B, one pass;
- ``LearnedUpdate`` iterative (observations and gradients): a parametric learner, same mini-batches;
- a reference that runs what ``adapt`` does per point without any learner step (the data check and
  the shuffled mini-batch order), to tell memory that grows with the data from the learner's own.

Learners are untrained: cost does not depend on the weights. Each measurement runs in its own Python
process, which reports its peak resident memory minus that of an idle process that imports the same
modules, builds the same learner and adapts once on a tiny task; and the peak during adaptation alone
above the memory held just before it. Each process may allocate at most the memory budget beyond what
it holds before adapting (its address space is capped); a one-shot series stops at the first N that
does not fit. Slopes are fitted on log-log axes: time linear in N is slope 1, memory flat in N is
slope 0.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amortized import adapt
from amortized.learners import InContext, LearnedUpdate, Learner, minibatches
from amortized.models import Linear
from amortized.tasks import LinearRegression

ROOT = Path(__file__).resolve().parents[1]
DIM = 8
NUM_QUERY = 64
NUM_TASKS = 1
TRANSFORMER = {"width": 64, "depth": 2, "heads": 4}
MIB = 2**20
REFERENCE = "reference: data check + mini-batches, no steps"
MEMORY_FLOOR_MB = 0.1
"""Memory above idle below this is RSS noise (it can even be negative): plotted and fitted at the floor."""


@dataclass(frozen=True)
class Series:
    """A learner read with mini-batches of ``batch_size`` points, or all points at once (``None``).

    ``steps=False`` is the reference: check the data and draw the mini-batches, but take no step.
    """

    name: str
    learner: str
    batch_size: int | None
    steps: bool = True


def series(batch_size: int) -> list[Series]:
    """One-shot against iterative with mini-batches of ``batch_size``."""
    return [
        Series("InContext one-shot", "InContext", None),
        Series(f"InContext iterative (B={batch_size})", "InContext", batch_size),
        Series(f"LearnedUpdate iterative (B={batch_size})", "LearnedUpdate", batch_size),
        Series(f"{REFERENCE} (B={batch_size})", "InContext", batch_size, False),
    ]


def build_learner(name: str) -> Learner:
    """An untrained learner of the benchmark's size."""
    if name == "InContext":
        return InContext(DIM, seed=0, rule=TRANSFORMER).eval()
    if name == "LearnedUpdate":
        return LearnedUpdate(Linear(DIM), seed=0, rule=TRANSFORMER).eval()
    raise ValueError(f"unknown learner {name!r}; choose InContext or LearnedUpdate")


def _memory_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``, ``VmSize``) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    """Restart the peak resident size (``VmHWM``) from the current one (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement, in the current (fresh) process: adapt once per repeat and report the cost.

    ``num_points == 0`` is the idle reference: everything but the measured adaptation. Peaks are read
    from ``VmHWM``, not ``getrusage``: a spawned child's ``ru_maxrss`` includes its parent's peak.
    """
    torch.set_num_threads(spec["threads"])
    generator = torch.Generator().manual_seed(0)
    learner = build_learner(spec["learner"])
    family = LinearRegression(dim=DIM, noise=0.5)
    warm = family.sample(NUM_TASKS, 64, NUM_QUERY, generator)
    adapt(learner, warm.x_train, warm.y_train, batch_size=64, query_x=warm.x_query, generator=generator)
    if spec["num_points"] == 0:
        return {"status": "ok", "peak_rss_bytes": _memory_bytes("VmHWM")}

    num_points = spec["num_points"]
    tasks = family.sample(NUM_TASKS, num_points, NUM_QUERY, generator)
    batch_size = spec["batch_size"] or num_points
    budget = int(spec["budget_gb"] * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (_memory_bytes("VmSize") + budget, resource.RLIM_INFINITY))
    peak_before = _memory_bytes("VmHWM")
    _reset_peak()
    resident = _memory_bytes("VmRSS")
    seconds: list[float] = []
    try:
        while not seconds or (len(seconds) < spec["max_repeats"] and sum(seconds) < spec["min_seconds"]):
            began = time.perf_counter()
            if spec["steps"]:
                adapt(learner, tasks.x_train, tasks.y_train, batch_size=batch_size, query_x=tasks.x_query)
            else:
                x, y = learner.check_data("", tasks.x_train, tasks.y_train)
                for _ in minibatches(x, y, batch_size):
                    pass
            seconds.append(time.perf_counter() - began)
    except (RuntimeError, MemoryError) as error:
        if isinstance(error, RuntimeError) and "can't allocate memory" not in str(error):
            raise
        return {"status": "over budget", "error": str(error).splitlines()[0][:200]}
    peak_adapting = _memory_bytes("VmHWM")
    return {
        "status": "ok",
        "seconds": statistics.median(seconds),
        "repeats": len(seconds),
        "peak_rss_bytes": max(peak_before, peak_adapting),
        "adapt_bytes": peak_adapting - resident,
        "data_bytes": sum(t.numel() * t.element_size() for t in (tasks.x_train, tasks.y_train)),
    }


def _run_child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run :func:`measure` in a new Python process."""
    command = [sys.executable, "-m", "benchmarks.cost", "--child", json.dumps(spec)]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        return {"status": "failed", "error": tail[0][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def fit_slope(sizes: list[int], values: list[float]) -> float | None:
    """Slope of ``log value`` against ``log size`` (least squares); ``None`` with fewer than 2 points."""
    if len(sizes) < 2:
        return None
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def plot(path: Path, result: dict[str, Any]) -> None:
    """Time and peak memory against N, log-log, one line per series; the data's size and the budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(10, 4.6))
    for name, rows in result["series"].items():
        done = [row for row in rows if row["status"] == "ok"]
        sizes = [row["num_points"] for row in done]
        style = "s--" if name.startswith(REFERENCE) else "o-"
        time_axis.loglog(sizes, [row["seconds"] for row in done], style, label=name)
        memory_axis.loglog(sizes, [max(row["peak_mb"], MEMORY_FLOOR_MB) for row in done], style, label=name)
    longest = max(result["series"].values(), key=lambda rows: sum(row["status"] == "ok" for row in rows))
    data = [row for row in longest if row["status"] == "ok"]
    memory_axis.loglog(
        [row["num_points"] for row in data], [row["data_mb"] for row in data], "k:", label="data (x, y)"
    )
    memory_axis.axhline(1024 * result["settings"]["budget_gb"], color="grey", linestyle="--", label="budget")
    time_axis.set(xlabel="points per task N", ylabel="adaptation time (s)", title="time")
    memory_axis.set(xlabel="points per task N", ylabel="peak memory above idle (MiB)", title="memory")
    for axis in (time_axis, memory_axis):
        axis.set_xscale("log", base=2)
        axis.grid(True, which="both", alpha=0.3)
    handles, labels = memory_axis.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)


def measure_series(entry: Series, sizes: list[int], common: dict[str, Any], timeout: float) -> list[dict]:
    """Measure ``entry`` at each size in turn, each in its own process; stop at the first failure."""
    rows = []
    for num_points in sizes:
        measured = _run_child({**common, **asdict(entry), "num_points": num_points}, timeout)
        rows.append({"num_points": num_points, **measured})
        if measured["status"] != "ok":
            break
    return rows


def main(out_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Measure every series for N = 2^8 ... 2^16 and plot it.

    ``quick`` is a smoke test: one toy size, one series per learner (one-shot and iterative).
    """
    settings = {
        "sizes": [2**6] if quick else [2**k for k in range(8, 17)],
        "batch_size": 16 if quick else 64,
        "budget_gb": 4.0,
        "num_tasks": NUM_TASKS,
        "num_query": NUM_QUERY,
        "family": f"LinearRegression(dim={DIM}, noise=0.5)",
        "learners": "untrained, width 64, depth 2, 4 heads",
        "threads": torch.get_num_threads(),
        "min_seconds": 0.0 if quick else 1.0,
        "max_repeats": 1 if quick else 5,
    }
    timeout = 60.0 if quick else 900.0
    all_series = series(settings["batch_size"])
    if quick:
        all_series = [all_series[0], all_series[2]]
    common = {key: settings[key] for key in ("budget_gb", "threads", "min_seconds", "max_repeats")}
    baselines = {}
    for learner in sorted({entry.learner for entry in all_series}):
        idle = _run_child({**common, "learner": learner, "num_points": 0, "batch_size": None}, timeout)
        if idle["status"] != "ok":
            raise RuntimeError(f"the idle {learner} process failed: {idle}")
        baselines[learner] = idle["peak_rss_bytes"]
    raw = {entry: measure_series(entry, settings["sizes"], common, timeout) for entry in all_series}

    result: dict[str, Any] = {
        "settings": settings,
        "idle_rss_mb": {k: v / MIB for k, v in baselines.items()},
        "series": {},
        "slopes": {},
        "stopped": {},
    }
    for entry, measurements in raw.items():
        rows = []
        for measured_row in measurements:
            row = {"num_points": measured_row["num_points"], "status": measured_row["status"]}
            if row["status"] == "ok":
                row.update(
                    seconds=measured_row["seconds"],
                    repeats=measured_row["repeats"],
                    peak_mb=(measured_row["peak_rss_bytes"] - baselines[entry.learner]) / MIB,
                    adapt_mb=measured_row["adapt_bytes"] / MIB,
                    data_mb=measured_row["data_bytes"] / MIB,
                )
            else:
                row["error"] = measured_row.get("error", "")
                result["stopped"][entry.name] = (
                    f"stopped at N = {row['num_points']}: {row['status']} ({row['error']})"
                )
            rows.append(row)
        result["series"][entry.name] = rows
        done = [row for row in rows if row["status"] == "ok"]
        sizes = [row["num_points"] for row in done]
        result["slopes"][entry.name] = {
            "time": fit_slope(sizes, [row["seconds"] for row in done]),
            "peak_memory": fit_slope(sizes, [max(row["peak_mb"], MEMORY_FLOOR_MB) for row in done]),
            "adapt_memory": fit_slope(sizes, [max(row["adapt_mb"], MEMORY_FLOOR_MB) for row in done]),
        }
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(out_dir / "cost.png", result)
    result["plot"] = "cost.png"
    return result


def _number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def report(result: dict[str, Any]) -> str:
    """A markdown table per series, the fitted slopes, where the one-shot learner stops, and the plot."""
    settings = result["settings"]
    lines = [
        f"Adaptation of {settings['num_tasks']} task of {settings['family']} with {settings['num_query']} "
        f"query points; learners {settings['learners']} (cost does not depend on the weights). Each "
        f"measurement in its own process; memory is peak RSS above an idle process with the same imports "
        f"({', '.join(f'{k}: {v:.0f} MiB' for k, v in result['idle_rss_mb'].items())}); "
        f"*adapt* is peak RSS above the RSS just before adapting. Memory budget "
        f"{settings['budget_gb']:g} GiB per process. The reference series takes no learner step: it is "
        f"the memory `adapt` needs per point for any learner (finiteness check of the data, shuffled "
        f"order), to compare the iterative series with.",
        "",
        "| series | N | time (s) | peak memory (MiB) | adapt (MiB) | data (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, rows in result["series"].items():
        for row in rows:
            if row["status"] == "ok":
                lines.append(
                    f"| {name} | {row['num_points']} | {row['seconds']:.4f} | {row['peak_mb']:.1f} | "
                    f"{row['adapt_mb']:.1f} | {row['data_mb']:.2f} |"
                )
            else:
                lines.append(f"| {name} | {row['num_points']} | {row['status']} | | | |")
    lines += [
        "",
        f"Log-log slopes against N (time: 1 is linear, 2 quadratic; memory: 0 is flat; memory below "
        f"{MEMORY_FLOOR_MB} MiB counts as {MEMORY_FLOOR_MB} MiB), and peak memory per point at the largest N "
        f"measured (the data itself is {4 * (DIM + 1)} bytes per point):",
        "",
        "| series | time | peak memory | adapt memory | largest N | bytes / point |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, slopes in result["slopes"].items():
        done = [row for row in result["series"][name] if row["status"] == "ok"]
        largest = done[-1] if done else None
        per_point = f"{largest['peak_mb'] * MIB / largest['num_points']:.0f}" if largest else "–"
        lines.append(
            f"| {name} | {_number(slopes['time'])} | {_number(slopes['peak_memory'])} | "
            f"{_number(slopes['adapt_memory'])} | {largest['num_points'] if largest else '–'} | {per_point} |"
        )
    for name, why in result["stopped"].items():
        lines += ["", f"{name}: {why}."]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="One cost measurement (used by benchmarks.cost.main).")
    parser.add_argument("--child", required=True, help="the measurement spec, as JSON")
    print(json.dumps(measure(json.loads(parser.parse_args().child))))
