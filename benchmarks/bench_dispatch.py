"""Host-side cost of calling and of compiling lowbit kernels (not a test: numbers for humans).

    .venv/bin/python benchmarks/bench_dispatch.py [--repeats 15] [--quick]

1. **Dispatch overhead per call** of an already-compiled kernel (a 256-element vector add: one program, so
   the kernel itself is as cheap as the backend allows). For each backend it times, per call (medians):
   ``jit``: ``fn(x, y, out)`` through ``@lowbit.jit`` (constant lookup, specialization cache, argument
   checks, launch); ``checked``: ``CompiledKernel.launch(args)``; ``bare``: the backend's own launch with the
   same arguments, timed in alternation; ``overhead`` is the median of the per-round differences jit - bare:
   what lowbit adds on top of the backend. Rows for kernels loaded
   from AOT artifacts (``lowbit.load``) and for an ``@lowbit.autotune`` kernel whose choice is remembered.
2. **First compile** of a kernel in a fresh process (imports included; empty lowbit and Triton caches) and
   of a new specialization in a warm process, per backend.
3. **Ahead-of-time compile** (``lowbit compile`` of the f4e2m1 64x64x64 GEMM) per target with an empty
   Triton cache, and ``lowbit.load`` of the result.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import torch

import lowbit
from lowbit.dsl import Out  # noqa: F401  (annotation name used by the kernel)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@lowbit.jit
def vadd(x: f32[N], y: f32[N], out: Out[f32[N]], BLOCK: const = 256):  # noqa: F821
    grid(cdiv(N, BLOCK))  # noqa: F821
    o = block(0) * BLOCK  # noqa: F821
    store(out, load(x, [o], [BLOCK]) + load(y, [o], [BLOCK]), [o])  # noqa: F821


def _interleaved(call: Callable[[], Any], checked: Callable[[], Any], bare: Callable[[], Any],
                 rounds: int) -> tuple[float, float, float, float]:
    """Medians (us) of the three paths, timed in alternation so that load from other processes hits them
    alike, and the median of the per-round differences call - bare (lowbit's overhead)."""
    fns = (call, checked, bare)
    for fn in fns:
        for _ in range(3):
            fn()
    start = time.perf_counter()
    bare()
    number = max(1, int(2e-3 / max(time.perf_counter() - start, 1e-7)))
    samples: list[list[float]] = [[], [], []]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            begin = time.perf_counter()
            for _ in range(number):
                fn()
            samples[i].append((time.perf_counter() - begin) / number * 1e6)
    diffs = [c - b for c, b in zip(samples[0], samples[2])]
    return (*(statistics.median(s) for s in samples), statistics.median(diffs))  # type: ignore[return-value]


def _driver_has(backend: str) -> bool:
    from lowbit.driver import BACKENDS

    return (backend, "cpu") in BACKENDS


def dispatch(repeats: int, scratch: Path) -> list[tuple[str, float, float, float, float]]:
    """(row name, jit/loaded call us, checked launch us, bare backend launch us, overhead us)."""
    x, y, out = torch.randn(256), torch.randn(256), torch.zeros(256)
    args = {"x": x, "y": y, "out": out}
    rows = []
    for backend in ("interpret", "triton", "tvm"):
        if not _driver_has(backend):
            print(f"  ({backend}: not registered in lowbit.driver.BACKENDS yet; see its AOT row)", file=sys.stderr)
            continue
        compiled = vadd.compiled(backend=backend)
        vadd.run(x, y, out, backend=backend)
        assert torch.equal(out, x + y), backend
        label = {"triton": "triton (CPU interpreter)"}.get(backend, backend)
        rows.append((f"jit {label}", *_interleaved(lambda: vadd.run(x, y, out, backend=backend),
                                                   lambda: compiled.launch(args),
                                                   lambda: compiled.built.launch(args), repeats)))
    for target, mode in (("tvm:llvm", "native"), ("triton:sm_80", "interpret")):
        out_dir = scratch / f"vadd-{target.replace(':', '-')}"
        lowbit.aot.compile_file(EXAMPLES / "vector_add.lbk", target, out_dir)
        k = lowbit.load(out_dir, mode=mode)
        k(x, y, out)
        assert torch.equal(out, x + y), target
        rows.append((f"lowbit.load {target} ({mode})",
                     *_interleaved(lambda: k(x, y, out), lambda: k.launch(args), lambda: k._built.launch(args),
                                   repeats)))
    tuned = lowbit.autotune(configs=[{"BLOCK": 64}, {"BLOCK": 256}], key=["N"], progress=False,
                            root=scratch / "autotune")(vadd)
    tuned(x, y, out)
    compiled = vadd.compiled(backend="interpret", **tuned.best_config(x, y, out))
    rows.append(("autotune(jit interpret), remembered",
                 *_interleaved(lambda: tuned(x, y, out), lambda: compiled.launch(args),
                               lambda: compiled.built.launch(args), repeats)))
    return rows


COLD = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    import torch, lowbit
    from lowbit.jit import jit
    t1 = time.perf_counter()
    src = open(sys.argv[1]).read()
    ns = {}
    exec(compile(src, sys.argv[1], "exec"), ns)
    fn, backend = ns["vadd"], sys.argv[2]
    x, y, out = torch.randn(256), torch.randn(256), torch.zeros(256)
    t2 = time.perf_counter()
    if backend == "tvm:llvm-aot":
        lowbit.aot.compile_file(sys.argv[3], "tvm:llvm", sys.argv[4])
        k = lowbit.load(sys.argv[4]); k(x, y, out)
    else:
        fn.run(x, y, out, backend=backend)
    t3 = time.perf_counter()
    assert torch.equal(out, x + y)
    print(json.dumps({"import_s": t1 - t0, "first_call_s": t3 - t2}))
""")


def cold_compile(backends: list[str], repeats: int, scratch: Path) -> dict[str, dict[str, float]]:
    """Fresh processes with empty caches: import time and the first call (compile + launch), medians."""
    kernel_file = scratch / "cold_kernel.py"
    kernel_file.write_text(textwrap.dedent('''
        from __future__ import annotations
        import lowbit
        from lowbit.dsl import Out

        @lowbit.jit
        def vadd(x: f32[N], y: f32[N], out: Out[f32[N]], BLOCK: const = 256):
            grid(cdiv(N, BLOCK))
            o = block(0) * BLOCK
            store(out, load(x, [o], [BLOCK]) + load(y, [o], [BLOCK]), [o])
    '''))
    results = {}
    for backend in backends:
        samples = []
        for i in range(repeats):
            with tempfile.TemporaryDirectory(prefix="lowbit-cold-") as tmp:
                env = {**os.environ, "LOWBIT_CACHE_DIR": f"{tmp}/lowbit", "TRITON_CACHE_DIR": f"{tmp}/triton"}
                done = subprocess.run([sys.executable, "-c", COLD, str(kernel_file), backend,
                                       str(EXAMPLES / "vector_add.lbk"), f"{tmp}/art"],
                                      capture_output=True, text=True, env=env, timeout=600)
                if done.returncode != 0:
                    raise RuntimeError(f"cold run for {backend} failed:\n{done.stderr}")
                samples.append(json.loads(done.stdout.strip().splitlines()[-1]))
        results[backend] = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
    return results


def warm_compile(backends: list[str]) -> dict[str, float]:
    """A new specialization (front end, passes, backend build) in a warm process, with no cache of any kind."""
    from lowbit.driver import clear_memory_cache, compile_ir

    results = {}
    for backend in backends:
        if not _driver_has(backend):
            continue
        compile_ir(vadd.ir(BLOCK=8), backend, disk_cache=False)        # imports and first-time set-up
        samples = []
        for block in (16, 32, 128, 512, 1024):
            fresh = lowbit.jit(vadd.fn)                                 # no front-end cache either
            clear_memory_cache()
            start = time.perf_counter()
            compile_ir(fresh.ir(BLOCK=block), backend, disk_cache=False)
            samples.append(time.perf_counter() - start)
        results[backend] = statistics.median(samples)
    return results


def aot_compile(targets: list[str], repeats: int, scratch: Path) -> dict[str, tuple[float, float]]:
    """``compile_file`` of the low-bit GEMM per target (fresh Triton cache per run) and ``lowbit.load`` time."""
    constants = {"W": "f4e2m1", "BM": "64", "BN": "64", "BK": "64"}
    results = {}
    for target in targets:
        compile_s, load_s = [], []
        for i in range(repeats):
            out = scratch / f"gemm-{target.replace(':', '-')}-{i}"
            with tempfile.TemporaryDirectory(prefix="lowbit-triton-") as tmp:
                old = os.environ.get("TRITON_CACHE_DIR")
                os.environ["TRITON_CACHE_DIR"] = tmp
                try:
                    start = time.perf_counter()
                    lowbit.aot.compile_file(EXAMPLES / "lowbit_gemm.lbk", target, out, constants=constants)
                    compile_s.append(time.perf_counter() - start)
                finally:
                    if old is None:
                        os.environ.pop("TRITON_CACHE_DIR", None)
                    else:
                        os.environ["TRITON_CACHE_DIR"] = old
            if target == "tvm:llvm" or target.startswith("triton:"):
                mode = "native" if target == "tvm:llvm" else "interpret"
                start = time.perf_counter()
                lowbit.load(out, mode=mode)
                load_s.append(time.perf_counter() - start)
        results[target] = (statistics.median(compile_s), statistics.median(load_s) if load_s else float("nan"))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=31, help="interleaved timing rounds per dispatch row")
    parser.add_argument("--compile-repeats", type=int, default=3, help="runs per compile-time measurement")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, fewer AOT targets")
    args = parser.parse_args(argv)
    repeats = 9 if args.quick else args.repeats
    compile_repeats = 1 if args.quick else args.compile_repeats
    import lowbit.aot  # noqa: F401  (lowbit.aot.compile_file below)

    print(f"lowbit {lowbit.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory(prefix="lowbit-bench-") as tmp:
        scratch = Path(tmp)
        os.environ.setdefault("LOWBIT_CACHE_DIR", str(scratch / "cache"))

        print("\n1. dispatch overhead per call, 256-element vector add (medians, microseconds)")
        print(f"  {'path':<40} {'call':>9} {'checked':>9} {'bare':>9} {'overhead':>9}")
        for name, call_us, checked_us, bare_us, overhead_us in dispatch(repeats, scratch):
            print(f"  {name:<40} {call_us:9.1f} {checked_us:9.1f} {bare_us:9.1f} {overhead_us:9.1f}")

        backends = [b for b in ("interpret", "triton", "tvm") if _driver_has(b)]
        cold_backends = backends + ([] if "tvm" in backends else ["tvm:llvm-aot"])
        print(f"\n2. first compile + launch in a fresh process, empty caches (median of {compile_repeats})")
        for backend, r in cold_compile(cold_backends, compile_repeats, scratch).items():
            print(f"  {backend:<24} import lowbit+torch {r['import_s']:6.2f} s   first call {r['first_call_s']:6.2f} s")
        print("   new specialization in a warm process: front end + passes + build (median of 5 BLOCK values)")
        for backend, seconds in warm_compile(backends).items():
            print(f"  {backend:<24} {seconds * 1e3:8.1f} ms")

        targets = ["triton:sm_90", "tvm:llvm"] if args.quick else \
            ["triton:sm_80", "triton:sm_90", "triton:sm_100", "tvm:llvm", "tvm:cuda:sm_90"]
        print(f"\n3. lowbit compile of the f4e2m1 64x64x64 GEMM (warm process, empty Triton cache; median of "
              f"{compile_repeats}) and lowbit.load")
        for target, (compile_s, load_s) in aot_compile(targets, compile_repeats, scratch).items():
            load_text = "" if load_s != load_s else f"   load {load_s * 1e3:7.1f} ms"
            print(f"  {target:<24} compile {compile_s:6.2f} s{load_text}")


if __name__ == "__main__":
    main()
