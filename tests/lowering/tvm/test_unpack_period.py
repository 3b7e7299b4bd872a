"""unpack_period: the period along an axis of an operand unpacked from storage words, which bounds the K
unroll of a CPU dot (see lowering/tvm/unpack_period.py)."""
from __future__ import annotations

import pytest

from lowbit.ir import KernelBuilder
from lowbit.lowering.tvm.unpack_period import unpack_period


def _stream(bits: int, k: int = 64, n: int = 16, wrap: bool = True):
    """``value[k, j] = float(code k of a bitstream of ``bits``-bit codes)``, the same stream for every column:
    code k is bits ``(k * bits) % 32 ..`` of word ``k * bits // 32`` (``bits`` divides 32). Without ``wrap``
    the shift amount is ``k * bits`` itself (past the word for later codes: not periodic)."""
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
    value = kb.mul(kb.cast(code, "f32"), kb.full([k, n], 0.5, "f32"))          # a dequant after the codes
    defs = {ins.result.name: ins for ins in kb.build().body if hasattr(ins, "result")}
    return value, defs


@pytest.mark.parametrize("bits,period", [(2, 16), (4, 8), (8, 4), (16, 2)])
def test_codes_in_words_repeat_every_word(bits, period):
    value, defs = _stream(bits)
    assert unpack_period(value, defs, axis=0) == period          # the next word, the same shifts
    assert unpack_period(value, defs, axis=1) == 1               # every column reads the same stream
    assert unpack_period(value, defs, axis=0, limit=period // 2) is None


def test_unproven_operands_have_no_period():
    value, defs = _stream(8, wrap=False)                         # shifts past the word: codes 4.. read zeros
    assert unpack_period(value, defs, axis=0) is None
    kb = KernelBuilder("plain")
    x = kb.tensor_param("x", "f32", [8, 16])
    loaded = kb.load(x, [0, 0], [8, 16])                          # not made of storage bits
    defs = {ins.result.name: ins for ins in kb.build().body if hasattr(ins, "result")}
    assert unpack_period(loaded, defs, axis=0) is None
