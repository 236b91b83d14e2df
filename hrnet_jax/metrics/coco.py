"""The official COCO evaluation (pycocotools) of boxes, instance masks and keypoints, and the box
files it reads.

Ground truth and results are plain COCO-format dicts built from arrays with a row per object,
so that the rows can come from any number of hosts (hrnet_jax.training.sharding.gather_rows).
"""

from __future__ import annotations

import contextlib
import functools
import io
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.data.detection import encode_masks  # (the RLE coder, with decode_masks)

BOX_STATS = ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l", "ar1", "ar10", "ar100", "ar_s", "ar_m",
             "ar_l")


def evaluate(ground_truth: dict, results: list[dict], iou_type: str, stat_names: Sequence[str]
             ) -> dict[str, float]:
    """pycocotools' COCOeval of `results` against `ground_truth`; its summary figures named
    by `stat_names` (zeros when there are no results)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {name: 0.0 for name in stat_names}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
        truth = COCO()
        truth.dataset = ground_truth
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), iou_type)
        if iou_type == "keypoints":
            evaluation.params.useSegm = None
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {name: float(value) for name, value in zip(stat_names, evaluation.stats)}


def box_ground_truth(images: list[dict], objects: dict[str, np.ndarray],
                     categories: Sequence[tuple[int, str]]) -> dict:
    """COCO-format boxes. images: {id, height, width}; objects: rows of image_id, bbox
    (x, y, w, h), category_id, area, iscrowd, and optionally mask (compressed RLE strings, for
    the `segm` evaluation); categories: (id, name) pairs."""
    sizes = {int(image["id"]): [int(image["height"]), int(image["width"])] for image in images}
    annotations = []
    for row in range(len(objects["image_id"])):
        annotation = {"id": row + 1, "image_id": int(objects["image_id"][row]),
                      "category_id": int(objects["category_id"][row]),
                      "bbox": objects["bbox"][row].astype(float).tolist(),
                      "area": float(objects["area"][row]), "iscrowd": int(objects["iscrowd"][row])}
        if "mask" in objects:  # an empty string (no polygon to draw): an empty mask
            size = sizes[annotation["image_id"]]
            counts = _text(objects["mask"][row]) or _empty_rle(*size)
            annotation["segmentation"] = {"size": size, "counts": counts}
        annotations.append(annotation)
    return {"images": list(images), "annotations": annotations,
            "categories": [{"id": i, "name": name} for i, name in categories]}


def box_results(image_ids: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                category_ids: np.ndarray) -> list[dict]:
    """A COCO detection results list: rows of image id, box (x, y, w, h), score, category."""
    return [{"image_id": int(i), "category_id": int(c), "bbox": [round(float(v), 2) for v in b],
             "score": float(s)} for i, b, s, c in zip(image_ids, boxes, scores, category_ids)]


def box_ap(ground_truth: dict, results: list[dict]) -> dict[str, float]:
    """COCO box AP (AP, AP50, AP75, APs/m/l) and AR (1, 10, 100 detections, s/m/l)."""
    return evaluate(ground_truth, results, "bbox", BOX_STATS)


def mask_results(image_ids: np.ndarray, masks: Sequence[str], sizes: np.ndarray,
                 scores: np.ndarray, category_ids: np.ndarray) -> list[dict]:
    """A COCO segmentation results list: rows of image id, compressed RLE mask with its image's
    (height, width), score, category."""
    return [{"image_id": int(i), "category_id": int(c), "score": float(s),
             "segmentation": {"size": [int(v) for v in size], "counts": _text(m)}}
            for i, m, size, s, c in zip(image_ids, masks, sizes, scores, category_ids)]


def mask_ap(ground_truth: dict, results: list[dict]) -> dict[str, float]:
    """COCO mask AP and AR, the same figures as box_ap on the instances' masks."""
    return evaluate(ground_truth, results, "segm", BOX_STATS)


# A pasted mask is cut from a canvas of the image's size rounded up to this multiple: one
# compiled paste for a bucket of image sizes (COCO's: at most 25), not one a size.
PASTE_BUCKET = 128


def paste_masks(probabilities: Any, boxes: Any, height: int, width: int,
                threshold: float = 0.5, keep: np.ndarray | None = None) -> np.ndarray:
    """Mask R-CNN's (D, S, S) mask probabilities, each spread over its x0, y0, x1, y1 box in a
    height x width image (bilinear at the pixel centres, zero outside the mask, as mmdet's
    paste by grid_sample), >= threshold: (D, height, width) bool; only the rows of `keep`
    (a bool or index array), if given.

    Pasted on the device (100 masks an image: 59 ms of host time, then 18, against the
    network's ~1 ms); the masks come back column-major (each mask's columns contiguous, as
    COCO's run-length encoding reads them: `encode_masks` then runs over them as they are), so
    the array returned is a transposed view."""
    bucket = lambda length: -(-length // PASTE_BUCKET) * PASTE_BUCKET
    pasted = jax.device_get(_paste_column_major(
        jnp.asarray(probabilities, jnp.float32), jnp.asarray(boxes, jnp.float32),
        jnp.asarray([height, width], jnp.float32), (bucket(height), bucket(width)), threshold))
    if keep is not None:
        pasted = pasted[keep]
    return pasted[:, :width, :height].view(bool).transpose(0, 2, 1)


@functools.partial(jax.jit, static_argnames=("canvas",))
def _paste_column_major(probabilities: jax.Array, boxes: jax.Array, image_size: jax.Array,
                        canvas: tuple[int, int], threshold: float) -> jax.Array:
    """(D, canvas width, canvas height) uint8: mask d's pixel (y, x) at [d, x, y], zero beyond
    the image. Bilinear sampling is separable: the mask between two (pixels x mask cells)
    weight matrices, whose taps outside the mask are dropped (its zero border)."""
    cells = probabilities.shape[-1]

    def taps(start, end, pixels, limit):  # (D, pixels, cells)
        extent = jnp.maximum(end - start, 1e-3)
        centres = jnp.arange(pixels, dtype=jnp.float32) + 0.5
        point = (centres[None] - start[:, None]) / extent[:, None] * cells - 0.5
        lower = jnp.floor(point)
        frac = (point - lower)[..., None]
        lower = lower.astype(jnp.int32)
        weights = ((1 - frac) * jax.nn.one_hot(lower, cells)
                   + frac * jax.nn.one_hot(lower + 1, cells))  # out of range: all zeros
        return weights * (centres < limit)[None, :, None]

    rows = taps(boxes[:, 1], boxes[:, 3], canvas[0], image_size[0])
    cols = taps(boxes[:, 0], boxes[:, 2], canvas[1], image_size[1])
    highest = jax.lax.Precision.HIGHEST  # not TF32: a probability near the threshold flips
    spread = jnp.einsum("dxs,dts->dxt", cols, probabilities, precision=highest)
    pasted = jnp.einsum("dxt,dyt->dxy", spread, rows, precision=highest)
    return (pasted >= threshold).astype(jnp.uint8)


def _empty_rle(height: int, width: int) -> str:
    return encode_masks(np.zeros((1, height, width), np.uint8))[0]


def _text(counts) -> str:
    return counts.decode() if isinstance(counts, bytes) else str(counts)
