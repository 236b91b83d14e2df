r"""Object detection on COCO: FCOS on HRNetV2p, the 1x schedule of FCOS and mmdet's HRNet configs.

    python -m hrnet_jax.data.prepare coco_detection --manual_dir COCO   # once
    python -m hrnet_jax.main --experiment=det_coco_fcos:w32 --workdir=DIR \
        --set model.pretrained=hrnetv2_w32_imagenet_pretrained.pth

Expected: val2017 box AP from ImageNet weights with mmdet's plain FCOS (IoU loss, no centre
sampling, centerness on the classification tower, NMS 0.5: mmdet's HRNetV2p FCOS with
GroupNorm heads; not yet reproduced with this code). mmdet's released checkpoints evaluate as
they are: `--mode=eval --set model.pretrained=fcos_hrnetv2p_w32_gn-head_4x4_1x_coco.pth` (its
BGR first conv turned to RGB).

Variants:
    w18       35.3 (the default; 38.2 at 2x)
    w32       39.5 (40.8 at 2x)
    improved  FCOS's later tricks: centre sampling, GIoU, centerness on the regression tower,
              NMS 0.6 (FCOS reports about +1 AP)
    smoke     4 steps of a tiny model on the person boxes of the real sample in
              shared/data/coco_mini, for tests

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig, OptimConfig
from hrnet_jax.experiments import Variant
from hrnet_jax.models.fcos_head import FCOSOptions
from hrnet_jax.recipes import arch, detection_smoke, mmdet_coco


def recipe() -> ExperimentConfig:
    """mmdet's COCO detection recipe (recipes.mmdet_coco: 800 x <=1333 images, flip, 12
    epochs, x0.1 after 8 and 11), pyramid strides 8..128 with 256-channel towers; SGD 0.01
    momentum 0.9 for batch 16, weight decay 1e-4 (not on biases and norms), warmup from lr / 3
    over 500 iterations, gradient norm clipped at 35. Left from mmdet's recipe: its warmup is
    constant (lr / 3, then lr), ours linear; it doubles the biases' learning rate."""
    detector = FCOSOptions(strides=(8, 16, 32, 64, 128), channels=256, style="mmdet")
    optim = OptimConfig(optimizer="sgd", learning_rate=0.01, momentum=0.9, weight_decay=1e-4,
                        decay_norm_and_bias=False, schedule="multistep",
                        milestones=(8 / 12, 11 / 12), warmup_steps=500, warmup_start=1 / 3,
                        clip_grad_norm=35.0)
    return mmdet_coco("hrnet_w18", "detection", detector, optim, epochs=12)


def improved(config: ExperimentConfig) -> None:
    config.model.detector.style, config.eval.nms_threshold = "improved", 0.6


VARIANTS = {
    "w18": Variant(arch("hrnet_w18"), group="width"),
    "w32": Variant(arch("hrnet_w32"), group="width"),
    "improved": Variant(improved),
    "smoke": Variant(detection_smoke),
}
