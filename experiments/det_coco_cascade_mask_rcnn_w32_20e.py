r"""Cascade Mask R-CNN on HRNetV2p-W32, COCO 2017 instances, 20e schedule (mmdet's HRNet recipe).

    python -m hrnet_jax.data.prepare coco_detection --manual_dir COCO   # once
    python -m hrnet_jax.main --experiment=det_coco_cascade_mask_rcnn_w32_20e --workdir=DIR \
        --set model.pretrained=hrnetv2_w32_imagenet_pretrained.pth

Expected: val2017 box AP 44.3, mask AP 38.6 (mmdet's cascade_mask_rcnn_hrnetv2p_w32_20e_coco), from ImageNet weights. Not
yet reproduced with this code. mmdet's released checkpoint evaluates as it is:
`--mode=eval --set model.pretrained=cascade_mask_rcnn_hrnetv2p_w32_20e_coco.pth`. `:smoke` runs 4 steps of a tiny
model on the person instances of the real sample in shared/data/coco_mini, for tests.

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import with_variant
from hrnet_jax.recipes import cascade_coco, faster_rcnn_smoke


def get_config(variant: str | None = None) -> ExperimentConfig:
    return with_variant(cascade_coco("hrnet_w32", "cascade_mask_rcnn"), variant, smoke=faster_rcnn_smoke)
