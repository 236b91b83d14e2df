"""HRNetV2-W48 on LIP human parsing (the official recipe).

    python -m hrnet_jax.data.prepare lip --manual_dir LIP   # once
    python -m hrnet_jax.main --experiment=seg_lip_w48 --workdir=DIR \\
        --set model.pretrained=hrnetv2_w48_imagenet_pretrained.pth

Expected: val mIoU 55.83 at 473x473 with the flip test (official HRNet-Semantic-Segmentation
README; not yet reproduced with this code). Start from ImageNet weights as the paper did.
`:smoke` runs 4 steps of a tiny model on the real sample in shared/data/lip_mini, for tests.

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import with_variant
from hrnet_jax.recipes import lip, parsing_smoke


def get_config(variant: str | None = None) -> ExperimentConfig:
    return with_variant(lip("hrnet_w48", head="segmentation"), variant, smoke=parsing_smoke)
