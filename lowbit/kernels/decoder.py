"""Host side of the decoder layer's small kernels (``decoder.lbk``): RMSNorm (with the residual add before it),
rotary embeddings, gated SiLU.

Functions here trust their inputs (``lowbit.ops`` checks them): contiguous 2-D rows on one device. Every
argument of these kernels varies from call to call (the norm's weight differs per layer), so a launch is bound
once per call shape (:class:`RowsLaunch`, cached here; it holds no tensors) and serves every layer.

>>> import torch
>>> x = torch.randn(2, 64)
>>> norm = rms_norm_launch(2, 64, torch.float32, torch.float32, torch.bfloat16, 1e-6, x.device, "interpret")
>>> y = norm.run(x, torch.ones(64))
>>> y.dtype, bool(torch.allclose(y.float(), x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6), rtol=1e-2))
(torch.bfloat16, True)
>>> silu_mul_launch(2, 2 * 64, torch.float32, torch.float32, x.device, "interpret").run(torch.randn(2, 128)).shape
torch.Size([2, 64])
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

from .library import compiled, pow2_at_least

__all__ = ["RowsLaunch", "rms_norm_launch", "add_rms_norm_launch", "rope_launch", "silu_mul_launch"]

FILE = "decoder.lbk"


@dataclass(frozen=True)
class RowsLaunch:
    """A kernel of ``decoder.lbk`` bound for one call shape: ``run(*inputs)`` allocates the outputs and launches
    (the inputs contiguous, of the dtypes and shapes it was bound for); it returns the output, or a tuple of them
    for a kernel with several."""

    bound: Any
    new_outputs: tuple[Callable[[], Any], ...]  # each allocates an output: torch.empty with its shape, dtype, device

    def run(self, *inputs: Any) -> Any:
        outs = [new() for new in self.new_outputs]
        self.bound.trusted(*inputs, *outs)
        return outs[0] if len(outs) == 1 else tuple(outs)


def _name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _bind(kernel: str, backend: str, device: Any, constants: dict[str, Any], inputs: dict[str, tuple],
          outputs: dict[str, tuple]) -> RowsLaunch:
    """``kernel`` compiled for ``constants`` and bound to example tensors ``{name: (shape, dtype)}`` of its inputs
    and outputs (the outputs last, in the kernel's order)."""
    import torch

    built = compiled(FILE, kernel, backend, "cuda" if device.type == "cuda" else "cpu", **constants)
    examples = {name: torch.empty(shape, dtype=dtype, device=device)
                for name, (shape, dtype) in {**inputs, **outputs}.items()}
    return RowsLaunch(built.bind(examples, tuple(examples), check=False),
                      tuple(functools.partial(torch.empty, shape, dtype=dtype, device=device)
                            for shape, dtype in outputs.values()))


@functools.lru_cache(maxsize=64)
def rms_norm_launch(m: int, h: int, x_dtype: Any, w_dtype: Any, out_dtype: Any, eps: float, device: Any,
                    backend: str) -> RowsLaunch:
    """``rms_norm`` for ``x [m, h]``, ``w [h]``: ``w * (x * rsqrt(mean(x^2) + eps))`` per row in f32, rounded
    once to ``out_dtype``; ``run(x, w)``."""
    constants = dict(XT=_name(x_dtype), WT=_name(w_dtype), OT=_name(out_dtype), H=h, EPS=float(eps))
    return _bind("rms_norm", backend, device, constants, {"x": ((m, h), x_dtype), "w": ((h,), w_dtype)},
                 {"o": ((m, h), out_dtype)})


@functools.lru_cache(maxsize=64)
def add_rms_norm_launch(m: int, h: int, x_dtype: Any, d_dtype: Any, w_dtype: Any, out_dtype: Any, eps: float,
                        device: Any, backend: str) -> RowsLaunch:
    """``add_rms_norm`` for ``x``, ``d [m, h]``, ``w [h]``: ``s = x + d`` in f32, rounded once to ``x_dtype``, and
    ``rms_norm(s)`` rounded once to ``out_dtype``; ``run(x, d, w) -> (s, normed)``."""
    constants = dict(XT=_name(x_dtype), DT=_name(d_dtype), WT=_name(w_dtype), OT=_name(out_dtype), H=h,
                     EPS=float(eps))
    return _bind("add_rms_norm", backend, device, constants,
                 {"x": ((m, h), x_dtype), "d": ((m, h), d_dtype), "w": ((h,), w_dtype)},
                 {"s": ((m, h), x_dtype), "o": ((m, h), out_dtype)})


@functools.lru_cache(maxsize=64)
def silu_mul_launch(m: int, width: int, in_dtype: Any, out_dtype: Any, device: Any, backend: str) -> RowsLaunch:
    """``silu_mul`` for ``gate_up [m, width]`` (gate in the first half): ``silu(gate) * up`` in f32, rounded once
    to ``out_dtype``, ``[m, width / 2]``; ``run(gate_up)``."""
    half = width // 2
    constants = dict(XT=_name(in_dtype), OT=_name(out_dtype), I=half, BI=min(512, pow2_at_least(half)))
    return _bind("silu_mul", backend, device, constants, {"gu": ((m, width), in_dtype)},
                 {"o": ((m, half), out_dtype)})


@functools.lru_cache(maxsize=64)
def rope_launch(t: int, h: int, d: int, x_dtype: Any, out_dtype: Any, device: Any, backend: str) -> RowsLaunch:
    """``rope`` for ``x [t, h, d]`` and float32 ``cos``, ``sin [t, d]``: ``x * cos + rotate_half(x) * sin`` per head
    in f32, rounded once to ``out_dtype``; ``run(x, cos, sin)``."""
    import torch

    constants = dict(XT=_name(x_dtype), OT=_name(out_dtype), D=d, HB=min(8, pow2_at_least(h)))
    return _bind("rope", backend, device, constants, {"x": ((t, h, d), x_dtype), "cos": ((t, d), torch.float32),
                                                      "sin": ((t, d), torch.float32)},
                 {"o": ((t, h, d), out_dtype)})
