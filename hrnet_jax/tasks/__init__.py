"""Tasks: each is one class stating its targets, loss, evaluation and pictures; the trainer
(hrnet_jax.training) is shared by all of them. What a task knows of its data (classes, palette,
keypoints, evaluation protocol) it reads from the dataset (hrnet_jax.data.datasets).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Protocol

import jax
import jax.numpy as jnp
import numpy as np

Batch = dict[str, Any]
Record = dict[str, np.ndarray]
# The model in inference mode: images (N, H, W, 3), uint8 pictures (normalised on the device)
# or normalised floats, and for the detectors each image's size in its padded canvas (N, 2)
# (optional), -> outputs as numpy (the trainer's is a hrnet_jax.training.step.Network, whose
# `on_device` leaves them on the device).
Predict = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class BeforeNMS:
    """A task's `postprocess` cut before its class-wise NMS, for `export --format=onnx`: the
    converter cannot express our NMS's loop, so the exported graph ends in ONNX's own
    NonMaxSuppression over these candidates instead. `candidates`: model outputs -> boxes
    (N, K, 4) x0, y0, x1, y1, scores (N, K) (0: none), classes (N, K)."""

    candidates: Callable[[Any], dict[str, jnp.ndarray]]
    iou_threshold: float
    max_detections: int


class Evaluation(Protocol):
    """What the trainer offers a task's `evaluate`: one pass over the evaluation set, split over
    the hosts, combined on every host."""

    predict: Predict

    def sums(self) -> dict[str, np.ndarray]:
        """The task's `eval_sums` of each batch, on the devices, added over the set."""

    def rows(self, evaluate_image: Callable[[Predict, Record], dict[str, np.ndarray]]
             ) -> dict[str, np.ndarray]:
        """`evaluate_image(predict, record)` of every image, on the host, each key's rows
        concatenated over images and hosts (a per-image sum is one row: add them up)."""


class Task:
    """What the shared trainer needs from a task. Subclasses set `name` and define the methods; `augment`, `mix_batch` and `postprocess` stay None where a task has none.

    prepare: host-side, one example -> the arrays the step consumes (targets; the image stays
      uint8, normalised by the step on the device).
    augment: training only, before `prepare`: (example, numpy Generator) -> example.
    mix_batch: training only, a whole batch: (batch, Generator) -> batch (mixup, CutMix).
    loss: (model outputs, batch) -> (scalar loss, dict of scalar figures to log).
    eval_sums: (model outputs, batch) -> arrays added over the evaluation set, on the devices;
      examples with batch['mask'] == 0 (padding of the last batch) must not count.
    evaluate: the evaluation's figures for metrics.jsonl (default: `summarize` of the sums).
    draw: (predict, one evaluation record) -> a picture of the prediction and the ground truth.
    render: (predict, uint8 image, person boxes or None) -> {suffix: picture} for
      `--mode=predict --input`.
    postprocess: applied to the model's outputs inside the jitted inference (e.g. detection's
      decoding and NMS), so that only the result leaves the device.
    before_nms: where `postprocess` ends in class-wise NMS, the part before it (`BeforeNMS`).
    model_inputs: (batch) -> keyword arguments of the model in training (default none; a
      two-stage detector samples its RoIs from the ground truth inside its forward).
    """

    name: ClassVar[str]
    augment: Callable[[Record, np.random.Generator], Record] | None = None
    mix_batch: Callable[[Batch, np.random.Generator], Batch] | None = None
    postprocess: Callable[[Any], Any] | None = None
    before_nms: BeforeNMS | None = None

    def __init__(self, config: Any, dataset: Any):
        self.config, self.dataset = config, dataset

    def prepare(self, example: Record) -> Record:
        raise NotImplementedError

    def model_inputs(self, batch: Batch) -> dict[str, Any]:
        return {}

    def loss(self, outputs: Any, batch: Batch) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
        raise NotImplementedError

    def eval_sums(self, outputs: Any, batch: Batch) -> dict[str, jnp.ndarray]:
        raise NotImplementedError(f"the {self.name} task evaluates image by image")

    def evaluate(self, evaluation: Evaluation) -> dict[str, float]:
        return self.summarize(evaluation.sums())

    def summarize(self, combined: dict[str, np.ndarray]) -> dict[str, float]:
        raise NotImplementedError

    def draw(self, predict: Predict, record: Record) -> np.ndarray:
        raise NotImplementedError

    def results(self, predict: Predict, image: np.ndarray, boxes: np.ndarray | None = None
                ) -> dict[str, np.ndarray]:
        """One uint8 RGB image's predictions at its own size, with the evaluation's pre- and
        post-processing: what `hrnet_jax.Predictor` returns and `render` draws."""
        raise NotImplementedError(f"prediction on pictures is not available for the {self.name} "
                                  "task yet")

    def render(self, predict: Predict, image: np.ndarray, boxes: np.ndarray | None
               ) -> dict[str, np.ndarray]:
        """The pictures of `results` for --mode=predict, by name."""
        raise NotImplementedError(f"--input prediction is not available for the {self.name} "
                                  "task yet")


PANEL_HEIGHT = 256  # a picture's panels are enlarged to at least this height, to be read
CAPTION_HEIGHT = 22
SEPARATOR = 4


def panels(named: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """One example's pictures side by side, each under its caption, in one order for every
    task: the input, the prediction(s), the ground truth. Small pictures are enlarged (nearest,
    so that pixels stay visible) to at least PANEL_HEIGHT; all share the tallest height."""
    import cv2

    height = max(PANEL_HEIGHT, *(picture.shape[0] for _, picture in named))
    row = []
    for caption, picture in named:
        width = round(picture.shape[1] * height / picture.shape[0])
        resized = cv2.resize(np.ascontiguousarray(picture), (width, height),
                             interpolation=cv2.INTER_NEAREST)
        bar = np.zeros((CAPTION_HEIGHT, width, 3), np.uint8)
        cv2.putText(bar, caption, (4, CAPTION_HEIGHT - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (255, 255, 255), 1, cv2.LINE_AA)
        if row:
            row.append(np.full((height + CAPTION_HEIGHT, SEPARATOR, 3), 128, np.uint8))
        row.append(np.concatenate([bar, resized.astype(np.uint8)], axis=0))
    return np.concatenate(row, axis=1)


def whole_image(predict: Predict, image: np.ndarray) -> Any:
    """The outputs of one uint8 image given whole to the network."""
    return jax.tree.map(lambda x: x[0], predict(image[None]))  # uint8: normalised on the device


def task_classes() -> dict[str, Callable[[Any, Any], Task]]:
    """Task name -> its factory (config, dataset) -> Task."""
    from hrnet_jax.tasks import classification, detection, landmarks, pose, segmentation

    return {"segmentation": segmentation.Segmentation, "pose": pose.make_pose_task,
            "landmarks": landmarks.Landmarks, "classification": classification.Classification,
            "detection": detection.make_detection_task}


# The model head each task trains.
TASK_HEADS = {"segmentation": ("segmentation", "segmentation_ocr"), "pose": ("pose",), "landmarks": ("landmarks",),
              "classification": ("classification",),
              "detection": ("detection", "faster_rcnn", "mask_rcnn", "cascade_rcnn",
                            "cascade_mask_rcnn", "htc")}


def check_pairing(config: Any) -> Any:
    """The config's dataset, after checking that task, head and dataset belong together."""
    from hrnet_jax.data import datasets

    if config.task not in TASK_HEADS:
        raise ValueError(f"unknown task {config.task!r}; choose one of {', '.join(TASK_HEADS)}")
    if config.model.head not in TASK_HEADS[config.task]:
        raise ValueError(f"model.head={config.model.head!r} does not go with task="
                         f"{config.task!r} (which trains the head "
                         f"{' or '.join(TASK_HEADS[config.task])})")
    dataset = datasets.get(config.data.name)
    if dataset.task != config.task:
        raise ValueError(f"data.name={dataset.name!r} is labelled for the {dataset.task!r} task, "
                         f"not for task={config.task!r}")
    return dataset


def make_task(config: Any) -> Task:
    """The task of an `ExperimentConfig` (its `task` field) on its dataset (`data.name`)."""
    dataset = check_pairing(config)
    return task_classes()[config.task](config, dataset)
