r"""Human pose on COCO: HRNet-W32 / W48 top-down, the paper's recipe, detected person boxes.

    python -m hrnet_jax.data.prepare coco_keypoints --manual_dir COCO   # once
    python -m hrnet_jax.main --experiment=pose_coco:w48,384x288 --workdir=DIR \
        --set data.person_boxes=COCO/person_detection_results/COCO_val2017_detections_AP_H_56_person.json

Expected: val2017 keypoint AP with the flip test and the AP-56.4 person detections (the paper's
numbers; not yet reproduced with this code): W32 74.4 at 256x192, 75.8 at 384x288; W48 75.1
at 256x192, 76.3 at 384x288. The paper starts from ImageNet weights (--set
model.pretrained=FILE).

Variants:
    w32      the default width (74.4 at 256x192, 75.8 at 384x288)
    w48      75.1 at 256x192, 76.3 at 384x288
    256x192  the default input size, heatmaps 64x48 with sigma 2
    384x288  heatmaps 96x72 with sigma 3
    smoke    4 steps of a tiny model on the real sample in shared/data/coco_mini, for tests

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.data.datasets import coco
from hrnet_jax.experiments import Variant
from hrnet_jax.recipes import arch, input_size, top_down_pose, top_down_smoke


def recipe() -> ExperimentConfig:
    """The paper's top-down recipe (recipes.top_down_pose) with COCO's augmentation: scale
    0.35, rotation 45, half-body 0.3; evaluation on the detected person boxes."""
    return top_down_pose("coco_keypoints", "hrnet_w32", (256, 192), scale_factor=0.35,
                         rotation_factor=45.0, half_body_probability=0.3,
                         person_boxes=coco.PERSON_DETECTIONS)


VARIANTS = {
    "w32": Variant(arch("hrnet_w32"), group="width"),
    "w48": Variant(arch("hrnet_w48"), group="width"),
    "256x192": Variant(input_size((256, 192), heatmap_sigma=2.0), group="input size"),
    "384x288": Variant(input_size((384, 288), heatmap_sigma=3.0), group="input size"),
    "smoke": Variant(top_down_smoke("val", (128, 96))),
}
