"""Vector reads of repeated elements on the CPU.

In a vectorized loop, a read ``buf[..., f(lane)]`` whose last index stays within a few elements of lane 0's
reads each of them in several lanes: the bytes of 4-bit codes seen as codes (``floordiv(16 c + lane, 2)``:
each byte in two lanes), the 3-byte groups of 3-bit codes (``floordiv(16 c + lane, 8) * 3 + t``). TVM loads
every lane's element on its own (a scalar load and an insert per lane, ~35 instructions for 16 lanes of
bytes); the span the lanes read, loaded once as a vector and shuffled into the lanes, costs a load and a
shuffle (LLVM: ``vmovq`` and ``vpunpcklbw`` for 4-bit codes). The span lies between elements the lanes read,
on the same row, so it is in bounds wherever they are.

:func:`repeated_read` proves the pattern from the index's TIR text: the other axes must not mention the lane,
and the last one's offset from lane 0 must be the same integer for every value of the other variables, which
sympy decides exactly (TIR's ``floordiv`` / ``floormod`` are floor division and its modulo; integer casts of
indices keep their values), none below lane 0's and all within ``width`` elements of it.

>>> r = repeated_read(["p", "T.floordiv(c * 16 + tv, 2)"], "tv", 16)
>>> r.base, r.count, r.lanes[:6]
(('p', 'T.floordiv(c * 16 + 0, 2)'), 8, (0, 0, 1, 1, 2, 2))
>>> repeated_read(["p", "T.floordiv(x + tv, 2)"], "tv", 16) is None     # x's parity decides the pattern
True
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

__all__ = ["RepeatedRead", "repeated_read"]


@dataclass(frozen=True)
class RepeatedRead:
    """``buf[base[:-1], base[-1] + lanes[i]]`` in lane ``i``, the ``count`` contiguous elements from ``base``
    holding every lane's."""

    base: tuple[str, ...]
    count: int
    lanes: tuple[int, ...]

    def shuffle(self, buf: str) -> str:
        """The read as one TIR vector: the ``count`` elements loaded once, repeated into the lanes."""
        *outer, last = self.base
        load = f"{buf}[{', '.join([*outer, f'T.ramp({last}, 1, {self.count})'])}]"
        copies = -(-len(self.lanes) // self.count)     # T.Shuffle takes no more lanes than it is given
        return f"T.Shuffle([{', '.join([load] * copies)}], [{', '.join(map(str, self.lanes))}])"


class _Names(dict):
    """eval's namespace for index text: ``T`` is :class:`_SympyT`, every other name an integer symbol."""

    def __init__(self) -> None:
        super().__init__(T=_SympyT())

    def __missing__(self, name: str) -> Any:
        import sympy

        self[name] = sympy.Symbol(name, integer=True)
        return self[name]


class _SympyT:
    """The TIR functions an index uses, on sympy integers; anything else is not an index this module reads."""

    @staticmethod
    def floordiv(a: Any, b: Any) -> Any:
        import sympy

        return sympy.floor(sympy.sympify(a) / sympy.sympify(b))

    @classmethod
    def floormod(cls, a: Any, b: Any) -> Any:
        return a - b * cls.floordiv(a, b)

    @staticmethod
    def Cast(dtype: str, value: Any) -> Any:  # noqa: N802 - TIR's name
        if not re.fullmatch(r"u?int(8|16|32|64)", dtype):
            raise ValueError(dtype)
        return value

    @staticmethod
    def int32(value: int) -> Any:
        import sympy

        return sympy.Integer(value)

    int64 = int32

    def __getattr__(self, name: str) -> Any:
        raise ValueError(f"T.{name} in an index")


def _mentions(text: str, name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\b", text) is not None


def repeated_read(index: Sequence[str], lane: str, width: int) -> RepeatedRead | None:
    """The read ``buf[index]`` (TIR texts in the vectorized loop variable ``lane`` of ``width`` lanes) as a
    :class:`RepeatedRead` when it is one (a span of 2 to ``width`` elements, not lane by lane), else None."""
    *outer, last = index
    if any(_mentions(t, lane) for t in outer) or not _mentions(last, lane) or "floordiv" not in last:
        return None
    import sympy

    try:
        expr = sympy.sympify(eval(last, {"__builtins__": {}}, _Names()))  # our own generated text
    except Exception:  # noqa: BLE001 - any construct the translation does not know: not this pattern
        return None
    at = sympy.Symbol(lane, integer=True)
    first = expr.subs(at, 0)
    lanes = []
    for i in range(width):
        step = sympy.simplify(expr.subs(at, i) - first)
        if not step.is_Integer:
            return None
        lanes.append(int(step))
    count = max(lanes) + 1
    if min(lanes) != 0 or lanes[0] != 0 or not 1 < count <= width or lanes == list(range(width)):
        return None
    base = tuple(re.sub(rf"\b{re.escape(lane)}\b", "0", t) for t in index)
    return RepeatedRead(base, count, tuple(lanes))
