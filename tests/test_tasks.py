"""What the tasks share (hrnet_jax/tasks/__init__.py): every task's pictures are captioned
panels in one order, large enough to read."""

from __future__ import annotations

import numpy as np

from hrnet_jax.tasks import CAPTION_HEIGHT, PANEL_HEIGHT, SEPARATOR, panels


def test_panels_are_captioned_enlarged_and_in_the_order_given():
    small = np.zeros((64, 32, 3), np.uint8)
    small[:, :16] = (255, 0, 0)
    tiny = np.full((16, 16, 3), (0, 0, 255), np.uint8)
    picture = panels([("input", small), ("ground truth", tiny)])
    assert picture.shape == (CAPTION_HEIGHT + PANEL_HEIGHT, 128 + SEPARATOR + 256, 3)
    body = picture[CAPTION_HEIGHT:]
    assert (body[:, :64] == (255, 0, 0)).all() and (body[:, 64:128] == 0).all()  # nearest x4
    assert (body[:, 128 + SEPARATOR:] == (0, 0, 255)).all()
    assert (picture[:CAPTION_HEIGHT, :128] > 200).all(-1).sum() > 30  # white caption text
    assert (picture[:, 128:128 + SEPARATOR] == 128).all()
    large = np.zeros((300, 400, 3), np.uint8)
    assert panels([("input", large), ("prediction", large)]).shape == (322, 804, 3)
