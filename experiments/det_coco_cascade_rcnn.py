r"""Object detection on COCO: Cascade R-CNN on HRNetV2p, mmdet's HRNet recipe (20e).

    python -m hrnet_jax.data.prepare coco_detection --manual_dir COCO   # once
    python -m hrnet_jax.main --experiment=det_coco_cascade_rcnn:w32 --workdir=DIR \
        --set model.pretrained=hrnetv2_w32_imagenet_pretrained.pth

Expected: val2017 box AP from ImageNet weights (mmdet's cascade_rcnn_hrnetv2p_w*_20e_coco; not yet
reproduced with this code). mmdet's released checkpoints evaluate as they are:
`--mode=eval --set model.pretrained=cascade_rcnn_hrnetv2p_w32_20e_coco.pth`.

Variants:
    w18    41.2 (the default)
    w32    43.3
    w40    43.8
    smoke  4 steps of a tiny model on the person boxes of the real sample in
           shared/data/coco_mini, for tests

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import Variant
from hrnet_jax.recipes import arch, cascade_options, mmdet_coco, rcnn_optimizer, rcnn_smoke


def recipe() -> ExperimentConfig:
    """mmdet's COCO detection recipe (recipes.mmdet_coco) for 20 epochs, x0.1 after 16 and 19;
    the cascade's stages as recipes.cascade_options states them."""
    config = mmdet_coco("hrnet_w18", "cascade_rcnn", cascade_options("cascade_rcnn"),
                        rcnn_optimizer(milestones=(16 / 20, 19 / 20)), epochs=20)
    return config


VARIANTS = {
    "w18": Variant(arch("hrnet_w18"), group="width"),
    "w32": Variant(arch("hrnet_w32"), group="width"),
    "w40": Variant(arch("hrnet_w40"), group="width"),
    "smoke": Variant(rcnn_smoke),
}
