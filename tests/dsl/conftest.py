from __future__ import annotations

import pytest


@pytest.fixture
def cli_main(monkeypatch):
    """``lowbit.cli.main`` with the ``check`` command registered (it is listed in lowbit/cli.py's COMMANDS;
    the fixture only makes sure of it, so these tests run the real CLI machinery either way)."""
    import lowbit.cli

    monkeypatch.setitem(lowbit.cli.COMMANDS, "check",
                        ("lowbit.dsl.check_command", "parse and type-check a kernel file (.lbk)"))
    return lowbit.cli.main
