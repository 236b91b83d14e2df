"""Image classification: softmax cross-entropy (optional label smoothing); top-1 / top-5."""

from __future__ import annotations

from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hrnet_jax.data import transforms
from hrnet_jax.metrics.topk import top_k_sums, top_k_summary
from hrnet_jax.tasks import Task, panels, whole_image


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray, label_smoothing: float = 0.0) -> jnp.ndarray:
    """Mean softmax cross-entropy; labels are class indices (N,) or soft targets (N, C) (mixup,
    CutMix)."""
    num_classes = logits.shape[-1]
    targets = labels if labels.ndim == 2 else jax.nn.one_hot(labels, num_classes)
    targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()


def labelled(image: np.ndarray, text: list[str], colour: tuple[int, int, int]) -> np.ndarray:
    """The picture with lines of text on it; small pictures are enlarged to be legible."""
    scale = max(1, 128 // max(image.shape[:2]))
    canvas = np.ascontiguousarray(cv2.resize(image, None, fx=scale, fy=scale,
                                             interpolation=cv2.INTER_NEAREST))
    for row, line in enumerate(text):
        cv2.putText(canvas, line, (2, 12 + 12 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour,
                    1, cv2.LINE_AA)
    return canvas


class Classification(Task):
    name = "classification"

    def __init__(self, config: Any, dataset: Any):
        super().__init__(config, dataset)
        data = config.data
        self.num_classes = config.model.num_classes
        self.ks = (1, 5) if self.num_classes > 5 else (1,)  # top-5 of 5 classes says nothing
        self.size = data.image_size[0]
        self.names = dataset.names(self.num_classes)
        if not data.random_resized_crop:
            self.augment = None
        if not (data.mixup_alpha > 0 or data.cutmix_alpha > 0):
            self.mix_batch = None

    def prepare(self, example):
        """Evaluation framing (resize + centre crop) unless the image already has the input
        size (training crops, synthetic pictures)."""
        image = np.asarray(example["image"])
        if image.shape[:2] != tuple(self.config.data.image_size):
            image = transforms.resize_centre_crop(image, self.size)
        return {"image": image, "label": np.int32(example["label"])}

    def augment(self, example, rng):
        """RandomResizedCrop to the input size, mirrored if data.flip."""
        image = transforms.random_resized_crop_flip(np.asarray(example["image"]), rng, self.size,
                                                    self.config.data.flip)
        return {"image": image, "label": np.int32(example["label"])}

    def mix_batch(self, batch, rng):
        """mixup / CutMix of the batch (timm's alphas), of the normalised images (the blends
        are not uint8: the step passes float images through as they are)."""
        from hrnet_jax.data.pipeline import normalize

        data = self.config.data
        images, targets = transforms.mix_batch(normalize(batch["image"]), batch["label"],
                                               self.num_classes, rng, data.mixup_alpha,
                                               data.cutmix_alpha)
        return {**batch, "image": images, "label": targets}

    def loss(self, logits, batch):
        return cross_entropy(logits, batch["label"], self.config.optim.label_smoothing), {}

    def eval_sums(self, logits, batch):
        return top_k_sums(logits, batch["label"], batch["mask"], self.ks)

    def summarize(self, combined):
        return top_k_summary(combined)

    def draw(self, predict, record):
        example = self.prepare(record)
        logits = whole_image(predict, example["image"])
        predicted, truth = int(np.argmax(logits)), int(example["label"])
        verdict = "right" if predicted == truth else "wrong"
        return panels([(f"prediction: {self.names[predicted]} ({verdict})", example["image"]),
                       (f"ground truth: {self.names[truth]}", example["image"])])

    def results(self, predict, image, boxes=None):
        """`classes` (the best five, best first), their `scores`, and every class's
        `probabilities`, from the evaluation's framing (resize, centre crop)."""
        framed = transforms.resize_centre_crop(image, self.size)
        probabilities = np.asarray(jax.nn.softmax(whole_image(predict, framed).astype(np.float32)))
        best = np.argsort(-probabilities)[:5]
        return {"classes": best, "scores": probabilities[best], "probabilities": probabilities}

    def render(self, predict, image, boxes=None):
        """The top-5 classes and their probabilities, printed and written on the picture."""
        found = self.results(predict, image)
        lines = [f"{score:.3f} {self.names[i]}" for i, score in zip(found["classes"],
                                                                    found["scores"])]
        print("\n".join(lines))
        framed = transforms.resize_centre_crop(image, self.size)
        return {"top5": labelled(framed, lines, (255, 255, 0))}
