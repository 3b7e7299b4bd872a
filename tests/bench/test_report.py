"""Terminal and Markdown tables made from results: numbers for rows that ran, status and reason otherwise."""
from __future__ import annotations

from lowbit.bench.report import main, markdown, terminal_report
from lowbit.bench.results import BenchResults, DecodeRow, KernelRow, TargetCheck


def _results() -> BenchResults:
    k = dict(n=4096, k=4096, group_size=128)
    return BenchResults(
        machine={"cpu": "Test CPU", "cores": 2, "llc_bytes": 32 << 20, "packages": {"torch": "2.13.0"}},
        settings={"threads": 2, "group_size": 128, "repeats": 20, "cold": True, "flush_bytes": 96 << 20},
        bandwidth={"gbps": 25.0, "before": {"gbps": 24.0, "threads": 2}, "after": {"gbps": 25.0, "threads": 2}},
        kernels=[
            KernelRow("torch-fp32", m=1, weight_type="float32", status="ok", median_s=4e-3, bytes=67_141_632,
                      bits_per_weight=32.0, gbps=16.79, roofline=0.67, **k),
            KernelRow("lowbit-tvm", m=1, weight_type="int4", status="ok", median_s=5e-4, min_s=4.5e-4, bytes=8_683_520,
                      bits_per_weight=4.125, gbps=17.37, roofline=0.69, speedup={"torch-fp32": 8.0}, **k),
            KernelRow("lowbit-tvm", m=1, weight_type="int3", status="n/a", detail="not available: no kernel",
                      bits_per_weight=3.125, **k),
            KernelRow("torch-fp32", n=11008, k=4096, m=1, weight_type="float32", status="ok", median_s=1e-2,
                      bits_per_weight=32.0),
        ],
        decode_model={"preset": "1b", "parameters": 1_100_048_384, "new_tokens": 32, "prompt_tokens": 16,
                      "repeats": 3},
        decode=[DecodeRow("transformers-fp32", "float32", "ok", tokens_per_s=3.5, gbps=15.4, roofline=0.62),
                DecodeRow("lowbit-tvm", "int4 g128", "error", detail="RuntimeError: boom", weight_type="int4")],
        targets=[TargetCheck("W4 GEMV roofline", ">= 60% of DRAM roofline", "69%", True, "lowbit-tvm int4, x float32"),
                 TargetCheck("W4 GEMV vs torch fp32", ">= 5x torch fp32", "8.00x", True, "lowbit-tvm int4, x float32"),
                 TargetCheck("W4 GEMV vs torch bf16", ">= 1.5x torch bf16", "1.20x", False, "lowbit-tvm int4, x float32"),
                 TargetCheck("W3 vs W4", "speed-up >= 80%", "not measured", None, "lowbit-tvm int3, x float32"),
                 TargetCheck("decode W4", ">= 4x", "lowbit-tvm: error", None, "lowbit-tvm int4 decode, x float32")],
        command="lowbit bench --shapes 4096x4096")


def test_markdown_section() -> None:
    md = markdown(_results())
    assert md.startswith("## Performance\n")
    assert "Test CPU, 2 cores" in md and "25.0 GB/s" in md and "`lowbit bench --shapes 4096x4096`" in md
    assert "| 1 | lowbit-tvm | int4 | f32 | 4.12 | 0.500 | 0.450 | 17.4 | 69% | 8.00x | - | - | FAIL (bf16) |" in md
    assert "| 1 | lowbit-tvm | int3 | f32 | 3.12 | n/a | - | - | - | - | - | - | n/a |" in md
    assert "| W4 GEMV vs torch bf16 | lowbit-tvm int4, x float32 | >= 1.5x torch bf16 | 1.20x | **FAIL** |" in md
    assert "lowbit-tvm int3 (x float32): n/a: not available: no kernel" in md
    assert "| lowbit-tvm | int4 g128 | f32 | error | - | - | - | - | n/a |" in md and "RuntimeError: boom" in md
    assert "W = 11008 x 4096" not in md and "Other shapes measured (11008x4096)" in md
    assert "### Kernels: W = 11008 x 4096" in markdown(_results(), all_shapes=True)


def test_terminal_report_lists_everything() -> None:
    text = terminal_report(_results())
    assert "W [N x K] = 4096 x 4096" in text and "W [N x K] = 11008 x 4096" in text
    lines = text.splitlines()
    fp32 = lines.index(next(line for line in lines if line.startswith("1  torch-fp32")))
    tvm = lines.index(next(line for line in lines if line.startswith("1  lowbit-tvm      int4     f32")))
    assert fp32 < tvm                                          # baselines first
    assert "decode: 1b Llama (1.10B parameters" in text and "FAIL (bf16)" in text
    assert ("memory read bandwidth: 25.0 GB/s with 2 threads (medians: before the run 24.0, after 25.0 GB/s; "
            "the roofline uses the highest)") in text
    paired = _results()
    paired.kernels[1] = KernelRow("lowbit-tvm", m=1, weight_type="int4", status="ok", median_s=5e-4,
                                  samples_s=(5e-4,), round_gbps=(30.0,), n=4096, k=4096)
    assert "kernel rooflines use the sample of their own timing round, decode the highest" in terminal_report(paired)


def test_main_prints_markdown(tmp_path, capsys) -> None:
    path = _results().save(tmp_path / "r.json")
    assert main([str(path), "--title", "Results"]) == 0
    assert capsys.readouterr().out.startswith("## Results")
    assert main([str(tmp_path / "none.json")]) == 1
    assert "no such results file" in capsys.readouterr().err
