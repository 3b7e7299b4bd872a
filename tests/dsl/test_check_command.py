"""`lowbit check`: summary / AST / IR output, exit 0 when clean and 1 on any error, never a traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lowbit.ir

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_clean_file_summary(cli_main, capsys):
    assert cli_main(["check", str(EXAMPLES / "lowbit_gemm.lbk")]) == 0
    out = capsys.readouterr().out
    assert "kernel lowbit_gemm: ok" in out
    assert "b: uint4[K, N] @global (in)" in out and "c: f16[M, N] @global (out)" in out
    assert "grid: (cdiv(M, 16), cdiv(N, 32))" in out


def test_emit_ir_with_constants_round_trips(cli_main, capsys):
    args = ["check", str(EXAMPLES / "lowbit_gemm.lbk"), "--const", "W=float4_e2m1", "--const", "G=64", "--emit", "ir"]
    assert cli_main(args) == 0
    text = capsys.readouterr().out
    kernel = lowbit.ir.parse(text)
    assert kernel.param("b").value.type.dtype == "float4_e2m1"
    assert kernel.param("s").value.type.shape[0] == lowbit.ir.parse_dim("K // 64")
    lowbit.ir.verify(kernel)


def test_emit_ast(cli_main, capsys):
    assert cli_main(["check", str(EXAMPLES / "vector_add.lbk"), "--emit", "ast", "-k", "vector_add"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("FunctionDef(\n  name='vector_add'")
    assert "Call(" in out


def test_compile_error_exit_1_with_location(cli_main, capsys, tmp_path):
    bad = tmp_path / "bad.lbk"
    bad.write_text("def k(x: f32[N], y: Out[f32[N]]):\n    grid(cdiv(N, 4))\n    store(y, lod(x), [0])\n")
    assert cli_main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3:14: error: unknown name 'lod'" in err
    assert "Traceback" not in err


def test_every_kernel_checked_and_all_errors_reported(cli_main, capsys, tmp_path):
    f = tmp_path / "two.lbk"
    f.write_text("def a(x: f32[N]):\n    grid(1)\n\ndef b(x: f32[N]):\n    grid(1)\n    z = x + 1\n\n"
                 "def c(x: f32[N]):\n    pass\n")
    assert cli_main(["check", str(f)]) == 1
    captured = capsys.readouterr()
    assert "kernel a: ok" in captured.out
    assert f"{f}:6:9: error:" in captured.err and f"{f}:8:5: error: kernel 'c' never calls grid" in captured.err


def test_missing_file_bad_const_unknown_kernel(cli_main, capsys, tmp_path):
    assert cli_main(["check", str(tmp_path / "nope.lbk")]) == 1
    assert "no such kernel file" in capsys.readouterr().err
    assert cli_main(["check", str(tmp_path)]) == 1
    assert "is a directory" in capsys.readouterr().err
    assert cli_main(["check", str(EXAMPLES / "vector_add.lbk"), "--const", "BLOCK"]) == 1
    assert "--const expects NAME=VALUE" in capsys.readouterr().err
    assert cli_main(["check", str(EXAMPLES / "vector_add.lbk"), "--const", "BLOCK=12 +"]) == 1
    assert "<--const BLOCK>:1:" in capsys.readouterr().err
    assert cli_main(["check", str(EXAMPLES / "vector_add.lbk"), "-k", "vectoradd"]) == 1
    assert "did you mean 'vector_add'" in capsys.readouterr().err
    assert cli_main(["check", str(EXAMPLES / "softmax.lbk"), "--const", "BN=32", "--const", "BX=3"]) == 1
    assert "kernel 'softmax' has no constant 'BX'" in capsys.readouterr().err


def test_const_overrides_a_file_constant(cli_main, capsys):
    assert cli_main(["check", str(EXAMPLES / "vector_add.lbk"), "--const", "BLOCK=64", "--emit", "ir"]) == 0
    assert "grid(cdiv(N, 64))" in capsys.readouterr().out


def test_binary_file_is_an_error(cli_main, capsys, tmp_path):
    f = tmp_path / "bin.lbk"
    f.write_bytes(b"\xff\xfe\x00def")
    assert cli_main(["check", str(f)]) == 1
    assert "not UTF-8" in capsys.readouterr().err


def test_real_subprocess_and_light_imports(tmp_path):
    bad = tmp_path / "bad.lbk"
    bad.write_text("def k(x: f32[N]):\n    grid(1)\n        x = 1\n")
    cmd = [sys.executable, "-m", "lowbit.dsl.check_command"]
    ok = subprocess.run(cmd + [str(EXAMPLES / "softmax.lbk")], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "kernel softmax: ok" in ok.stdout
    err = subprocess.run(cmd + [str(bad)], capture_output=True, text=True, timeout=120)
    assert err.returncode == 1
    assert f"{bad}:3:9: error: unexpected indent" in err.stderr and "Traceback" not in err.stderr
    heavy = "('lark', 'torch', 'numpy', 'triton', 'tvm')"
    probe = subprocess.run([sys.executable, "-c", "import sys, lowbit.dsl.check_command; "
                            f"print(sorted(m for m in {heavy} if m in sys.modules))"],
                           capture_output=True, text=True, timeout=120)
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr
