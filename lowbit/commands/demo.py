"""Show what lowbit does, for real, on this machine.

1. The table of low-bit formats (range, codes, bits per weight with scales) and the quantization error of each
   on a random Gaussian weight matrix, group-wise along K.
2. The shipped tiny Llama (trained on the Zen of Python and the stdlib's docs) quantized at load to several
   weight and KV-cache types: a generation from a prompt with each, greedy agreement with the fp32 model,
   perplexity on held-out text (a table like those in quantization papers) and decode tokens/s (after an
   untimed warm-up generation, so kernels compiled on first use are not counted).

Examples:
  lowbit demo
  lowbit demo --quick                      # fewer configurations and tokens
  lowbit demo --backend torch              # the runtime's torch reference ops instead of lowbit's kernels
  lowbit demo --skip-formats --prompt "Errors should never"
"""
from __future__ import annotations

import argparse
from typing import Any

WEIGHT_TYPES = [
    "int8", "int4", "int3", "int2", "uint8", "uint4", "uint3", "uint2", "uint1",
    "float8_e4m3fn", "float8_e5m2", "float7_e3m3", "float6_e3m2", "float6_e2m3", "float5_e2m2", "float4_e2m1",
    "float3_e1m1",
]


#: (weights, kv cache) configurations the model part of the demo runs, after the fp32 reference
MODEL_CONFIGS = [("u8", "float16"), ("u4", "float16"), ("i4", "float16"), ("f4e2m1", "float16"),
                 ("u3", "float16"), ("u4", "u8"), ("u4", "u4"), ("u4", "f4e2m1")]
QUICK_CONFIGS = [("u4", "float16"), ("u4", "u4")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", default="Beautiful is better than", help="prompt for the generations")
    parser.add_argument("--max-new-tokens", type=int, default=40, help="tokens generated per configuration")
    parser.add_argument("--backend", default="auto",
                        help="runtime ops: auto (lowbit's kernels where available), lowbit, torch (default auto)")
    parser.add_argument("--group-size", type=int, default=32, help="weight quantization group size (default 32)")
    parser.add_argument("--heldout-tokens", type=int, default=2048,
                        help="held-out bytes scored for perplexity (default 2048)")
    parser.add_argument("--quick", action="store_true", help="fewer configurations and tokens")
    parser.add_argument("--skip-formats", action="store_true", help="skip the format table")
    parser.add_argument("--skip-model", action="store_true", help="skip the tiny-model part")
    parser.add_argument("--rows", type=int, default=256, help="rows (N) of the random weight (default 256)")
    parser.add_argument("--cols", type=int, default=1024, help="columns (K) of the random weight (default 1024)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def format_table(rows: int, cols: int, group_size: int, seed: int) -> str:
    """The format table: one row per weight type with its range and the error of quantizing a Gaussian matrix."""
    import numpy as np

    from ..dtypes import dtype
    from ..quant import quantize

    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((rows, cols)).astype(np.float32)
    header = (f"{'type':<15}{'bits':>5}{'codes':>7}{'min':>10}{'max':>10}{'bits/w':>8}"
              f"{'zero pt':>9}{'rel. RMSE':>11}{'SQNR dB':>9}")
    lines = [f"Group-wise quantization of a {rows}x{cols} N(0,1) matrix, group {group_size}, f16 scales",
             header, "-" * len(header)]
    for name in WEIGHT_TYPES:
        dt = dtype(name)
        zero_point = dt.kind == "uint"
        q = quantize(weight, dt, group_size=group_size, zero_point=zero_point)
        err = q.dequantize() - weight
        rel = float(np.sqrt(np.mean(err.astype(np.float64) ** 2) / np.mean(weight.astype(np.float64) ** 2)))
        sqnr = -20 * np.log10(rel) if rel > 0 else float("inf")
        overhead = 16 * (2 if zero_point else 1) / group_size
        lines.append(f"{dt.name:<15}{dt.nbits:>5}{dt.num_codes:>7} {dt.min:>9.4g} {dt.max:>9.4g}"
                     f"{dt.nbits + overhead:>8.3f}{'yes' if zero_point else 'no':>9}{rel:>11.4f}{sqnr:>9.2f}")
    return "\n".join(lines)


def _format_rows(rows: list[tuple], header: tuple, align: str) -> list[str]:
    """Columns as wide as their widest cell; ``align`` has one '<' or '>' per column."""
    cells = [header, *[tuple(str(c) for c in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(f"{c:{a}{w}}" for c, a, w in zip(row, align, widths)) for row in cells]
    lines.insert(1, "-" * len(lines[0]))
    return lines


def _timed_generation(engine: Any, prompt: str, new_tokens: int) -> Any:
    """``engine.generate([prompt])`` after a short untimed one: kernels compiled on first use for this batch size
    (a fresh compile cache) are not counted in the tokens/s of the table."""
    engine.generate([prompt], max_new_tokens=2)
    return engine.generate([prompt], max_new_tokens=new_tokens)


def model_table(args: argparse.Namespace) -> str:
    """Quantize the tiny model to several weight/KV types; generation, agreement, perplexity, speed."""
    from ..runtime import Engine
    from ..runtime.evaluate import TINY_PROMPTS, greedy_agreement, heldout_text, perplexity

    configs = QUICK_CONFIGS if args.quick else MODEL_CONFIGS
    new_tokens = min(args.max_new_tokens, 16) if args.quick else args.max_new_tokens
    text = heldout_text()
    reference = Engine.from_pretrained(weights="float32", kv="float32", backend=args.backend)
    ref_ppl = perplexity(reference, text, max_tokens=args.heldout_tokens).perplexity
    ref_out = _timed_generation(reference, args.prompt, new_tokens)
    n = len(TINY_PROMPTS)
    rows = [("float32", "float32", f"{reference.model.weight_bytes() / 1e6:.2f}", f"{ref_ppl:.3f}", "+0.000",
             "1.000", f"{n}/{n}", f"{ref_out.stats.decode_tokens_per_s:.1f}",
             "+".join(sorted({backend for _, backend in reference.ops.backends})))]
    samples = [("float32 / float32", ref_out.texts[0])]
    for weights, kv in configs:
        engine = Engine.from_pretrained(weights=weights, group_size=args.group_size, kv=kv, backend=args.backend)
        ppl = perplexity(engine, text, max_tokens=args.heldout_tokens).perplexity
        agree = greedy_agreement(reference, engine, TINY_PROMPTS, max_new_tokens=new_tokens)
        out = _timed_generation(engine, args.prompt, new_tokens)
        ops = sorted({backend for _, backend in engine.ops.backends})
        rows.append((engine.describe_weights(), engine.kv_format.describe(), f"{engine.model.weight_bytes() / 1e6:.2f}",
                     f"{ppl:.3f}", f"{ppl - ref_ppl:+.3f}", f"{agree.teacher_forced:.3f}",
                     f"{sum(agree.identical)}/{n}", f"{out.stats.decode_tokens_per_s:.1f}", "+".join(ops)))
        samples.append((f"{weights} / {kv}", out.texts[0]))
    lines = [f"Tiny Llama ({reference.model.config.num_layers} layers, byte-level): perplexity on "
             f"{args.heldout_tokens} held-out bytes, greedy agreement with fp32 on {n} prompts "
             f"({new_tokens} tokens), decode speed"]
    lines += _format_rows(rows, ("weights", "KV cache", "MB", "ppl", "d ppl", "agree", "same", "tok/s", "ops"),
                          "<<>>>>>><")
    lines.append("")
    lines.append(f"Generations from {args.prompt!r}:")
    for label, sample in samples:
        lines.append(f"  [{label:<18}] {args.prompt + sample!r}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if not args.skip_formats:
        print(format_table(args.rows, args.cols, args.group_size, args.seed), flush=True)
        print(flush=True)
    if not args.skip_model:
        print(model_table(args), flush=True)
    return 0
