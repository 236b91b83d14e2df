"""Detection demo: FCOS on a small HRNetV2p finds and names generated shapes (no download).

    python -m hrnet_jax.main --experiment=det_synthetic --workdir=/tmp/det_synthetic

Expected on a 2-core CPU: about 2.5 minutes, eval box AP about 0.8 (AP50 about 0.95; 0.81 and
0.955 seen; 4 classes: disc, square, triangle, cross); boxes next to the ground truth in /tmp/det_synthetic/pictures. The pyramid
keeps the neck's own strides 4..64 and 64-channel towers: the shapes are 13 to 33 pixels wide.

Variants:
    smoke  4 steps of a tiny model, for tests
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import Variant
from hrnet_jax.recipes import smoke, synthetic_demo


def recipe() -> ExperimentConfig:
    config = synthetic_demo("detection", "detection", num_classes=4, dataset="synthetic_detection")
    config.model.detector.strides, config.model.detector.channels = (4, 8, 16, 32, 64), 64
    config.data.short_sides, config.data.max_long_side, config.data.max_boxes = (64,), 64, 4
    config.data.flip = True
    return config


VARIANTS = {"smoke": Variant(smoke)}
