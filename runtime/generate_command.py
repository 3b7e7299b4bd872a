"""Generate text with a Llama-family checkpoint, its weights quantized at load time.

examples:
  lowbit generate --prompt "Beautiful is better than"
  lowbit generate --model ~/models/llama --prompt "Hello" --weights u4 --group-size 128 --kv u8
  lowbit generate --prompt "Hello" --kv u4 --kv-group-size 32 --kv-key-grouping channel
  lowbit generate --prompt "Simple is" --prompt "Errors should" --temperature 0.8 --top-p 0.9 --seed 1
  lowbit generate --prompt "Flat is" --weights i3 --override "lm_head=f16" --override "*.down_proj=u4:g32"

Weight and KV types: float32, f16, bf16, or any 1-8 bit lowbit type (u4, i4, i3, f4e2m1, f8e4m3fn, ...).
The generated text goes to stdout; speed (tokens/s, achieved bandwidth) goes to stderr.
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="DIR", default=None,
                        help="checkpoint folder: config.json + *.safetensors (default: lowbit's tiny Llama)")
    parser.add_argument("--prompt", metavar="TEXT", action="append", required=True,
                        help="prompt text; repeat for a batch of prompts")
    parser.add_argument("--weights", default="u4", metavar="TYPE",
                        help="weight type: f32, f16, bf16 or a 1-8 bit type (default: u4)")
    parser.add_argument("--group-size", type=int, default=128, metavar="G", help="quantization group size (default 128)")
    parser.add_argument("--zero-point", choices=("auto", "on", "off"), default="auto",
                        help="zero points for integer weights (auto: uint types only)")
    parser.add_argument("--override", action="append", default=[], metavar="PATTERN=TYPE",
                        help="per-layer weight type, glob over layer names, e.g. 'lm_head=f16' or "
                             "'*.mlp.down_proj=u8:g64' (first match wins; repeatable)")
    parser.add_argument("--kv", default="f16", metavar="TYPE", help="KV cache type: f16, bf16, f32 or 1-8 bit (default f16)")
    parser.add_argument("--kv-group-size", type=int, default=None, metavar="G",
                        help="channels per KV scale (default: the head dim)")
    parser.add_argument("--kv-key-grouping", choices=("token", "channel"), default="token",
                        help="scales of a low-bit KV cache's keys: per token (default) or per channel over each "
                             "page (KIVI-style: robust to outlier channels; the open page stays unquantized)")
    parser.add_argument("--page-size", type=int, default=16, metavar="N", help="tokens per KV page (default 16)")
    parser.add_argument("--kv-pages", type=int, default=None, metavar="N",
                        help="fixed number of KV pages (default: as many as the batch needs)")
    parser.add_argument("--backend", choices=("auto", "torch", "tvm", "triton"), default="auto",
                        help="kernel backend (auto: lowbit's kernels where available, torch reference elsewhere)")
    parser.add_argument("--device", default="cpu", metavar="DEV",
                        help="cpu (default) or cuda[:N]: where the weights, the KV cache and the kernels live (on a "
                             "GPU the auto backend runs lowbit's Triton kernels)")
    parser.add_argument("--activations", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="dtype of the decoder linears' inputs (default float32; bfloat16 as serving stacks run, "
                             "faster on CPUs with AVX-512 BF16)")
    parser.add_argument("--max-new-tokens", type=int, default=64, metavar="N")
    parser.add_argument("--temperature", type=float, default=0.0, metavar="T", help="0 = greedy (default)")
    parser.add_argument("--top-k", type=int, default=None, metavar="K")
    parser.add_argument("--top-p", type=float, default=None, metavar="P")
    parser.add_argument("--seed", type=int, default=None, metavar="S")
    parser.add_argument("--no-stop", action="store_true", help="do not stop at the end-of-text token")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no statistics")


def run(args: argparse.Namespace) -> int:
    from lowbit.device import parse_device
    from lowbit.errors import RuntimeModelError

    from .engine import Engine

    device = parse_device(args.device)

    overrides = {}
    for item in args.override:
        pattern, sep, spec = item.partition("=")
        if not sep or not pattern or not spec:
            raise RuntimeModelError(f"--override {item!r} is not PATTERN=TYPE", hint="e.g. --override lm_head=f16")
        overrides[pattern] = spec
    zero_point = {"auto": None, "on": True, "off": False}[args.zero_point]
    engine = Engine.from_pretrained(args.model, weights=args.weights, group_size=args.group_size,
                                    overrides=overrides, zero_point=zero_point, kv=args.kv,
                                    kv_group_size=args.kv_group_size, kv_key_grouping=args.kv_key_grouping,
                                    page_size=args.page_size,
                                    num_pages=args.kv_pages, backend=args.backend, activations=args.activations,
                                    device=device, progress=not args.quiet)
    result = engine.generate(args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                             top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                             stop_tokens=() if args.no_stop else None)
    for i, (prompt, out) in enumerate(zip(args.prompt, result.outputs)):
        if len(args.prompt) > 1:
            print(f"--- [{i}] ({out.finish_reason})")
        print(prompt + out.text)
    if not args.quiet:
        print(result.stats.summary(), file=sys.stderr)
    return 0
