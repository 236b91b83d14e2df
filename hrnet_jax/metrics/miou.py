"""Semantic segmentation: the confusion matrix and mean IoU.

Our headline `miou` averages the IoU over the classes that occur in the evaluated set (in truth or
prediction), cityscapesScripts' and mmseg's convention. The official HRNet `validate()` divides by
all N classes, absent ones counting 0: the same on full Cityscapes val, lower on subsets. Both are
reported; the official one as `miou_all_classes`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

IGNORE_LABEL = 255


def confusion_matrix(predictions: jnp.ndarray, labels: jnp.ndarray, num_classes: int,
                     weights: jnp.ndarray, ignore_label: int = IGNORE_LABEL) -> jnp.ndarray:
    """(true, predicted) counts as a one-hot matmul: no scatter, fast on every backend."""
    valid = (labels != ignore_label).astype(jnp.float32) * weights
    true = jax.nn.one_hot(jnp.where(labels == ignore_label, 0, labels), num_classes) * valid[..., None]
    predicted = jax.nn.one_hot(predictions, num_classes)
    return jnp.einsum("...t,...p->tp", true, predicted)


def iou_summary(confusion: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, float]:
    """mIoU over the classes that occur, the official mIoU over all classes, pixel accuracy and
    per-class IoU (`iou/NAME`, classes that occur)."""
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    names = class_names or [str(i) for i in range(len(tp))]
    out = {"miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
           "miou_all_classes": float(np.nan_to_num(iou).mean()),
           "pixel_accuracy": float(tp.sum() / max(confusion.sum(), 1))}
    out.update({f"iou/{name}": float(v) for name, v in zip(names, iou) if np.isfinite(v)})
    return out
