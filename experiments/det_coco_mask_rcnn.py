r"""Instance segmentation on COCO: Mask R-CNN on HRNetV2p, mmdet's HRNet recipe (1x schedule).

    python -m hrnet_jax.data.prepare coco_detection --manual_dir COCO   # once
    python -m hrnet_jax.main --experiment=det_coco_mask_rcnn:w32 --workdir=DIR \
        --set model.pretrained=hrnetv2_w32_imagenet_pretrained.pth

Expected: val2017 box AP / mask AP from ImageNet weights (mmdet's mask_rcnn_hrnetv2p_w*_1x_coco;
not yet reproduced with this code). mmdet's released checkpoints evaluate as they are:
`--mode=eval --set model.pretrained=mask_rcnn_hrnetv2p_w32_1x_coco.pth`.

Variants:
    w18    37.7 / 34.2 (the default)
    w32    41.2 / 37.1
    smoke  4 steps of a tiny model on the person instances of the real sample in
           shared/data/coco_mini, for tests

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import Variant
from hrnet_jax.models.two_stage import RCNNOptions
from hrnet_jax.recipes import arch, mmdet_coco, rcnn_optimizer, rcnn_smoke


def recipe() -> ExperimentConfig:
    """Faster R-CNN's recipe (det_coco_faster_rcnn), and the mask head on RoIAlign 14x14
    (adaptive sampling) of the positive RoIs, 28x28 masks, binary cross-entropy of each RoI's
    own class; evaluation pastes each detection's mask into the image at threshold 0.5."""
    detector = RCNNOptions(proposals=1000, train_pre_nms=2000, train_proposals=1000, rois=512,
                           positive_fraction=0.25, stage_ious=(0.5,),
                           stage_stds=(0.1, 0.1, 0.2, 0.2), stage_weights=(1.0,))
    return mmdet_coco("hrnet_w18", "mask_rcnn", detector,
                      rcnn_optimizer(milestones=(8 / 12, 11 / 12)), epochs=12)


VARIANTS = {
    "w18": Variant(arch("hrnet_w18"), group="width"),
    "w32": Variant(arch("hrnet_w32"), group="width"),
    "smoke": Variant(rcnn_smoke),
}
