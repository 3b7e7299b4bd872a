"""W4 g128 GEMV on the CPU with hand-written TensorIR (TVM 0.27): a prototype for the TVM code generator.

Run: ``.venv/bin/python benchmarks/bench_tvm_gemv_prototype.py [--threads 2] [--rows 1 4 8] [--rounds 7]``.
Problem: y[N] = W[N, K] @ x[K], N = K = 4096, W uint4 codes with f32 group scales (g = 128, w = (q - 8) s),
x f32. 8.53 MiB move per call (codes 8 MiB, scales 0.5 MiB). Correctness: every kernel is checked against
numpy fp64 within the f32 accumulation bound 2 (K + 64) 2^-24 (|W| @ |x|) before it is timed (observed
3e-5 .. 6e-5 of that bound). Timing rotates 12 weight copies (3x the 32 MiB L3) so weights come from DRAM,
as in LLM decode; "hot" reuses one copy (L3-resident: compute speed).

FINDINGS (TVM 0.27.0, LLVM 22; AMD EPYC Zen 4 "znver4", 2 cores, AVX-512 on 256-bit datapaths, 32 MiB L3).
The machine was shared with several other jobs during every run (load average 4-8 on 2 cores), so medians
are inflated 3-5x and only ratios within a run, best rounds and CPU times are meaningful:

1. Best schedule shape (the three variants are within ~35% of each other):
   parallel over blocks of R = 4..8 rows  x  serial over the 32 groups  x  unrolled rows  x  unrolled
   nibble planes j = 0..7  x  16 vectorized f32 lanes; one 16-lane f32 accumulator per row, the group scale
   applied once per group, a horizontal 16-lane sum per row at the end. Fastest in wall time: ``lut``
   (lowest median in all four runs, by 1-35%); in CPU time ``lut r8`` = ``two_stage r8`` (~1.0 ms/call).
   Numbers, 2 threads, weights from DRAM (4 runs of 9-11 rounds; load average 4.6-7.9):
   - best rounds: naive r8 0.77 ms, two_stage r1 0.84 ms, lut r1 1.03 ms, while torch f32 on the dequantized
     weight was 4.96 ms and torch bf16 8.25 ms in the same run: 5-6x faster than torch f32, ~10x than bf16.
     Best hot (L3-resident) rounds 0.56-0.83 ms.
   - medians (inflated by the load): lut r1 3.2 ms vs torch f32 10.8 ms (3.3x) and bf16 22.1 ms (6.9x);
     the other variants 3.7-4.7 ms (2.3-2.9x vs f32). With --threads 1: lut r8 2.1 ms, two_stage r8 2.9,
     naive r8 3.1 vs torch f32 6.1 (2.9x) and bf16 10.7 (5.1x).
   - roofline (bytes / median time / read bandwidth measured in the same rounds, itself depressed to
     7-11 GB/s by the load): 26-49%. Best rounds against an unloaded ~25 GB/s: ~45%.
2. This CPU makes the kernel compute-bound, not memory-bound: one thread needs ~1.0-1.1 ms of CPU for the
   whole GEMV when the weights are in cache (measured with time.thread_time, which other processes cannot
   inflate; on an L2-resident 128-row slice 0.26 us per row = ~30 cycles per 128-code group for the
   shift/and/cvt/fma form, ~27 cycles for the vpermps form). With 2 threads the compute floor is therefore
   ~0.5 ms, above the DRAM roofline (8.53 MiB / ~25 GB/s = 0.34 ms). Zen 4 executes 512-bit ops as two
   256-bit halves: 23-30 vector ops per 64-byte group is the budget to cut, not memory traffic.
3. Packed layout ("interleaved nibble planes"): in each 128-code group, nibble j (bits 4j..4j+3) of uint32
   word i holds k = g*128 + j*16 + i. One 64-byte load (a cache line) brings a group; ``(w >> 4j) & 15`` over
   16 consecutive words gives 16 *consecutive* k, so activations are plain contiguous vector loads (no
   gather, no shuffle, no activation permutation). LLVM emits per 16 codes: vpsrld (memory operand),
   vpandd, vcvtdq2ps, vfmadd. This is the layout the low-bit pass should derive for a [1 x 16 lanes] x
   [8 local] register layout; the host repack is ``pack_interleaved`` below (vectorized numpy).
4. TIR idioms that work (see ``gemv_two_stage`` / ``schedule_two_stage``):
   ``@T.prim_func(s_tir=True)`` with ``T.sblock`` + ``T.axis.remap("SSRS", ...)`` + ``T.init()``;
   intermediates with ``T.sblock_alloc_buffer``; unpack as
   ``T.Cast("float32", T.bitwise_and(T.shift_right(W[...], T.Cast("uint32", vj * 4)), T.uint32(15)))``.
   Schedule (``tvm.s_tir.Schedule``): ``rfactor(lane_loop, factor_axis=1)`` turns the reduction's lane axis
   into a spatial one that can be vectorized; ``split`` rows -> ``parallel`` outer; ``compute_at`` the
   unpack/partial block under the row loop so its buffer shrinks to one 16-lane vector; ``set_scope(...,
   "local")``; ``vectorize`` lanes, ``unroll`` planes and rows; ``reverse_compute_at`` the final lane sum to
   the row-block loop plus ``set_scope(rf, 0, "local")`` (otherwise TVM keeps a global [N, 16] buffer and
   LLVM vectorizes the final sum with vgatherqps); ``decompose_reduction(rf, group_loop)``.
   ``tvm.compile(mod, {"kind": "llvm", "mcpu": <host>, "num-cores": n})["main"]`` is called with torch
   tensors directly (DLPack), uint32 included.
5. Hoisting scale and zero point out of the element loop (``two_stage``: y = sum_g s (sum q x - 8 sum x))
   did NOT measurably beat the direct form (``naive``: (q - 8) s x per element, rfactored the same way);
   the per-group work is dominated by unpack + convert + FMA-chain latency. Rows per task: R = 8 better
   than 1 in CPU time (1.05-1.23 vs 1.32-1.44 ms: independent FMA chains), within noise in wall time.
6. ``vpermps`` as a 16-entry table (``lut``): ``T.call_llvm_pure_intrin("float32x16",
   "llvm.x86.avx512.permvar.sf.512", table, idx)`` on explicit vector TIR (``T.ramp`` indices). vpermps reads
   only the low 4 index bits, so ``table[(w >> 4j) & 15]`` is one instruction: no ``& 15``, no int->float
   convert, no zero point, and any 4-bit code book (nf4, e2m1) costs the same. 23 instead of 30 ops per
   group; equal CPU time on Zen 4 (vpermd zmm is a slow shuffle there) but the best wall-time medians;
   likely a clearer win on Intel (1-cycle vpermps). The
   sblock scalar form cannot express it: a generator needs a dequant-selection rule (tensorize or direct
   vector TIR).
7. Pitfalls (each cost a failed attempt):
   - A Python temporary inside ``T.sblock`` (``code = ...``) makes TVMScript declare a buffer: "buffer code is
     used ... without a prior DeclBuffer" (ill-formed). Inline the expression.
   - Outside blocks, ``v: T.int32x16 = ...`` bindings and ``T.alloc_buffer(..., scope="local")`` inside a
     ``T.parallel`` body become heap workspaces (TVMBackendAllocWorkspace), not registers; stores to such a
     temporary between accumulator updates made LLVM spill the accumulator every step (4x slower lut).
     Keep the whole update in one expression; local accumulators then stay in registers.
   - TVM's CPU pool defaults to hardware_concurrency / 2 on x86 = 1 thread on a 2-core VM: set
     ``TVM_NUM_THREADS`` before the first parallel launch (``lowbit.lowering.tvm.target.import_tvm`` does).
     The pool is per calling thread; ``runtime.config_threadpool`` can only lower it.
   - Static 2-way parallel loops are hostage to the slower core: on the loaded machine 2-thread wall time
     was 3-5x the CPU time of a single thread doing all the work.
   - Data passed to TVM must be 64-byte aligned (``FromDLPack`` rejects others): torch allocations are,
     sliced views and small numpy arrays often are not.
   - AVX512-BF16 ``vdpbf16ps`` (32 products per op, a way past the convert bottleneck with x split into two
     bf16 halves) is unusable: TVM's BF16 legalization rewrites bfloat16 vectors to float32/uint16, so the
     intrinsic gets mismatched operand types, and removing the legalize passes crashes the compiler.
   - meta_schedule is unusable in this wheel (see ENVIRONMENT.md); these schedules are written by hand.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np
import torch

from lowbit.bench.bandwidth import read_bandwidth
from lowbit.bench.timing import time_cpu
from lowbit.lowering.tvm.target import cpu_target, host_cpu, import_tvm, num_threads, set_num_threads

tvm = import_tvm()
from tvm.script import tirx as T  # noqa: E402  (after import_tvm: it sizes TVM's thread pool)

N = K = 4096   # y[N] = W[N, K] @ x[K]
G = 128        # group size along K
NG = K // G    # groups per row
WORDS = G // 8  # uint32 words per group (8 nibbles each): 16 words = 64 bytes = one cache line
LANES = 16     # f32 lanes of one AVX-512 vector; one group = 8 nibble planes x 16 lanes


# ----------------------------------------------------------------------------------------------- data
def make_problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint4 codes q[N, K] (w = (q - 8) * s), f32 group scales s[N, NG], f32 activations x[K]."""
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 16, size=(N, K), dtype=np.uint8)
    s = (rng.random((N, NG), dtype=np.float32) * 0.02 + 1e-3).astype(np.float32)
    x = rng.standard_normal(K).astype(np.float32)
    return q, s, x


def pack_interleaved(q: np.ndarray) -> np.ndarray:
    """Codes -> uint32 words [N, K/8]. In group g, nibble j (bits 4j..4j+3) of word i holds k = g*128 + j*16 + i.

    So one 64-byte load brings a whole group, and ``(words >> 4j) & 15`` yields 16 *consecutive* k: the
    activations are read as plain contiguous vectors (no gather, no activation permutation).
    """
    planes = q.reshape(N, NG, 8, WORDS).astype(np.uint32)
    shifts = (4 * np.arange(8, dtype=np.uint32))[None, None, :, None]
    return np.bitwise_or.reduce(planes << shifts, axis=2).reshape(N, NG * WORDS)


def reference(q: np.ndarray, s: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """fp64 y = ((q - 8) * s) @ x, and |W| @ |x| (scales the rounding-error bound)."""
    w = (q.astype(np.float64) - 8.0) * np.repeat(s.astype(np.float64), G, axis=1)
    x64 = x.astype(np.float64)
    return w @ x64, np.abs(w) @ np.abs(x64)


def error_ratio(y: np.ndarray, ref: np.ndarray, mag: np.ndarray) -> float:
    """max |y - ref| / bound with bound = 2 (K + 64) 2^-24 (|W| @ |x|): f32 accumulation error (<= 1 passes)."""
    bound = 2 * (K + 64) * 2.0**-24 * mag
    return float((np.abs(y.astype(np.float64) - ref) / bound).max())


def u32_tensor(a: np.ndarray) -> torch.Tensor:
    """A torch uint32 tensor (torch's allocator gives the 64-byte alignment TVM requires)."""
    t = torch.empty(a.shape, dtype=torch.uint32)
    t.numpy()[...] = a
    return t


# ------------------------------------------------------------------------------------- TVM kernels
@T.prim_func(s_tir=True)
def gemv_naive(W: T.Buffer((N, K // 8), "uint32"), S: T.Buffer((N, NG), "float32"),
               X: T.Buffer((K,), "float32"), Y: T.Buffer((N,), "float32")):
    """The direct formulation: every element dequantized ((q - 8) * s) then multiplied."""
    T.func_attr({"global_symbol": "main", "tir.noalias": True})
    for n, g, j, i in T.grid(N, NG, 8, WORDS):
        with T.sblock("dot"):
            vn, vg, vj, vi = T.axis.remap("SRRR", [n, g, j, i])
            with T.init():
                Y[vn] = T.float32(0)
            # (no Python temporaries inside an sblock: TVMScript 0.27 declares them as buffers -> ill-formed)
            Y[vn] = Y[vn] + (T.Cast("float32", T.bitwise_and(T.shift_right(W[vn, vg * WORDS + vi],
                                                                          T.Cast("uint32", vj * 4)), T.uint32(15)))
                             - T.float32(8)) * S[vn, vg] * X[vg * G + vj * WORDS + vi]


@T.prim_func(s_tir=True)
def gemv_two_stage(W: T.Buffer((N, K // 8), "uint32"), S: T.Buffer((N, NG), "float32"),
                   X: T.Buffer((K,), "float32"), Y: T.Buffer((N,), "float32")):
    """Scale and zero point hoisted out of the group: y[n] = sum_g s[n,g] (sum_k q x - 8 sum_k x)."""
    T.func_attr({"global_symbol": "main", "tir.noalias": True})
    XS = T.sblock_alloc_buffer((NG, WORDS), "float32")       # per-lane group sums of x (for the zero point)
    P = T.sblock_alloc_buffer((N, NG, WORDS), "float32")     # per-lane partial sums of q * x in a group
    for g, j, i in T.grid(NG, 8, WORDS):
        with T.sblock("xs"):
            vg, vj, vi = T.axis.remap("SRS", [g, j, i])
            with T.init():
                XS[vg, vi] = T.float32(0)
            XS[vg, vi] = XS[vg, vi] + X[vg * G + vj * WORDS + vi]
    for n, g, j, i in T.grid(N, NG, 8, WORDS):
        with T.sblock("part"):
            vn, vg, vj, vi = T.axis.remap("SSRS", [n, g, j, i])
            with T.init():
                P[vn, vg, vi] = T.float32(0)
            P[vn, vg, vi] = P[vn, vg, vi] + T.Cast("float32", T.bitwise_and(
                T.shift_right(W[vn, vg * WORDS + vi], T.Cast("uint32", vj * 4)), T.uint32(15))
            ) * X[vg * G + vj * WORDS + vi]
    for n, g, i in T.grid(N, NG, WORDS):
        with T.sblock("y"):
            vn, vg, vi = T.axis.remap("SRR", [n, g, i])
            with T.init():
                Y[vn] = T.float32(0)
            Y[vn] = Y[vn] + S[vn, vg] * (P[vn, vg, vi] - T.float32(8) * XS[vg, vi])


def schedule_naive(rows: int):
    """rfactor the lane axis so it becomes a vector; rows-per-task split; parallel over row blocks."""
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": gemv_naive}))
    n, g, j, i = sch.get_loops(sch.get_sblock("dot"))
    rf = sch.rfactor(i, factor_axis=1)                  # Y_rf[n, lane]
    n, g, j, i = sch.get_loops(rf)
    no, ni = sch.split(n, [None, rows])
    sch.reorder(no, g, j, ni, i)
    sch.parallel(no)
    sch.unroll(j)
    sch.unroll(ni)
    sch.vectorize(i)
    sch.reverse_compute_at(sch.get_sblock("dot"), no)   # horizontal sum per row block, from local memory
    sch.set_scope(rf, 0, "local")
    sch.decompose_reduction(rf, g)
    return sch.mod


def schedule_two_stage(rows: int):
    """The schedule a code generator can emit from layouts: spatial -> parallel, lanes -> vectorize."""
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": gemv_two_stage}))
    n, g, i = sch.get_loops(sch.get_sblock("y"))
    rf = sch.rfactor(i, factor_axis=1)                  # Y_rf[n, lane]: the 16 lanes become spatial
    n, g, i = sch.get_loops(rf)
    no, ni = sch.split(n, [None, rows])
    sch.reorder(no, g, ni, i)
    sch.parallel(no)
    part = sch.get_sblock("part")
    sch.compute_at(part, ni)                            # P shrinks to one 16-lane vector per (row, group)
    pj, pi = sch.get_loops(part)[-2:]
    sch.unroll(pj)
    sch.vectorize(pi)
    sch.set_scope(part, 0, "local")
    sch.unroll(ni)
    sch.vectorize(i)
    sch.reverse_compute_at(sch.get_sblock("y"), no)
    sch.set_scope(rf, 0, "local")
    sch.decompose_reduction(rf, g)
    return sch.mod


def lut_kernel(rows: int):
    """Explicit-vector TIR: ``vpermps`` as a 16-entry table lookup replaces ``& 15`` + int->float + ``- 8``.

    ``vpermps`` reads only the low 4 bits of each index lane, so ``table[(w >> 4j) & 15]`` costs one
    instruction and the table can hold any 4-bit code book (here q - 8; nf4 or e2m1 values work alike).
    """
    @T.prim_func
    def gemv_lut(W: T.Buffer((N, K // 8), "uint32"), S: T.Buffer((N, NG), "float32"),
                 X: T.Buffer((K,), "float32"), Y: T.Buffer((N,), "float32")):
        T.func_attr({"global_symbol": "main", "tir.noalias": True})
        for no in T.parallel(N // rows):
            acc = T.alloc_buffer((rows, LANES), "float32", scope="local")
            part = T.alloc_buffer((LANES,), "float32", scope="local")
            for r in T.serial(rows):
                acc[r, T.ramp(0, 1, LANES)] = T.broadcast(T.float32(0), LANES)
            for g in T.serial(NG):
                for r in T.unroll(rows):
                    part[T.ramp(0, 1, LANES)] = T.broadcast(T.float32(0), LANES)
                    for j in T.unroll(8):
                        # one expression: a vector-typed Python temporary becomes a memory buffer in 0.27
                        part[T.ramp(0, 1, LANES)] = part[T.ramp(0, 1, LANES)] + T.call_llvm_pure_intrin(
                            "float32x16", "llvm.x86.avx512.permvar.sf.512", T.Cast("float32x16", T.ramp(-8, 1, LANES)),
                            T.reinterpret("int32x16", T.shift_right(W[no * rows + r, T.ramp(g * WORDS, 1, LANES)],
                                                                    T.broadcast(T.uint32(4 * j), LANES)))
                        ) * X[T.ramp(g * G + j * WORDS, 1, LANES)]
                    acc[r, T.ramp(0, 1, LANES)] = acc[r, T.ramp(0, 1, LANES)] + T.broadcast(
                        S[no * rows + r, g], LANES) * part[T.ramp(0, 1, LANES)]
            for r in T.serial(rows):
                Y[no * rows + r] = T.float32(0)
                for i in T.serial(LANES):
                    Y[no * rows + r] = Y[no * rows + r] + acc[r, i]
    return tvm.IRModule({"main": gemv_lut})


VARIANTS = {"naive": schedule_naive, "two_stage": schedule_two_stage, "lut": lut_kernel}


# --------------------------------------------------------------------------------------- measuring
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for TVM and torch (default 2)")
    parser.add_argument("--rows", type=int, nargs="+", default=[4], help="rows per parallel task to try")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=7, help="interleaved measurement rounds (median)")
    parser.add_argument("--bandwidth-mib", type=int, default=256)
    args = parser.parse_args(argv)

    host = host_cpu()
    threads = set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    print(f"host {host.mcpu}, {host.vector_bits}-bit vectors, {host.cores} cores; TVM threads {num_threads()}, "
          f"torch threads {torch.get_num_threads()}")

    q, s, x = make_problem()
    ref, mag = reference(q, s, x)
    words = pack_interleaved(q)
    nbytes = words.nbytes + s.nbytes + x.nbytes + 4 * N
    # Rotate over copies of the weights so that they come from DRAM (LLM decode streams every layer once);
    # 3x the last-level cache (32 MiB assumed when the size is unknown).
    try:
        llc = int(open("/sys/devices/system/cpu/cpu0/cache/index3/size").read().strip().rstrip("K")) * 1024
    except (OSError, ValueError):
        llc = 32 << 20
    copies = max(2, math.ceil(3 * llc / nbytes))
    w_copies = [u32_tensor(words) for _ in range(copies)]
    s_copies = [torch.tensor(s) for _ in range(copies)]
    xt = torch.tensor(x)
    y = torch.empty(N)

    kernels = {}
    for name in args.variants:
        if name == "lut" and not host.has("avx512f"):
            print("skip lut: needs AVX-512")
            continue
        for rows in args.rows:
            fn = tvm.compile(VARIANTS[name](rows), cpu_target())["main"]
            y.fill_(float("nan"))
            fn(w_copies[0], s_copies[0], xt, y)
            ratio = error_ratio(y.numpy(), ref, mag)
            if not ratio <= 1.0:
                print(f"FAIL {name} rows={rows}: error {ratio:.3g} x the f32 accumulation bound")
                return 1
            kernels[f"tvm {name} r{rows}"] = fn
            print(f"built {name} rows={rows}: error {ratio:.2e} x bound")

    w_f32 = torch.tensor((q.astype(np.float32) - 8) * np.repeat(s, G, axis=1))   # 64 MiB: beyond the LLC
    w_bf16 = w_f32.bfloat16()
    x_bf16 = xt.bfloat16()
    baselines = {"torch f32 (dequantized)": (lambda: torch.mv(w_f32, xt), w_f32.numel() * 4),
                 "torch bf16": (lambda: torch.mv(w_bf16, x_bf16), w_bf16.numel() * 2)}

    def rotating(fn):
        state = [0]

        def call():
            c = state[0] % copies
            state[0] += 1
            fn(w_copies[c], s_copies[c], xt, y)
        return call

    samples: dict[str, list[float]] = {k: [] for k in [*kernels, *baselines]}
    hot: dict[str, list[float]] = {k: [] for k in kernels}
    bandwidth = []
    for _ in range(args.rounds):
        bandwidth.append(read_bandwidth(nbytes=args.bandwidth_mib << 20, threads=args.threads, repeats=3).gbps)
        for name, fn in kernels.items():
            samples[name].append(time_cpu(rotating(fn), warmup=2, repeats=3, number=copies).median_s)
            hot[name].append(time_cpu(lambda fn=fn: fn(w_copies[0], s_copies[0], xt, y), warmup=2, repeats=3,
                                      number=copies).median_s)
        for name, (fn, _) in baselines.items():
            samples[name].append(time_cpu(fn, warmup=1, repeats=3, number=3).median_s)
    # Contention-proof compute speed: CPU time of this thread running the kernel alone (1 TVM thread, hot).
    set_num_threads(1)
    cpu_ms = {}
    for name, fn in kernels.items():
        fn(w_copies[0], s_copies[0], xt, y)
        per_round = []
        for _ in range(args.rounds):
            start = time.thread_time()
            for _ in range(5):
                fn(w_copies[0], s_copies[0], xt, y)
            per_round.append((time.thread_time() - start) / 5 * 1e3)
        cpu_ms[name] = statistics.median(per_round)
    set_num_threads(args.threads)
    gbps = statistics.median(bandwidth)
    f32_time = statistics.median(samples["torch f32 (dequantized)"])
    bf16_time = statistics.median(samples["torch bf16"])
    print(f"\nread bandwidth ({args.threads} threads, {args.bandwidth_mib} MiB, median of {args.rounds} rounds): "
          f"{gbps:.1f} GB/s (rounds: {', '.join(f'{b:.1f}' for b in bandwidth)})")
    print(f"W4 g128 GEMV N=K={N}: {nbytes / 2**20:.2f} MiB per call, {copies} rotating weight copies\n")
    print("ms: median over rounds (best round in brackets); GB/s and roofline from the median; 'hot': one weight\n"
          "copy that stays in the last-level cache; 'cpu1': CPU ms of one thread doing all the work (hot), which\n"
          "other processes cannot inflate. Ratios are against torch in the same rounds.\n")
    print(f"{'kernel':26s} {'ms':>17s} {'GB/s':>6s} {'roofline':>8s} {'vs f32':>7s} {'vs bf16':>8s} {'hot ms':>16s} "
          f"{'cpu1':>6s}")
    for name, times in samples.items():
        t = statistics.median(times)
        moved = baselines[name][1] if name in baselines else nbytes
        hot_ms = (f"{statistics.median(hot[name]) * 1e3:7.3f} [{min(hot[name]) * 1e3:6.3f}] {cpu_ms[name]:6.3f}"
                  if name in hot else "")
        rate = moved / t / 1e9
        print(f"{name:26s} {t * 1e3:7.3f} [{min(times) * 1e3:6.3f}] {rate:6.1f} {rate / gbps:8.0%} "
              f"{f32_time / t:6.2f}x {bf16_time / t:7.2f}x {hot_ms}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
