r"""FCOS on HRNetV2p-W32, COCO 2017 detection, 1x schedule (FCOS / mmdet's HRNet recipe).

    python -m hrnet_jax.data.prepare coco_detection --manual_dir COCO   # once
    python -m hrnet_jax.main --experiment=det_coco_fcos_w32 --workdir=DIR \
        --set model.pretrained=hrnetv2_w32_imagenet_pretrained.pth

Expected: val2017 box AP 39.5 (mmdet's HRNetV2p-W32 FCOS with GroupNorm heads, 1x; 40.8 at 2x),
from ImageNet weights, with mmdet's plain FCOS (`model.detector.style=mmdet`: IoU loss, no centre
sampling, centerness on the classification tower, NMS 0.5). `--set model.detector.style=improved`
adds centre sampling, GIoU and centerness on the regression tower (FCOS reports about +1 AP).
Not yet reproduced with this code. mmdet's released checkpoint evaluates as it is:
`--mode=eval --set model.pretrained=fcos_hrnetv2p_w32_gn-head_4x4_1x_coco.pth` (its BGR
first conv turned to RGB). `:smoke` runs 4 steps of a tiny model on the
person boxes of the real sample in shared/data/coco_mini, for tests.

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import with_variant
from hrnet_jax.recipes import fcos_coco, fcos_smoke


def get_config(variant: str | None = None) -> ExperimentConfig:
    return with_variant(fcos_coco("hrnet_w32"), variant,
                        smoke=fcos_smoke)
