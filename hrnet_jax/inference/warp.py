"""Affine crops of an image cut on the accelerator: the image is sent once, with two numbers a
crop row, rather than every crop of it (a pose evaluation's 20-odd persons an image, and their
warps, were most of its host time).

The sampling follows OpenCV's `warpAffine` (bilinear, zero border, uint8) as OpenCV 5 computes
it: the map inverted in float64, each output row's start `y * M[1] + M[2]` rounded to float32,
then in float32 the source point `M[0] * x + start`, its floor and fractions, the two
horizontal interpolations and the vertical one, rounded half to even. XLA may fuse a multiply
and an add that OpenCV keeps apart (or the reverse), so a pixel now and then lands one grey
level away from OpenCV's (tests bound it: measured 0.002% of pixels).

An image is padded into a bucket of `BUCKET` pixels a side so that a few compiled shapes serve
any image size; what lies beyond the image's own extent reads as zero, whatever the padding
holds.
"""

from __future__ import annotations

import functools
import threading

import jax
import jax.numpy as jnp
import numpy as np

BUCKET = 128


def sampling_rows(inverse: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2, 3) maps from crop pixels to image pixels -> the per-crop column steps (N, 2)
    (M[0], M[3]) and the rows' starts (N, 2, height) (y M[1] + M[2], y M[4] + M[5]), float32
    as OpenCV rounds them."""
    rows = np.arange(height, dtype=np.float64)
    starts = rows * inverse[:, :, 1:2] + inverse[:, :, 2:3]
    return inverse[:, :, 0].astype(np.float32), starts.astype(np.float32)


@functools.partial(jax.jit, static_argnames=("width",))
def warp_crops(image: jax.Array, extent: jax.Array, steps: jax.Array, starts: jax.Array,
               width: int) -> jax.Array:
    """(Hb, Wb, C) uint8 image whose (height, width) `extent` holds pixels, (N, 2) column
    steps and (N, 2, H) row starts (`sampling_rows`) -> (N, H, width, C) uint8 crops."""
    columns = jnp.arange(width, dtype=jnp.float32)
    source_x = steps[:, 0, None, None] * columns + starts[:, 0, :, None]  # (N, H, W)
    source_y = steps[:, 1, None, None] * columns + starts[:, 1, :, None]
    x0, y0 = jnp.floor(source_x), jnp.floor(source_y)
    fraction_x, fraction_y = (source_x - x0)[..., None], (source_y - y0)[..., None]
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
    bucket_width, channels = image.shape[1], image.shape[2]
    flat = image.reshape(-1, channels)

    def pixel(y: jax.Array, x: jax.Array) -> jax.Array:
        inside = (x >= 0) & (x < extent[1]) & (y >= 0) & (y < extent[0])
        index = jnp.where(inside, y * bucket_width + x, 0)
        return jnp.where(inside[..., None], flat[index], 0).astype(jnp.float32)

    top_left, top_right = pixel(y0, x0), pixel(y0, x0 + 1)
    bottom_left, bottom_right = pixel(y0 + 1, x0), pixel(y0 + 1, x0 + 1)
    top = top_left + fraction_x * (top_right - top_left)
    bottom = bottom_left + fraction_x * (bottom_right - bottom_left)
    value = top + fraction_y * (bottom - top)
    return jnp.clip(jnp.round(value), 0, 255).astype(jnp.uint8)


def bucket(length: int) -> int:
    """A side padded to the next multiple of BUCKET (the images' and pasted masks' shapes)."""
    return -(-int(length) // BUCKET) * BUCKET


class ImageBuckets:
    """Images padded into buckets of BUCKET pixels a side, a kept host buffer a bucket and
    thread (eval.host_threads): only the image's own pixels are copied, the padding is never
    cleared (warp_crops reads nothing beyond the image's extent)."""

    def __init__(self):
        self._local = threading.local()

    def __call__(self, image: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """(H, W, C) uint8 -> the bucket on the device and its extent (H, W)."""
        height, width = image.shape[:2]
        shape = (bucket(height), bucket(width), *image.shape[2:])
        buffers = self._local.__dict__.setdefault("buffers", {})
        if shape not in buffers:
            buffers[shape] = np.zeros(shape, np.uint8)
        buffer = buffers[shape]
        buffer[:height, :width] = image
        return jax.device_put(buffer), jnp.array([height, width], jnp.int32)
