r"""Mask R-CNN on HRNetV2p-W18, COCO 2017 instances, 1x schedule (mmdet's HRNet recipe).

    python -m hrnet_jax.data.prepare coco_detection --manual_dir COCO   # once
    python -m hrnet_jax.main --experiment=det_coco_mask_rcnn_w18_1x --workdir=DIR \
        --set model.pretrained=hrnetv2_w18_imagenet_pretrained.pth

Expected: val2017 box AP 37.7, mask AP 34.2 (mmdet's mask_rcnn_hrnetv2p_w18_1x_coco), from
ImageNet weights. Not yet reproduced with this code. mmdet's released checkpoint evaluates as it
is: `--mode=eval --set model.pretrained=mask_rcnn_hrnetv2p_w18_1x_coco.pth`. `:smoke` runs 4
steps of a tiny model on the person instances of the real sample in shared/data/coco_mini, for
tests.

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import with_variant
from hrnet_jax.recipes import faster_rcnn_smoke, mask_rcnn_coco


def get_config(variant: str | None = None) -> ExperimentConfig:
    return with_variant(mask_rcnn_coco("hrnet_w18"), variant, smoke=faster_rcnn_smoke)
