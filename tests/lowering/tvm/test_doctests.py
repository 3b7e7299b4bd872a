"""The examples in the docstrings of the TVM backend's modules run and print what they say."""
from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["analysis", "codegen", "schedule", "tiles", "tir_text", "unpack_period"])
def test_docstring_examples(module):
    mod = importlib.import_module(f"lowbit.lowering.tvm.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
