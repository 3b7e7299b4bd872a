"""Static instruction statistics of PTX text: what a kernel's memory traffic and math compiled to.

The code generator and the benchmarks use these counts to check that a packed low-bit tile became wide
vector loads (``ld.global.v4.b32`` = 16 bytes per thread), that a dot became tensor-core instructions
(``mma.sync`` on sm_80, ``wgmma.mma_async`` on sm_90, ``tcgen05.mma`` on sm_100), and how much unpacking
(``prmt``, ``lop3``, ``shf``, ``cvt``) it costs. Counts are *static* (instructions in the text), not dynamic.

>>> s = ptx_stats("@%p1 ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];\\n  bar.sync 0;")
>>> s["ld.global"], s["ld.global.bytes"], s["bar.sync"]
(1, {16: 1}, 1)
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any

__all__ = ["ptx_instructions", "ptx_stats", "STAT_KEYS"]

_LABEL = re.compile(r"^[$%A-Za-z_][$\w]*:(?!:)\s*")
_PRED = re.compile(r"^@!?%?[$\w]+\s+")
_TYPE_BITS = re.compile(r"^[bsuf](8|16|32|64|128)$")

# Counters of single opcodes (prefix match on the full opcode) reported under their own key.
_SIMPLE = {
    "mma.sync": ("mma.sync",),
    "wgmma.mma_async": ("wgmma.mma_async",),
    "tcgen05.mma": ("tcgen05.mma",),
    "ldmatrix": ("ldmatrix",),
    "stmatrix": ("stmatrix",),
    "bar.sync": ("bar.sync", "barrier.sync", "bar.cta.sync", "barrier.cta.sync"),
    "cp.async.bulk": ("cp.async.bulk",),
    "cvt": ("cvt.",),
    "prmt": ("prmt.",),
    "lop3": ("lop3.",),
    "shf": ("shf.",),
    "bfe": ("bfe.",),
    "fma": ("fma.",),
}

#: Keys always present in :func:`ptx_stats`' result.
STAT_KEYS = ("instructions", "ld.global", "ld.global.vector", "ld.global.bytes", "ld.global.max_bytes",
             "st.global", "st.global.bytes", "ld.shared", "st.shared", "cp.async", "cp.async.bytes",
             *_SIMPLE, "opcodes")


def ptx_instructions(ptx: str) -> list[tuple[str, str]]:
    """The PTX text's instructions as ``(opcode, operands)`` pairs, in order.

    Comments, directives (``.reg``, ``.loc``, sections), labels, braces of inline-asm scopes and guard
    predicates (``@%p1``, ``@!p``) are dropped; multi-line instructions are joined.
    """
    kept: list[str] = []
    for line in ptx.splitlines():
        line = line.split("//", 1)[0].strip()
        bare = line.lstrip("{} \t")
        while True:
            match = _LABEL.match(bare)
            if not match:
                break
            bare = bare[match.end():].lstrip("{} \t")
        if not bare or (bare.startswith(".") and not line.endswith(";")):
            continue  # directive without a terminating ';' (.loc, .file, .section, .b8 data, ...)
        kept.append(line)
    out: list[tuple[str, str]] = []
    for statement in " ".join(kept).split(";"):
        text = statement.strip()
        while True:
            stripped = _LABEL.sub("", text.lstrip("{} \t")).lstrip("{} \t")
            if stripped == text:
                break
            text = stripped
        text = _PRED.sub("", text)
        if not text or text.startswith(".") or text.startswith(")"):
            continue
        opcode, _, operands = text.partition(" ")
        out.append((opcode.strip(), " ".join(operands.split())))
    return out


def _access_bytes(opcode: str) -> int:
    """Bytes one thread moves with a ``ld``/``st`` opcode: vector length x element width (0 if unknown)."""
    parts = opcode.split(".")
    vector = 1
    bits = 0
    for part in parts[1:]:
        if part in ("v2", "v4", "v8"):
            vector = int(part[1:])
        else:
            match = _TYPE_BITS.match(part)
            if match:
                bits = int(match.group(1))
    return vector * bits // 8


def _has_space(opcode: str, space: str) -> bool:
    return any(part == space or part.startswith(space + "::") for part in opcode.split(".")[1:])


def _cp_async_bytes(operands: str) -> int:
    fields = [f.strip() for f in re.sub(r"\[[^\]]*\]", "ADDR", operands).split(",")]
    if len(fields) >= 3:
        try:
            return int(fields[2], 0)
        except ValueError:
            return 0
    return 0


def ptx_stats(ptx: str) -> dict[str, Any]:
    """Count the instructions of interest in PTX text.

    Keys (see :data:`STAT_KEYS`): ``instructions`` (all); ``ld.global`` / ``st.global`` (global loads and
    stores), ``ld.global.vector`` (those with ``.v2``/``.v4``/``.v8``), ``ld.global.bytes`` /
    ``st.global.bytes`` (``{bytes per thread: count}``), ``ld.global.max_bytes``; ``ld.shared`` /
    ``st.shared``; ``cp.async`` (global->shared async copies) with ``cp.async.bytes`` (``{copy size:
    count}``), ``cp.async.bulk`` (TMA); ``mma.sync``, ``wgmma.mma_async``, ``tcgen05.mma``, ``ldmatrix``,
    ``stmatrix``, ``bar.sync`` (also ``barrier.sync``); unpack/convert work ``cvt``, ``prmt``, ``lop3``,
    ``shf``, ``bfe``, ``fma``; and ``opcodes``, every full opcode with its count.
    """
    instructions = ptx_instructions(ptx)
    opcodes: Counter[str] = Counter(op for op, _ in instructions)
    stats: dict[str, Any] = {key: 0 for key in STAT_KEYS}
    ld_bytes: Counter[int] = Counter()
    st_bytes: Counter[int] = Counter()
    cp_bytes: Counter[int] = Counter()
    for opcode, operands in instructions:
        head = opcode.split(".", 1)[0]
        if head in ("ld", "st") and _has_space(opcode, "global"):
            stats[f"{head}.global"] += 1
            (ld_bytes if head == "ld" else st_bytes)[_access_bytes(opcode)] += 1
            if head == "ld" and any(p in ("v2", "v4", "v8") for p in opcode.split(".")):
                stats["ld.global.vector"] += 1
        elif head in ("ld", "st") and _has_space(opcode, "shared"):
            stats[f"{head}.shared"] += 1
        elif opcode.startswith("cp.async.") and _has_space(opcode, "shared") and _has_space(opcode, "global") \
                and not opcode.startswith("cp.async.bulk"):
            stats["cp.async"] += 1
            cp_bytes[_cp_async_bytes(operands)] += 1
        for key, prefixes in _SIMPLE.items():
            if opcode.startswith(prefixes):
                stats[key] += 1
    stats["instructions"] = len(instructions)
    stats["ld.global.bytes"] = dict(sorted(ld_bytes.items()))
    stats["st.global.bytes"] = dict(sorted(st_bytes.items()))
    stats["cp.async.bytes"] = dict(sorted(cp_bytes.items()))
    stats["ld.global.max_bytes"] = max(ld_bytes, default=0)
    stats["opcodes"] = dict(opcodes.most_common())
    return stats
