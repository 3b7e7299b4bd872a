"""``lowbit bench`` end to end on tiny selections: exit status, terminal table, JSON and plots; option
resolution (--quick, explicit overrides) and user errors (exit 1, a message, no traceback)."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from lowbit.bench import config as c  # noqa: E402
from lowbit.cli import build_parser, main  # noqa: E402
from lowbit.commands.bench import _settings  # noqa: E402

TINY = ["--shapes", "32x256", "--m", "1", "--types", "int4", "--backends", "interpret", "--repeats", "1",
        "--decode-model", "tiny", "--decode-types", "int4", "--decode-tokens", "2", "--decode-repeats", "1",
        "--prompt-tokens", "3", "--bandwidth-mib", "8", "--no-progress", "--threads", "1"]


def _parse(*argv: str):
    return build_parser().parse_args(["bench", *argv])


def test_full_run_writes_json_and_plots(tmp_path, capsys) -> None:
    pytest.importorskip("transformers")
    out = tmp_path / "r.json"
    assert main(["bench", *TINY, "--json", str(out), "--plot", str(tmp_path / "plots")]) == 0
    text = capsys.readouterr().out
    assert "W [N x K] = 32 x 256" in text and "torch-int4" in text and "lowbit-interpret" in text
    assert "transformers-fp32" in text and "memory read bandwidth:" in text
    data = json.loads(out.read_text())
    assert data["schema"] == "lowbit-bench/1" and data["settings"]["threads"] == 1
    bw = data["bandwidth"]
    assert bw["before"]["threads"] == 1 and len(bw["during"]["samples_gbps"]) == 1     # one per timing round
    assert bw["gbps"] == max(bw["before"]["gbps"], bw["during"]["gbps"], bw["after"]["gbps"]) > 0
    impls = {(r["impl"], r["status"]) for r in data["kernels"]}
    assert impls == {("torch-fp32", "ok"), ("torch-bf16", "ok"), ("torch-int4", "ok"), ("lowbit-interpret", "ok")}
    lowbit = next(r for r in data["kernels"] if r["impl"] == "lowbit-interpret")
    assert set(lowbit["speedup"]) == {"torch-fp32", "torch-bf16", "torch-int4"} and lowbit["roofline"] > 0
    assert [r["impl"] for r in data["decode"]["rows"]][:2] == ["transformers-fp32", "transformers-bf16"]
    assert data["command"].startswith("lowbit bench --shapes 32x256")
    # targets are for 4096x4096 at 2 threads: present, never passed
    assert data["targets"] and all(t["passed"] is None for t in data["targets"])
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(
        ["speedup_vs_bits.png", "roofline_fraction.png", "decode_tokens_per_s.png"])


def test_kernels_only(capsys) -> None:
    assert main(["bench", "kernels", *TINY, "--hot"]) == 0
    text = capsys.readouterr().out
    assert "weights hot" in text and "transformers-fp32" not in text


def test_quick_and_overrides() -> None:
    kernels, decode = _settings(_parse("--quick"))
    assert kernels.shapes == c.QUICK.shapes and kernels.ms == c.QUICK.ms and kernels.types == c.QUICK.types
    assert kernels.repeats == c.QUICK.repeats and decode.model == "small" and decode.types == ("int4",)
    kernels, decode = _settings(_parse("--quick", "--m", "1,4", "--repeats", "9", "--decode-model", "1b"))
    assert kernels.ms == (1, 4) and kernels.repeats == 9 and decode.model == "1b"
    kernels, decode = _settings(_parse())
    assert kernels.shapes == c.LLAMA_SHAPES and kernels.ms == (1, 4, 16) and kernels.types == c.DEFAULT_TYPES
    assert kernels.repeats == 20 and kernels.cold and kernels.backends == ("tvm",) and decode.model == "1b"
    assert decode.kv == "float16" and _settings(_parse("--decode-kv", "u8"))[1].kv == "uint8"
    assert kernels.device == decode.device == "cpu" and kernels.act_dtypes == c.DEFAULT_ACT_DTYPES


@pytest.mark.parametrize("argv, message", [
    (["--shapes", "4096"], "not a weight shape"),
    (["--types", "int99"], "int99"),
    (["--backends", "cuda"], "unknown backend"),
    (["--repeats", "0"], "--repeats must be an integer >= 1"),
    (["--threads", "0"], "--threads must be an integer >= 1"),
    (["--decode-kv", "int32"], "int32 cannot hold a KV cache"),
    (["--decode-kv", "i9"], "unknown dtype 'i9'"),
    (["kernels", "--shapes", "32x200", "--m", "1", "--types", "int4", "--bandwidth-mib", "8", "--no-progress"],
     "does not divide K"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    pytest.param(["--device", "cuda"], "no CUDA device", marks=pytest.mark.skipif(
        __import__("torch").cuda.is_available(), reason="checks the no-GPU error")),
])
def test_user_errors(argv, message, capsys) -> None:
    assert main(["bench", *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_help_has_examples(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = capsys.readouterr().out
    assert "Examples:" in text and "lowbit bench --quick" in text and "--json PATH" in text


def test_progress_bar_reaches_its_total(monkeypatch, capsys) -> None:
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    argv = [a for a in TINY if a != "--no-progress"]
    assert main(["bench", "kernels", *argv]) == 0
    from lowbit.bench.kernels import count_steps

    kernels, _ = _settings(_parse("kernels", *argv))
    total = count_steps(kernels) + 2                      # + the two bandwidth measurements
    assert f"{total}/{total}" in term.getvalue() and "100%" in term.getvalue()
