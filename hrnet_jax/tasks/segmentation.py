"""Semantic segmentation: pixel cross-entropy with the dataset's ignore label, class weights
or OHEM (heads with an auxiliary output, HRNet-OCR's, add its plain cross-entropy weighted by
loss.aux_weight); mIoU (hrnet_jax.metrics.miou), whole images batched on the devices or, with
flip, several scales or images of different sizes, image by image
(hrnet_jax.inference.segmentation)."""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.data import transforms
from hrnet_jax.models import HEAD_DEFAULTS
from hrnet_jax.models.layers import resize_bilinear
from hrnet_jax.metrics.miou import IGNORE_LABEL, confusion_matrix, iou_summary
from hrnet_jax.tasks import Task, panels, whole_image

# --mode=predict runs the network on a whole picture: one of 8000x8000 exhausts a host's memory.
MAX_PREDICT_PIXELS = 4096 * 4096


def pixel_cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray,
                        class_weights: Sequence[float] | None = None,
                        ignore_label: int = IGNORE_LABEL, align_corners: bool = False
                        ) -> jnp.ndarray:
    """Mean cross-entropy over labelled pixels, weighted as PyTorch's CrossEntropyLoss(weight,
    ignore_index): sum(w[y] * ce) / sum(w[y]). Logits at 1/4 resolution are first upsampled
    bilinearly to the label size, as the reference does."""
    if logits.shape[1:3] != labels.shape[1:3]:
        logits = resize_bilinear(logits, labels.shape[1:3], align_corners)
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
                       ignore_label: int = IGNORE_LABEL, align_corners: bool = False
                       ) -> jnp.ndarray:
    """Online hard example mining, as HRNet-Semantic-Segmentation's OhemCrossEntropy: among the
    labelled pixels keep those whose true-class probability is below max(threshold, the
    `min_kept`-th smallest probability), and average their (class-weighted) losses.

    The reference mines on each GPU's batch; `groups` splits the batch the same way (the number
    of devices), and the per-group losses are averaged as data-parallel gradients are."""
    if logits.shape[1:3] != labels.shape[1:3]:
        logits = resize_bilinear(logits, labels.shape[1:3], align_corners)
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


def stored_label(example: dict) -> np.ndarray:
    """A record's label image as (H, W), as prepared."""
    label = np.asarray(example["label"])
    return label[..., 0] if label.ndim == 3 else label


def colour_mask(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Labels -> RGB with `palette[label]`; the ignore label is black."""
    out = np.zeros((*labels.shape, 3), np.uint8)
    known = labels < len(palette)
    out[known] = palette[labels[known]]
    return out


class Segmentation(Task):
    name = "segmentation"

    def __init__(self, config: Any, dataset: Any):
        super().__init__(config, dataset)
        self.num_classes = config.model.num_classes
        self.ignore_label = dataset.ignore_label
        self.class_names = dataset.names(self.num_classes)
        self.palette = dataset.palette(self.num_classes)
        weights = config.loss.class_weights or None
        if weights is not None and len(weights) != self.num_classes:
            raise ValueError(f"loss.class_weights has {len(weights)} weights for "
                             f"{self.num_classes} classes")
        self.class_weights = weights
        self.flip_pairs = dataset.label_flip_pairs
        # The head's resampling rule also upsamples its logits for the loss and evaluation.
        self.align_corners = HEAD_DEFAULTS[config.model.head].get("align_corners", False)
        self.devices = jax.device_count()
        if not config.data.crop_size:
            self.augment = None

    def prepare(self, example):
        label = self.dataset.training_labels(stored_label(example))
        bad = (label >= self.num_classes) & (label != self.ignore_label)
        if bad.any():
            name = example.get("file_name", b"?")
            name = name.decode() if isinstance(name, bytes) else name
            raise ValueError(f"{name}: label values {sorted(set(label[bad].tolist()))[:10]} outside "
                             f"0..{self.num_classes - 1} and {self.ignore_label} (ignore)")
        return {"image": np.asarray(example["image"]), "label": label}

    def augment(self, example, rng):
        """Scale the long side to base_size x one of train_scales, pad, crop, mirror."""
        data = self.config.data
        self.prepare(example)  # the labels checked, naming the file, before any resampling
        # Resampled as stored (the dataset's flip pairs and ignore label are stored values);
        # `prepare` maps them to training labels after.
        example = self.resized({"image": np.asarray(example["image"]),
                                "label": stored_label(example)})
        image, label = transforms.random_scale_crop_flip(
            example["image"], example["label"], rng, data.base_size, data.train_scales,
            tuple(data.crop_size), data.flip, self.ignore_label, self.flip_pairs)
        return {"image": image, "label": label}

    def resized(self, example):
        """Image (bilinear) and label (nearest, if given) at data.resize, if set."""
        if not self.config.data.resize:
            return example
        height, width = self.config.data.resize
        out = {"image": cv2.resize(example["image"], (width, height), interpolation=cv2.INTER_LINEAR)}
        if "label" in example:
            out["label"] = cv2.resize(example["label"], (width, height), interpolation=cv2.INTER_NEAREST)
        return out

    def loss(self, outputs, batch):
        """Cross-entropy (or OHEM) of the logits; with an auxiliary output (training outputs
        (logits, aux_logits)), plus loss.aux_weight x its plain cross-entropy, as the reference
        (whose OHEM mines the main output only)."""
        options = self.config.loss
        logits, aux = outputs if isinstance(outputs, tuple) else (outputs, None)
        labels = batch["label"]
        if options.ohem:
            groups = self.devices if labels.shape[0] % self.devices == 0 else 1
            value = ohem_cross_entropy(logits, labels, self.class_weights, options.ohem_threshold,
                                       options.ohem_min_kept, groups, self.ignore_label,
                                       self.align_corners)
        else:
            value = pixel_cross_entropy(logits, labels, self.class_weights, self.ignore_label,
                                        self.align_corners)
        if aux is None:
            return value, {}
        aux_loss = pixel_cross_entropy(aux, labels, self.class_weights, self.ignore_label,
                                       self.align_corners)
        return value + options.aux_weight * aux_loss, {"main_loss": value, "aux_loss": aux_loss}

    def eval_sums(self, logits, batch):
        logits = resize_bilinear(logits.astype(jnp.float32), batch["label"].shape[1:3],
                                 self.align_corners)
        mask = jnp.broadcast_to(batch["mask"][:, None, None], batch["label"].shape)
        return {"confusion": confusion_matrix(jnp.argmax(logits, -1), batch["label"],
                                              self.num_classes, mask.astype(jnp.float32),
                                              self.ignore_label)}

    def evaluate(self, evaluation):
        """Batched on the devices where whole images of one size are evaluated as they are;
        else (flip, several scales, images of several sizes, data.resize) image by image."""
        settings = self.config.eval
        if (settings.flip or tuple(settings.scales) != (1.0,) or self.config.data.resize
                or not self.dataset.same_size_images):
            return self.summarize(evaluation.rows(self.evaluate_image))
        return self.summarize(evaluation.sums())

    def log_scores(self, predict, image: np.ndarray, size: tuple[int, int]) -> jax.Array:
        """The evaluation's inference (eval.scales, eval.flip, sliding windows) of a uint8
        image (already at data.resize, if set): (size, classes) log-scores on the device,
        resized to `size` (the label's or the picture's, as the reference's LIP testval)."""
        from hrnet_jax.data.pipeline import normalize
        from hrnet_jax.inference.segmentation import multi_scale_log_scores, resize_log_scores

        data, settings = self.config.data, self.config.eval
        base = data.base_size or max(image.shape[:2])
        crop = tuple(data.crop_size) or image.shape[:2]
        log_scores = multi_scale_log_scores(predict, normalize(image), settings.scales,
                                            settings.flip, base, crop, self.flip_pairs,
                                            self.align_corners, settings.pad_to_crop)
        return resize_log_scores(log_scores, tuple(size), self.align_corners)

    def evaluate_image(self, predict, record):
        example = self.prepare(record)
        labels = example["label"]
        log_scores = self.log_scores(predict, self.resized(example)["image"], labels.shape)
        # On the device to the end: only the confusion matrix comes back.
        confusion = confusion_matrix(jnp.argmax(log_scores, -1), jnp.asarray(labels),
                                     self.num_classes, jnp.ones(labels.shape, jnp.float32),
                                     self.ignore_label)
        return {"confusion": np.asarray(confusion)[None]}

    def summarize(self, combined):
        confusion = np.asarray(combined["confusion"])
        if confusion.ndim == 3:  # one row an image
            confusion = confusion.sum(0)
        return iou_summary(confusion, self.class_names)

    def predicted_mask(self, logits, size):
        upsampled = resize_bilinear(jnp.asarray(logits[None], jnp.float32), size,
                                    self.align_corners)[0]
        return colour_mask(np.asarray(jnp.argmax(upsampled, -1)), self.palette)

    def results(self, predict, image, boxes=None):
        """`labels` (H, W) and `probabilities` (H, W, classes) at the image's size, by the
        evaluation's inference (eval.scales, eval.flip, sliding windows, data.resize)."""
        resized = self.resized({"image": image})["image"]
        height, width = resized.shape[:2]
        if height * width > MAX_PREDICT_PIXELS:  # the network runs on the whole picture
            raise ValueError(f"{width}x{height} pixels, above the {MAX_PREDICT_PIXELS:,}-pixel "
                             "limit of a picture segmented whole (its activations grow with "
                             "it): resize it first, or crop it into tiles")
        log_scores = self.log_scores(predict, resized, image.shape[:2])
        return jax.device_get({"labels": jnp.argmax(log_scores, -1).astype(jnp.int32),
                               "probabilities": jax.nn.softmax(log_scores, -1)})

    def render(self, predict, image, boxes=None):
        mask = colour_mask(self.results(predict, image)["labels"], self.palette)
        return {"mask": mask, "overlay": (0.5 * image + 0.5 * mask).astype(np.uint8)}

    def draw(self, predict, record):
        example = self.prepare(record)
        image = example["image"]
        logits = whole_image(predict, self.resized({"image": image})["image"])
        prediction = self.predicted_mask(logits, example["label"].shape)
        truth = colour_mask(example["label"], self.palette)
        overlay = (0.5 * image + 0.5 * prediction).astype(np.uint8)
        return panels([("input", image), ("prediction", overlay), ("predicted classes", prediction),
                       ("ground truth", truth)])
