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



def _chain(*runs: range) -> tuple[tuple[int, int], ...]:
    """Consecutive points joined into polylines (face outlines)."""
    return tuple((i, i + 1) for run in runs for i in run[:-1])


def _outline(start: int, count: int) -> tuple[int, ...]:
    return tuple(range(start, start + count))


# Facial landmarks: the mirror pairs of HRNet-Facial-Landmark-Detection (its MATCHED_PARTS);
# `normaliser` names the two points whose distance normalises the NME (None: the box size).
WFLW = KeypointSet(
    name="wflw", joints=tuple(f"p{i}" for i in range(98)),
    flip_pairs=(*((i, 32 - i) for i in range(16)), (33, 46), (34, 45), (35, 44), (36, 43),
                (37, 42), (38, 50), (39, 49), (40, 48), (41, 47), (60, 72), (61, 71), (62, 70),
                (63, 69), (64, 68), (65, 75), (66, 74), (67, 73), (55, 59), (56, 58), (76, 82),
                (77, 81), (78, 80), (87, 83), (86, 84), (88, 92), (89, 91), (95, 93), (96, 97)),
    limbs=_chain(range(0, 33), range(33, 38), range(42, 47), range(51, 55), range(55, 60),
                 range(60, 68), range(68, 76), range(76, 88), range(88, 96)),
    upper_body=())
FACE_300W = KeypointSet(
    name="300w", joints=tuple(f"p{i}" for i in range(68)),
    flip_pairs=(*((i, 16 - i) for i in range(8)), (17, 26), (18, 25), (19, 24), (20, 23),
                (21, 22), (31, 35), (32, 34), (36, 45), (37, 44), (38, 43), (39, 42), (40, 47),
                (41, 46), (48, 54), (49, 53), (50, 52), (61, 63), (60, 64), (67, 65), (59, 55),
                (58, 56)),
    limbs=_chain(range(0, 17), range(17, 22), range(22, 27), range(27, 31), range(31, 36),
                 range(36, 42), range(42, 48), range(48, 60), range(60, 68)),
    upper_body=())
COFW = KeypointSet(
    name="cofw", joints=tuple(f"p{i}" for i in range(29)),
    flip_pairs=((0, 1), (4, 6), (2, 3), (5, 7), (8, 9), (10, 11), (12, 14), (16, 17), (13, 15),
                (18, 19), (22, 23)),
    limbs=(), upper_body=())
AFLW = KeypointSet(
    name="aflw", joints=tuple(f"p{i}" for i in range(19)),
    flip_pairs=((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9), (12, 14), (15, 17)),
    limbs=(), upper_body=())

# NME normalisers: outer eye corners (300W), eye corners 60/72 (WFLW), pupils 8/9 (COFW);
# AFLW divides by the face box size.
NME_NORMALISERS = {"wflw": (60, 72), "300w": (36, 45), "cofw": (8, 9), "aflw": None}

KEYPOINT_SETS = {"coco_keypoints": COCO, "mpii": MPII}  # data.name -> its keypoints
LANDMARK_SETS = {"wflw": WFLW, "300w": FACE_300W, "cofw": COFW, "aflw": AFLW}
