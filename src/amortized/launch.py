"""How the command line meets torch.distributed: ``amortized run/train --nproc N`` starts ``torchrun``,
and a command that ``torchrun`` started joins the process group (:mod:`amortized.distributed`)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from amortized.distributed import check_split, init, is_main, launched_by_torchrun, shutdown
from amortized.errors import ConfigError, DistributedError
from amortized.folders import HELD_ENV
from amortized.lifeline import PARENT_ENV, end_with_launcher, torchrun_command
from amortized.validation import check_positive_int


@contextmanager
def cli_session(args: argparse.Namespace) -> Iterator[None]:
    """Around one ``amortized`` command: join the process group if ``torchrun`` started this process.

    Ranks other than 0 keep their error messages but print nothing else (logging is rank 0's job):
    their ``args.quiet`` is set and their stdout dropped. Ranks that ``amortized run --nproc`` started
    end when their ``torchrun`` does (:mod:`amortized.lifeline`). Outside ``torchrun`` this does nothing.
    """
    if not launched_by_torchrun():
        yield
        return
    end_with_launcher()
    init(backend_for(getattr(args, "device", None)))
    if not is_main() and hasattr(args, "quiet"):
        args.quiet = True
    stdout = sys.stdout
    quiet = None if is_main() else open(os.devnull, "w")  # noqa: SIM115 - closed below
    try:
        if quiet is not None:
            sys.stdout = quiet
        yield
    finally:
        sys.stdout = stdout
        if quiet is not None:
            quiet.close()
        shutdown()


def backend_for(device: str | None) -> str | None:
    """The process group's backend for ranks training on ``device`` (``None``: the default).

    ``cpu`` is ``gloo``; ``cuda`` is ``nccl``, each rank on the GPU of its local rank. A single GPU
    (``cuda:N``) or ``mps`` cannot be shared by several ranks this way, so it is refused.
    """
    if device is None:
        return None
    kind = torch.device(device)
    if kind.type == "cpu":
        return "gloo"
    if kind.type == "cuda" and kind.index is None:
        return "nccl"
    raise ConfigError(
        f"--device {device} with several processes: each rank trains on the GPU of its local rank "
        "(--device cuda) or on the CPU (--device cpu)"
    )


def train_command(
    run_dir: str | os.PathLike, nproc: int, *, quiet: bool, threads: int | None, device: str | None = None
) -> list[str]:
    """The ``torchrun`` command that meta-trains a run folder's learners in ``nproc`` local processes
    (on ``device``: with ``"cuda"`` each rank takes the GPU of its local rank).

    It runs under :mod:`amortized.lifeline`, so it and its ranks end when the process that starts it does.
    """
    command = torchrun_command(
        [
            "--standalone",
            f"--nproc-per-node={nproc}",
            "-m",
            "amortized",
            "train",
            "--resume",
            str(run_dir),
        ]
    )
    if quiet:
        command.append("--quiet")
    if threads:
        command += ["--threads", str(threads)]
    if device:
        command += ["--device", device]
    return command


def launch_training(
    run_dir: str | os.PathLike,
    nproc: int,
    *,
    quiet: bool,
    threads: int | None,
    device: str | None = None,
    tasks_per_batch: Sequence[int] = (),
) -> None:
    """Meta-train the learners of the run folder ``run_dir`` in ``nproc`` processes and wait for them.

    ``tasks_per_batch`` (the learners' global batches) are checked to split evenly before starting.
    The folder must exist (``config.toml`` written) and the caller hold its lock, which the processes
    then do not take; they finish the folder as ``--resume`` does, so this also continues a stopped
    run. Their progress and errors go to stderr; their stdout (rank 0's summary, which the caller
    prints itself) is dropped. They end if this process ends, even by SIGKILL. Raises
    :class:`DistributedError` if they fail.
    """
    check_positive_int("--nproc", nproc)
    for size in tasks_per_batch:
        check_split(size, nproc)
    command = train_command(run_dir, nproc, quiet=quiet, threads=threads, device=device)
    environment = {**os.environ, HELD_ENV: str(Path(run_dir).resolve()), PARENT_ENV: str(os.getpid())}
    status = subprocess.run(command, stdout=subprocess.DEVNULL, env=environment, check=False).returncode
    if status != 0:
        raise DistributedError(
            f"meta-training in {nproc} processes failed (exit status {status}; the messages above say "
            f"why); continue it with --resume {Path(run_dir)} --nproc {nproc}"
        )
