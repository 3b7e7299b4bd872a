"""Launching a Triton artifact's cubin: the host-side plan (argument order, grid, assumption checks) is
checked on the CPU; the launch itself runs only where a CUDA GPU of the artifact's architecture exists."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import lowbit
from lowbit.aot import CubinLaunchPlan, _relower, _target_from_manifest, open_artifact
from lowbit.errors import KernelArgumentError
from lowbit.lowering.triton.artifact import TritonArtifact


def _plan(path):
    art = open_artifact(path)
    _, lowered = _relower(art, _target_from_manifest(art.manifest))
    return CubinLaunchPlan(TritonArtifact.load(path / art.manifest["launch"]["launch_file"]), lowered.kernel), lowered


def _args(lowered, m=5, k=128, n=70):
    fmt = lowered.param_formats["b"]
    codes = torch.randint(0, 8, (k, n), dtype=torch.uint8)
    return {"a": torch.randn(m, k).half(), "b": fmt.pack(codes).view(torch.uint32),
            "s": torch.ones(k // 32, n).half(), "c": torch.zeros(m, n).half()}


def test_plan_orders_every_cubin_argument_and_evaluates_the_grid(artifact):
    plan, lowered = _plan(artifact("gemm_i3_sm80_div"))
    args = _args(lowered)
    sizes = plan.sizes(args, None)
    assert (sizes["M"], sizes["K"], sizes["N"]) == (5, 128, 70)
    assert plan.grid(sizes) == (1, 2, 1)                         # cdiv(5, 32), cdiv(70, 64)
    values = dict(zip(plan.aot.arg_names, plan.values(args, sizes)))
    assert list(values) == list(plan.aot.arg_names)
    assert values["a"] is args["a"] and values["b"] is args["b"] and values["c"] is args["c"]
    assert values["a_stride0"] == 128 and values["c_stride0"] == 70
    assert values["b_stride0"] == args["b"].stride(0) and values["b_stride1"] == args["b"].stride(1)
    assert (values["M"], values["K"], values["N"]) == (5, 128, 70)
    assert values["BM"] == 32 and values["a_stride1"] == 1      # constexprs in place (Triton skips them)
    plan.check(args, plan.values(args, sizes))                   # a well-formed call passes every check


def test_plan_rejects_calls_that_break_the_compiled_assumptions(artifact):
    plan, lowered = _plan(artifact("gemm_i3_sm80_div"))
    good = _args(lowered)

    def check(**changes):
        args = {**good, **changes}
        plan.check(args, plan.values(args, plan.sizes(args, None)))

    b = good["b"]
    wide = torch.zeros(*b.shape[:-1], b.shape[-1] + 8, dtype=torch.uint32)[..., :b.shape[-1]]
    with pytest.raises(KernelArgumentError, match=r"stride 1 of b is \d+, but .* multiple of 16"):
        check(b=wide)                                           # row stride 392 words: not 16-divisible
    a_t = torch.randn(128, 5).half().t()
    with pytest.raises(KernelArgumentError, match="argument a must have a contiguous last dimension"):
        check(a=a_t)
    c_off = torch.zeros(5 * 70 + 1, dtype=torch.float16)[1:].view(5, 70)
    with pytest.raises(KernelArgumentError, match="argument c must start at a 16-byte aligned address"):
        check(c=c_off)
    with pytest.raises(KernelArgumentError, match="size N is 70, but argument c has extent 71"):
        plan.sizes({**good, "c": torch.zeros(5, 71).half()}, None)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cubin_runs_on_a_gpu_of_its_architecture(tmp_path):
    from lowbit.cli import main as cli_main

    from .conftest import EXAMPLES

    major, minor = torch.cuda.get_device_capability()
    out = tmp_path / "vadd"
    assert cli_main(["compile", str(EXAMPLES / "vector_add.lbk"), "--target", f"triton:sm_{major}{minor}",
                     "-o", str(out), "-q"]) == 0
    k = lowbit.load(out)
    assert k.mode == "native"
    x, y = torch.randn(1000, device="cuda"), torch.randn(1000, device="cuda")
    out_t = torch.zeros(1000, device="cuda")
    k(x, y, out_t)
    torch.cuda.synchronize()
    assert torch.equal(out_t, x + y)
    np.testing.assert_array_equal(out_t.cpu().numpy(), (x + y).cpu().numpy())
