"""Object detection on HRNetV2p, COCO box AP (and mask AP for the detectors with masks): the
one-stage FCOS (head "detection", models/fcos_head.py) and the two-stage R-CNN family (heads
"faster_rcnn", "mask_rcnn", "cascade_rcnn", "cascade_mask_rcnn", "htc": models/two_stage.py),
each described once in models/detectors.py.

FCOS's loss (hrnet_jax.tasks.fcos): targets assigned on the device from the padded boxes (size
ranges, centre sampling in the improved style, smallest area wins); sigmoid focal loss per
positive, (G)IoU weighted by the centerness targets, centerness BCE per positive, positives
counted over the whole global batch. The R-CNNs' (hrnet_jax.tasks.rcnn): the RPN's sampled
objectness and deltas plus each stage's sampled classes and deltas, weighted by the stage's
loss weight, as mmdet's configs; with masks each stage's positive RoIs' mask BCE (28x28
targets sampled on the device from each ground truth's box-relative mask, `box_masks`); HTC's
semantic branch adds its cross-entropy on COCO-stuff's labels at 1/8 scale (`semantic`).
Training data: flip and (multi-scale) resizing of the short side, padded to the orientation's
canvas (hrnet_jax.data.detection). Evaluation, image by image: the image resized with the largest
short side, the head decoded and NMSed on the device (FCOS: `postprocess`; the R-CNNs detect
inside the model), boxes mapped back to the original pixels, Mask R-CNN's 28x28 masks pasted
into the original image; the dataset's protocol (`evaluation_rows`, `summarize`: COCO's box and
mask AP by pycocotools) scores the gathered rows.
"""

from __future__ import annotations

from typing import Any, Callable

import cv2
import jax
import numpy as np

from hrnet_jax.data.detection import (decode_masks, flip_boxes, flip_masks, object_arrays,
                                      resize_and_pad, semantic_target, training_boxes)
from hrnet_jax.detection import paste
from hrnet_jax.detection.decode import point_candidates, point_detections
from hrnet_jax.detection.mask_targets import mask_targets
from hrnet_jax.metrics import coco
from hrnet_jax.models.detectors import DETECTORS
from hrnet_jax.models.fcos_head import style_named
from hrnet_jax.tasks import BeforeNMS, Task, fcos, panels, rcnn

TRUTH_COLOUR, PREDICTION_COLOUR = (0, 255, 0), (255, 0, 255)
DRAW_SCORE = 0.3  # pictures show the detections scoring at least this
MASK_OPACITY = 0.5


def overlay_masks(image: np.ndarray, masks: np.ndarray, colour: tuple[int, int, int]
                  ) -> np.ndarray:
    """(D, H, W) boolean instance masks laid over a copy of the image, translucent, each
    instance in a shade of `colour` (so that touching instances stay apart)."""
    picture = image.astype(np.float32)
    for index, mask in enumerate(masks):
        shade = np.asarray(colour, np.float32) * (1.0 - 0.35 * (index % 3) / 2)
        picture[mask] = (1 - MASK_OPACITY) * picture[mask] + MASK_OPACITY * shade
    return picture.round().astype(np.uint8)


def draw_boxes(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
               scores: np.ndarray | None, colour: tuple[int, int, int],
               names: tuple[str, ...]) -> np.ndarray:
    """x0, y0, x1, y1 boxes drawn on a copy of the image, each captioned with its class name
    (and score) above the box, or below it at the top edge. Pictures under 256 pixels are
    enlarged by a whole factor first, so that the captions stay legible."""
    zoom = max(1, 256 // max(image.shape[:2]))
    canvas = np.ascontiguousarray(cv2.resize(image, None, fx=zoom, fy=zoom,
                                             interpolation=cv2.INTER_NEAREST))
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    for row, (box, label) in enumerate(zip(boxes, labels)):
        x0, y0, x1, y1 = (int(round(float(v) * zoom)) for v in box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, thickness)
        caption = names[int(label)]
        if scores is not None:
            caption += f" {float(scores[row]):.2f}"
        (width, height), _ = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        top = y0 - height - 4 if y0 >= height + 4 else y1
        cv2.rectangle(canvas, (x0, top), (x0 + width + 2, top + height + 4), colour, -1)
        cv2.putText(canvas, caption, (x0 + 1, top + height + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def make_detection_task(config: Any, dataset: Any) -> "Detection":
    """The detection task of the configured head: one-stage (FCOS) or two-stage (R-CNNs)."""
    two_stage = DETECTORS[config.model.head].two_stage
    return (TwoStageDetection if two_stage else OneStageDetection)(config, dataset)


class Detection(Task):
    """What every detector's task shares: data, evaluation and pictures."""

    name = "detection"

    def __init__(self, config: Any, dataset: Any):
        super().__init__(config, dataset)
        data = config.data
        self.options = config.model.detector
        self.masks = DETECTORS[config.model.head].masks  # also segments each instance
        self.canvas = tuple(data.image_size)
        self.eval_short_side = max(data.short_sides)
        self.names = tuple(dataset.names(config.model.num_classes))

    def augment(self, example, rng):
        """Mirror (data.flip) and draw the short side of this image (multi-scale training)."""
        data = self.config.data
        image, objects = example["image"], object_arrays(example)
        if data.flip and rng.uniform() < 0.5:
            objects["bbox"] = flip_boxes(objects["bbox"], image.shape[1])
            if self.masks and "mask" in objects:  # (without masks prepare says what is wrong)
                objects["mask"] = flip_masks(objects["mask"], *image.shape[:2])
            image = image[:, ::-1]
            if "semantic" in example:
                example = {**example, "semantic": np.asarray(example["semantic"])[:, ::-1]}
        return {**{k: v for k, v in example.items() if k == "semantic"},
                "image": image, "objects": objects, "short_side": int(rng.choice(data.short_sides))}

    def prepare(self, example):
        data = self.config.data
        picture, scale = resize_and_pad(example["image"],
                                        int(example.get("short_side", self.eval_short_side)),
                                        data.max_long_side, self.canvas)
        name = example.get("file_name", b"an image")
        name = name.decode() if isinstance(name, bytes) else str(name)
        mask_image_size = example["image"].shape[:2] if self.masks else None
        height, width = example["image"].shape[:2]
        size = np.array([int(height * scale + 0.5), int(width * scale + 0.5)], np.int32)
        out = {"image": picture, "image_size": size,
               **training_boxes(object_arrays(example), scale, data.max_boxes, name,
                                mask_image_size)}
        if getattr(self.options, "semantic_classes", 0):  # HTC: COCO-stuff's labels at 1/8
            out["semantic"] = semantic_target(example, size, picture.shape[:2], name)
        return out

    def detect(self, predict: Callable, image: np.ndarray, encoded_masks: bool = False
               ) -> dict[str, np.ndarray]:
        """One uint8 image -> `boxes` x0, y0, x1, y1 in its pixels, `scores`, `labels` (best
        first) and with masks `masks` (D, H, W) bool, or with `encoded_masks` their (D,)
        compressed RLE strings, pasted and run-length coded on the device (what evaluation
        keeps: hrnet_jax.detection.paste). The two-stage detectors clip their boxes to the
        resized image on the device (as mmdet); all are clipped to the image here."""
        picture, scale = resize_and_pad(image, self.eval_short_side,
                                        self.config.data.max_long_side, self.canvas)
        height, width = image.shape[:2]
        size = np.array([[int(height * scale + 0.5), int(width * scale + 0.5)]], np.int32)
        # uint8: normalised on the device (a quarter of the bytes sent). Encoded masks are
        # pasted and run-length coded on the device, where the network left them.
        call = getattr(predict, "on_device", predict) if encoded_masks else predict
        found = jax.tree.map(lambda x: x[0], call(picture[None], size))
        probabilities = found.pop("masks", None)
        found = jax.device_get(found)
        valid = np.asarray(found["valid"], bool)
        every_box = np.clip(np.asarray(found["boxes"], np.float32) / scale, 0, [width, height] * 2)
        boxes = every_box[valid]
        out = {"boxes": boxes, "scores": np.asarray(found["scores"])[valid],
               "labels": np.asarray(found["classes"])[valid]}
        if probabilities is not None and encoded_masks:
            out["masks"] = paste.pasted_rles(probabilities, every_box, height, width, valid)
        elif probabilities is not None:
            out["masks"] = coco.paste_masks(np.asarray(probabilities)[valid], boxes, height, width)
        return out

    def evaluate(self, evaluation):
        return self.summarize(evaluation.rows(self.evaluate_image))

    def evaluate_image(self, predict, record):
        return self.dataset.evaluation_rows(record, self.detect(predict, record["image"],
                                                                encoded_masks=True))

    def summarize(self, rows):
        return self.dataset.summarize(rows)

    def predicted_picture(self, predict, image, found=None):
        found = self.detect(predict, image) if found is None else found
        shown = found["scores"] >= DRAW_SCORE
        if "masks" in found:
            image = overlay_masks(image, found["masks"][shown], PREDICTION_COLOUR)
        return draw_boxes(image, found["boxes"][shown], found["labels"][shown],
                          found["scores"][shown], PREDICTION_COLOUR, self.names)

    def draw(self, predict, record):
        """The input, the detections scoring at least DRAW_SCORE and the ground-truth boxes
        (green), with their instance masks, translucent, for the detectors with masks."""
        objects = object_arrays(record)
        corners = np.concatenate([objects["bbox"][:, :2],
                                  objects["bbox"][:, :2] + objects["bbox"][:, 2:]], 1)
        image = record["image"]
        if self.masks:
            image = overlay_masks(image, decode_masks(objects["mask"], *image.shape[:2]) > 0,
                                  TRUTH_COLOUR)
        truth = draw_boxes(image, corners, objects["label"], None, TRUTH_COLOUR, self.names)
        return panels([("input", record["image"]),
                       (f"prediction (score >= {DRAW_SCORE})",
                        self.predicted_picture(predict, record["image"])),
                       ("ground truth", truth)])

    def results(self, predict, image, boxes=None):
        """`boxes` (D, 4) x0, y0, x1, y1 in the image's pixels, `scores`, `labels` (class
        indices into `names`), best first, and `masks` (D, H, W) for the detectors with masks."""
        return self.detect(predict, image)

    def person_boxes(self, found: dict[str, np.ndarray], min_score: float) -> np.ndarray:
        """(N, 4) x, y, w, h of the `results` of class "person" scoring at least `min_score`:
        what a top-down pose model is run on (--detector)."""
        kept = (found["labels"] == list(self.names).index("person")) & \
            (found["scores"] >= min_score)
        corners = found["boxes"][kept]
        return np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], 1)

    def render(self, predict, image, boxes=None):
        """The detections scoring at least DRAW_SCORE, printed (class, score, box x0 y0 x1 y1 in
        the image's pixels) and drawn (with their masks for the detectors with masks)."""
        found = self.results(predict, image)
        shown = np.flatnonzero(found["scores"] >= DRAW_SCORE)
        print(f"{len(shown)} detections scoring at least {DRAW_SCORE}"
              + "".join(f"\n{self.names[found['labels'][i]]} {found['scores'][i]:.3f} "
                        + " ".join(f"{v:.1f}" for v in found["boxes"][i]) for i in shown))
        return {"detections": self.predicted_picture(predict, image, found)}


class OneStageDetection(Detection):
    """FCOS: targets assigned to the pyramid's points in the loss, decoding after the model."""

    def __init__(self, config: Any, dataset: Any):
        super().__init__(config, dataset)
        self.strides = tuple(self.options.strides)
        self.style = style_named(self.options.style)

    def loss(self, outputs, batch):
        return fcos.batch_loss(outputs, batch["boxes"], batch["labels"], batch["box_mask"],
                               self.strides, self.style)

    def postprocess(self, outputs):
        settings = self.config.eval
        return point_detections(outputs, self.strides, settings.score_threshold,
                                settings.pre_nms_top_k, settings.nms_threshold,
                                settings.max_detections, self.style.score)

    @property
    def before_nms(self) -> BeforeNMS:
        settings = self.config.eval
        return BeforeNMS(lambda outputs: point_candidates(outputs, self.strides,
                                                          settings.score_threshold,
                                                          settings.pre_nms_top_k,
                                                          self.style.score),
                         settings.nms_threshold, settings.max_detections)


class TwoStageDetection(Detection):
    """The R-CNNs sample their RoIs from the ground truth inside their forward and detect
    inside it; the loss adds the RPN's and every stage's, each stage's weighted."""

    def model_inputs(self, batch):
        return {"targets": {k: batch[k] for k in ("boxes", "labels", "box_mask")},
                "image_sizes": batch["image_size"]}

    def loss(self, outputs, batch):
        o = self.options
        total, figures = rcnn.rpn_loss(outputs["rpn_objectness"], outputs["rpn_deltas"],
                                       outputs["anchors"], batch["boxes"], batch["box_mask"],
                                       outputs["rpn_key"], beta=o.rpn_beta)
        stages = outputs["stages"]
        for index, (stage, weight) in enumerate(zip(stages, o.stage_weights)):
            suffix = "" if len(stages) == 1 else f"_s{index}"
            loss, parts = rcnn.rcnn_loss(stage["logits"], stage["deltas"], stage["samples"],
                                         beta=o.box_beta)
            if "mask_logits" in stage:  # on the positives' slots the head returns
                samples = stage["mask_samples"]
                targets = jax.vmap(mask_targets)(samples["rois"], batch["boxes"],
                                                 batch["box_masks"], samples["matched"])
                parts["loss_mask"] = rcnn.mask_loss(stage["mask_logits"], targets,
                                                    samples["labels"], samples["positive"])
                loss = loss + parts["loss_mask"]
            total = total + weight * loss
            figures.update({name + suffix: value for name, value in parts.items()})
        if "semantic_logits" in outputs:
            figures["loss_semantic"] = rcnn.semantic_loss(outputs["semantic_logits"],
                                                          batch["semantic"])
            total = total + o.semantic_weight * figures["loss_semantic"]
        return total, figures
