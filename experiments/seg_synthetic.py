"""Segmentation demo: a small HRNetV2 on generated scenes of textured shapes (no download).

    python -m hrnet_jax.main --experiment=seg_synthetic --workdir=/tmp/seg_synthetic

Expected on a 2-core CPU: about 1.5 minutes, eval mIoU about 0.8 (5 classes, background
included; 0.82 seen); prediction next to ground truth in /tmp/seg_synthetic/pictures.

Variants:
    smoke  4 steps of a tiny model, for tests
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import Variant
from hrnet_jax.recipes import smoke, synthetic_demo


def recipe() -> ExperimentConfig:
    return synthetic_demo("segmentation", "segmentation", num_classes=5,
                          dataset="synthetic_segmentation")


VARIANTS = {"smoke": Variant(smoke)}
