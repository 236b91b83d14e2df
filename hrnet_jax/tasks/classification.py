"""Image classification: softmax cross-entropy (optional label smoothing); top-1 / top-5."""

from __future__ import annotations

from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hrnet_jax.data import transforms
from hrnet_jax.tasks import Task, whole_image


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray, label_smoothing: float = 0.0) -> jnp.ndarray:
    """Mean softmax cross-entropy; labels are class indices (N,) or soft targets (N, C) (mixup,
    CutMix)."""
    num_classes = logits.shape[-1]
    targets = labels if labels.ndim == 2 else jax.nn.one_hot(labels, num_classes)
    targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()


def top_k_correct(logits: jnp.ndarray, labels: jnp.ndarray, k: int) -> jnp.ndarray:
    """1.0 where the label is among the k highest logits."""
    label_logit = jnp.take_along_axis(logits, labels[:, None], -1)
    return (jnp.sum(logits > label_logit, -1) < k).astype(jnp.float32)


def class_names(config: Any) -> list[str]:
    """Names of the classes: the shapes of the synthetic set, ImageNet's 1000 (the list tfds
    ships, in label order), else the class numbers."""
    from hrnet_jax.data import synthetic

    if config.data.name == "synthetic_classification":
        return list(synthetic.SHAPES)
    if config.data.name == "imagenet2012":
        from tensorflow_datasets.datasets.siscore.labels import IMAGENET_LABELS_LIST
        return list(IMAGENET_LABELS_LIST)
    return [str(i) for i in range(config.model.num_classes)]


def make_task(config: Any) -> Task:
    data = config.data
    num_classes = config.model.num_classes
    with_top5 = num_classes > 5  # top-5 of 5 classes or fewer says nothing
    size = data.image_size[0]
    names = class_names(config)

    def prepare(example):
        """Evaluation framing (resize + centre crop) unless the image already has the input
        size (training crops, synthetic pictures)."""
        image = np.asarray(example["image"])
        if image.shape[:2] != tuple(data.image_size):
            image = transforms.resize_centre_crop(image, size)
        return {"image": image, "label": np.int32(example["label"])}

    augment = None
    if data.random_resized_crop:
        def augment(example, rng):
            image = transforms.random_resized_crop_flip(np.asarray(example["image"]), rng, size,
                                                        data.flip)
            return {"image": image, "label": np.int32(example["label"])}

    mix = None
    if data.mixup_alpha > 0 or data.cutmix_alpha > 0:
        def mix(batch, rng):
            images, targets = transforms.mix_batch(batch["image"], batch["label"], num_classes,
                                                   rng, data.mixup_alpha, data.cutmix_alpha)
            return {**batch, "image": images, "label": targets}

    def loss(logits, batch):
        return cross_entropy(logits, batch["label"], config.optim.label_smoothing), {}

    def eval_sums(logits, batch):
        sums = {"top1": jnp.sum(top_k_correct(logits, batch["label"], 1) * batch["mask"]),
                "count": jnp.sum(batch["mask"])}
        if with_top5:
            sums["top5"] = jnp.sum(top_k_correct(logits, batch["label"], 5) * batch["mask"])
        return sums

    def summarize(sums):
        count = max(float(sums["count"]), 1.0)
        return {k: float(v) / count for k, v in sums.items() if k != "count"}

    def labelled(image, text, colour):
        scale = max(1, 128 // max(image.shape[:2]))  # small pictures are enlarged to be legible
        canvas = np.ascontiguousarray(cv2.resize(image, None, fx=scale, fy=scale,
                                                 interpolation=cv2.INTER_NEAREST))
        for row, line in enumerate(text):
            cv2.putText(canvas, line, (2, 12 + 12 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour,
                        1, cv2.LINE_AA)
        return canvas

    def draw(predict, record):
        example = prepare(record)
        logits = whole_image(predict, example["image"])
        predicted, truth = int(np.argmax(logits)), int(example["label"])
        colour = (0, 255, 0) if predicted == truth else (255, 0, 0)
        return labelled(example["image"], [f"{names[predicted]} ({names[truth]})"], colour)

    def render(predict, image, boxes=None):
        """The top-5 classes and their probabilities, printed and written on the picture."""
        framed = transforms.resize_centre_crop(image, size)
        probabilities = np.asarray(jax.nn.softmax(whole_image(predict, framed).astype(np.float32)))
        best = np.argsort(-probabilities)[:5]
        lines = [f"{probabilities[i]:.3f} {names[i]}" for i in best]
        print("\n".join(lines))
        return {"top5": labelled(framed, lines, (255, 255, 0))}

    return Task("classification", "classification", "top1", prepare, loss, eval_sums, summarize,
                draw, augment, render, mix_batch=mix)
