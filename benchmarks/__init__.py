"""Benchmarks of ``amortized`` (not part of the test suite): regimes, paper, quality, iterative, cost, speed,
estimators, real_data.

Each benchmark is a module here with ``main(out_dir: Path) -> dict`` returning plain data (saved as
JSON). It may also take ``quick: bool`` (toy sizes, a smoke run in seconds), define
``report(result: dict) -> str`` (markdown for the README; otherwise the README shows the JSON), and
name figures it wrote into ``out_dir`` under the result's ``"plot"`` or ``"plots"`` key.
``python -m benchmarks [names...]`` runs them, writes ``<out>/<name>.json`` and regenerates
``benchmarks/README.md``.
"""

BENCHMARKS = ("regimes", "paper", "quality", "iterative", "cost", "speed", "estimators", "real_data")
