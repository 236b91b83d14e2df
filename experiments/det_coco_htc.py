r"""Instance segmentation on COCO: Hybrid Task Cascade on HRNetV2p, mmdet's recipe (20e).

    python -m hrnet_jax.data.prepare coco_detection --manual_dir COCO   # once
    python -m hrnet_jax.main --experiment=det_coco_htc:w32 --workdir=DIR \
        --set model.pretrained=hrnetv2_w32_imagenet_pretrained.pth

Expected: val2017 box AP / mask AP from ImageNet weights (mmdet's htc_hrnetv2p_w*_20e_coco; not
yet reproduced with this code). mmdet's released checkpoints evaluate as they are:
`--mode=eval --set model.pretrained=htc_hrnetv2p_w32_20e_coco.pth`.

HTC's semantic branch trains on COCO-stuff's labels: extract stuffthingmaps_trainval2017.zip
into COCO (COCO/stuffthingmaps/train2017/*.png beside annotations/) before preparing; without
them training names the missing folder. Evaluation needs none.

Variants:
    w18    42.8 / 37.9 (the default)
    w32    45.4 / 39.9
    w40    46.4 / 40.8
    smoke  4 steps of a tiny model on the person instances of the real sample in
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
    config = mmdet_coco("hrnet_w18", "htc", cascade_options("htc"),
                        rcnn_optimizer(milestones=(16 / 20, 19 / 20)), epochs=20)
    config.eval.score_threshold = 0.001  # mmdet's HTC configs test at score 0.001
    return config


VARIANTS = {
    "w18": Variant(arch("hrnet_w18"), group="width"),
    "w32": Variant(arch("hrnet_w32"), group="width"),
    "w40": Variant(arch("hrnet_w40"), group="width"),
    "smoke": Variant(rcnn_smoke),
}
