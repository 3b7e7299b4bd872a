"""Packaging rules of lowbit.layout: its imports stay light, and the docs show what the code prints."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lowbit
from lowbit.layout import local, reduce, spatial

DOCS = Path(__file__).resolve().parents[2] / "docs" / "layouts.md"


def test_layout_imports_only_errors_from_lowbit_and_nothing_heavy():
    # What `import lowbit` itself loads (the package, its errors, the light jit decorator) is not layout's doing.
    code = ("import sys, json, lowbit; base = set(sys.modules); import lowbit.layout; "
            "print(json.dumps(sorted(m for m in sys.modules if m not in base or m.startswith('lowbit.layout')"
            " if m.split('.')[0] in ('lowbit', 'sympy', 'matplotlib', 'torch', 'triton', 'tvm'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    modules = json.loads(out)
    assert all(m.startswith("lowbit.layout") for m in modules), modules
    assert "lowbit.layout" in modules


def test_reachable_from_lowbit_namespace():
    assert lowbit.layout.spatial(2, 4) == spatial(2, 4)


def test_docs_grids_are_what_the_code_prints():
    text = DOCS.read_text()
    for layout in [spatial(2, 4).local(2, 1), local(3, 4).spatial(2, 3), spatial(2, 3).local(3, 4),
                   reduce(spatial(3, 4), dims=[0])]:
        grid = "\n".join(layout.visualize().splitlines()[1:])
        assert grid in text, grid
    assert repr(spatial(2, 4).local(2, 1)) in text
    assert str(local(2, 1).spatial(8, 4).local(1, 2).map_exprs()) in text
