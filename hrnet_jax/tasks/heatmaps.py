"""Keypoint heatmaps, shared by every heatmap task (pose, landmarks, the synthetic demo).

The reference recipe (HRNet pose): an unnormalised Gaussian centred at int(x / stride + 0.5)
inside a 3-sigma window; a joint that is unlabelled or whose window misses the heatmap gets
weight 0; the loss is 0.5 * MSE of (prediction * weight, target * weight), averaged over joints.

Decoding follows the reference exactly (its published AP depends on it): the argmax, zeroed where
the heatmap's maximum is not positive, moved a quarter pixel toward the higher neighbour when the
rounded argmax lies in 1 < x < w - 1 (and likewise y). DARK (Zhang et al. 2020,
distribution-aware coordinates) instead blurs the heatmap, takes its log and refines the argmax by
one Newton step of the second-order Taylor expansion. The flip test maps the heatmaps of a
mirrored input back (mirrored columns, swapped left/right joints, shifted one pixel).
"""

from __future__ import annotations

from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.data.keypoint_sets import KeypointSet

STRIDE = 4  # heatmaps at 1/4 of the input


def gaussian_heatmaps(joints: jax.Array, visible: jax.Array, heatmap_size: tuple[int, int],
                      sigma: float, stride: int = STRIDE) -> tuple[jax.Array, jax.Array]:
    """A batch's targets where the loss is computed: joints (B, K, 2) in input pixels (x, y)
    -> heatmaps (B, h, w, K) float32 and weights (B, K). On the device, next to the step,
    they cost nothing; built on the host they were a fifth of a COCO person's preparation and
    more than half of its batch's bytes (17 64x48 maps against 34 numbers). Each Gaussian's
    values are read from one float64-computed window, so they are the reference's exactly."""
    h, w = heatmap_size
    radius = sigma * 3
    reach = int(radius)
    offsets = np.arange(-reach, reach + 1)
    window = np.exp(-(offsets[None, :] ** 2 + offsets[:, None] ** 2) / (2 * sigma ** 2))
    centres = (joints / stride + 0.5).astype(jnp.int32)  # (B, K, 2), as int(x / stride + 0.5)
    lower = (centres - radius).astype(jnp.int32)  # truncated toward zero, as the reference
    upper = (centres + radius + 1).astype(jnp.int32)
    inside = ((lower[..., 0] < w) & (lower[..., 1] < h) & (upper[..., 0] >= 0)
              & (upper[..., 1] >= 0))
    weights = (visible > 0) & inside
    dx = jnp.arange(w)[None, None, :, None] - centres[:, None, None, :, 0]  # (B, 1, w, K)
    dy = jnp.arange(h)[None, :, None, None] - centres[:, None, None, :, 1]  # (B, h, 1, K)
    near = (jnp.abs(dx) <= reach) & (jnp.abs(dy) <= reach) & weights[:, None, None, :]
    values = jnp.asarray(window, jnp.float32)[jnp.clip(dy + reach, 0, 2 * reach),
                                              jnp.clip(dx + reach, 0, 2 * reach)]
    return jnp.where(near, values, 0.0), weights.astype(jnp.float32)


def heatmap_mse(heatmaps: jnp.ndarray, targets: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
    """0.5 * mean over joints of MSE(pred * w, target * w): the reference JointsMSELoss."""
    w = weights[:, None, None, :]
    return 0.5 * jnp.mean((heatmaps.astype(jnp.float32) * w - targets * w) ** 2)


def _array_module(heatmaps: Any):
    """numpy for host arrays, jax.numpy inside jitted code (the synthetic demo's eval step)."""
    return jnp if isinstance(heatmaps, jax.Array) else np


def argmax_coordinates(heatmaps: Any) -> tuple[Any, Any]:
    """(N, h, w, K) -> integer argmax (N, K, 2) as (x, y), zeroed where max <= 0, and max (N, K)."""
    xp = _array_module(heatmaps)
    n, h, w, k = heatmaps.shape
    flat = xp.moveaxis(heatmaps, 3, 1).reshape(n, k, h * w)
    index = flat.argmax(-1)
    scores = flat.max(-1)
    coords = xp.stack([index % w, index // w], -1).astype(xp.float32)
    return coords * (scores > 0)[..., None], scores


def decode_quarter_offset(heatmaps: Any) -> tuple[Any, Any]:
    """The reference decoder: coordinates (N, K, 2) in heatmap pixels and scores (N, K)."""
    xp = _array_module(heatmaps)
    heatmaps = heatmaps.astype(xp.float32)
    coords, scores = argmax_coordinates(heatmaps)
    n, h, w, k = heatmaps.shape
    x = xp.floor(coords[..., 0] + 0.5).astype(xp.int32)
    y = xp.floor(coords[..., 1] + 0.5).astype(xp.int32)
    inside = (x > 1) & (x < w - 1) & (y > 1) & (y < h - 1)
    xc, yc = xp.clip(x, 1, w - 2), xp.clip(y, 1, h - 2)
    batch, joint = xp.meshgrid(xp.arange(n), xp.arange(k), indexing="ij")
    at = lambda yy, xx: heatmaps[batch, yy, xx, joint]
    shift = xp.stack([xp.sign(at(yc, xc + 1) - at(yc, xc - 1)),
                      xp.sign(at(yc + 1, xc) - at(yc - 1, xc))], -1)
    return coords + 0.25 * shift * inside[..., None], scores


_decode_quarter_offset_on_device = jax.jit(decode_quarter_offset)


def blur_kernel_size(sigma: float) -> int:
    """DARK's modulation kernel: 11 for sigma 2 (64x48 heatmaps), 17 for sigma 3 (96x72)."""
    return int(6 * sigma) - 1


def decode_dark(heatmaps: np.ndarray, kernel: int) -> tuple[np.ndarray, np.ndarray]:
    """DARK: coordinates (N, K, 2) refined to sub-pixel precision, scores (N, K) of the argmax."""
    coords, scores = argmax_coordinates(np.asarray(heatmaps))
    n, h, w, k = heatmaps.shape
    border = (kernel - 1) // 2
    # Blur each map (zero-padded so the border does not bleed), keeping its maximum.
    maps = np.moveaxis(heatmaps.astype(np.float32), 3, 1).reshape(n * k, h, w)
    padded = np.zeros((n * k, h + 2 * border, w + 2 * border), np.float32)
    padded[:, border:border + h, border:border + w] = maps
    peaks = maps.max((1, 2))
    blurred = np.stack([cv2.GaussianBlur(m, (kernel, kernel), 0) for m in padded])
    blurred = blurred[:, border:border + h, border:border + w]
    blurred *= (peaks / np.maximum(blurred.max((1, 2)), 1e-12))[:, None, None]
    log = np.log(np.maximum(blurred, 1e-10)).astype(np.float64).reshape(n, k, h, w)

    x, y = coords[..., 0].astype(int), coords[..., 1].astype(int)
    inside = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2)
    xc, yc = np.clip(x, 2, w - 3), np.clip(y, 2, h - 3)
    batch, joint = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    at = lambda dy, dx: log[batch, joint, yc + dy, xc + dx]
    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = 0.25 * (at(0, 2) - 2 * at(0, 0) + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    dyy = 0.25 * (at(2, 0) - 2 * at(0, 0) + at(-2, 0))
    determinant = dxx * dyy - dxy ** 2
    solvable = inside & (determinant != 0)
    safe = np.where(solvable, determinant, 1.0)
    # offset = -H^-1 g with H = [[dxx, dxy], [dxy, dyy]]
    offset = -np.stack([(dyy * dx - dxy * dy) / safe, (dxx * dy - dxy * dx) / safe], -1)
    return (coords + offset * solvable[..., None]).astype(np.float32), scores


DECODERS = ("argmax", "dark")


def decode(heatmaps: Any, decoder: str = "argmax", sigma: float = 2.0) -> tuple[Any, Any]:
    """Coordinates (N, K, 2) in heatmap pixels and scores (N, K) by the named decoder; the
    argmax decoder runs where the heatmaps are (compiled, on the device, for device arrays)."""
    if decoder == "argmax":
        if isinstance(heatmaps, jax.Array):
            return _decode_quarter_offset_on_device(heatmaps)
        return decode_quarter_offset(heatmaps)
    if decoder == "dark":
        return decode_dark(np.asarray(heatmaps, np.float32), blur_kernel_size(sigma))
    raise ValueError(f"unknown heatmap decoder {decoder!r}; choose {' or '.join(DECODERS)}")


def flip_back(heatmaps: Any, keypoints: KeypointSet, shift: bool = True) -> jax.Array:
    """Heatmaps of mirrored inputs (N, h, w, K) mapped back onto the unmirrored input: mirrored
    columns, left/right joints swapped and, as the reference does, moved one pixel right."""
    back = jnp.asarray(heatmaps)[:, :, ::-1, :][..., keypoints.flip_permutation()]
    if shift:
        back = jnp.concatenate([back[:, :, :1], back[:, :, :-1]], axis=2)
    return back


def draw_skeleton(image: np.ndarray, joints: np.ndarray, limbs, colour, visible=None) -> np.ndarray:
    """Limbs and joints drawn on a copy of the image; lines thicken with the image's size."""
    canvas = np.ascontiguousarray(image.copy())
    visible = np.ones(len(joints), bool) if visible is None else np.asarray(visible) > 0
    thickness = max(1, round(max(image.shape[:2]) / 320))
    for a, b in limbs:
        if visible[a] and visible[b]:
            cv2.line(canvas, tuple(int(v) for v in joints[a]), tuple(int(v) for v in joints[b]),
                     colour, thickness, cv2.LINE_AA)
    for joint, seen in zip(joints, visible):
        if seen:
            cv2.circle(canvas, (int(joint[0]), int(joint[1])), thickness + 1, colour, -1,
                       cv2.LINE_AA)
    return canvas
