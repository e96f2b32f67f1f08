"""Read a run's ``results.json`` back into a table: each learner's main metric against the steps k.

``python examples/read_results.py RUN_DIR`` reads ``RUN_DIR/results.json`` (from ``amortized run``);
without an argument it first runs the seconds-long ``tiny`` preset into a temporary folder.
"""

import json
import sys
import tempfile
from pathlib import Path

from amortized.cli import main


def results_path() -> Path:
    if len(sys.argv) > 1:
        return Path(sys.argv[1]) / "results.json"
    folder = Path(tempfile.mkdtemp()) / "tiny"
    main(["run", "tiny", "--out", str(folder), "--quiet"])
    return folder / "results.json"


results = json.loads(results_path().read_text())
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
