"""How each weight of a model is stored: dense (f32/f16/bf16) or quantized with ``lowbit.quant``.

A :class:`WeightPolicy` gives every linear layer (named as in the checkpoint, without ``.weight``, e.g.
``model.layers.0.self_attn.q_proj`` or ``lm_head``) a :class:`WeightSpec`. Overrides are glob patterns
(:mod:`fnmatch`), tried in order; the first that matches wins, else the default applies.

>>> policy = WeightPolicy.parse("u4", group_size=64, overrides={"lm_head": "f16", "*.down_proj": "u8:g32"})
>>> policy.spec_for("lm_head").dtype, policy.spec_for("model.layers.3.mlp.down_proj")
('float16', WeightSpec(dtype='uint8', group_size=32, zero_point=True, scale_dtype='float16'))
>>> policy.spec_for("model.layers.0.self_attn.q_proj").describe()
'uint4 g64 zero-point'

Spec strings: ``"<dtype>"`` or ``"<dtype>:g<group size>"`` (``"i4:g32"``); a trailing ``":zp"`` / ``":sym"``
forces a zero point on / off. By default unsigned integer types use a zero point (``w ~ (q - z) * s``) and
signed integer and float types are symmetric (``w ~ q * s``).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from lowbit.errors import LowbitError, RuntimeModelError

DENSE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def canonical_dtype(name: str) -> str:
    """The canonical lowbit name of a weight/KV type (``"u4"`` -> ``"uint4"``, ``"f16"`` -> ``"float16"``)."""
    import lowbit

    d = lowbit.dtype(name)
    if d.name not in DENSE_DTYPES and d.nbits > 8:
        raise RuntimeModelError(f"type {d.name} cannot store weights or a KV cache",
                                hint="use float32, float16, bfloat16 or a 1-8 bit type such as u4, i4, f4e2m1")
    return d.name


@dataclass(frozen=True)
class WeightSpec:
    """Storage of one weight: a dense torch dtype, or a low-bit type with group size and zero point."""

    dtype: str
    group_size: int = 128
    zero_point: bool = False
    scale_dtype: str = "float16"

    @property
    def is_dense(self) -> bool:
        return self.dtype in DENSE_DTYPES

    def describe(self) -> str:
        if self.is_dense:
            return self.dtype
        return f"{self.dtype} g{self.group_size}" + (" zero-point" if self.zero_point else "")

    @classmethod
    def parse(cls, text: str, group_size: int = 128, zero_point: bool | None = None,
              scale_dtype: str = "float16") -> "WeightSpec":
        """``"u4"``, ``"i4:g32"``, ``"u4:g64:sym"``, ``"f16"`` -> a spec (see the module docstring)."""
        parts = [p.strip() for p in str(text).split(":")]
        name = canonical_dtype(parts[0])
        for extra in parts[1:]:
            if extra.startswith("g") and extra[1:].isdigit():
                group_size = int(extra[1:])
            elif extra in ("zp", "sym"):
                zero_point = extra == "zp"
            else:
                raise RuntimeModelError(f"cannot read weight spec {text!r}: unknown part {extra!r}",
                                        hint="write '<dtype>', '<dtype>:g<group size>', optionally ':zp' or ':sym'")
        if group_size <= 0:
            raise RuntimeModelError(f"group size must be positive, got {group_size}")
        if zero_point is None:
            zero_point = name.startswith("uint")
        if name in DENSE_DTYPES:
            zero_point = False
        return cls(name, group_size, bool(zero_point), scale_dtype)


@dataclass(frozen=True)
class WeightPolicy:
    """The default :class:`WeightSpec` plus ordered ``(glob pattern, spec)`` overrides."""

    default: WeightSpec
    overrides: tuple[tuple[str, WeightSpec], ...] = ()

    @classmethod
    def parse(cls, weights: str = "float32", group_size: int = 128,
              overrides: Mapping[str, str | WeightSpec] | None = None,
              zero_point: bool | None = None, scale_dtype: str = "float16") -> "WeightPolicy":
        default = WeightSpec.parse(weights, group_size, zero_point, scale_dtype)
        items = []
        for pattern, spec in (overrides or {}).items():
            if not isinstance(spec, WeightSpec):
                spec = WeightSpec.parse(spec, group_size, zero_point, scale_dtype)
            items.append((pattern, spec))
        return cls(default, tuple(items))

    def spec_for(self, name: str) -> WeightSpec:
        for pattern, spec in self.overrides:
            if fnmatch.fnmatchcase(name, pattern):
                return spec
        return self.default

    def unused_overrides(self, names: list[str]) -> list[str]:
        """Override patterns that match none of ``names`` (likely typos)."""
        return [p for p, _ in self.overrides if not any(fnmatch.fnmatchcase(n, p) for n in names)]


def is_quantized(weight: Any) -> bool:
    return not isinstance(weight, torch.Tensor)


def store_weight(name: str, w: torch.Tensor, spec: WeightSpec) -> Any:
    """Convert an fp32 ``[N, K]`` weight to its storage: a dense tensor or a ``QuantizedTensor``."""
    if spec.is_dense:
        return w.to(DENSE_DTYPES[spec.dtype]).contiguous()
    from lowbit.quant import quantize

    try:
        return quantize(w, spec.dtype, group_size=spec.group_size, zero_point=spec.zero_point,
                        scale_dtype=spec.scale_dtype)
    except LowbitError as err:
        raise RuntimeModelError(f"cannot quantize {name} (shape {tuple(w.shape)}) as {spec.describe()}: "
                                f"{err.message}",
                                hint=(f"{err.hint}; " if err.hint else "") + f"or keep this layer dense with an "
                                f"override such as {{'{name}': 'f16'}}") from None


def dense_weight(weight: Any) -> torch.Tensor:
    """The fp32 dense value of a stored weight (dequantized when quantized)."""
    if isinstance(weight, torch.Tensor):
        return weight.to(torch.float32)
    return torch.as_tensor(weight.dequantize()).to(torch.float32)


def weight_nbytes(weight: Any) -> int:
    """Bytes a kernel reads for one pass over a stored weight: codes + scales + zeros, or the dense tensor."""
    if isinstance(weight, torch.Tensor):
        return weight.numel() * weight.element_size()
    total = getattr(weight, "nbytes", None)
    if isinstance(total, int):
        return total
    import lowbit

    rows, cols = weight.shape
    nbits = lowbit.dtype(weight.dtype).nbits
    total = rows * ((cols * nbits + 7) // 8)
    for part in (weight.scales, getattr(weight, "zeros", None)):
        if part is not None:
            part = torch.as_tensor(part)
            total += part.numel() * part.element_size()
    return total
