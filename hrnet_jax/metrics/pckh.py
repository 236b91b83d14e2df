"""MPII PCKh: a joint is correct within 0.5 x the person's head size (0.6 x the head box's
diagonal); the mean leaves out pelvis and thorax, as the official evaluation does."""

from __future__ import annotations

import numpy as np

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
