"""Classification demo: a small HRNet tells discs, squares, triangles and crosses apart.

    python -m hrnet_jax.main --experiment=cls_synthetic --workdir=/tmp/cls_synthetic

Expected on a 2-core CPU: about 4 minutes, eval top-1 about 0.87 (4 classes, chance 0.25;
0.875 seen); labelled pictures in /tmp/cls_synthetic/pictures.

Variants:
    smoke  4 steps of a tiny model, for tests
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import Variant
from hrnet_jax.recipes import smoke, synthetic_demo


def recipe() -> ExperimentConfig:
    config = synthetic_demo("classification", "classification",
                            num_classes=4, dataset="synthetic_classification")
    config.data.image_size = (32, 32)  # the classification head is heavy: keep pictures small
    config.optim.learning_rate = 5e-3
    config.loop.num_steps = 800
    return config


VARIANTS = {"smoke": Variant(smoke)}
