"""Keypoint evaluation: heatmap decoding, flip test, rescoring, OKS-NMS, COCO AP, MPII PCKh and
the facial landmarks' NME.

Decoding follows the HRNet pose reference exactly (its published AP depends on it): the argmax,
zeroed where the heatmap's maximum is not positive, moved a quarter pixel toward the higher
neighbour when the rounded argmax lies in 1 < x < w - 1 (and likewise y). DARK (Zhang et al.
2020, distribution-aware coordinates) instead blurs the heatmap, takes its log and refines the
argmax by one Newton step of the second-order Taylor expansion.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import cv2
import numpy as np

from hrnet_jax.data.keypoint_sets import KeypointSet
from hrnet_jax.evaluation import coco

VISIBLE_SCORE = 0.2  # joints above this score count in a person's rescoring
OKS_NMS_THRESHOLD = 0.9
COCO_STATS = ("ap", "ap50", "ap75", "ap_m", "ap_l", "ar", "ar50", "ar75", "ar_m", "ar_l")


def argmax_coordinates(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, h, w, K) -> integer argmax (N, K, 2) as (x, y), zeroed where max <= 0, and max (N, K)."""
    n, h, w, k = heatmaps.shape
    flat = np.moveaxis(heatmaps, 3, 1).reshape(n, k, h * w)
    index = flat.argmax(-1)
    scores = flat.max(-1)
    coords = np.stack([index % w, index // w], -1).astype(np.float32)
    return coords * (scores > 0)[..., None], scores


def decode_quarter_offset(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference decoder: coordinates (N, K, 2) in heatmap pixels and scores (N, K)."""
    coords, scores = argmax_coordinates(heatmaps)
    n, h, w, k = heatmaps.shape
    x, y = np.floor(coords[..., 0] + 0.5).astype(int), np.floor(coords[..., 1] + 0.5).astype(int)
    inside = (x > 1) & (x < w - 1) & (y > 1) & (y < h - 1)
    xc, yc = np.clip(x, 1, w - 2), np.clip(y, 1, h - 2)
    batch, joint = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    at = lambda yy, xx: heatmaps[batch, yy, xx, joint]
    shift = np.stack([np.sign(at(yc, xc + 1) - at(yc, xc - 1)),
                      np.sign(at(yc + 1, xc) - at(yc - 1, xc))], -1)
    return coords + 0.25 * shift * inside[..., None], scores


def blur_kernel_size(sigma: float) -> int:
    """DARK's modulation kernel: 11 for sigma 2 (64x48 heatmaps), 17 for sigma 3 (96x72)."""
    return int(6 * sigma) - 1


def decode_dark(heatmaps: np.ndarray, kernel: int) -> tuple[np.ndarray, np.ndarray]:
    """DARK: coordinates (N, K, 2) refined to sub-pixel precision, scores (N, K) of the argmax."""
    coords, scores = argmax_coordinates(heatmaps)
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


def flip_back(heatmaps: np.ndarray, keypoints: KeypointSet, shift: bool = True) -> np.ndarray:
    """Heatmaps of mirrored inputs (N, h, w, K) mapped back onto the unmirrored input: mirrored
    columns, left/right joints swapped and, as the reference does, moved one pixel right."""
    back = heatmaps[:, :, ::-1, :][..., keypoints.flip_permutation()]
    if shift:
        back = np.concatenate([back[:, :, :1], back[:, :, :-1]], axis=2)
    return back


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


HEAD_SIZE_FACTOR = 0.6  # MPII: the head size is 0.6 x the diagonal of the head box
MPII_PARTS = {"head": (9,), "shoulder": (12, 13), "elbow": (11, 14), "wrist": (10, 15),
              "hip": (2, 3), "knee": (1, 4), "ankle": (0, 5)}


def pckh(predicted: np.ndarray, truth: np.ndarray, visible: np.ndarray, head_sizes: np.ndarray,
         threshold: float = 0.5) -> dict[str, float]:
    """MPII PCKh: a joint is correct within threshold x head size. Mean over the joints other
    than pelvis and thorax (weighted by how often each is labelled), and per body part."""
    error = np.linalg.norm(predicted - truth, axis=-1) / head_sizes[:, None]
    labelled = visible > 0
    correct = (error <= threshold) & labelled
    counts = labelled.sum(0)
    per_joint = correct.sum(0) / np.maximum(counts, 1)
    counted = np.ones(len(counts), bool)
    counted[[6, 7]] = False  # pelvis, thorax
    result = {"pckh": float((per_joint * counts)[counted].sum() / max(counts[counted].sum(), 1))}
    for part, joints in MPII_PARTS.items():
        result[f"pckh/{part}"] = float(np.mean(per_joint[list(joints)]))
    return result


FAILURE_THRESHOLD = 0.1  # facial landmarks: a face fails above this NME; AUC integrates up to it


def normalised_mean_error(predicted: np.ndarray, truth: np.ndarray, normalisers: np.ndarray
                          ) -> np.ndarray:
    """Per face (N,): mean point-to-point distance over the K points / the face's normaliser
    (inter-ocular distance, or box size for AFLW)."""
    return np.linalg.norm(predicted - truth, axis=-1).mean(-1) / normalisers


def landmark_summary(errors: np.ndarray) -> dict[str, float]:
    """NME, failure rate at 0.1 and the area under the cumulative error curve up to 0.1
    (normalised to 1), over faces."""
    thresholds = np.linspace(0.0, FAILURE_THRESHOLD, 1001)
    cumulative = (errors[None, :] <= thresholds[:, None]).mean(1)
    return {"nme": float(errors.mean()),
            "failure_rate": float((errors > FAILURE_THRESHOLD).mean()),
            "auc": float(np.trapezoid(cumulative, thresholds) / FAILURE_THRESHOLD)}
