"""The worked examples of DESIGN.md section 5 and the PTX mma.m16n8k16 fragments, element by element.

Every reference below is a closed formula written from the design document or the PTX ISA, never a call
into the code under test.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lowbit.errors import LayoutError
from lowbit.layout import column_local, column_spatial, local, reduce, spatial


def assert_layout_matches(layout, shape, worker_of, local_of):
    """Check every element: its unique owner is (worker_of(i, j), local_of(i, j)), and the inverse maps agree."""
    assert layout.shape == tuple(shape)
    seen = set()
    for index in np.ndindex(*shape):
        w, l = worker_of(*index), local_of(*index)
        assert layout.owners(index) == [(w, l)], index
        assert layout.map(w, l) == index
        assert tuple(layout.index_table()[w, l]) == index
        assert layout.local_table()[index] == l
        assert layout.worker_table()[index].tolist() == [w]
        seen.add((w, l))
    assert len(seen) == layout.spatial_size * layout.local_size == int(np.prod(shape))


def test_spatial_then_local():
    layout = spatial(2, 4).local(2, 1)
    assert_layout_matches(layout, [4, 4], lambda i, j: (i // 2) * 4 + j, lambda i, j: i % 2)
    assert (layout.spatial_size, layout.local_size) == (8, 2)


def test_local_then_spatial():
    layout = local(3, 4).spatial(2, 3)
    assert_layout_matches(layout, [6, 12], lambda i, j: (i % 2) * 3 + j % 3, lambda i, j: (i // 2) * 4 + j // 3)


def test_spatial_then_local_bigger_blocks():
    layout = spatial(2, 3).local(3, 4)
    assert_layout_matches(layout, [6, 12], lambda i, j: (i // 3) * 3 + j // 4, lambda i, j: (i % 3) * 4 + j % 4)


def test_column_major_primitives():
    assert_layout_matches(column_local(2, 3), [2, 3], lambda i, j: 0, lambda i, j: j * 2 + i)
    assert_layout_matches(column_spatial(2, 3), [2, 3], lambda i, j: j * 2 + i, lambda i, j: 0)
    assert_layout_matches(local(2, 3), [2, 3], lambda i, j: 0, lambda i, j: i * 3 + j)
    assert_layout_matches(spatial(2, 3), [2, 3], lambda i, j: i * 3 + j, lambda i, j: 0)


def test_ranks_order_dimensions():
    # ranks[d] = significance of dimension d: rank-3 layout with dimension 2 most significant
    layout = spatial(2, 3, 4, ranks=[1, 2, 0])
    assert_layout_matches(layout, [2, 3, 4], lambda i, j, k: k * 6 + i * 3 + j, lambda i, j, k: 0)
    assert column_local(2, 3, 4) == local(2, 3, 4, ranks=[2, 1, 0])


def test_reduce_makes_replicas():
    layout = reduce(spatial(3, 4), dims=[0])
    assert layout.shape == (4,)
    assert layout.spatial_size == 12 and layout.local_size == 1 and layout.replication == 3
    for j in range(4):
        assert {w for w, _ in layout.owners((j,))} == {j, j + 4, j + 8}
        assert layout.worker_table()[j].tolist() == [j, j + 4, j + 8]
    for w in range(12):
        assert layout.map(w, 0) == (w % 4,)


def test_reduce_keepdims_and_local_dims():
    layout = reduce(local(2, 1).spatial(2, 4), dims=[0], keepdims=True)
    assert layout.shape == (1, 4)
    assert layout.local_size == 1 and layout.replication == 2
    for j in range(4):
        assert [w for w, _ in layout.owners((0, j))] == [j, j + 4]


def mma_c_fragment(lane, i):
    """PTX ISA, mma.m16n8k16 accumulator C/D (f32 / f16): c0..c3."""
    group, tig = lane >> 2, lane % 4
    row = group + (8 if i >= 2 else 0)
    col = tig * 2 + (i & 1)
    return row, col


def mma_a_fragment(lane, i):
    """PTX ISA, mma.m16n8k16 multiplicand A (.f16/.bf16, 16x16): a0..a7."""
    group, tig = lane >> 2, lane % 4
    row = group if (0 <= i < 2 or 4 <= i < 6) else group + 8
    col = tig * 2 + (i & 1) + (8 if i >= 4 else 0)
    return row, col


def mma_b_fragment(lane, i):
    """PTX ISA, mma.m16n8k16 multiplicand B (.f16/.bf16, 16x8): b0..b3."""
    group, tig = lane >> 2, lane % 4
    row = tig * 2 + (i & 1) + (8 if i >= 2 else 0)
    col = group
    return row, col


@pytest.mark.parametrize("name, layout, shape, slots, fragment", [
    ("C", local(2, 1).spatial(8, 4).local(1, 2), (16, 8), 4, mma_c_fragment),
    ("A", column_local(2, 2).spatial(8, 4).local(1, 2), (16, 16), 8, mma_a_fragment),
    ("B", local(2, 1).column_spatial(4, 8).local(2, 1), (16, 8), 4, mma_b_fragment),
])
def test_mma_m16n8k16_fragments(name, layout, shape, slots, fragment):
    assert layout.shape == shape
    assert (layout.spatial_size, layout.local_size) == (32, slots)
    for lane in range(32):
        expected = [fragment(lane, i) for i in range(slots)]
        assert [tuple(x) for x in layout.worker_indices(lane).tolist()] == expected, (name, lane)
        for i, index in enumerate(expected):
            assert layout.owners(index) == [(lane, i)]


def test_mma_c_fragment_formula():
    layout = local(2, 1).spatial(8, 4).local(1, 2)
    assert_layout_matches(layout, [16, 8], lambda i, j: (i % 8) * 4 + j // 2, lambda i, j: (i // 8) * 2 + j % 2)


def test_division_facts():
    assert spatial(2, 4).local(2, 1) / local(2, 1) == spatial(2, 4)
    assert spatial(6) / spatial(3) == spatial(2)
    c = local(2, 1).spatial(8, 4).local(1, 2)
    assert c / local(1, 2) == local(2, 1).spatial(8, 4)
    assert c / spatial(8, 4).local(1, 2) == local(2, 1)


def test_division_impossible():
    with pytest.raises(LayoutError, match="cannot compute a / b"):
        spatial(2, 4).local(2, 1) / spatial(2, 1)      # the innermost mode of dimension 0 is local
    with pytest.raises(LayoutError, match="does not divide"):
        spatial(6) / spatial(4)
    with pytest.raises(LayoutError, match="rank"):
        spatial(4) / spatial(2, 2)
    with pytest.raises(LayoutError):
        local(3, 4).spatial(2, 3) / local(3, 4)        # local(3,4) is the *outer* factor


def test_product_is_not_commutative():
    assert spatial(2) * local(2) != local(2) * spatial(2)
    assert (spatial(2) * local(2)).map(1, 0) == (2,)
    assert (local(2) * spatial(2)).map(1, 0) == (1,)


def test_visualize_command_prints_grid():
    code = "from lowbit.layout import spatial; print(spatial(2,4).local(2,1).visualize())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[1:] == [
        "0:0 1:0 2:0 3:0",
        "0:1 1:1 2:1 3:1",
        "4:0 5:0 6:0 7:0",
        "4:1 5:1 6:1 7:1",
    ]
