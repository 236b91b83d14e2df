"""An experiment as plain dataclasses, the `--set a.b=value` override parser, and JSON I/O.

Experiments are Python files (`experiments/NAME.py`) exposing `get_config(variant)`; everything a
run does is in the returned `ExperimentConfig`, and `DIR/config.json` records it resolved.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any


@dataclasses.dataclass
class ModelConfig:
    arch: str = "hrnet_w18_small"  # a preset of hrnet_jax.models.ARCHS, or "tiny"
    width: int = 4  # the tiny arch's base width (C, 2C, 4C, 8C)
    head: str = "segmentation"
    num_classes: int | None = None
    dtype: str = "float32"  # compute dtype; parameters stay float32
    upsample: str | None = None  # None: the head's paper default
    bn_momentum: float | None = None
    # nn.scan over a stage's identical modules and a branch's identical blocks: the same function
    # and variables, compiled ~2x faster (W48 seg step 61 -> 33 s here, scripts/compile_time.py).
    # Off by default: XLA:CPU runs the scanned backward ~7x slower. For TPU pods.
    scan_modules: bool = False
    # Activations recomputed in the backward pass instead of kept, to fit a larger batch in
    # HBM: "none", "module" (each HighResolutionModule) or "block" (each residual block);
    # remat_saves "convs" keeps the convolutions' outputs all the same. Same gradients.
    # scripts/remat_memory.py reports memory and step time of each.
    remat: str = "none"
    remat_saves: str = "nothing"
    norm_eval: bool = False  # backbone BatchNorm frozen in inference mode (mmdet's norm_eval)
    # A detector head's options, chosen by the head as the data options by the task
    # (hrnet_jax.models.detectors): FCOS's strides / channels / style, the R-CNNs' proposals,
    # sampled RoIs and per-stage IoUs, stds and loss weights. `--set model.detector.rois=64`.
    detector: Any = None
    # ImageNet (or other) weights for the backbone at the start of a run: an official or timm
    # .pth / .safetensors file (hrnet_jax.training.pretrained). Empty: random initialisation.
    pretrained: str = ""

    def __post_init__(self):
        if self.detector is None:
            self.detector = detector_options(self.head)


@dataclasses.dataclass
class DataConfig:
    """What every task's data has; each task family adds its own options (below)."""

    name: str = "synthetic_segmentation"  # a dataset of hrnet_jax.data.datasets
    image_size: tuple[int, int] = (64, 64)
    batch_size: int = 8  # global, over every device and host
    eval_batch_size: int = 8
    num_train: int = 512  # generated datasets only
    num_eval: int = 64
    worker_count: int = 0  # grain worker processes
    seed: int = 0
    # Prepared datasets (python -m hrnet_jax.data.prepare): where, and which splits.
    data_dir: str = "~/tensorflow_datasets"
    train_split: str = "train"
    eval_split: str = "val"
    flip: bool = False  # training mirrors


@dataclasses.dataclass
class SegmentationData(DataConfig):
    # Training augmentation (off when crop_size is empty): the long side scaled to base_size x
    # one of train_scales, padded, randomly cropped to crop_size, mirrored if flip.
    base_size: int = 0
    train_scales: tuple[float, ...] = ()
    crop_size: tuple[int, ...] = ()
    # (H, W): every image (bilinear) and label (nearest) resized to it first, for training and
    # evaluation, where the scores are resized back to the label (LIP's protocol). Empty: off.
    resize: tuple[int, ...] = ()


@dataclasses.dataclass
class KeypointData(DataConfig):
    heatmap_sigma: float = 2.0  # the Gaussian targets' sigma, in heatmap pixels
    # Top-down training augmentation (hrnet_jax.data.topdown; 0 = off): scale drawn from
    # N(1, scale_factor) clipped to 1 +- scale_factor, rotation N(0, rotation_factor) degrees
    # clipped to +- 2 x rotation_factor with probability 0.6, half-body boxes with this probability.
    scale_factor: float = 0.0
    rotation_factor: float = 0.0
    half_body_probability: float = 0.0
    # Evaluation boxes: "ground_truth", or a COCO detection results file (person boxes and
    # scores, e.g. COCO_val2017_detections_AP_H_56_person.json of the HRNet release).
    person_boxes: str = "ground_truth"


@dataclasses.dataclass
class ClassificationData(DataConfig):
    # Training: RandomResizedCrop to image_size (else the evaluation framing, resize + centre
    # crop), and mixup / CutMix of each batch (timm's alphas; 0 = off).
    random_resized_crop: bool = False
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0


@dataclasses.dataclass
class DetectionData(DataConfig):
    # hrnet_jax.data.detection: the short side resized to one of short_sides (drawn per training
    # image: multi-scale; the largest at evaluation), the long side at most max_long_side, padded
    # to image_size (landscape) or its transpose (portrait); at most max_boxes ground-truth boxes
    # an image (the largest kept).
    short_sides: tuple[int, ...] = (800,)
    max_long_side: int = 1333
    max_boxes: int = 100


# The data options of each task.
DATA_CONFIGS = {"segmentation": SegmentationData, "pose": KeypointData, "landmarks": KeypointData,
                "classification": ClassificationData, "detection": DetectionData}


@dataclasses.dataclass
class OptimConfig:
    optimizer: str = "sgd"  # sgd | adam | adamw
    learning_rate: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    decay_norm_and_bias: bool = True  # the references decay everything
    schedule: str = "constant"  # constant | poly | multistep | cosine
    poly_power: float = 0.9
    milestones: tuple[float, ...] = ()  # fractions of the run, for multistep
    decay_factor: float = 0.1
    warmup_steps: int = 0
    warmup_start: float = 0.0  # the warmup's first lr as a fraction of learning_rate (FCOS: 1/3)
    grad_accum_steps: int = 1
    clip_grad_norm: float = 0.0  # clip the gradient's global norm to this (0: off; FCOS: 35)
    label_smoothing: float = 0.0
    # Parameter path patterns left untouched (hrnet_jax.surgery.matches), e.g.
    # ("backbone/stem", "backbone/layer1"): frozen stem and stage 1.
    freeze: tuple[str, ...] = ()


@dataclasses.dataclass
class LoopConfig:
    num_steps: int = 100
    log_every: int = 10
    eval_every: int = 0  # 0: at the end only
    seed: int = 0


@dataclasses.dataclass
class MeshConfig:
    data: int = -1  # -1: every device not used by the other axis
    fsdp: int = 1


@dataclasses.dataclass
class CheckpointConfig:
    every_steps: int = 100
    keep: int = 2


@dataclasses.dataclass
class EvalConfig:
    num_pictures: int = 4  # predictions drawn next to ground truth
    # Segmentation test-time inference (hrnet_jax.inference.segmentation): mirrored logits
    # averaged; several scales of data.base_size summed as exp(logits), scales > 1 by sliding
    # windows of data.crop_size. The default (1.0,) without flip is the batched eval step.
    flip: bool = False  # also pose: the flip test (mirrored heatmaps averaged, shifted 1 px)
    scales: tuple[float, ...] = (1.0,)
    # Which scaled images run whole: False, scales <= 1 (the reference's Cityscapes rule); True,
    # those that fit in data.crop_size, padded to it (its rule for LIP and PASCAL-Context).
    pad_to_crop: bool = False
    decoder: str = "argmax"  # pose heatmaps: "argmax" (+ quarter pixel, the reference) | "dark"
    # Detection (FCOS's inference): candidates above score_threshold, the pre_nms_top_k best a
    # level, class-wise NMS at nms_threshold IoU, max_detections kept an image.
    score_threshold: float = 0.05
    pre_nms_top_k: int = 1000
    nms_threshold: float = 0.6
    max_detections: int = 100
    # Image-by-image evaluations (flip, multi-scale, pose, COCO detection): images prepared and
    # post-processed at once by this many host threads, overlapping each other and the device
    # (OpenCV, pycocotools' and large numpy work run outside Python's lock). Each image in
    # flight holds its own device buffers (a Cityscapes multi-scale image ~1 GB).
    host_threads: int = 4


@dataclasses.dataclass
class LossConfig:
    """Task loss options (segmentation: class weights and OHEM, as HRNet-Semantic-Segmentation)."""

    class_weights: tuple[float, ...] = ()  # empty: unweighted
    ohem: bool = False
    ohem_threshold: float = 0.9  # keep pixels whose true-class probability is below this...
    ohem_min_kept: int = 131072  # ...or at least this many per device batch
    # Heads with an auxiliary output (HRNet-OCR's soft object regions): its cross-entropy's
    # weight, beside 1 for the main output (the reference's BALANCE_WEIGHTS [0.4, 1]).
    aux_weight: float = 0.4


@dataclasses.dataclass
class ExperimentConfig:
    name: str = ""
    description: str = ""
    task: str = "segmentation"  # segmentation | pose | landmarks | classification | detection
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=SegmentationData)  # DATA_CONFIGS[task]
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    loop: LoopConfig = dataclasses.field(default_factory=LoopConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)


class ConfigError(ValueError):
    """A bad override: names the key, the valid keys or the expected type."""


def valid_keys(config: Any, prefix: str = "") -> list[str]:
    """Every settable dotted key of a config."""
    keys = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            keys += valid_keys(value, f"{prefix}{field.name}.")
        else:
            keys.append(prefix + field.name)
    return keys


def _parse_value(text: str, annotation: Any, key: str) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        return _parse_value(text, next(a for a in args if a is not type(None)), key)
    if origin is tuple:
        item = args[0]
        if item in (int, float):  # sizes may be written 512x1024
            text = text.replace("x", ",")
        parts = [p for p in text.split(",") if p.strip()]
        values = tuple(_parse_value(p.strip(), item, key) for p in parts)
        if len(args) > 1 and args[1] is not Ellipsis:  # a fixed length, e.g. (height, width)
            if len(values) == 1 and len(args) == 2:
                values = values * 2  # one size: a square
            if len(values) != len(args):
                raise ConfigError(f"--set {key}={text}: expected {len(args)} numbers")
        return values
    try:
        if annotation is bool:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError(text)
        if annotation in (int, float, str):
            return annotation(text)
    except ValueError:
        pass
    else:
        raise ConfigError(f"--set {key}: unsupported type {annotation}")
    raise ConfigError(f"--set {key}={text}: expected {getattr(annotation, '__name__', annotation)}")


def apply_override(config: Any, assignment: str) -> None:
    """Apply one `a.b=value` in place, converting the value to the field's declared type."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    key, text = assignment.split("=", 1)
    key = key.strip()
    *path, target = key.split(".")
    node = config
    for part in path:
        node = getattr(node, part, None) if dataclasses.is_dataclass(node) else None
    fields = {f.name for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else set()
    if path == ["model", "detector"] and target not in fields:
        valid = ", ".join(sorted(fields)) or "none"
        raise ConfigError(f"--set {key}: the head {config.model.head!r} has no option "
                          f"{target!r}; its options: {valid}")
    if target not in fields or dataclasses.is_dataclass(getattr(node, target)):
        raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(valid_keys(config))}")
    hints = typing.get_type_hints(type(node))
    value = _parse_value(text.strip(), hints[target], key)
    if key == "model.head" and value != node.head:  # the new head's own detector options
        node.detector = detector_options(value)
    setattr(node, target, value)


def validate(config: ExperimentConfig) -> ExperimentConfig:
    """Values no run can use, named before anything is built or compiled."""
    positive = {"loop.num_steps": config.loop.num_steps, "loop.log_every": config.loop.log_every,
                "checkpoint.every_steps": config.checkpoint.every_steps,
                "checkpoint.keep": config.checkpoint.keep,
                "data.batch_size": config.data.batch_size,
                "data.eval_batch_size": config.data.eval_batch_size,
                "data.num_train": config.data.num_train, "data.num_eval": config.data.num_eval,
                "optim.grad_accum_steps": config.optim.grad_accum_steps}
    positive.update({f"data.image_size[{i}]": v for i, v in enumerate(config.data.image_size)})
    bad = [f"{key}={value}" for key, value in positive.items() if value <= 0]
    bad += [f"{key}={value}" for key, value in {"loop.eval_every": config.loop.eval_every,
                                                 "data.worker_count": config.data.worker_count,
                                                 "eval.num_pictures": config.eval.num_pictures
                                                 }.items() if value < 0]
    if bad:
        raise ConfigError(f"{', '.join(bad)}: must be positive (eval_every, worker_count and "
                          "num_pictures may be 0)")
    _check_ranges(config)
    if len(config.data.image_size) != 2:
        raise ConfigError(f"data.image_size={config.data.image_size}: expected height and width")
    if config.data.batch_size % config.optim.grad_accum_steps:
        raise ConfigError(f"data.batch_size={config.data.batch_size} does not split into "
                          f"optim.grad_accum_steps={config.optim.grad_accum_steps} micro-batches")
    from hrnet_jax.models.detectors import options_class

    detector = config.model.detector
    if type(detector) is not options_class(config.model.head):
        raise ConfigError(f"model.detector holds {type(detector).__name__}, the options of "
                          f"another head than model.head={config.model.head!r}")
    try:
        detector.check()
    except ValueError as error:
        raise ConfigError(str(error)) from None
    pretrained = config.model.pretrained
    if pretrained:
        from hrnet_jax import storage

        with storage.errors_named(pretrained, "read"):
            found = storage.path(pretrained).exists()
        if not found:
            raise ConfigError(f"model.pretrained={pretrained}: no such file or folder")
    return config


# Settings with a range or a list of names: a value outside is named before anything runs
# (a score threshold of 2 would give a normal-looking, empty evaluation).
UNIT_INTERVAL = ("eval.score_threshold", "eval.nms_threshold", "loss.ohem_threshold",
                 "optim.label_smoothing", "optim.momentum", "optim.warmup_start",
                 "data.half_body_probability", "model.bn_momentum")
NON_NEGATIVE = ("optim.learning_rate", "optim.weight_decay", "optim.clip_grad_norm",
                "optim.warmup_steps", "optim.poly_power", "optim.decay_factor", "data.mixup_alpha",
                "data.cutmix_alpha", "data.scale_factor", "data.rotation_factor",
                "loss.aux_weight", "loss.ohem_min_kept")
POSITIVE = ("data.heatmap_sigma", "eval.pre_nms_top_k", "eval.max_detections",
            "data.max_boxes", "data.max_long_side", "eval.host_threads")
CHOICES = {"model.dtype": ("float32", "bfloat16", "float16"),
           "model.remat": ("none", "module", "block"), "model.remat_saves": ("nothing", "convs"),
           "optim.optimizer": ("sgd", "adam", "adamw"),
           "optim.schedule": ("constant", "poly", "multistep", "cosine"),
           "eval.decoder": ("argmax", "dark")}


def _check_ranges(config: ExperimentConfig) -> None:
    values = flat(config)
    bad = [f"{k}={values[k]}: must be in [0, 1]" for k in UNIT_INTERVAL
           if values.get(k) is not None and not 0 <= values[k] <= 1]
    bad += [f"{k}={values[k]}: must be at least 0" for k in NON_NEGATIVE
            if values.get(k) is not None and values[k] < 0]
    bad += [f"{k}={values[k]}: must be above 0" for k in POSITIVE
            if values.get(k) is not None and values[k] <= 0]
    bad += [f"optim.milestones={values['optim.milestones']}: fractions of the run in (0, 1]"
            for _ in [0] if any(not 0 < m <= 1 for m in values["optim.milestones"])]
    bad += [f"{k}={values[k]}: scales must be above 0" for k in ("eval.scales", "data.train_scales")
            if any(v <= 0 for v in values.get(k) or ())]
    bad += [f"{k}={values[k]!r}: choose {' or '.join(choices)}" for k, choices in CHOICES.items()
            if values[k] not in choices]
    if bad:
        raise ConfigError("; ".join(bad))


def to_dict(config: ExperimentConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def to_json(config: ExperimentConfig) -> str:
    return json.dumps(to_dict(config), indent=2)


def flat(tree: dict[str, Any] | ExperimentConfig, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value as JSON has it (tuples as lists): `{"optim.learning_rate": 0.01}`."""
    if dataclasses.is_dataclass(tree):
        tree = json.loads(to_json(tree))
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = list(value) if isinstance(value, tuple) else value
    return out


# ModelConfig's detector options before they were the head's own (config.json of older runs):
# old key -> (new key, FCOS head only, R-CNN heads only).
_OLD_DETECTOR_KEYS = {"strides": "strides", "fcos_style": "style", "head_channels": "channels",
                      "rcnn_proposals": "proposals", "rcnn_rois": "rois"}


def _migrated_model(values: dict[str, Any]) -> dict[str, Any]:
    """A model section as written before `model.detector` existed, with its detector options
    moved into it (those the head reads) and the rest dropped."""
    from hrnet_jax.models.detectors import options_class

    values = dict(values)
    old = {k: values.pop(k) for k in list(values) if k in _OLD_DETECTOR_KEYS}
    if "detector" in values or not old:
        return values
    fields = {f.name for f in dataclasses.fields(options_class(values.get("head")))}
    detector = {_OLD_DETECTOR_KEYS[k]: v for k, v in old.items() if _OLD_DETECTOR_KEYS[k] in fields}
    if "rcnn_proposals" in old and "proposals" in fields:  # kept in training, 2x before NMS
        detector.update(train_proposals=old["rcnn_proposals"],
                        train_pre_nms=2 * old["rcnn_proposals"])
    values["detector"] = detector
    return values


def detector_options(head: str | None, values: dict[str, Any] | None = None) -> Any:
    """The options dataclass of a head (models.detectors) with `values` over its defaults."""
    from hrnet_jax.models.detectors import default_options

    options = default_options(head)
    hints = typing.get_type_hints(type(options))
    for name, value in (values or {}).items():
        if name not in hints:
            valid = ", ".join(f.name for f in dataclasses.fields(options)) or "none"
            raise ConfigError(f"model.detector.{name}: the head {head!r} has no such option; "
                              f"its options: {valid}")
        setattr(options, name, tuple(value) if isinstance(value, list) else value)
    return options


def from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Inverse of `to_dict` (tuples come back from JSON lists)."""
    def build(cls, values):
        hints = typing.get_type_hints(cls)
        hints["data"] = DATA_CONFIGS.get(values.get("task"), hints.get("data"))
        if cls is ModelConfig:
            values = _migrated_model(values)
            values["detector"] = detector_options(values.get("head"), values.get("detector"))
        kwargs = {}
        for name, value in values.items():
            hint = hints[name]
            if dataclasses.is_dataclass(value):
                pass
            elif dataclasses.is_dataclass(hint):
                value = build(hint, value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)
    return build(ExperimentConfig, data)


def save_json(config: ExperimentConfig, path: str) -> None:
    """The config as JSON at `path` (local or in a bucket), whole or not at all: other hosts
    may be reading it."""
    from hrnet_jax import storage

    storage.write_atomic(path, to_json(config))
