"""Tasks: each states its loss, its evaluation metric and how a prediction is drawn, in one
place; the trainer (hrnet_jax.training) is shared by all of them."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Batch = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Task:
    """What the shared trainer needs from a task.

    `predict` below is the model in inference mode: normalised images (N, H, W, 3) -> outputs
    as numpy; tasks decide what they feed it.

    prepare: host-side, one training example -> the arrays the step consumes (e.g. targets).
    loss: (model outputs, batch) -> (scalar loss, dict of scalar figures to log).
    eval_sums: (model outputs, batch) -> dict of arrays summed over the evaluation set; examples
      with batch['mask'] == 0 (padding of the last batch) must not count. None when the task
      evaluates image by image (`evaluate_image`).
    summarize: the evaluation's combined dict -> the metrics written to metrics.jsonl
      (headline: `metric`).
    draw: (predict, one evaluation record) -> a picture (uint8 HWC) of the prediction next to
      the ground truth.
    augment: training only, before `prepare`: (example, numpy Generator) -> example.
    render: (predict, image uint8 HWC, person boxes (N, 4) or None) -> {suffix: picture} for
      `--mode=predict --input` (segmentation's colour mask and overlay, pose's skeletons).
    evaluate_image: when set, evaluation runs image by image on the host instead of the
      batched eval step: (predict, one evaluation record) -> a dict of arrays, combined over
      images by `eval_combine`: "sum" adds them, "concat" stacks their rows (e.g. one row a
      detected person), each key on its own.
    postprocess: applied to the model's outputs inside the jitted inference (`predict`), e.g.
      detection's decoding and NMS, so that only the result leaves the device.
    """

    name: str
    head: str
    metric: str
    prepare: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    loss: Callable[[Any, Batch], tuple[jnp.ndarray, dict[str, jnp.ndarray]]]
    eval_sums: Callable[[Any, Batch], dict[str, jnp.ndarray]] | None
    summarize: Callable[[dict[str, np.ndarray]], dict[str, float]]
    draw: Callable[[Callable, dict[str, np.ndarray]], np.ndarray]
    augment: Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]] | None = None
    render: Callable[[Callable, np.ndarray, np.ndarray | None], dict[str, np.ndarray]] | None = None
    evaluate_image: Callable[[Callable, dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    eval_combine: str = "sum"
    mix_batch: Callable[[Batch, np.random.Generator], Batch] | None = None
    postprocess: Callable[[Any], Any] | None = None


def whole_image(predict: Callable, image: np.ndarray) -> Any:
    """The outputs of one uint8 image given whole to the network."""
    from hrnet_jax.data.pipeline import normalize

    return jax.tree.map(lambda x: x[0], predict(normalize(image)[None]))


def make_task(config: Any) -> Task:
    """The task of an `ExperimentConfig` (its `task` field), configured by it."""
    from hrnet_jax.tasks import classification, detection, pose, segmentation, topdown

    factories = {"segmentation": segmentation.make_task, "pose": pose.make_task,
                 "landmarks": topdown.make_task, "classification": classification.make_task,
                 "detection": detection.make_task}
    if config.task not in factories:
        raise ValueError(f"unknown task {config.task!r}; choose one of {', '.join(factories)}")
    return factories[config.task](config)
