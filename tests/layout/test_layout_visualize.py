"""Text and PNG pictures of layouts."""
from __future__ import annotations

import numpy as np

from lowbit.layout import local, reduce, spatial


def grid_lines(layout):
    return layout.visualize().splitlines()[1:]


def test_rank2_grid_and_header():
    text = local(2, 1).spatial(2, 2).visualize()
    assert text.splitlines()[0] == "RegisterLayout[4, 2]: 4 worker(s) x 2 local(s)"
    assert grid_lines(local(2, 1).spatial(2, 2)) == ["0:0 1:0", "2:0 3:0", "0:1 1:1", "2:1 3:1"]


def test_rank1_is_one_row_and_columns_align():
    assert grid_lines(spatial(4).local(3)) == ["0:0 0:1 0:2 1:0 1:1 1:2 2:0 2:1 2:2 3:0 3:1 3:2"]
    lines = grid_lines(spatial(3, 4))
    assert lines == [" 0:0  1:0  2:0  3:0", " 4:0  5:0  6:0  7:0", " 8:0  9:0 10:0 11:0"]


def test_replicas_are_listed():
    assert grid_lines(reduce(spatial(3, 2), [0])) == ["{0,2,4}:0 {1,3,5}:0"]
    compact = grid_lines(reduce(spatial(8, 2), [0]))
    assert compact == ["{0,2,..,14}:0 {1,3,..,15}:0"]
    assert "held by 8 workers" in reduce(spatial(8, 2), [0]).visualize()


def test_rank0_and_rank3():
    assert grid_lines(reduce(spatial(2), [0])) == ["{0,1}:0"]
    lines = grid_lines(spatial(2, 1, 2).local(1, 2, 1))
    assert lines == ["[0, :, :]", "0:0 1:0", "0:1 1:1", "[1, :, :]", "2:0 3:0", "2:1 3:1"]


def test_save_png(tmp_path):
    import matplotlib.image

    layout = spatial(2, 4).local(2, 1)
    path = tmp_path / "layout.png"
    layout.save_png(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(str(path))
    colours = {tuple(np.round(px[:3], 2)) for px in image.reshape(-1, image.shape[-1])}
    assert len(colours) >= layout.spatial_size          # one fill colour per worker, plus text and axes
    path3 = tmp_path / "rank3.png"
    reduce(spatial(2, 2, 2).local(1, 1, 2), [0], keepdims=True).save_png(str(path3))
    assert path3.stat().st_size > 1000
