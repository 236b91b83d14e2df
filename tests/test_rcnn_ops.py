"""The two-stage detectors' primitives against torchvision: RoIAlign over a pyramid, box IoU,
batched NMS, the box-delta coder; mmdet's anchors by known answers."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from hrnet_jax.models import roi_align
from hrnet_jax.tasks import boxes as boxes_lib

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.parity

STRIDES = (4, 8, 16, 32)


def pyramid(seed=0, n=2, size=(96, 128), channels=6):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, size[0] // s, size[1] // s, channels)).astype(np.float32)
            for s in STRIDES]


def random_boxes(seed=1, n=2, r=40, size=(96, 128)):
    """Boxes of every scale (all four levels), some elongated, some crossing the border, one of
    zero width (an inverted box makes torchvision's adaptive grid negative: it fails)."""
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.uniform(np.log(4), np.log(700), (n, r, 1)))
    aspect = np.exp(rng.uniform(-1.5, 1.5, (n, r, 1)))
    side = np.concatenate([scale * np.sqrt(aspect), scale / np.sqrt(aspect)], -1)
    centre = rng.uniform(-10, [size[1] + 10, size[0] + 10], (n, r, 2))
    boxes = np.concatenate([centre - side / 2, centre + side / 2], -1)
    boxes[:, 0, 2] = boxes[:, 0, 0]            # zero width
    return boxes.astype(np.float32)


def torchvision_pooled(features, boxes, levels, output_size, sampling_ratio):
    """Each box pooled by torchvision at its level's map and scale, as (N, R, P, P, C)."""
    n, r = boxes.shape[:2]
    out = np.zeros((n, r, output_size, output_size, features[0].shape[-1]), np.float32)
    for i in range(n):
        for j in range(r):
            level = int(levels[i, j])
            feature = torch.from_numpy(features[level][i:i + 1]).permute(0, 3, 1, 2)
            box = torch.from_numpy(np.concatenate([[0.0], boxes[i, j]])[None].astype(np.float32))
            pooled = torchvision.ops.roi_align(feature, box, output_size, 1.0 / STRIDES[level],
                                               sampling_ratio, aligned=True)
            out[i, j] = pooled[0].permute(1, 2, 0).numpy()
    return out


@pytest.mark.parametrize("sampling_ratio,output_size", [(2, 7), (0, 7), (0, 14)])
def test_roi_align_equals_torchvision_at_every_level(sampling_ratio, output_size):
    features, boxes = pyramid(), random_boxes()
    levels = np.asarray(roi_align.map_levels(boxes, len(STRIDES)))
    assert set(levels.ravel()) == {0, 1, 2, 3}  # every level is exercised
    # max_samples covers the largest adaptive grid of these boxes (10 a side): exact.
    ours = jax.jit(lambda f, b: roi_align.roi_align(f, STRIDES, b, output_size, sampling_ratio,
                                                    max_samples=10))(features, boxes)
    expected = torchvision_pooled(features, boxes, levels, output_size, sampling_ratio)
    assert np.abs(np.asarray(ours) - expected).max() <= 1e-4


def test_adaptive_sampling_beyond_its_cap_takes_the_cap_per_side():
    """A RoI wider than output_size x max_samples feature pixels is sampled max_samples times a
    side: torchvision's result with sampling_ratio = max_samples."""
    features = pyramid(size=(128, 256))
    boxes = np.array([[[4.0, 8.0, 250.0, 120.0]]], np.float32).repeat(2, 0)  # 61 px at stride 4
    levels = np.zeros((2, 1), np.int32)
    ours = roi_align.roi_align(features, STRIDES, boxes, 7, 0, max_samples=4, levels=levels)
    expected = torchvision_pooled(features, boxes, levels, 7, 4)
    assert np.abs(np.asarray(ours) - expected).max() <= 1e-4
    wider = torchvision_pooled(features, boxes, levels, 7, 0)
    assert np.abs(wider - expected).max() > 1e-3  # the cap does change such a RoI


def test_level_mapping_is_mmdets():
    """floor(log2(sqrt(area) / 56 + 1e-6)) clamped to 0..3: 112 and 224 start levels 1 and 2."""
    sides = np.array([10, 111.9, 112, 223.9, 224, 447.9, 448, 2000], np.float32)
    boxes = np.stack([np.zeros_like(sides), np.zeros_like(sides), sides, sides], -1)
    assert roi_align.map_levels(boxes, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_iou_matrix_equals_torchvision():
    a, b = random_boxes(3)[0], random_boxes(4)[0]
    a, b = a[(a[:, 2] > a[:, 0])], b[(b[:, 2] > b[:, 0])]
    expected = torchvision.ops.box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(np.asarray(boxes_lib.iou_matrix(a, b)), expected, atol=1e-6)


def test_class_wise_nms_keeps_what_torchvisions_batched_nms_keeps_in_its_order():
    rng = np.random.default_rng(5)
    corners = rng.uniform(0, 60, (400, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(4, 40, (400, 2))], 1).astype(np.float32)
    scores = rng.uniform(0.01, 1, 400).astype(np.float32)
    classes = rng.integers(0, 4, 400)
    for threshold in (0.5, 0.7):
        kept = torchvision.ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                                           torch.from_numpy(classes), threshold).numpy()
        assert 50 < len(kept) < 400
        out = jax.jit(boxes_lib.class_wise_nms, static_argnums=(3, 4))(
            boxes, scores, classes, threshold, 400)
        assert int(np.asarray(out["valid"]).sum()) == len(kept)
        np.testing.assert_array_equal(np.asarray(out["boxes"])[:len(kept)], boxes[kept])
        np.testing.assert_array_equal(np.asarray(out["classes"])[:len(kept)], classes[kept])


@pytest.mark.parametrize("stds", [(1.0, 1.0, 1.0, 1.0), (0.1, 0.1, 0.2, 0.2)])
def test_delta_coder_equals_torchvisions_and_round_trips(stds):
    """torchvision's BoxCoder with weights 1 / stds is mmdet's DeltaXYWHBBoxCoder (means 0)."""
    from torchvision.models.detection._utils import BoxCoder

    rng = np.random.default_rng(6)
    anchors = random_boxes(7)[0]
    anchors = anchors[(anchors[:, 2] > anchors[:, 0]) & (anchors[:, 3] > anchors[:, 1])]
    targets = anchors + rng.normal(0, 8, anchors.shape).astype(np.float32)
    targets[:, 2:] = np.maximum(targets[:, 2:], targets[:, :2] + 1)
    coder = BoxCoder(weights=tuple(1.0 / s for s in stds))
    deltas = np.asarray(boxes_lib.encode_deltas(anchors, targets, stds))
    expected = coder.encode_single(torch.from_numpy(targets), torch.from_numpy(anchors)).numpy()
    np.testing.assert_allclose(deltas, expected, rtol=1e-4, atol=1e-4)
    decoded = np.asarray(boxes_lib.decode_deltas(anchors, deltas, stds))
    np.testing.assert_allclose(decoded, targets, rtol=1e-5, atol=1e-3)  # round trip
    # Beyond the size clamp: mmdet clamps log ratios on both sides, torchvision above only.
    limit = abs(np.log(16 / 1000))
    wild = rng.normal(0, 3, deltas.shape).astype(np.float32)
    wild[:, 2:] = np.maximum(wild[:, 2:], -limit / np.asarray(stds[2:])).astype(np.float32)
    shrunk = np.asarray(boxes_lib.decode_deltas(anchors[:1], np.array([[0, 0, -99, -99]],
                                                                      np.float32), stds))
    np.testing.assert_allclose(shrunk[0, 2:] - shrunk[0, :2],
                               (anchors[0, 2:] - anchors[0, :2]) * 16 / 1000, rtol=1e-4)
    expected = coder.decode_single(torch.from_numpy(wild), torch.from_numpy(anchors)).numpy()
    np.testing.assert_allclose(np.asarray(boxes_lib.decode_deltas(anchors, wild, stds)),
                               expected, rtol=1e-5, atol=1e-2)
    clipped = np.asarray(boxes_lib.decode_deltas(anchors, wild, stds, image_shape=(50, 70)))
    assert clipped.min() >= 0 and clipped[:, [0, 2]].max() <= 70 and clipped[:, [1, 3]].max() <= 50


def test_anchors_are_mmdets():
    """Scale 8, ratios 0.5 / 1 / 2 (height / width) on stride 4: 32x32 area, centred on the
    cell corner; cells row-major, the 3 anchors of a cell together."""
    base = boxes_lib.base_anchors(4)
    side = 32 / np.sqrt(2)
    np.testing.assert_allclose(base, [[-side, -side / 2, side, side / 2], [-16, -16, 16, 16],
                                      [-side / 2, -side, side / 2, side]], rtol=1e-6)
    grid = boxes_lib.grid_anchors((2, 3), 4)
    assert grid.shape == (18, 4)
    np.testing.assert_allclose(grid[3 * 1 + 1], [4 - 16, -16, 4 + 16, 16])  # row 0, column 1
    np.testing.assert_allclose(grid[3 * 3 + 1], [-16, 4 - 16, 16, 4 + 16])  # row 1, column 0
