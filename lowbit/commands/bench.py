"""Measure lowbit's kernels and decode speed against torch / transformers on this machine.

Kernels: GEMV/GEMM y = x @ W.T on Llama layer shapes (W: N x K; x: M x K) for each weight type (group-wise,
uint types with zero points) and lowbit backend, with torch fp32 / bf16 matmul on the dequantized weight
and torch's int4 CPU kernel timed in the same run. Decode: tokens/s of a random-weight ~1B Llama on
lowbit's runtime against transformers fp32 / bf16. The memory read bandwidth is measured before and after;
every result is a median, a ratio to each baseline and a fraction of the bandwidth roofline, and every
result is checked against a float64 reference before it is timed. Implementations that are not available
here are listed as n/a, never estimated.

Examples:
  lowbit bench --quick                                   # a small subset (a minute or two)
  lowbit bench kernels --shapes 4096x4096 --m 1 --types int4,int3,int2
  lowbit bench kernels --types all --m 1,4,16 --json results.json --plot plots/
  lowbit bench decode --decode-model 1b --decode-types int4,int3
  lowbit bench --threads 2 --json results.json && python -m lowbit.bench.report results.json

Defaults: all four Llama shapes (4096x4096, 11008x4096, 4096x11008, 14336x4096), M = 1,4,16, 17 weight
types (int2..int8, uint2..uint8, float4_e2m1, float6_e3m2, float8_e4m3fn), group 128, backend tvm,
2 threads, 20 repeats, weights cold (rotated through 3x the last-level cache); decode on the 1b model with
int8,int4,int3,int2 (a full run takes tens of minutes: quantizing and compiling dominate).
--quick: 4096x4096, M = 1, int2,int3,int4,float4_e2m1, 10 repeats, decode on a 44M model with int4.
Options given explicitly override --quick.

--device cuda: everything on the GPU (backend triton, activations float16,bfloat16): kernels timed as CUDA
graphs of many calls between CUDA events, against cuBLAS fp32 / fp16 / bf16 on the dequantized weight; weights
rotated through 3x the L2 cache; the roofline is the GPU memory's read bandwidth (a 1 GiB read, measured in
the same run); decode against transformers fp32 / fp16 / bf16 on the GPU.
  lowbit bench --device cuda --shapes 4096x4096,14336x4096 --types int4,int3,int2 --json gpu.json
"""
from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

SUITES = ("all", "kernels", "decode")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", nargs="?", choices=SUITES, default="all",
                        help="what to measure: all (default), kernels or decode")
    sel = parser.add_argument_group("kernel selection")
    sel.add_argument("--shapes", metavar="NxK,...",
                     help="weight shapes N x K, or 'llama' (default: the 4 Llama shapes)")
    sel.add_argument("--m", metavar="M,...", help="rows of x (default 1,4,16)")
    sel.add_argument("--types", metavar="TYPE,...",
                     help="weight types, aliases allowed (i4, u3, f4e2m1), or 'all' (default: all 17)")
    sel.add_argument("--backends", metavar="NAME,...",
                     help="lowbit backends: tvm, triton, interpret (default tvm; triton with --device cuda)")
    sel.add_argument("--x-dtypes", metavar="DTYPE,...",
                     help="activation dtypes of lowbit's kernels: float32, bfloat16, float16 (default "
                          "float32,bfloat16; float16,bfloat16 with --device cuda; products and sums are float32 "
                          "either way)")
    sel.add_argument("--group-size", type=int, default=128, help="quantization group size along K (default 128)")
    sel.add_argument("--hot", action="store_true",
                     help="time one weight copy again and again (cache-resident) instead of rotating copies "
                          "so weights come from DRAM")
    dec = parser.add_argument_group("decode")
    dec.add_argument("--decode-model", choices=("1b", "small", "tiny"),
                     help="random-weight Llama: 1b (TinyLlama-1.1B shape, default), small (44M), tiny (tests)")
    dec.add_argument("--decode-types", metavar="TYPE,...", help="lowbit weight types (default int8,int4,int3,int2)")
    dec.add_argument("--decode-x-dtypes", metavar="DTYPE,...",
                     help="dtypes of the runtime's linear inputs: float32, bfloat16 (default both)")
    dec.add_argument("--decode-tokens", type=int, help="decode steps per generation (default 32)")
    dec.add_argument("--prompt-tokens", type=int, default=16, help="prompt length (default 16)")
    dec.add_argument("--decode-repeats", type=int, help="generations per implementation (default 3)")
    dec.add_argument("--decode-kv", metavar="TYPE",
                     help="lowbit's KV cache: f16 (default), bf16, f32 or a 1-8 bit type (u8, i4, ...; zero points "
                          "for uint types)")
    run_ = parser.add_argument_group("run")
    run_.add_argument("--repeats", type=int, help="timing samples per kernel, median reported (default 20)")
    run_.add_argument("--threads", type=int, default=2,
                      help="threads for everything timed: torch, lowbit (LOWBIT_NUM_THREADS), TVM (default 2)")
    run_.add_argument("--quick", action="store_true", help="a small subset (see below)")
    run_.add_argument("--seed", type=int, default=0, help="random seed of weights, activations, prompts")
    run_.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]: where weights, activations and "
                                                       "kernels live (see below)")
    run_.add_argument("--bandwidth-mib", type=int, default=None,
                      help="size of the bandwidth probe array in MiB (default 256; 1024 on a GPU)")
    run_.add_argument("--no-progress", action="store_true", help="no progress bar")
    out = parser.add_argument_group("output")
    out.add_argument("--json", metavar="PATH", help="write the results as JSON")
    out.add_argument("--plot", metavar="DIR", help="write PNG plots into DIR")


def _positive(value: Any, flag: str, minimum: int = 1) -> int:
    from lowbit.errors import LowbitError

    if value is None or isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LowbitError(f"{flag} must be an integer >= {minimum}; got {value!r}")
    return value


def _settings(args: argparse.Namespace) -> tuple[Any, Any]:
    """(KernelSettings, DecodeSettings) from the options, --quick filling what was not given."""
    from lowbit.bench import config as c

    quick = args.quick
    device = c.parse_device(args.device)
    backends = c.parse_backends(args.backends) if args.backends else c.default_backends(device)
    group = _positive(args.group_size, "--group-size")
    repeats = _positive(args.repeats if args.repeats is not None else (c.QUICK.repeats if quick else 20), "--repeats")
    kernels = c.KernelSettings(
        shapes=c.parse_shapes(args.shapes) if args.shapes else (c.QUICK.shapes if quick else c.LLAMA_SHAPES),
        ms=c.parse_ints(args.m, "--m") if args.m else (c.QUICK.ms if quick else c.DEFAULT_M),
        types=c.parse_types(args.types) if args.types else (c.QUICK.types if quick else c.DEFAULT_TYPES),
        backends=backends, group_size=group, repeats=repeats, cold=not args.hot, seed=args.seed,
        act_dtypes=c.parse_act_dtypes(args.x_dtypes) if args.x_dtypes else c.default_act_dtypes(device),
        device=device)
    defaults = c.DecodeSettings()
    decode = c.DecodeSettings(
        model=args.decode_model or (c.QUICK.decode_model if quick else defaults.model),
        types=(c.parse_types(args.decode_types, "--decode-types") if args.decode_types
               else (c.QUICK.decode_types if quick else defaults.types)),
        backends=backends, group_size=group,
        activations=(c.parse_act_dtypes(args.decode_x_dtypes, "--decode-x-dtypes") if args.decode_x_dtypes
                     else c.default_act_dtypes(device)), device=device,
        new_tokens=_positive(args.decode_tokens if args.decode_tokens is not None
                             else (c.QUICK.decode_tokens if quick else defaults.new_tokens), "--decode-tokens"),
        prompt_tokens=_positive(args.prompt_tokens, "--prompt-tokens"),
        repeats=_positive(args.decode_repeats if args.decode_repeats is not None
                          else (c.QUICK.decode_repeats if quick else defaults.repeats), "--decode-repeats"),
        kv=c.parse_kv(args.decode_kv) if args.decode_kv else defaults.kv, seed=args.seed)
    return kernels, decode


def _command_line(args: argparse.Namespace) -> str:
    parts = ["lowbit bench"] + ([args.suite] if args.suite != "all" else [])
    for flag in ("shapes", "m", "types", "x_dtypes", "backends", "decode_model", "decode_types", "decode_x_dtypes",
                 "decode_tokens", "decode_repeats", "decode_kv", "repeats", "json", "plot"):
        value = getattr(args, flag)
        if value is not None:
            parts.append(f"--{flag.replace('_', '-')} {value}")
    for flag, default in (("group_size", 128), ("threads", 2), ("seed", 0), ("prompt_tokens", 16),
                          ("bandwidth_mib", None), ("device", "cpu")):
        if getattr(args, flag) != default:
            parts.append(f"--{flag.replace('_', '-')} {getattr(args, flag)}")
    parts += [f"--{f}" for f in ("quick", "hot") if getattr(args, f)]
    return " ".join(parts)


def _warn(text: str) -> None:
    print(f"lowbit bench: note: {text}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from lowbit.bench.bandwidth import BandwidthProbe, read_bandwidth, usable_cores
    from lowbit.bench.machine import describe_machine
    from lowbit.bench.results import BenchResults
    from lowbit.bench.threads import use_threads

    threads = _positive(args.threads, "--threads")
    kernel_settings, decode_settings = _settings(args)
    device = kernel_settings.device
    on_gpu = device.startswith("cuda")
    mib = args.bandwidth_mib if args.bandwidth_mib is not None else (1024 if on_gpu else 256)
    nbytes = _positive(mib, "--bandwidth-mib") << 20
    method = "cuda" if on_gpu else "torch"
    do_kernels, do_decode = args.suite in ("all", "kernels"), args.suite in ("all", "decode")
    if threads > usable_cores():
        _warn(f"--threads {threads} is more than the {usable_cores()} cores this process may use")
    if "triton" in kernel_settings.backends and not on_gpu:
        _warn("on a CPU the triton backend runs under Triton's interpreter: expect seconds per call")
    if on_gpu and "tvm" in kernel_settings.backends:
        _warn("lowbit runs no TVM kernels on a GPU (TVM's CUDA target is for ahead-of-time source): "
              "its rows will be n/a; use --backends triton")
    if "interpret" in kernel_settings.backends:
        _warn("'interpret' is lowbit's reference interpreter: expect seconds to minutes per call on big shapes")

    from lowbit.bench.decode import annotate_decode, count_decode_steps, run_decode
    from lowbit.bench.kernels import annotate, count_steps, default_flush_bytes, run_kernels
    from lowbit.bench.targets import evaluate_targets
    from tqdm.auto import tqdm

    total = ((count_steps(kernel_settings) if do_kernels else 0)
             + (count_decode_steps(decode_settings) if do_decode else 0))
    settings = {"suite": args.suite, "threads": threads, "group_size": kernel_settings.group_size,
                "repeats": kernel_settings.repeats, "cold": kernel_settings.cold,
                "flush_bytes": default_flush_bytes(device) if kernel_settings.cold else None, "device": device,
                "shapes": [list(s) for s in kernel_settings.shapes], "m": list(kernel_settings.ms),
                "types": list(kernel_settings.types), "backends": list(kernel_settings.backends),
                "activations": ", ".join(kernel_settings.act_dtypes) + " (lowbit); the baselines' own dtypes",
                "quick": bool(args.quick), "seed": args.seed}
    results = BenchResults(machine=describe_machine(device), settings=settings,
                           created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           command=_command_line(args))
    with use_threads(threads), tqdm(total=total + 2, desc="bench", unit="step", file=sys.stderr,
                                    disable=True if args.no_progress else None) as bar:
        def tick(text: str) -> None:
            bar.set_postfix_str(text, refresh=False)
            bar.update(1)

        before = read_bandwidth(nbytes=nbytes, threads=threads, repeats=5, method=method, device=device)
        tick("bandwidth")
        during: list[float] = []
        with BandwidthProbe(nbytes=nbytes, threads=threads, method=method, device=device) as probe:   # one array
            def sample_bandwidth() -> float:
                gbps = probe.sample(warmup=1)   # the untimed read lets the kernels' thread pools go quiet
                during.append(gbps)
                return gbps

            kernel_rows = run_kernels(kernel_settings, tick, sample_bandwidth) if do_kernels else []
        decode_info, decode_rows = run_decode(decode_settings, tick) if do_decode else (None, [])
        after = read_bandwidth(nbytes=nbytes, threads=threads, repeats=5, method=method, device=device)
        tick("bandwidth")
    gbps = max(before.gbps, after.gbps, statistics.median(during) if during else 0.0)
    results.bandwidth = {"gbps": gbps, "method": before.method, "nbytes": before.nbytes,
                         "before": _bandwidth_dict(before), "after": _bandwidth_dict(after)}
    if during:
        results.bandwidth["during"] = {"gbps": statistics.median(during), "threads": threads,
                                       "nbytes": before.nbytes, "repeats": len(during), "method": before.method,
                                       "samples_gbps": during}
    results.kernels = annotate(kernel_rows, gbps)
    results.decode_model = decode_info
    results.decode = annotate_decode(decode_rows, gbps)
    # the targets are stated for the 2-thread CPU (issue #11); a GPU run is reported without them
    results.targets = [] if on_gpu else evaluate_targets(results.kernels, results.decode, threads=threads,
                                                         group_size=kernel_settings.group_size,
                                                         decode_model=decode_settings.model if do_decode else None)
    from lowbit.bench.report import terminal_report

    print(terminal_report(results))
    if args.json:
        path = results.save(args.json)
        print(f"\nresults written to {path} (Markdown: python -m lowbit.bench.report {path})")
    if args.plot:
        from lowbit.bench.plots import write_plots

        for path in write_plots(results, args.plot):
            print(f"plot written to {path}")
    return 0


def _bandwidth_dict(result: Any) -> dict[str, Any]:
    return {"gbps": result.gbps, "threads": result.threads, "nbytes": result.nbytes, "repeats": result.repeats,
            "method": result.method, "samples_gbps": list(result.samples_gbps)}
