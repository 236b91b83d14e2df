"""Instance segmentation demo: Mask R-CNN on a small HRNetV2p finds, names and outlines generated
shapes (no download).

    python -m hrnet_jax.main --experiment=inst_synthetic --workdir=/tmp/inst_synthetic

Expected on a 2-core CPU: about 8 minutes (7.7 measured alone), eval box AP 0.881 and mask AP
0.893 (the run is deterministic; AP50 0.977 both; 4 classes: disc, square, triangle,
cross; at 300 steps both were still near 0.55); boxes and translucent masks next to the ground
truth in /tmp/inst_synthetic/pictures. The RPN keeps 100 proposals and the heads sample 64 RoIs
an image (at most 16 positive, the mask head's): a picture holds at most three shapes. Head
width 32 (neck, RPN, mask head): the mask head's four convs on 14x14 RoIs cost the most here.

The extended frameworks on the same shapes, steps and settings (HTC's semantic labels are the
generator's scene classes: background and the four shapes), box AP / mask AP, 600 steps, this
machine:

Variants:
    cascade_rcnn       box AP 0.904 (AP50 0.992)
    cascade_mask_rcnn  0.928 / 0.930 (AP50 0.988 both)
    htc                0.939 / 0.939 (AP50 0.993 both; about 20 minutes here)
    smoke              4 steps of a tiny model, for tests (`:htc,smoke` of HTC's)
"""

from hrnet_jax.config import ExperimentConfig, detector_options
from hrnet_jax.experiments import Variant
from hrnet_jax.recipes import smoke, synthetic_demo


def recipe() -> ExperimentConfig:
    config = synthetic_demo("detection", "mask_rcnn", num_classes=4, dataset="synthetic_detection")
    demo_sizes(config)
    config.data.short_sides, config.data.max_long_side, config.data.max_boxes = (64,), 64, 4
    config.data.flip = True
    return config


def demo_sizes(config: ExperimentConfig) -> None:
    """Head width 32, 100 proposals, 64 RoIs an image (a picture holds at most three shapes)."""
    detector = config.model.detector
    detector.channels, detector.rois = 32, 64
    detector.proposals, detector.train_proposals, detector.train_pre_nms = 100, 100, 200


def framework(head: str):
    """The demo with another two-stage head, its own defaults (mmdet's) at the demo's sizes."""
    def variant(config: ExperimentConfig) -> ExperimentConfig:
        config.model.head, config.model.detector = head, detector_options(head)
        demo_sizes(config)
        if head == "htc":  # the generator's scene classes: background + 4 shapes
            config.model.detector.semantic_classes = 5
        return config
    return variant


VARIANTS = {
    "cascade_rcnn": Variant(framework("cascade_rcnn"), group="framework"),
    "cascade_mask_rcnn": Variant(framework("cascade_mask_rcnn"), group="framework"),
    "htc": Variant(framework("htc"), group="framework"),
    "smoke": Variant(smoke),
}
