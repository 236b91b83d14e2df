"""The generated datasets of the embedded demos and the tests, one a task family
(hrnet_jax.data.synthetic): no download, no preparation, each picture a function of its seed."""

from __future__ import annotations

import dataclasses

from hrnet_jax.data import synthetic
from hrnet_jax.data.datasets import DetectionDataset, GeneratedDataset
from hrnet_jax.data.keypoint_sets import KeypointSet

STICK_FIGURES = KeypointSet(name="stick_figures", joints=synthetic.POSE_JOINTS, flip_pairs=(),
                            limbs=synthetic.POSE_LIMBS, upper_body=())


@dataclasses.dataclass(frozen=True)
class GeneratedDetection(GeneratedDataset, DetectionDataset):
    """Generated shapes, boxed and labelled by kind (category ids from 1)."""


DATASETS = (
    GeneratedDataset(name="synthetic_segmentation", task="segmentation",
                     source=synthetic.SyntheticSegmentation, same_size_images=True),
    GeneratedDataset(name="synthetic_pose", task="pose", source=synthetic.SyntheticPose,
                     keypoints=STICK_FIGURES),
    GeneratedDataset(name="synthetic_classification", task="classification",
                     source=synthetic.SyntheticClassification, class_names=synthetic.SHAPES),
    GeneratedDetection(name="synthetic_detection", task="detection",
                       source=synthetic.SyntheticDetection,
                       categories=tuple((label + 1, name)
                                        for label, name in enumerate(synthetic.SHAPES))),
)
