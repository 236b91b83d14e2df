r"""Object detection and instance segmentation on COCO: Cascade R-CNN, Cascade Mask R-CNN and
Hybrid Task Cascade on HRNetV2p, mmdet's HRNet recipe (20e schedule).

    python -m hrnet_jax.data.prepare coco_detection --manual_dir COCO   # once
    python -m hrnet_jax.main --experiment=det_coco_cascade:htc,w32 --workdir=DIR \
        --set model.pretrained=hrnetv2_w32_imagenet_pretrained.pth

Expected: val2017 box AP (/ mask AP) from ImageNet weights, mmdet's cascade_rcnn_,
cascade_mask_rcnn_ and htc_hrnetv2p_w*_20e_coco (not yet reproduced with this code). mmdet's
released checkpoints evaluate as they are: `--mode=eval --set
model.pretrained=htc_hrnetv2p_w32_20e_coco.pth`. HTC's semantic branch trains on COCO-stuff's
labels: extract stuffthingmaps_trainval2017.zip into COCO (COCO/stuffthingmaps/train2017/*.png
beside annotations/) before preparing; without them training names the missing folder.
Evaluation needs none.

Variants:
    cascade_rcnn       the default framework: box AP 41.2 (W18), 43.3 (W32), 43.8 (W40)
    cascade_mask_rcnn  box / mask AP 41.6 / 36.4 (W18), 44.3 / 38.6 (W32), 45.1 / 39.3 (W40)
    htc                box / mask AP 42.8 / 37.9 (W18), 45.4 / 39.9 (W32), 46.4 / 40.8 (W40)
    w18                the default width
    w32                the width of HRNetV2p-W32
    w40                the width of HRNetV2p-W40
    smoke              4 steps of a tiny model on the person instances of the real sample in
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
    for batch 16, recipes.rcnn_optimizer) for 20 epochs, x0.1 after 16 and 19; Faster R-CNN's
    RPN and sampling (det_coco_rcnn) with 2000 proposals kept in training, and three R-CNN
    stages at IoU 0.5 / 0.6 / 0.7 (no low-quality matches), coder stds (0.1, 0.1, 0.2, 0.2),
    (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067), losses weighted 1 / 0.5 / 0.25,
    class-agnostic deltas, smooth-L1 box losses (beta 1/9 for the RPN, 1 for the stages); at
    test the stages' class scores averaged and the last stage's boxes (and the stages' masks
    averaged)."""
    detector = RCNNOptions(
        proposals=1000, train_pre_nms=2000, train_proposals=2000, rois=512,
        positive_fraction=0.25, stage_ious=(0.5, 0.6, 0.7),
        stage_stds=(0.1, 0.1, 0.2, 0.2, 0.05, 0.05, 0.1, 0.1, 0.033, 0.033, 0.067, 0.067),
        stage_weights=(1.0, 0.5, 0.25), class_agnostic=True, rpn_beta=1 / 9, box_beta=1.0,
        semantic_weight=0.2)
    return mmdet_coco("hrnet_w18", "cascade_rcnn", detector,
                      rcnn_optimizer(milestones=(16 / 20, 19 / 20)), epochs=20)


def htc(config: ExperimentConfig) -> None:
    """The interleaved mask branch, its information flow between stages, and the semantic
    branch on COCO-stuff's 183 classes at 1/8 (loss weight 0.2; the records' label maps,
    prepared from stuffthingmaps/ beside the instances); mmdet's HTC tests at score 0.001."""
    config.model.head = "htc"
    detector = config.model.detector
    detector.interleaved, detector.mask_info_flow, detector.semantic_classes = True, True, 183
    config.eval.score_threshold = 0.001


VARIANTS = {
    "cascade_rcnn": Variant(head("cascade_rcnn"), group="framework"),
    "cascade_mask_rcnn": Variant(head("cascade_mask_rcnn"), group="framework"),
    "htc": Variant(htc, group="framework"),
    "w18": Variant(arch("hrnet_w18"), group="width"),
    "w32": Variant(arch("hrnet_w32"), group="width"),
    "w40": Variant(arch("hrnet_w40"), group="width"),
    "smoke": Variant(rcnn_smoke),
}
