"""Semantic segmentation: pixel cross-entropy with an ignore label and class weights; mIoU."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.models.layers import resize_bilinear
from hrnet_jax.tasks import Task

IGNORE_LABEL = 255


def pixel_cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray,
                        class_weights: Sequence[float] | None = None,
                        ignore_label: int = IGNORE_LABEL) -> jnp.ndarray:
    """Mean cross-entropy over labelled pixels, weighted as PyTorch's CrossEntropyLoss(weight,
    ignore_index): sum(w[y] * ce) / sum(w[y]). Logits at 1/4 resolution are first upsampled
    bilinearly to the label size, as the reference does."""
    if logits.shape[1:3] != labels.shape[1:3]:
        logits = resize_bilinear(logits, labels.shape[1:3])
    logits = logits.astype(jnp.float32)
    valid = labels != ignore_label
    safe = jnp.where(valid, labels, 0)
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), safe[..., None], axis=-1)[..., 0]
    weight = valid.astype(jnp.float32)
    if class_weights is not None:
        weight = weight * jnp.asarray(class_weights, jnp.float32)[safe]
    return jnp.sum(ce * weight) / jnp.maximum(jnp.sum(weight), 1e-8)


def confusion_matrix(predictions: jnp.ndarray, labels: jnp.ndarray, num_classes: int,
                     weights: jnp.ndarray) -> jnp.ndarray:
    """(true, predicted) counts as a one-hot matmul: no scatter, fast on every backend."""
    valid = (labels != IGNORE_LABEL).astype(jnp.float32) * weights
    true = jax.nn.one_hot(jnp.where(labels == IGNORE_LABEL, 0, labels), num_classes) * valid[..., None]
    predicted = jax.nn.one_hot(predictions, num_classes)
    return jnp.einsum("...t,...p->tp", true, predicted)


def iou_summary(confusion: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, float]:
    """mIoU over the classes that occur (in truth or prediction), pixel accuracy, per-class IoU."""
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    names = class_names or [str(i) for i in range(len(tp))]
    out = {"miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
           "pixel_accuracy": float(tp.sum() / max(confusion.sum(), 1))}
    out.update({f"iou/{name}": float(v) for name, v in zip(names, iou) if np.isfinite(v)})
    return out


def colour_mask(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Labels -> RGB with `palette[label]`; the ignore label is black."""
    out = np.zeros((*labels.shape, 3), np.uint8)
    known = labels < len(palette)
    out[known] = palette[labels[known]]
    return out


def default_palette(num_classes: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    palette = rng.integers(40, 255, (num_classes, 3)).astype(np.uint8)
    palette[0] = (0, 0, 0)
    return palette


def make_task(config: Any, class_weights: Sequence[float] | None = None,
              class_names: Sequence[str] | None = None) -> Task:
    num_classes = config.model.num_classes
    palette = default_palette(num_classes)

    def loss(logits, batch):
        value = pixel_cross_entropy(logits, batch["label"], class_weights)
        return value, {}

    def eval_sums(logits, batch):
        logits = resize_bilinear(logits.astype(jnp.float32), batch["label"].shape[1:3])
        mask = jnp.broadcast_to(batch["mask"][:, None, None], batch["label"].shape)
        return {"confusion": confusion_matrix(jnp.argmax(logits, -1), batch["label"], num_classes,
                                              mask.astype(jnp.float32))}

    def summarize(sums):
        return iou_summary(sums["confusion"], class_names)

    def draw(image, logits, example):
        h, w = example["label"].shape
        upsampled = np.asarray(resize_bilinear(jnp.asarray(logits[None], jnp.float32), (h, w))[0])
        prediction = colour_mask(upsampled.argmax(-1), palette)
        truth = colour_mask(example["label"], palette)
        overlay = (0.5 * image + 0.5 * prediction).astype(np.uint8)
        return np.concatenate([image, overlay, prediction, truth], axis=1)

    return Task("segmentation", "segmentation", "miou", lambda example: example, loss, eval_sums,
                summarize, draw)
