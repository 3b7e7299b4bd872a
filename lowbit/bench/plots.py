"""PNG plots of a ``lowbit bench`` run (matplotlib, Agg backend: no display needed).

* ``speedup_vs_bits.png``: lowbit's speed-up over torch fp32 and torch bf16 against the stored bits per
  weight (scales and zeros included), one panel per (baseline, M), one line per (backend, shape);
* ``roofline_fraction.png``: the fraction of the measured bandwidth roofline against bits per weight,
  one panel per M, lowbit's types as lines and the baselines as separate markers;
* ``decode_tokens_per_s.png``: decode tokens/s per implementation (when the run has decode rows).

Panels without data say so instead of staying silently empty.

>>> from lowbit.bench.results import BenchResults
>>> paths = write_plots(BenchResults(machine={}, settings={}), "/tmp/lowbit-plots")   # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .results import BenchResults, KernelRow

__all__ = ["write_plots", "PLOT_FILES"]

PLOT_FILES = ("speedup_vs_bits.png", "roofline_fraction.png", "decode_tokens_per_s.png")
_BASE_STYLE = {"torch-fp32": ("s", "tab:gray"), "torch-bf16": ("D", "tab:brown"), "torch-int4": ("^", "tab:red")}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _family(weight_type: str) -> str:
    return "uint" if weight_type.startswith("uint") else "float" if weight_type.startswith("float") else "int"


_FAMILY_STYLE = {"int": ("o", "-"), "uint": ("v", "--"), "float": ("*", ":")}


def _series(rows: Sequence[KernelRow], m: int) -> dict[tuple[str, str], list[KernelRow]]:
    """lowbit rows at ``m`` that are ok, grouped by ("backend N x K x-dtype", type family), sorted by bits per
    weight."""
    out: dict[tuple[str, str], list[KernelRow]] = {}
    for r in rows:
        if r.is_lowbit and r.ok and r.m == m:
            out.setdefault((f"{r.impl} {r.n}x{r.k} x {r.act_dtype}", _family(r.weight_type)), []).append(r)
    for key in out:
        out[key].sort(key=lambda r: r.bits_per_weight or 0)
    return out


def _draw(ax: Any, series: dict[tuple[str, str], list[KernelRow]], value: Any) -> bool:
    """One line per series (color: backend and shape; marker and dash: int / uint / float)."""
    colors: dict[str, Any] = {}
    drawn = False
    for (where, family), rows in series.items():
        rows = [r for r in rows if value(r) is not None]
        if not rows:
            continue
        color = colors.setdefault(where, f"C{len(colors) % 10}")
        marker, dash = _FAMILY_STYLE[family]
        ys = [value(r) for r in rows]
        ax.plot([r.bits_per_weight for r in rows], ys, marker=marker, ms=4, lw=1, ls=dash, color=color,
                label=f"{where} {family}")
        _label_types(ax, rows, ys)
        drawn = True
    return drawn


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.4", wrap=True)


def _why_empty(rows: Sequence[KernelRow], m: int) -> str:
    lowbit = [r for r in rows if r.is_lowbit and r.m == m]
    if not lowbit:
        return "no lowbit kernels selected"
    statuses = sorted({r.status for r in lowbit})
    return "no lowbit kernel result\n(" + ", ".join(statuses) + ")"


def _label_types(ax: Any, rows: Sequence[KernelRow], ys: Sequence[float]) -> None:
    for r, y in zip(rows, ys):
        ax.annotate(r.weight_type.replace("float", "f").replace("uint", "u").replace("int", "i"),
                    (r.bits_per_weight, y), textcoords="offset points", xytext=(3, 3), fontsize=6)


def _speedup_plot(results: BenchResults, path: Path) -> Path:
    plt = _pyplot()
    ms = sorted({r.m for r in results.kernels}) or [1]
    bases = ("torch-fp32", "torch-bf16")
    fig, axes = plt.subplots(len(bases), len(ms), figsize=(4.2 * len(ms), 3.4 * len(bases)), squeeze=False)
    for i, base in enumerate(bases):
        for j, m in enumerate(ms):
            ax = axes[i][j]
            drawn = _draw(ax, _series(results.kernels, m), lambda r, base=base: r.speedup.get(base))
            if drawn:
                ax.set_yscale("log", base=2)
            ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
            ax.set_title(f"speed-up over {base}, M = {m}", fontsize=9)
            ax.set_xlabel("stored bits per weight (with scales/zeros)", fontsize=8)
            ax.set_ylabel(f"{base} time / lowbit time (log2)", fontsize=8)
            if drawn:
                ax.legend(fontsize=6)
            else:
                _empty(ax, _why_empty(results.kernels, m))
    fig.suptitle(_subtitle(results), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _roofline_plot(results: BenchResults, path: Path) -> Path:
    plt = _pyplot()
    ms = sorted({r.m for r in results.kernels}) or [1]
    fig, axes = plt.subplots(1, len(ms), figsize=(4.6 * len(ms), 3.6), squeeze=False)
    for j, m in enumerate(ms):
        ax = axes[0][j]
        drawn = _draw(ax, _series(results.kernels, m), lambda r: r.roofline)
        for base, (marker, color) in _BASE_STYLE.items():
            pts = [(r.bits_per_weight, r.roofline) for r in results.kernels
                   if r.impl == base and r.m == m and r.ok and r.roofline is not None]
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, s=18, label=base)
        ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
        ax.axhline(0.6, color="tab:green", lw=0.8, ls=":", label="W4 target (60%)")
        ax.set_xscale("log", base=2)
        ax.set_title(f"fraction of the bandwidth roofline, M = {m}", fontsize=9)
        ax.set_xlabel("stored bits per weight (log2)", fontsize=8)
        ax.set_ylabel("bytes / time / measured bandwidth", fontsize=8)
        if not drawn:
            _empty(ax, _why_empty(results.kernels, m))
        ax.legend(fontsize=6)
    fig.suptitle(_subtitle(results), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _decode_plot(results: BenchResults, path: Path) -> Path:
    plt = _pyplot()
    rows = results.decode
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 2), 3.6))
    labels = [f"{r.impl}\n{r.weights}" for r in rows]
    values = [r.tokens_per_s if r.ok else 0.0 for r in rows]
    colors = ["tab:blue" if r.impl.startswith("lowbit-") else "tab:gray" for r in rows]
    bars = ax.bar(range(len(rows)), values, color=colors)
    for bar, r in zip(bars, rows):
        text = f"{r.tokens_per_s:.1f}" if r.ok else r.status
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                    fontsize=7, textcoords="offset points", xytext=(0, 2))
    ax.set_xticks(range(len(rows)), labels, fontsize=6)
    ax.set_ylabel("decode tokens/s", fontsize=8)
    model = results.decode_model or {}
    ax.set_title(f"decode, {model.get('preset', '?')} Llama ({model.get('parameters', 0) / 1e6:.0f}M params)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _subtitle(results: BenchResults) -> str:
    s = results.settings
    cpu = results.machine.get("cpu", "?")
    bw = results.bandwidth.get("gbps") if results.bandwidth else None
    bw_text = f", {bw:.1f} GB/s measured" if bw else ""
    return f"{cpu}, {s.get('threads', '?')} threads, group {s.get('group_size', '?')}{bw_text}"


def write_plots(results: BenchResults, directory: str | Path) -> list[Path]:
    """Write the plots of :data:`PLOT_FILES` that have data into ``directory``; returns their paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    if results.kernels:
        paths.append(_speedup_plot(results, out / PLOT_FILES[0]))
        paths.append(_roofline_plot(results, out / PLOT_FILES[1]))
    if results.decode:
        paths.append(_decode_plot(results, out / PLOT_FILES[2]))
    return paths
