"""Compile a kernel file ahead of time into a self-contained artifact directory (no GPU needed).

The artifact holds the generated source, the binary for the target, the kernel IR before and after the
target's passes, and manifest.json: kernel, signature (logical and as lowered, with the packed formats of
low-bit weights), constants, grid, launch facts, toolchain versions and every file's SHA-256.

Targets:
  triton:sm_80, triton:sm_90, triton:sm_100   Triton source + PTX + cubin (also sm_86, sm_89, sm_120)
  tvm:llvm                                    a shared library for this CPU (LLVM with its native mcpu)
  tvm:cuda:sm_80, tvm:cuda:sm_90              CUDA source from TVM (+ a cubin when nvcc is installed)

Examples:
  lowbit compile examples/vector_add.lbk --target tvm:llvm -o build/vector_add
  lowbit compile examples/lowbit_gemm.lbk --target triton:sm_90 -o build/gemm_sm90 \\
      --const W=f4e2m1 --const BM=64 --const BN=64 --const BK=64
  lowbit compile kernels.lbk -k softmax --target triton:sm_80 --num-warps 8 -o build/softmax
  lowbit inspect build/gemm_sm90

Run an artifact from Python:
  k = lowbit.load("build/vector_add");  k(x, y, out)           # or k(x=x, y=y, out=out)
  k = lowbit.load("build/gemm_sm90", mode="interpret")         # a GPU artifact's source, on the CPU
  b_packed = k.param_formats["b"].pack(codes)                  # low-bit weights in the kernel's layout

Progress goes to stderr. Exit status: 0 on success, 1 on any error (a message, never a traceback).
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time

# keep this module's imports light: `lowbit --help` imports every command module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a kernel file (.lbk)")
    parser.add_argument("-k", "--kernel", metavar="KERNEL", default=None,
                        help="the kernel to compile (default: the file's only kernel)")
    parser.add_argument("--target", metavar="TARGET", required=True,
                        help="triton:sm_80 | triton:sm_90 | triton:sm_100 | tvm:llvm | tvm:cuda:sm_90 (see above)")
    parser.add_argument("--const", metavar="NAME=VALUE", action="append", default=[],
                        help="set a constant: a file constant or a kernel's constant parameter (an int, float, "
                             "dtype such as u4, or layout such as 'spatial(4, 8)'); repeatable")
    parser.add_argument("-o", "--output", metavar="OUT", required=True,
                        help="the artifact directory to write (absent, empty, or an earlier artifact, which is "
                             "replaced)")
    parser.add_argument("--num-warps", type=int, default=None, metavar="N",
                        help="CUDA targets: warps per thread block (default 4)")
    parser.add_argument("--num-stages", type=int, default=3, metavar="N",
                        help="triton targets: software pipelining stages (default 3)")
    parser.add_argument("--divisible", metavar="NAME", action="append", default=[],
                        help="triton targets: promise that a tensor's strides / an integer size is a multiple of 16 "
                             "(enables 16-byte loads; checked on every launch); '*' for all; repeatable")
    parser.add_argument("--dump", metavar="DIR", default=None, help="write the IR after every pass into DIR")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def _constants(items: list[str]) -> dict[str, str]:
    from lowbit.errors import CompileError

    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise CompileError(f"--const expects NAME=VALUE, got {item!r}", hint="e.g. --const BLOCK=128")
        if name in out:
            raise CompileError(f"--const {name} is given twice")
        out[name] = value
    return out


def run(args: argparse.Namespace) -> int:
    from lowbit.errors import LowbitError

    try:
        return _run(args)
    except LowbitError:
        raise  # printed by lowbit.cli as "lowbit compile: <message>", exit status 1
    except KeyboardInterrupt:
        raise
    except Exception as err:  # never a traceback: an internal failure is reported, not dumped
        print(f"lowbit compile: internal compiler error while compiling {args.file} for {args.target}: "
              f"{type(err).__name__}: {err}\nplease report this (with the file and the command) at the lowbit "
              "issue tracker", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from lowbit.aot import aot_target, compile_file

    start = time.perf_counter()

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"lowbit compile: [{time.perf_counter() - start:5.1f}s] {message}", file=sys.stderr, flush=True)

    aot_target(args.target, num_warps=args.num_warps)  # reject a bad target before parsing anything
    constants = _constants(args.const)
    command = "lowbit compile " + " ".join(shlex.quote(a) for a in _argv(args))
    compile_file(args.file, args.target, args.output, kernel=args.kernel, constants=constants,
                 num_warps=args.num_warps, num_stages=args.num_stages, divisible=args.divisible,
                 dump_dir=args.dump, command=command, progress=progress)
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    """The command line that reproduces this compile (recorded in the manifest for 'recompile' hints)."""
    out = [args.file]
    if args.kernel:
        out += ["-k", args.kernel]
    out += ["--target", args.target]
    for item in args.const:
        out += ["--const", item]
    if args.num_warps is not None:
        out += ["--num-warps", str(args.num_warps)]
    if args.num_stages != 3:
        out += ["--num-stages", str(args.num_stages)]
    for name in args.divisible:
        out += ["--divisible", name]
    return out + ["-o", args.output]


def main(argv: list[str] | None = None) -> int:
    """``python -m lowbit.commands.compile ...``: the same command without the ``lowbit`` launcher."""
    from lowbit.cli import main as cli_main

    return cli_main(["compile", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
