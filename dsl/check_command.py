"""Parse and type-check a kernel file (.lbk); print a summary, its syntax tree or its IR.

Examples:
  lowbit check examples/vector_add.lbk
  lowbit check examples/lowbit_gemm.lbk --const W=float4_e2m1 --const G=64 --emit ir
  lowbit check kernels.lbk -k softmax --emit ast
  lowbit check examples/softmax.lbk --validate --target triton:sm_90

Exit status: 0 when every checked kernel is clean, 1 on any error (printed to stderr with file:line:col).
"""
from __future__ import annotations

import argparse
import sys

# keep this module's imports light: `lowbit --help` imports every command module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a kernel file (.lbk)")
    parser.add_argument("-k", "--kernel", metavar="KERNEL", default=None,
                        help="check only this kernel (default: every kernel in the file)")
    parser.add_argument("--emit", choices=("summary", "ast", "ir"), default="summary",
                        help="what to print: a summary (default), the syntax tree, or the verified IR")
    parser.add_argument("--const", metavar="NAME=VALUE", action="append", default=[],
                        help="set a constant: a file constant or a kernel's constant parameter "
                             "(an int, float, dtype such as u4, or layout such as 'spatial(4, 8)'); repeatable")
    parser.add_argument("--validate", action="store_true",
                        help="translation validation: interpret each kernel on random inputs before and after every "
                             "pass of the target's pipeline; report the first pass that changes a result (exit 1)")
    parser.add_argument("--target", metavar="TARGET", default="tvm:llvm",
                        help="the target whose pass pipeline --validate runs (default: tvm:llvm)")


def _constants(items: list[str]) -> dict:
    from lowbit.errors import CompileError

    from .frontend import parse_constant

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name or not value.strip():
            raise CompileError(f"--const expects NAME=VALUE, got {item!r}", hint="e.g. --const BLOCK=128")
        if name in out:
            raise CompileError(f"--const {name} is given twice")
        out[name] = parse_constant(name, value)
    return out


def run(args: argparse.Namespace) -> int:
    from lowbit.errors import CompileError, LowbitError

    try:
        return _run(args)
    except LowbitError as err:  # includes CompileError; the message has file:line:col and a caret
        label = "error" if isinstance(err, CompileError) else type(err).__name__
        text = str(err)
        print(text if err.location is not None else f"{label}: {text}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        import os

        sys.stdout = open(os.devnull, "w")
        return 0
    except RecursionError:
        print(f"error: {args.file}: the kernel is nested too deeply to analyze", file=sys.stderr)
        return 1
    except Exception as err:  # never a traceback: an internal failure is reported, not dumped
        print(f"internal compiler error while checking {args.file}: {type(err).__name__}: {err}\n"
              "please report this (with the file) at the lowbit issue tracker", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from lowbit.errors import CompileError

    from .frontend import load_file
    from .nodes import dump

    constants = _constants(args.const)
    kfile = load_file(args.file)
    names = [args.kernel] if args.kernel else kfile.kernel_names()
    if not names:
        raise CompileError(f"{args.file} defines no kernel", hint="a kernel is a 'def name(params):' with a body")
    errors: list[CompileError] = []
    outputs: list[str] = []
    invalid: list[str] = []  # kernels that fail --validate
    for name in names:
        try:
            compiled = kfile.compile(name, constants)
        except CompileError as e:
            errors.extend(e.errors)
            continue
        if args.emit == "ast":
            outputs.append(dump(compiled.ast, indent=2))
        elif args.emit == "ir":
            outputs.append(str(compiled.ir))
        else:
            outputs.append(_summary(compiled))
        if getattr(args, "validate", False):
            from lowbit.lowering.passes.validate import validate_kernel

            report = validate_kernel(compiled.ir, args.target)
            outputs.append(report.format())
            if not report.ok:
                invalid.append(name)
    if outputs:
        print("\n\n".join(outputs))
    if errors:
        first = errors[0]
        raise CompileError(first.message, location=first.location, hint=first.hint, notes=errors[1:])
    if invalid:
        print(f"error: translation validation failed for {', '.join(invalid)} (see the report above)", file=sys.stderr)
        return 1
    return 0


def _summary(compiled) -> str:
    from lowbit.ir import walk
    from lowbit.ir.printer import format_type
    from lowbit.ir.symbolic import dim_str

    k = compiled.ir
    params = []
    for p in k.params:
        intent = getattr(p, "intent", None)
        params.append(f"{p.name}: {format_type(p.value.type)}" + (f" ({intent})" if intent else ""))
    lines = [f"{compiled.source.filename}: kernel {k.name}: ok",
             f"  params: {', '.join(params)}"]
    consts = {c.name: c.value for c in k.constants}
    consts.update(compiled.signature.values)
    if consts:
        lines.append("  constants: " + ", ".join(f"{name} = {value}" for name, value in consts.items()))
    lines.append(f"  grid: ({', '.join(dim_str(d) for d in k.grid)})")
    count = sum(1 for _ in walk(k.body))
    lines.append(f"  {count} instructions")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m lowbit.dsl.check_command FILE ...``: the same command without the ``lowbit`` launcher."""
    parser = argparse.ArgumentParser(prog="lowbit check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess in the tests
    sys.exit(main())
