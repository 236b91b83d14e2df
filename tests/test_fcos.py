"""FCOS: static-shape target assignment against a plain numpy loop, known answers of the
focal, GIoU and centerness terms, and decoding + class-wise NMS against a plain greedy NMS."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hrnet_jax.detection import points
from hrnet_jax.tasks import fcos

BOXES = np.array([[10, 12, 34, 30],      # small: level 0
                  [40, 20, 140, 120],    # medium, overlaps the large one
                  [0, 0, 160, 128],      # the whole image
                  [60, 60, 70, 70],      # tiny, inside the medium one
                  [0, 0, 0, 0]], np.float32)  # padding
LABELS = np.array([3, 1, 0, 2, 0])
MASK = np.array([1, 1, 1, 1, 0], np.float32)


def ceil_shapes(height, width, strides=points.STRIDES):
    return [(-(-height // s), -(-width // s)) for s in strides]


def oracle(locations, strides, levels, boxes, labels, mask, radius):
    """The FCOS rule, one location and one box at a time."""
    classes, regression = [], []
    for (x, y), stride, level in zip(locations, strides, levels):
        best, best_area = None, np.inf
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            if not mask[k]:
                continue
            l, t, r, b = x - x0, y - y0, x1 - x, y1 - y
            if radius is None:
                inside = min(l, t, r, b) > 0
            else:
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                rx0, ry0 = max(cx - radius * stride, x0), max(cy - radius * stride, y0)
                rx1, ry1 = min(cx + radius * stride, x1), min(cy + radius * stride, y1)
                inside = min(x - rx0, y - ry0, rx1 - x, ry1 - y) > 0
            low, high = points.SIZE_RANGES[level]
            area = (x1 - x0) * (y1 - y0)
            if inside and low <= max(l, t, r, b) <= high and area < best_area:
                best, best_area = k, area
        classes.append(-1 if best is None else labels[best])
        regression.append(None if best is None else
                          [x - boxes[best, 0], y - boxes[best, 1], boxes[best, 2] - x, boxes[best, 3] - y])
    return np.array(classes), regression


@pytest.mark.parametrize("radius", [None, 1.5])
def test_assignment_matches_a_plain_loop(radius):
    locations, strides, levels = points.level_locations(ceil_shapes(128, 160))
    assert len(locations) == 16 * 20 + 8 * 10 + 4 * 5 + 2 * 3 + 1 * 2
    targets = jax.jit(points.assign_targets, static_argnames=("radius",))(
        locations, strides, levels, BOXES, LABELS, MASK, radius=radius)
    classes, regression = oracle(locations, strides, levels, BOXES, LABELS, MASK, radius)
    np.testing.assert_array_equal(np.asarray(targets["class"]), classes)
    positive = classes >= 0
    assert positive.sum() > 10 and set(classes[positive]) == {0, 1, 2, 3}
    np.testing.assert_allclose(np.asarray(targets["regression"])[positive],
                               np.array([r for r in regression if r is not None]), rtol=1e-6)
    l, t, r, b = np.asarray(targets["regression"])[positive].T
    expected = np.sqrt(np.minimum(l, r) / np.maximum(l, r) * np.minimum(t, b) / np.maximum(t, b))
    np.testing.assert_allclose(np.asarray(targets["centerness"])[positive], expected, rtol=1e-5)
    assert np.all(np.asarray(targets["centerness"])[~positive] == 0)


def test_focal_and_giou_known_answers():
    logits = jnp.zeros((2, 3))
    loss = fcos.sigmoid_focal_loss(logits, jnp.array([1, -1]))
    log2 = np.log(2.0)
    # p = 0.5 everywhere: the positive entry 0.25 x 0.5^2 x log 2, the five negatives 0.75 x ...
    assert float(loss) == pytest.approx(0.25 * 0.25 * log2 + 5 * 0.75 * 0.25 * log2, rel=1e-6)
    same = fcos.giou_loss(jnp.array([[1.0, 2, 3, 4]]), jnp.array([[1.0, 2, 3, 4]]))
    assert float(same[0]) == pytest.approx(0.0, abs=1e-6)
    # a 2x2 box inside a 4x4 one around the same point: IoU 1/4, enclosing = union
    nested = fcos.giou_loss(jnp.array([[1.0, 1, 1, 1]]), jnp.array([[2.0, 2, 2, 2]]))
    assert float(nested[0]) == pytest.approx(0.75, rel=1e-6)
    # [x, x+1] and [x-1, x] (both 2 high) touch at the point: IoU 0, enclosing = union = 4
    apart = fcos.giou_loss(jnp.array([[0.0, 1, 1, 1]]), jnp.array([[1.0, 1, 0, 1]]))
    assert float(apart[0]) == pytest.approx(1.0, rel=1e-6)


def test_positives_are_counted_over_every_device():
    """Per-device losses divided by the global positive count add up to the loss of the whole
    batch on one device."""
    rng = np.random.default_rng(0)
    locations, strides, levels = points.level_locations(ceil_shapes(64, 64))
    targets = jax.vmap(lambda b: points.assign_targets(locations, strides, levels, b, LABELS, MASK))(
        jnp.asarray(np.stack([BOXES * 0.4, BOXES * 0.3, BOXES * 0.5, BOXES * 0.2])))
    n, length = targets["class"].shape
    outputs = (jnp.asarray(rng.normal(size=(n, length, 4)), jnp.float32),
               jnp.asarray(rng.uniform(1, 20, (n, length, 4)), jnp.float32),
               jnp.asarray(rng.normal(size=(n, length)), jnp.float32))
    whole, _ = fcos.fcos_loss(*outputs, targets)
    split = lambda x: x.reshape(2, n // 2, *x.shape[1:])
    per_device = jax.vmap(lambda c, r, z, t: fcos.fcos_loss(c, r, z, t, axis_name="data")[0],
                          axis_name="data")(*map(split, outputs), jax.tree.map(split, targets))
    assert float(per_device.sum()) == pytest.approx(float(whole), rel=1e-5)
    assert np.isfinite(float(fcos.fcos_loss(*outputs, {**targets, "class": -jnp.ones_like(targets["class"])})[0]))


def test_head_shares_its_weights_over_levels_and_starts_at_the_prior():
    from hrnet_jax.models.fcos_head import FCOSHead

    head = FCOSHead(num_classes=80, channels=64)
    levels = [jnp.ones((2, 64 // s, 96 // s, 64)) for s in (8, 16, 32, 64, 128)][:4] + \
        [jnp.ones((2, 1, 1, 64))]
    variables = head.init(jax.random.key(0), levels)
    count = sum(x.size for x in jax.tree.leaves(variables))
    conv = lambda cin, cout: 9 * cin * cout + cout
    tower = 4 * (conv(64, 64) + 2 * 64)  # convs and GroupNorm scale + bias
    assert count == 2 * tower + conv(64, 80) + conv(64, 4) + conv(64, 1) + 5  # + 5 level scales
    out = jax.jit(head.apply)(variables, levels)
    assert [o.shape for o in out["class_logits"]][0] == (2, 8, 12, 80)
    assert out["boxes"][4].shape == (2, 1, 1, 4) and out["centerness"][1].shape == (2, 4, 6)
    probabilities = jax.nn.sigmoid(out["class_logits"][0])
    assert abs(float(probabilities.mean()) - 0.01) < 1e-3  # the focal-loss prior
    assert float(probabilities.max()) < 0.05
    assert float(out["boxes"][2].min()) > 0


