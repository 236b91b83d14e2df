"""Top-down keypoints (COCO and MPII pose, facial landmarks): one box -> one crop -> K heatmaps.

Training: a person's box is cropped with random scale, rotation, mirror and half-body
(hrnet_jax.data.topdown) and its joints become Gaussian heatmaps; the loss is the target-weighted
0.5 x MSE. Evaluation, image by image: every person box of the image (detections or ground
truth) is cropped, the crops go through the network (and mirrored, for the flip test), the
heatmaps are decoded (argmax + quarter pixel, or DARK) and mapped back to the image. COCO then
rescores, OKS-NMSes and runs the official keypoint AP; MPII reports PCKh@0.5; faces (WFLW, 300W,
COFW, AFLW) report NME with each dataset's normaliser, failure rate at 0.1 and AUC.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import numpy as np

from hrnet_jax.data import topdown
from hrnet_jax.data.keypoint_sets import KEYPOINT_SETS, LANDMARK_SETS, NME_NORMALISERS, KeypointSet
from hrnet_jax.data.pipeline import normalize
from hrnet_jax.evaluation import keypoints as evaluation
from hrnet_jax.tasks import Task
from hrnet_jax.tasks.pose import STRIDE, draw_skeleton, gaussian_heatmaps, heatmap_mse

TRUTH_COLOUR, PREDICTION_COLOUR = (0, 255, 0), (255, 0, 255)


def load_detections(path: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """A COCO detection results file -> image id -> (person boxes (N, 4), scores (N,))."""
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"person detections {path} do not exist; pass the detection "
                                "results file as --set data.person_boxes=FILE, or evaluate on "
                                "ground-truth boxes with --set data.person_boxes=ground_truth")
    with open(path) as f:
        detections = json.load(f)
    by_image: dict[int, list] = {}
    for detection in detections:
        x, y, w, h = detection["bbox"]
        if detection.get("category_id", 1) == 1 and w > 0 and h > 0:
            by_image.setdefault(int(detection["image_id"]), []).append(
                [x, y, w, h, detection["score"]])
    return {image_id: (np.asarray(rows, np.float32)[:, :4], np.asarray(rows, np.float32)[:, 4])
            for image_id, rows in by_image.items()}


class PersonPredictor:
    """Keypoints of the persons in given boxes of one image: crops, network, flip, decoding."""

    def __init__(self, input_size: tuple[int, int], keypoints: KeypointSet, batch_size: int,
                 flip: bool, decoder: str, sigma: float):
        if decoder not in ("argmax", "dark"):
            raise ValueError(f"unknown heatmap decoder {decoder!r}; choose argmax or dark")
        self.input_size, self.keypoints = input_size, keypoints
        self.batch_size, self.flip = batch_size, flip
        self.decoder, self.kernel = decoder, evaluation.blur_kernel_size(sigma)

    def heatmaps(self, predict: Callable, crops: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 crops -> (N, h, w, K) heatmaps, in fixed-size batches (padded)."""
        out = []
        for start in range(0, len(crops), self.batch_size):
            chunk = normalize(crops[start:start + self.batch_size])
            count = len(chunk)
            chunk = np.concatenate([chunk, np.zeros((self.batch_size - count, *chunk.shape[1:]),
                                                    chunk.dtype)])
            if self.flip:  # one call: the batch and its mirror image
                maps = np.asarray(predict(np.concatenate([chunk, chunk[:, :, ::-1]])), np.float32)
                maps = 0.5 * (maps[:self.batch_size]
                              + evaluation.flip_back(maps[self.batch_size:], self.keypoints))
            else:
                maps = np.asarray(predict(chunk), np.float32)
            out.append(maps[:count])
        return np.concatenate(out)

    def decode(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.decoder == "dark":
            return evaluation.decode_dark(heatmaps, self.kernel)
        return evaluation.decode_quarter_offset(heatmaps)

    def __call__(self, predict: Callable, image: np.ndarray, centres: np.ndarray,
                 scales: np.ndarray) -> np.ndarray:
        """(N, K, 3): x, y in image pixels and the heatmap maximum as score."""
        if not len(centres):
            return np.zeros((0, self.keypoints.num_joints, 3), np.float32)
        crops = np.stack([topdown.warp(image, c, s, 0.0, self.input_size)
                          for c, s in zip(centres, scales)])
        maps = self.heatmaps(predict, crops)
        coords, scores = self.decode(maps)
        heatmap_size = (maps.shape[2], maps.shape[1])  # (w, h)
        points = np.stack([topdown.apply_affine(xy, topdown.affine_matrix(c, s, 0.0, heatmap_size,
                                                                          inverse=True))
                           for xy, c, s in zip(coords, centres, scales)])
        return np.concatenate([points, scores[..., None]], -1).astype(np.float32)


def boxes_centres_scales(boxes: np.ndarray, aspect_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    pairs = [topdown.box_to_centre_scale(box, aspect_ratio) for box in boxes]
    return (np.array([c for c, _ in pairs], np.float32).reshape(-1, 2),
            np.array([s for _, s in pairs], np.float32).reshape(-1, 2))


def make_task(config: Any) -> Task:
    data = config.data
    keypoints = {**KEYPOINT_SETS, **LANDMARK_SETS}[data.name]
    is_coco, is_face = keypoints.name == "coco", data.name in LANDMARK_SETS
    height, width = data.image_size
    aspect_ratio = width / height
    heatmap_size = (height // STRIDE, width // STRIDE)
    predictor = PersonPredictor((height, width), keypoints, data.eval_batch_size, config.eval.flip,
                                config.eval.decoder, data.heatmap_sigma)
    sigmas = np.asarray(keypoints.sigmas, np.float64) / 10.0
    detections: dict = {}  # read when evaluation first needs them (prediction does not)

    def augment(example, rng):
        return topdown.random_person_view(example, rng, keypoints, aspect_ratio, data.scale_factor,
                                          data.rotation_factor, data.flip,
                                          data.half_body_probability, uniform=is_face)

    def prepare(example):
        crop = topdown.crop_person(example, (height, width))
        maps, weights = gaussian_heatmaps(crop["joints"], crop["visible"], heatmap_size,
                                          data.heatmap_sigma)
        return {**crop, "heatmaps": maps, "target_weight": weights}

    def loss(heatmaps, batch):
        return heatmap_mse(heatmaps, batch["heatmaps"], batch["target_weight"]), {}

    def person_boxes(record, persons):
        """The boxes evaluated in one image and their scores."""
        image = record["image"]
        if is_coco and data.person_boxes != "ground_truth":
            if not detections:
                detections.update(load_detections(data.person_boxes))
            return detections.get(int(record["image_id"]), (np.zeros((0, 4), np.float32),
                                                            np.zeros(0, np.float32)))
        if not is_coco:  # MPII, faces: every annotated person, its box as annotated
            return persons["bbox"], np.ones(len(persons["bbox"]), np.float32)
        slots = [i for i in range(len(persons["bbox"])) if topdown.is_training_person(
            persons["bbox"][i], persons["keypoints"][i], persons["area"][i],
            persons["iscrowd"][i], image.shape[1], image.shape[0])]
        boxes = [topdown.clean_box(persons["bbox"][i], image.shape[1], image.shape[0])
                 for i in slots]
        return np.array(boxes, np.float32).reshape(-1, 4), np.ones(len(slots), np.float32)

    def evaluate_image(predict, record):
        persons = topdown.person_arrays(record, keypoints.num_joints)
        boxes, scores = person_boxes(record, persons)
        centres, scales = boxes_centres_scales(boxes, aspect_ratio)
        predicted = predictor(predict, record["image"], centres, scales)
        if is_face:
            normalised_by = NME_NORMALISERS[keypoints.name]
            truth = persons["keypoints"][..., :2]
            normalisers = persons["box_size"] if normalised_by is None else np.linalg.norm(
                truth[:, normalised_by[0]] - truth[:, normalised_by[1]], axis=-1)
            return {"keypoints": predicted, "truth": truth, "normaliser": normalisers}
        if not is_coco:
            return {"keypoints": predicted, "truth": persons["keypoints"][..., :2],
                    "visible": persons["keypoints"][..., 2], "head_size": persons["head_size"]}
        image_id = int(record["image_id"])
        image_height, image_width = record["image"].shape[:2]
        return {"keypoints": predicted, "box_score": scores,
                "box_area": np.prod(scales * topdown.PIXEL_STD, axis=1),
                "image_id": np.full(len(predicted), image_id, np.int32),
                "image": np.array([[image_id, image_height, image_width]], np.int32),
                **{f"truth_{k}": v for k, v in persons.items()},
                "truth_image_id": np.full(len(persons["bbox"]), image_id, np.int32)}

    def summarize(rows):
        if is_face:
            return evaluation.landmark_summary(evaluation.normalised_mean_error(
                rows["keypoints"][..., :2], rows["truth"], rows["normaliser"]))
        if not is_coco:
            return evaluation.pckh(rows["keypoints"][..., :2], rows["truth"], rows["visible"],
                                   rows["head_size"])
        images = [{"id": int(i), "height": int(h), "width": int(w)} for i, h, w in rows["image"]]
        truth = evaluation.coco_ground_truth(
            images, {k[len("truth_"):]: v for k, v in rows.items() if k.startswith("truth_")},
            keypoints)
        results = evaluation.coco_results(rows["image_id"], rows["keypoints"], rows["box_score"],
                                          rows["box_area"], sigmas)
        return {**evaluation.coco_keypoint_ap(truth, results), "persons": float(len(results))}

    def skeletons(image, poses, colour):
        for pose in poses:
            image = draw_skeleton(image, pose[:, :2], keypoints.limbs, colour,
                                  pose[:, 2] > evaluation.VISIBLE_SCORE)
        return image

    def draw(predict, record):
        """Ground-truth skeletons (green) next to those predicted in the evaluated boxes."""
        image = record["image"]
        persons = topdown.person_arrays(record, keypoints.num_joints)
        truth = persons["keypoints"].copy()
        truth[..., 2] = truth[..., 2] > 0
        boxes, _ = person_boxes(record, persons)
        predicted = predictor(predict, image, *boxes_centres_scales(boxes, aspect_ratio))
        return np.concatenate([skeletons(image, truth, TRUTH_COLOUR),
                               skeletons(image, predicted, PREDICTION_COLOUR)], axis=1)

    def render(predict, image, boxes=None):
        if boxes is None:  # the whole image is the person's box
            boxes = np.array([[0, 0, image.shape[1], image.shape[0]]], np.float32)
        predicted = predictor(predict, image, *boxes_centres_scales(boxes, aspect_ratio))
        return {"skeleton": skeletons(image, predicted, PREDICTION_COLOUR)}

    if is_face:
        name, metric = "landmarks", "nme"
    else:
        name, metric = "pose", "ap" if is_coco else "pckh"
    return Task(name, name, metric, prepare, loss, None, summarize, draw, augment, render,
                evaluate_image, eval_combine="concat")
