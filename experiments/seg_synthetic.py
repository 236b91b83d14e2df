"""Segmentation demo: a small HRNetV2 on generated scenes of textured shapes (no download).

    python -m hrnet_jax.main --experiment=seg_synthetic --workdir=/tmp/seg_synthetic

Expected on a 2-core CPU: about 3 minutes, eval mIoU about 0.8 (5 classes, background included);
pictures of prediction next to ground truth in /tmp/seg_synthetic/pictures. `:smoke` runs a few
steps of a tiny model, for tests.
"""

from hrnet_jax.config import ExperimentConfig


def get_config(variant: str | None = None) -> ExperimentConfig:
    config = ExperimentConfig(task="segmentation")
    config.description = __doc__.splitlines()[0]
    config.model.arch = "tiny"
    config.model.width = 8
    config.model.head = "segmentation"
    config.model.num_classes = 5
    config.data.name = "synthetic_segmentation"
    config.data.image_size = (64, 64)
    config.data.batch_size = 16
    config.data.num_train = 4096
    config.data.num_eval = 128
    config.optim.optimizer = "adam"
    config.optim.learning_rate = 3e-3
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 20
    config.loop.num_steps = 600
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
        raise ValueError(f"unknown variant {variant!r} of seg_synthetic; choose smoke")
    return config
