"""The ``amortized`` command."""

from __future__ import annotations

import argparse
import sys

from amortized import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amortized",
        description="Meta-train and evaluate amortized learners (parametric, explicit, implicit; "
        "one-shot and iterative) on task families.",
    )
    parser.add_argument("--version", action="version", version=f"amortized {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
