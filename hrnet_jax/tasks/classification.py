"""Image classification: softmax cross-entropy (optional label smoothing); top-1 / top-5."""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hrnet_jax.tasks import Task, whole_image


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray, label_smoothing: float = 0.0) -> jnp.ndarray:
    num_classes = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()


def top_k_correct(logits: jnp.ndarray, labels: jnp.ndarray, k: int) -> jnp.ndarray:
    """1.0 where the label is among the k highest logits."""
    label_logit = jnp.take_along_axis(logits, labels[:, None], -1)
    return (jnp.sum(logits > label_logit, -1) < k).astype(jnp.float32)


def make_task(config: Any, class_names: Sequence[str] | None = None) -> Task:
    with_top5 = config.model.num_classes > 5  # top-5 of 5 classes or fewer says nothing

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

    def draw(predict, example):
        image, logits = example["image"], whole_image(predict, example["image"])
        names = class_names or [str(i) for i in range(len(logits))]
        predicted, truth = int(np.argmax(logits)), int(example["label"])
        canvas = np.ascontiguousarray(cv2.resize(image, None, fx=2, fy=2,
                                                 interpolation=cv2.INTER_NEAREST))
        colour = (0, 255, 0) if predicted == truth else (255, 0, 0)
        cv2.putText(canvas, f"{names[predicted]} ({names[truth]})", (2, 12),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1, cv2.LINE_AA)
        return canvas

    return Task("classification", "classification", "top1", lambda example: example, loss,
                eval_sums, summarize, draw)
