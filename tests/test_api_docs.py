"""The API reference build (``scripts/build_api_docs.py``) names docstring references to nothing."""

import importlib.util
from pathlib import Path

import pytest

pdoc_doc = pytest.importorskip("pdoc.doc")

_SPEC = importlib.util.spec_from_file_location(
    "build_api_docs", Path(__file__).parents[1] / "scripts" / "build_api_docs.py"
)
build_api_docs = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(build_api_docs)


def test_references_resolve_by_full_name_or_from_where_they_are_written():
    import amortized.learners.running as running
    from amortized.learners.state import State

    assert build_api_docs.resolves("amortized.training.train()", [])
    assert build_api_docs.resolves("share", [State, running])
    assert not build_api_docs.resolves("State.share", [running])  # running does not import State
    assert not build_api_docs.resolves("amortized.training.no_such_function", [])


def test_broken_references_are_named_with_where_they_are(tmp_path):
    (tmp_path / "api_docs_sample.py").write_text(
        '"""See :func:`helper`, :class:`Missing` and :meth:`~Box.get`."""\n\n\n'
        "def helper() -> None:\n"
        '    """Refers to :meth:`Other.method`."""\n\n\n'
        "class Box:\n"
        '    """Read with :meth:`get`."""\n\n'
        "    def get(self) -> None:\n"
        '        """Like :func:`helper`."""\n'
    )
    spec = importlib.util.spec_from_file_location("api_docs_sample", tmp_path / "api_docs_sample.py")
    sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sample)
    module = pdoc_doc.Module(sample)
    assert build_api_docs.broken_references(module, [module.obj]) == [
        "api_docs_sample: reference to 'Missing' names nothing",
        "api_docs_sample.helper: reference to 'Other.method' names nothing",
    ]
