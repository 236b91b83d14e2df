r"""Object detection on COCO: Faster R-CNN on HRNetV2p, mmdet's HRNet recipe (1x schedule).

    python -m hrnet_jax.data.prepare coco_detection --manual_dir COCO   # once
    python -m hrnet_jax.main --experiment=det_coco_faster_rcnn:w32 --workdir=DIR \
        --set model.pretrained=hrnetv2_w32_imagenet_pretrained.pth

Expected: val2017 box AP from ImageNet weights (mmdet's faster_rcnn_hrnetv2p_w*_1x_coco; not
yet reproduced with this code). mmdet's released checkpoints evaluate as they are:
`--mode=eval --set model.pretrained=faster_rcnn_hrnetv2p_w32_1x_coco.pth`.

Variants:
    w18    36.9 (the default)
    w32    40.2
    w40    41.2
    smoke  4 steps of a tiny model on the person boxes of the real sample in
           shared/data/coco_mini, for tests

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import Variant
from hrnet_jax.models.two_stage import RCNNOptions
from hrnet_jax.recipes import arch, mmdet_coco, rcnn_optimizer, rcnn_smoke


def recipe() -> ExperimentConfig:
    """mmdet's COCO detection recipe (recipes.mmdet_coco: 800 x <=1333 images, flip, 12
    epochs, x0.1 after 8 and 11; recipes.rcnn_optimizer: SGD 0.02 for batch 16); HRFPN 256
    channels at strides 4..64, RPN anchors of scale 8 and ratios 0.5 / 1 / 2, 2000 proposals
    before NMS and 1000 after in training (1000 at test), 512 RoIs an image a quarter positive
    at IoU 0.5; evaluation: score 0.05, class-wise NMS 0.5, 100 detections an image."""
    detector = RCNNOptions(proposals=1000, train_pre_nms=2000, train_proposals=1000, rois=512,
                           positive_fraction=0.25, stage_ious=(0.5,),
                           stage_stds=(0.1, 0.1, 0.2, 0.2), stage_weights=(1.0,))
    return mmdet_coco("hrnet_w18", "faster_rcnn", detector, rcnn_optimizer(milestones=(8 / 12, 11 / 12)),
                      epochs=12)


VARIANTS = {
    "w18": Variant(arch("hrnet_w18"), group="width"),
    "w32": Variant(arch("hrnet_w32"), group="width"),
    "w40": Variant(arch("hrnet_w40"), group="width"),
    "smoke": Variant(rcnn_smoke),
}
