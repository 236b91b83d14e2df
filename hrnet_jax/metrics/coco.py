"""The official COCO evaluation (pycocotools) of boxes, instance masks and keypoints, and the box
files it reads.

Ground truth and results are plain COCO-format dicts built from arrays with a row per object,
so that the rows can come from any number of hosts (hrnet_jax.training.sharding.gather_rows).
"""

from __future__ import annotations

import contextlib
import io
from typing import Iterator, Sequence

import numpy as np

from hrnet_jax.data.detection import encode_masks, encode_region  # noqa: F401 (the RLE coder, re-exported)

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


def pasted_regions(probabilities: np.ndarray, boxes: np.ndarray, height: int, width: int,
                   threshold: float = 0.5) -> Iterator[tuple[int, int, int, np.ndarray]]:
    """Mask R-CNN's (D, S, S) mask probabilities, each spread over its x0, y0, x1, y1 box in a
    height x width image (bilinear at the pixel centres, zero outside the box, as mmdet's
    paste), >= threshold: (index, top, left, bool region) for each detection whose region
    holds a pixel. The region: the pixels whose mask point lies within a pixel of the mask
    (beyond, the bilinear weights meet zeros only), a box's surroundings instead of the image."""
    import cv2

    from hrnet_jax.detection.paste import box_regions

    regions, maps = box_regions(boxes, probabilities.shape[-1], height, width)
    for index, (probability, (top, left, bottom, right), affine) in enumerate(
            zip(probabilities, regions.tolist(), maps)):
        if right <= left or bottom <= top:
            continue
        spread = cv2.warpAffine(probability.astype(np.float32), affine, (right - left,
                                                                         bottom - top),
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        yield index, top, left, spread >= threshold


def paste_masks(probabilities: np.ndarray, boxes: np.ndarray, height: int, width: int,
                threshold: float = 0.5) -> np.ndarray:
    """`pasted_regions` as (D, height, width) bool image masks (pictures, users' results;
    evaluation pastes on the device: hrnet_jax.detection.paste)."""
    out = np.zeros((len(boxes), height, width), bool)
    for index, top, left, region in pasted_regions(probabilities, boxes, height, width,
                                                   threshold):
        out[index, top:top + region.shape[0], left:left + region.shape[1]] = region
    return out


def _empty_rle(height: int, width: int) -> str:
    return encode_region(np.zeros((0, 0), bool), 0, 0, height, width)


def _text(counts) -> str:
    return counts.decode() if isinstance(counts, bytes) else str(counts)
