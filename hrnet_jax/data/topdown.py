"""Top-down pose geometry: a person box -> centre/scale -> an affine crop of the image, and back.

The conventions of the HRNet pose reference, which the published numbers depend on:
- a box (x, y, w, h) becomes a centre and a scale in units of 200 px (`PIXEL_STD`), widened or
  heightened to the input's aspect ratio, then enlarged 1.25x;
- the crop is the affine map fixed by three points: the centre, a point half a box width above
  it (rotated with the crop), and the point a right angle from those; bilinear, zero border;
- training draws scale N(1, 0.35) clipped to 1 +- 0.35, rotation N(0, 45) clipped to +-90 with
  probability 0.6, a mirror with probability 0.5 (x -> width - 1 - x, left/right joints swapped),
  and with probability 0.3 a box around the upper or the lower half of the body.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from hrnet_jax.data.keypoint_sets import KeypointSet

PIXEL_STD = 200.0
BOX_PADDING = 1.25
HALF_BODY_PADDING = 1.5
HALF_BODY_MIN_JOINTS = 8  # half-body is tried only on persons with more labelled joints
ROTATION_PROBABILITY = 0.6


def fit_aspect(width: float, height: float, aspect_ratio: float) -> tuple[float, float]:
    """Grow the box's shorter side so that width / height == aspect_ratio."""
    if width > aspect_ratio * height:
        height = width / aspect_ratio
    elif width < aspect_ratio * height:
        width = height * aspect_ratio
    return width, height


def box_to_centre_scale(box: np.ndarray, aspect_ratio: float, padding: float = BOX_PADDING
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(x, y, w, h) -> centre (2,) in pixels and scale (2,) in units of PIXEL_STD."""
    x, y, w, h = (float(v) for v in box)
    centre = np.array([x + w * 0.5, y + h * 0.5], np.float32)
    w, h = fit_aspect(w, h, aspect_ratio)
    return centre, np.array([w, h], np.float32) / PIXEL_STD * padding


def clean_box(box: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """A ground-truth box clipped to the image as the reference clips it; None if empty."""
    x, y, w, h = (float(v) for v in box)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1))
    if x2 < x1 or y2 < y1:
        return None
    return np.array([x1, y1, x2 - x1, y2 - y1], np.float32)


def is_training_person(bbox: np.ndarray, keypoints: np.ndarray, area: float, iscrowd: int,
                       width: int, height: int) -> bool:
    """The reference's training persons (and ground-truth eval boxes): not a crowd, some
    keypoint labelled, positive area and a box that stays non-empty inside the image."""
    return (not iscrowd and float(np.max(keypoints)) > 0 and area > 0
            and clean_box(bbox, width, height) is not None)


def person_arrays(record: dict[str, Any], num_joints: int) -> dict[str, np.ndarray]:
    """A prepared record's persons as arrays with a row per person (also when it has none)."""
    persons = record["persons"]
    count = len(persons["bbox"])
    out = {"bbox": np.asarray(persons["bbox"], np.float32).reshape(count, 4),
           "keypoints": np.asarray(persons["keypoints"], np.float32).reshape(count, num_joints, 3)}
    for key in persons:
        if key not in out:
            out[key] = np.asarray(persons[key]).reshape(count)
    return out


def affine_matrix(centre: np.ndarray, scale: np.ndarray, rotation: float,
                  output_size: tuple[int, int], inverse: bool = False) -> np.ndarray:
    """The 2x3 map from image pixels to the (width, height) = output_size crop (or back)."""
    return affine_matrices(np.asarray(centre)[None], np.asarray(scale)[None],
                           np.array([rotation]), output_size, inverse)[0]


def affine_matrices(centres: np.ndarray, scales: np.ndarray, rotations: np.ndarray,
                    output_size: tuple[int, int], inverse: bool = False) -> np.ndarray:
    """`affine_matrix` of N persons at once: (N, 2) centres, (N, 2) scales, (N,) rotations
    -> (N, 2, 3) float64. The map fixed by three point pairs, solved as OpenCV's
    getAffineTransform solves it (the points float32, the system in float64): the same
    matrices to rounding (test)."""
    f32 = np.float32
    centres = np.asarray(centres, f32).reshape(-1, 2)
    width = np.asarray(scales, np.float64).reshape(-1, 2)[:, 0] * PIXEL_STD
    angles = np.deg2rad(np.asarray(rotations, np.float64))
    out_w, out_h = output_size
    # The source points, stored in float32 as the reference stores them: the centre, half a
    # box width above it (turned with the crop), and that point turned 90 degrees about the
    # centre. The target's likewise, about the crop's centre.
    x0, y0 = centres[:, 0], centres[:, 1]
    x1 = (x0 + 0.5 * width * np.sin(angles)).astype(f32)
    y1 = (y0 - 0.5 * width * np.cos(angles)).astype(f32)
    x2, y2 = x1 - (y0 - y1), y1 + (x0 - x1)
    u0, v0 = f32(out_w * 0.5), f32(out_h * 0.5)
    u1, v1 = u0, f32(out_h * 0.5 - 0.5 * out_w)
    u2, v2 = u1 - (v0 - v1), v1 + (u0 - u1)
    source = [np.asarray(p, np.float64) for p in (x0, y0, x1, y1, x2, y2)]
    target = [np.full(len(centres), p, np.float64) for p in (u0, v0, u1, v1, u2, v2)]
    if inverse:
        source, target = target, source
    # The linear part maps the source's two edges from its first point onto the target's; the
    # offset then carries the first point over.
    (x0, y0, x1, y1, x2, y2), (u0, v0, u1, v1, u2, v2) = source, target
    ax, ay, bx, by = x1 - x0, y1 - y0, x2 - x0, y2 - y0  # the source's edges
    cx, cy, dx, dy = u1 - u0, v1 - v0, u2 - u0, v2 - v0  # the target's
    determinant = ax * by - bx * ay
    m00, m01 = (cx * by - dx * ay) / determinant, (dx * ax - cx * bx) / determinant
    m10, m11 = (cy * by - dy * ay) / determinant, (dy * ax - cy * bx) / determinant
    rows = [m00, m01, u0 - m00 * x0 - m01 * y0, m10, m11, v0 - m10 * x0 - m11 * y0]
    return np.stack(rows, -1).reshape(-1, 2, 3)


def inverse_affine(matrices: np.ndarray) -> np.ndarray:
    """(..., 2, 3) affine maps inverted as OpenCV's warpAffine inverts its map (float64)."""
    a, b, c = matrices[..., 0, 0], matrices[..., 0, 1], matrices[..., 0, 2]
    d, e, f = matrices[..., 1, 0], matrices[..., 1, 1], matrices[..., 1, 2]
    determinant = a * e - b * d
    reciprocal = np.where(determinant != 0, 1.0 / np.where(determinant != 0, determinant, 1), 0)
    a11, a12, a21, a22 = e * reciprocal, -b * reciprocal, -d * reciprocal, a * reciprocal
    return np.stack([np.stack([a11, a12, -a11 * c - a12 * f], -1),
                     np.stack([a21, a22, -a21 * c - a22 * f], -1)], -2)


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(..., 2) points through a 2x3 matrix, or (N, K, 2) points each through its own of N
    (N, 2, 3) matrices."""
    if matrix.ndim == 3:
        return points @ matrix[:, :, :2].transpose(0, 2, 1) + matrix[:, None, :, 2]
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp(image: np.ndarray, centre: np.ndarray, scale: np.ndarray, rotation: float,
         input_size: tuple[int, int], origin: tuple[float, float] = (0, 0)) -> np.ndarray:
    """The (height, width) = input_size crop of `image` (bilinear, zero outside). `origin`:
    where the pixels' top-left corner lies in the image that `centre` is measured in (a
    person's loose crop stored at preparation, `PersonCrops`; (0, 0) for a whole image).

    A mirrored image is a view: rather than copy all of it for one crop (which cost more than
    the warp), only the region the crop samples is copied (its bounding box, with pixels to
    spare for the bilinear neighbours), and the inverse map shifted by the region's offset.
    OpenCV's fixed-point coordinates then round differently now and then: a few pixels of a
    crop may differ by one grey level from warping the whole mirrored image (tests bound it);
    the same holds for a loose crop against its whole image."""
    height, width = input_size
    matrix = affine_matrix(centre, scale, rotation, (width, height))
    origin_x, origin_y = int(origin[0]), int(origin[1])
    if image.flags.c_contiguous and not (origin_x or origin_y):
        return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR)
    inverse = cv2.invertAffineTransform(matrix)  # as warpAffine inverts it
    corners = apply_affine(np.array([[0, 0], [width, 0], [0, height], [width, height]],
                                    np.float64), inverse)
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 2, (origin_x, origin_y))
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 3,
                        (origin_x + image.shape[1], origin_y + image.shape[0]))
    if x0 >= x1 or y0 >= y1:  # the crop lies wholly outside the pixels
        return np.zeros((height, width, *image.shape[2:]), image.dtype)
    inverse[:, 2] -= (x0, y0)
    region = image[y0 - origin_y:y1 - origin_y, x0 - origin_x:x1 - origin_x]
    if region.strides[1] < 0:  # a mirrored view: OpenCV reads rows of any stride, not these
        region = region[:, ::-1]  # the pixels as stored, and the map mirrored to match
        inverse[0] = -inverse[0]
        inverse[0, 2] += region.shape[1] - 1
    return cv2.warpAffine(region, inverse, (width, height),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)


def mirror_joints(joints: np.ndarray, visible: np.ndarray, image_width: int,
                  keypoints: KeypointSet) -> tuple[np.ndarray, np.ndarray]:
    """Joints of the horizontally mirrored image: x -> width - 1 - x, left and right swapped."""
    order = keypoints.flip_permutation()
    joints = joints[order].copy()
    joints[:, 0] = image_width - 1 - joints[:, 0]
    visible = visible[order]
    return joints * (visible[:, None] > 0), visible


def half_body_box(joints: np.ndarray, visible: np.ndarray, keypoints: KeypointSet,
                  aspect_ratio: float, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """Centre and scale of a box around the labelled joints of the upper or the lower body."""
    upper = np.isin(np.arange(len(joints)), keypoints.upper_body)
    labelled = visible > 0
    upper_joints, lower_joints = joints[labelled & upper], joints[labelled & ~upper]
    # randn < 0.5 (not rand): the reference's coin, which favours the upper body ~69% of the time.
    if rng.standard_normal() < 0.5 and len(upper_joints) > 2:
        chosen = upper_joints
    else:
        chosen = lower_joints if len(lower_joints) > 2 else upper_joints
    if len(chosen) < 2:
        return None
    centre, (w, h) = joints_extent(chosen, aspect_ratio)
    return centre.astype(np.float32), np.array([w, h], np.float32) / PIXEL_STD * HALF_BODY_PADDING


def joints_extent(chosen: np.ndarray, aspect_ratio: float) -> tuple[np.ndarray, tuple]:
    """The mean of some joints and the (width, height) around them, widened or heightened to
    the aspect ratio: a half body's box before padding."""
    low, high = chosen.min(0), chosen.max(0)
    return chosen.mean(0), fit_aspect(high[0] - low[0], high[1] - low[1], aspect_ratio)


def random_person_view(example: dict[str, Any], rng: np.random.Generator, keypoints: KeypointSet,
                       aspect_ratio: float, scale_factor: float, rotation_factor: float,
                       flip: bool, half_body_probability: float, uniform: bool = False
                       ) -> dict[str, Any]:
    """Training augmentation of one person: new centre, scale and rotation, maybe mirrored.
    `uniform`: scale from U(1 +- scale_factor) and rotation from U(+- rotation_factor), as the
    facial-landmark reference draws them (the pose reference draws from clipped normals)."""
    joints, visible = example["joints"], example["visible"]
    centre, scale = example["centre"], example["scale"]
    if visible.sum() > HALF_BODY_MIN_JOINTS and rng.random() < half_body_probability:
        half = half_body_box(joints, visible, keypoints, aspect_ratio, rng)
        if half is not None:
            centre, scale = half
    if uniform:
        scale = scale * rng.uniform(1 - scale_factor, 1 + scale_factor)
    else:
        scale = scale * np.clip(rng.standard_normal() * scale_factor + 1, 1 - scale_factor,
                                1 + scale_factor)
    rotation = 0.0
    if rng.random() <= ROTATION_PROBABILITY:
        rotation = float(rng.uniform(-rotation_factor, rotation_factor) if uniform else np.clip(
            rng.standard_normal() * rotation_factor, -2 * rotation_factor, 2 * rotation_factor))
    image, origin = example["image"], example.get("origin", np.zeros(2, np.float32))
    width = example.get("image_width", image.shape[1])  # of the whole image, for a loose crop
    if flip and rng.random() <= 0.5:
        image = image[:, ::-1]  # the pixels' mirror image lies mirrored in the mirrored image
        origin = np.array([width - origin[0] - image.shape[1], origin[1]], np.float32)
        joints, visible = mirror_joints(joints, visible, width, keypoints)
        centre = np.array([width - centre[0] - 1, centre[1]], np.float32)
    return {**example, "image": image, "origin": origin, "joints": joints, "visible": visible,
            "centre": np.asarray(centre, np.float32), "scale": np.asarray(scale, np.float32),
            "rotation": np.float32(rotation)}


def crop_person(example: dict[str, Any], input_size: tuple[int, int]) -> dict[str, np.ndarray]:
    """The network input of one person and its joints in input pixels (unlabelled stay 0)."""
    centre, scale, rotation = example["centre"], example["scale"], float(example["rotation"])
    image = warp(example["image"], centre, scale, rotation, input_size,
                 example.get("origin", (0, 0)))
    matrix = affine_matrix(centre, scale, rotation, (input_size[1], input_size[0]))
    visible = np.asarray(example["visible"], np.float32)
    joints = apply_affine(np.asarray(example["joints"], np.float32), matrix) * (visible[:, None] > 0)
    return {"image": image, "joints": joints.astype(np.float32), "visible": visible}


def person_view(image: np.ndarray, keypoints: Any, box: Any, image_size: tuple[int, int],
                aspect_ratio: float, clip_boxes: bool) -> dict[str, Any]:
    """A training person before augmentation: its pixels, joints (K, 2) (unlabelled at 0),
    visibility (K,) in {0, 1}, and centre/scale from its box (clipped to the (height, width)
    image first when `clip_boxes`)."""
    keypoints = np.asarray(keypoints, np.float32)
    box = np.asarray(box, np.float32)
    if clip_boxes:
        box = clean_box(box, image_size[1], image_size[0])
    centre, scale = box_to_centre_scale(box, aspect_ratio)
    visible = (keypoints[:, 2] > 0).astype(np.float32)
    return {"image": image, "joints": keypoints[:, :2] * visible[:, None], "visible": visible,
            "centre": centre, "scale": scale, "rotation": np.float32(0.0)}


class PersonInstances:
    """Random access to the training persons of a prepared keypoint dataset.

    The prepared records hold one image with all its persons; `persons` lists (record, slot) of
    those that train, as the builder wrote them into its metadata. Each item: the image, the
    person's joints (K, 2), visibility (K,) in {0, 1}, and centre/scale from the person's box
    (clipped to the image first when `clip_boxes`, as the COCO reference does; MPII's is not).
    """

    def __init__(self, records: Any, persons: list[tuple[int, int]], aspect_ratio: float,
                 clip_boxes: bool = True):
        self.records, self.persons = records, [tuple(p) for p in persons]
        self.aspect_ratio, self.clip_boxes = aspect_ratio, clip_boxes

    def __len__(self) -> int:
        return len(self.persons)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record, slot = self.persons[index]
        example = self.records[record]
        image = example["image"]
        return person_view(image, example["persons"]["keypoints"][slot],
                           example["persons"]["bbox"][slot], image.shape[:2], self.aspect_ratio,
                           self.clip_boxes)

    def __repr__(self) -> str:
        return f"PersonInstances({len(self)} persons of {self.records!r})"


def loose_region(box: np.ndarray, joints: np.ndarray, visible: np.ndarray,
                 keypoints: KeypointSet, aspect_ratio: float, scale_factor: float,
                 width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the pixels of the (width, height) image that any training view of
    this person can sample (`random_person_view`, then `crop_person`). Every centre the view
    can take (the box's; with enough labelled joints, either half body's), at the largest
    scale, turned by any angle: a disc of half the sampled rectangle's diagonal about it, with
    the pixels `warp` keeps for the bilinear neighbours. A mirror samples the mirror image of
    the same region. `box`: as training takes it (clipped for COCO)."""
    views = [box_to_centre_scale(box, aspect_ratio)]
    if visible.sum() > HALF_BODY_MIN_JOINTS:
        upper = np.isin(np.arange(len(joints)), keypoints.upper_body)
        for half in (upper, ~upper):
            chosen = joints[(visible > 0) & half]
            if len(chosen) >= 2:
                centre, (w, h) = joints_extent(chosen, aspect_ratio)
                views.append((centre, np.array([w, h]) / PIXEL_STD * HALF_BODY_PADDING))
    x0, y0, x1, y1 = width, height, 0, 0
    for centre, scale in views:
        sampled_width = float(scale[0]) * PIXEL_STD * (1 + scale_factor)
        radius = 0.5 * sampled_width * np.hypot(1.0, 1.0 / aspect_ratio)
        x0 = min(x0, int(np.floor(centre[0] - radius)) - 2)
        y0 = min(y0, int(np.floor(centre[1] - radius)) - 2)
        x1 = max(x1, int(np.ceil(centre[0] + radius)) + 3)
        y1 = max(y1, int(np.ceil(centre[1] + radius)) + 3)
    return max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)


class PersonCrops:
    """Random access to training persons stored one a record as their loose crop (the pixels
    of `loose_region`, hrnet_jax.data.builders.coco_person_crops): items as `PersonInstances`
    gives them, the image being the crop and `origin` where it lies in its image, so that the
    same seed draws the same views and crops (up to OpenCV's rounding, see `warp`) without
    decoding the whole image."""

    def __init__(self, records: Any, aspect_ratio: float, clip_boxes: bool = True):
        self.records, self.aspect_ratio, self.clip_boxes = records, aspect_ratio, clip_boxes

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.records[index]
        height, width = (int(v) for v in example["image_size"])
        return {**person_view(example["image"], example["keypoints"], example["bbox"],
                              (height, width), self.aspect_ratio, self.clip_boxes),
                "origin": np.asarray(example["origin"], np.float32), "image_width": width}

    def __repr__(self) -> str:
        return f"PersonCrops({len(self)} persons of {self.records!r})"
