"""Host-side augmentations (numpy + OpenCV), deterministic given the numpy Generator that grain
hands each record (seeded from the run's seed and the record's position)."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np


def long_side_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(height, width) of an image of `size` whose longer side becomes `long_side`."""
    h, w = size
    if h > w:
        return long_side, int(w * long_side / h + 0.5)
    return int(h * long_side / w + 0.5), long_side


def resize_long_side(image: np.ndarray, label: np.ndarray | None, long_side: int
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """Both resized so the longer side is `long_side`: the image bilinearly, labels nearest."""
    height, width = long_side_size(image.shape[:2], long_side)
    size = (width, height)
    image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    if label is not None:
        label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
    return image, label


def pad_to(image: np.ndarray, label: np.ndarray, size: tuple[int, int], ignore: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Pad bottom/right up to `size`: the image with 0 (black, before normalisation), the label
    with the ignore value."""
    pad_h, pad_w = max(size[0] - image.shape[0], 0), max(size[1] - image.shape[1], 0)
    if pad_h or pad_w:
        image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        label = cv2.copyMakeBorder(label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=ignore)
    return image, label


def swap_labels(label: np.ndarray, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Each pair's two labels trade places (a mirrored person's left arm becomes the right)."""
    if not pairs:
        return label
    lookup = np.arange(256, dtype=label.dtype)
    for left, right in pairs:
        lookup[left], lookup[right] = right, left
    return lookup[label]


def random_scale_crop_flip(image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                           base_size: int, scales: Sequence[float], crop_size: tuple[int, int],
                           flip: bool = True, ignore: int = 255,
                           flip_pairs: Sequence[tuple[int, int]] = ()
                           ) -> tuple[np.ndarray, np.ndarray]:
    """The segmentation reference's training augmentation: the long side scaled to
    base_size x (a scale drawn from `scales`), padded to the crop, a random crop, a coin-flip
    horizontal mirror (which swaps the labels of `flip_pairs`)."""
    scale = scales[rng.integers(len(scales))] if len(scales) else 1.0
    image, label = resize_long_side(image, label, int(base_size * scale + 0.5))
    image, label = pad_to(image, label, crop_size, ignore)
    y = rng.integers(image.shape[0] - crop_size[0] + 1)
    x = rng.integers(image.shape[1] - crop_size[1] + 1)
    image = image[y:y + crop_size[0], x:x + crop_size[1]]
    label = label[y:y + crop_size[0], x:x + crop_size[1]]
    if flip and rng.random() < 0.5:
        image, label = image[:, ::-1], swap_labels(label[:, ::-1], flip_pairs)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def scale_steps(low: float, high: float, step: float) -> tuple[float, ...]:
    """low, low + step, ..., high (inclusive), rounded: 0.5, 0.6, ..., 2.1."""
    count = int(round((high - low) / step)) + 1
    return tuple(round(low + k * step, 6) for k in range(count))


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """To (width, height) = size: area averaging when shrinking (as PIL's antialiased bilinear
    that torchvision uses), bilinear when enlarging."""
    shrinking = size[0] * size[1] < image.shape[0] * image.shape[1]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def random_resized_crop_box(height: int, width: int, rng: np.random.Generator,
                            scale: tuple[float, float] = (0.08, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box (top, left, height, width): up to 10 draws of an area
    fraction and a log-uniform aspect ratio that fit; else the centre crop of the clamped ratio."""
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        w, h = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    image_ratio = width / height
    if image_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif image_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop_flip(image: np.ndarray, rng: np.random.Generator, size: int,
                             flip: bool = True) -> np.ndarray:
    """ImageNet training: a random-resized crop to size x size, mirrored with probability 0.5."""
    top, left, h, w = random_resized_crop_box(image.shape[0], image.shape[1], rng)
    crop = resize(image[top:top + h, left:left + w], (size, size))
    if flip and rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


def resize_centre_crop(image: np.ndarray, size: int, crop_fraction: float = 0.875) -> np.ndarray:
    """ImageNet evaluation: the shorter side resized to size / crop_fraction (224 -> 256), then
    the centre size x size crop."""
    short = int(size / crop_fraction)
    h, w = image.shape[:2]
    scale = short / min(h, w)
    image = resize(image, (max(size, int(round(w * scale))), max(size, int(round(h * scale)))))
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return np.ascontiguousarray(image[top:top + size, left:left + size])


def mix_batch(images: np.ndarray, labels: np.ndarray, num_classes: int, rng: np.random.Generator,
              mixup_alpha: float, cutmix_alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Mixup or CutMix of a batch with its reverse (as timm does): one lambda ~ Beta(alpha,
    alpha) a batch, CutMix half the time when both are on. Returns the mixed images and the
    soft targets (N, num_classes), the label weights equal to the mixed area fractions."""
    targets = np.eye(num_classes, dtype=np.float32)[labels]
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < 0.5)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    other = images[::-1]
    if use_cutmix:
        height, width = images.shape[1:3]
        cut_h, cut_w = int(height * np.sqrt(1 - lam)), int(width * np.sqrt(1 - lam))
        cy, cx = rng.integers(height), rng.integers(width)
        y0, y1 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
        x0, x1 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
        mixed = images.copy()
        mixed[:, y0:y1, x0:x1] = other[:, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (height * width)  # the area actually pasted
    else:
        mixed = (lam * images + (1 - lam) * other).astype(images.dtype)
    return mixed, (lam * targets + (1 - lam) * targets[::-1]).astype(np.float32)
