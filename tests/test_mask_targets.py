"""Instance-mask targets (hrnet_jax/detection/mask_targets.py)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


def test_instance_masks_decode_to_cocos_areas_and_targets_agree_with_roi_aligned_masks(
        shared_data):
    """The sample's person polygons, as compressed RLE and back, cover COCO's `area` (the
    polygon's, within 2% of the rasterised mask: the outline's pixels).
    mmdet's mask target is the full-size mask RoIAligned (aligned, adaptive) to 28x28, >= 0.5;
    ours reads the 56x56 box-relative copy: on RoIs jittered around the boxes at least 97% of
    each target's pixels agree (they differ along the outline only)."""
    import json

    from hrnet_jax.data import detection
    from hrnet_jax.detection import mask_targets

    with open(shared_data / "coco_mini/annotations/person_keypoints_val2017.json") as f:
        coco = json.load(f)
    images = {image["id"]: image for image in coco["images"]}
    rng = np.random.default_rng(15)
    for annotation in coco["annotations"]:
        height, width = images[annotation["image_id"]]["height"], images[annotation["image_id"]]["width"]
        rle = detection.instance_rle(annotation["segmentation"], height, width)
        full = detection.decode_masks([rle], height, width)
        assert full.sum() == pytest.approx(annotation["area"], rel=0.02)  # rasterised outline
        box = np.array(annotation["bbox"], np.float32)
        relative = detection.box_relative_masks(full, box[None])
        truth = np.concatenate([box[:2], box[:2] + box[2:]])[None]
        rois = (truth + rng.normal(0, 0.08, (16, 4)) * np.tile(box[2:], 2)).astype(np.float32)
        ours = np.asarray(mask_targets.mask_targets(rois, truth, relative, np.zeros(16, np.int32)))
        theirs = torchvision.ops.roi_align(torch.from_numpy(full[None].astype(np.float32)),
                                           [torch.from_numpy(rois)], 28, 1.0, 0, aligned=True)
        theirs = (theirs[:, 0].numpy() >= 0.5).astype(np.float32)
        assert theirs.mean() > 0.2  # a person, not an empty target
        assert (ours == theirs).mean(axis=(1, 2)).min() >= 0.97
    assert detection.instance_rle([[1.0, 2.0, 3.0, 4.0]], 10, 10) == ""  # two points: no mask
    assert detection.decode_masks([""], 4, 5).sum() == 0
