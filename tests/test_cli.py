import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import amortized.experiments
from amortized.checkpoints import load_checkpoint
from amortized.cli import EXIT_ERROR, EXIT_INTERRUPTED, main
from amortized.config import Experiment
from amortized.errors import CheckpointError
from amortized.experiments import RunFolder
from amortized.folders import lock_folder
from amortized.preset_files import list_presets

from .conftest import FAST

SETS = [arg for option in FAST for arg in ("--set", option)]


def run_cli(capsys, *argv):
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_presets_lists_each_preset_with_its_description(capsys):
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == len(list_presets())
    for (name, description), line in zip(list_presets(), lines, strict=True):
        assert line.startswith(name) and line.endswith(description)


@pytest.mark.parametrize("command", [[], ["run"], ["train"], ["evaluate"], ["report"], ["presets"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: amortized" in capsys.readouterr().out


NO_TORCH = """
import sys
from amortized.cli import main
for argv in {argvs}:
    try:
        main(argv)
    except SystemExit:
        pass
print("torch imported:", "torch" in sys.modules)
"""


def test_help_presets_and_usage_errors_come_before_torch_is_imported():
    argvs = [
        ["--help"],
        ["run", "--help"],
        ["presets"],
        ["run", "quickstrat"],
        ["train", "tiny", "--set", "train.iterations"],
        ["run", "tiny", "--set", "trian.iterations=3"],
        ["run", "tiny", "--resume", "somewhere"],
        ["evaluate"],
        ["run", "--threads", "0"],
    ]
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH.format(argvs=argvs)], capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines()[-1] == "torch imported: False", done.stderr
    assert "usage: amortized run" in done.stdout and "quickstart " in done.stdout
    for message in (
        "amortized run: error: unknown preset 'quickstrat'",
        "amortized train: error: --set expects key=value",
        "amortized run: error: unknown key 'trian'",
        "amortized run: error: --resume finishes a run",
        "amortized evaluate: error: the following arguments are required: RUN_DIR",
        "amortized run: error: argument --threads: expected a positive integer, got 0",
    ):
        assert message in done.stderr


def test_the_public_names_are_listed_and_imported_on_first_use():
    import amortized

    assert set(amortized.__all__) <= set(dir(amortized))
    for name in amortized.__all__:
        assert getattr(amortized, name).__name__ == name
    with pytest.raises(AttributeError, match="has no attribute 'trian'"):
        amortized.trian  # noqa: B018 - the attribute access is what is tested


def test_without_a_command_prints_help(capsys):
    code, out, _ = run_cli(capsys)
    assert code == 0 and "run" in out and "presets" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "quickstrat"], "unknown preset 'quickstrat'; valid presets: alphabet, digits"),
        (
            ["run", "tiny", "--set", "train.iterations=abc"],
            "train: iterations must be an integer, got str 'abc'",
        ),
        (["run", "tiny", "--set", "train.iteration=3"], "unknown key(s) train.iteration; valid:"),
        (["train", "mnist"], "pass --set data.root=DIR"),
        (["run", "fashion-mnist", "--set", "data.root=/no/such/dir"], "/no/such/dir does not exist"),
        (["run", "--resume", "{tmp}"], "is not a run folder (no config.toml)"),
        (["run", "tiny", "--resume", "{tmp}"], "--resume finishes a run as its config.toml describes"),
        (["evaluate", "{tmp}"], "is not a run folder"),
        (["report", "{tmp}"], "is not a run folder"),
        (["run", "tiny", "--device", "tpu0"], "--device: unknown device 'tpu0'; use 'cpu', 'cuda'"),
        (["evaluate", "{tmp}", "--device", "gpu"], "--device: unknown device 'gpu'"),
    ],
)
def test_documented_mistakes_end_with_a_one_line_error(argv, message, capsys, tmp_path):
    out = tmp_path / "out"
    argv = [a.format(tmp=tmp_path) for a in argv]
    if argv[0] in ("run", "train") and "--resume" not in argv:
        argv += ["--out", out]
    code, _, stderr = run_cli(capsys, *argv)
    assert code == EXIT_ERROR
    assert message in stderr and stderr.startswith(f"amortized {argv[0]}: error: ")
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert not out.exists()  # nothing is written before the preset is known to be good


def test_run_writes_the_whole_run_folder_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = run_cli(capsys, "run", "tiny", "--out", out, "--threads", "1", *SETS)
    assert code == 0
    for name in (
        "config.toml",
        "metrics.jsonl",
        "results.json",
        "report.md",
        "steps.png",
        "size.png",
        "ood.png",
        "cost.png",
        "training.png",
    ):
        assert (out / name).is_file(), name
    for learner in ("LearnedUpdate", "MAML", "LatentUpdate", "InContext-one-shot"):
        assert (out / "learners" / learner / "checkpoint.pt").is_file()
        assert f"{learner} " in stdout
    assert "mse (lower is better)" in stdout and f"report: {out / 'report.md'}" in stdout
    assert "[1/4] LearnedUpdate (parametric, iterative): meta-training for 6 iterations" in stderr
    # progress to a file or pipe: a line per tenth of the work, not a redrawn bar
    assert "LearnedUpdate: meta-training 6/6 iterations (100%)" in stderr and "\r" not in stderr
    assert "MAML: evaluating 1/4 parts (25%)" in stderr and "now: size curve, N up to 16" in stderr
    assert "SGD: evaluating" in stderr and "now: tuning the learning rate at k=4" in stderr
    provenance = json.loads((out / "results.json").read_text())["provenance"]
    assert provenance["command"].startswith(f"amortized run tiny --out {out} --threads 1 --set")
    assert provenance["torch"] == torch.__version__ and provenance["seeds"]["evaluation"] == 987_654_321
    assert provenance["cpu_seconds"] > 0 and provenance["command_wall_seconds"] > 0
    assert provenance["device"] == "cpu"
    assert "## Provenance" in (out / "report.md").read_text()

    code, stdout, stderr = run_cli(capsys, "run", "--resume", out, "--quiet")
    assert code == 0 and stderr == "" and "mse (lower is better)" in stdout

    code, _, stderr = run_cli(capsys, "run", "tiny", "--out", out, *SETS)
    assert code == EXIT_ERROR and f"--resume {out}" in stderr


def test_train_evaluate_report_in_steps(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "train", "tiny", "--out", out, "--quiet", *SETS)
    assert code == 0 and "MAML: 6 iterations" in stdout and f"amortized evaluate {out}" in stdout
    assert not (out / "results.json").exists()
    code, _, stderr = run_cli(capsys, "report", out)
    assert code == EXIT_ERROR and f"amortized evaluate {out}" in stderr

    code, stdout, _ = run_cli(capsys, "evaluate", out, "--quiet")
    assert code == 0 and "× Bayes" in stdout
    results = json.loads((out / "results.json").read_text())
    assert results["preset"] == "tiny" and results["reference"]["name"] == "Bayes"
    assert not (out / "report.md").exists()

    code, stdout, _ = run_cli(capsys, "report", out)
    assert code == 0 and (out / "report.md").is_file() and (out / "steps.png").is_file()


def test_jobs_train_and_evaluate_in_parallel_processes_with_the_same_numbers(tmp_path, capsys):
    runs = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        code, _, stderr = run_cli(capsys, "run", "tiny", "--out", out, "--jobs", jobs, *SETS)
        assert code == 0
        runs[jobs] = json.loads((out / "results.json").read_text())
    assert "LearnedUpdate: trained (6 iterations" in stderr and "processes" in stderr
    for name, entry in runs[1]["learners"].items():
        parallel = runs[2]["learners"][name]
        for one, two in zip(entry["curves"]["steps"], parallel["curves"]["steps"], strict=True):
            assert one["mse"] == two["mse"], name


def test_a_bad_per_learner_value_names_the_learner(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, stderr = run_cli(
        capsys, "train", "tiny", "--out", out, "--set", "learners.MAML.train.iterations=0"
    )
    assert code == EXIT_ERROR and "learners.MAML.train: iterations must be > 0, got 0" in stderr


def test_run_without_a_preset_runs_quickstart(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(amortized.experiments, "train_learners", lambda *args, **options: {})
    out = tmp_path / "run"
    code, _, _ = run_cli(capsys, "train", "--out", out, "--quiet")
    assert code == 0
    assert 'preset = "quickstart"' in (out / "config.toml").read_text()


def _iteration(path):
    """The iteration a checkpoint was written at, or None while there is none (or it is being replaced)."""
    try:
        return load_checkpoint(path, fallback=False)["iteration"]
    except CheckpointError:
        return None


def test_ctrl_c_stops_cleanly_and_leaves_a_resumable_folder(tmp_path, capsys):
    out = tmp_path / "run"
    sets = [*FAST, "learners.MAML.train.iterations=100000", "learners.MAML.train.checkpoint_every=20"]
    command = [
        sys.executable,
        "-m",
        "amortized.cli",
        "run",
        "tiny",
        "--out",
        str(out),
        "--quiet",
        "--threads",
        "1",
    ]
    process = subprocess.Popen(
        command + [a for s in sets for a in ("--set", s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell that starts the suite in the background ignores SIGINT; Ctrl-C must reach the run.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    checkpoint = out / "learners" / "MAML" / "checkpoint.pt"
    finished = out / "learners" / "LearnedUpdate" / "checkpoint.pt"
    deadline = time.monotonic() + 240
    try:
        # Learners may train in parallel: interrupt once LearnedUpdate finished and MAML checkpointed.
        while not (checkpoint.exists() and _iteration(finished) == 6):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "MAML never wrote a checkpoint"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()  # a failed test leaves no run training on
    assert process.returncode == EXIT_INTERRUPTED, stderr
    assert stderr.strip() == f"amortized run: interrupted; finish it with: amortized run --resume {out}"
    assert load_checkpoint(out / "learners" / "LearnedUpdate" / "checkpoint.pt")["iteration"] == 6
    assert load_checkpoint(checkpoint)["iteration"] >= 20
    assert not (out / "results.json").exists()
    code, _, stderr = run_cli(capsys, "evaluate", out)
    assert code == EXIT_ERROR
    assert f"MAML, LatentUpdate, InContext-one-shot in {out} are not fully trained" in stderr
    assert f"amortized train --resume {out}" in stderr


ONE_LEARNER = """
[family]
class = "LinearRegression"
dim = 2
noise = 0.1

[train]
iterations = 3
tasks_per_batch = 4
batch_size = 4
num_steps = 2
eval_every = 0

[[learners]]
name = "MAML"
class = "LearnedInit"
kwargs = { rule = { inner_lr = 0.1 } }
"""
"""A preset that meta-trains one small learner in a blink."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run folder of ``ONE_LEARNER``, meta-trained (not evaluated); tests change copies of it."""
    folder = tmp_path_factory.mktemp("trained")
    (folder / "one.toml").write_text(ONE_LEARNER)
    assert main(["train", str(folder / "one.toml"), "--out", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


def copy_of(run, tmp_path):
    return Path(shutil.copytree(run, tmp_path / "run"))


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--resume", "{run}"],
        ["train", "--resume", "{run}"],
        ["evaluate", "{run}"],
        ["report", "{run}"],
    ],
)
def test_a_run_folder_another_process_writes_into_is_refused(argv, tmp_path, capsys):
    run = RunFolder.create(tmp_path / "run", Experiment.from_preset("tiny", FAST))
    config = run.config_path.read_text()
    with lock_folder(run.path):
        code, _, stderr = run_cli(capsys, *[a.format(run=run.path) for a in argv])
    assert code == EXIT_ERROR and len(stderr.strip().splitlines()) == 1
    assert stderr.startswith(f"amortized {argv[0]}: error: {run.path} is locked by process {os.getpid()},")
    assert sorted(p.name for p in run.path.iterdir()) == [".lock", "config.toml"]
    assert run.config_path.read_text() == config
    code, _, stderr = run_cli(capsys, "report", run.path)  # free again: the refused command kept no lock
    assert code == EXIT_ERROR and "has no results.json yet" in stderr


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "results.json is empty"),
        (
            b'{"format": "amortized-results", "learners": {"MAML": {"cla',
            "results.json is cut short or damaged",
        ),
        (b"[]", "results.json holds a JSON list, not an object"),
        (b'{"learners": {}}', "results.json is not an amortized-results file (its format is None)"),
    ],
)
def test_report_names_a_damaged_or_foreign_results_file(content, problem, tmp_path, capsys):
    run = RunFolder.create(tmp_path / "run", Experiment.from_preset("tiny", FAST))
    run.results_path.write_bytes(content)
    code, _, stderr = run_cli(capsys, "report", run.path)
    assert code == EXIT_ERROR and len(stderr.strip().splitlines()) == 1
    assert f"error: {run.path / problem}" in stderr and f"amortized evaluate {run.path}" in stderr


def test_evaluate_names_a_config_that_is_binary(tmp_path, capsys):
    run = RunFolder.create(tmp_path / "run", Experiment.from_preset("tiny", FAST))
    run.config_path.write_bytes(b"\x80\x04\x95preset\x00\xff")
    code, _, stderr = run_cli(capsys, "evaluate", run.path)
    assert code == EXIT_ERROR and len(stderr.strip().splitlines()) == 1
    assert f"error: {run.config_path} is not valid TOML: it holds binary data" in stderr


def test_resume_drops_a_metrics_line_cut_short(trained, tmp_path, capsys):
    run = copy_of(trained, tmp_path)
    metrics = run / "learners" / "MAML" / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    assert len(lines) == 3
    metrics.write_text("".join(lines[:2]) + lines[2][:20])
    code, _, stderr = run_cli(capsys, "train", "--resume", run, "--quiet")
    assert code == 0, stderr
    assert metrics.read_text() == "".join(lines[:2])
    merged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [record["iteration"] for record in merged] == [1, 2]


def test_evaluate_refuses_a_config_whose_family_the_learners_were_not_trained_on(trained, tmp_path, capsys):
    run = copy_of(trained, tmp_path)
    config = run / "config.toml"
    config.write_text(config.read_text().replace("noise = 0.1\n", "noise = 0.3\n", 1))
    code, _, stderr = run_cli(capsys, "evaluate", run, "--quiet")
    assert code == EXIT_ERROR and len(stderr.strip().splitlines()) == 1
    assert "checkpoint.pt was trained on LinearRegression(dim=2, noise=0.1," in stderr
    assert f"but {config} describes LinearRegression(dim=2, noise=0.3," in stderr
    assert not (run / "results.json").exists()
