"""HRNetV2-W48 + OCR on Cityscapes (the official HRNet-OCR recipe).

    python -m hrnet_jax.data.prepare cityscapes --manual_dir DOWNLOADS   # once
    python -m hrnet_jax.main --experiment=seg_cityscapes_ocr_w48 --workdir=DIR \\
        --set model.pretrained=hrnetv2_w48_imagenet_pretrained.pth

Expected: val mIoU 81.6 single-scale on whole 1024x2048 images (W48 without OCR: 80.9; official
HRNet-OCR README; not yet reproduced with this code). The official checkpoint
(hrnet_ocr_cs_8162_torch11.pth) converts with `weights.from_torch("hrnet_w48",
"segmentation_ocr", weights.load_state_dict_file(path))`. `:smoke` runs 4 steps of a tiny OCR
model on the real sample in shared/data/cityscapes_mini, for tests.

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import with_variant
from hrnet_jax.recipes import cityscapes, cityscapes_smoke


def get_config(variant: str | None = None) -> ExperimentConfig:
    return with_variant(cityscapes("hrnet_w48", ohem=False, head="segmentation_ocr"), variant,
                        smoke=cityscapes_smoke)
