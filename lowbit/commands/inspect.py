"""Summarize an artifact written by 'lowbit compile': kernel, target, signature, constants, grid, files.

The artifact's checksums are verified first (a corrupt artifact is an error; --no-verify shows it anyway).
For Triton artifacts the PTX's instructions of interest are counted: global loads by width (bytes per
thread), cp.async copies, tensor-core instructions (mma.sync on sm_80, wgmma on sm_90, tcgen05 on sm_100),
barriers and unpack work.

Examples:
  lowbit inspect build/gemm_sm90
  lowbit inspect build/gemm_sm90 --json | python -m json.tool
  lowbit inspect build/vector_add --no-verify
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Mapping

# keep this module's imports light: `lowbit --help` imports every command module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact", metavar="OUT", help="an artifact directory (lowbit compile -o OUT)")
    parser.add_argument("--json", action="store_true",
                        help="print the manifest (plus PTX statistics) as JSON instead of a summary")
    parser.add_argument("--no-verify", action="store_true", help="do not check the files against their checksums")


def run(args: argparse.Namespace) -> int:
    from lowbit.aot import open_artifact

    artifact = open_artifact(args.artifact, verify=not args.no_verify)
    stats = artifact.ptx_stats()
    if args.json:
        data = dict(artifact.manifest)
        if stats is not None:
            data["ptx_stats"] = {k: v for k, v in stats.items() if k != "opcodes"}
        print(json.dumps(data, indent=1, sort_keys=True))
        return 0
    try:
        print(summarize(artifact.manifest, stats, verified=not args.no_verify, path=str(artifact.path)))
    except BrokenPipeError:  # piped into `head`
        sys.stdout = open(__import__("os").devnull, "w")
    return 0


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def _counts(by_width: Mapping[Any, int]) -> str:
    return ", ".join(f"{width} B x{count}" for width, count in sorted(by_width.items(), key=lambda kv: int(kv[0])))


def summarize(manifest: Mapping[str, Any], stats: Mapping[str, Any] | None = None, *, verified: bool = True,
              path: str = "") -> str:
    """The text ``lowbit inspect`` prints for an artifact's manifest (and its PTX statistics)."""
    m = manifest
    launch = m.get("launch", {})
    lines = [f"artifact   {path}  ({m['format']} v{m['format_version']}, "
             f"{'verified' if verified else 'NOT verified'}, content sha256 {m['content_hash'][:16]})",
             f"kernel     {m['kernel']}" + (f"  from {m['source_file']}" if m.get("source_file") else ""),
             f"target     {m['target']}" + (f"  ({launch.get('mcpu')} CPU)" if launch.get("mcpu") else "")]
    toolchain = m.get("toolchain", {})
    lines.append("built by   " + ", ".join(f"{k} {v}" for k, v in toolchain.items() if k != "cache-format")
                 + (f"  on {m['created']}" if m.get("created") else ""))
    lines.append("signature")
    lowered = {p["name"]: p for p in m["signature"]["lowered"]}
    width = max((len(p["name"]) for p in m["signature"]["logical"]), default=1)
    for p in m["signature"]["logical"]:
        intent = p.get("intent", "scalar")
        text = f"  {p['name']:<{width}}  {p['type']:<22} {intent}"
        low = lowered.get(p["name"])
        if low is not None and "format" in low:
            text += f"   -> packed {low['type']}, format {low['format']}"
        lines.append(text)
    if m.get("constants") or m.get("given_constants"):
        consts = dict(m.get("constants") or {})
        for name, value in (m.get("given_constants") or {}).items():
            consts.setdefault(name, value)
        lines.append("constants  " + ", ".join(f"{k} = {v}" for k, v in consts.items()))
    lines.append(f"grid       ({', '.join(m['grid'])})")
    kind = launch.get("kind")
    if kind == "triton":
        lines.append(f"launch     {launch['num_warps']} warps, {launch['num_stages']} stages, "
                     f"{_size(launch['shared_bytes'])} shared memory; Triton kernel {launch['triton_kernel']}")
        assumed = {k: v for k, v in launch.get("assumptions", {}).items() if v}
        if assumed:
            lines.append("assumes    " + "; ".join(f"{k}: {', '.join(v)}" for k, v in assumed.items()))
    elif kind == "tvm-llvm":
        lines.append(f"launch     TVM function {launch['func_name']} in {launch['library']} "
                     f"(parallel over this CPU's cores)")
    elif kind == "tvm-cuda":
        lines.append(f"launch     {launch['threads_per_block']} threads per block; CUDA kernel(s) "
                     f"{', '.join(launch.get('cuda_kernels') or ['?'])}"
                     + ("" if launch.get("cubin") else "; no cubin (nvcc was not found)"))
    if m.get("param_formats"):
        lines.append("packed formats (pack weights with lowbit.load(OUT).param_formats[name].pack(codes))")
        for name, f in m["param_formats"].items():
            lines.append(f"  {name}: {f['id']}  {f['dtype']} codes in {'x'.join(map(str, f['tile_shape']))} tiles "
                         f"of {f['words_per_tile']} {f['storage_dtype']} words")
    lines.append("files")
    files = m["files"]
    fw = max((len(n) for n in files), default=1)
    for name, record in sorted(files.items()):
        lines.append(f"  {name:<{fw}}  {_size(record['size']):>10}  sha256 {record['sha256'][:12]}")
    if stats is not None:
        lines.append(f"PTX        {stats['instructions']} instructions")
        lines.append(f"  global loads   {stats['ld.global']} ({stats['ld.global.vector']} vector): "
                     f"{_counts(stats['ld.global.bytes']) or 'none'} per thread")
        lines.append(f"  global stores  {stats['st.global']}: {_counts(stats['st.global.bytes']) or 'none'}")
        lines.append(f"  cp.async       {stats['cp.async']}" + (f" ({_counts(stats['cp.async.bytes'])})"
                                                                  if stats["cp.async"] else "")
                     + f", cp.async.bulk (TMA) {stats['cp.async.bulk']}")
        lines.append(f"  tensor cores   mma.sync {stats['mma.sync']}, wgmma.mma_async {stats['wgmma.mma_async']}, "
                     f"tcgen05.mma {stats['tcgen05.mma']}; ldmatrix {stats['ldmatrix']}")
        lines.append(f"  shared memory  ld.shared {stats['ld.shared']}, st.shared {stats['st.shared']}, "
                     f"barriers {stats['bar.sync']}")
        lines.append(f"  unpack/convert cvt {stats['cvt']}, prmt {stats['prmt']}, lop3 {stats['lop3']}, "
                     f"shf {stats['shf']}, bfe {stats['bfe']}, fma {stats['fma']}")
    return "\n".join(lines)
