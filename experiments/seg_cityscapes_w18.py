"""HRNetV2-W18 on Cityscapes.

    python -m hrnet_jax.data.prepare cityscapes --manual_dir DOWNLOADS   # once
    python -m hrnet_jax.main --experiment=seg_cityscapes_w18 --workdir=DIR

Expected: the papers give no Cityscapes val mIoU for W18 (W18-Small-v2 76.2, W48 81.1 bracket
it); none reproduced with this code yet. Start from ImageNet weights as the paper did. `:smoke` runs 4 steps
of a tiny model on the real sample in shared/data/cityscapes_mini, for tests.

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import with_variant
from hrnet_jax.recipes import cityscapes, cityscapes_smoke


def get_config(variant: str | None = None) -> ExperimentConfig:
    return with_variant(cityscapes("hrnet_w18", ohem=False), variant,
                        smoke=cityscapes_smoke)
