"""Semantic segmentation on PASCAL-Context: HRNetV2-W48 (and + OCR), the official recipe.

    python -m hrnet_jax.data.prepare pascal_context --manual_dir VOCdevkit/VOC2010   # once
    python -m hrnet_jax.main --experiment=seg_pascal_context --workdir=DIR \\
        --set model.pretrained=hrnetv2_w48_imagenet_pretrained.pth
    python -m hrnet_jax.data.prepare pascal_context60 --manual_dir VOCdevkit/VOC2010  # for :60
    python -m hrnet_jax.main --experiment=seg_pascal_context:60,ocr --workdir=DIR2 ...

Expected: val mIoU with scales 0.5..2.0 and the flip test, from ImageNet weights (the official
HRNet-OCR README's numbers; not yet reproduced with this code):

Variants:
    w48    54.1 (the default: HRNetV2-W48, 59 classes, the background ignored)
    60     the 60 classes with the background kept: 50.1 with OCR (`:60,ocr`)
    ocr    56.2 (HRNetV2-W48 + OCR, 59 classes)
    smoke  4 steps of a tiny model on a generated tree in the official layout (the tests
           build it), for tests

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import EvalConfig, ExperimentConfig, ModelConfig, OptimConfig, SegmentationData
from hrnet_jax.data import datasets
from hrnet_jax.data.transforms import scale_steps
from hrnet_jax.experiments import Variant
from hrnet_jax.recipes import arch, head, parsing_smoke, schedule_in_epochs


def recipe() -> ExperimentConfig:
    """520x520 crops of images scaled to a long side of 520 x 0.5..2.1, flip; batch 16 (4 x 4
    GPUs), SGD 0.004, momentum 0.9, weight decay 1e-4, poly 0.9, 200 epochs of floor(4998 / 16)
    iterations; plain cross-entropy. Evaluation: scales 0.5..2.0 with the flip test on the
    whole image (sliding 520x520 windows above the crop). (The OCR branch's own configs train
    at 0.001 with 10x on the head, which this trainer's one learning rate does not express.)"""
    config = ExperimentConfig(task="segmentation")
    config.model = ModelConfig(arch="hrnet_w48", head="segmentation", num_classes=59)
    config.data = SegmentationData(name="pascal_context", image_size=(520, 520), batch_size=16,
                                   eval_batch_size=1, base_size=520,
                                   train_scales=scale_steps(0.5, 2.1, 0.1), crop_size=(520, 520),
                                   flip=True, worker_count=8)
    config.optim = OptimConfig(optimizer="sgd", learning_rate=0.004, momentum=0.9,
                               weight_decay=1e-4, schedule="poly", poly_power=0.9)
    schedule_in_epochs(config, datasets.get("pascal_context").train_examples, 200, eval_every=20,
                       log_every=50)
    config.eval = EvalConfig(num_pictures=4, flip=True, scales=scale_steps(0.5, 2.0, 0.25),
                             pad_to_crop=True)
    return config


def with_background(config: ExperimentConfig) -> None:
    """PASCAL-Context's 60-class labels (same images and split sizes)."""
    config.model.num_classes, config.data.name = 60, "pascal_context60"


VARIANTS = {
    "w48": Variant(arch("hrnet_w48"), group="width"),
    "60": Variant(with_background),
    "ocr": Variant(head("segmentation_ocr")),  # + 0.4 x its auxiliary output's cross-entropy
    "smoke": Variant(parsing_smoke),
}
