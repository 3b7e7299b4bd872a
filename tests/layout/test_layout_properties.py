"""Property-based tests (hypothesis) over random small register / shared layouts."""
from __future__ import annotations

import os

import numpy as np
import sympy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowbit.errors import LayoutError
from lowbit.layout import (RegisterLayout, Swizzle, column_local, column_spatial, left_divide, local, permute, reduce,
                           shared_column_major, shared_row_major, spatial)
from lowbit.layout.symbolic import evaluate, index_symbol, index_symbols

# LOWBIT_HYPOTHESIS_EXAMPLES=2000 for a longer search
SETTINGS = settings(max_examples=int(os.environ.get("LOWBIT_HYPOTHESIS_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
KINDS = (local, spatial, column_local, column_spatial)


@st.composite
def layouts(draw, rank=None, max_factors=3, replicate=True):
    rank = draw(st.integers(1, 3)) if rank is None else rank
    n = draw(st.integers(1, max_factors))
    result = None
    for _ in range(n):
        kind = draw(st.sampled_from(KINDS))
        dims = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
        factor = kind(*dims)
        result = factor if result is None else result * factor
    if replicate and draw(st.booleans()):
        # a factor with replication: reduce a bigger layout over one dimension, keeping the rank
        extra = draw(st.sampled_from(KINDS))(*draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank)))
        extra = reduce(extra, [draw(st.integers(0, rank - 1))], keepdims=True)
        result = result * extra if draw(st.booleans()) else extra * result
    if draw(st.booleans()):
        result = permute(result, draw(st.permutations(range(rank))))
    return result


def table(layout):
    return layout.index_table()


@SETTINGS
@given(st.data())
def test_product_is_associative(data):
    rank = data.draw(st.integers(1, 2))
    a, b, c = (data.draw(layouts(rank=rank, max_factors=2)) for _ in range(3))
    left, right = (a * b) * c, a * (b * c)
    assert left == right
    assert np.array_equal(table(left), table(right))


@SETTINGS
@given(st.data())
def test_division_undoes_product(data):
    rank = data.draw(st.integers(1, 3))
    a = data.draw(layouts(rank=rank))
    b = data.draw(layouts(rank=rank))
    assert (a * b) / b == a
    assert left_divide(a * b, a) == b


@SETTINGS
@given(layouts(), st.data())
def test_division_result_is_exact(layout, data):
    b = data.draw(layouts(rank=layout.rank, max_factors=1, replicate=False))
    try:
        q = layout / b
    except LayoutError:
        return
    assert np.array_equal(table(q * b), table(layout))


@SETTINGS
@given(layouts())
def test_map_and_owners_agree(layout):
    t = table(layout)
    owners_seen = {}
    for w in range(layout.spatial_size):
        for l in range(layout.local_size):
            index = layout.map(w, l)
            assert tuple(t[w, l]) == index
            assert (w, l) in layout.owners(index)
            owners_seen.setdefault(index, []).append((w, l))
    # every index has >= 1 owner, exactly `replication` of them, all sharing one local slot
    for index in np.ndindex(*layout.shape):
        owners = layout.owners(index)
        assert len(owners) == layout.replication >= 1
        assert sorted(owners_seen[index]) == owners
        assert len({l for _, l in owners}) == 1
        assert layout.worker_table()[index].tolist() == [w for w, _ in owners]
        assert layout.local_table()[index] == owners[0][1]
    assert len(owners_seen) == int(np.prod(layout.shape))


@SETTINGS
@given(layouts())
def test_canonical_form_idempotent_and_hash_consistent(layout):
    again = RegisterLayout(layout.shape, layout.mode_shape, layout.spatial_modes, layout.local_modes)
    assert again == layout and hash(again) == hash(layout)
    assert (again.shape, again.mode_shape, again.spatial_modes, again.local_modes) == \
        (layout.shape, layout.mode_shape, layout.spatial_modes, layout.local_modes)
    assert all(size > 1 for size in layout.mode_shape)


@SETTINGS
@given(layouts(rank=2, max_factors=2), layouts(rank=2, max_factors=2))
def test_equality_means_same_mapping(a, b):
    same = (a.shape == b.shape and a.spatial_size == b.spatial_size and a.local_size == b.local_size
            and np.array_equal(table(a), table(b)))
    assert (a == b) == same
    if same:
        assert hash(a) == hash(b)


@SETTINGS
@given(layouts())
def test_sympy_maps_equal_numeric_maps(layout):
    w, l = index_symbol("w"), index_symbol("l")
    exprs = layout.map_exprs(w, l)
    ww, ll = np.meshgrid(np.arange(layout.spatial_size), np.arange(layout.local_size), indexing="ij")
    for d, expr in enumerate(exprs):
        values = np.broadcast_to(evaluate(expr, {w: ww, l: ll}), ww.shape)
        assert np.array_equal(values, table(layout)[:, :, d])
    idx = index_symbols(layout.rank)
    grids = dict(zip(idx, np.indices(layout.shape)))
    local_values = np.broadcast_to(evaluate(layout.local_expr(idx), grids), layout.shape)
    assert np.array_equal(local_values, layout.local_table())
    r = index_symbol("r")
    worker = layout.worker_expr(idx, replica=r)
    for k in range(layout.replication):
        values = np.broadcast_to(evaluate(worker, {**grids, r: k}), layout.shape)
        assert np.array_equal(values, layout.worker_table()[..., k])


@SETTINGS
@given(st.integers(0, 4), st.integers(0, 3), st.integers(-5, 5), st.integers(1, 3))
def test_swizzle_is_a_bijection(base, bits, shift, blocks):
    if abs(shift) < bits:
        return
    swz = Swizzle(base, bits, shift)
    domain = np.arange(blocks * swz.period, dtype=np.int64)
    image = swz(domain)
    assert np.array_equal(np.sort(image), domain)
    assert np.array_equal(swz(image), domain)             # an involution
    # reference, bit by bit: bit (z_low + k) flips when bit (y_low + k) is set
    expected = domain.copy()
    for k in range(bits):
        y = (domain >> (base + max(0, shift) + k)) & 1
        expected ^= y << (base - min(0, shift) + k)
    assert np.array_equal(image, expected)
    x = sympy.Symbol("x", integer=True, nonnegative=True)
    assert np.array_equal(evaluate(swz.expr(x), {x: domain}), expected)


@SETTINGS
@given(st.lists(st.integers(1, 5), min_size=1, max_size=4))
def test_shared_major_offsets_equal_numpy_strides(shape):
    c_order = np.arange(int(np.prod(shape))).reshape(shape)
    f_order = np.arange(int(np.prod(shape))).reshape(shape, order="F")
    assert np.array_equal(shared_row_major(*shape).offset_table(), c_order)
    assert np.array_equal(shared_column_major(*shape).offset_table(), f_order)
    for index in [tuple(s - 1 for s in shape), tuple(s // 2 for s in shape)]:
        assert shared_row_major(*shape).offset(index) == c_order[index]
        assert shared_column_major(*shape).offset(index) == f_order[index]
