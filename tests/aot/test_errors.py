"""Corrupt, edited or foreign artifacts are detected on load (FormatError with a recompile hint); bad command
lines exit 1 with lowbit's message and never a traceback; bad calls are KernelArgumentErrors."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import lowbit
from lowbit.aot import load, open_artifact
from lowbit.cli import main as cli_main
from lowbit.errors import BackendError, FormatError, KernelArgumentError

from .conftest import EXAMPLES


@pytest.fixture
def vadd_copy(artifact, tmp_path):
    """A private copy of the vector-add Triton artifact, free to damage."""
    path = tmp_path / "vadd"
    shutil.copytree(artifact("vadd_sm80"), path)
    return path


def _flip_byte(path, offset=100):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_the_cubin_is_detected(vadd_copy, capsys):
    _flip_byte(vadd_copy / "vector_add.sm_80.cubin")
    with pytest.raises(FormatError, match=r"(?s)corrupt: vector_add.sm_80.cubin does not match its SHA-256.*"
                                          r"hint: recompile it: lowbit compile .*vector_add.lbk --target triton:sm_80"):
        load(vadd_copy, mode="interpret")
    assert cli_main(["inspect", str(vadd_copy)]) == 1
    assert "does not match its SHA-256" in capsys.readouterr().err
    assert cli_main(["inspect", str(vadd_copy), "--no-verify"]) == 0        # shown anyway when asked
    assert "NOT verified" in capsys.readouterr().out


def test_a_truncated_or_missing_file_is_detected(vadd_copy):
    source = vadd_copy / "vector_add.sm_80.py"
    source.write_text(source.read_text()[:-10])
    with pytest.raises(FormatError, match="vector_add.sm_80.py has .* bytes, the manifest says"):
        open_artifact(vadd_copy)
    source.unlink()
    with pytest.raises(FormatError, match="incomplete: vector_add.sm_80.py is missing"):
        open_artifact(vadd_copy)


def test_an_edited_manifest_is_detected(vadd_copy):
    path = vadd_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["grid"] = ["cdiv(N, 64)"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(FormatError, match="manifest.json does not match its content hash"):
        load(vadd_copy, mode="interpret")
    path.write_text("{not json")
    with pytest.raises(FormatError, match="unreadable or corrupt"):
        load(vadd_copy)


def test_passes_that_no_longer_reproduce_the_packed_format_are_detected(artifact, tmp_path):
    """An artifact whose recorded weight format differs from what this lowbit derives (as after a change of
    the passes) must not be run with this lowbit's repack. The manifest is re-hashed to pass the checksum."""
    from lowbit.aot import _content_hash

    path = tmp_path / "gemm"
    shutil.copytree(artifact("gemm_u4_llvm"), path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["param_formats"]["b"]["id"] = "tile-b4-32x32-u32v1-0000000000/v1"
    manifest["content_hash"] = _content_hash(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FormatError, match=r"packs weights as \{'b': 'tile-b4-32x32-u32v1-0000000000/v1'\}, but "
                                          r"this lowbit's passes derive"):
        load(path)


def test_not_an_artifact(tmp_path):
    with pytest.raises(FormatError, match="no artifact at"):
        load(tmp_path / "absent")
    with pytest.raises(FormatError, match="has no manifest.json: it is not a lowbit artifact"):
        load(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(FormatError, match="does not describe a lowbit artifact"):
        load(tmp_path)


def test_load_modes(artifact):
    with pytest.raises(BackendError, match="unknown load mode 'fast'"):
        load(artifact("vadd_llvm"), mode="fast")
    with pytest.raises(BackendError, match="runs a Triton artifact's source.*is tvm:llvm"):
        load(artifact("vadd_llvm"), mode="interpret")


def test_bad_calls_are_argument_errors(artifact):
    k = lowbit.load(artifact("vadd_llvm"))
    x = torch.zeros(8)
    with pytest.raises(KernelArgumentError, match="takes 3 arguments .x, y, out., got 4 positional"):
        k(x, x, x, x)
    with pytest.raises(KernelArgumentError, match="given by position and by name"):
        k(x, x, x, x=x)
    with pytest.raises(KernelArgumentError, match="missing out"):
        k(x, x)
    with pytest.raises(KernelArgumentError, match="must be a torch.float32 tensor"):
        k(x, x, torch.zeros(8, dtype=torch.float16))
    with pytest.raises(KernelArgumentError, match="N = 9, but an earlier argument has N = 8"):
        k(x, x, torch.zeros(9))


def test_int32_torch_storage_is_accepted_for_uint32_words(artifact):
    """uint32 words as torch uint32, numpy uint32 or (the same bits) torch int32 all run, identically."""
    k = lowbit.load(artifact("gemm_u4_llvm"))
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, (64, 32)).astype(np.uint8)
    a = torch.from_numpy(rng.standard_normal((3, 64)).astype(np.float16))
    s = torch.full((2, 32), 0.5, dtype=torch.float16)
    fmt = k.param_formats["b"]
    outs = []
    words = fmt.pack(codes)
    assert words.dtype == np.uint32
    for packed in (fmt.pack(torch.from_numpy(codes)), words, torch.from_numpy(words.view(np.int32))):
        c = torch.zeros((3, 32), dtype=torch.float16)
        k(a, packed, s, c)
        outs.append(c)
    assert outs[0].abs().max() > 0 and torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


CLI_ERRORS = [
    (["nope.lbk", "--target", "tvm:llvm"], "no such kernel file: nope.lbk"),
    ([str(EXAMPLES / "vector_add.lbk"), "-k", "vector_mul", "--target", "tvm:llvm"],
     "has no kernel 'vector_mul'"),
    ([str(EXAMPLES / "vector_add.lbk"), "--target", "triton:sm_42"], "unknown target 'triton:sm_42'"),
    ([str(EXAMPLES / "vector_add.lbk"), "--target", "cuda"], "unknown target 'cuda'"),
    ([str(EXAMPLES / "vector_add.lbk"), "--target", "triton:cpu"], "has no ahead-of-time form"),
    ([str(EXAMPLES / "vector_add.lbk"), "--target", "tvm:llvm", "--const", "BLOCK"], "--const expects NAME=VALUE"),
    ([str(EXAMPLES / "lowbit_gemm.lbk"), "--target", "tvm:llvm", "--const", "W=u99"], "unknown name 'u99'"),
    ([str(EXAMPLES / "lowbit_gemm.lbk"), "--target", "tvm:llvm", "--const", "TILE=4"], "has no constant 'TILE'"),
    ([str(EXAMPLES / "vector_add.lbk"), "--target", "tvm:llvm", "--num-warps", "8"], "num_warps applies to CUDA"),
    ([str(EXAMPLES / "vector_add.lbk"), "--target", "triton:sm_90", "--num-warps", "3"], "power of two"),
    ([str(EXAMPLES / "vector_add.lbk"), "--target", "triton:sm_90", "--divisible", "zz"],
     "divisible names zz, which are not"),
]


@pytest.mark.parametrize("argv,message", CLI_ERRORS, ids=[m for _, m in CLI_ERRORS])
def test_bad_command_lines_exit_1_with_a_message(argv, message, tmp_path, capsys):
    assert cli_main(["compile", *argv, "-o", str(tmp_path / "out"), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lowbit compile: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())     # nothing half-written


def test_a_non_empty_output_directory_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert cli_main(["compile", str(EXAMPLES / "vector_add.lbk"), "--target", "triton:sm_80", "-o",
                     str(tmp_path), "-q"]) == 1
    assert "is not empty and holds no lowbit artifact" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli_help_and_errors_through_the_installed_command(tmp_path):
    exe = [sys.executable, "-m", "lowbit.cli"]
    help_text = subprocess.run([*exe, "compile", "--help"], capture_output=True, text=True, timeout=120)
    assert help_text.returncode == 0
    for needle in ("--target", "--const NAME=VALUE", "Examples:", "lowbit.load(", "tvm:cuda:sm_90", "triton:sm_100"):
        assert needle in help_text.stdout, needle
    bad = subprocess.run([*exe, "inspect", str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "lowbit inspect: no artifact at" in bad.stderr and "Traceback" not in bad.stderr
