"""HRNet models: `create_model(arch, head, num_classes, **overrides)`.

The variables are the plain tree {'params': {'backbone': ..., 'head': ...}, 'batch_stats': ...};
every head shares the backbone subtree, so transplanting a backbone is copying one subtree.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from hrnet_jax.models.detectors import DETECTORS, default_options, options_class
from hrnet_jax.models.heads import ClassificationHead, PoseHead, PyramidNeck, RepresentationHead
from hrnet_jax.models.hrnet import ARCHS, ArchSpec, HRNetBackbone, StageSpec, tiny_arch
from hrnet_jax.models.layers import LayerConfig
from hrnet_jax.models.ocr_head import OCRHead

HEADS = (None, "classification", "segmentation", "segmentation_ocr", "pose", "landmarks", "pyramid",
         *DETECTORS)

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
    **{name: dict(upsample="nearest", bn_momentum=0.9, num_classes=80) for name in DETECTORS},
}

LAYER_OPTIONS = tuple(f.name for f in dataclasses.fields(LayerConfig))


class HRNet(nn.Module):
    """Backbone and (optionally) one task head. `head=None` returns the branch features."""

    arch: ArchSpec
    layers: LayerConfig
    head: str | None = None
    num_classes: int | None = None
    # A detector's options (models.detectors: FCOSOptions, RCNNOptions), and the inference
    # settings of those that detect inside the model (score_threshold, nms_threshold,
    # detections, pre_nms) as pairs.
    detector: Any = None
    inference: tuple[tuple[str, Any], ...] = ()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, targets: dict | None = None,
                 image_sizes: jnp.ndarray | None = None) -> Any:
        """`targets`: what a head trains on inside its forward (the R-CNNs' ground truth,
        Task.model_inputs); `image_sizes` (N, 2): each image's height and width inside the
        padded canvas, where a detector clips its boxes (default: the whole canvas). The other
        heads take neither."""
        # HRNetV1 for pose: the last module fuses into branch 0 only; the other heads use all.
        xs = HRNetBackbone(self.arch, self.layers, multi_scale_output=self.head != "pose",
                           name="backbone")(x, train and not self.layers.norm_eval)
        if self.head is None:
            return xs
        if self.head in DETECTORS:
            detector = DETECTORS[self.head]
            return detector.build(self.num_classes, self.layers, self.detector,
                                  dict(self.inference))(xs, train, targets, image_sizes)
        if self.head == "classification":
            return ClassificationHead(self.num_classes, self.layers, name="head")(xs, train)
        if self.head in ("segmentation", "landmarks"):
            return RepresentationHead(self.num_classes, self.layers, name="head")(xs, train)
        if self.head == "segmentation_ocr":  # training: (logits, auxiliary logits)
            return OCRHead(self.num_classes, self.layers, name="head")(xs, train)
        if self.head == "pose":
            return PoseHead(self.num_classes, self.layers, name="head")(xs, train)
        return PyramidNeck(self.layers, name="head")(xs, train)


def create_model(arch: str | ArchSpec, head: str | None = None, num_classes: int | None = None,
                 detector: Any = None, inference: dict[str, Any] | None = None,
                 **overrides: Any) -> HRNet:
    """Build an HRNet. `arch` names a preset (see `ARCHS`) or is an `ArchSpec`.

    detector: a detector head's options (models.detectors.DETECTORS[head].options, e.g.
    FCOSOptions(strides=(4, 8, 16, 32, 64)) or RCNNOptions), or a dict of changes to the head's
    defaults; inference: the R-CNNs' detection settings (`score_threshold`, `nms_threshold`,
    `detections`, `pre_nms`).
    overrides: any `LayerConfig` field (upsample, align_corners, bn_momentum, bn_epsilon, dtype,
    scan_modules, norm_eval, remat, remat_saves);
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
    options = detector_options(head, detector)
    return HRNet(arch, layers, head, num_classes if num_classes is not None else default_classes,
                 options, tuple(sorted((inference or {}).items())))


def detector_options(head: str | None, detector: Any = None) -> Any:
    """The head's options: `detector` itself (of the head's options class), or the head's
    defaults changed by a dict; checked. A head that is not a detector takes none."""
    if head not in DETECTORS:
        if detector:
            raise ValueError(f"head {head!r} is not a detector: it takes no detector options")
        return None
    kind = options_class(head)
    if detector is None or isinstance(detector, dict):
        changes = detector or {}
        valid = [f.name for f in dataclasses.fields(kind)]
        unknown = sorted(set(changes) - set(valid))
        if unknown:
            raise ValueError(f"the {head} head has no option(s) {unknown}; its options: "
                             f"{', '.join(valid)}")
        options = dataclasses.replace(default_options(head), **changes)
    elif isinstance(detector, kind):
        options = detector
    else:
        raise ValueError(f"the {head} head takes {kind.__name__}, not "
                         f"{type(detector).__name__}")
    options.check()
    return options


def trained_on_bgr(model: HRNet) -> bool:
    """Whether the released PyTorch checkpoints of this model were trained on BGR images: mmdet's
    FCOS (its style says so); its R-CNNs and every other head took RGB."""
    return model.head in DETECTORS and DETECTORS[model.head].bgr_checkpoints(model.detector)


__all__ = ["ARCHS", "ArchSpec", "DETECTORS", "HEADS", "HRNet", "LayerConfig", "StageSpec",
           "create_model", "detector_options", "tiny_arch", "trained_on_bgr"]
