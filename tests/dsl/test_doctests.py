"""The examples in the front end's docstrings are true."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["lowbit.dsl", "lowbit.dsl.nodes", "lowbit.dsl.parser", "lowbit.dsl.source", "lowbit.dsl.values",
           "lowbit.dsl.scope", "lowbit.dsl.builtins", "lowbit.dsl.sema", "lowbit.dsl.frontend"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
