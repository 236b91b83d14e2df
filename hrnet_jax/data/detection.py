"""Detection data: records of images with boxes -> fixed-shape batches.

An image is resized so that its short side is `short_side` and its long side at most
`max_long_side` (FCOS / mmdet's 800 and 1333), then padded at the bottom and right to a size
bucket: the landscape canvas (H, W) or, for a portrait image, its transpose (W, H). A batch
holds images of one orientation (`DetectionRecords.groups` tells the sampler which), so every
batch has one of two static shapes. Boxes go to x0, y0, x1, y1 in canvas pixels, padded to
`max_boxes` rows with a mask; crowd boxes and boxes under 1x1 pixel are left out of training.
"""

from __future__ import annotations

import warnings
from typing import Any

import cv2
import numpy as np

from hrnet_jax.data.transforms import resize


def object_arrays(record: dict[str, Any]) -> dict[str, np.ndarray]:
    """A prepared record's objects as arrays with a row per box (also when it has none); with
    `mask`, the compressed RLE strings, where the record has them."""
    objects = record["objects"]
    count = len(objects["bbox"])
    arrays = {"bbox": np.asarray(objects["bbox"], np.float32).reshape(count, 4),
              "label": np.asarray(objects["label"], np.int64).reshape(count),
              "area": np.asarray(objects["area"], np.float32).reshape(count),
              "iscrowd": np.asarray(objects["iscrowd"], np.int32).reshape(count)}
    if "mask" in objects:
        arrays["mask"] = np.asarray(objects["mask"], object).reshape(count)
    return arrays


def resize_scale(height: int, width: int, short_side: int, max_long_side: int) -> float:
    """The factor that brings the short side to `short_side` unless the long side would pass
    `max_long_side`, in which case the long side is `max_long_side`."""
    return min(short_side / min(height, width), max_long_side / max(height, width))


def canvas_for(height: int, width: int, canvas: tuple[int, int]) -> tuple[int, int]:
    """The size bucket of an image: `canvas` (H, W), H <= W, for landscape; transposed for
    portrait."""
    short, long = sorted(canvas)
    return (long, short) if height > width else (short, long)


def resize_and_pad(image: np.ndarray, short_side: int, max_long_side: int,
                   canvas: tuple[int, int]) -> tuple[np.ndarray, float]:
    """The image resized (see `resize_scale`) onto the top left of its zero-padded bucket;
    returns (picture of the bucket's shape, scale factor applied)."""
    height, width = image.shape[:2]
    scale = resize_scale(height, width, short_side, max_long_side)
    new_h, new_w = int(height * scale + 0.5), int(width * scale + 0.5)
    out_h, out_w = canvas_for(height, width, canvas)
    if new_h > out_h or new_w > out_w:
        raise ValueError(f"a {width}x{height} image resized to {new_w}x{new_h} does not fit the "
                         f"{out_w}x{out_h} canvas; make data.image_size at least "
                         f"({short_side}, {max_long_side}), each rounded up to a multiple of 32")
    picture = np.zeros((out_h, out_w, 3), np.uint8)
    picture[:new_h, :new_w] = resize(image, (new_w, new_h))
    return picture, scale


def flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """x, y, w, h boxes of an image of `width` pixels mirrored left-right."""
    flipped = boxes.copy()
    flipped[:, 0] = width - boxes[:, 0] - boxes[:, 2]
    return flipped


def training_boxes(objects: dict[str, np.ndarray], scale: float, max_boxes: int,
                   name: str = "an image", mask_image_size: tuple[int, int] | None = None
                   ) -> dict[str, np.ndarray]:
    """Non-crowd boxes of at least 1x1 pixel, scaled, as x0, y0, x1, y1 padded to `max_boxes`
    (the largest kept where there are more, said once an image with how many were dropped),
    labels and the mask of real rows. With `mask_image_size` (H, W), the size of the image the
    objects' RLE masks describe, also `box_masks` (max_boxes, S, S): each kept box's mask
    resampled inside it (box_relative_masks)."""
    boxes = objects["bbox"]
    rows = np.flatnonzero((objects["iscrowd"] == 0) & (boxes[:, 2] >= 1) & (boxes[:, 3] >= 1))
    if len(rows) > max_boxes:
        warnings.warn(f"{name}: {len(rows)} boxes train, data.max_boxes={max_boxes} kept (the "
                      f"largest), {len(rows) - max_boxes} dropped; raise data.max_boxes to keep "
                      "them all", stacklevel=2)
        area = boxes[rows, 2] * boxes[rows, 3]
        rows = rows[np.argsort(-area, kind="stable")[:max_boxes]]
    boxes, labels = boxes[rows], objects["label"][rows]
    corners = np.zeros((max_boxes, 4), np.float32)
    corners[:len(boxes)] = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1) * scale
    padded_labels = np.zeros(max_boxes, np.int32)
    padded_labels[:len(labels)] = labels
    mask = np.zeros(max_boxes, np.float32)
    mask[:len(boxes)] = 1.0
    out = {"boxes": corners, "labels": padded_labels, "box_mask": mask}
    if mask_image_size is not None:
        if "mask" not in objects:
            raise ValueError(f"{name}: the objects carry no instance masks (objects/mask); "
                             "prepare the dataset with masks (the COCO builder 1.1.0 keeps them)")
        box_masks = np.zeros((max_boxes, BOX_MASK_SIZE, BOX_MASK_SIZE), np.float32)
        box_masks[:len(rows)] = box_relative_masks(
            decode_masks(objects["mask"][rows], *mask_image_size), boxes)
        out["box_masks"] = box_masks
    return out


class DetectionRecords:
    """Random access to the training records of a prepared detection dataset, with each
    record's orientation (`groups`: 1 portrait, 0 landscape) for orientation-grouped batches."""

    def __init__(self, records: Any, training: list[int], portrait: list[int]):
        self.records, self.training = records, list(training)
        portrait = set(portrait)
        self.groups = np.array([record in portrait for record in self.training], np.int32)

    def __len__(self) -> int:
        return len(self.training)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.records[self.training[index]]

    def __repr__(self) -> str:
        return f"DetectionRecords({self.records!r}, {len(self.training)} training records)"


# -- instance masks (Mask R-CNN) ------------------------------------------------------------
# Records keep each instance's mask as COCO's compressed RLE string (a few hundred bytes);
# `prepare` decodes it and resamples it inside its box to a fixed BOX_MASK_SIZE grid, so a
# batch carries (max_boxes, S, S) masks whatever the image size, and the device takes each
# RoI's 28x28 target from its ground truth's box-relative mask (hrnet_jax.tasks.rcnn).
BOX_MASK_SIZE = 56


def instance_rle(segmentation: Any, height: int, width: int) -> str:
    """COCO's `segmentation` (polygons, or RLE with counts as a list or a string) as one
    compressed RLE string; "" when nothing is left (no polygon of three points or more)."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6 and len(p) % 2 == 0]
        if not polygons:
            return ""
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation)
    counts = rle["counts"]
    return counts.decode() if isinstance(counts, bytes) else counts


def decode_masks(rles: Any, height: int, width: int) -> np.ndarray:
    """Compressed RLE strings (an empty one: no mask) -> (M, height, width) uint8."""
    from pycocotools import mask as mask_utils

    masks = np.zeros((len(rles), height, width), np.uint8)
    for index, counts in enumerate(rles):
        counts = counts.decode() if isinstance(counts, bytes) else counts
        if counts:
            masks[index] = mask_utils.decode({"size": [height, width], "counts": counts.encode()})
    return masks


def encode_masks(masks: np.ndarray) -> list[str]:
    """(M, H, W) binary masks -> compressed RLE strings (pycocotools), the inverse of
    decode_masks: pycocotools' own encoder's strings."""
    height, width = masks.shape[1:]
    return [encode_region(mask, 0, 0, height, width) for mask in masks]


def encode_region(region: np.ndarray, top: int, left: int, height: int, width: int) -> str:
    """The compressed RLE string of a height x width mask that is zero but for the (h, w)
    `region` at (top, left). The runs are counted in the box around the region's pixels only
    (an instance covers a sliver of its image): pycocotools' own encoder's string of the
    whole mask, several times faster."""
    runs = run_lengths(region, top, left, height, width)
    return rle_strings(np.asarray(runs, np.int64), np.array([len(runs)]))[0]


def rle_strings(runs: np.ndarray, lengths: np.ndarray) -> list[str]:
    """Masks' uncompressed RLE runs, concatenated (`lengths` runs a mask) -> their compressed
    COCO strings, all at once: pycocotools' format (each run less the one two before it, from
    the fourth, in 5-bit groups, low first, ASCII 48 + group + 32 when more follow), without a
    call a mask (test: the strings pycocotools writes)."""
    runs = np.asarray(runs, np.int64)
    starts = np.cumsum(lengths) - lengths
    in_mask = np.arange(len(runs)) - np.repeat(starts, lengths)  # a run's index in its mask
    earlier = np.concatenate([np.zeros(2, np.int64), runs])[:len(runs)]
    values = np.where(in_mask > 2, runs - earlier, runs)
    # A value takes the fewest 5-bit groups that hold it as a signed number: bits beyond its
    # magnitude's (its complement's when negative) and a sign bit.
    magnitude = values ^ (values >> 63)
    bits = np.frexp(magnitude.astype(np.float64))[1]  # bit length (exact below 2^53)
    count = np.maximum((bits + 5) // 5, 1)
    if not len(lengths):
        return []
    group = np.arange(count.max())  # |value| < 2^34: at most 7 groups
    more = (group < count[:, None] - 1) << 5
    chars = (48 + (((values[:, None] >> (5 * group)) & 0x1F) | more)).astype(np.uint8)
    text = chars[group < count[:, None]].tobytes().decode("ascii")
    sizes = np.add.reduceat(count, starts)  # characters a mask (each has a run)
    return [text[end - size:end] for end, size in zip(np.cumsum(sizes), sizes)]


def run_lengths(region: np.ndarray, top: int, left: int, height: int, width: int) -> list[int]:
    """COCO's uncompressed RLE of a height x width mask, zero but for `region` at (top, left):
    alternating runs of 0s and 1s, first 0s, in column-major order."""
    columns = np.flatnonzero(region.any(0))
    if not len(columns):
        return [height * width]
    x0, x1 = columns[0], columns[-1] + 1
    rows = np.flatnonzero(region[:, x0:x1].any(1))
    block = np.zeros((x1 - x0, height), bool)  # the occupied columns, column-major
    block[:, top + rows[0]:top + rows[-1] + 1] = region[rows[0]:rows[-1] + 1, x0:x1].T
    flat = block.ravel()
    edges = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    runs = np.diff(edges).tolist()  # flat[0] is False: the block's first row is empty or not
    runs = ([0] + runs) if flat[0] else runs
    runs[0] += (left + int(x0)) * height  # the empty columns before and after
    after = (width - left - int(x1)) * height
    if after and len(runs) % 2 == 0:  # ends on 1s: the empty columns after, a run of 0s
        runs.append(after)
    elif after:
        runs[-1] += after
    return runs


def flip_masks(rles: Any, height: int, width: int) -> np.ndarray:
    """Compressed RLE strings of a height x width image, mirrored left-right (re-encoded; an
    empty string stays empty)."""
    flipped = [encode_masks(decode_masks([counts], height, width)[:, :, ::-1])[0]
               if len(counts) else "" for counts in rles]
    return np.asarray(flipped, object).reshape(len(flipped))


def box_relative_masks(masks: np.ndarray, boxes: np.ndarray, size: int = BOX_MASK_SIZE
                       ) -> np.ndarray:
    """Each (H, W) mask resampled (bilinear) inside its x, y, w, h box on a size x size grid of
    cell centres: (M, size, size) float32 in [0, 1]."""
    out = np.zeros((len(masks), size, size), np.float32)
    for index, (mask, (x, y, w, h)) in enumerate(zip(masks, boxes)):
        if w <= 0 or h <= 0:
            continue
        # output cell (u, v) -> input point (x + (u + 0.5) w / size - 0.5, ...)
        affine = np.array([[w / size, 0, x + 0.5 * w / size - 0.5],
                           [0, h / size, y + 0.5 * h / size - 0.5]], np.float64)
        out[index] = cv2.warpAffine(mask.astype(np.float32), affine, (size, size),
                                    flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out


# -- semantic labels (HTC) -------------------------------------------------------------------
# COCO-stuff's `stuffthingmaps` PNGs: one label a pixel, 0..181 (things and stuff), 255
# unlabelled; HTC's semantic head predicts them at 1/8 of the padded canvas.
SEMANTIC_STRIDE = 8
UNLABELLED = 255
MISSING_SEMANTIC = ("its COCO-stuff labels were not found when the dataset was prepared: "
                    "HTC's semantic branch trains on them. Extract stuffthingmaps_trainval2017.zip "
                    "into the manual folder (stuffthingmaps/train2017/*.png beside "
                    "annotations/) and prepare again")


def semantic_target(example: dict[str, Any], size: np.ndarray, canvas: tuple[int, int],
                    name: str) -> np.ndarray:
    """An example's label map resized with its image to `size` (height, width; nearest),
    padded with 255 to the `canvas`, then taken at 1/8 (nearest, as mmdet's SegRescale):
    (canvas / 8) uint8."""
    labels = np.asarray(example.get("semantic", np.zeros((0, 0), np.uint8)))
    labels = labels.reshape(labels.shape[:2])
    if labels.shape[:2] != example["image"].shape[:2]:
        raise ValueError(f"{name}: {MISSING_SEMANTIC}" if labels.size <= 1 else
                         f"{name}: its semantic label map is {labels.shape[1]}x{labels.shape[0]}, "
                         f"its image {example['image'].shape[1]}x{example['image'].shape[0]}")
    padded = np.full(canvas, UNLABELLED, np.uint8)
    padded[:size[0], :size[1]] = cv2.resize(labels, (int(size[1]), int(size[0])),
                                            interpolation=cv2.INTER_NEAREST)
    return cv2.resize(padded, (canvas[1] // SEMANTIC_STRIDE, canvas[0] // SEMANTIC_STRIDE),
                      interpolation=cv2.INTER_NEAREST)
