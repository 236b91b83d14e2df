"""Semantic segmentation: pixel cross-entropy with an ignore label and class weights; mIoU."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.data import transforms
from hrnet_jax.models.layers import resize_bilinear
from hrnet_jax.tasks import Task, whole_image

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


def ohem_cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray,
                       class_weights: Sequence[float] | None = None, threshold: float = 0.9,
                       min_kept: int = 131072, groups: int = 1,
                       ignore_label: int = IGNORE_LABEL) -> jnp.ndarray:
    """Online hard example mining, as HRNet-Semantic-Segmentation's OhemCrossEntropy: among the
    labelled pixels keep those whose true-class probability is below max(threshold, the
    `min_kept`-th smallest probability), and average their (class-weighted) losses.

    The reference mines on each GPU's batch; `groups` splits the batch the same way (the number
    of devices), and the per-group losses are averaged as data-parallel gradients are."""
    if logits.shape[1:3] != labels.shape[1:3]:
        logits = resize_bilinear(logits, labels.shape[1:3])
    batch = labels.shape[0]
    if batch % groups:
        raise ValueError(f"OHEM: batch {batch} does not split into {groups} device batches")
    logits = logits.astype(jnp.float32).reshape(groups, -1, logits.shape[-1])
    labels = labels.reshape(groups, -1)
    weights = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)

    def one_group(group_logits, group_labels):
        valid = group_labels != ignore_label
        safe = jnp.where(valid, group_labels, 0)
        log_p = jnp.take_along_axis(jax.nn.log_softmax(group_logits), safe[:, None], -1)[:, 0]
        loss = -log_p if weights is None else -log_p * weights[safe]
        p_true = jnp.where(valid, jnp.exp(log_p), jnp.inf)
        count = jnp.sum(valid)
        kth = jnp.sort(p_true)[jnp.clip(jnp.minimum(min_kept, count - 1), 0)]
        kept = valid & (p_true < jnp.maximum(kth, threshold))
        return jnp.sum(jnp.where(kept, loss, 0.0)) / jnp.maximum(jnp.sum(kept), 1)

    return jnp.mean(jax.vmap(one_group)(logits, labels))


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


def make_task(config: Any) -> Task:
    num_classes = config.model.num_classes
    data = config.data
    if data.name == "cityscapes":
        from hrnet_jax.data import cityscapes_labels
        class_names, palette = cityscapes_labels.CLASSES, cityscapes_labels.PALETTE
    else:
        class_names, palette = None, default_palette(num_classes)
    options = config.loss
    class_weights = options.class_weights or None
    if class_weights is not None and len(class_weights) != num_classes:
        raise ValueError(f"loss.class_weights has {len(class_weights)} weights for "
                         f"{num_classes} classes")
    devices = jax.device_count()

    def prepare(example):
        label = np.asarray(example["label"])
        label = label[..., 0] if label.ndim == 3 else label
        bad = (label >= num_classes) & (label != IGNORE_LABEL)
        if bad.any():
            name = example.get("file_name", b"?")
            name = name.decode() if isinstance(name, bytes) else name
            raise ValueError(f"{name}: label values {sorted(set(label[bad].tolist()))[:10]} outside "
                             f"0..{num_classes - 1} and {IGNORE_LABEL} (ignore)")
        return {"image": np.asarray(example["image"]), "label": label}

    augment = None
    if data.crop_size:
        def augment(example, rng):
            example = prepare(example)  # validated before anything is resampled
            image, label = transforms.random_scale_crop_flip(
                example["image"], example["label"], rng, data.base_size, data.train_scales,
                tuple(data.crop_size), data.flip, IGNORE_LABEL)
            return {"image": image, "label": label}

    def loss(logits, batch):
        if options.ohem:
            groups = devices if batch["label"].shape[0] % devices == 0 else 1
            value = ohem_cross_entropy(logits, batch["label"], class_weights,
                                       options.ohem_threshold, options.ohem_min_kept, groups)
        else:
            value = pixel_cross_entropy(logits, batch["label"], class_weights)
        return value, {}

    def eval_sums(logits, batch):
        logits = resize_bilinear(logits.astype(jnp.float32), batch["label"].shape[1:3])
        mask = jnp.broadcast_to(batch["mask"][:, None, None], batch["label"].shape)
        return {"confusion": confusion_matrix(jnp.argmax(logits, -1), batch["label"], num_classes,
                                              mask.astype(jnp.float32))}

    def summarize(sums):
        return iou_summary(sums["confusion"], class_names)

    def predicted_mask(logits, size):
        upsampled = resize_bilinear(jnp.asarray(logits[None], jnp.float32), size)[0]
        return colour_mask(np.asarray(jnp.argmax(upsampled, -1)), palette)

    def render(predict, image, boxes=None):
        mask = predicted_mask(whole_image(predict, image), image.shape[:2])
        return {"mask": mask, "overlay": (0.5 * image + 0.5 * mask).astype(np.uint8)}

    def draw(predict, record):
        example = prepare(record)
        image = example["image"]
        prediction = predicted_mask(whole_image(predict, image), example["label"].shape)
        truth = colour_mask(example["label"], palette)
        overlay = (0.5 * image + 0.5 * prediction).astype(np.uint8)
        return np.concatenate([image, overlay, prediction, truth], axis=1)

    evaluate_image = None
    if config.eval.flip or tuple(config.eval.scales) != (1.0,):
        from hrnet_jax.data.pipeline import normalize
        from hrnet_jax.evaluation.segmentation import multi_scale_probabilities

        def evaluate_image(predict, record):
            example = prepare(record)
            base = data.base_size or max(example["label"].shape)
            crop = tuple(data.crop_size) or example["label"].shape
            scores = multi_scale_probabilities(predict, normalize(example["image"]),
                                               config.eval.scales, config.eval.flip, base, crop)
            labels = example["label"]
            return {"confusion": np.asarray(confusion_matrix(
                jnp.asarray(scores.argmax(-1)), jnp.asarray(labels), num_classes,
                jnp.ones(labels.shape, jnp.float32)))}

    return Task("segmentation", "segmentation", "miou", prepare, loss, eval_sums, summarize, draw,
                augment, render, evaluate_image)
