"""RoIAlign: the library's gather form against a windowed matrix-product form, on this machine.

    python scripts/roi_align_speed.py [--image 800,1344] [--channels 256] [--repeats 5]

The library (hrnet_jax.models.roi_align) reads the 4 bilinear neighbours of every sample with
one gather: R x S^2 x K^2 x 4 feature vectors (S the output size, K <= max_samples the samples a
bin side). The alternative tried here reads one W x W window a RoI (W = S x max_samples + 2, the
extent the adaptive rule samples exactly) and pools it with two small matrix products, A (S, W)
@ window (W, W, C) @ B (W, S)^T, the bilinear weights of each axis summed into A and B: fewer
feature vectors read (W^2 against 4 S^2 K^2) and the work on matrix units, but a RoI larger
than the window is cut to it (the gather form samples it whole, at most max_samples a side).

Prints one JSON line a case: forward (inference: 1000 proposals for 7x7, 100 detections for the
mask head's 14x14) and forward + backward (training: 512 sampled RoIs for 7x7, their 128
positive slots for 14x14), milliseconds for each form, and the
largest difference between the two on RoIs that fit the window (they agree there), and the
share of the random RoIs (COCO-like sides of 16 to 600 pixels) that do not fit it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.models.roi_align import _axis_samples, map_levels, roi_align

STRIDES = (4, 8, 16, 32)


def windowed_roi_align(features, strides, boxes, output_size, max_samples=4, finest_scale=56.0):
    """RoIAlign (aligned, adaptive sampling capped at max_samples) from one window a RoI."""
    window = output_size * max_samples + 2
    levels = map_levels(boxes, len(features), finest_scale)
    n, channels = features[0].shape[0], features[0].shape[-1]
    # Levels smaller than the window are padded to it (padding is never sampled).
    padded = [jnp.pad(f, ((0, 0), (0, max(0, window - f.shape[1])),
                          (0, max(0, window - f.shape[2])), (0, 0))) for f in features]
    heights = jnp.asarray([f.shape[1] for f in features], jnp.int32)
    widths = jnp.asarray([f.shape[2] for f in features], jnp.int32)
    padded_w = jnp.asarray([f.shape[2] for f in padded], jnp.int32)
    padded_h = jnp.asarray([f.shape[1] for f in padded], jnp.int32)
    sizes = [f.shape[1] * f.shape[2] for f in padded]
    offsets = jnp.asarray(np.cumsum([0, *sizes[:-1]]), jnp.int32)
    table = jnp.concatenate([f.reshape(n, -1, channels) for f in padded], 1)
    scale = 1.0 / jnp.asarray(strides, jnp.float32)[levels]
    x0, y0 = boxes[..., 0] * scale - 0.5, boxes[..., 1] * scale - 0.5
    width, height = boxes[..., 2] * scale - 0.5 - x0, boxes[..., 3] * scale - 0.5 - y0
    grid_y = jnp.clip(jnp.ceil(height / output_size), 0, max_samples).astype(jnp.int32)
    grid_x = jnp.clip(jnp.ceil(width / output_size), 0, max_samples).astype(jnp.int32)

    def axis_matrix(start, length, size, padded_size, grid):
        low, high, w_low, w_high = _axis_samples(start, length, size, output_size, grid,
                                                 max_samples)
        origin = jnp.clip(jnp.floor(jnp.maximum(start, 0.0)).astype(jnp.int32), 0,
                          padded_size - window)
        columns = jnp.arange(window)
        per_grid = 1.0 / jnp.maximum(grid, 1).astype(jnp.float32)[..., None, None]
        hit = lambda index: (index - origin[..., None, None])[..., None] == columns
        matrix = ((w_low * per_grid)[..., None] * hit(low)
                  + (w_high * per_grid)[..., None] * hit(high)).sum(-2)  # (N, R, S, W)
        return matrix, origin

    rows, origin_y = axis_matrix(y0, height, heights[levels], padded_h[levels], grid_y)
    cols, origin_x = axis_matrix(x0, width, widths[levels], padded_w[levels], grid_x)
    steps = jnp.arange(window)
    row_length = padded_w[levels][..., None, None]
    index = (offsets[levels][..., None, None]
             + (origin_y[..., None, None] + steps[:, None]) * row_length
             + origin_x[..., None, None] + steps[None, :])  # (N, R, W, W)
    r = boxes.shape[1]
    values = jnp.take_along_axis(table, index.reshape(n, -1)[..., None], axis=1)
    values = values.reshape(n, r, window, window, channels)
    return jnp.einsum("nrpy,nryxc,nrqx->nrpqc", rows, values, cols)


def random_boxes(rng, count, image, fit_window=None):
    """Boxes of COCO-like sizes (16 to 600 pixels a side) inside the image; `fit_window` keeps
    those whose mapped level's extent fits it."""
    height, width = image
    side = np.exp(rng.uniform(np.log(16), np.log(600), (count, 2)))
    side = np.minimum(side, [width - 2, height - 2])
    corner = rng.uniform(0, 1, (count, 2)) * ([width, height] - side)
    boxes = np.concatenate([corner, corner + side], 1).astype(np.float32)
    if fit_window is not None:
        levels = np.asarray(map_levels(jnp.asarray(boxes), len(STRIDES)))
        extent = side.max(1) / np.asarray(STRIDES)[levels]
        boxes = boxes[extent <= fit_window - 2]
    return boxes


def timed(function, *args, repeats):
    jax.block_until_ready(function(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 2)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default="800,1344")
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    image = tuple(int(v) for v in args.image.split(","))
    rng = np.random.default_rng(0)
    features = [jnp.asarray(rng.normal(size=(args.batch, image[0] // s, image[1] // s,
                                             args.channels)).astype(np.float32))
                for s in STRIDES]
    results = []
    for output_size, test_rois, train_rois, mode in ((7, 1000, 512, "box"), (14, 100, 128, "mask")):
        window = output_size * 4 + 2
        check = random_boxes(rng, 300, image, fit_window=window)[None]
        beyond = 1 - len(random_boxes(rng, 10_000, image, fit_window=window)) / 10_000
        first = [f[:1] for f in features]
        check = jnp.asarray(check)
        difference = float(jnp.abs(windowed_roi_align(first, STRIDES, check, output_size)
                                   - roi_align(first, STRIDES, check, output_size)).max())
        for phase, count in (("forward", test_rois), ("forward_backward", train_rois)):
            boxes = jnp.asarray(np.stack([random_boxes(rng, count, image)
                                          for _ in range(args.batch)]))
            figures = {}
            for name, pool in (("gather", roi_align), ("window", windowed_roi_align)):
                if phase == "forward":
                    function = jax.jit(lambda f, b, pool=pool: pool(f, STRIDES, b, output_size))
                else:
                    function = jax.jit(jax.grad(
                        lambda f, b, pool=pool: jnp.sum(pool(f, STRIDES, b, output_size) ** 2)))
                figures[f"{name}_ms"] = timed(function, features, boxes, repeats=args.repeats)
            result = {"head": mode, "output_size": output_size, "phase": phase,
                      "rois_per_image": count, "batch": args.batch, "image": list(image),
                      "channels": args.channels, "device": jax.devices()[0].device_kind,
                      **figures, "window_over_gather": round(figures["window_ms"]
                                                             / figures["gather_ms"], 3),
                      "max_difference_on_fitting_rois": difference,
                      "rois_beyond_window": round(beyond, 4)}
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


if __name__ == "__main__":
    main()
