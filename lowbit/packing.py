"""Dense little-endian bitstream packing of n-bit codes (1 <= n <= 8), for numpy arrays and torch tensors.

Along the packed axis, element ``i`` occupies bits ``[i*n, (i+1)*n)`` of the stream and bit ``k`` of the
stream is bit ``k % 8`` of byte ``k // 8``. ``L`` codes take ``ceil(L*n/8)`` bytes; unused high bits of the
last byte are zero. Every other axis is left alone, so each row of a matrix packs separately.

>>> pack([1, 7, 2, 4, 3, 0, 6, 1], 3)            # int3 [1,-1,2,-4,3,0,-2,1] as codes
array([185,  56,  56], dtype=uint8)
>>> unpack(pack([1, 7, 2, 4, 3], 3), 3, 5)
array([1, 7, 2, 4, 3], dtype=uint8)

How: ``c = 8 / gcd(n, 8)`` consecutive codes fill exactly ``b = n / gcd(n, 8)`` bytes (8 codes -> 3 bytes for
n = 3). Each output byte is the OR of the (shifted) codes that overlap it, computed column-wise over all
chunks at once in uint8 (at most 15 whole-array shift/OR steps), and the reverse for unpacking.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from .errors import PackingError

__all__ = ["pack", "pack_trusted", "unpack", "packed_length"]


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


#: CPU tensors are packed through numpy (zero-copy views): torch's uint8 shift kernels are ~10x slower on
#: CPU. The torch implementation serves other devices (tests switch this off to exercise it on CPU).
_CPU_VIA_NUMPY = True
_NUMPY_SAFE = ("uint8", "int8", "int16", "int32", "int64", "uint16", "uint32")


def _via_numpy(t: Any) -> bool:
    return _CPU_VIA_NUMPY and t.device.type == "cpu" and str(t.dtype).removeprefix("torch.") in _NUMPY_SAFE


def _torch_uint8() -> Any:
    import torch

    return torch.uint8


def packed_length(count: int, nbits: int) -> int:
    """Bytes needed for ``count`` codes of ``nbits`` bits: ``ceil(count * nbits / 8)``.

    >>> packed_length(5, 3)
    2
    """
    _check_nbits(nbits)
    return (count * nbits + 7) // 8


def _check_nbits(nbits: Any) -> None:
    if isinstance(nbits, bool) or not isinstance(nbits, (int, np.integer)) or not 1 <= nbits <= 8:
        raise PackingError(f"nbits must be an integer from 1 to 8; got {nbits!r}",
                           hint="wider codes (16/32 bits) are stored as plain uint16/uint32 arrays")


def _chunk(nbits: int) -> tuple[int, int]:
    g = math.gcd(nbits, 8)
    return 8 // g, nbits // g  # codes per chunk, bytes per chunk


@functools.lru_cache(maxsize=None)
def _overlaps(nbits: int) -> tuple[tuple[int, int, int], ...]:
    """(code j, byte b, shift k): code j's bits [j*n, j*n+n) meet byte b's bits [8b, 8b+8); k = j*n - 8b."""
    per, nbytes = _chunk(nbits)
    return tuple((j, b, j * nbits - 8 * b) for b in range(nbytes) for j in range(per)
                 if j * nbits < 8 * b + 8 and 8 * b < j * nbits + nbits)


def _shift(v: Any, k: int) -> Any:
    return v << k if k >= 0 else v >> -k  # on uint8: bits pushed past bit 7 or below bit 0 drop out


def _pack_chunks(x: Any, nbits: int, out: Any) -> Any:
    """x: uint8 [M, per] codes -> out: uint8 [M, nbytes]; a handful of whole-array ops, no per-element loop."""
    for b in range(out.shape[1]):
        parts = [_shift(x[:, j], k) for j, bb, k in _overlaps(nbits) if bb == b]
        acc = parts[0]
        for p in parts[1:]:
            acc = acc | p
        out[:, b] = acc
    return out


def _unpack_chunks(x: Any, nbits: int, out: Any) -> Any:
    """x: uint8 [M, nbytes] -> out: uint8 [M, per] codes."""
    mask = (1 << nbits) - 1
    for j in range(out.shape[1]):
        parts = [_shift(x[:, b], -k) for jj, b, k in _overlaps(nbits) if jj == j]
        acc = parts[0]
        for p in parts[1:]:
            acc = acc | p
        out[:, j] = acc & mask
    return out


def _normalize_axis(axis: Any, ndim: int, what: str) -> int:
    if ndim == 0:
        raise PackingError(f"cannot {what} a 0-d value; expected an array with at least one axis")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise PackingError(f"axis {axis!r} is out of range for an array with {ndim} dimension(s)")
    return int(axis) % ndim


def pack(codes: Any, nbits: int, axis: int = -1) -> Any:
    """Pack integer codes in ``[0, 2**nbits)`` into a uint8 bitstream along ``axis``.

    numpy arrays, Python lists and scalars give numpy; torch tensors give a torch tensor on the same device.

    >>> pack([[1, 0, 3], [2, 2, 2]], 2)
    array([[49],
           [42]], dtype=uint8)
    """
    _check_nbits(nbits)
    if _is_torch(codes):
        if _via_numpy(codes):
            import torch

            return torch.from_numpy(pack(codes.detach().numpy(), nbits, axis))
        return _pack_torch(codes, int(nbits), axis)
    arr = np.asarray(codes)
    if arr.size == 0 and arr.dtype == np.float64 and not isinstance(codes, np.ndarray):
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "iu":
        raise PackingError(f"codes must be integers; got an array of {arr.dtype}",
                           hint="turn values into codes first with lowbit.dtype(...).encode(values)")
    ax = _normalize_axis(axis, arr.ndim, "pack")
    if arr.size and ((arr.dtype.kind == "i" and arr.min() < 0) or arr.max() >= (1 << nbits)):
        bad = (arr < 0) | (arr >= (1 << nbits))
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise PackingError(f"codes must lie in [0, {(1 << nbits) - 1}] for nbits={nbits}; got {arr[where]} "
                               f"at index {where}", hint="codes are unsigned bit patterns (two's complement "
                               "for signed integers): use the dtype's encode()")
    x = np.moveaxis(arr, ax, -1)
    lead, length = x.shape[:-1], x.shape[-1]
    if length % _WORD_CODES == 0:
        return np.ascontiguousarray(np.moveaxis(pack_trusted(x, int(nbits)), -1, ax))
    rows = math.prod(lead)
    per, nbytes = _chunk(int(nbits))
    chunks = -(-length // per)
    x = x.reshape(rows, length).astype(np.uint8, copy=False)
    if chunks * per != length:
        x = np.concatenate([x, np.zeros((rows, chunks * per - length), np.uint8)], axis=1)
    out = np.empty((rows * chunks, nbytes), np.uint8)
    if nbits == 8:
        out[:] = x.reshape(rows * chunks, 1)
    else:
        _pack_chunks(x.reshape(rows * chunks, per), int(nbits), out)
    out = out.reshape(rows, chunks * nbytes)[:, : packed_length(length, nbits)]
    out = out.reshape(*lead, out.shape[-1])
    return np.ascontiguousarray(np.moveaxis(out, -1, ax))


#: codes :func:`pack_trusted` joins into one little-endian uint64 (``8 * nbits`` bits: whole bytes)
_WORD_CODES = 8


def pack_trusted(codes: np.ndarray, nbits: int) -> np.ndarray:
    """:func:`pack` along the last axis for integer codes known to lie in ``[0, 2**nbits)``, the axis a multiple
    of 8 long, without pack's checks: 8 codes at a time in one little-endian uint64 (code ``j`` at bit
    ``j * nbits``), whose low ``nbits`` bytes are theirs. For callers that pack a few rows many times (a KV
    cache's tokens).

    >>> pack_trusted(np.array([[1, 0, 3, 2, 2, 2, 0, 1]]), 2)     # the same bytes as pack(...)
    array([[177,  74]], dtype=uint8)
    """
    lead, length = codes.shape[:-1], codes.shape[-1]
    if nbits == 8:
        return np.ascontiguousarray(codes, dtype=np.uint8)
    shifts = np.arange(_WORD_CODES, dtype=np.uint64) * np.uint64(nbits)
    words = (codes.reshape(-1, _WORD_CODES).astype(np.uint64) << shifts).sum(axis=-1, dtype=np.uint64)
    out = words.astype("<u8", copy=False).view(np.uint8).reshape(-1, 8)[:, :nbits]
    return np.ascontiguousarray(out).reshape(*lead, length * nbits // 8)


def unpack(packed: Any, nbits: int, count: int, axis: int = -1) -> Any:
    """Inverse of :func:`pack`: ``count`` uint8 codes per line along ``axis``.

    ``packed`` must be uint8 with exactly ``ceil(count * nbits / 8)`` bytes along ``axis``.

    >>> unpack([49], 2, 3)
    array([1, 0, 3], dtype=uint8)
    """
    _check_nbits(nbits)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise PackingError(f"count must be a non-negative integer; got {count!r}")
    count = int(count)
    if _is_torch(packed):
        if _via_numpy(packed) and packed.dtype == _torch_uint8():
            import torch

            return torch.from_numpy(unpack(packed.detach().numpy(), nbits, count, axis))
        return _unpack_torch(packed, int(nbits), count, axis)
    arr = np.asarray(packed)
    if arr.size == 0 and arr.dtype == np.float64 and not isinstance(packed, np.ndarray):
        arr = arr.astype(np.uint8)
    if arr.dtype.kind in "iu" and not isinstance(packed, np.ndarray):
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise PackingError("packed bytes must lie in [0, 255]")
        arr = arr.astype(np.uint8)  # a Python list of byte values
    if arr.dtype != np.uint8:
        raise PackingError(f"packed data must be uint8; got an array of {arr.dtype}")
    ax = _normalize_axis(axis, arr.ndim, "unpack")
    _check_length(arr.shape[ax], count, nbits)
    x = np.moveaxis(arr, ax, -1)
    lead = x.shape[:-1]
    rows = math.prod(lead)
    per, nbytes = _chunk(int(nbits))
    chunks = -(-count // per)
    x = x.reshape(rows, x.shape[-1])
    if chunks * nbytes != x.shape[1]:
        x = np.concatenate([x, np.zeros((rows, chunks * nbytes - x.shape[1]), np.uint8)], axis=1)
    out = np.empty((rows * chunks, per), np.uint8)
    if nbits == 8:
        out[:] = x.reshape(rows * chunks, 1)
    else:
        _unpack_chunks(x.reshape(rows * chunks, nbytes), int(nbits), out)
    out = out.reshape(rows, chunks * per)[:, :count].reshape(*lead, count)
    return np.ascontiguousarray(np.moveaxis(out, -1, ax))


def _check_length(have: int, count: int, nbits: int) -> None:
    need = packed_length(count, nbits)
    if have != need:
        raise PackingError(f"{count} codes of {nbits} bits take {need} bytes; the packed axis has {have}",
                           hint="pass the number of codes that was packed (count), and the same nbits")


def _pack_torch(codes: Any, nbits: int, axis: Any) -> Any:
    import torch

    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise PackingError(f"codes must be integers; got a tensor of {codes.dtype}",
                           hint="turn values into codes first with lowbit.dtype(...).encode(values)")
    ax = _normalize_axis(axis, codes.dim(), "pack")
    if codes.numel():
        c = codes if codes.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64) else \
            codes.to(torch.int64)  # min/max are not implemented for uint16/32/64
        lo, hi = torch.aminmax(c)
        if int(lo) < 0 or int(hi) >= (1 << nbits):
            bad = (c < 0) | (c >= (1 << nbits))
            where = tuple(int(i) for i in bad.nonzero()[0])
            raise PackingError(f"codes must lie in [0, {(1 << nbits) - 1}] for nbits={nbits}; got {int(c[where])} "
                               f"at index {where}", hint="codes are unsigned bit patterns (two's complement for "
                               "signed integers): use the dtype's encode()")
    x = codes.movedim(ax, -1)
    lead, length = tuple(x.shape[:-1]), x.shape[-1]
    rows = math.prod(lead)
    per, nbytes = _chunk(nbits)
    chunks = -(-length // per)
    x = x.reshape(rows, length).to(torch.uint8)
    if chunks * per != length:
        x = torch.nn.functional.pad(x, (0, chunks * per - length))
    out = torch.empty((rows * chunks, nbytes), dtype=torch.uint8, device=x.device)
    if nbits == 8:
        out.copy_(x.reshape(rows * chunks, 1))
    else:
        _pack_chunks(x.reshape(rows * chunks, per), nbits, out)
    out = out.reshape(rows, chunks * nbytes)[:, : packed_length(length, nbits)]
    return out.reshape(*lead, out.shape[-1]).movedim(-1, ax).contiguous()


def _unpack_torch(packed: Any, nbits: int, count: int, axis: Any) -> Any:
    import torch

    if packed.dtype != torch.uint8:
        raise PackingError(f"packed data must be uint8; got a tensor of {packed.dtype}")
    ax = _normalize_axis(axis, packed.dim(), "unpack")
    _check_length(packed.shape[ax], count, nbits)
    x = packed.movedim(ax, -1)
    lead = tuple(x.shape[:-1])
    rows = math.prod(lead)
    per, nbytes = _chunk(nbits)
    chunks = -(-count // per)
    x = x.reshape(rows, x.shape[-1])
    if chunks * nbytes != x.shape[1]:
        x = torch.nn.functional.pad(x, (0, chunks * nbytes - x.shape[1]))
    out = torch.empty((rows * chunks, per), dtype=torch.uint8, device=x.device)
    if nbits == 8:
        out.copy_(x.reshape(rows * chunks, 1))
    else:
        _unpack_chunks(x.reshape(rows * chunks, nbytes), nbits, out)
    out = out.reshape(rows, chunks * per)[:, :count].reshape(*lead, count)
    return out.movedim(-1, ax).contiguous()
