"""HRNetV2-W48 on Cityscapes with OHEM.

    python -m hrnet_jax.data.prepare cityscapes --manual_dir DOWNLOADS   # once
    python -m hrnet_jax.main --experiment=seg_cityscapes_ohem --workdir=DIR

Expected: val mIoU 81.2 single-scale on whole 1024x2048 images (the paper's number; not yet
reproduced with this code). Start from ImageNet weights as the paper did. `:smoke` runs 4 steps
of a tiny model on the real sample in shared/data/cityscapes_mini, for tests.

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import with_variant
from hrnet_jax.recipes import cityscapes, cityscapes_smoke


def get_config(variant: str | None = None) -> ExperimentConfig:
    return with_variant(cityscapes("hrnet_w48", ohem=True), variant,
                        smoke=cityscapes_smoke)
