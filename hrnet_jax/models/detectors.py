"""Each detector in one description: its head module, its options (`model.detector`) and their
defaults, its weight names in mmdet's checkpoints, and what its task needs to know (masks, two
stages, HTC's semantic labels). A new detector is one entry of `DETECTORS`.

mmdet's names (the prefix `roi_head.` included) are written by weights.to_torch with mmdet's
`backbone.` and `neck.` prefixes and read back without them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn

from hrnet_jax.models.fcos_head import DetectionHead, FCOSOptions, style_named
from hrnet_jax.models.layers import LayerConfig
from hrnet_jax.models.two_stage import RCNNOptions, TwoStageDetector

Rules = tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class Detector:
    name: str
    build: Callable[..., nn.Module]  # (num_classes, layers, options, inference settings)
    options: type
    defaults: dict[str, Any]  # the options' values for this detector
    weight_rules: Rules  # Flax module path in the head -> mmdet's module name
    classes_key: str  # the mmdet weight whose rows are the classes...
    background: int  # ...with this many background rows
    masks: bool = False
    two_stage: bool = False
    bgr_checkpoints: Callable[[Any], bool] = lambda options: False
    # What `export --format=onnx` cannot convert in this detector's forward, if anything.
    onnx_blocker: str | None = None

    def default_options(self) -> Any:
        return self.options(**self.defaults)


def _hrfpn(scope: str) -> Rules:
    """HRFPN's convs (mmdet's `neck.*`, the prefix stripped), under the Flax `scope`."""
    return ((rf"^{scope}reduction$", "reduction_conv.conv"),
            (rf"^{scope}fpn(\d+)$", r"fpn_convs.\1.conv"))


def _box_heads(stage: str, mmdet: str) -> Rules:
    return ((rf"^box_head{stage}/fc1$", rf"roi_head.bbox_head{mmdet}.shared_fcs.0"),
            (rf"^box_head{stage}/fc2$", rf"roi_head.bbox_head{mmdet}.shared_fcs.1"),
            (rf"^box_head{stage}/classifier$", rf"roi_head.bbox_head{mmdet}.fc_cls"),
            (rf"^box_head{stage}/deltas$", rf"roi_head.bbox_head{mmdet}.fc_reg"))


def _mask_heads(stage: str, mmdet: str) -> Rules:
    conv = r"\2" if stage else r"\1"  # the conv's index follows the stage's, if any
    return ((rf"^mask_head{stage}/conv(\d+)$", rf"roi_head.mask_head{mmdet}.convs.{conv}.conv"),
            (rf"^mask_head{stage}/conv_res$", rf"roi_head.mask_head{mmdet}.conv_res.conv"),
            (rf"^mask_head{stage}/upsample$", rf"roi_head.mask_head{mmdet}.upsample"),
            (rf"^mask_head{stage}/classifier$", rf"roi_head.mask_head{mmdet}.conv_logits"))


_RPN: Rules = (*_hrfpn("neck/"), (r"^rpn/shared$", "rpn_head.rpn_conv"),
               (r"^rpn/objectness$", "rpn_head.rpn_cls"), (r"^rpn/deltas$", "rpn_head.rpn_reg"))
_ONE_STAGE_BOXES = _box_heads("", "")
_ONE_STAGE_MASKS = _mask_heads("", "")
_CASCADE_BOXES = _box_heads(r"(\d+)", r".\1")
_CASCADE_MASKS = _mask_heads(r"(\d+)", r".\1")
_SEMANTIC: Rules = ((r"^semantic_head/lateral(\d+)$", r"roi_head.semantic_head.lateral_convs.\1.conv"),
                    (r"^semantic_head/conv(\d+)$", r"roi_head.semantic_head.convs.\1.conv"),
                    (r"^semantic_head/classifier$", "roi_head.semantic_head.conv_logits"),
                    (r"^semantic_head/embedding$", "roi_head.semantic_head.conv_embedding.conv"))
_FCOS: Rules = (*_hrfpn("neck/"),
                (r"^fcos/cls_tower/conv(\d+)$", r"bbox_head.cls_convs.\1.conv"),
                (r"^fcos/cls_tower/norm(\d+)$", r"bbox_head.cls_convs.\1.gn"),
                (r"^fcos/box_tower/conv(\d+)$", r"bbox_head.reg_convs.\1.conv"),
                (r"^fcos/box_tower/norm(\d+)$", r"bbox_head.reg_convs.\1.gn"),
                (r"^fcos/cls_logits$", "bbox_head.conv_cls"),
                (r"^fcos/box_pred$", "bbox_head.conv_reg"),
                (r"^fcos/centerness$", "bbox_head.conv_centerness"),
                (r"^fcos$", "bbox_head"))


def _fcos(num_classes: int, layers: LayerConfig, options: FCOSOptions,
          inference: dict[str, Any]) -> nn.Module:
    del inference  # FCOS decodes in its task's postprocess
    return DetectionHead(num_classes, layers, options, name="head")


def _two_stage(masks: bool) -> Callable[..., nn.Module]:
    def build(num_classes: int, layers: LayerConfig, options: RCNNOptions,
              inference: dict[str, Any]) -> nn.Module:
        return TwoStageDetector(num_classes, layers, options, masks, **inference, name="head")
    return build


# mmdet's cascades (cascade_rcnn_r50_fpn, htc): three stages at IoU 0.5 / 0.6 / 0.7, finer
# coder stds a stage, losses weighted 1 / 0.5 / 0.25, class-agnostic deltas, smooth-L1 box
# losses (beta 1/9 for the RPN, 1 for the stages), 2000 proposals kept in training.
_CASCADE = dict(stage_ious=(0.5, 0.6, 0.7),
                stage_stds=(0.1, 0.1, 0.2, 0.2, 0.05, 0.05, 0.1, 0.1, 0.033, 0.033, 0.067, 0.067),
                stage_weights=(1.0, 0.5, 0.25), class_agnostic=True, rpn_beta=1 / 9,
                box_beta=1.0, train_proposals=2000)
# The R-CNNs select their proposals (and each stage its detections) by NMS inside the forward,
# where ONNX's NonMaxSuppression cannot stand in for ours as it does after FCOS's head.
_RPN_NMS = ("the RPN's proposal NMS inside the network (a lax.fori_loop / while_loop under "
            "vmap, which jax2onnx cannot convert)")
_R_CNN_CLASSES = ("roi_head.bbox_head.fc_cls.weight", 1)
_CASCADE_CLASSES = ("roi_head.bbox_head.0.fc_cls.weight", 1)

DETECTORS: dict[str, Detector] = {d.name: d for d in (
    # FCOS; "detection" is its head name since the first detector
    Detector("detection", _fcos, FCOSOptions, {}, _FCOS, "bbox_head.conv_cls.weight", 0,
             bgr_checkpoints=lambda options: style_named(options.style).bgr_checkpoints),
    Detector("faster_rcnn", _two_stage(False), RCNNOptions, {}, (*_RPN, *_ONE_STAGE_BOXES),
             *_R_CNN_CLASSES, two_stage=True, onnx_blocker=_RPN_NMS),
    Detector("mask_rcnn", _two_stage(True), RCNNOptions, {},
             (*_RPN, *_ONE_STAGE_BOXES, *_ONE_STAGE_MASKS), *_R_CNN_CLASSES, masks=True,
             two_stage=True, onnx_blocker=_RPN_NMS),
    Detector("cascade_rcnn", _two_stage(False), RCNNOptions, _CASCADE, (*_RPN, *_CASCADE_BOXES),
             *_CASCADE_CLASSES, two_stage=True, onnx_blocker=_RPN_NMS),
    Detector("cascade_mask_rcnn", _two_stage(True), RCNNOptions, _CASCADE,
             (*_RPN, *_CASCADE_BOXES, *_CASCADE_MASKS), *_CASCADE_CLASSES, masks=True,
             two_stage=True, onnx_blocker=_RPN_NMS),
    Detector("htc", _two_stage(True), RCNNOptions,
             dict(_CASCADE, interleaved=True, mask_info_flow=True, semantic_classes=183),
             (*_RPN, *_CASCADE_BOXES, *_CASCADE_MASKS, *_SEMANTIC), *_CASCADE_CLASSES,
             masks=True, two_stage=True, onnx_blocker=_RPN_NMS),
)}


@dataclasses.dataclass(unsafe_hash=True)
class NoOptions:
    """`model.detector` of a head that is not a detector: it has no options."""

    def check(self) -> None:
        pass


def options_class(head: str | None) -> type:
    return DETECTORS[head].options if head in DETECTORS else NoOptions


def default_options(head: str | None) -> Any:
    return DETECTORS[head].default_options() if head in DETECTORS else NoOptions()
