"""Image classification on ImageNet: HRNet-W*-C, HRNet-Image-Classification's recipe.

    python -m hrnet_jax.data.prepare imagenet2012 --manual_dir ILSVRC2012_TARS   # once
    python -m hrnet_jax.main --experiment=cls_imagenet:w32 --workdir=DIR

Expected: validation top-1 single crop at 224x224 (the paper's numbers; not yet reproduced with
this code); top-5 is in metrics.jsonl too:

Variants:
    w18           top-1 76.8% (the default: HRNet-W18-C)
    w18_small     top-1 72.3%
    w18_small_v2  top-1 75.1%
    w30           top-1 78.2%
    w32           top-1 78.5%
    w40           top-1 78.9%
    w44           top-1 78.9%
    w48           top-1 79.3%
    w64           top-1 79.5%
    smoke         4 steps of a tiny model through the same pipeline (random-resized crops,
                  mixup and CutMix) on generated pictures, for tests

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import (CheckpointConfig, ClassificationData, EvalConfig, ExperimentConfig,
                              LoopConfig, ModelConfig, OptimConfig)
from hrnet_jax.data import datasets
from hrnet_jax.experiments import Variant
from hrnet_jax.recipes import arch, schedule_in_epochs

WIDTHS = ("w18", "w18_small", "w18_small_v2", "w30", "w32", "w40", "w44", "w48", "w64")


def recipe() -> ExperimentConfig:
    """RandomResizedCrop 224 + flip, evaluation resize 256 + centre crop 224; SGD nesterov
    momentum 0.9, lr 0.05 for batch 32 x 4 GPUs, weight decay 1e-4, 100 epochs, x0.1 after 30,
    60 and 90. Label smoothing and mixup / CutMix are off, as in the paper (--set
    optim.label_smoothing=0.1, data.cutmix_alpha=1.0 for later recipes)."""
    config = ExperimentConfig(task="classification")
    config.model = ModelConfig(arch="hrnet_w18", head="classification", num_classes=1000)
    config.data = ClassificationData(name="imagenet2012", image_size=(224, 224), batch_size=128,
                                     eval_batch_size=250, worker_count=16, train_split="train",
                                     eval_split="validation", random_resized_crop=True, flip=True)
    config.optim = OptimConfig(optimizer="sgd", learning_rate=0.05, momentum=0.9, nesterov=True,
                               weight_decay=1e-4, schedule="multistep",
                               milestones=(0.3, 0.6, 0.9), decay_factor=0.1)
    schedule_in_epochs(config, datasets.get("imagenet2012").train_examples, 100, eval_every=5,
                       log_every=100)
    config.eval = EvalConfig(num_pictures=8)
    return config


def smoke(config: ExperimentConfig) -> None:
    """Generated pictures of 4 shapes at 32x32 (as cls_synthetic:smoke), mixup and CutMix on."""
    config.model.arch, config.model.width, config.model.num_classes = "tiny", 4, 4
    config.data.name, config.data.image_size = "synthetic_classification", (32, 32)
    config.data.num_train, config.data.num_eval = 64, 8
    config.data.batch_size, config.data.eval_batch_size, config.data.worker_count = 4, 4, 0
    config.data.mixup_alpha, config.data.cutmix_alpha = 0.2, 1.0
    config.loop = LoopConfig(num_steps=4, log_every=2)
    config.checkpoint = CheckpointConfig(every_steps=2, keep=2)
    config.eval.num_pictures = 1


VARIANTS = {
    **{width: Variant(arch(f"hrnet_{width}"), group="width") for width in WIDTHS},
    "smoke": Variant(smoke),
}
