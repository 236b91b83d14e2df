"""HRNet models: `create_model(arch, head, num_classes, **overrides)`.

The variables are the plain tree {'params': {'backbone': ..., 'head': ...}, 'batch_stats': ...};
every head shares the backbone subtree, so transplanting a backbone is copying one subtree.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from hrnet_jax.models.fcos_head import PYRAMID_STRIDES, DetectionHead, style_named
from hrnet_jax.models.heads import ClassificationHead, PoseHead, PyramidNeck, RepresentationHead
from hrnet_jax.models.hrnet import ARCHS, ArchSpec, HRNetBackbone, StageSpec, tiny_arch
from hrnet_jax.models.layers import LayerConfig
from hrnet_jax.models.ocr_head import OCRHead
from hrnet_jax.models.rcnn_heads import FasterRCNNHead

HEADS = (None, "classification", "segmentation", "segmentation_ocr", "pose", "landmarks", "pyramid",
         "detection", "faster_rcnn", "mask_rcnn")

# The papers' per-task defaults. bn_momentum is Flax's: PyTorch 0.1 -> 0.9, 0.01 -> 0.99.
HEAD_DEFAULTS: dict[str | None, dict[str, Any]] = {
    None: dict(upsample="nearest", bn_momentum=0.9),
    "classification": dict(upsample="nearest", bn_momentum=0.9, num_classes=1000),
    "segmentation": dict(upsample="bilinear", align_corners=False, bn_momentum=0.99, num_classes=19),
    # The official OCR model: PyTorch momentum 0.1 everywhere, align_corners=True resampling.
    "segmentation_ocr": dict(upsample="bilinear", align_corners=True, bn_momentum=0.9,
                             num_classes=19),
    "pose": dict(upsample="nearest", bn_momentum=0.9, num_classes=17),
    "landmarks": dict(upsample="bilinear", align_corners=False, bn_momentum=0.99, num_classes=98),
    "pyramid": dict(upsample="nearest", bn_momentum=0.9),
    "detection": dict(upsample="nearest", bn_momentum=0.9, num_classes=80),
    "faster_rcnn": dict(upsample="nearest", bn_momentum=0.9, num_classes=80),
    "mask_rcnn": dict(upsample="nearest", bn_momentum=0.9, num_classes=80),
}

LAYER_OPTIONS = tuple(f.name for f in dataclasses.fields(LayerConfig))


class HRNet(nn.Module):
    """Backbone and (optionally) one task head. `head=None` returns the branch features."""

    arch: ArchSpec
    layers: LayerConfig
    head: str | None = None
    num_classes: int | None = None
    strides: tuple[int, ...] = PYRAMID_STRIDES[1]  # detection's pyramid levels
    head_channels: int = 256  # detection's pyramid and FCOS towers
    fcos_style: str = "improved"  # detection: hrnet_jax.models.fcos_head.FCOS_STYLES
    rcnn: tuple[tuple[str, Any], ...] = ()  # faster/mask_rcnn: FasterRCNNHead's options, as pairs

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, targets: dict | None = None) -> Any:
        """`targets`: what a head trains on inside its forward (the R-CNNs' ground truth,
        Task.model_inputs); the other heads take none."""
        # HRNetV1 for pose: the last module fuses into branch 0 only; the other heads use all.
        xs = HRNetBackbone(self.arch, self.layers, multi_scale_output=self.head != "pose",
                           name="backbone")(x, train and not self.layers.norm_eval)
        if self.head is None:
            return xs
        if self.head == "classification":
            return ClassificationHead(self.num_classes, self.layers, name="head")(xs, train)
        if self.head in ("segmentation", "landmarks"):
            return RepresentationHead(self.num_classes, self.layers, name="head")(xs, train)
        if self.head == "segmentation_ocr":  # training: (logits, auxiliary logits)
            return OCRHead(self.num_classes, self.layers, name="head")(xs, train)
        if self.head == "pose":
            return PoseHead(self.num_classes, self.layers, name="head")(xs, train)
        if self.head == "detection":
            return DetectionHead(self.num_classes, self.layers, self.strides, self.head_channels,
                                 self.fcos_style, name="head")(xs, train)
        if self.head in ("faster_rcnn", "mask_rcnn"):
            return FasterRCNNHead(self.num_classes, self.layers, self.head_channels,
                                  masks=self.head == "mask_rcnn", **dict(self.rcnn),
                                  name="head")(xs, train, targets)
        return PyramidNeck(self.layers, name="head")(xs, train)


def create_model(arch: str | ArchSpec, head: str | None = None, num_classes: int | None = None,
                 strides: tuple[int, ...] = PYRAMID_STRIDES[1], head_channels: int = 256,
                 fcos_style: str = "improved", rcnn: dict[str, Any] | None = None,
                 **overrides: Any) -> HRNet:
    """Build an HRNet. `arch` names a preset (see `ARCHS`) or is an `ArchSpec`.

    strides: the detection head's pyramid levels, (8, ..., 128) as mmdet's HRNet-FCOS or the
    neck's own (4, ..., 64); head_channels: its pyramid's and towers' width (256 in FCOS; a
    multiple of 32, the GroupNorm groups); fcos_style: "improved" or "mmdet" (FCOS_STYLES);
    rcnn: the R-CNNs' options (FasterRCNNHead's fields): `proposals` kept and `rois` sampled an
    image (1000, 512), and the detection settings of inference (`score_threshold`,
    `nms_threshold`, `detections`, `pre_nms`).
    overrides: any `LayerConfig` field (upsample, align_corners, bn_momentum, bn_epsilon, dtype,
    scan_modules, norm_eval);
    the head picks the papers' defaults for the rest.
    """
    if isinstance(arch, str):
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
        arch = ARCHS[arch]
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {HEADS}")
    unknown = sorted(set(overrides) - set(LAYER_OPTIONS))
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown}; valid options: {list(LAYER_OPTIONS)}")
    defaults = dict(HEAD_DEFAULTS[head])
    default_classes = defaults.pop("num_classes", None)
    if head in ("pyramid", None) and num_classes is not None:
        raise ValueError(f"head {head!r} has no classes; do not pass num_classes")
    layers = LayerConfig(**{**defaults, **overrides})
    if tuple(strides) not in PYRAMID_STRIDES:
        raise ValueError(f"pyramid strides {tuple(strides)}: choose "
                         f"{' or '.join(map(str, PYRAMID_STRIDES))}")
    if head_channels % 32:
        raise ValueError(f"head_channels {head_channels}: the FCOS towers' GroupNorm needs a "
                         "multiple of 32")
    style_named(fcos_style)  # an unknown style names the known ones
    return HRNet(arch, layers, head, num_classes if num_classes is not None else default_classes,
                 tuple(strides), head_channels, fcos_style, tuple(sorted((rcnn or {}).items())))


def trained_on_bgr(model: HRNet) -> bool:
    """Whether the released PyTorch checkpoints of this model were trained on BGR images: mmdet's
    FCOS (its style says so); its Faster / Mask R-CNN and every other head took RGB."""
    return model.head == "detection" and style_named(model.fcos_style).bgr_checkpoints


__all__ = ["ARCHS", "ArchSpec", "HEADS", "HRNet", "LayerConfig", "StageSpec", "create_model",
           "tiny_arch", "trained_on_bgr"]
