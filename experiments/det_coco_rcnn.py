r"""Object detection and instance segmentation on COCO: Faster R-CNN and Mask R-CNN on HRNetV2p,
mmdet's HRNet recipe (1x schedule).

    python -m hrnet_jax.data.prepare coco_detection --manual_dir COCO   # once
    python -m hrnet_jax.main --experiment=det_coco_rcnn:mask_rcnn,w32 --workdir=DIR \
        --set model.pretrained=hrnetv2_w32_imagenet_pretrained.pth

Expected: val2017 box AP (/ mask AP) from ImageNet weights, mmdet's
faster_rcnn_hrnetv2p_w*_1x_coco and mask_rcnn_hrnetv2p_w*_1x_coco (not yet reproduced with this
code). mmdet's released checkpoints evaluate as they are: `--mode=eval --set
model.pretrained=mask_rcnn_hrnetv2p_w32_1x_coco.pth`.

Variants:
    faster_rcnn  the default framework: box AP 36.9 (W18), 40.2 (W32), 41.2 (W40)
    mask_rcnn    box / mask AP 37.7 / 34.2 (W18), 41.2 / 37.1 (W32); mmdet has no W40
    w18          the default width
    w32          the width of HRNetV2p-W32
    w40          the width of HRNetV2p-W40
    smoke        4 steps of a tiny model on the person instances of the real sample in
                 shared/data/coco_mini, for tests

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import Variant
from hrnet_jax.models.two_stage import RCNNOptions
from hrnet_jax.recipes import arch, head, mmdet_coco, rcnn_optimizer, rcnn_smoke


def recipe() -> ExperimentConfig:
    """mmdet's COCO detection recipe (recipes.mmdet_coco: 800 x <=1333 images, flip; SGD 0.02
    for batch 16, recipes.rcnn_optimizer) for 12 epochs, x0.1 after 8 and 11; HRFPN 256
    channels at strides 4..64, RPN anchors of scale 8 and ratios 0.5 / 1 / 2, 2000 proposals
    before NMS and 1000 after in training (1000 at test), 512 RoIs an image a quarter positive
    at IoU 0.5, coder stds (0.1, 0.1, 0.2, 0.2); evaluation: score 0.05, class-wise NMS 0.5,
    100 detections an image. Mask R-CNN adds the mask head on RoIAlign 14x14 (adaptive
    sampling) of the positive RoIs, 28x28 masks, binary cross-entropy of each RoI's own class;
    evaluation pastes each detection's mask into the image at threshold 0.5."""
    detector = RCNNOptions(proposals=1000, train_pre_nms=2000, train_proposals=1000, rois=512,
                           positive_fraction=0.25, stage_ious=(0.5,),
                           stage_stds=(0.1, 0.1, 0.2, 0.2), stage_weights=(1.0,))
    return mmdet_coco("hrnet_w18", "faster_rcnn", detector,
                      rcnn_optimizer(milestones=(8 / 12, 11 / 12)), epochs=12)


VARIANTS = {
    "faster_rcnn": Variant(head("faster_rcnn"), group="framework"),
    "mask_rcnn": Variant(head("mask_rcnn"), group="framework"),
    "w18": Variant(arch("hrnet_w18"), group="width"),
    "w32": Variant(arch("hrnet_w32"), group="width"),
    "w40": Variant(arch("hrnet_w40"), group="width"),
    "smoke": Variant(rcnn_smoke),
}
