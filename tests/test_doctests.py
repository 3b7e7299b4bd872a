"""The examples in every lowbit module's docstrings are true (the packages' own doctest tests cover some
modules in more detail; this one leaves none out)."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest


def _modules() -> list[str]:
    names = set()
    for package in ("lowbit", "lowbit.dsl", "lowbit.lowering", "lowbit.runtime"):   # the last three live in
        module = importlib.import_module(package)                                   # folders of their own
        names.add(package)
        names.update(m.name for m in pkgutil.walk_packages(module.__path__, package + "."))
    return sorted(n for n in names if not n.startswith("lowbit.models"))


MODULES = _modules()


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"


def test_the_examples_are_found():
    """The walk reaches the packages that live in folders of their own, and their examples count."""
    finder = doctest.DocTestFinder()
    counts = {name: sum(len(t.examples) for t in finder.find(importlib.import_module(name))) for name in MODULES}
    assert counts["lowbit.dtypes"] > 5 and counts["lowbit.lowering.tvm.analysis"] > 0
    assert counts["lowbit.runtime.ops"] > 0 and counts["lowbit.dsl.parser"] > 0
    assert sum(counts.values()) > 300
