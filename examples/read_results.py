"""Read a run's ``results.json`` back into a table: each learner's main metric against the steps k.

``python examples/read_results.py RUN_DIR`` reads ``RUN_DIR/results.json`` (from ``amortized run``);
without an argument it first runs the seconds-long ``tiny`` preset into a temporary folder.
"""

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from amortized.cli import main


def read_results() -> dict[str, Any]:
    """``RUN_DIR/results.json``, or that of a ``tiny`` run in a temporary folder removed afterwards."""
    if len(sys.argv) > 1:
        return json.loads((Path(sys.argv[1]) / "results.json").read_text())
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "tiny"
        if main(["run", "tiny", "--out", str(run), "--quiet"]) != 0:
            sys.exit("the tiny run failed")
        return json.loads((run / "results.json").read_text())


def show(results: dict[str, Any]) -> None:
    """Print each learner's main metric (± its standard error) at every evaluated k."""
    metric = results["metric"]
    steps = results["evaluation"]["steps"]
    entries = dict(results["learners"])
    if results["reference"]:
        entries[results["reference"]["name"]] = results["reference"]

    print(f"\n{results['preset']}: {metric} (± standard error) on {results['family']}")
    print(f"{'learner':<22}{'regime':<12}{'mode':<10}" + "".join(f"{'k=' + str(k):>18}" for k in steps))
    for name, entry in entries.items():
        by_k = {point["k"]: point for point in entry["curves"]["steps"]}
        regime = entry.get("regime", "reference")
        mode = {True: "iterative", False: "one-shot", None: "exact"}[entry.get("iterative")]
        cells = "".join(
            f"{by_k[k][metric]:>10.4f} ± {by_k[k][metric + '_stderr']:.4f}"[-18:].rjust(18) for k in steps
        )
        print(f"{name:<22}{regime:<12}{mode:<10}{cells}")


if __name__ == "__main__":  # the run's worker processes import this file: only the main one runs it
    show(read_results())
