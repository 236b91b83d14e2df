"""Human parsing on LIP: HRNetV2-W48 (and + OCR), HRNet-Semantic-Segmentation's recipe.

    python -m hrnet_jax.data.prepare lip --manual_dir LIP   # once
    python -m hrnet_jax.main --experiment=seg_lip --workdir=DIR \\
        --set model.pretrained=hrnetv2_w48_imagenet_pretrained.pth

Expected: val mIoU at 473x473 with the flip test, from ImageNet weights (the official READMEs'
numbers; not yet reproduced with this code):

Variants:
    w48    55.83 (the default: HRNetV2-W48)
    ocr    56.48 (HRNetV2-W48 + OCR)
    smoke  4 steps of a tiny model on the real sample in shared/data/lip_mini, for tests

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import EvalConfig, ExperimentConfig, ModelConfig, OptimConfig, SegmentationData
from hrnet_jax.data import datasets
from hrnet_jax.data.transforms import scale_steps
from hrnet_jax.experiments import Variant
from hrnet_jax.recipes import arch, head, parsing_smoke, schedule_in_epochs


def recipe() -> ExperimentConfig:
    """Its lib/datasets/lip.py and the OCR branch's lip configs: images and labels resized to
    473x473, then the long side scaled to 473 x 0.5..1.6, padded and cropped to 473x473,
    mirrored with the left/right classes swapped (no rotation); batch 40 (10 x 4 GPUs), SGD
    0.007, momentum 0.9, weight decay 5e-4, poly 0.9, 150 epochs of floor(30462 / 40)
    iterations; plain cross-entropy. Evaluation: the 473x473 image with the flip test, scores
    resized to the label."""
    config = ExperimentConfig(task="segmentation")
    config.model = ModelConfig(arch="hrnet_w48", head="segmentation", num_classes=20)
    config.data = SegmentationData(name="lip", image_size=(473, 473), batch_size=40,
                                   eval_batch_size=1, resize=(473, 473), base_size=473,
                                   train_scales=scale_steps(0.5, 1.6, 0.1), crop_size=(473, 473),
                                   flip=True, worker_count=8)
    config.optim = OptimConfig(optimizer="sgd", learning_rate=0.007, momentum=0.9,
                               weight_decay=5e-4, schedule="poly", poly_power=0.9)
    schedule_in_epochs(config, datasets.get("lip").train_examples, 150, eval_every=10,
                       log_every=50)
    config.eval = EvalConfig(num_pictures=4, flip=True, pad_to_crop=True)
    return config


VARIANTS = {
    "w48": Variant(arch("hrnet_w48"), group="width"),
    "ocr": Variant(head("segmentation_ocr")),  # + 0.4 x its auxiliary output's cross-entropy
    "smoke": Variant(parsing_smoke),
}
