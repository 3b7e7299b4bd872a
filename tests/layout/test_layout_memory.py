"""Shared and global layouts: offsets against numpy strides / slicing, swizzles, products, slices, sympy."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy

from lowbit.errors import LayoutError
from lowbit.layout import (GlobalLayout, SharedLayout, Swizzle, global_column_major, global_row_major, global_strided,
                           shared_column_major, shared_layout, shared_row_major, shared_strided, swizzled_row_major)
from lowbit.layout.symbolic import evaluate, index_symbols


def expr_table(layout):
    idx = index_symbols(layout.rank)
    values = evaluate(layout.offset_expr(idx), dict(zip(idx, np.indices(layout.shape))))
    return np.broadcast_to(values, layout.shape)


# ------------------------------------------------------------------------------------------------ shared
@pytest.mark.parametrize("element_bits", [4, 8, 16, 32])
@pytest.mark.parametrize("chunks", [1, 2, 4, 8, 16])
def test_swizzled_row_major_is_bank_conflict_free(element_bits, chunks):
    per_chunk = 128 // element_bits
    rows, row_length = 16, chunks * per_chunk
    layout = swizzled_row_major(rows, row_length, element_bits)
    offsets = layout.offset_table()
    # a permutation of the tile's slots
    assert np.array_equal(np.sort(offsets.ravel()), np.arange(rows * row_length))
    # every 16-byte chunk stays whole and aligned: its elements are consecutive slots
    chunked = offsets.reshape(rows, chunks, per_chunk)
    assert np.all(chunked[..., 0] % per_chunk == 0)
    assert np.all(np.diff(chunked, axis=-1) == 1)
    # 8 consecutive rows reading the same chunk column hit 8 different 16-byte bank groups (128 B / 16 B)
    bank_group = (chunked[..., 0] * element_bits // 8 // 16) % 8
    for r0 in range(0, rows, 8):
        for c in range(chunks):
            assert len(set(bank_group[r0:r0 + 8, c].tolist())) == 8, (r0, c)
    assert np.array_equal(expr_table(layout), offsets)


def test_swizzle_convention_matches_cute():
    # CuTe Swizzle<3,4,3> (B=3, M=4, S=3): bits 7..9 are XORed into bits 4..6
    swz = Swizzle(base=4, bits=3, shift=3)
    for x in [0, 0x80, 0x90, 0x3FF, 0x2A5]:
        assert swz(x) == x ^ (((x >> 7) & 7) << 4)
    neg = Swizzle(base=2, bits=2, shift=-3)      # bits 2..3 are XORed into bits 5..6
    for x in range(256):
        assert neg(x) == x ^ (((x >> 2) & 3) << 5)
    with pytest.raises(LayoutError, match="shift"):
        Swizzle(0, 3, 2)
    with pytest.raises(LayoutError, match=">= 0"):
        Swizzle(-1, 1, 1)


def test_shared_modes_strides_and_expr():
    layout = shared_layout((64, 32), (8, 8, 16, 2), (256, 2, 16, 1))
    i, j = np.indices((64, 32))
    expected = (i // 8) * 256 + (i % 8) * 2 + (j // 2) * 16 + (j % 2)
    assert np.array_equal(layout.offset_table(), expected)
    assert np.array_equal(expr_table(layout), expected)
    assert layout.offset((9, 5)) == expected[9, 5]
    assert layout.cosize == int(expected.max()) + 1
    assert layout.is_injective()
    assert not shared_strided((4, 4), (1, 1)).is_injective()
    assert shared_layout((4, 6)) == shared_row_major(4, 6)


def test_shared_strided_matches_numpy():
    strides = (7, 2, 0)
    layout = shared_strided((3, 3, 4), strides)
    base = np.arange(200)
    view = np.lib.stride_tricks.as_strided(base, (3, 3, 4), tuple(s * base.itemsize for s in strides))
    assert np.array_equal(layout.offset_table(), view)


@pytest.mark.parametrize("a, b", [
    (shared_row_major(2, 3), shared_column_major(4, 2)),
    (shared_column_major(3, 2), shared_layout((4, 4), (2, 2, 4), (1, 2, 4))),
    (shared_row_major(2), shared_row_major(4, 8)),
    (shared_row_major(2, 1), swizzled_row_major(8, 64, 16)),
    (swizzled_row_major(8, 64, 16), shared_row_major(1, 4)),
    (shared_strided((3, 2), (5, 1)), shared_row_major(2, 2)),
])
def test_shared_product_matches_formula(a, b):
    c = a * b
    b_shape = (1,) * (c.rank - b.rank) + b.shape
    a_table = a.offset_table().reshape((1,) * (c.rank - a.rank) + a.shape)
    b_table = b.offset_table().reshape(b_shape)
    expected = np.empty(c.shape, dtype=np.int64)
    for index in np.ndindex(*c.shape):
        outer = tuple(i // s for i, s in zip(index, b_shape))
        inner = tuple(i % s for i, s in zip(index, b_shape))
        expected[index] = a_table[outer] * b.cosize + b_table[inner]
    assert np.array_equal(c.offset_table(), expected)
    assert np.array_equal(expr_table(c), expected)


def test_shared_product_errors():
    with pytest.raises(LayoutError, match="two swizzled"):
        swizzled_row_major(8, 64, 16) * swizzled_row_major(8, 64, 16)
    with pytest.raises(LayoutError, match="power-of-two"):
        swizzled_row_major(8, 64, 16) * shared_row_major(1, 3)
    with pytest.raises(LayoutError, match="period"):
        shared_row_major(2, 1) * swizzled_row_major(3, 64, 16).permute([0, 1])[0:1, :]


def test_shared_slices_keep_offsets():
    layouts = [shared_row_major(8, 12), shared_column_major(6, 8), swizzled_row_major(16, 64, 16),
               shared_layout((16, 8), (2, 8, 8), (64, 1, 8))]
    checked = 0
    for layout in layouts:
        full = layout.offset_table()
        for r0, r1, c0, c1 in itertools.product(range(0, 16, 3), range(1, 17, 5), range(0, 12, 4), range(2, 13, 5)):
            r1, c1 = min(r1, layout.shape[0]), min(c1, layout.shape[1])
            if r0 >= r1 or c0 >= c1:
                continue
            try:
                sub = layout[r0:r1, c0:c1]
            except LayoutError:
                assert len(layout.grouped_modes[0]) > 1 or len(layout.grouped_modes[1]) > 1
                continue
            checked += 1
            assert np.array_equal(sub.offset_table(), full[r0:r1, c0:c1])
        row = layout[3]
        assert np.array_equal(row.offset_table(), full[3])
    assert checked > 30


def test_shared_permute_and_visualize():
    layout = swizzled_row_major(4, 32, 32)
    assert np.array_equal(layout.permute([1, 0]).offset_table(), layout.offset_table().T)
    text = shared_row_major(2, 3).visualize()
    assert text.splitlines()[1:] == ["0 1 2", "3 4 5"]


@pytest.mark.parametrize("build, message", [
    (lambda: swizzled_row_major(8, 64, 3), "divide 128"),
    (lambda: swizzled_row_major(8, 24, 16), "power-of-two"),
    (lambda: shared_row_major(0, 4), ">= 1"),
    (lambda: shared_layout((4,), (4,), (-1,)), "non-negative"),
    (lambda: shared_layout((4,), (2,), (1,)), "elements"),
    (lambda: shared_row_major(4, 4).offset((4, 0)), "out of bounds"),
    (lambda: shared_row_major(4, 4)[1:3:2], "step 1"),
    (lambda: shared_layout((16,), (4, 4), (1, 4))[2:6], "aligned"),
    (lambda: swizzled_row_major(8, 64, 16).swizzled(Swizzle(0, 1, 1)), "already swizzled"),
])
def test_shared_errors(build, message):
    with pytest.raises(LayoutError, match=message):
        build()


# ------------------------------------------------------------------------------------------------ global
def test_global_major_layouts_match_numpy():
    for shape in [(5,), (3, 4), (2, 3, 4)]:
        c = np.arange(int(np.prod(shape))).reshape(shape)
        assert np.array_equal(global_row_major(*shape).offset_table(), c)
        assert np.array_equal(global_column_major(*shape).offset_table(),
                              np.arange(int(np.prod(shape))).reshape(shape, order="F"))
        assert global_row_major(*shape).strides == tuple(s // c.itemsize for s in c.strides)


def test_global_strided_and_slices_match_numpy():
    base = np.arange(1000)
    layout = global_strided((4, 5, 3), (60, 2, 17), base_offset=11)
    view = np.lib.stride_tricks.as_strided(base[11:], (4, 5, 3), (60 * 8, 2 * 8, 17 * 8))
    assert np.array_equal(layout.offset_table(), view)
    assert layout.offset((3, 4, 2)) == view[3, 4, 2]
    grid = np.arange(24).reshape(4, 6)
    g = global_row_major(4, 6)
    for key in [(slice(1, 3), slice(None, None, 2)), (2,), (slice(None), 5), (slice(3, 0, -1), slice(1, 6, 2)), (-1,)]:
        assert np.array_equal(g[key].offset_table(), grid[key]), key
    assert np.array_equal(g.permute([1, 0]).offset_table(), grid.T)


def test_global_symbolic():
    M, K = sympy.symbols("M K", integer=True, positive=True)
    g = global_row_major(M, K)
    i0, i1 = index_symbols(2)
    assert sympy.simplify(g.offset_expr() - (i0 * K + i1)) == 0
    assert g.offset((2, 3)) == 2 * K + 3
    concrete = g.subs({M: 3, K: 5})
    assert concrete == global_row_major(3, 5)
    assert np.array_equal(concrete.offset_table(), np.arange(15).reshape(3, 5))
    col = global_column_major(M, K)
    assert col.strides == (1, M)
    with pytest.raises(LayoutError, match="symbolic"):
        g.offset_table()
    assert g[:, 2].offset_expr() == i0 * K + 2


@pytest.mark.parametrize("build, message", [
    (lambda: global_row_major(0, 3), ">= 1"),
    (lambda: global_strided((2, 3), (1,)), "stride"),
    (lambda: global_row_major(2, "x"), "integer or a sympy"),
    (lambda: global_row_major(2, 3).offset((1,)), "rank"),
    (lambda: global_row_major(2, 3).offset((2, 0)), "out of bounds"),
    (lambda: global_row_major(2, 3)[0:0], "no element"),
    (lambda: GlobalLayout((2,), (1,)).permute([1]), "out of range"),
])
def test_global_errors(build, message):
    with pytest.raises(LayoutError, match=message):
        build()


def test_layout_types_are_hashable_and_frozen():
    for layout in [shared_row_major(2, 3), swizzled_row_major(8, 64, 16), global_row_major(2, 3)]:
        assert hash(layout) == hash(type(layout)(**{f: getattr(layout, f) for f in layout.__dataclass_fields__}))
        with pytest.raises(AttributeError):
            layout.shape = (1,)
    assert isinstance(shared_row_major(2), SharedLayout)
