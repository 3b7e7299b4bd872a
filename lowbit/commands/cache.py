"""Inspect or clear lowbit's compile cache.

The cache lives in $LOWBIT_CACHE_DIR (default ~/.cache/lowbit). Entries are keyed by a hash of the kernel IR,
options, target and the versions of lowbit, Triton and TVM; a corrupt entry is rebuilt automatically.

Examples:
  lowbit cache info
  lowbit cache list
  lowbit cache clear
"""
from __future__ import annotations

import argparse
import datetime


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["info", "list", "clear"], help="what to do (default: info)",
                        nargs="?", default="info")
    parser.add_argument("--dir", default=None, help="cache folder (default: $LOWBIT_CACHE_DIR or ~/.cache/lowbit)")


def run(args: argparse.Namespace) -> int:
    from ..cache import CompileCache

    cache = CompileCache(args.dir)
    if args.action == "info":
        info = cache.info()
        print(f"cache folder : {info['root']}")
        print(f"entries      : {info['entries']}")
        print(f"size         : {info['bytes'] / 1e6:.2f} MB")
        print("toolchain    : " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    elif args.action == "list":
        entries = cache.entries()
        if not entries:
            print("(cache is empty)")
        for entry in entries:
            when = datetime.datetime.fromtimestamp(entry.created).strftime("%Y-%m-%d %H:%M")
            what = entry.meta.get("kernel_name", "?")
            target = entry.meta.get("target", "?")
            print(f"{entry.key[:16]}  {when}  {what:<24} {target:<16} {len(entry.files)} files")
    else:
        removed = cache.clear()
        print(f"removed {removed} entries from {cache.root}")
    return 0
