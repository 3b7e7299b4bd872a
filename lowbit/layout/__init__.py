"""lowbit.layout: register, shared and global layouts, their algebra, symbolic maps and pictures.

Register layouts follow NVIDIA Tilus semantics: a layout relates ``(worker, local slot)`` pairs to the
logical indices of a tile. See ``docs/layouts.md`` for the algebra with worked examples.

>>> from lowbit.layout import local, spatial
>>> c = local(2, 1).spatial(8, 4).local(1, 2)        # mma.m16n8k16 accumulator fragment
>>> c.shape, c.spatial_size, c.local_size
((16, 8), 32, 4)
>>> print(spatial(2, 2).local(2, 1).visualize())
RegisterLayout[4, 2]: 4 worker(s) x 2 local(s)
0:0 1:0
0:1 1:1
2:0 3:0
2:1 3:1
"""
from __future__ import annotations

from .algebra import divide, left_divide, product
from .constructors import auto_local_spatial, column_local, column_spatial, local, spatial
from .global_layout import GlobalLayout, global_column_major, global_row_major, global_strided
from .register import RegisterLayout, register_layout
from .shared import (SharedLayout, Swizzle, shared_column_major, shared_layout, shared_row_major, shared_strided,
                     swizzled_row_major)
from .transforms import concat, flatten, permute, reduce, reshape, squeeze, unsqueeze

__all__ = [
    # register layouts
    "RegisterLayout", "register_layout", "local", "spatial", "column_local", "column_spatial",
    "auto_local_spatial", "product", "divide", "left_divide", "reduce", "concat", "permute", "reshape",
    "flatten", "squeeze", "unsqueeze",
    # shared layouts
    "SharedLayout", "Swizzle", "shared_layout", "shared_row_major", "shared_column_major", "shared_strided",
    "swizzled_row_major",
    # global layouts
    "GlobalLayout", "global_row_major", "global_column_major", "global_strided",
]
