"""HRNet-W32 pose on MPII at 256x256 (the paper's recipe, PCKh@0.5 on the valid split).

    python -m hrnet_jax.data.prepare mpii --manual_dir MPII   # once: images/, annot/
    python -m hrnet_jax.main --experiment=pose_mpii_w32_256x256 --workdir=DIR

Expected: valid PCKh@0.5 90.3 with the flip test (the paper's number; not yet reproduced with
this code); head sizes from annot/gt_valid.mat. `:smoke` runs 4 steps of a tiny model on the
real sample in shared/data/mpii_mini, for tests.

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import with_variant
from hrnet_jax.recipes import top_down_pose, top_down_smoke


def get_config(variant: str | None = None) -> ExperimentConfig:
    config = top_down_pose("mpii", "hrnet_w32", (256, 256), scale_factor=0.25,
                           rotation_factor=30.0, half_body_probability=0.0)
    return with_variant(config, variant,
                        smoke=lambda config: top_down_smoke(config, "test_mpii", (64, 64)))
