r"""HRNet-W48 pose on COCO at 256x192 (the paper's recipe, detected person boxes).

    python -m hrnet_jax.data.prepare coco_keypoints --manual_dir COCO   # once
    python -m hrnet_jax.main --experiment=pose_coco_w48_256x192 --workdir=DIR \
        --set data.person_boxes=COCO/person_detection_results/COCO_val2017_detections_AP_H_56_person.json

Expected: val2017 keypoint AP 75.1 with the flip test and the AP-56.4 person detections (the
paper's number; not yet reproduced with this code). The paper starts from ImageNet weights
(--set model.pretrained=FILE). `:smoke` runs 4 steps of a tiny model on the real sample in
shared/data/coco_mini, for tests.
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.recipes import COCO_TRAIN_PERSONS, top_down_smoke, top_down_pose


def get_config(variant: str | None = None) -> ExperimentConfig:
    config = top_down_pose("coco_keypoints", "hrnet_w48", (256, 192), COCO_TRAIN_PERSONS)
    config.description = __doc__.splitlines()[0]
    if variant == "smoke":
        return top_down_smoke(config, "val", (128, 96))
    if variant:
        raise ValueError(f"unknown variant {variant!r} of pose_coco_w48_256x192; choose smoke")
    return config
