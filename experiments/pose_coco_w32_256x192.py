r"""HRNet-W32 pose on COCO at 256x192 (the paper's recipe, detected person boxes).

    python -m hrnet_jax.data.prepare coco_keypoints --manual_dir COCO   # once
    python -m hrnet_jax.main --experiment=pose_coco_w32_256x192 --workdir=DIR \
        --set data.person_boxes=COCO/person_detection_results/COCO_val2017_detections_AP_H_56_person.json

Expected: val2017 keypoint AP 74.4 with the flip test and the AP-56.4 person detections (the
paper's number; not yet reproduced with this code). The paper starts from ImageNet weights
(--set model.pretrained=FILE). `:smoke` runs 4 steps of a tiny model on the real sample in
shared/data/coco_mini, for tests.

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.data.datasets import coco
from hrnet_jax.experiments import with_variant
from hrnet_jax.recipes import top_down_pose, top_down_smoke


def get_config(variant: str | None = None) -> ExperimentConfig:
    config = top_down_pose("coco_keypoints", "hrnet_w32", (256, 192), scale_factor=0.35,
                           rotation_factor=45.0, half_body_probability=0.3,
                           person_boxes=coco.PERSON_DETECTIONS)
    return with_variant(config, variant,
                        smoke=lambda config: top_down_smoke(config, "val", (128, 96)))
