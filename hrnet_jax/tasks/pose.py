"""Human pose (HRNetV1): top-down heatmaps of each person box on COCO and MPII
(hrnet_jax.tasks.topdown), or whole pictures of one stick figure each in the synthetic demo."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from hrnet_jax.tasks import Task, panels, whole_image
from hrnet_jax.tasks.heatmaps import (STRIDE, decode_quarter_offset, draw_skeleton,
                                      gaussian_heatmaps, heatmap_mse)
from hrnet_jax.tasks.topdown import PREDICTION_COLOUR, TRUTH_COLOUR, TopDownKeypoints


class TopDownPose(TopDownKeypoints):
    name = "pose"


class WholeImagePose(Task):
    """One figure a picture, the whole picture in: PCK at 0.1 x the longer image side, batched
    on the devices (the synthetic demo)."""

    name = "pose"

    def __init__(self, config: Any, dataset: Any):
        super().__init__(config, dataset)
        height, width = config.data.image_size
        self.heatmap_size = (-(-height // STRIDE), -(-width // STRIDE))
        self.threshold = 0.1 * max(height, width)
        self.limbs = dataset.keypoints.limbs

    def prepare(self, example):
        return example

    def loss(self, outputs, batch):
        maps, weights = gaussian_heatmaps(batch["joints"], batch["visible"], self.heatmap_size,
                                          self.config.data.heatmap_sigma)
        return heatmap_mse(outputs, maps, weights), {}

    def eval_sums(self, outputs, batch):
        coords, _ = decode_quarter_offset(outputs)
        error = jnp.linalg.norm(coords * STRIDE - batch["joints"], axis=-1)
        counted = batch["visible"] * batch["mask"][:, None]
        return {"correct": jnp.sum((error < self.threshold) * counted),
                "joints": jnp.sum(counted), "error_px": jnp.sum(error * counted)}

    def summarize(self, combined):
        joints = max(float(combined["joints"]), 1.0)
        return {"pck": float(combined["correct"]) / joints,
                "mean_error_px": float(combined["error_px"]) / joints}

    def draw(self, predict, record):
        image = record["image"]
        coords, _ = decode_quarter_offset(np.asarray(whole_image(predict, image))[None])
        predicted = coords[0] * STRIDE
        truth = draw_skeleton(image, record["joints"], self.limbs, TRUTH_COLOUR, record["visible"])
        return panels([("input", image),
                       ("prediction", draw_skeleton(image, predicted, self.limbs,
                                                    PREDICTION_COLOUR)),
                       ("ground truth", truth)])


def make_pose_task(config: Any, dataset: Any) -> Task:
    """Top-down on datasets of persons in boxes (PersonDataset), whole pictures otherwise."""
    from hrnet_jax.data.datasets import PersonDataset

    cls = TopDownPose if isinstance(dataset, PersonDataset) else WholeImagePose
    return cls(config, dataset)
