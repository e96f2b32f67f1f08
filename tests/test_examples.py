"""The example scripts run (smoke runs at toy budgets)."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_generate_samples_example_prints_scores_for_each_generator():
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "generate_samples.py"), "--iterations", "4"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = run.stdout.strip().splitlines()
    assert [line.split(":")[0].strip() for line in lines] == ["FlowMatching", "GaussianMixtureFit"]
    assert all("energy distance" in line and "true-density NLL" in line for line in lines)
