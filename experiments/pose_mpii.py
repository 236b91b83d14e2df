"""Human pose on MPII: HRNet-W32 top-down at 256x256, the paper's recipe, PCKh@0.5.

    python -m hrnet_jax.data.prepare mpii --manual_dir MPII   # once: images/, annot/
    python -m hrnet_jax.main --experiment=pose_mpii --workdir=DIR

Expected: valid PCKh@0.5 with the flip test, head sizes from annot/gt_valid.mat (the paper's
number; not yet reproduced with this code):

Variants:
    w32    90.3 (the default)
    smoke  4 steps of a tiny model on the real sample in shared/data/mpii_mini, for tests

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import Variant
from hrnet_jax.recipes import arch, top_down_pose, top_down_smoke


def recipe() -> ExperimentConfig:
    """The paper's top-down recipe (recipes.top_down_pose) with MPII's augmentation: scale
    0.25, rotation 30, no half-body; evaluation on the ground-truth person boxes."""
    return top_down_pose("mpii", "hrnet_w32", (256, 256), scale_factor=0.25,
                         rotation_factor=30.0, half_body_probability=0.0)


VARIANTS = {
    "w32": Variant(arch("hrnet_w32"), group="width"),
    "smoke": Variant(top_down_smoke("test_mpii", (64, 64))),
}
