"""The package installs as one namespace, imports cheaply, and lists every package folder."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _declared() -> tuple[list[str], dict[str, str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return config["packages"], config["package-dir"]


def test_every_package_folder_is_declared():
    packages, package_dir = _declared()
    found = set()
    for top, folder in package_dir.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            if "__pycache__" in rel.parts:
                continue
            found.add(".".join([top, *rel.parts]))
    missing = sorted(found - set(packages))
    assert not missing, f"add these packages to pyproject.toml [tool.setuptools] packages: {missing}"
    stale = sorted(set(packages) - found)
    assert not stale, f"pyproject.toml lists packages that do not exist: {stale}"


@pytest.mark.parametrize("name", ["lowbit.dsl", "lowbit.lowering", "lowbit.runtime", "lowbit.lowering.passes"])
def test_one_namespace(name):
    module = __import__(name, fromlist=["_"])
    assert module.__name__ == name


def test_import_is_cheap_and_no_bare_top_level_names():
    code = ("import sys, lowbit; "
            "heavy = [m for m in ('torch', 'triton', 'tvm') if m in sys.modules]; "
            "assert not heavy, heavy; "
            "import importlib.util as u; "
            "bare = [m for m in ('dsl', 'lowering', 'runtime') if u.find_spec(m) is not None]; "
            "assert not bare, bare")
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_cli_help_lists_commands(capsys):
    from lowbit.cli import COMMANDS, main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_cli_without_command_prints_help(capsys):
    from lowbit.cli import main

    assert main([]) == 2
    assert "usage" in capsys.readouterr().out
