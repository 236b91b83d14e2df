"""FCOS's point priors and their assignment to ground truth (Tian et al. 2019), in static
shapes: every location of every pyramid level is matched against the image's ground-truth
boxes, padded to a fixed count with a mask:
- a location is a candidate for a box when it lies inside the box and, with centre sampling,
  within `radius` strides of the box centre (the region clipped to the box);
- the level must be responsible for the box: its largest regression distance falls in the
  level's size range;
- among candidates the box of smallest area wins; locations without one are background.
Regression targets are the distances (left, top, right, bottom) to the box sides; centerness is
sqrt(min(l, r) / max(l, r) x min(t, b) / max(t, b))."""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

STRIDES = (8, 16, 32, 64, 128)
SIZE_RANGES = ((-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, float("inf")))
CENTRE_RADIUS = 1.5


def level_locations(shapes: Sequence[tuple[int, int]], strides: Sequence[int] = STRIDES
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Locations (L, 2) as (x, y) input-pixel centres of every level's cells (levels of
    `shapes` (h, w), in order), each location's level stride (L,) and level index (L,)."""
    points, strides_out, levels = [], [], []
    for level, ((h, w), stride) in enumerate(zip(shapes, strides)):
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()], -1) * stride + stride // 2)
        strides_out.append(np.full(h * w, stride))
        levels.append(np.full(h * w, level))
    return (np.concatenate(points).astype(np.float32), np.concatenate(strides_out).astype(np.float32),
            np.concatenate(levels))


def assign_targets(locations: jnp.ndarray, strides: jnp.ndarray, levels: jnp.ndarray,
                   boxes: jnp.ndarray, labels: jnp.ndarray, box_mask: jnp.ndarray,
                   size_ranges: Sequence[tuple[float, float]] = SIZE_RANGES,
                   radius: float | None = CENTRE_RADIUS) -> dict[str, jnp.ndarray]:
    """One image's targets. boxes (M, 4) as x0, y0, x1, y1, labels (M,) in 0..C-1, box_mask
    (M,) 1 for real boxes. Returns class (L,) with -1 for background, regression (L, 4),
    centerness (L,) and the matched box index (L,)."""
    x, y = locations[:, 0:1], locations[:, 1:2]
    x0, y0, x1, y1 = (boxes[None, :, k] for k in range(4))
    distances = jnp.stack([x - x0, y - y0, x1 - x, y1 - y], -1)  # (L, M, 4)
    inside = distances.min(-1) > 0
    if radius is not None:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        reach = strides[:, None] * radius
        region = jnp.stack([x - jnp.maximum(cx - reach, x0), y - jnp.maximum(cy - reach, y0),
                            jnp.minimum(cx + reach, x1) - x, jnp.minimum(cy + reach, y1) - y], -1)
        inside = region.min(-1) > 0
    ranges = jnp.asarray(size_ranges, jnp.float32)[levels]  # (L, 2)
    largest = distances.max(-1)
    responsible = (largest >= ranges[:, 0:1]) & (largest <= ranges[:, 1:2])
    candidate = inside & responsible & (box_mask[None, :] > 0)
    areas = (x1 - x0) * (y1 - y0)
    areas = jnp.where(candidate, jnp.broadcast_to(areas, candidate.shape), jnp.inf)
    matched = jnp.argmin(areas, -1)
    positive = jnp.isfinite(jnp.min(areas, -1))
    regression = jnp.take_along_axis(distances, matched[:, None, None], 1)[:, 0]
    return {"class": jnp.where(positive, jnp.asarray(labels)[matched], -1), "regression": regression,
            "centerness": jnp.where(positive, centerness(regression), 0.0), "matched": matched}


def centerness(regression: jnp.ndarray) -> jnp.ndarray:
    left, top, right, bottom = (regression[..., k] for k in range(4))
    ratio = (jnp.minimum(left, right) / jnp.maximum(left, right)
             * jnp.minimum(top, bottom) / jnp.maximum(top, bottom))
    return jnp.sqrt(jnp.clip(ratio, 0.0, 1.0))


def level_shapes(outputs: dict[str, list[jnp.ndarray]]) -> list[tuple[int, int]]:
    """The (height, width) of each level of FCOS's head outputs."""
    return [tuple(x.shape[1:3]) for x in outputs["class_logits"]]
