"""Pose demo: a small HRNetV1 finds the six joints of generated stick figures (no download).

    python -m hrnet_jax.main --experiment=pose_synthetic --workdir=/tmp/pose_synthetic

Expected on a 2-core CPU: about a minute, eval PCK@0.1 above 0.95 (1.0 seen, mean error
1.3 px); skeletons (ground truth green, prediction magenta) in /tmp/pose_synthetic/pictures.

Variants:
    smoke  4 steps of a tiny model, for tests
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import Variant
from hrnet_jax.recipes import smoke, synthetic_demo


def recipe() -> ExperimentConfig:
    config = synthetic_demo("pose", "pose", num_classes=6, dataset="synthetic_pose")
    config.optim.learning_rate = 2e-3
    config.loop.num_steps = 800
    return config


VARIANTS = {"smoke": Variant(smoke)}
