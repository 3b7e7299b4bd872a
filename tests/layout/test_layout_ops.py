"""Register-layout operations checked against their definitions, plus exhaustive checks on small layouts.

References: the product formula of DESIGN.md section 5, a direct evaluator of the raw (shape, modes,
spatial, local) description, numpy reshapes/transposes of the index grid, and brute-force searches.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from lowbit.errors import LayoutError
from lowbit.layout import (RegisterLayout, auto_local_spatial, column_local, column_spatial, concat, divide, flatten,
                           left_divide, local, permute, reduce, register_layout, reshape, spatial, squeeze,
                           unsqueeze)


# ------------------------------------------------------------------------------------------------ references
def raw_table(shape, mode_shape, spatial_modes, local_modes):
    """Evaluate a raw description by its definition: {(worker, local): index}."""
    spatial_ext = [mode_shape[m] if m >= 0 else -m for m in spatial_modes]
    local_ext = [mode_shape[m] for m in local_modes]
    groups, m = [], 0                      # modes (all > 1 here) split the dimensions in order
    for extent in shape:
        group = []
        while extent > 1:
            group.append(m)
            extent //= mode_shape[m]
            m += 1
        groups.append(group)
    table = {}
    for w in range(int(np.prod(spatial_ext, dtype=np.int64))):
        for l in range(int(np.prod(local_ext, dtype=np.int64))):
            value = [0] * len(mode_shape)
            digits_w = np.unravel_index(w, spatial_ext) if spatial_ext else ()
            digits_l = np.unravel_index(l, local_ext) if local_ext else ()
            for mm, dg in zip(spatial_modes, digits_w):
                if mm >= 0:
                    value[mm] = int(dg)
            for mm, dg in zip(local_modes, digits_l):
                value[mm] = int(dg)
            index = []
            for group in groups:
                x = 0
                for mm in group:
                    x = x * mode_shape[mm] + value[mm]
                index.append(x)
            table[(w, l)] = tuple(index)
    return table


def layout_table(layout):
    return {(w, l): tuple(int(x) for x in layout.index_table()[w, l])
            for w in range(layout.spatial_size) for l in range(layout.local_size)}


def product_by_formula(a, b):
    """DESIGN.md: C(t, l) = A(t // T_B, l // L_B) * shape_B + B(t % T_B, l % L_B) (same rank)."""
    tb, lb = b.spatial_size, b.local_size
    table = {}
    for t in range(a.spatial_size * tb):
        for l in range(a.local_size * lb):
            ia, ib = a.map(t // tb, l // lb), b.map(t % tb, l % lb)
            table[(t, l)] = tuple(x * s + y for x, y, s in zip(ia, ib, b.shape))
    return table


PRIMITIVES = sorted({kind(*dims) for kind in (local, spatial, column_local, column_spatial)
                     for dims in itertools.product([1, 2], [1, 2, 3])}, key=repr)
PRODUCTS = sorted({a * b for a in PRIMITIVES for b in PRIMITIVES} | set(PRIMITIVES), key=repr)


# ------------------------------------------------------------------------------------------------ canonical form
def enumerate_raw(shape, replications=(2,)):
    """Every raw description of ``shape``: all mode splits, spatial/local assignments and orders."""
    def splits(n):
        if n == 1:
            yield []
            return
        for f in range(2, n + 1):
            if n % f == 0:
                for rest in splits(n // f):
                    yield [f] + rest
    for per_dim in itertools.product(*[list(splits(n)) for n in shape]):
        modes = [m for group in per_dim for m in group]
        ids = list(range(len(modes)))
        for mask in itertools.product([0, 1], repeat=len(ids)):
            sp = [i for i in ids if mask[i]]
            lo = [i for i in ids if not mask[i]]
            for sp_order in itertools.permutations(sp):
                for lo_order in itertools.permutations(lo):
                    yield shape, modes, list(sp_order), list(lo_order)
                    for r in replications:
                        for pos in range(len(sp_order) + 1):
                            yield shape, modes, list(sp_order[:pos]) + [-r] + list(sp_order[pos:]), list(lo_order)


@pytest.mark.parametrize("shape", [(4,), (8,), (2, 4), (4, 2), (2, 2, 2), (6,), (2, 3), (12,), (4, 4)])
def test_canonical_form_is_unique_and_faithful(shape):
    by_mapping, by_canonical = {}, {}
    count = 0
    for raw in enumerate_raw(shape):
        count += 1
        layout = register_layout(*raw)
        table = raw_table(*raw)
        # canonicalisation keeps the mapping
        assert layout_table(layout) == table, raw
        key = (len({w for w, _ in table}), len({l for _, l in table}), tuple(sorted(table.items())))
        by_mapping.setdefault(key, set()).add(layout)
        by_canonical.setdefault(layout, set()).add(key)
    assert count >= 10
    # same mapping <=> same canonical form (and so the same hash)
    assert all(len(v) == 1 for v in by_mapping.values())
    assert all(len(v) == 1 for v in by_canonical.values())
    for layouts in by_mapping.values():
        (layout,) = layouts
        assert RegisterLayout(layout.shape, layout.mode_shape, layout.spatial_modes, layout.local_modes) == layout


def test_equal_mappings_from_different_constructions():
    assert spatial(2, 1) * spatial(1, 3) == spatial(2, 3)
    assert local(2) * local(3) == local(6)
    assert spatial(2) * spatial(2) == spatial(4)
    assert hash(spatial(2) * spatial(2)) == hash(spatial(4))
    assert local(1, 1) * spatial(2, 3) == spatial(2, 3)
    assert spatial(4) != local(4)
    assert spatial(2, 3) != spatial(3, 2)
    assert column_spatial(2, 1) == spatial(2, 1)


# ------------------------------------------------------------------------------------------------ product
@pytest.mark.parametrize("a", PRIMITIVES[::2])
@pytest.mark.parametrize("b", PRIMITIVES[1::3])
def test_product_matches_formula(a, b):
    assert layout_table(a * b) == product_by_formula(a, b)


def test_product_of_different_ranks_prepends_unit_dims():
    assert spatial(4) * local(2, 2) == spatial(1, 4) * local(2, 2)
    assert (local(2, 2) * spatial(3)).shape == (2, 6)
    assert local(2, 1).spatial(8, 4).local(2) == local(2, 1).spatial(8, 4).local(1, 2)


def test_product_with_replication_follows_formula():
    a = reduce(spatial(2, 2), [0], keepdims=True)            # 4 workers, each element held twice
    b = reduce(spatial(2, 3).local(1, 2), [1], keepdims=True)
    for x, y in [(a, b), (b, a), (a, local(2, 2)), (spatial(2, 1), a)]:
        assert layout_table(x * y) == product_by_formula(x, y)


# ------------------------------------------------------------------------------------------------ division
def test_right_and_left_division_invert_every_small_product():
    for q in PRODUCTS[::3]:
        for b in PRIMITIVES:
            a = q * b
            assert divide(a, b) == q
            assert left_divide(a, q) == b


def test_division_fails_only_when_no_quotient_exists():
    quotients = {}
    for q in PRODUCTS:
        for b in PRIMITIVES:
            quotients.setdefault((q * b, b), set()).add(q)
    attempts = failures = 0
    for a in PRODUCTS[::2]:
        for b in PRIMITIVES:
            attempts += 1
            try:
                q = a / b
            except LayoutError:
                failures += 1
                assert (a, b) not in quotients, (a, b)
                continue
            assert layout_table(q * b) == layout_table(a)
    assert 0 < failures < attempts


def test_division_with_replication():
    r = reduce(spatial(4, 2), [0], keepdims=True)              # spatial entries [-4, m]
    a = r * reduce(spatial(2, 1).local(1, 2), [0], keepdims=True)
    assert a / reduce(spatial(2, 1).local(1, 2), [0], keepdims=True) == r
    b = reduce(spatial(2), [0], keepdims=False)                 # rank 0, 2 replicas
    assert (spatial(3) * b) / b == spatial(3)
    assert left_divide(b * spatial(3), b) == spatial(3)


# ------------------------------------------------------------------------------------------------ reduce
def test_reduce_projects_ownership():
    for layout in PRODUCTS[::5]:
        for dims in ([0], [1], [0, 1]):
            r = reduce(layout, dims)
            keep = [d for d in range(layout.rank) if d not in dims]
            expected_workers = {}
            for w in range(layout.spatial_size):
                held = {tuple(layout.map(w, l)[d] for d in keep) for l in range(layout.local_size)}
                assert {r.map(w, l) for l in range(r.local_size)} == held
                for index in held:
                    expected_workers.setdefault(index, set()).add(w)
            for index, workers in expected_workers.items():
                assert {w for w, _ in r.owners(index)} == workers


# ------------------------------------------------------------------------------------------------ shape ops
def grid_of(layout):
    """An object array of ``shape``: the sorted owners of each element."""
    out = np.empty(layout.shape, dtype=object)
    for index in np.ndindex(*layout.shape):
        out[index] = tuple(layout.owners(index))
    return out


def test_permute_transposes_the_grid():
    layout = local(2, 1, 3).spatial(2, 2, 1).local(1, 2, 2)
    for dims in itertools.permutations(range(3)):
        p = permute(layout, dims)
        assert np.array_equal(grid_of(p), np.transpose(grid_of(layout), dims))
    assert permute(permute(layout, [2, 0, 1]), [1, 2, 0]) == layout


def test_reshape_reshapes_the_grid():
    layout = local(2, 2).spatial(2, 4).local(1, 2)             # shape [4, 16]
    for shape in [(64,), (4, 4, 4), (8, 8), (2, 32), (4, 16), (1, 4, 16, 1), (2, 2, 2, 8)]:
        r = reshape(layout, shape)
        assert r.shape == shape
        assert np.array_equal(grid_of(r), grid_of(layout).reshape(shape))
    assert reshape(spatial(2, 3), [3, 2]) == spatial(3, 2)
    assert layout.reshape(64).reshape(4, 16) == layout
    assert flatten(spatial(2, 3, 4), 1) == reshape(spatial(2, 3, 4), [2, 12])
    assert squeeze(unsqueeze(spatial(2, 3), [0, 3]), [0, 3]) == spatial(2, 3)
    assert unsqueeze(spatial(2, 3), 1).shape == (2, 1, 3)


def test_reshape_not_representable():
    with pytest.raises(LayoutError, match="cuts through a mode"):
        reshape(local(2, 3).spatial(3, 2), [3, 12])
    with pytest.raises(LayoutError, match="elements"):
        reshape(spatial(2, 3), [4])


def test_concat_stacks_dimensions():
    a, b = local(2).spatial(3), spatial(2).local(2)
    c = concat(a, b)
    assert c.shape == (6, 4)
    tb, lb = b.spatial_size, b.local_size
    for t in range(c.spatial_size):
        for l in range(c.local_size):
            assert c.map(t, l) == a.map(t // tb, l // lb) + b.map(t % tb, l % lb)


def test_auto_local_spatial():
    assert auto_local_spatial(32, [16, 8]) == local(4, 1).spatial(4, 8)
    layout = auto_local_spatial(128, [16, 4])
    assert layout.spatial_size == 128 and layout.replication == 2 and layout.local_size == 1
    with pytest.raises(LayoutError, match="evenly"):
        auto_local_spatial(3, [4])


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("build, message", [
    (lambda: local(0, 2), ">= 1"),
    (lambda: spatial(2, -1), ">= 1"),
    (lambda: spatial(2.5), "integer"),
    (lambda: spatial(2, 3, ranks=[0, 0]), "permutation"),
    (lambda: register_layout([4], [2, 2], [0], []), "neither spatial nor local"),
    (lambda: register_layout([4], [2, 2], [0, 0], [1]), "more than once"),
    (lambda: register_layout([4], [3], [0], []), "elements"),
    (lambda: register_layout([2, 3], [3, 2], [0, 1], []), "do not split"),
    (lambda: register_layout([4], [4], [1], []), "does not exist"),
    (lambda: spatial(2, 4).map(8, 0), "out of range"),
    (lambda: spatial(2, 4).owners((1,)), "rank"),
    (lambda: spatial(2, 4).owners((2, 0)), "out of bounds"),
    (lambda: reduce(spatial(2, 4), [2]), "out of range"),
    (lambda: permute(spatial(2, 4), [0]), "permutation"),
    (lambda: permute(spatial(2, 4), [0, 0]), "distinct"),
    (lambda: squeeze(spatial(2, 4), [0]), "not 1"),
    (lambda: left_divide(spatial(4), spatial(2, 2)), "rank"),
    (lambda: spatial(2, 4).worker_indices(-1), "out of range"),
])
def test_errors_are_layout_errors(build, message):
    with pytest.raises(LayoutError, match=message):
        build()


def test_product_requires_layouts():
    with pytest.raises(TypeError):
        spatial(2) * 3
