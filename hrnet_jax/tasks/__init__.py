"""Tasks: each states its loss, its evaluation metric and how a prediction is drawn, in one
place; the trainer (hrnet_jax.training) is shared by all of them."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

Batch = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Task:
    """What the shared trainer needs from a task.

    prepare: host-side, one example -> the arrays the step consumes (e.g. heatmap targets).
    loss: (model outputs, batch) -> (scalar loss, dict of scalar figures to log).
    eval_sums: (model outputs, batch) -> dict of arrays summed over the evaluation set; examples
      with batch['mask'] == 0 (padding of the last batch) must not count.
    summarize: the summed dict -> the metrics written to metrics.jsonl (headline: `metric`).
    draw: (image uint8 HWC, one example's outputs as numpy, the example) -> a picture (uint8 HWC)
      of the prediction next to the ground truth.
    augment: training only, before `prepare`: (example, numpy Generator) -> example.
    render: (image uint8 HWC, one image's outputs as numpy) -> {suffix: picture} for
      `--mode=predict --input` (e.g. segmentation's colour mask and overlay).
    evaluate_image: when set, evaluation runs image by image on the host instead of the
      batched eval step: (predict: normalised images -> outputs, prepared example) -> sums.
    """

    name: str
    head: str
    metric: str
    prepare: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    loss: Callable[[Any, Batch], tuple[jnp.ndarray, dict[str, jnp.ndarray]]]
    eval_sums: Callable[[Any, Batch], dict[str, jnp.ndarray]]
    summarize: Callable[[dict[str, np.ndarray]], dict[str, float]]
    draw: Callable[[np.ndarray, Any, dict[str, np.ndarray]], np.ndarray]
    augment: Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]] | None = None
    render: Callable[[np.ndarray, Any], dict[str, np.ndarray]] | None = None
    evaluate_image: Callable[[Callable, dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None


def make_task(config: Any) -> Task:
    """The task of an `ExperimentConfig` (its `task` field), configured by it."""
    from hrnet_jax.tasks import classification, pose, segmentation

    factories = {"segmentation": segmentation.make_task, "pose": pose.make_task,
                 "classification": classification.make_task}
    if config.task not in factories:
        raise ValueError(f"unknown task {config.task!r}; choose one of {', '.join(factories)}")
    return factories[config.task](config)
