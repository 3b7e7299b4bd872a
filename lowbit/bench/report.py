"""Tables of a ``lowbit bench`` run: plain text for the terminal, Markdown for the README.

``python -m lowbit.bench.report results.json`` prints a Markdown section (machine, bandwidth, targets,
kernel table, decode table) made from a results file written by ``lowbit bench --json results.json``;
``--all`` includes every shape (default: the target shape N = K = 4096, all M), ``--title`` sets the
heading.

Rows that did not run show their status (``n/a``, ``error``, ``wrong``) instead of numbers, with the reason
in the notes under the table.

>>> from lowbit.bench.results import BenchResults, KernelRow
>>> res = BenchResults(machine={"cpu": "CPU", "cores": 2}, settings={"threads": 2, "repeats": 3},
...                    bandwidth={"gbps": 20.0},
...                    kernels=[KernelRow("torch-fp32", 4096, 4096, 1, "float32", "ok", median_s=4e-3,
...                                       bytes=67_141_632, bits_per_weight=32.0, gbps=16.8, roofline=0.84)])
>>> "| 1 | torch-fp32 | float32 | f32 | 32.00 | 4.000 | - | 16.8 | 84% |" in markdown(res)
True
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from .config import TARGET_SHAPE
from .machine import machine_summary
from .results import BenchResults, KernelRow, TargetCheck, load_results
from .targets import decode_subject, kernel_subject

__all__ = ["terminal_report", "markdown", "kernel_table_rows", "main"]

KERNEL_HEADERS = ("M", "implementation", "type", "x", "bits/w", "median ms", "best ms", "GB/s", "roofline", "x fp32",
                  "x bf16", "x int4", "target")
DECODE_HEADERS = ("implementation", "weights", "x", "tok/s", "GB/s", "roofline", "x tf fp32", "x tf bf16", "target")
TARGET_HEADERS = ("target", "subject", "requirement", "measured", "status")
_DASH = "-"
_ACT_SHORT = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
_BASELINE_ORDER = {"torch-fp32": 0, "torch-fp16": 1, "torch-bf16": 2, "torch-int4": 3}
#: a GPU run compares with cuBLAS fp16 where a CPU run has torch's int4 kernel (the third ratio column)
_GPU_HEADERS = {"x int4": "x fp16", "x tf bf16": "x tf fp16"}


def _on_gpu(results: BenchResults) -> bool:
    return str(results.settings.get("device", "cpu")).startswith("cuda")


def kernel_headers(results: BenchResults) -> tuple[str, ...]:
    """:data:`KERNEL_HEADERS`, with ``x fp16`` (cuBLAS) for ``x int4`` in a GPU run."""
    return tuple(_GPU_HEADERS.get(h, h) for h in KERNEL_HEADERS) if _on_gpu(results) else KERNEL_HEADERS


def decode_headers(results: BenchResults) -> tuple[str, ...]:
    """:data:`DECODE_HEADERS`, with ``x tf fp16`` for ``x tf bf16`` in a GPU run (fp16 is what GPUs serve in)."""
    return tuple(_GPU_HEADERS.get(h, h) for h in DECODE_HEADERS) if _on_gpu(results) else DECODE_HEADERS
_MEASURED_WIDTH = 100  # the terminal's targets table cuts longer explanations (the JSON keeps them)


# ---------------------------------------------------------------------------------------------------
# cells
# ---------------------------------------------------------------------------------------------------
def _num(value: float | None, fmt: str) -> str:
    return _DASH if value is None else format(value, fmt)


def _pct(value: float | None) -> str:
    return _DASH if value is None else f"{value:.0%}"


def _ratio(row: Any, name: str) -> str:
    value = row.speedup.get(name) if row.ok else None
    return _DASH if value is None else f"{value:.2f}x"


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _cut(text: str, width: int = _MEASURED_WIDTH) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def _status(row: Any) -> str:
    return {"n/a": "n/a", "error": "error", "wrong": "WRONG"}.get(row.status, row.status)


def _target_marker(checks: Sequence[TargetCheck]) -> str:
    """``PASS`` / ``FAIL (what)`` / ``n/a`` summarizing the checks that judge one row."""
    if not checks:
        return ""
    failed = [c for c in checks if c.passed is False]
    if failed:
        return "FAIL (" + ", ".join(_short(c.name) for c in failed) + ")"
    if all(c.passed for c in checks):
        return "PASS"
    if any(c.passed for c in checks):
        return "PASS*"  # some checks passed, the others could not be evaluated
    return "n/a"


def _short(name: str) -> str:
    return (name.replace("W4 GEMV vs torch ", "").replace("W4 GEMV roofline", "roofline")
            .replace(" vs W4", "").replace("decode W4", "decode"))


def _checks_for(results: BenchResults, subject: str) -> list[TargetCheck]:
    return [t for t in results.targets if t.subject == subject]


def kernel_table_rows(results: BenchResults, rows: Sequence[KernelRow]) -> list[tuple[str, ...]]:
    """Cells of :data:`KERNEL_HEADERS` for each row (target markers only on the target problem's rows)."""
    from .targets import is_target_row

    third = "torch-fp16" if _on_gpu(results) else "torch-int4"
    out = []
    for r in rows:
        subject = kernel_subject(r.impl, r.weight_type, r.act_dtype)
        marker = _target_marker(_checks_for(results, subject)) if is_target_row(r) else ""
        if r.ok:
            best = r.min_s * 1e3 if r.min_s is not None else None
            cells = (_num(r.median_s * 1e3, ".3f"), _num(best, ".3f"), _num(r.gbps, ".1f"), _pct(r.roofline),
                     _ratio(r, "torch-fp32"), _ratio(r, "torch-bf16"), _ratio(r, third))
        else:
            cells = (_status(r), _DASH, _DASH, _DASH, _DASH, _DASH, _DASH)
        out.append((str(r.m), r.impl, r.weight_type, _ACT_SHORT.get(r.act_dtype, r.act_dtype),
                    _num(r.bits_per_weight, ".2f"), *cells, marker))
    return out


def _decode_rows(results: BenchResults) -> list[tuple[str, ...]]:
    second = "transformers-fp16" if _on_gpu(results) else "transformers-bf16"
    out = []
    for r in results.decode:
        subject = decode_subject(r.impl, r.weight_type or "", r.activations)
        marker = _target_marker(_checks_for(results, subject)) if r.impl.startswith("lowbit-") else ""
        if r.ok:
            cells = (_num(r.tokens_per_s, ".2f"), _num(r.gbps, ".1f"), _pct(r.roofline),
                     _ratio(r, "transformers-fp32"), _ratio(r, second))
        else:
            cells = (_status(r), _DASH, _DASH, _DASH, _DASH)
        out.append((r.impl, r.weights, _ACT_SHORT.get(r.activations, r.activations), *cells, marker))
    return out


def _notes(rows: Sequence[Any]) -> list[str]:
    """One line per distinct reason a row did not run (or was wrong)."""
    seen: dict[str, list[str]] = {}
    for r in rows:
        if r.ok or not r.detail:
            continue
        label = f"{r.impl} {getattr(r, 'weight_type', '') or ''}".strip()
        if isinstance(r, KernelRow) and r.is_lowbit:
            label += f" (x {r.act_dtype})"
        seen.setdefault(f"{_status(r)}: {r.detail}", []).append(label)
    lines = []
    for text, labels in seen.items():
        who = ", ".join(dict.fromkeys(labels))
        lines.append(f"{who}: {text}")
    return lines


# ---------------------------------------------------------------------------------------------------
# layout
# ---------------------------------------------------------------------------------------------------
def _text_table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 3) -> str:
    """Columns padded to width; the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)] if rows else [len(h) for h in headers]

    def line(cells: Sequence[str]) -> str:
        parts = [str(c).ljust(w) if i < left or i == len(cells) - 1 else str(c).rjust(w)
                 for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 3) -> str:
    align = ["---" if i < right_from else "--:" for i in range(len(headers))]
    esc = lambda c: str(c).replace("|", "\\|") or " "  # noqa: E731
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _settings_line(results: BenchResults) -> str:
    s = results.settings
    gpu = _on_gpu(results)
    parts = [f"on {s['device']} (kernels timed as CUDA graphs)" if gpu else f"{s.get('threads', '?')} threads"]
    if s.get("group_size"):
        parts.append(f"group {s['group_size']}")
    kernels = s.get("suite", "all") != "decode"
    if s.get("repeats") and kernels:
        parts.append(f"median of {s['repeats']} repeats")
    if "cold" in s and kernels:
        if s["cold"]:
            flush = s.get("flush_bytes")
            span = f" through {flush / 2**20:.0f} MiB" if flush else ""
            parts.append(f"weights cold (rotating copies{span}, read from {'HBM' if gpu else 'DRAM'})")
        else:
            parts.append("weights hot (one copy, cache-resident)")
    if s.get("quick"):
        parts.append("--quick subset")
    return ", ".join(parts)


def _bandwidth_line(results: BenchResults) -> str:
    bw = results.bandwidth or {}
    if not bw.get("gbps"):
        return "memory read bandwidth: not measured"
    extra = []
    for when, label in (("before", "before the run"), ("during", "among the kernels"), ("after", "after")):
        if bw.get(when):
            extra.append(f"{label} {bw[when]['gbps']:.1f}")
    paired = any(r.round_gbps for r in results.kernels)
    use = ("kernel rooflines use the sample of their own timing round, decode the highest" if paired
           else "the roofline uses the highest")
    detail = f" (medians: {', '.join(extra)} GB/s; {use})" if extra else ""
    if _on_gpu(results):
        return f"GPU memory read bandwidth: {bw['gbps']:.1f} GB/s{detail}"
    threads = (bw.get("before") or bw.get("after") or {}).get("threads", results.settings.get("threads", "?"))
    return f"memory read bandwidth: {bw['gbps']:.1f} GB/s with {threads} threads{detail}"


def _group_kernels(rows: Sequence[KernelRow]) -> dict[tuple[int, int], list[KernelRow]]:
    groups: dict[tuple[int, int], list[KernelRow]] = {}
    for r in rows:
        groups.setdefault(r.shape, []).append(r)
    for shape in groups:
        groups[shape].sort(key=lambda r: (r.m, _BASELINE_ORDER.get(r.impl, len(_BASELINE_ORDER)), r.impl,
                                          r.act_dtype, r.nbits if r.nbits is not None else 99, r.weight_type))
    return groups


def _decode_title(results: BenchResults) -> str:
    m = results.decode_model or {}
    params = m.get("parameters")
    size = f"{params / 1e9:.2f}B" if params and params >= 1e8 else f"{params / 1e6:.1f}M" if params else "?"
    return (f"decode: {m.get('preset', '?')} Llama ({size} parameters, random weights), prompt "
            f"{m.get('prompt_tokens', '?')} tokens, {m.get('new_tokens', '?')} decode steps, median of "
            f"{m.get('repeats', '?')}; lowbit's KV cache {m.get('kv', '?')}")


# ---------------------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------------------
def terminal_report(results: BenchResults) -> str:
    """The full plain-text report: every kernel row grouped by shape, decode rows, targets, notes."""
    out = [f"machine: {machine_summary(results.machine)}", f"settings: {_settings_line(results)}",
           _bandwidth_line(results)]
    for (n, k), rows in _group_kernels(results.kernels).items():
        out += ["", f"GEMV/GEMM  W [N x K] = {n} x {k}  (x: [M x K])",
                _text_table(kernel_headers(results), kernel_table_rows(results, rows), left=4)]
    if results.decode:
        out += ["", _decode_title(results), _text_table(decode_headers(results), _decode_rows(results), left=3)]
    if results.targets:
        out += ["", "targets (N = K = 4096, M = 1, group 128, 2 threads; decode: 1b model)",
                _text_table(TARGET_HEADERS, [(t.name, t.subject, t.requirement, _cut(t.measured), t.marker)
                                             for t in results.targets], left=4)]
    notes = _notes([*results.kernels, *results.decode])
    if notes:
        out += ["", "notes:"] + [f"  {line}" for line in notes]
    return "\n".join(out)


def _speedups_line(results: BenchResults) -> str:
    if _on_gpu(results):
        return ("- Speed-ups (x fp32, x bf16, x fp16) are baseline time / lowbit time on the same problem, timed "
                "in the same run: torch `F.linear` (cuBLAS) on the dequantized int4 weight in float32, bfloat16 and "
                "float16; every kernel is timed as a CUDA graph of many calls (no launch gaps). Column x: the "
                "activation dtype (x and the output); lowbit's GEMV multiplies and sums in float32, its GEMM tile "
                "(M > 4) multiplies half-precision operands on the tensor cores with float32 sums.")
    return ("- Speed-ups (x fp32, x bf16, x int4) are baseline time / lowbit time on the same problem, timed in "
            "the same run: torch `F.linear` on the dequantized int4 weight in float32 and bfloat16, and torch's "
            "int4 CPU kernel (`aten._weight_int4pack_mm_for_cpu`, bfloat16 activations) on the same codes. Column x: "
            "the activation dtype (x and the output); lowbit computes every product and sum in float32 either way.")


def markdown(results: BenchResults, *, all_shapes: bool = False, title: str = "Performance") -> str:
    """A README section: how and where it was measured, targets, kernel and decode tables."""
    out = [f"## {title}", ""]
    command = f"`{results.command}`" if results.command else "`lowbit bench`"
    out += [f"Measured with {command}" + (f" on {results.created[:10]}" if results.created else "") + ".", "",
            f"- Machine: {machine_summary(results.machine)}",
            f"- Settings: {_settings_line(results)}",
            f"- {_upper_first(_bandwidth_line(results))}. The roofline fraction is bytes moved (weight as "
            f"stored, with scales and zeros, + activations + outputs) / time / bandwidth; for a kernel, the "
            f"median over the timing rounds against the bandwidth sampled in the same round"
            + (" (a GPU's memory, read by a 1 GiB reduction timed with CUDA events)." if _on_gpu(results) else
               " (this shared VM's bandwidth moves between states as the host places its vCPUs, and the kernels' "
               "times move with it)."),
            "- Times are medians (\"best\": the fastest sample); GB/s, roofline and speed-ups use the medians.",
            _speedups_line(results), ""]
    if results.targets:
        out += ["### Targets", "", "N = K = 4096, M = 1 (GEMV), group 128, 2 threads; decode on the ~1B model.", "",
                _md_table(TARGET_HEADERS, [(t.name, t.subject, t.requirement, t.measured, f"**{t.marker}**")
                                           for t in results.targets], right_from=99), ""]
    groups = _group_kernels(results.kernels)
    shown = groups if all_shapes else {s: r for s, r in groups.items() if s == TARGET_SHAPE} or groups
    for (n, k), rows in shown.items():
        table = _md_table(kernel_headers(results), kernel_table_rows(results, rows), right_from=4)
        out += [f"### Kernels: W = {n} x {k}", "", table, ""]
    if not all_shapes and len(shown) < len(groups):
        rest = ", ".join(f"{n}x{k}" for n, k in groups if (n, k) not in shown)
        out += [f"Other shapes measured ({rest}): see the JSON results or `--all`.", ""]
    if results.decode:
        out += ["### Decode", "", _upper_first(_decode_title(results)) + ".", "",
                _md_table(decode_headers(results), _decode_rows(results), right_from=3), ""]
    notes = _notes([*results.kernels, *results.decode])
    if notes:
        out += ["Notes:", ""] + [f"- {line}" for line in notes] + [""]
    out.append("_Generated by `python -m lowbit.bench.report` from the JSON results._")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None, print_fn: Callable[[str], Any] = print) -> int:
    """``python -m lowbit.bench.report results.json [--all] [--title T]``: print the Markdown section."""
    from lowbit.errors import LowbitError

    parser = argparse.ArgumentParser(prog="python -m lowbit.bench.report",
                                     description="Print a Markdown results section from lowbit bench JSON.")
    parser.add_argument("results", help="a JSON file written by: lowbit bench --json PATH")
    parser.add_argument("--all", action="store_true", help="include every shape (default: N = K = 4096)")
    parser.add_argument("--title", default="Performance", help="the section heading (default: Performance)")
    args = parser.parse_args(argv)
    try:
        print_fn(markdown(load_results(args.results), all_shapes=args.all, title=args.title))
    except LowbitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
