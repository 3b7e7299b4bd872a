"""The examples in the generic passes' docstrings are true."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["body_rewriter", "specialize", "fold", "indexing", "simplify", "cleanup", "vectorize", "validate",
           "pipelines"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"lowbit.lowering.passes.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
