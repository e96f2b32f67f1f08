"""The ``amortized`` command: run presets, train, evaluate, report, list presets.

Documented mistakes (an unknown preset or key, a wrong value type, missing data files, a run folder
that is not one or has a damaged file, a run folder another command is writing into) end with a
one-line error and exit status 2; Ctrl-C ends with status 130 and says how to resume. A command
holds its run folder's lock until it ends, so two commands never write into one folder at once.
Torch and the modules that need it are imported only once a command needs them: help, ``presets``
and the usage errors of arguments, preset names and ``--set`` syntax come at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amortized import __version__
from amortized.errors import AmortizedError, ConfigError
from amortized.preset_files import DEFAULT_PRESET, list_presets, read_preset

if TYPE_CHECKING:
    from amortized.config import Experiment
    from amortized.experiments import RunFolder, Trained

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class _Session:
    """What a command works with: its preset, read before torch loads, and its locked run folder."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.started = time.time()
        self.preset: tuple[str, dict[str, Any]] | None = None
        self.run: RunFolder | None = None
        self.locks = ExitStack()

    def enter(self, run: RunFolder) -> RunFolder:
        """Work in ``run``, holding its lock until the command ends; refused if another process writes.

        Under ``torchrun`` rank 0 takes the lock for every rank (and every rank stops if it cannot);
        the ranks ``--nproc`` starts take none, as their parent holds it.
        """
        from amortized import distributed
        from amortized.folders import lock_folder

        distributed.from_main(lambda: self.locks.enter_context(lock_folder(run.path)))
        self.run = run
        return run


def _log(quiet: bool) -> Callable[[str], None]:
    return (lambda message: None) if quiet else (lambda message: print(message, file=sys.stderr, flush=True))


def _read_preset(args: argparse.Namespace) -> tuple[str, dict[str, Any]] | None:
    """The preset of ``run`` or ``train`` with its overrides, checked as far as it can be without torch.

    ``None`` for other commands and for ``--resume``, whose run folder holds the preset.
    """
    if args.command not in ("run", "train"):
        return None
    if args.resume:
        if args.preset or args.set or args.out:
            raise ConfigError(
                "--resume finishes a run as its config.toml describes; drop PRESET, --out and --set"
            )
        return None
    return read_preset(args.preset or DEFAULT_PRESET, args.set)


def _start(args: argparse.Namespace, session: _Session) -> tuple[Experiment, RunFolder]:
    """A new run folder from the session's preset, or the folder given to ``--resume``."""
    from amortized import distributed
    from amortized.config import Experiment
    from amortized.experiments import RunFolder

    if session.preset is None:
        run = session.enter(RunFolder.open(args.resume))
        return run.experiment(), run
    experiment = Experiment.from_config(*session.preset)
    out = args.out or Path("runs") / f"{experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = session.enter(RunFolder(distributed.from_main(lambda: RunFolder.create(out, experiment).path)))
    return experiment, run


def _run(args: argparse.Namespace, session: _Session) -> int:
    from amortized import distributed
    from amortized.experiments import evaluate_experiment
    from amortized.report import summary_table, write_report

    log = _log(args.quiet)
    experiment, run = _start(args, session)
    log(f"run folder: {run.path}")
    trained = _meta_train(args, experiment, run, log)
    if not distributed.is_main():
        return 0
    results = evaluate_experiment(
        experiment,
        run,
        trained,
        log=log,
        jobs=_jobs(args),
        progress=not args.quiet,
        command=session.command,
        started=session.started,
        device=args.device,
    )
    report = write_report(run.path, results)
    print(summary_table(results))
    print(f"\nreport: {report}")
    return 0


def _train(args: argparse.Namespace, session: _Session) -> int:
    from amortized.folders import HELD_ENV

    log = _log(args.quiet)
    experiment, run = _start(args, session)
    if not os.environ.get(HELD_ENV):  # ranks of `--nproc` work for a parent that named the folder
        log(f"run folder: {run.path}")
    trained = _meta_train(args, experiment, run, log)
    for name, item in trained.items():
        print(f"{name}: {item.iterations} iterations, {item.train_cpu_seconds:.1f} s of CPU")
    print(f"\nevaluate with: amortized evaluate {run.path}")
    return 0


def _meta_train(
    args: argparse.Namespace, experiment: Experiment, run: RunFolder, log: Callable[[str], None]
) -> dict[str, Trained]:
    """Meta-train here (alone, or as one rank under torchrun), or in ``--nproc`` processes via torchrun."""
    from amortized import distributed, launch
    from amortized.experiments import load_trained, train_learners

    if args.nproc > 1 and not distributed.launched_by_torchrun():
        launch.launch_training(
            run.path,
            args.nproc,
            quiet=args.quiet,
            threads=args.threads,
            device=args.device,
            tasks_per_batch=[spec.train.tasks_per_batch for spec in experiment.learners],
        )
        return load_trained(experiment, run, args.device)
    return train_learners(
        experiment, run, progress=not args.quiet, log=log, jobs=_jobs(args), device=args.device
    )


def _jobs(args: argparse.Namespace) -> int:
    """``--jobs``, or its default; one process under torchrun, whose ranks already share the work."""
    from amortized import distributed

    if distributed.launched_by_torchrun():
        return 1
    return args.jobs if args.jobs is not None else _default_jobs()


def _evaluate(args: argparse.Namespace, session: _Session) -> int:
    from amortized.experiments import RunFolder, evaluate_experiment, load_trained
    from amortized.report import summary_table

    run = session.enter(RunFolder.open(args.run_dir))
    experiment = run.experiment()
    trained = load_trained(experiment, run, args.device)
    results = evaluate_experiment(
        experiment,
        run,
        trained,
        log=_log(args.quiet),
        jobs=_jobs(args),
        progress=not args.quiet,
        command=session.command,
        started=session.started,
        device=args.device,
    )
    print(summary_table(results))
    print(f"\nresults: {run.results_path}\nwrite the report with: amortized report {run.path}")
    return 0


def _report(args: argparse.Namespace, session: _Session) -> int:
    from amortized.experiments import RunFolder
    from amortized.report import write_report

    run = session.enter(RunFolder.open(args.run_dir))
    print(f"report: {write_report(run.path, run.read_results())}")
    return 0


def _presets(args: argparse.Namespace, session: _Session) -> int:
    entries = list_presets()
    width = max(len(name) for name, _ in entries)
    for name, description in entries:
        print(f"{name.ljust(width)}  {description}")
    return 0


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "preset",
        nargs="?",
        help=f"a preset name (see `amortized presets`) or a path to a .toml file; default: {DEFAULT_PRESET}",
    )
    parser.add_argument("--out", type=Path, help="the run folder to write (default: runs/PRESET-TIMESTAMP)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset value, e.g. --set train.iterations=200 --set learners.MAML.train.lr=0.01 "
        "(repeatable; values are TOML: 3, 1e-3, true, [1, 16], or a bare string)",
    )
    parser.add_argument("--resume", type=Path, metavar="DIR", help="finish the run in DIR where it stopped")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or progress messages")
    _add_compute_options(parser)
    parser.add_argument(
        "--nproc",
        type=_positive_int,
        default=1,
        metavar="N",
        help="meta-train in N processes on this machine (torchrun, gloo on CPU / nccl on GPUs); "
        "tasks_per_batch stays the global batch and must be divisible by N (default: 1)",
    )


def _default_jobs() -> int:
    """``AMORTIZED_JOBS`` if set, else the CPU cores this process may use."""
    if os.environ.get("AMORTIZED_JOBS"):
        return _positive_int(os.environ["AMORTIZED_JOBS"])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _add_compute_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jobs",
        type=_positive_int,
        metavar="N",
        default=None,
        help="learners meta-trained and evaluated at once, each in its own process with --threads "
        "threads (default: the CPU cores, or AMORTIZED_JOBS); the numbers do not depend on it",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        default=1,
        help="CPU threads for torch (default 1: the preset models are small, and threads that compete "
        "for cores slow torch down many times over; raise it for large models on an idle machine)",
    )
    parser.add_argument(
        "--device",
        metavar="DEVICE",
        default=None,
        help="where learners and baselines with weights compute: cpu (default), cuda, cuda:N or mps "
        "(with --nproc: cpu or cuda, a GPU per rank); tasks are drawn on the CPU, so they do not "
        "depend on it",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amortized",
        description="Meta-train and evaluate amortized learners (parametric, explicit, implicit; "
        "one-shot and iterative) on task families.",
    )
    parser.add_argument("--version", action="version", version=f"amortized {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="meta-train every learner of a preset, evaluate them with the baselines, write a report",
        description="Meta-train every learner a preset lists, evaluate them with the baselines and the "
        "Bayes reference on the same tasks, and write one run folder: config.toml, a checkpoint per "
        "learner, metrics.jsonl, results.json, report.md and PNG plots.",
    )
    _add_run_options(run)
    run.set_defaults(handler=_run)

    train = commands.add_parser(
        "train",
        help="meta-train the learners of a preset only",
        description="Meta-train every learner a "
        "preset lists into a run folder (no evaluation); continue with `amortized evaluate DIR`.",
    )
    _add_run_options(train)
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate the trained learners of a run folder",
        description="Evaluate the trained learners of a run folder with its baselines; writes results.json.",
    )
    evaluate.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    evaluate.add_argument("--quiet", action="store_true", help="no progress messages")
    _add_compute_options(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    report = commands.add_parser(
        "report",
        help="write report.md and the plots from a run folder's results.json",
        description="Write report.md (tables, plots, summary) and PNG plots from RUN_DIR/results.json.",
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    report.set_defaults(handler=_report)

    presets = commands.add_parser(
        "presets", help="list the presets with a one-line description", description="List the presets."
    )
    presets.set_defaults(handler=_presets)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``amortized`` command with ``argv`` (default: the process's arguments); its exit status.

    Parsing, ``presets`` and the checks of a preset's name and ``--set`` syntax run before torch
    is imported, so help and these usage errors come at once.
    """
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    session = _Session(["amortized", *argv])
    try:
        session.preset = _read_preset(args)
        if args.command == "presets":
            return args.handler(args, session)
        import torch

        from amortized import launch

        if hasattr(args, "threads"):
            torch.set_num_threads(args.threads)
        if getattr(args, "device", None):
            from amortized.validation import check_device

            check_device("--device", args.device)
            if getattr(args, "nproc", 1) > 1:
                launch.backend_for(args.device)
        with session.locks, launch.cli_session(args):
            return args.handler(args, session)
    except (AmortizedError, ImportError, OSError) as error:
        print(f"amortized {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        hint = ""
        if session.run is not None and args.command in ("run", "train"):
            hint = f"; finish it with: amortized {args.command} --resume {session.run.path}"
        elif session.run is not None:
            hint = f"; cached work is kept: run `amortized {args.command} {session.run.path}` again"
        print(f"\namortized {args.command}: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
