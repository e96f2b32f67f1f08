"""Build the API reference (HTML) from the docstrings with pdoc, failing on any warning.

    python scripts/build_api_docs.py docs/api   # then open docs/api/index.html
    python scripts/build_api_docs.py            # check only: build into a temporary folder (CI)

Every public module is documented (pdoc alone stops where a package's ``__all__`` leaves out its
submodules). The build fails, naming each problem, on pdoc's warnings (a module that does not
import, an annotation it cannot read) and on docstring references (``:class:`X```, ``:func:`X```,
...) that name nothing, since pdoc renders those as plain code without a word.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pdoc
import pdoc.doc
import pdoc.extract
import pdoc.render

import amortized

REFERENCE = re.compile(r":(?:py:)?(?:mod|func|class|meth|attr|exc|obj|data|const):`~?([^`]+)`")
"""A reST cross-reference and its target (Sphinx's ``~``, which shortens the shown name, dropped)."""


def module_specs() -> list[str]:
    """Every public module of the package, as the fewest names pdoc needs (it walks submodules)."""
    names = ["amortized"] + [
        module.name
        for module in pkgutil.walk_packages(amortized.__path__, "amortized.")
        if not any(part.startswith("_") for part in module.name.split("."))
    ]
    specs: list[str] = []
    covered: set[str] = set()
    for name in names:
        if name not in covered:
            specs.append(name)
            covered.update(pdoc.extract.walk_specs([name]))
    return specs


def _lookup(scope: Any, parts: list[str]) -> bool:
    """Whether the attributes ``parts`` lead from ``scope`` to an object."""
    for part in parts:
        if not hasattr(scope, part):
            return False
        scope = getattr(scope, part)
    return True


def resolves(target: str, scopes: list[Any]) -> bool:
    """Whether ``target`` names an object: relative to one of ``scopes``, or by its full name."""
    parts = target.removesuffix("()").split(".")
    if any(_lookup(scope, parts) for scope in scopes):
        return True
    for cut in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        return _lookup(module, parts[cut:])
    return False


def broken_references(doc: pdoc.doc.Doc, scopes: list[Any]) -> list[str]:
    """The references in the docstrings of ``doc`` and its own members that name nothing."""
    broken = []
    if isinstance(doc, pdoc.doc.Class):
        scopes = [doc.obj, *scopes]  # a class's docstring and members refer to its own names too
    # A function or class without a docstring of its own shows its base's (torch's): not checked here.
    if isinstance(doc, pdoc.doc.Module | pdoc.doc.Variable) or doc.obj.__doc__ is not None:
        for target in REFERENCE.findall(doc.docstring):
            if not resolves(target, scopes):
                broken.append(f"{doc.fullname}: reference to {target!r} names nothing")
    if isinstance(doc, pdoc.doc.Module | pdoc.doc.Class):
        for member in doc.own_members:
            if member.taken_from[0] == doc.taken_from[0]:  # imported names are checked where they live
                broken += broken_references(member, scopes)
    return broken


def build(out: Path) -> list[str]:
    """Write the HTML reference into ``out``; return the problems found (none: a clean build)."""
    for name in amortized.__all__:  # the package imports its public names lazily: load them for pdoc
        getattr(amortized, name)
    footer = f"amortized {amortized.__version__}"
    pdoc.render.configure(docformat="numpy", show_source=False, footer_text=footer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        specs = module_specs()
        pdoc.pdoc(*specs, output_directory=out)
        problems = []
        for name in pdoc.extract.walk_specs(specs):
            module = pdoc.doc.Module.from_name(name)
            problems += broken_references(module, [module.obj])
    # pdoc says what it could not document with a UserWarning (deprecations are not about the docs)
    problems += [f"pdoc: {w.message}" for w in caught if issubclass(w.category, UserWarning)]
    return list(dict.fromkeys(problems))  # a module's problem once, though both passes above meet it


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, help="folder for the HTML (default: check only)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out if args.out is not None else Path(scratch)
        problems = build(out)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if problems:
        print(f"API reference: {len(problems)} warning(s)", file=sys.stderr)
        return 1
    print(f"API reference: no warnings; {'wrote ' + str(args.out) if args.out else 'checked only'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
