"""HRNet-W32 pose on MPII at 256x256 (the paper's recipe, PCKh@0.5 on the valid split).

    python -m hrnet_jax.data.prepare mpii --manual_dir MPII   # once: images/, annot/
    python -m hrnet_jax.main --experiment=pose_mpii_w32_256x256 --workdir=DIR

Expected: valid PCKh@0.5 90.3 with the flip test (the paper's number; not yet reproduced with
this code); head sizes from annot/gt_valid.mat. `:smoke` runs 4 steps of a tiny model on the
real sample in shared/data/mpii_mini, for tests.
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.recipes import MPII_TRAIN_PERSONS, top_down_smoke, top_down_pose


def get_config(variant: str | None = None) -> ExperimentConfig:
    config = top_down_pose("mpii", "hrnet_w32", (256, 256), MPII_TRAIN_PERSONS)
    config.description = __doc__.splitlines()[0]
    if variant == "smoke":
        return top_down_smoke(config, "test_mpii", (64, 64))
    if variant:
        raise ValueError(f"unknown variant {variant!r} of pose_mpii_w32_256x256; choose smoke")
    return config
