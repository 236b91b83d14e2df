"""MPII Human Pose: 16 joints, PCKh@0.5 (HRNetV1 pose).

    python -m hrnet_jax.data.prepare mpii --manual_dir MPII   # images/ + the HRNet release's annot/*.json

Prepared by hrnet_jax.data.builders.mpii: one record per image with its annotated persons (their
boxes from the reference's adjusted centre and scale, and head sizes from gt_valid.mat's head
boxes where given). Training takes one person at a time; evaluation predicts in every annotated
box and reports PCKh@0.5 (mean without pelvis and thorax) and per body part.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hrnet_jax.data.datasets import PersonDataset
from hrnet_jax.data.keypoint_sets import KeypointSet

KEYPOINTS = KeypointSet(
    name="mpii",
    joints=("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
            "pelvis", "thorax", "upper_neck", "head_top", "right_wrist", "right_elbow",
            "right_shoulder", "left_shoulder", "left_elbow", "left_wrist"),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    limbs=((0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9), (7, 12),
           (12, 11), (11, 10), (7, 13), (13, 14), (14, 15)),
    upper_body=(7, 8, 9, 10, 11, 12, 13, 14, 15),
)
TRAIN_PERSONS = 22246


@dataclasses.dataclass(frozen=True)
class Mpii(PersonDataset):
    """MPII's protocol: every annotated person, PCKh@0.5."""

    def evaluation_rows(self, record, persons, predicted, box_scores, scales):
        return {"keypoints": predicted, "truth": persons["keypoints"][..., :2],
                "visible": persons["keypoints"][..., 2], "head_size": persons["head_size"]}

    def summarize(self, rows: dict[str, np.ndarray]) -> dict[str, float]:
        from hrnet_jax.metrics.pckh import pckh

        return pckh(rows["keypoints"][..., :2], rows["truth"], rows["visible"], rows["head_size"])


MPII = Mpii(name="mpii", task="pose", builder=("mpii", "HrnetMpii"), tfds_name="hrnet_mpii",
            keypoints=KEYPOINTS, train_examples=TRAIN_PERSONS, eval_split="valid")

DATASETS = (MPII,)
