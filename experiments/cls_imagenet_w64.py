"""HRNet-W64-C on ImageNet (the paper's recipe, top-1 at 224x224).

    python -m hrnet_jax.data.prepare imagenet2012 --manual_dir ILSVRC2012_TARS   # once
    python -m hrnet_jax.main --experiment=cls_imagenet_w64 --workdir=DIR

Expected: validation top-1 79.5% single crop (the paper's number; not yet reproduced with this
code); top-5 is in metrics.jsonl too. `:smoke` runs 4 steps of a tiny model through the same
pipeline (random-resized crops, mixup and CutMix) on generated pictures, for tests.

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import with_variant
from hrnet_jax.recipes import imagenet, imagenet_smoke


def get_config(variant: str | None = None) -> ExperimentConfig:
    return with_variant(imagenet("hrnet_w64"), variant,
                        smoke=imagenet_smoke)
