"""Box geometry (hrnet_jax/detection/boxes.py) against torchvision."""

from __future__ import annotations

import numpy as np
import pytest

from hrnet_jax.detection import boxes as boxes_lib

from detection_references import random_boxes

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pytestmark = pytest.mark.parity


def test_iou_matrix_equals_torchvision():
    a, b = random_boxes(3)[0], random_boxes(4)[0]
    a, b = a[(a[:, 2] > a[:, 0])], b[(b[:, 2] > b[:, 0])]
    expected = torchvision.ops.box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(np.asarray(boxes_lib.iou_matrix(a, b)), expected, atol=1e-6)
