"""Facial landmarks: normalised mean error (NME), failure rate at 0.1 and AUC, as
HRNet-Facial-Landmark-Detection reports them."""

from __future__ import annotations

import numpy as np

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
