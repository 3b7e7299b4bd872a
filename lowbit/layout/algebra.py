"""The register-layout algebra: product ``a * b``, right division ``a / b`` and left division.

Product, per dimension (``T_B``, ``L_B`` the worker and local counts of ``B``)::

    C(t, l) = A(t // T_B, l // L_B) * shape_B + B(t % T_B, l % L_B)

Every element of ``A`` is refined into a whole copy of ``B``: ``A`` says which *block* a worker/slot is in,
``B`` where inside the block. The product is associative, not commutative. Operands of different rank are
aligned by prepending unit dimensions to the shorter one.

Division undoes a product: ``a / b`` is the unique ``q`` with ``q * b == a`` and ``left_divide(a, b)`` the
unique ``q`` with ``b * q == a``; when no such ``q`` exists a :class:`LayoutError` says why.

>>> from lowbit.layout import local, spatial
>>> spatial(2, 4) * local(2, 1) == spatial(2, 4).local(2, 1)
True
>>> spatial(2, 4).local(2, 1) / local(2, 1) == spatial(2, 4)
True
>>> left_divide(spatial(2, 4).local(2, 1), spatial(2, 4)) == local(2, 1)
True
"""
from __future__ import annotations

from ._common import LayoutError
from .register import RegisterLayout


def unsqueeze_front(layout: RegisterLayout, count: int) -> RegisterLayout:
    """Prepend ``count`` unit dimensions (the mapping is unchanged)."""
    if count <= 0:
        return layout
    return RegisterLayout((1,) * count + layout.shape, layout.mode_shape, layout.spatial_modes, layout.local_modes)


def product(outer: RegisterLayout, inner: RegisterLayout) -> RegisterLayout:
    """``outer * inner`` (see the module docstring).

    >>> from lowbit.layout import local, spatial
    >>> (local(3, 4) * spatial(2, 3)).map(4, 5)
    (3, 4)
    """
    if not isinstance(outer, RegisterLayout) or not isinstance(inner, RegisterLayout):
        raise LayoutError(f"layout product needs two register layouts, got {type(outer).__name__} and "
                          f"{type(inner).__name__}")
    rank = max(outer.rank, inner.rank)
    outer = unsqueeze_front(outer, rank - outer.rank)
    inner = unsqueeze_front(inner, rank - inner.rank)
    mode_shape: list[int] = []
    outer_id: dict[int, int] = {}
    inner_id: dict[int, int] = {}
    for og, ig in zip(outer.grouped_modes, inner.grouped_modes):
        for m in og:
            outer_id[m] = len(mode_shape)
            mode_shape.append(outer.mode_shape[m])
        for m in ig:
            inner_id[m] = len(mode_shape)
            mode_shape.append(inner.mode_shape[m])
    spatial = tuple(outer_id[m] if m >= 0 else m for m in outer.spatial_modes) + \
        tuple(inner_id[m] if m >= 0 else m for m in inner.spatial_modes)
    local = tuple(outer_id[m] for m in outer.local_modes) + tuple(inner_id[m] for m in inner.local_modes)
    shape = tuple(a * b for a, b in zip(outer.shape, inner.shape))
    return RegisterLayout(shape, tuple(mode_shape), spatial, local)


# ---------------------------------------------------------------------------------------------------- division
class _Refined:
    """A mutable, non-canonical copy of a layout whose modes can be split (the mapping never changes)."""

    def __init__(self, layout: RegisterLayout):
        self.shape = layout.shape
        self.groups: list[list[int]] = [[layout.mode_shape[m] for m in g] for g in layout.grouped_modes]
        # modes are named (dim, position-in-group) while splitting; lists hold names or ("r", size)
        ids = {m: (d, k) for d, g in enumerate(layout.grouped_modes) for k, m in enumerate(g)}
        self.names: list[list[object]] = [[(d, k) for k in range(len(g))] for d, g in enumerate(self.groups)]
        self.spatial: list[object] = [ids[m] if m >= 0 else ("r", -m) for m in layout.spatial_modes]
        self.local: list[object] = [ids[m] for m in layout.local_modes]
        self._fresh = 0

    def split_mode(self, d: int, k: int, high: int, low: int) -> None:
        """Split mode ``k`` of dimension ``d`` into a more significant part ``high`` and a part ``low``."""
        name = self.names[d][k]
        self._fresh += 1
        hi_name, lo_name = ("s", self._fresh, "hi"), ("s", self._fresh, "lo")
        self.groups[d][k:k + 1] = [high, low]
        self.names[d][k:k + 1] = [hi_name, lo_name]
        for entries in (self.spatial, self.local):
            if name in entries:
                pos = entries.index(name)
                entries[pos:pos + 1] = [hi_name, lo_name]

    def split_replication(self, pos: int, high: int, low: int) -> None:
        self.spatial[pos:pos + 1] = [("r", high), ("r", low)]

    def size_of(self) -> dict[object, int]:
        return {name: size for g, ns in zip(self.groups, self.names) for name, size in zip(ns, g)}


def _fail(op: str, a: RegisterLayout, b: RegisterLayout, why: str) -> LayoutError:
    hint = ("a / b exists only when a == q * b for some layout q: b's modes must be the innermost modes of "
            "every dimension of a and the last spatial/local entries of a" if op == "divide" else
            "left_divide(a, b) exists only when a == b * q: b's modes must be the outermost modes of every "
            "dimension of a and the first spatial/local entries of a")
    name = "a / b" if op == "divide" else "left_divide(a, b)"
    return LayoutError(f"cannot compute {name} with a = {a!r} and b = {b!r}: {why}", hint=hint)


def _divide(a: RegisterLayout, b: RegisterLayout, *, right: bool) -> RegisterLayout:
    op = "divide" if right else "left_divide"
    if not isinstance(a, RegisterLayout) or not isinstance(b, RegisterLayout):
        raise LayoutError(f"layout division needs two register layouts, got {type(a).__name__} and "
                          f"{type(b).__name__}")
    if b.rank > a.rank:
        raise _fail(op, a, b, f"the divisor has rank {b.rank} > {a.rank}")
    b = unsqueeze_front(b, a.rank - b.rank)
    for d, (x, y) in enumerate(zip(a.shape, b.shape)):
        if x % y:
            raise _fail(op, a, b, f"dimension {d}: extent {y} does not divide {x}")
    if a.spatial_size % b.spatial_size:
        raise _fail(op, a, b, f"{b.spatial_size} workers do not divide {a.spatial_size}")
    if a.local_size % b.local_size:
        raise _fail(op, a, b, f"{b.local_size} local slots do not divide {a.local_size}")

    ref = _Refined(a)
    # 1. split the one mode per dimension that may hold a quotient mode merged with a divisor mode
    for d, bg in enumerate(b.grouped_modes):
        if not bg:
            continue
        sizes = ref.groups[d]
        if len(sizes) < len(bg):
            raise _fail(op, a, b, f"dimension {d} of the divisor has more modes than the dividend")
        k = len(sizes) - len(bg) if right else len(bg) - 1
        edge = b.mode_shape[bg[0]] if right else b.mode_shape[bg[-1]]
        size = sizes[k]
        if size != edge:
            if size % edge:
                raise _fail(op, a, b, f"dimension {d}: mode of size {edge} in the divisor does not match the "
                                      f"dividend's mode of size {size}")
            high, low = (size // edge, edge) if right else (edge, size // edge)
            ref.split_mode(d, k, high, low)
    # 2. split a replication merged across the boundary
    if b.spatial_modes and b.spatial_modes[0 if right else -1] < 0 and len(ref.spatial) >= len(b.spatial_modes):
        pos = len(ref.spatial) - len(b.spatial_modes) if right else len(b.spatial_modes) - 1
        entry = ref.spatial[pos]
        want = -b.spatial_modes[0 if right else -1]
        if isinstance(entry, tuple) and entry[0] == "r" and entry[1] != want and entry[1] % want == 0:
            high, low = (entry[1] // want, want) if right else (want, entry[1] // want)
            ref.split_replication(pos, high, low)
    # 3. match the divisor's modes against the dividend's innermost (outermost) modes
    match: dict[int, object] = {}
    sizes = ref.size_of()
    for d, bg in enumerate(b.grouped_modes):
        names = ref.names[d]
        part = names[len(names) - len(bg):] if right else names[:len(bg)]
        for m, name in zip(bg, part):
            if sizes[name] != b.mode_shape[m]:
                raise _fail(op, a, b, f"dimension {d}: the divisor's modes {[b.mode_shape[x] for x in bg]} are not "
                                      f"the {'innermost' if right else 'outermost'} modes of the dividend "
                                      f"{[sizes[n] for n in names]}")
            match[m] = name
    for kind, a_list, b_list in (("spatial", ref.spatial, b.spatial_modes), ("local", ref.local, b.local_modes)):
        if len(b_list) > len(a_list):
            raise _fail(op, a, b, f"the divisor has more {kind} entries than the dividend")
        part = a_list[len(a_list) - len(b_list):] if right else a_list[:len(b_list)]
        for m, entry in zip(b_list, part):
            expected = ("r", -m) if m < 0 else match[m]
            if entry != expected:
                raise _fail(op, a, b, f"the {kind} order of the divisor does not match the "
                                      f"{'last' if right else 'first'} {kind} entries of the dividend")
    # 4. what is left is the quotient
    used = set(match.values())
    mode_shape: list[int] = []
    new_id: dict[object, int] = {}
    for g, names in zip(ref.groups, ref.names):
        for size, name in zip(g, names):
            if name not in used:
                new_id[name] = len(mode_shape)
                mode_shape.append(size)

    def rest(entries: list[object], count: int) -> list[object]:
        return entries[:len(entries) - count] if right else entries[count:]

    spatial = tuple(-e[1] if isinstance(e, tuple) and e[0] == "r" else new_id[e]  # type: ignore[index]
                    for e in rest(ref.spatial, len(b.spatial_modes)))
    local = tuple(new_id[e] for e in rest(ref.local, len(b.local_modes)))
    shape = tuple(x // y for x, y in zip(a.shape, b.shape))
    try:
        quotient = RegisterLayout(shape, tuple(mode_shape), spatial, local)
    except LayoutError as err:
        raise _fail(op, a, b, f"the remaining modes do not form a layout ({err.message})") from None
    check = product(quotient, b) if right else product(b, quotient)
    if check != a:
        raise _fail(op, a, b, "no layout q satisfies the equation")
    return quotient


def divide(a: RegisterLayout, b: RegisterLayout) -> RegisterLayout:
    """Right division: the unique ``q`` with ``q * b == a`` (``a / b``).

    >>> from lowbit.layout import spatial
    >>> spatial(6) / spatial(3) == spatial(2)
    True
    """
    return _divide(a, b, right=True)


def left_divide(a: RegisterLayout, b: RegisterLayout) -> RegisterLayout:
    """Left division: the unique ``q`` with ``b * q == a``.

    >>> from lowbit.layout import local, spatial
    >>> left_divide(spatial(6), spatial(2)) == spatial(3)
    True
    """
    return _divide(a, b, right=False)


__all__ = ["product", "divide", "left_divide", "unsqueeze_front"]
