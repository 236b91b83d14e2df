"""The keypoint definition a pose or landmark dataset declares: joint names, mirror pairs,
skeleton, halves and OKS sigmas. Each dataset's own set is in its file under data/datasets/."""

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
