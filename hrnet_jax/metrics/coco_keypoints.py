"""COCO keypoint AP: rescoring, OKS-NMS and pycocotools' official keypoint evaluation.

The reference's protocol: a person's score is its box score x the mean score of its joints
scored above VISIBLE_SCORE; poses of one image are suppressed greedily by OKS above 0.9; the
results are then scored by pycocotools (AP, AP50, AP75, APM, APL, AR...).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from hrnet_jax.data.keypoint_sets import KeypointSet
from hrnet_jax.metrics import coco

VISIBLE_SCORE = 0.2  # joints above this score count in a person's rescoring
OKS_NMS_THRESHOLD = 0.9
COCO_STATS = ("ap", "ap50", "ap75", "ap_m", "ap_l", "ar", "ar50", "ar75", "ar_m", "ar_l")


def rescore(keypoints: np.ndarray, box_scores: np.ndarray) -> np.ndarray:
    """Box score x the mean score of the joints scored above VISIBLE_SCORE (0 if none is)."""
    scores = keypoints[..., 2]
    confident = scores > VISIBLE_SCORE
    mean = (scores * confident).sum(-1) / np.maximum(confident.sum(-1), 1)
    return box_scores * mean


def object_keypoint_similarity(person: np.ndarray, others: np.ndarray, area: float,
                               other_areas: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """OKS of one pose (K, 3) with each of others (M, K, 3), all joints counted."""
    variances = (sigmas * 2) ** 2
    squared = ((others[..., :2] - person[None, :, :2]) ** 2).sum(-1)
    scale = (area + other_areas)[:, None] / 2 + np.spacing(1)
    return np.exp(-squared / variances / scale / 2).mean(-1)


def oks_nms(keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, sigmas: np.ndarray,
            threshold: float = OKS_NMS_THRESHOLD) -> list[int]:
    """Indices kept by greedy non-maximum suppression on OKS, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        overlap = object_keypoint_similarity(keypoints[best], keypoints[rest], areas[best],
                                             areas[rest], sigmas)
        order = rest[overlap <= threshold]
    return keep


def coco_results(image_ids: np.ndarray, keypoints: np.ndarray, box_scores: np.ndarray,
                 areas: np.ndarray, sigmas: np.ndarray, nms: bool = True) -> list[dict]:
    """COCO keypoint results: rescored, OKS-NMS per image. keypoints (N, K, 3) = x, y, score;
    areas (N,) are the crop boxes' (scale x 200)^2 areas the NMS compares poses with."""
    scores = rescore(keypoints, box_scores)
    by_image = defaultdict(list)
    for index, image_id in enumerate(np.asarray(image_ids).tolist()):
        by_image[image_id].append(index)
    results = []
    for image_id, indices in by_image.items():
        indices = np.asarray(indices)
        kept = oks_nms(keypoints[indices], scores[indices], areas[indices], sigmas) if nms else \
            range(len(indices))
        results += [{"image_id": int(image_id), "category_id": 1, "score": float(scores[i]),
                     "keypoints": keypoints[i].reshape(-1).astype(float).tolist()}
                    for i in indices[list(kept)]]
    return results


def coco_ground_truth(images: Sequence[dict], persons: dict[str, np.ndarray],
                      keypoints: KeypointSet) -> dict:
    """A COCO-format keypoint ground truth. images: {id, height, width}; persons: arrays with
    a row per annotation: image_id, bbox (4,), keypoints (K, 3), area, iscrowd, num_keypoints."""
    annotations = [{"id": row + 1, "image_id": int(persons["image_id"][row]), "category_id": 1,
                    "bbox": persons["bbox"][row].astype(float).tolist(),
                    "keypoints": persons["keypoints"][row].reshape(-1).astype(float).tolist(),
                    "area": float(persons["area"][row]), "iscrowd": int(persons["iscrowd"][row]),
                    "num_keypoints": int(persons["num_keypoints"][row])}
                   for row in range(len(persons["image_id"]))]
    category = {"id": 1, "name": "person", "keypoints": list(keypoints.joints),
                "skeleton": [[a + 1, b + 1] for a, b in keypoints.limbs]}
    return {"images": list(images), "annotations": annotations, "categories": [category]}


def coco_keypoint_ap(ground_truth: dict, results: list[dict]) -> dict[str, float]:
    """The official COCO keypoint evaluation (pycocotools): AP, AP50, AP75, APM, APL, AR..."""
    return coco.evaluate(ground_truth, results, "keypoints", COCO_STATS)
