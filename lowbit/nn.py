"""torch modules on lowbit's kernels: :class:`QuantLinear`, and :func:`quantize` to swap a model's linears.

A :class:`QuantLinear` holds a group-quantized weight ``[out_features, in_features]`` (any 1-8 bit type) as
buffers and computes ``x @ W.T + bias`` with lowbit's matmul kernel through the ``lowbit::matmul`` custom op
(:mod:`lowbit.torch_ops`), so it works in eager mode, under ``torch.compile`` and with autograd for ``x``
and ``bias`` (the quantized weight itself is frozen).

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
>>> model = quantize(model, "int4", group_size=32, backend="interpret", progress=False)
>>> model[0]
QuantLinear(in_features=64, out_features=32, bias=True, dtype=int4, group_size=32, zero_point=False, bits/weight=4.50)
>>> model(torch.randn(5, 64)).shape
torch.Size([5, 8])

**State.** Buffers ``weight_packed`` (uint8 ``[N, ceil(K * bits / 8)]``, the dense row-major bitstream of
:mod:`lowbit.quant`), ``weight_scales`` ``[N, K // G]`` and ``weight_zeros`` (only with zero points), plus
the ``bias`` parameter. Scales and zeros are kept as their **raw bits** in an integer buffer (int16 for
16-bit, int32 for 32-bit, uint8 for 8-bit float dtypes) so that ``model.half()`` or
``model.to(torch.bfloat16)`` moves them without rounding them to another float type (a silent change of the
weights); ``.to(device)`` moves them as usual and :attr:`QuantLinear.qweight` gives the
:class:`~lowbit.quant.QuantizedTensor` with the real dtypes. The state dict also holds an ``_extra_state``
entry (format id and version, weight dtype, group size, shape, scale / zero dtypes): loading a state dict
whose entry differs from the module's raises :class:`lowbit.FormatError` before anything is copied.

**Defaults.** ``zero_point=None`` means zero points for ``uint`` types and for 1-bit types (symmetric 1-bit
has no positive level), none otherwise (``int`` types are symmetric, float types never have zeros).
"""
from __future__ import annotations

import fnmatch
import math
import warnings
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from . import torch_ops  # noqa: F401  (registers torch.ops.lowbit.*)
from .dtypes import DType, dtype as as_dtype
from .errors import FormatError, KernelArgumentError, QuantizationError
from .quant import DENSE_ROWMAJOR, QuantizedTensor
from .quant import quantize as quantize_tensor

__all__ = ["QuantLinear", "quantize", "QuantizationWarning", "INDIVISIBLE_POLICIES"]

#: what :func:`quantize` does with a layer whose ``in_features`` is not a multiple of the group size
INDIVISIBLE_POLICIES = ("per-channel", "skip", "error")

_BACKENDS = (None, "tvm", "triton", "interpret")
_RAW = {1: torch.uint8, 2: torch.int16, 4: torch.int32}  # bytes per element -> raw-bits container
_INTEGER = (torch.uint8, torch.int8, torch.int16, torch.int32)


class QuantizationWarning(UserWarning):
    """A layer was quantized differently from what was asked (per-channel fallback) or left in float."""


# ---------------------------------------------------------------------------------------------------------
# argument resolution
# ---------------------------------------------------------------------------------------------------------
def _weight_dtype(spec: Any) -> DType:
    d = as_dtype(spec)  # DTypeError for unknown names
    if d.nbits > 8:
        raise QuantizationError(f"QuantLinear weights use 1..8-bit dtypes; got {d.name}",
                                hint="pick a low-bit type such as 'u4', 'int3', 'float4_e2m1' or 'int8'")
    return d


def _zero_point(d: DType, spec: Any) -> bool:
    if spec is None:
        return d.kind == "uint" or (d.nbits == 1 and not d.is_float)
    if not isinstance(spec, bool):
        raise QuantizationError(f"zero_point must be True, False or None (the type's default); got {spec!r}")
    if spec and d.is_float:
        raise QuantizationError(f"{d.name} is a float type: it has no zero point",
                                hint="use zero_point=None or False, or an int/uint type")
    if not spec and d.nbits == 1:
        raise QuantizationError(f"{d.name} without zero points has no positive level to quantize to",
                                hint="use zero_point=True (or None)")
    return spec


def _group(spec: Any) -> int | None:
    """``None`` for per-channel, else a positive int."""
    if spec is None or (isinstance(spec, int) and not isinstance(spec, bool) and spec == -1):
        return None
    if isinstance(spec, bool) or not isinstance(spec, int) or spec < 1:
        raise QuantizationError(f"group_size must be a positive int, or None / -1 for one group per row; "
                                f"got {spec!r}")
    return spec


def _backend(spec: Any) -> str | None:
    if spec not in _BACKENDS:
        raise KernelArgumentError(f"backend must be one of None, 'tvm', 'triton', 'interpret'; got {spec!r}")
    return spec


def _raw_bits(t: torch.Tensor) -> torch.Tensor:
    t = t.contiguous()
    return t if t.dtype in _INTEGER else t.view(_RAW[t.element_size()])


def _torch_dtype(d: DType) -> torch.dtype:
    return getattr(torch, d.name)


# ---------------------------------------------------------------------------------------------------------
# QuantLinear
# ---------------------------------------------------------------------------------------------------------
class QuantLinear(nn.Module):
    """``y = x @ W.T + bias`` with ``W [out_features, in_features]`` quantized group-wise along ``in_features``.

    ``dtype``: any 1-8 bit lowbit type (``"u4"``, ``"int3"``, ``"float4_e2m1"``, ``"int8"``, ...);
    ``group_size``: consecutive input features sharing a scale (``None``: one group per output row), must
    divide ``in_features``; ``zero_point``: see the module docstring; ``scale_dtype``: float16 (default),
    bfloat16, float32 or a float8 type; ``backend``: ``None`` (TVM on a CPU, Triton on CUDA), ``"tvm"``,
    ``"triton"`` or ``"interpret"``.

    A new module holds the quantization of an ``nn.Linear``-style random initialization (Kaiming-uniform);
    build one from trained weights with :meth:`from_linear`, or load a state dict.

    >>> layer = QuantLinear(64, 16, dtype="u4", group_size=32)
    >>> layer.qweight.shape, layer.zero_point, layer.bits_per_weight
    ((16, 64), True, 5.0)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, dtype: Any = "u4",
                 group_size: int | None = 128, zero_point: bool | None = None, scale_dtype: Any = "float16",
                 backend: str | None = None, device: Any = None) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise QuantizationError(f"{name} must be a positive int; got {value!r}")
        d = _weight_dtype(dtype)
        zp = _zero_point(d, zero_point)
        backend = _backend(backend)
        w = torch.empty(out_features, in_features)
        nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # nn.Linear's initialization
        b = None
        if bias:
            bound = 1 / math.sqrt(in_features)
            b = torch.empty(out_features).uniform_(-bound, bound)
        qt = quantize_tensor(w, d, _group(group_size), zp, scale_dtype)
        if device is not None:
            qt, b = qt.to(device), (None if b is None else b.to(device))
        self._install(qt, b, backend)

    def _install(self, qt: QuantizedTensor, bias: torch.Tensor | None, backend: str | None,
                 bias_requires_grad: bool = True) -> None:
        qt.check_format(DENSE_ROWMAJOR)
        if len(qt.shape) != 2:
            raise QuantizationError(f"a QuantLinear weight is 2-D [out_features, in_features]; got {list(qt.shape)}")
        self.out_features, self.in_features = qt.shape
        self.weight_dtype = qt.dtype
        self.group_size = qt.group_size
        self.zero_point = qt.zeros is not None
        self.scale_dtype = as_dtype(str(qt.scales.dtype).removeprefix("torch."))
        self.zero_dtype = None if qt.zeros is None else as_dtype(str(qt.zeros.dtype).removeprefix("torch."))
        self.format = qt.format
        self.backend = backend
        self.register_buffer("weight_packed", qt.packed.contiguous())
        self.register_buffer("weight_scales", _raw_bits(qt.scales))
        self.register_buffer("weight_zeros", None if qt.zeros is None else _raw_bits(qt.zeros))
        if bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = nn.Parameter(bias.detach(), requires_grad=bias_requires_grad)
        self.register_load_state_dict_pre_hook(_check_state_dict)

    # ---- construction from float layers -------------------------------------------------------------
    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: Any = "u4", group_size: int | None = 128,
                    zero_point: bool | None = None, backend: str | None = None, *,
                    scale_dtype: Any = "float16") -> "QuantLinear":
        """Quantize ``linear``'s weight (round-to-nearest, :func:`lowbit.quant.quantize`) on its device; the
        bias is copied (same dtype, same ``requires_grad``). ``group_size`` must divide ``in_features``
        (:class:`lowbit.QuantizationError` with suggestions otherwise).

        >>> lin = torch.nn.Linear(96, 8)
        >>> QuantLinear.from_linear(lin, "int8", group_size=None).qweight.group_size
        96
        """
        if not isinstance(linear, nn.Linear):
            raise QuantizationError(f"from_linear needs a torch.nn.Linear; got {type(linear).__name__}")
        d = _weight_dtype(dtype)
        zp = _zero_point(d, zero_point)
        backend = _backend(backend)
        qt = quantize_tensor(linear.weight.detach(), d, _group(group_size), zp, scale_dtype)
        bias = None
        if linear.bias is not None:
            bias = linear.bias.detach().clone()
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer._install(qt, bias, backend, linear.bias is not None and linear.bias.requires_grad)
        return layer

    # ---- views --------------------------------------------------------------------------------------
    def _scales(self) -> torch.Tensor:
        return self.weight_scales.view(_torch_dtype(self.scale_dtype))

    def _zeros(self) -> torch.Tensor | None:
        if self.weight_zeros is None:
            return None
        return self.weight_zeros.view(_torch_dtype(self.zero_dtype))

    @property
    def qweight(self) -> QuantizedTensor:
        """The weight as a :class:`~lowbit.quant.QuantizedTensor` (sharing the buffers' memory)."""
        return QuantizedTensor(self.weight_packed, self._scales(), self._zeros(), self.weight_dtype,
                               self.group_size, (self.out_features, self.in_features), self.format)

    def dequantize(self, dtype: Any = None) -> torch.Tensor:
        """The dequantized weight ``[out_features, in_features]`` (float32, or ``dtype``)."""
        return self.qweight.dequantize(dtype)

    @property
    def bits_per_weight(self) -> float:
        """Storage bits per weight: packed codes plus scales and zeros."""
        return self.qweight.nbytes * 8 / (self.out_features * self.in_features)

    # ---- compute ------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.lowbit.matmul(x, self.weight_packed, self._scales(), self._zeros(), self.bias,
                                       self.weight_dtype.name, self.group_size,
                                       [self.out_features, self.in_features], self.format.name,
                                       self.format.version, self.backend)

    # ---- state --------------------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {"format": self.format.name, "format_version": self.format.version,
                "dtype": self.weight_dtype.name, "group_size": self.group_size,
                "shape": [self.out_features, self.in_features], "scale_dtype": self.scale_dtype.name,
                "zero_dtype": None if self.zero_dtype is None else self.zero_dtype.name}

    def get_extra_state(self) -> dict[str, Any]:
        return self._config()

    def set_extra_state(self, state: Any) -> None:
        _check_config(self, state, "")

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"dtype={self.weight_dtype.name}, group_size={self.group_size}, zero_point={self.zero_point}, "
                f"bits/weight={self.bits_per_weight:.2f}")


def _check_config(module: QuantLinear, state: Any, prefix: str) -> None:
    want = module._config()
    where = f"'{prefix.rstrip('.')}'" if prefix else "the state dict"
    if not isinstance(state, Mapping) or set(state) != set(want):
        raise FormatError(f"{where}: the QuantLinear metadata (_extra_state) is not lowbit's: expected the keys "
                          f"{sorted(want)}; got {state!r}")
    got = dict(state)
    got["shape"] = list(got["shape"]) if isinstance(got["shape"], (list, tuple)) else got["shape"]
    if (got["format"], got["format_version"]) != (want["format"], want["format_version"]):
        raise FormatError(f"{where}: weights packed as {got['format']}/v{got['format_version']}, but this "
                          f"QuantLinear reads {want['format']}/v{want['format_version']}",
                          hint="re-quantize the float weights with this version of lowbit")
    diff = [k for k in ("dtype", "group_size", "shape", "scale_dtype", "zero_dtype") if got[k] != want[k]]
    if diff:
        detail = ", ".join(f"{k} {got[k]!r} (module: {want[k]!r})" for k in diff)
        raise FormatError(f"{where}: the saved quantized weight does not match this QuantLinear: {detail}",
                          hint="build the module with the same settings (QuantLinear(..., dtype=, group_size=, "
                               "zero_point=, scale_dtype=) or lowbit.nn.quantize with the same arguments) "
                               "before loading")


def _check_state_dict(module: QuantLinear, state_dict: Mapping[str, Any], prefix: str, local_metadata: Any,
                      strict: bool, missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
    """Runs before torch copies anything: metadata and buffer dtypes must match the module exactly."""
    if prefix + "weight" in state_dict and prefix + "weight_packed" not in state_dict:
        raise FormatError(f"'{prefix.rstrip('.')}' is a QuantLinear, but the state dict holds a float weight "
                          f"({prefix}weight)",
                          hint="load float weights into the float model and quantize afterwards "
                               "(lowbit.nn.quantize / QuantLinear.from_linear)")
    extra = prefix + "_extra_state"
    if extra in state_dict:
        _check_config(module, state_dict[extra], prefix)
    for name in ("weight_packed", "weight_scales", "weight_zeros"):
        mine, key = getattr(module, name), prefix + name
        theirs = state_dict.get(key)
        if mine is not None and isinstance(theirs, torch.Tensor) and theirs.dtype != mine.dtype:
            raise FormatError(f"{key} must be {mine.dtype} (raw bits of the module's {name.split('_')[1]}); "
                              f"got {theirs.dtype}",
                              hint="save and load QuantLinear state dicts as they are (state_dict())")


# ---------------------------------------------------------------------------------------------------------
# quantize(model)
# ---------------------------------------------------------------------------------------------------------
def _matches(name: str, pattern: str) -> bool:
    """``pattern`` (an fnmatch glob) matches the qualified ``name`` or one of its dotted suffixes."""
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[i:]), pattern) for i in range(len(parts)))


def _override(value: Any, pattern: str, group_size: Any, zero_point: Any) -> tuple[Any, Any, Any]:
    if isinstance(value, tuple):
        if len(value) == 2:
            return value[0], value[1], zero_point
        if len(value) == 3:
            return value
        raise QuantizationError(f"overrides[{pattern!r}] must be a dtype, (dtype, group_size) or "
                                f"(dtype, group_size, zero_point); got {value!r}")
    return value, group_size, zero_point


def _spec(dtype: Any, group_size: Any, zero_point: Any) -> tuple[DType, int | None, bool]:
    d = _weight_dtype(dtype)
    return d, _group(group_size), _zero_point(d, zero_point)


def quantize(model: nn.Module, weight_dtype: Any = "u4", group_size: int | None = 128,
             zero_point: bool | None = None, skip: Iterable[str] = ("lm_head",),
             overrides: Mapping[str, Any] | None = None, backend: str | None = None, progress: bool = True, *,
             scale_dtype: Any = "float16", indivisible: str = "per-channel") -> nn.Module:
    """Replace the model's ``nn.Linear`` modules by :class:`QuantLinear` in place; returns the model.

    * Which layers: every module whose type is exactly ``torch.nn.Linear`` (subclasses may have their own
      forward and are left alone), except those whose qualified name matches a glob of ``skip``. A glob
      matches a name or any dotted suffix of it: ``"lm_head"`` matches ``lm_head`` and ``model.lm_head``,
      ``"*.mlp.*"`` every linear under an ``mlp``.
    * How: ``weight_dtype``, ``group_size`` (``None``: one group per row), ``zero_point`` (``None``: the
      type's default, see the module docs) and ``scale_dtype`` for all, except where the first matching glob
      of ``overrides`` gives ``dtype``, ``(dtype, group_size)`` or ``(dtype, group_size, zero_point)``.
      An override glob that matches no linear gives a :class:`QuantizationWarning`.
    * **Indivisible layers**: when a layer's ``in_features`` is not a multiple of its group size,
      ``indivisible`` decides: ``"per-channel"`` (default) quantizes it with one group per output row,
      ``"skip"`` keeps it as a float ``nn.Linear``; both warn (:class:`QuantizationWarning`, naming the
      layers). ``"error"`` raises :class:`lowbit.QuantizationError`.
    * Every argument is checked, and every layer quantized, before the first module is replaced: on an error
      (a bad dtype name, a bad override, weights with NaN) the model is unchanged.
    * A linear reachable under several names becomes one shared QuantLinear (decided by its first name).
      If ``model`` itself is an ``nn.Linear``, the new QuantLinear is returned.
    * ``progress``: a tqdm progress bar over the layers (on stderr).

    >>> mlp = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.GELU(), torch.nn.Linear(48, 10))
    >>> mlp = quantize(mlp, "u4", group_size=32, skip=["1", "2"], progress=False)
    >>> [type(m).__name__ for m in mlp]
    ['QuantLinear', 'GELU', 'Linear']
    """
    if not isinstance(model, nn.Module):
        raise QuantizationError(f"quantize needs a torch.nn.Module; got {type(model).__name__}")
    if indivisible not in INDIVISIBLE_POLICIES:
        raise QuantizationError(f"indivisible must be one of {', '.join(map(repr, INDIVISIBLE_POLICIES))}; "
                                f"got {indivisible!r}")
    if isinstance(skip, str):
        skip = [skip]
    skip = list(skip)
    overrides = dict(overrides or {})
    for pattern in [*skip, *overrides]:
        if not isinstance(pattern, str):
            raise QuantizationError(f"skip and override patterns are glob strings; got {pattern!r}")
    backend = _backend(backend)
    default = _spec(weight_dtype, group_size, zero_point)
    specs = {p: _spec(*_override(v, p, group_size, zero_point)) for p, v in overrides.items()}

    plan: list[tuple[str, nn.Linear, DType, int | None, bool]] = []
    used: set[str] = set()
    fallback: list[str] = []
    left: list[str] = []
    for name, module in model.named_modules():
        if type(module) is not nn.Linear or any(_matches(name, p) for p in skip):
            continue
        d, g, zp = default
        for pattern, spec in specs.items():
            if _matches(name, pattern):
                d, g, zp = spec
                used.add(pattern)
                break
        k = module.in_features
        if g is not None and k % g:
            if indivisible == "error":
                raise QuantizationError(f"layer {name!r}: in_features {k} is not a multiple of group_size {g}",
                                        hint="pass indivisible='per-channel' or 'skip', another group size, or "
                                             "an override for this layer")
            if indivisible == "skip":
                left.append(f"{name} (K={k})")
                continue
            fallback.append(f"{name} (K={k})")
            g = None
        plan.append((name, module, d, g, zp))
    for pattern in overrides:
        if pattern not in used:
            warnings.warn(f"lowbit.nn.quantize: override {pattern!r} matched no nn.Linear", QuantizationWarning,
                          stacklevel=2)

    from tqdm.auto import tqdm

    replaced: dict[int, QuantLinear] = {}
    with tqdm(plan, desc="lowbit: quantizing", unit="layer", disable=not progress) as bar:
        for name, module, d, g, zp in bar:
            bar.set_postfix_str(f"{name or '<model>'} {d.name}", refresh=False)
            replaced[id(module)] = QuantLinear.from_linear(module, d, g, zp, backend, scale_dtype=scale_dtype)

    if fallback:
        warnings.warn(f"lowbit.nn.quantize: in_features not a multiple of the group size, quantized with one group "
                      f"per row instead: {', '.join(fallback)}", QuantizationWarning, stacklevel=2)
    if left:
        warnings.warn(f"lowbit.nn.quantize: in_features not a multiple of the group size, left in float: "
                      f"{', '.join(left)}", QuantizationWarning, stacklevel=2)
    if id(model) in replaced:
        return replaced[id(model)]
    swaps = [(name.rpartition("."), replaced[id(module)])
             for name, module in model.named_modules(remove_duplicate=False) if id(module) in replaced]
    for (parent, _, attr), new in swaps:
        setattr(model.get_submodule(parent), attr, new)
    return model
