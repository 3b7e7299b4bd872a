"""Pictures of layouts: text grids and PNG images (matplotlib, imported only when drawing).

A register layout's cell shows ``worker:local``; an element held by several workers (replication) shows
``{w0,w1,...}:local`` (``{w0,w1,..,wn}`` when there are more than four replicas in arithmetic progression).
Rank 1 is a single row; rank > 2 is printed as 2-D slices over the last two dimensions.

>>> from lowbit.layout import spatial, reduce
>>> print(register_text(spatial(2, 2)))
RegisterLayout[2, 2]: 4 worker(s) x 1 local(s)
0:0 1:0
2:0 3:0
>>> print(register_text(reduce(spatial(2, 3), [0])))
RegisterLayout[3]: 6 worker(s) x 1 local(s), each element held by 2 workers
{0,3}:0 {1,4}:0 {2,5}:0
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ._common import LayoutError

if TYPE_CHECKING:  # pragma: no cover
    from .register import RegisterLayout
    from .shared import SharedLayout


def _workers_text(workers: Sequence[int]) -> str:
    workers = [int(w) for w in workers]
    if len(workers) == 1:
        return str(workers[0])
    steps = {b - a for a, b in zip(workers, workers[1:])}
    if len(workers) > 4 and len(steps) == 1:
        return f"{{{workers[0]},{workers[1]},..,{workers[-1]}}}"
    return "{" + ",".join(str(w) for w in workers) + "}"


def grid_text(cells: np.ndarray) -> str:
    """Lay out an array of strings (any rank) as aligned text: rows x columns, 2-D slices for rank > 2."""
    if cells.ndim == 0:
        return str(cells[()])
    if cells.ndim == 1:
        cells = cells[None, :]
    width = max(len(str(c)) for c in cells.flat)
    blocks = []
    lead_shape = cells.shape[:-2]
    for lead in itertools.product(*[range(n) for n in lead_shape]):
        plane = cells[lead] if lead else cells
        lines = [" ".join(str(c).rjust(width) for c in row) for row in plane]
        if lead:
            blocks.append("[" + ", ".join(str(i) for i in lead) + ", :, :]\n" + "\n".join(lines))
        else:
            blocks.append("\n".join(lines))
    return "\n".join(blocks)


def register_cells(layout: "RegisterLayout") -> np.ndarray:
    """An object array of ``shape`` whose cells are the ``worker:local`` labels."""
    local = layout.local_table()
    workers = layout.worker_table()
    cells = np.empty(layout.shape, dtype=object)
    for index in np.ndindex(*layout.shape):
        cells[index] = f"{_workers_text(workers[index])}:{int(local[index])}"
    return cells


def register_text(layout: "RegisterLayout") -> str:
    """A header line (:meth:`RegisterLayout.describe`) and the ``worker:local`` grid."""
    return layout.describe() + "\n" + grid_text(register_cells(layout))


def shared_text(layout: "SharedLayout") -> str:
    """A header line and the grid of memory offsets."""
    return repr(layout) + "\n" + grid_text(layout.offset_table().astype(object))


def _planes(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(number of 2-D slices, rows, columns) used to draw an array of ``shape``."""
    if len(shape) == 0:
        return 1, 1, 1
    if len(shape) == 1:
        return 1, 1, shape[0]
    return int(np.prod(shape[:-2], dtype=np.int64)), shape[-2], shape[-1]


def register_png(layout: "RegisterLayout", path: str) -> None:
    """Draw ``layout`` to ``path`` (PNG): one colour per (first) owner worker, ``worker:local`` labels."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib import colormaps
    except ImportError as err:  # pragma: no cover - matplotlib is a declared dependency
        raise LayoutError("save_png needs matplotlib", hint="pip install matplotlib") from err
    n_planes, rows, cols = _planes(layout.shape)
    labels = register_cells(layout).reshape(n_planes, rows, cols)
    first = layout.worker_table()[..., 0].reshape(n_planes, rows, cols)
    cmap = colormaps["tab20"]
    cell = 0.22 + 0.07 * max(len(str(s)) for s in labels.flat)
    title = layout.describe()
    fig = Figure(figsize=(max(2.0, cols * cell, 0.075 * len(title)), max(1.5, n_planes * (rows * 0.4 + 0.3) + 0.4)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    for p in range(n_planes):
        ax = fig.add_subplot(n_planes, 1, p + 1)
        colours = cmap(first[p] % 20)  # integer lookup into the 20-colour table
        ax.imshow(colours, aspect="auto", interpolation="nearest")
        for i in range(rows):
            for j in range(cols):
                ax.text(j, i, labels[p, i, j], ha="center", va="center", fontsize=7)
        ax.set_xticks(range(cols))
        ax.set_yticks(range(rows))
        ax.tick_params(labelsize=6)
        if n_planes > 1:
            lead = np.unravel_index(p, layout.shape[:-2])
            ax.set_title("[" + ", ".join(str(int(i)) for i in lead) + ", :, :]", fontsize=8)
    fig.suptitle(title, fontsize=8)
    fig.savefig(path, format="png", dpi=110)


__all__ = ["grid_text", "register_cells", "register_text", "shared_text", "register_png"]
