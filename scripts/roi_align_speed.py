"""RoIAlign's cost on this machine: the library's exact form (hrnet_jax.detection.roi_align:
separable per-axis weights, one gather of the rectangle each RoI's samples touch, bounded by
the level mapping) against torchvision's `roi_align(sampling_ratio=0, aligned=True)`, the
reference, measured in the same run.

    python scripts/roi_align_speed.py [--image 800,1344] [--channels 256] [--repeats 5]

Prints one JSON line a case: forward (inference: 1000 proposals for 7x7, 100 detections for the
mask head's 14x14) and forward + backward (training: 512 sampled RoIs for 7x7, their 128
positive slots for 14x14), milliseconds for ours and for torchvision's forward (a loop over the
levels, the reference's own layout), their ratio, the gathered window (pixels a RoI), and the
largest difference between the two (exact: float rounding only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import numpy as np

from hrnet_jax.detection.roi_align import map_levels, roi_align, window_size

STRIDES = (4, 8, 16, 32)


def random_boxes(rng: np.random.Generator, count: int, image: tuple[int, int]) -> np.ndarray:
    """COCO-like RoIs inside the image: sides 16 to 600 pixels, aspect ratios up to 1:4."""
    scale = np.exp(rng.uniform(np.log(16), np.log(600), (count, 1)))
    aspect = np.exp(rng.uniform(-0.7, 0.7, (count, 1)))
    side = np.concatenate([scale * np.sqrt(aspect), scale / np.sqrt(aspect)], 1)
    centre = rng.uniform(0, [image[1], image[0]], (count, 2))
    boxes = np.concatenate([centre - side / 2, centre + side / 2], 1)
    return np.clip(boxes, 0, [image[1], image[0]] * 2).astype(np.float32)


def timed(function, *args, repeats: int) -> float:
    jax.block_until_ready(function(*args))  # compiled
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def torchvision_pooled(features, boxes, output_size):
    import torch
    import torchvision

    levels = np.asarray(map_levels(boxes, len(features)))
    out = np.zeros((len(boxes), output_size, output_size, features[0].shape[-1]), np.float32)
    for level, feature in enumerate(features):
        chosen = np.flatnonzero(levels == level)
        if len(chosen):
            rois = torch.from_numpy(np.concatenate([np.zeros((len(chosen), 1), np.float32),
                                                    boxes[chosen]], 1))
            pooled = torchvision.ops.roi_align(torch.from_numpy(feature).permute(0, 3, 1, 2),
                                               rois, output_size, 1.0 / STRIDES[level], 0,
                                               aligned=True)
            out[chosen] = pooled.permute(0, 2, 3, 1).numpy()
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="800,1344")
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    image = tuple(int(v) for v in args.image.split(","))
    rng = np.random.default_rng(0)
    features = [rng.normal(size=(1, image[0] // s, image[1] // s, args.channels)).astype(np.float32)
                for s in STRIDES]
    window = window_size([f.shape[1:3] for f in features], STRIDES)
    results = []
    for head, size, inference, training in (("box", 7, 1000, 512), ("mask", 14, 100, 128)):
        for phase, count in (("forward", inference), ("forward_backward", training)):
            boxes = random_boxes(rng, count, image)
            pool = jax.jit(lambda f, b, size=size: roi_align(f, STRIDES, b[None], size))
            if phase == "forward_backward":
                grad = jax.jit(jax.grad(lambda f, b, size=size: roi_align(
                    f, STRIDES, b[None], size).sum()))
                ours_ms = timed(grad, features, boxes, repeats=args.repeats)
            else:
                ours_ms = timed(pool, features, boxes, repeats=args.repeats)
            start = time.perf_counter()
            expected = torchvision_pooled(features, boxes, size)
            reference_ms = 1000 * (time.perf_counter() - start)
            difference = float(np.abs(np.asarray(pool(features, boxes))[0] - expected).max())
            result = {"head": head, "phase": phase, "rois": count, "window": window,
                      "ours_ms": round(ours_ms, 2),
                      "torchvision_forward_ms": round(reference_ms, 2),
                      "ratio_to_torchvision": round(ours_ms / reference_ms, 2),
                      "max_difference": difference}
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


if __name__ == "__main__":
    main()
