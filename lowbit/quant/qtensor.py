"""QuantizedTensor: packed codes + group scales (+ zero points) + the format id of the packing.

A ``QuantizedTensor`` of logical shape ``[..., K]`` with group size ``g`` holds

* ``packed``: uint8 ``[..., ceil(K * nbits / 8)]``, each row's K codes as a dense little-endian bitstream
  (:func:`lowbit.pack`), format :data:`~lowbit.quant.formats.DENSE_ROWMAJOR`;
* ``scales``: ``[..., K // g]`` in the scale dtype; ``zeros``: the same shape in the zero dtype, or ``None``;
* ``w[..., k] ~ (value(code) - zero[..., k // g]) * scale[..., k // g]`` (without zeros: ``value * scale``).

Everything lives on one backend: numpy arrays, or torch tensors on one device. Kernels that want another
storage order derive it once with :meth:`QuantizedTensor.get_packed` (cached per format id).

>>> import numpy as np
>>> from lowbit.quant import quantize
>>> qt = quantize(np.array([[3.0, -6.0, 1.5, 5.0]]), "float4_e2m1", group_size=2)
>>> qt.scales                 # absmax / 6, rounded up to float16
array([[1.    , 0.8335]], dtype=float16)
>>> qt.dequantize()           # 1.5 / 0.8335 = 1.8 rounds to 2 (of 0, 0.5, 1, 1.5, 2, 3, 4, 6)
array([[ 3.       , -6.       ,  1.6669922,  5.0009766]], dtype=float32)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence, TypeVar

import numpy as np

from ..dtypes import DType, dtype as as_dtype
from ..errors import DTypeError, FormatError
from ..packing import packed_length, unpack
from ..plans import cached_plan, known_plan
from . import storage
from .formats import DENSE_ROWMAJOR, FormatId

__all__ = ["QuantizedTensor", "stack_rows"]

T = TypeVar("T")

_PLANS = ("launch plans",)        # the launch plans' key in the packed cache (format names are strings)


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """Group-quantized weights; see the module docstring. Build one with :func:`lowbit.quant.quantize`."""

    packed: Any
    scales: Any
    zeros: Any | None
    dtype: DType
    group_size: int
    shape: tuple[int, ...]
    format: FormatId = DENSE_ROWMAJOR
    _repacked: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", as_dtype(self.dtype))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        self._validate()

    # ---- consistency ------------------------------------------------------------------------------
    def _validate(self) -> None:
        d, shape, g = self.dtype, self.shape, self.group_size
        if not isinstance(self.format, FormatId):
            raise FormatError(f"format must be a FormatId; got {self.format!r}")
        if d.nbits > 8:
            raise FormatError(f"quantized weights use 1..8-bit dtypes; got {d.name}")
        if len(shape) < 1 or shape[-1] < 1:
            raise FormatError(f"the logical shape must be [..., K] with K >= 1; got {list(shape)}")
        k = shape[-1]
        if isinstance(g, bool) or not isinstance(g, int) or g < 1 or k % g:
            raise FormatError(f"group_size {g!r} must be a positive divisor of K = {k}")
        backend = storage.is_torch(self.packed)
        for name in ("scales", "zeros"):
            arr = getattr(self, name)
            if arr is not None and storage.is_torch(arr) != backend:
                raise FormatError(f"packed and {name} must both be numpy arrays or both torch tensors")
            if arr is not None and backend and arr.device != self.packed.device:
                raise FormatError(f"packed is on {self.packed.device} but {name} is on {arr.device}",
                                  hint="move the whole QuantizedTensor with .to(device)")
        expect = {"packed": (*shape[:-1], packed_length(k, d.nbits)), "scales": (*shape[:-1], k // g)}
        if self.zeros is not None:
            expect["zeros"] = expect["scales"]
        for name, want in expect.items():
            got = tuple(getattr(self, name).shape)
            if got != want:
                raise FormatError(f"{name} of a {d.name} tensor of shape {list(shape)} with group_size {g} must "
                                  f"have shape {list(want)}; got {list(got)}")
        if str(self.packed.dtype).removeprefix("torch.") != "uint8":
            raise FormatError(f"packed codes must be uint8; got {self.packed.dtype}")
        if d.is_float and self.zeros is not None:
            raise FormatError(f"{d.name} is a float type: it has no zero points")

    # ---- views ------------------------------------------------------------------------------------
    @property
    def is_torch(self) -> bool:
        return storage.is_torch(self.packed)

    @property
    def device(self) -> Any:
        """The torch device, or ``"numpy"`` for numpy storage."""
        return self.packed.device if self.is_torch else "numpy"

    @property
    def num_groups(self) -> int:
        return self.shape[-1] // self.group_size

    @property
    def nbytes(self) -> int:
        """Bytes of packed codes, scales and zeros together."""
        arrays = [a for a in (self.packed, self.scales, self.zeros) if a is not None]
        if self.is_torch:
            return sum(a.numel() * a.element_size() for a in arrays)
        return sum(a.nbytes for a in arrays)

    def codes(self) -> Any:
        """Unpacked codes, uint8 ``[..., K]``."""
        return unpack(self.packed, self.dtype.nbits, self.shape[-1], axis=-1)

    @property
    def implicit_zero(self) -> int:
        """The zero point that is not stored: ``2**(n-1)`` for uint without zeros (GPTQ's symmetric mode), else 0."""
        return 2 ** (self.dtype.nbits - 1) if self.zeros is None and self.dtype.kind == "uint" else 0

    def dequantize(self, dtype: Any = None) -> Any:
        """``(value(code) - zero) * scale`` as float32 (or ``dtype``: float16, bfloat16, float32, float64).

        Computed in float32 (float64 when asked): with 16-bit scales every product is exact in float32.
        """
        target = _float_name(dtype)
        values = self.dtype.decode(self.codes())
        lead, k, g = self.shape[:-1], self.shape[-1], self.group_size
        if self.is_torch:
            import torch

            work = torch.float64 if target == "float64" else torch.float32
            v = values.to(work).reshape(*lead, k // g, g)
            s = self.scales.to(work).unsqueeze(-1)
            if self.zeros is not None:
                v = v - self.zeros.to(work).unsqueeze(-1)
            elif self.implicit_zero:
                v = v - self.implicit_zero
            out = (v * s).reshape(self.shape)
            return out.to(getattr(torch, target))
        work = np.float64 if target == "float64" else np.float32
        v = values.astype(work).reshape(*lead, k // g, g)
        s = np.asarray(self.scales).astype(work)[..., None]
        if self.zeros is not None:
            v = v - np.asarray(self.zeros).astype(work)[..., None]
        elif self.implicit_zero:
            v = v - work(self.implicit_zero)
        out = (v * s).reshape(self.shape)
        return out.astype(storage.numpy_type(as_dtype(target)) if target != "float64" else np.float64)

    # ---- moving between backends ------------------------------------------------------------------
    def to(self, device: Any) -> "QuantizedTensor":
        """A copy with torch tensors on ``device`` (numpy storage becomes torch). Repacked caches are dropped."""
        move = lambda a: None if a is None else storage.to_torch(a, device)  # noqa: E731
        return QuantizedTensor(move(self.packed), move(self.scales), move(self.zeros), self.dtype,
                               self.group_size, self.shape, self.format)

    def numpy(self) -> "QuantizedTensor":
        """A copy with numpy storage (bfloat16 / float8 scales as ml_dtypes arrays)."""
        conv = lambda a: None if a is None else storage.to_numpy(a)  # noqa: E731
        return QuantizedTensor(conv(self.packed), conv(self.scales), conv(self.zeros), self.dtype,
                               self.group_size, self.shape, self.format)

    # ---- other storage orders ---------------------------------------------------------------------
    def check_format(self, expected: FormatId) -> None:
        """Raise :class:`~lowbit.FormatError` unless this tensor's packing is ``expected`` (name and version)."""
        if self.format != expected:
            raise FormatError(f"weights are packed as {self.format}, but {expected} was expected",
                              hint="re-quantize the weights, or derive the layout with get_packed()")

    def get_packed(self, format_id: FormatId, build: Callable[["QuantizedTensor"], T]) -> T:
        """The weights in another storage order, built once by ``build(self)`` and cached under ``format_id``.

        A later request for the same format name with another version raises :class:`~lowbit.FormatError`
        (two packers disagree about one layout), as does a result whose own ``.format`` differs.

        >>> import numpy as np
        >>> from lowbit.quant import quantize, FormatId
        >>> qt = quantize(np.ones((2, 4)), "uint4", group_size=None, zero_point=True)
        >>> qt.get_packed(FormatId("transposed", 1), lambda q: q.codes().T).shape
        (4, 2)
        """
        if not isinstance(format_id, FormatId):
            raise FormatError(f"get_packed needs a FormatId; got {format_id!r}")
        cached = self._repacked.get(format_id.name)
        if cached is not None:
            have, value = cached
            if have != format_id:
                raise FormatError(f"these weights were already packed as {have}; {format_id} was requested",
                                  hint="two versions of one layout are in use: update the older kernel, or "
                                       "re-quantize for each")
            return value
        value = build(self)
        produced = getattr(value, "format", None)
        if isinstance(produced, FormatId) and produced != format_id:
            raise FormatError(f"the packer for {format_id} produced data in format {produced}")
        self._repacked[format_id.name] = (format_id, value)
        return value

    def launch_plan(self, key: Hashable, build: Callable[[], T]) -> T:
        """What a kernel prepared once to run these weights for ``key`` (its configuration, its bound
        launch), built by ``build()`` on first use and kept with the weights (:func:`lowbit.plans.cached_plan`).

        >>> import numpy as np
        >>> from lowbit.quant import quantize
        >>> qt = quantize(np.ones((2, 4)), "int4", group_size=None)
        >>> qt.launch_plan(("m", 1), lambda: "prepared") == qt.launch_plan(("m", 1), lambda: "rebuilt")
        True
        """
        # in the packed cache: views that share it (identical codes) share plans
        return cached_plan(self._repacked.setdefault(_PLANS, {}), key, build)

    def known_launch_plan(self, key: Hashable) -> Any:
        """The plan :meth:`launch_plan` built for ``key``, or None when there is none (it is not built here).

        >>> import numpy as np
        >>> from lowbit.quant import quantize
        >>> qt = quantize(np.ones((2, 4)), "int4", group_size=None)
        >>> qt.known_launch_plan(("m", 1)) is None, qt.launch_plan(("m", 1), lambda: "built")
        (True, 'built')
        >>> qt.known_launch_plan(("m", 1))
        'built'
        """
        plans = self._repacked.get(_PLANS)
        return None if plans is None else known_plan(plans, key)

    @property
    def packed_cache(self) -> dict:
        """What kernels derived from these weights: the storages built by :meth:`get_packed` (format name ->
        (FormatId, value)) and the launch plans of :meth:`launch_plan`."""
        return self._repacked

    def share_packed_cache(self, cache: dict) -> "QuantizedTensor":
        """Use ``cache`` (another view's :attr:`packed_cache`) for :meth:`get_packed`, so two views of the same
        codes repack once. Returns ``self``. Only for views of identical codes, scales and zeros."""
        object.__setattr__(self, "_repacked", cache)
        return self

    # ---- comparison and display -------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantizedTensor):
            return NotImplemented
        meta = (self.dtype, self.group_size, self.shape, self.format, self.is_torch, self.zeros is None)
        if meta != (other.dtype, other.group_size, other.shape, other.format, other.is_torch, other.zeros is None):
            return False
        pairs = [(self.packed, other.packed), (self.scales, other.scales)]
        if self.zeros is not None:
            pairs.append((self.zeros, other.zeros))
        if self.is_torch:
            import torch

            return all(a.dtype == b.dtype and a.device == b.device and torch.equal(a, b) for a, b in pairs)
        return all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in pairs)

    __hash__ = None  # type: ignore[assignment]  # holds mutable arrays

    def __repr__(self) -> str:
        where = f"torch:{self.packed.device}" if self.is_torch else "numpy"
        scale = str(self.scales.dtype).removeprefix("torch.")
        zeros = "none" if self.zeros is None else str(self.zeros.dtype).removeprefix("torch.")
        return (f"QuantizedTensor(shape={list(self.shape)}, dtype={self.dtype.name}, group_size={self.group_size}, "
                f"scales={scale}, zeros={zeros}, format={self.format}, storage={where}, "
                f"nbytes={self.nbytes})")


def _float_name(spec: Any) -> str:
    if spec is None:
        return "float32"
    name = spec if isinstance(spec, str) else str(getattr(spec, "name", spec))
    name = name.removeprefix("torch.")
    if isinstance(spec, type) and issubclass(spec, np.generic):
        name = np.dtype(spec).name
    aliases = {"f16": "float16", "bf16": "bfloat16", "f32": "float32", "f64": "float64", "half": "float16",
               "float": "float32", "double": "float64"}
    name = aliases.get(name, name)
    if name not in ("float16", "bfloat16", "float32", "float64"):
        raise DTypeError(f"dequantize can produce float16, bfloat16, float32 or float64; got {spec!r}")
    return name


def stack_rows(parts: Sequence[QuantizedTensor]) -> QuantizedTensor | None:
    """The 2-D weights ``parts`` (``[N_i, K]`` each) as one ``[sum N_i, K]`` weight, or None unless they share
    all but their rows: code type, group size, K, storage format, zero points or none, where they live (numpy,
    torch device) and the dtypes of scales and zeros. Quantization works row by row, so the result is exactly
    the quantized concatenation: projections that read one input (a layer's q, k, v) become one matmul.

    >>> import numpy as np
    >>> from lowbit.quant import quantize
    >>> w = np.random.default_rng(0).standard_normal((6, 8))
    >>> both = stack_rows([quantize(w[:2], "int4", 4), quantize(w[2:], "int4", 4)])
    >>> both.shape, np.array_equal(both.packed, quantize(w, "int4", 4).packed)
    ((6, 8), True)
    """
    if not parts or not all(isinstance(p, QuantizedTensor) and len(p.shape) == 2 for p in parts):
        return None
    first = parts[0]

    def key(p: QuantizedTensor) -> tuple:
        return (p.dtype, p.group_size, p.shape[1], p.format, p.is_torch, str(p.device), p.packed.dtype,
                p.scales.dtype, None if p.zeros is None else p.zeros.dtype)

    if any(key(p) != key(first) for p in parts[1:]):
        return None
    if first.is_torch:
        import torch

        cat = torch.cat
    else:
        cat = np.concatenate
    zeros = None if first.zeros is None else cat([p.zeros for p in parts])
    return QuantizedTensor(cat([p.packed for p in parts]), cat([p.scales for p in parts]), zeros, first.dtype,
                           first.group_size, (sum(p.shape[0] for p in parts), first.shape[1]), first.format)
