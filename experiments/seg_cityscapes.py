"""Semantic segmentation on Cityscapes: HRNetV2 (and + OCR), HRNet-Semantic-Segmentation's recipe.

    python -m hrnet_jax.data.prepare cityscapes --manual_dir DOWNLOADS   # once
    python -m hrnet_jax.main --experiment=seg_cityscapes --workdir=DIR \\
        --set model.pretrained=hrnetv2_w48_imagenet_pretrained.pth
    python -m hrnet_jax.main --experiment=seg_cityscapes:w18,ohem --workdir=DIR2

Expected: val mIoU single-scale on whole 1024x2048 images, from ImageNet weights as the papers
did (the papers' numbers; none yet reproduced with this code):

Variants:
    w48           81.1 (the default: HRNetV2-W48)
    w18           no paper figure (W18-Small-v2 76.2 and W48 81.1 bracket it)
    w18_small_v2  76.2
    ohem          81.2 with W48 (online hard example mining instead of class weights)
    ocr           81.6 with W48 (W48 without OCR 80.9 in the OCR README); the official
                  hrnet_ocr_cs_8162_torch11.pth converts with `--set model.pretrained=FILE`
    smoke         4 steps of a tiny model on the real sample in shared/data/cityscapes_mini
                  (prepared into DIR, then `--set data.data_dir=DIR`), for tests

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import (CheckpointConfig, EvalConfig, ExperimentConfig, LoopConfig,
                              LossConfig, ModelConfig, OptimConfig, SegmentationData)
from hrnet_jax.data import datasets
from hrnet_jax.data.datasets.cityscapes import CLASS_WEIGHTS
from hrnet_jax.data.transforms import scale_steps
from hrnet_jax.experiments import Variant
from hrnet_jax.recipes import arch


def recipe() -> ExperimentConfig:
    """512x1024 crops of images scaled to a long side of 2048 x 0.5..2.1, flip; batch 12 with
    BatchNorm over the whole batch; SGD 0.01, momentum 0.9, weight decay 5e-4 on every
    parameter, poly 0.9 per iteration, 484 epochs of floor(2975 / 12) = 247 iterations;
    class-weighted cross-entropy."""
    config = ExperimentConfig(task="segmentation")
    config.model = ModelConfig(arch="hrnet_w48", head="segmentation", num_classes=19)
    config.data = SegmentationData(name="cityscapes", image_size=(512, 1024), batch_size=12,
                                   eval_batch_size=1, base_size=2048,
                                   train_scales=scale_steps(0.5, 2.1, 0.1),
                                   crop_size=(512, 1024), flip=True, worker_count=8)
    config.optim = OptimConfig(optimizer="sgd", learning_rate=0.01, momentum=0.9,
                               weight_decay=5e-4, schedule="poly", poly_power=0.9)
    config.loss = LossConfig(class_weights=CLASS_WEIGHTS)
    iterations = 484 * (datasets.get("cityscapes").train_examples // 12)
    config.loop = LoopConfig(num_steps=iterations, log_every=50, eval_every=10_000)
    config.checkpoint = CheckpointConfig(every_steps=2000, keep=3)
    config.eval = EvalConfig(num_pictures=4)
    return config


def ohem(config: ExperimentConfig) -> None:
    config.loss.ohem = True


def ocr(config: ExperimentConfig) -> None:
    """The OCR head; its auxiliary output's cross-entropy adds 0.4 x to the loss."""
    config.model.head = "segmentation_ocr"


def smoke(config: ExperimentConfig) -> None:
    """64x128 crops of the 128x256 sample image, its val split, 4 steps."""
    config.model.arch, config.model.width = "tiny", 4
    config.data.train_split = config.data.eval_split = "val"
    config.data.base_size, config.data.crop_size, config.data.image_size = 256, (64, 128), (64, 128)
    config.data.batch_size, config.data.worker_count = 2, 0
    config.loss.ohem_min_kept = 1000  # of the 8192 pixels of a 64x128 crop
    config.loop = LoopConfig(num_steps=4, log_every=2)
    config.checkpoint = CheckpointConfig(every_steps=2, keep=2)
    config.eval = EvalConfig(num_pictures=1)


VARIANTS = {
    "w48": Variant(arch("hrnet_w48"), group="width"),
    "w18": Variant(arch("hrnet_w18"), group="width"),
    "w18_small_v2": Variant(arch("hrnet_w18_small_v2"), group="width"),
    "ohem": Variant(ohem),
    "ocr": Variant(ocr),
    "smoke": Variant(smoke),
}
