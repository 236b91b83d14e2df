"""COCO 2017: person keypoints (HRNetV1 pose) and object boxes (HRNetV2p detection).

    python -m hrnet_jax.data.prepare coco_keypoints --manual_dir COCO   # annotations/, train2017/, val2017/
    python -m hrnet_jax.data.prepare coco_detection --manual_dir COCO

Keypoints: one record per image with every person annotation (hrnet_jax.data.builders.
coco_keypoints); training takes the reference's training persons one at a time, their boxes
clipped to the image. Evaluation predicts in the person detections of a results file (the paper's
AP-56.4 detector, `data.person_boxes`) or in the ground-truth boxes of the reference's training
persons, rescoring and OKS-NMS, then pycocotools' keypoint AP.
Detection: one record per image with its boxes (hrnet_jax.data.builders.coco_detection);
contiguous labels over COCO's 80 categories; pycocotools' box AP.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import numpy as np

from hrnet_jax.data.datasets import DEFAULT_DATA_DIR, DetectionDataset, PersonDataset
from hrnet_jax.data.keypoint_sets import KeypointSet

KEYPOINTS = KeypointSet(
    name="coco",
    joints=("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
            "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
            "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    # The annotation's `skeleton` is 1-based; these are the same 19 limbs, 0-based.
    limbs=((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
           (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)),
    upper_body=tuple(range(11)),
    sigmas=(.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89),
)
TRAIN_PERSONS = 149813  # the reference's training persons of train2017
# The paper's person detections on val2017 (AP 56.4), from the HRNet release.
PERSON_DETECTIONS = "~/coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json"

# The 80 detection categories: (official category id, name), in id order. Models predict
# contiguous labels 0..79 (position in this table); results files and the official evaluation
# use the category ids, which skip 12, 26, 29, 30, 45, 66, 68, 69, 71 and 83.
CATEGORIES = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"),
    (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"),
    (24, "zebra"), (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"),
    (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"),
    (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"),
    (46, "wine glass"), (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"),
    (52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"), (56, "broccoli"),
    (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"),
    (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"),
    (77, "cell phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"),
    (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)
CATEGORY_IDS = tuple(category_id for category_id, _ in CATEGORIES)
NAMES = tuple(name for _, name in CATEGORIES)
LABEL_OF_ID = {category_id: label for label, category_id in enumerate(CATEGORY_IDS)}
DETECTION_TRAIN_IMAGES = 117266  # train2017 images with a box (FCOS's training set)


@functools.lru_cache(maxsize=4)
def load_detections(path: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """A COCO detection results file -> image id -> (person boxes (N, 4), scores (N,))."""
    from hrnet_jax import storage

    location = storage.path(path)
    with storage.errors_named(path, "read"):
        exists = location.exists()
    if not exists:
        raise FileNotFoundError(f"person detections {path} do not exist; pass the detection "
                                "results file as --set data.person_boxes=FILE, or evaluate on "
                                "ground-truth boxes with --set data.person_boxes=ground_truth")
    with storage.errors_named(path, "read"):
        detections = json.loads(location.read_text())
    by_image: dict[int, list] = {}
    for detection in detections:
        x, y, w, h = detection["bbox"]
        if detection.get("category_id", 1) == 1 and w > 0 and h > 0:
            by_image.setdefault(int(detection["image_id"]), []).append(
                [x, y, w, h, detection["score"]])
    return {image_id: (np.asarray(rows, np.float32)[:, :4], np.asarray(rows, np.float32)[:, 4])
            for image_id, rows in by_image.items()}


@dataclasses.dataclass(frozen=True)
class CocoKeypoints(PersonDataset):
    """COCO's keypoint protocol: detected (or clean ground-truth) boxes, keypoint AP."""

    def evaluation_boxes(self, record: dict, persons: dict, data: Any
                         ) -> tuple[np.ndarray, np.ndarray]:
        if data.person_boxes != "ground_truth":
            return load_detections(data.person_boxes).get(
                int(record["image_id"]), (np.zeros((0, 4), np.float32), np.zeros(0, np.float32)))
        from hrnet_jax.data import topdown

        height, width = record["image"].shape[:2]
        slots = [i for i in range(len(persons["bbox"])) if topdown.is_training_person(
            persons["bbox"][i], persons["keypoints"][i], persons["area"][i],
            persons["iscrowd"][i], width, height)]
        boxes = [topdown.clean_box(persons["bbox"][i], width, height) for i in slots]
        return np.array(boxes, np.float32).reshape(-1, 4), np.ones(len(slots), np.float32)

    def evaluation_rows(self, record: dict, persons: dict, predicted: np.ndarray,
                        box_scores: np.ndarray, scales: np.ndarray) -> dict[str, np.ndarray]:
        from hrnet_jax.data.topdown import PIXEL_STD

        image_id = int(record["image_id"])
        height, width = record["image"].shape[:2]
        return {"keypoints": predicted, "box_score": box_scores,
                "box_area": np.prod(scales * PIXEL_STD, axis=1),
                "image_id": np.full(len(predicted), image_id, np.int32),
                "image": np.array([[image_id, height, width]], np.int32),
                **{f"truth_{k}": v for k, v in persons.items()},
                "truth_image_id": np.full(len(persons["bbox"]), image_id, np.int32)}

    def summarize(self, rows: dict[str, np.ndarray]) -> dict[str, float]:
        from hrnet_jax.metrics import coco_keypoints

        images = [{"id": int(i), "height": int(h), "width": int(w)} for i, h, w in rows["image"]]
        truth = coco_keypoints.coco_ground_truth(
            images, {k[len("truth_"):]: v for k, v in rows.items() if k.startswith("truth_")},
            self.keypoints)
        sigmas = np.asarray(self.keypoints.sigmas, np.float64) / 10.0
        results = coco_keypoints.coco_results(rows["image_id"], rows["keypoints"],
                                              rows["box_score"], rows["box_area"], sigmas)
        return {**coco_keypoints.coco_keypoint_ap(truth, results), "persons": float(len(results))}


COCO_KEYPOINTS = CocoKeypoints(name="coco_keypoints", task="pose",
                               builder=("coco_keypoints", "HrnetCocoKeypoints"),
                               tfds_name="hrnet_coco_keypoints", keypoints=KEYPOINTS,
                               clip_boxes=True, train_examples=TRAIN_PERSONS)


@dataclasses.dataclass(frozen=True)
class CocoPersonCrops(CocoKeypoints):
    """COCO keypoints whose training persons are read as loose crops stored raw at preparation
    (hrnet_jax.data.builders.coco_person_crops): no JPEG decoded to train, the same batches as
    `coco_keypoints` for a seed. Evaluation reads `images`' whole images; preparing this
    prepares both."""

    images: CocoKeypoints | None = None

    def prepare(self, manual_dir: str, data_dir: str = DEFAULT_DATA_DIR) -> Any:
        self.images.prepare(manual_dir, data_dir)
        return super().prepare(manual_dir, data_dir)

    def sources(self, data: Any) -> tuple[Any, Any]:
        crops = self.prepared_builder(data.data_dir)
        images = self.images.prepared_builder(data.data_dir)
        return (self.training_view(self.split(crops, data.train_split), crops, data),
                self.images.split(images, data.eval_split))

    def training_view(self, records: Any, builder: Any, data: Any) -> Any:
        from hrnet_jax.data import topdown

        height, width = data.image_size
        cut_for = builder.info.metadata["augmentation"]
        if (data.scale_factor > cut_for["scale_factor"] + 1e-9
                or abs(width / height - cut_for["aspect_ratio"]) > 1e-9):
            raise ValueError(
                f"{self.name}'s crops were cut for views up to data.scale_factor="
                f"{cut_for['scale_factor']} at aspect ratio {cut_for['aspect_ratio']} (width / "
                f"height); this run asks for scale_factor={data.scale_factor} at "
                f"{width}/{height}: train on data.name={self.images.name}")
        return topdown.PersonCrops(records, width / height, self.clip_boxes)


COCO_DETECTION = DetectionDataset(name="coco_detection", task="detection",
                                  builder=("coco_detection", "HrnetCocoDetection"),
                                  tfds_name="hrnet_coco_detection", categories=CATEGORIES,
                                  train_examples=DETECTION_TRAIN_IMAGES)

# COCO_KEYPOINTS' training persons as loose crops, pixels raw: for hosts whose cores the
# decoding of whole images would starve an accelerator of. `prepare coco_keypoints_crops`, then
# `--set data.name=coco_keypoints_crops`.
COCO_KEYPOINTS_CROPS = CocoPersonCrops(name="coco_keypoints_crops", task="pose",
                                       builder=("coco_person_crops", "HrnetCocoPersonCrops"),
                                       tfds_name="hrnet_coco_person_crops", keypoints=KEYPOINTS,
                                       clip_boxes=True, train_examples=TRAIN_PERSONS,
                                       images=COCO_KEYPOINTS, raw_records=True)

DATASETS = (COCO_KEYPOINTS, COCO_KEYPOINTS_CROPS, COCO_DETECTION)
