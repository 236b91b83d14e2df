"""Whole-image segmentation inference as HRNet-Semantic-Segmentation evaluates, on the device.

Per scale, the image's long side is resized to base_size x scale and the network's scores are
taken as the reference does: the logits of the image and (with flip) of its mirror are averaged
(the mirror's left/right classes, if the dataset has any, swapped back first), exponentiated,
and resized bilinearly back to the image; the scales' scores are summed.

Which scaled images run whole and which by sliding windows (crop-sized, stride 2/3 of the crop,
overlapping scores averaged) follows one of the reference's two rules:
- Cityscapes: scales <= 1 run whole, larger ones by windows whose last row and column sit flush
  with the border.
- `pad_to_crop` (LIP, PASCAL-Context): an image that fits in the crop is padded black to it and
  run whole, a larger one (padded black up to the crop where smaller) by windows from the top
  left whose last ones are padded black.

Everything around the network stays on the device: a 1024x2048 Cityscapes image's six scales and
their mirrors upsample, average and resize full-resolution 19-class maps, which on the host took
~46 s an image against the network's ~0.16 s on an H100. The host resizes each scale's input
The host sends the normalised image once; each scale's resize (OpenCV's bilinear rule, as the
reference), windows, mirrors and padding are made on the device.

The scores are kept as their logarithms, `log sum exp(logits)`: every step after the exp is a
sum with non-negative weights (bilinear taps, overlapping windows, scales), which in log space
is a `logaddexp`, so float32 neither overflows (exp above 88, which untrained or overconfident
networks reach) nor loses the small scores. `exp` of the result is the reference's sum.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.data.pipeline import IMAGENET_MEAN, IMAGENET_STD
from hrnet_jax.data.transforms import long_side_size
from hrnet_jax.models.layers import interpolation_matrix, resize_bilinear

HIGHEST = jax.lax.Precision.HIGHEST

# (1, h, w, 3) normalised images -> (1, h', w', classes) logits at any resolution. Where it has
# `on_device` (hrnet_jax.training.step.Network), that is called and its outputs stay there.
Predict = Callable[[Any], Any]
FlipPairs = Sequence[tuple[int, int]]

# Black in normalised pixels: what the reference pads with (a plain 0 would be the mean colour).
BLACK = -IMAGENET_MEAN / IMAGENET_STD


def class_permutation(num_classes: int, flip_pairs: FlipPairs) -> np.ndarray:
    """Indices that turn a mirrored image's class scores into the original's."""
    order = np.arange(num_classes)
    for left, right in flip_pairs:
        order[left], order[right] = right, left
    return order


@functools.partial(jax.jit, static_argnames=("size", "align_corners"))
def resize_log_scores(log_scores: jax.Array, size: tuple[int, int], align_corners: bool = False
                      ) -> jax.Array:
    """(h, w, classes) log-scores whose exp is bilinearly resized to `size` with PyTorch's
    sampling rule: each output row (column) `logaddexp` of its two source rows (columns) plus
    the logarithms of their interpolation weights."""
    if log_scores.shape[:2] == tuple(size):
        return log_scores
    rows = _log_taps(log_scores, log_scores.shape[0], size[0], align_corners)
    return jnp.swapaxes(_log_taps(jnp.swapaxes(rows, 0, 1), log_scores.shape[1], size[1],
                                  align_corners), 0, 1)


def _log_taps(log_scores: jax.Array, size_in: int, size_out: int, align_corners: bool
              ) -> jax.Array:
    lower, upper, w_lower, w_upper = _taps(size_in, size_out, align_corners)
    with np.errstate(divide="ignore"):  # a zero weight is -inf: logaddexp ignores it
        log_lower, log_upper = np.log(w_lower), np.log(w_upper)
    return jnp.logaddexp(log_scores[lower] + log_lower[:, None, None],
                         log_scores[upper] + log_upper[:, None, None])


@functools.lru_cache(maxsize=32)
def _taps(size_in: int, size_out: int, align_corners: bool
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """interpolation_matrix's two non-zero entries a row: their columns and weights (the
    second 0 where a row has one)."""
    matrix = interpolation_matrix(size_in, size_out, align_corners)
    lower = np.argmax(matrix > 0, axis=1)
    upper = np.minimum(lower + 1, size_in - 1)
    index = np.arange(size_out)
    return (lower, upper, matrix[index, lower],
            np.where(upper != lower, matrix[index, upper], 0).astype(np.float32))


@functools.partial(jax.jit, static_argnames=("flip",))
def _network_input(image: jax.Array, flip: bool) -> jax.Array:
    """(h, w, 3) -> the network's batch: the image, and with `flip` its mirror."""
    batch = image[None]
    return jnp.concatenate([batch, batch[:, :, ::-1]]) if flip else batch


@functools.partial(jax.jit, static_argnames=("size", "align_corners", "permutation"))
def _logits_at(logits: jax.Array, size: tuple[int, int], align_corners: bool,
               permutation: tuple[int, ...] | None) -> jax.Array:
    """The network's logits of an image (and its mirror) upsampled to `size`; a mirror's
    mirrored back, its classes permuted back (`permutation`), and averaged with the image's."""
    logits = resize_bilinear(logits.astype(jnp.float32), size, align_corners, HIGHEST)
    if permutation is None:
        return logits[0]
    return 0.5 * (logits[0] + logits[1, :, ::-1][..., np.asarray(permutation)])


def logits_at_input_size(predict: Predict, image: Any, flip: bool, flip_pairs: FlipPairs = (),
                         align_corners: bool = False) -> jax.Array:
    """(h, w, classes) float32 logits of one normalised (h, w, 3) image, upsampled bilinearly
    to its size; with `flip`, averaged with the mirrored image's (mirrored back, the classes of
    `flip_pairs` swapped back). These are also the image's log-scores. One network call: the
    image and its mirror are one batch (inference BatchNorm: rows do not mix)."""
    call = getattr(predict, "on_device", predict)
    image = jnp.asarray(image)
    logits = jnp.asarray(call(_network_input(image, flip)))
    permutation = (tuple(class_permutation(logits.shape[-1], flip_pairs).tolist()) if flip
                   else None)
    return _logits_at(logits, tuple(image.shape[:2]), align_corners, permutation)


@jax.jit
def _add_window(total: jax.Array, count: jax.Array, log_scores: jax.Array, y0: jax.Array,
                x0: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A window's log-scores `logaddexp`-ed into the canvas at (y0, x0), its pixels counted."""
    start = (y0, x0, 0)
    window = jax.lax.dynamic_slice(total, start, log_scores.shape)
    total = jax.lax.dynamic_update_slice(total, jnp.logaddexp(window, log_scores), start)
    seen = jax.lax.dynamic_slice(count, start, (*log_scores.shape[:2], 1))
    return total, jax.lax.dynamic_update_slice(count, seen + 1, start)


def sliding_window_log_scores(predict: Predict, image: Any, crop: Sequence[int], flip: bool,
                              flip_pairs: FlipPairs = (), align_corners: bool = False,
                              pad_to_crop: bool = False) -> jax.Array:
    """Log-scores of an image larger than the crop: crop-sized windows at stride 2/3 of the
    crop, overlapping scores averaged; the last windows flush with the border, or
    (`pad_to_crop`) running over it, padded black."""
    image = jnp.asarray(image)
    height, width = image.shape[:2]
    crop_h, crop_w = crop
    if pad_to_crop and (height < crop_h or width < crop_w):
        image = _pad(image, (max(height, crop_h), max(width, crop_w)))
    full_h, full_w = image.shape[:2]
    stride_h, stride_w = int(crop_h * 2 / 3), int(crop_w * 2 / 3)
    rows = max(math.ceil((full_h - crop_h) / stride_h), 0) + 1
    cols = max(math.ceil((full_w - crop_w) / stride_w), 0) + 1
    corners = []
    for r in range(rows):
        for c in range(cols):
            if pad_to_crop:
                corners.append((r * stride_h, c * stride_w))
            else:
                y1, x1 = min(r * stride_h + crop_h, full_h), min(c * stride_w + crop_w, full_w)
                corners.append((max(y1 - crop_h, 0), max(x1 - crop_w, 0)))
    # Every window whole on a canvas reaching past the image where the last ones do (one
    # window shape: one compile); the part past the image is cut at the end.
    canvas = (max(y for y, _ in corners) + crop_h, max(x for _, x in corners) + crop_w)
    image = _pad(image, canvas)
    total = count = None
    for y0, x0 in corners:
        window = _window(image, y0, x0, (crop_h, crop_w))
        log_scores = logits_at_input_size(predict, window, flip, flip_pairs, align_corners)
        if total is None:
            total = jnp.full((*canvas, log_scores.shape[-1]), -jnp.inf, jnp.float32)
            count = jnp.zeros((*canvas, 1), jnp.float32)
        total, count = _add_window(total, count, log_scores, y0, x0)
    return _window_average(total, count, (height, width))


@functools.partial(jax.jit, static_argnames=("size",))
def _window(image: jax.Array, y0: jax.Array, x0: jax.Array, size: tuple[int, int]
            ) -> jax.Array:
    return jax.lax.dynamic_slice(image, (y0, x0, 0), (*size, image.shape[2]))


@functools.partial(jax.jit, static_argnames=("size",))
def _window_average(total: jax.Array, count: jax.Array, size: tuple[int, int]) -> jax.Array:
    """The windows' summed scores over the number of windows seen, log-space, cut to `size`."""
    return (total - jnp.log(count))[:size[0], :size[1]]


def _pad(image: jax.Array, size: Sequence[int]) -> jax.Array:
    """Bottom and right padded black to `size` (a larger image is left as it is)."""
    pad_h, pad_w = max(size[0] - image.shape[0], 0), max(size[1] - image.shape[1], 0)
    if not (pad_h or pad_w):
        return image
    return _padded(image, (pad_h, pad_w))


@functools.partial(jax.jit, static_argnames=("padding",))
def _padded(image: jax.Array, padding: tuple[int, int]) -> jax.Array:
    black = jnp.broadcast_to(jnp.asarray(BLACK, image.dtype),
                             (image.shape[0] + padding[0], image.shape[1] + padding[1], 3))
    return jax.lax.dynamic_update_slice(black, image, (0, 0, 0))


@functools.partial(jax.jit, static_argnames=("size",))
def _resized_image(image: jax.Array, size: tuple[int, int]) -> jax.Array:
    """(h, w, 3) resized bilinearly to `size`: OpenCV's INTER_LINEAR rule (PyTorch's without
    corner alignment), to float rounding."""
    return resize_bilinear(image[None], size, False, HIGHEST)[0]


@jax.jit
def _sum_scales(total: jax.Array, log_scores: jax.Array) -> jax.Array:
    return jnp.logaddexp(total, log_scores)


def multi_scale_log_scores(predict: Predict, image: np.ndarray, scales: Sequence[float],
                           flip: bool, base_size: int, crop: Sequence[int],
                           flip_pairs: FlipPairs = (), align_corners: bool = False,
                           pad_to_crop: bool = False) -> jax.Array:
    """log of the sum over scales of exp(logits) at the image's size: (h, w, classes) float32
    on the device, from one normalised float32 (h, w, 3) image sent there once."""
    height, width = image.shape[:2]
    image = jnp.asarray(image)
    total = None
    for scale in scales:
        scaled = _resized_image(image, long_side_size((height, width),
                                                      int(base_size * scale + 0.5)))
        if pad_to_crop and max(scaled.shape[:2]) <= min(crop):
            log_scores = logits_at_input_size(predict, _pad(scaled, crop), flip, flip_pairs,
                                              align_corners)[:scaled.shape[0], :scaled.shape[1]]
        elif scale <= 1.0 and not pad_to_crop:
            log_scores = logits_at_input_size(predict, scaled, flip, flip_pairs, align_corners)
        else:
            log_scores = sliding_window_log_scores(predict, scaled, crop, flip, flip_pairs,
                                                   align_corners, pad_to_crop)
        log_scores = resize_log_scores(log_scores, (height, width), align_corners)
        total = log_scores if total is None else _sum_scales(total, log_scores)
    return total
