"""Fixtures for every test folder."""
from __future__ import annotations

import dataclasses

import pytest

#: ``/proc/cpuinfo`` flags of an AVX-512 BF16 host (Zen 4), whose lowering choices the structure tests state
AVX512_BF16_FLAGS = frozenset({"avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl",
                               "avx512_vnni", "avx512_bf16", "avx512vbmi", "avx512_vbmi2"})


@pytest.fixture
def avx512_bf16_host(monkeypatch):
    """Lower as for an AVX-512 BF16 host whatever this CPU is (its flags and 512-bit vectors), for tests that
    state the lowering's choices and the code it emits there without running it. Code built under it keeps this
    CPU's real features (``mattr``), so it never holds instructions the CPU lacks."""
    from lowbit.lowering import target

    monkeypatch.setattr(target, "host_cpu_flags", lambda: AVX512_BF16_FLAGS)
    from lowbit.errors import BackendError
    from lowbit.lowering.tvm import target as tvm_target

    try:
        real = tvm_target.host_cpu()
    except BackendError:                # no TVM: only the flags matter
        return
    llvm = frozenset({"avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512bf16"})
    monkeypatch.setattr(tvm_target, "host_cpu",
                        lambda: dataclasses.replace(real, vector_bits=512, features=real.features | llvm))
