"""PNG plots from results: files are written, are valid PNG images, and empty data still gives a plot."""
from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from lowbit.bench.plots import PLOT_FILES, write_plots  # noqa: E402
from lowbit.bench.results import BenchResults, DecodeRow, KernelRow  # noqa: E402


def _kernel(impl: str, wtype: str, m: int, bits: float, status: str = "ok", **kw) -> KernelRow:
    return KernelRow(impl, 4096, 4096, m, wtype, status, bits_per_weight=bits,
                     median_s=1e-3 if status == "ok" else None, **kw)


def _read_png(path):
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    return image


def test_all_plots_written(tmp_path) -> None:
    kernels = [_kernel("torch-fp32", "float32", m, 32.0, roofline=0.7) for m in (1, 4)]
    kernels += [_kernel("lowbit-tvm", t, m, b, roofline=0.5, speedup={"torch-fp32": 5.0, "torch-bf16": 1.2})
                for m in (1, 4) for t, b in (("int2", 2.1), ("int4", 4.1), ("uint3", 3.3), ("float4_e2m1", 4.1))]
    res = BenchResults(machine={"cpu": "Test"}, settings={"threads": 2, "group_size": 128}, bandwidth={"gbps": 20.0},
                       kernels=kernels, decode_model={"preset": "tiny", "parameters": 10**6},
                       decode=[DecodeRow("transformers-fp32", "float32", "ok", tokens_per_s=5.0),
                               DecodeRow("lowbit-tvm", "int4 g128", "n/a", detail="x")])
    paths = write_plots(res, tmp_path / "plots")
    assert [p.name for p in paths] == list(PLOT_FILES)
    for p in paths:
        _read_png(p)


def test_plots_without_lowbit_results(tmp_path) -> None:
    kernels = [_kernel("torch-fp32", "float32", 1, 32.0, roofline=0.7),
               _kernel("lowbit-tvm", "int4", 1, 4.1, status="n/a", detail="not available")]
    res = BenchResults(machine={}, settings={}, kernels=kernels)
    paths = write_plots(res, tmp_path)
    assert [p.name for p in paths] == list(PLOT_FILES[:2])      # no decode rows: no decode plot
    for p in paths:
        _read_png(p)
