"""HRNetV2-W48 + OCR on PASCAL-Context, 59 classes (the official HRNet-OCR recipe).

    python -m hrnet_jax.data.prepare pascal_context --manual_dir VOCdevkit/VOC2010   # once
    python -m hrnet_jax.main --experiment=seg_pascal_context_ocr_w48 --workdir=DIR \\
        --set model.pretrained=hrnetv2_w48_imagenet_pretrained.pth

Expected: val mIoU 56.2 (59 classes, multi-scale 0.5..2.0 + flip; official HRNet-OCR README;
not yet reproduced with this code). `:smoke` runs 4 steps of a tiny OCR model on a generated
tree in the official layout (the tests build it), for tests.

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import with_variant
from hrnet_jax.recipes import parsing_smoke, pascal_context


def get_config(variant: str | None = None) -> ExperimentConfig:
    return with_variant(pascal_context("hrnet_w48", classes=59, head="segmentation_ocr"), variant,
                        smoke=parsing_smoke)
