"""The official COCO evaluation (pycocotools) of boxes and keypoints, and the box files it reads.

Ground truth and results are plain COCO-format dicts built from arrays with a row per object,
so that the rows can come from any number of hosts (hrnet_jax.training.sharding.gather_rows).
"""

from __future__ import annotations

import contextlib
import io
from typing import Sequence

import numpy as np

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
    (x, y, w, h), category_id, area, iscrowd; categories: (id, name) pairs."""
    annotations = [{"id": row + 1, "image_id": int(objects["image_id"][row]),
                    "category_id": int(objects["category_id"][row]),
                    "bbox": objects["bbox"][row].astype(float).tolist(),
                    "area": float(objects["area"][row]), "iscrowd": int(objects["iscrowd"][row])}
                   for row in range(len(objects["image_id"]))]
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
