"""The ``lowbit`` command line.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``; this
file only lists them. Command modules keep their top-level imports light (torch, Triton and TVM are imported
inside ``run``), so ``lowbit --help`` is instant.

Exit status: 0 on success, 1 on a user error (a ``LowbitError``: printed as its message, never a traceback),
2 on bad command-line usage, 130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from pathlib import Path
from typing import Sequence

from .errors import LowbitError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("lowbit.commands.demo", "show lowbit at work: formats, quantization error, kernels"),
    "check": ("lowbit.dsl.check_command", "parse and type-check a kernel file (.lbk)"),
    "generate": ("lowbit.runtime.generate_command", "generate text with a (quantized) Llama-family model"),
    "cache": ("lowbit.commands.cache", "inspect or clear the compile cache"),
    "bench": ("lowbit.commands.bench", "benchmark kernels and decode against torch on this machine"),
    "compile": ("lowbit.commands.compile", "compile a kernel file ahead of time into an artifact directory"),
    "inspect": ("lowbit.commands.inspect", "summarize a compiled artifact: signature, grid, files, PTX"),
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="lowbit",
        description="lowbit: a compiler and small runtime for 1-8 bit LLM-serving kernels.",
        epilog="Run 'lowbit COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"lowbit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or help_text).strip()
        command_parser = sub.add_parser(name, help=help_text, description=doc,
                                        formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._module.run(args) or 0)
    except LowbitError as err:
        print(f"lowbit {args.command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - a lowbit bug: one line, the traceback on request
        if os.environ.get("LOWBIT_TRACEBACK") == "1":
            raise
        where = traceback.extract_tb(err.__traceback__)[-1]
        print(f"lowbit {args.command}: internal error: {type(err).__name__}: {err} (at {Path(where.filename).name}:"
              f"{where.lineno})\nhint: this is a bug in lowbit; rerun with LOWBIT_TRACEBACK=1 for the traceback "
              f"and report it", file=sys.stderr)
        return 70


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
