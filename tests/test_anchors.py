"""mmdet's anchors (hrnet_jax/detection/anchors.py) by known answers."""

from __future__ import annotations

import numpy as np

from hrnet_jax.detection import anchors as anchors_lib


def test_anchors_are_mmdets():
    """Scale 8, ratios 0.5 / 1 / 2 (height / width) on stride 4: 32x32 area, centred on the
    cell corner; cells row-major, the 3 anchors of a cell together."""
    base = anchors_lib.base_anchors(4)
    side = 32 / np.sqrt(2)
    np.testing.assert_allclose(base, [[-side, -side / 2, side, side / 2], [-16, -16, 16, 16],
                                      [-side / 2, -side, side / 2, side]], rtol=1e-6)
    grid = anchors_lib.grid_anchors((2, 3), 4)
    assert grid.shape == (18, 4)
    np.testing.assert_allclose(grid[3 * 1 + 1], [4 - 16, -16, 4 + 16, 16])  # row 0, column 1
    np.testing.assert_allclose(grid[3 * 3 + 1], [-16, 4 - 16, 16, 4 + 16])  # row 1, column 0
