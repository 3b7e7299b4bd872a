"""Four processes compiling the same real kernel at once: each gets correct results, the cache holds one entry."""
from __future__ import annotations

import multiprocessing
import time

from lowbit.cache import CompileCache


def _worker(cache_dir: str, start_at: float, queue) -> None:
    import os

    os.environ["LOWBIT_CACHE_DIR"] = cache_dir
    import torch

    from lowbit.driver import compile_ir
    from lowbit.ir import KernelBuilder

    kb = KernelBuilder("axpy")
    x = kb.tensor_param("x", "f32", ["N"], intent="in")
    y = kb.tensor_param("y", "f32", ["N"], intent="inout")
    kb.set_grid("cdiv(N, 64)")
    off = kb.mul(kb.program_id(0), 64)
    kb.store(y, kb.add(kb.mul(kb.load(x, [off], [64]), 3.0), kb.load(y, [off], [64])), [off])
    kernel = kb.build()
    while time.time() < start_at:
        time.sleep(0.005)
    compiled = compile_ir(kernel, "tvm")
    xs, ys = torch.arange(100, dtype=torch.float32), torch.ones(100)
    compiled.launch({"x": xs, "y": ys})
    queue.put(bool(torch.equal(ys, xs * 3 + 1)))


def test_four_processes_compile_one_kernel(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 12  # every process has imported torch and built its IR by then
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), start_at, queue)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(240)
        assert proc.exitcode == 0
    assert [queue.get(timeout=5) for _ in procs] == [True] * 4
    assert len(CompileCache(tmp_path).entries()) == 1
