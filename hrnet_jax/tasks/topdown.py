"""Top-down keypoints, shared by pose (COCO, MPII) and facial landmarks: one box -> one crop ->
K heatmaps (hrnet_jax.tasks.heatmaps).

Training: a person's box is cropped with random scale, rotation, mirror and half-body
(hrnet_jax.data.topdown) and its joints become Gaussian heatmaps; the loss is the target-weighted
0.5 x MSE. Evaluation, image by image: every box the dataset evaluates in the image (detections
or ground truth) is cropped, the crops go through the network (and mirrored, for the flip test),
the heatmaps are decoded (argmax + quarter pixel, or DARK) and mapped back to the image; the
dataset's protocol then scores the rows (COCO keypoint AP, PCKh, NME).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.data import topdown
from hrnet_jax.data.keypoint_sets import KeypointSet
from hrnet_jax.inference import warp
from hrnet_jax.metrics.coco_keypoints import VISIBLE_SCORE
from hrnet_jax.tasks import Task, heatmaps, panels
from hrnet_jax.tasks.heatmaps import STRIDE, draw_skeleton, gaussian_heatmaps, heatmap_mse

TRUTH_COLOUR, PREDICTION_COLOUR = (0, 255, 0), (255, 0, 255)


class PersonPredictor:
    """Keypoints of the persons in given boxes of one image: crops, network, flip, decoding."""

    def __init__(self, input_size: tuple[int, int], keypoints: KeypointSet, batch_size: int,
                 flip: bool, decoder: str, sigma: float):
        if decoder not in heatmaps.DECODERS:
            raise ValueError(f"unknown heatmap decoder {decoder!r}; choose "
                             f"{' or '.join(heatmaps.DECODERS)}")
        self.input_size, self.keypoints = input_size, keypoints
        self.batch_size, self.flip = batch_size, flip
        self.decoder, self.sigma = decoder, sigma
        self.heatmap_size = (input_size[1] // STRIDE, input_size[0] // STRIDE)  # (w, h)
        self._images = warp.ImageBuckets()  # the images sent, padded to a few shapes

    def decoded(self, predict: Callable, image: np.ndarray, forward: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """The crops of `image` by the (N, 2, 3) `forward` maps -> coordinates (N, K, 2) in
        heatmap pixels and scores (N, K), in fixed-size batches (one compiled shape); with
        the flip test, one call on the batch and its mirror images. The host sends the image
        once and two numbers a crop row: cutting the crops (hrnet_jax.inference.warp),
        mirroring, normalising, averaging the mirrors' heatmaps and the argmax decoding
        happen on the device (on the host they were 13x the network's time), DARK's on the
        host."""
        call = getattr(predict, "on_device", predict)
        pixels, extent = self._images(image)
        height, width = self.input_size
        steps, starts = warp.sampling_rows(topdown.inverse_affine(forward), height)
        coords, scores = [], []
        size = self.batch_size
        for start in range(0, len(forward), size):
            count = min(size, len(forward) - start)
            # Each row's heatmaps depend on that row alone (inference BatchNorm): the padding
            # rows (the chunk's first crop again) are never read back.
            rows = np.concatenate([np.arange(start, start + count), np.full(size - count, start)])
            batch = _network_batch(pixels, extent, steps[rows], starts[rows], width, self.flip)
            maps = _flip_test(jnp.asarray(call(batch)), self.keypoints if self.flip else None)
            found = jax.device_get(heatmaps.decode(maps, self.decoder, self.sigma))
            coords.append(np.asarray(found[0])[:count])
            scores.append(np.asarray(found[1])[:count])
        return np.concatenate(coords), np.concatenate(scores)

    def __call__(self, predict: Callable, image: np.ndarray, centres: np.ndarray,
                 scales: np.ndarray) -> np.ndarray:
        """(N, K, 3): x, y in image pixels and the heatmap maximum as score."""
        if not len(centres):
            return np.zeros((0, self.keypoints.num_joints, 3), np.float32)
        height, width = self.input_size
        forward = topdown.affine_matrices(centres, scales, 0.0, (width, height))
        coords, scores = self.decoded(predict, image, forward)
        back = topdown.affine_matrices(centres, scales, 0.0, self.heatmap_size, inverse=True)
        points = topdown.apply_affine(coords, back)
        return np.concatenate([points, scores[..., None]], -1).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("width", "flip"))
def _network_batch(image: jax.Array, extent: jax.Array, steps: jax.Array, starts: jax.Array,
                   width: int, flip: bool) -> jax.Array:
    """The crops cut from the image, their mirror images appended if `flip` (still uint8: the
    network normalises its input, hrnet_jax.training.step.network_input)."""
    crops = warp.warp_crops(image, extent, steps, starts, width)
    return jnp.concatenate([crops, crops[:, :, ::-1]]) if flip else crops


@functools.partial(jax.jit, static_argnames=("keypoints",))
def _flip_test(maps: jax.Array, keypoints: KeypointSet | None) -> jax.Array:
    """The heatmaps of a batch (and, given the `keypoints` to swap, the average with its
    mirror images' mapped back: the batch's second half)."""
    maps = maps.astype(jnp.float32)
    if keypoints is None:
        return maps
    size = maps.shape[0] // 2
    return 0.5 * (maps[:size] + heatmaps.flip_back(maps[size:], keypoints))


def boxes_centres_scales(boxes: np.ndarray, aspect_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    pairs = [topdown.box_to_centre_scale(box, aspect_ratio) for box in boxes]
    return (np.array([c for c, _ in pairs], np.float32).reshape(-1, 2),
            np.array([s for _, s in pairs], np.float32).reshape(-1, 2))


class TopDownKeypoints(Task):
    """Heatmaps of one person (or face) a crop; the dataset (a PersonDataset) says which boxes
    are evaluated and scores the predictions by its protocol."""

    def __init__(self, config: Any, dataset: Any):
        super().__init__(config, dataset)
        data = config.data
        self.keypoints = dataset.keypoints
        height, width = data.image_size
        self.input_size, self.aspect_ratio = (height, width), width / height
        self.heatmap_size = (height // STRIDE, width // STRIDE)
        self.predictor = PersonPredictor((height, width), self.keypoints, data.eval_batch_size,
                                         config.eval.flip, config.eval.decoder, data.heatmap_sigma)

    def augment(self, example, rng):
        data = self.config.data
        return topdown.random_person_view(example, rng, self.keypoints, self.aspect_ratio,
                                          data.scale_factor, data.rotation_factor, data.flip,
                                          data.half_body_probability,
                                          uniform=self.dataset.uniform_augment)

    def prepare(self, example):
        return topdown.crop_person(example, self.input_size)

    def targets(self, batch):
        """The batch's Gaussian heatmaps and joint weights (made on the device, in the loss)."""
        return gaussian_heatmaps(batch["joints"], batch["visible"], self.heatmap_size,
                                 self.config.data.heatmap_sigma)

    def loss(self, outputs, batch):
        return heatmap_mse(outputs, *self.targets(batch)), {}

    def predict_persons(self, predict: Callable, image: np.ndarray, boxes: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """(N, K, 3) keypoints in the boxes (N, 4) and the boxes' scales."""
        centres, scales = boxes_centres_scales(boxes, self.aspect_ratio)
        return self.predictor(predict, image, centres, scales), scales

    def evaluate(self, evaluation):
        return self.summarize(evaluation.rows(self.evaluate_image))

    def evaluate_image(self, predict, record):
        persons = topdown.person_arrays(record, self.keypoints.num_joints)
        boxes, scores = self.dataset.evaluation_boxes(record, persons, self.config.data)
        predicted, scales = self.predict_persons(predict, record["image"], boxes)
        return self.dataset.evaluation_rows(record, persons, predicted, scores, scales)

    def summarize(self, rows):
        return self.dataset.summarize(rows)

    def skeletons(self, image: np.ndarray, poses: np.ndarray, colour) -> np.ndarray:
        for pose in poses:
            image = draw_skeleton(image, pose[:, :2], self.keypoints.limbs, colour,
                                  pose[:, 2] > VISIBLE_SCORE)
        return image

    def draw(self, predict, record):
        """The input, the skeletons predicted in the evaluated boxes, the ground truth's
        (green)."""
        image = record["image"]
        persons = topdown.person_arrays(record, self.keypoints.num_joints)
        truth = persons["keypoints"].copy()
        truth[..., 2] = truth[..., 2] > 0
        boxes, _ = self.dataset.evaluation_boxes(record, persons, self.config.data)
        predicted, _ = self.predict_persons(predict, image, boxes)
        return panels([("input", image),
                       ("prediction", self.skeletons(image, predicted, PREDICTION_COLOUR)),
                       ("ground truth", self.skeletons(image, truth, TRUTH_COLOUR))])

    def results(self, predict, image, boxes=None):
        """`keypoints` (N, K, 2) in the image's pixels and their `scores` (N, K) for the N
        `boxes` (x, y, w, h; default: the whole image as one person), and the `boxes`."""
        if boxes is None:  # the whole image is the person's box
            boxes = np.array([[0, 0, image.shape[1], image.shape[0]]], np.float32)
        predicted, _ = self.predict_persons(predict, image, np.asarray(boxes, np.float32))
        return {"keypoints": predicted[..., :2], "scores": predicted[..., 2],
                "boxes": np.asarray(boxes, np.float32)}

    def render(self, predict, image, boxes=None):
        found = self.results(predict, image, boxes)
        poses = np.concatenate([found["keypoints"], found["scores"][..., None]], -1)
        return {"skeleton": self.skeletons(image, poses, PREDICTION_COLOUR)}
