"""unpack_period: the period along an axis of an operand unpacked from storage words, which bounds the K
unroll of a CPU dot (see lowering/tvm/unpack_period.py)."""
from __future__ import annotations

import pytest

from lowbit.ir import KernelBuilder
from lowbit.lowering.tvm.unpack_period import unpack_period


def _stream(bits: int, k: int = 64, n: int = 16, wrap: bool = True, zero: str | None = None):
    """``value[k, j] = float(code k of a bitstream of ``bits``-bit codes)``, the same stream for every column:
    code k is bits ``(k * bits) % 32 ..`` of word ``k * bits // 32`` (``bits`` divides 32). Without ``wrap``
    the shift amount is ``k * bits`` itself (past the word for later codes: not periodic). ``zero``: subtract a
    loaded zero point per column (``"column"``, the same down K) or per element (``"element"``)."""
    per_word = 32 // bits
    kb = KernelBuilder("stream")
    w = kb.tensor_param("w", "u32", [k // per_word])
    words = kb.load(w, [0], [k // per_word])
    rows = kb.reshape(kb.broadcast_to(kb.expand_dims(words, 1), [k // per_word, per_word]), [k])
    tile = kb.broadcast_to(kb.expand_dims(rows, 1), [k, n])
    offset = kb.mul(kb.arange(0, k), kb.full([k], bits, "i32"))
    if wrap:
        offset = kb.binary("and", offset, kb.full([k], 31, "i32"))
    shift = kb.broadcast_to(kb.expand_dims(kb.cast(offset, "u32"), 1), [k, n])
    code = kb.binary("and", kb.binary("shr", tile, shift), kb.full([k, n], (1 << bits) - 1, "u32"))
    value = kb.cast(code, "f32")
    if zero is not None:
        z = kb.tensor_param("z", "f32", [k, n])
        if zero == "column":
            zt = kb.broadcast_to(kb.load(z, [0, 0], [1, n]), [k, n])
        else:
            zt = kb.load(z, [0, 0], [k, n])
        value = kb.binary("sub", value, zt)
    value = kb.mul(value, kb.full([k, n], 0.5, "f32"))                          # a dequant after the codes
    defs = {ins.result.name: ins for ins in kb.build().body if hasattr(ins, "result")}
    return value, defs


@pytest.mark.parametrize("bits,period", [(2, 16), (4, 8), (8, 4), (16, 2)])
def test_codes_in_words_repeat_every_word(bits, period):
    value, defs = _stream(bits)
    assert unpack_period(value, defs, axis=0) == period          # the next word, the same shifts
    assert unpack_period(value, defs, axis=1) == 1               # every column reads the same stream
    assert unpack_period(value, defs, axis=0, limit=period // 2) is None


def test_operands_the_same_along_the_axis_keep_the_period():
    """A zero point broadcast down K repeats with any period along K (the codes' period stands); along N it
    changes every column, and so does one that changes down K too: two varying operands, no proof."""
    value, defs = _stream(4, zero="column")
    assert unpack_period(value, defs, axis=0) == 8
    assert unpack_period(value, defs, axis=1) is None
    value, defs = _stream(4, zero="element")
    assert unpack_period(value, defs, axis=0) is None


def test_unproven_operands_have_no_period():
    value, defs = _stream(8, wrap=False)                         # shifts past the word: codes 4.. read zeros
    assert unpack_period(value, defs, axis=0) is None
    kb = KernelBuilder("plain")
    x = kb.tensor_param("x", "f32", [8, 16])
    loaded = kb.load(x, [0, 0], [8, 16])                          # not made of storage bits
    defs = {ins.result.name: ins for ins in kb.build().body if hasattr(ins, "result")}
    assert unpack_period(loaded, defs, axis=0) is None
