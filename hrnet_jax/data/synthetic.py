"""Procedural datasets, one a task family, generated on the fly (no files, no preparation).

Each is a random-access source (`len`, `[index]`) that grain reads like a tfds `data_source`;
example `i` of seed `s` is always the same picture. They are for the embedded demo and for tests:
they never stand in for a real dataset.

- segmentation: textured shapes on a noisy background; each class has its own colour family and
  stripe texture, the shape kind is random; per-pixel labels (0 = background).
- pose: stick figures with K joints drawn as coloured discs joined by limbs; joint coordinates.
- classification: one shape a picture (disc, square, triangle, cross), random colour and size.
- detection: 1 to `max_objects` such shapes apart from each other, each boxed, labelled with
  its kind and masked (compressed RLE), in the record layout of the COCO detection builder.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from hrnet_jax.data.detection import encode_masks

SEGMENTATION_CLASSES = ("background", "red", "green", "blue", "yellow")
_CLASS_COLOURS = np.array([[200, 60, 60], [60, 190, 70], [60, 80, 210], [215, 205, 60]], np.float32)
SHAPES = ("disc", "square", "triangle", "cross")
POSE_JOINTS = ("head", "neck", "left_hand", "right_hand", "left_foot", "right_foot")
POSE_LIMBS = ((0, 1), (1, 2), (1, 3), (1, 4), (1, 5))
_JOINT_COLOURS = np.array([[255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255],
                           [255, 255, 0], [0, 255, 255]], np.uint8)


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def _background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Low-frequency grey noise, so that 'background' is not one flat colour."""
    coarse = rng.uniform(60, 160, (size[0] // 8 + 1, size[1] // 8 + 1, 1)).astype(np.float32)
    smooth = cv2.resize(coarse, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return np.repeat(smooth[..., None] if smooth.ndim == 2 else smooth, 3, axis=2)


def _shape_mask(rng: np.random.Generator, kind: str, size: tuple[int, int],
                centre: tuple[int, int], radius: int) -> np.ndarray:
    mask = np.zeros(size, np.uint8)
    cx, cy = centre
    if kind == "disc":
        cv2.circle(mask, (cx, cy), radius, 1, -1)
    elif kind == "square":
        cv2.rectangle(mask, (cx - radius, cy - radius), (cx + radius, cy + radius), 1, -1)
    elif kind == "triangle":
        points = np.array([[cx, cy - radius], [cx - radius, cy + radius], [cx + radius, cy + radius]])
        cv2.fillPoly(mask, [points.astype(np.int32)], 1)
    else:  # cross
        t = max(radius // 3, 1)
        cv2.rectangle(mask, (cx - radius, cy - t), (cx + radius, cy + t), 1, -1)
        cv2.rectangle(mask, (cx - t, cy - radius), (cx + t, cy + radius), 1, -1)
    return mask.astype(bool)


@dataclasses.dataclass(frozen=True)
class _Source:
    """`size` pictures of `image_size`; picture i of `seed` is always the same."""

    size: int
    image_size: tuple[int, int] = (64, 64)
    seed: int = 0

    def __len__(self) -> int:
        return self.size


@dataclasses.dataclass(frozen=True)
class SyntheticSegmentation(_Source):
    max_shapes: int = 4

    num_classes = len(SEGMENTATION_CLASSES)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        rng = _rng(self.seed, index)
        h, w = self.image_size
        image = _background(rng, (h, w))
        label = np.zeros((h, w), np.int32)
        yy, xx = np.mgrid[:h, :w]
        for _ in range(rng.integers(1, self.max_shapes + 1)):
            cls = int(rng.integers(1, self.num_classes))
            radius = int(rng.integers(min(h, w) // 10, min(h, w) // 4))
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            mask = _shape_mask(rng, SHAPES[rng.integers(len(SHAPES))], (h, w), centre, radius)
            colour = _CLASS_COLOURS[cls - 1] + rng.uniform(-30, 30, 3)
            stripes = 25 * np.sin((xx + yy * (cls - 2)) * (0.4 + 0.25 * cls))[..., None]
            image[mask] = (colour + stripes)[mask]
            label[mask] = cls
        image += rng.normal(0, 6, image.shape)
        return {"image": np.clip(image, 0, 255).astype(np.uint8), "label": label,
                "index": np.int32(index)}


class SyntheticPose(_Source):
    num_joints = len(POSE_JOINTS)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        rng = _rng(self.seed, index)
        h, w = self.image_size
        image = _background(rng, (h, w))
        scale = rng.uniform(0.25, 0.4) * min(h, w)
        neck = np.array([rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.55) * h])
        angles = rng.uniform(-0.6, 0.6, 5) + np.array([-np.pi / 2, np.pi, 0, 2.0, 1.1])
        lengths = scale * rng.uniform(0.5, 1.0, 5) * np.array([0.5, 1, 1, 1.3, 1.3])
        ends = neck + lengths[:, None] * np.stack([np.cos(angles), np.sin(angles)], 1)
        joints = np.concatenate([ends[:1], neck[None], ends[1:]]).astype(np.float32)
        canvas = image.astype(np.uint8)
        for a, b in POSE_LIMBS:
            cv2.line(canvas, tuple(int(v) for v in joints[a]), tuple(int(v) for v in joints[b]),
                     (40, 40, 40), 2)
        for joint, colour in zip(joints, _JOINT_COLOURS):
            cv2.circle(canvas, (int(joint[0]), int(joint[1])), 3, tuple(int(c) for c in colour), -1)
        visible = ((joints[:, 0] >= 0) & (joints[:, 0] < w) & (joints[:, 1] >= 0)
                   & (joints[:, 1] < h)).astype(np.float32)
        noisy = canvas.astype(np.float32) + rng.normal(0, 5, canvas.shape)
        return {"image": np.clip(noisy, 0, 255).astype(np.uint8), "joints": joints,
                "visible": visible, "index": np.int32(index)}


class SyntheticClassification(_Source):
    num_classes = len(SHAPES)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        rng = _rng(self.seed, index)
        h, w = self.image_size
        image = _background(rng, (h, w))
        cls = int(rng.integers(self.num_classes))
        radius = int(rng.uniform(0.2, 0.35) * min(h, w))
        centre = (int(rng.integers(radius, w - radius)), int(rng.integers(radius, h - radius)))
        mask = _shape_mask(rng, SHAPES[cls], (h, w), centre, radius)
        # A saturated colour of random hue: always distinct from the grey background.
        hue = np.array([[[rng.integers(180)]]], np.uint8)
        image[mask] = cv2.cvtColor(np.concatenate([hue, np.full_like(hue, 255), np.full_like(hue, 255)],
                                                  -1), cv2.COLOR_HSV2RGB)[0, 0]
        image += rng.normal(0, 8, image.shape)
        return {"image": np.clip(image, 0, 255).astype(np.uint8), "label": np.int32(cls),
                "index": np.int32(index)}


class SyntheticDetection(_Source):
    max_objects: int = 3

    num_classes = len(SHAPES)

    def __getitem__(self, index: int) -> dict:
        rng = _rng(self.seed, index)
        h, w = self.image_size
        image = _background(rng, (h, w))
        taken = np.zeros((h, w), bool)
        boxes, labels, masks = [], [], []
        scene = np.zeros((h, w), np.uint8)  # semantic labels: 0 background, 1 + the shape's class
        for _ in range(rng.integers(1, self.max_objects + 1)):
            cls = int(rng.integers(self.num_classes))
            radius = int(rng.uniform(0.1, 0.25) * min(h, w))
            centre = (int(rng.integers(radius, w - radius)), int(rng.integers(radius, h - radius)))
            mask = _shape_mask(rng, SHAPES[cls], (h, w), centre, radius)
            if (mask & taken).any():  # objects never hide each other
                continue
            taken |= mask
            scene[mask] = cls + 1
            hue = np.array([[[rng.integers(180), 255, 255]]], np.uint8)
            image[mask] = cv2.cvtColor(hue, cv2.COLOR_HSV2RGB)[0, 0]
            ys, xs = np.nonzero(mask)
            boxes.append([xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()])
            labels.append(cls)
            masks.append(mask)
        image += rng.normal(0, 8, image.shape)
        boxes = np.array(boxes, np.float32).reshape(-1, 4)
        return {"image": np.clip(image, 0, 255).astype(np.uint8), "image_id": np.int64(index),
                "semantic": scene,
                "objects": {"bbox": boxes, "label": np.array(labels, np.int64),
                            "area": boxes[:, 2] * boxes[:, 3],
                            "iscrowd": np.zeros(len(boxes), np.int32),
                            "mask": encode_masks(np.asarray(masks, np.uint8).reshape(-1, h, w))}}

