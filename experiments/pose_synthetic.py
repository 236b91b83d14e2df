"""Pose demo: a small HRNetV1 finds the six joints of generated stick figures (no download).

    python -m hrnet_jax.main --experiment=pose_synthetic --workdir=/tmp/pose_synthetic

Expected on a 2-core CPU: about a minute, eval PCK@0.1 above 0.95 (1.0 seen); skeletons (ground truth
green, prediction magenta) in /tmp/pose_synthetic/pictures. `:smoke` runs a few steps, for tests.
"""

from hrnet_jax.config import ExperimentConfig


def get_config(variant: str | None = None) -> ExperimentConfig:
    config = ExperimentConfig(task="pose")
    config.description = __doc__.splitlines()[0]
    config.model.arch = "tiny"
    config.model.width = 8
    config.model.head = "pose"
    config.model.num_classes = 6
    config.data.name = "synthetic_pose"
    config.data.image_size = (64, 64)
    config.data.batch_size = 16
    config.data.num_train = 4096
    config.data.num_eval = 128
    config.optim.optimizer = "adam"
    config.optim.learning_rate = 2e-3
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 20
    config.loop.num_steps = 800
    config.loop.log_every = 20
    config.checkpoint.every_steps = 200
    if variant == "smoke":
        config.model.width = 4
        config.data.batch_size = 4
        config.data.num_eval = 8
        config.loop.num_steps = 4
        config.loop.log_every = 2
        config.checkpoint.every_steps = 2
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of pose_synthetic; choose smoke")
    return config
