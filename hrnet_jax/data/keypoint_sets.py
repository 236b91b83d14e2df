"""The keypoint definitions of the pose datasets: joint names, mirror pairs, skeleton, halves.

COCO's come from its annotation format (`categories[0]`, OKS sigmas from cocoapi); MPII's joint
order is the one of the official annotation and of HRNet's `mpii.py`.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class KeypointSet:
    name: str
    joints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]  # joints that swap under a horizontal mirror
    limbs: tuple[tuple[int, int], ...]  # 0-based pairs drawn as a skeleton
    upper_body: tuple[int, ...]  # the half-body augmentation picks upper or lower joints
    sigmas: tuple[float, ...] = ()  # COCO OKS per-joint constants, x10 as cocoapi writes them

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def flip_permutation(self) -> np.ndarray:
        """Joint index -> the index of its mirror image."""
        order = np.arange(self.num_joints)
        for a, b in self.flip_pairs:
            order[a], order[b] = b, a
        return order


COCO = KeypointSet(
    name="coco",
    joints=("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
            "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
            "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    # The annotation's `skeleton` is 1-based; these are the same 19 limbs, 0-based.
    limbs=((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
           (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)),
    upper_body=tuple(range(11)),
    sigmas=(.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89),
)

MPII = KeypointSet(
    name="mpii",
    joints=("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
            "pelvis", "thorax", "upper_neck", "head_top", "right_wrist", "right_elbow",
            "right_shoulder", "left_shoulder", "left_elbow", "left_wrist"),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    limbs=((0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9), (7, 12),
           (12, 11), (11, 10), (7, 13), (13, 14), (14, 15)),
    upper_body=(7, 8, 9, 10, 11, 12, 13, 14, 15),
)

KEYPOINT_SETS = {"coco_keypoints": COCO, "mpii": MPII}  # data.name -> its keypoints
