"""PyTorch state_dict <-> Flax variables, with strict accounting of every key.

Both key schemes users hold checkpoints in are understood without a flag: timm's and the official
HRNet repos' share the backbone names (`conv1`, `layer1.0.conv1`, `transition1.1.0.0`,
`stage2.0.branches.0.0.conv1`, `stage2.0.fuse_layers.1.0.0.0`, ...). Heads: classification
`incre_modules` / `downsamp_modules` / `final_layer` / `classifier` (cls_hrnet and timm),
segmentation `last_layer.{0,1,3}`, HRNet-OCR `conv3x3_ocr` / `aux_head` / `ocr_distri_head` /
`cls_head` (the official seg_hrnet_ocr), pose `final_layer`, landmarks `head.{0,1,3}`, pyramid
(HRFPN) `reduction_conv.conv` / `fpn_convs.K.conv`, detection mmdet's HRNetV2p FCOS
(`neck.*` HRFPN, `bbox_head.{cls,reg}_convs.K.{conv,gn}`, `conv_cls`, `conv_reg`,
`conv_centerness`, `scales.K.scale`), faster_rcnn mmdet's HRNetV2p Faster R-CNN (`neck.*`,
`rpn_head.rpn_{conv,cls,reg}`, `roi_head.bbox_head.{shared_fcs.0,shared_fcs.1,fc_cls,fc_reg}`),
mask_rcnn its Mask R-CNN (those, and `roi_head.mask_head.{convs.K.conv,upsample,conv_logits}`),
the cascades theirs a stage (`roi_head.bbox_head.I.*`, `roi_head.mask_head.I.*` with HTC's
`conv_res`, `roi_head.semantic_head.*`): each detector's rules are in its description
(models.detectors).
Wrapper prefixes (`module.`, `model.`, `backbone.`,
`neck.`) are stripped on reading; detector weights are written with mmdet's `backbone.` and
`neck.` prefixes.

mmdet's HRNet FCOS configs feed BGR images (`to_rgb=False`); `bgr=True` reverses the first
conv's input channels so that the model takes RGB, as every model here.

Nothing is skipped silently: every missing, unexpected and shape-mismatched key is named, and
strict loading fails on any of them unless the caller listed it in `ignore`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from hrnet_jax.models import DETECTORS, ArchSpec, HRNet, create_model, trained_on_bgr

Variables = dict[str, Any]

_WRAPPER_PREFIXES = ("module.", "model.", "backbone.", "neck.")
# Tensors the references save beside the model that no model holds: the official segmentation
# training saves its FullModel, `model.*` plus the loss's class weights `loss.criterion.weight`.
# They are known leftovers: reported as ignored, never an error.
KNOWN_LEFTOVERS = ("loss.*",)

# Flax module path (inside 'backbone') -> PyTorch module name, by pattern.
_BACKBONE_RULES = [
    (r"^stem/", ""),
    (r"^layer1/block(\d+)/", r"layer1.\1."),
    (r"^transition(\d+)/branch(\d+)/down(\d+)/", r"transition\1.\2.\3."),
    (r"^transition(\d+)/branch(\d+)/", r"transition\1.\2."),
    (r"^stage(\d+)/module(\d+)/branch(\d+)/block(\d+)/", r"stage\1.\2.branches.\3.\4."),
    (r"^stage(\d+)/module(\d+)/fuse/to(\d+)_from(\d+)/down(\d+)/", r"stage\1.\2.fuse_layers.\3.\4.\5."),
    (r"^stage(\d+)/module(\d+)/fuse/to(\d+)_from(\d+)/", r"stage\1.\2.fuse_layers.\3.\4."),
]


_HEAD_RULES: dict[str, list[tuple[str, str]]] = {
    "classification": [(r"^incre(\d+)/", r"incre_modules.\1.0."),
                       (r"^downsamp(\d+)/", r"downsamp_modules.\1."),
                       (r"^final/", "final_layer.")],
    "segmentation": [(r"^proj/", "last_layer."), (r"^classifier$", "last_layer.3")],
    # The OCR head's ConvBN units; the reference's BNReLU is Sequential(BatchNorm2d, ReLU), so
    # its BatchNorms sit one level deeper (`f_pixel.1.0`).
    "segmentation_ocr": [
        (r"^ocr_conv/", "conv3x3_ocr."), (r"^aux/", "aux_head."), (r"^aux_classifier$", "aux_head.3"),
        (r"^classifier$", "cls_head"),
        (r"^context/(pixel|object)0/0$", r"ocr_distri_head.object_context_block.f_\1.0"),
        (r"^context/(pixel|object)0/1$", r"ocr_distri_head.object_context_block.f_\1.1.0"),
        (r"^context/(pixel|object)1/0$", r"ocr_distri_head.object_context_block.f_\1.2"),
        (r"^context/(pixel|object)1/1$", r"ocr_distri_head.object_context_block.f_\1.3.0"),
        (r"^context/(down|up)/0$", r"ocr_distri_head.object_context_block.f_\1.0"),
        (r"^context/(down|up)/1$", r"ocr_distri_head.object_context_block.f_\1.1.0"),
        (r"^fuse/0$", "ocr_distri_head.conv_bn_dropout.0"),
        (r"^fuse/1$", "ocr_distri_head.conv_bn_dropout.1.0")],
    "landmarks": [(r"^proj/", "head."), (r"^classifier$", "head.3")],
    "pose": [(r"^classifier$", "final_layer")],
    "pyramid": [(r"^reduction$", "reduction_conv.conv"), (r"^fpn(\d+)$", r"fpn_convs.\1.conv")],
}
# mmdet's full names of a detector's parts (written by to_torch; stripped on reading).
_MMDET_SCOPES = (("bbox_head.", ""), ("rpn_head.", ""), ("roi_head.", ""),
                 ("reduction_conv.", "neck."), ("fpn_convs.", "neck."), ("", "backbone."))
_STEM_KERNEL = ("params", "backbone", "stem", "conv1", "kernel")
# The last segment of a module path, renamed first: ConvBN's conv and bn are PyTorch's
# Sequential indices 0 and 1.
_LEAF_MODULES = {"conv": "0", "bn": "1", "downsample_conv": "downsample.0",
                 "downsample_bn": "downsample.1"}
_PARAM_NAMES = {("params", "kernel"): "weight", ("params", "bias"): "bias",
                ("params", "scale"): "weight", ("batch_stats", "mean"): "running_mean",
                ("batch_stats", "var"): "running_var"}


def head_rules(head: str | None) -> list[tuple[str, str]]:
    """Flax module path in the head -> PyTorch module name, by pattern (a detector's from its
    description, models.detectors)."""
    if head in DETECTORS:
        return list(DETECTORS[head].weight_rules)
    return _HEAD_RULES.get(head or "", [])


def torch_module_name(path: str, head: str | None) -> str:
    """Map a Flax module path ('backbone/stage2/module0/fuse/to0_from1/conv') to its PyTorch
    module name ('stage2.0.fuse_layers.0.1.0')."""
    scope, _, rest = path.partition("/")
    prefix, _, last = rest.rpartition("/")
    rest = f"{prefix}/{_LEAF_MODULES.get(last, last)}" if prefix else _LEAF_MODULES.get(last, last)
    rules = _BACKBONE_RULES if scope == "backbone" else head_rules(head)
    for pattern, replacement in rules:
        rest, n = re.subn(pattern, replacement, rest)
        if n:
            break
    if "/" in rest:
        raise ValueError(f"no PyTorch name for Flax module {path!r} (head {head!r})")
    return rest


def _num_batches_key(running_mean_key: str) -> str:
    return running_mean_key[: -len("running_mean")] + "num_batches_tracked"


# PyTorch's registration order of module names, so that `to_torch` lists keys as torch does
# (JAX sorts dict keys, which would put `bn1` before `conv1`).
_TORCH_MODULE_ORDER = {name: rank for rank, name in enumerate((
    "conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "downsample", "layer1", "transition1", "stage2",
    "transition2", "stage3", "transition3", "stage4", "branches", "fuse_layers", "incre_modules",
    "downsamp_modules", "final_layer", "classifier", "last_layer", "conv3x3_ocr",
    "ocr_distri_head", "object_context_block", "f_pixel", "f_object", "f_down", "f_up",
    "conv_bn_dropout", "cls_head", "aux_head", "head", "reduction_conv", "fpn_convs",
    "bbox_head", "cls_convs", "reg_convs", "conv_cls", "conv_reg", "conv_centerness", "scales",
    "rpn_head", "rpn_conv", "rpn_cls", "rpn_reg", "roi_head", "shared_fcs", "fc_cls", "fc_reg",
    "mask_head", "semantic_head", "lateral_convs", "convs", "conv_res", "upsample",
    "conv_logits", "conv_embedding",
    "conv", "gn", "scale", "weight", "bias", "running_mean", "running_var",
    "num_batches_tracked"))}


def _torch_sort_key(key: str) -> tuple:
    return tuple((int(part), 0) if part.isdigit() else (-1, _TORCH_MODULE_ORDER.get(part, 99))
                 for part in key.split("."))


def key_map(variables: Variables, head: str | None) -> dict[str, tuple[str, ...]]:
    """Every PyTorch key of a model -> the (collection, *path) of its Flax leaf, in the order
    PyTorch lists them."""
    out = {}
    for flat_path in traverse_util.flatten_dict(variables):
        collection, *module, leaf = flat_path
        name = torch_module_name("/".join(module), head)
        level_scale = re.fullmatch(r"scale(\d+)", leaf)  # FCOS's per-level Scale modules
        param = (f"scales.{level_scale.group(1)}.scale" if level_scale and collection == "params"
                 else _PARAM_NAMES[(collection, leaf)])
        out[f"{name}.{param}"] = flat_path
    return {key: out[key] for key in sorted(out, key=_torch_sort_key)}


def _to_flax(array: np.ndarray) -> np.ndarray:
    if array.ndim == 4:  # conv (out, in, kh, kw) -> (kh, kw, in, out)
        return np.transpose(array, (2, 3, 1, 0))
    if array.ndim == 2:  # linear (out, in) -> (in, out)
        return array.T
    return array


def _to_torch(array: np.ndarray) -> np.ndarray:
    if array.ndim == 4:
        return np.transpose(array, (3, 2, 0, 1))
    if array.ndim == 2:
        return array.T
    return array


SHOWN_KEYS = 10  # keys of a kind a load error lists


@dataclasses.dataclass
class LoadReport:
    """What a conversion did with every key: nothing goes unaccounted."""

    loaded: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = dataclasses.field(default_factory=list)
    ignored: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors, ignored {len(self.ignored)}"]
        stages = sorted({found.group(0) for key in self.missing
                         if (found := re.match(r"roi_head\.(bbox|mask)_head\.\d+", key))})
        whole = [stage for stage in stages
                 if not any(key.startswith(stage + ".") for key in self.loaded)]
        if whole:
            lines.append("missing whole cascade stage(s): " + ", ".join(whole))
        # The first few of each kind and a count (another arch mismatches hundreds of keys);
        # the lists themselves stay whole on the report.
        for title, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                lines.append(f"{len(keys)} {title}: " + ", ".join(keys[:SHOWN_KEYS])
                             + (f", ... ({len(keys) - SHOWN_KEYS} more)"
                                if len(keys) > SHOWN_KEYS else ""))
        for key, file_shape, model_shape in self.mismatched[:SHOWN_KEYS]:
            lines.append(f"shape mismatch {key}: file {file_shape}, model {model_shape}")
        if len(self.mismatched) > SHOWN_KEYS:
            lines.append(f"... and {len(self.mismatched) - SHOWN_KEYS} more shape mismatches "
                         f"({len(self.mismatched)} in all: another arch or width?)")
        return "\n".join(lines)


class WeightLoadError(ValueError):
    """A checkpoint that does not fit the model; `.report` names every offending key."""

    def __init__(self, report: LoadReport, source: str = "checkpoint"):
        super().__init__(f"{source} does not fit the model:\n" + str(report))
        self.report = report


def _strip_wrappers(state_dict: Mapping[str, Any]) -> dict[str, str]:
    """Normalised key -> original key (DataParallel's `module.`, mmdet's `backbone.`, ...)."""
    names = {}
    for key in state_dict:
        name = key
        while name.startswith(_WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        names[name] = key
    return names


def stripped_names(state_dict: Mapping[str, Any]) -> list[str]:
    """The state_dict's keys without wrapper prefixes, as they are matched."""
    return list(_strip_wrappers(state_dict))


def _infer_num_classes(head: str | None, state_dict: Mapping[str, Any]) -> int | None:
    if head in DETECTORS:
        weight_key, background = DETECTORS[head].classes_key, DETECTORS[head].background
    else:
        weight_key = {"classification": "classifier.weight", "segmentation": "last_layer.3.weight",
                      "segmentation_ocr": "cls_head.weight", "landmarks": "head.3.weight",
                      "pose": "final_layer.weight"}.get(head or "")
        background = 0
    for name, key in _strip_wrappers(state_dict).items():
        if name == weight_key:
            return int(np.shape(state_dict[key])[0]) - background
    return None


def abstract_variables(model: Any, size: int = 64) -> Variables:
    """The variables' shapes and dtypes, without computing anything."""
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                              train=False))


def convert(arch: str | ArchSpec, head: str | None, state_dict: Mapping[str, Any],
            num_classes: int | None = None, strict: bool = True, ignore: Sequence[str] = (),
            bgr: bool | None = None, **model_options: Any) -> Any:
    """`from_torch` into the model of a preset: `create_model(arch, head, num_classes,
    **model_options)` (e.g. detector=dict(style="mmdet")), `num_classes` defaulting to what
    the checkpoint's classifier holds."""
    if num_classes is None and head not in (None, "pyramid"):
        num_classes = _infer_num_classes(head, state_dict)
    model = create_model(arch, head, num_classes, **model_options)
    return from_torch(model, state_dict, strict=strict, ignore=ignore, bgr=bgr)


def from_torch(model: HRNet, state_dict: Mapping[str, Any], strict: bool = True,
               ignore: Sequence[str] = (), bgr: bool | None = None) -> Any:
    """Convert a PyTorch HRNet state_dict (numpy arrays or tensors) to the Flax variables of
    the built `model`.

    `ignore` lists glob patterns of keys the caller expects to be left over (e.g.
    'incre_modules.*' when taking a backbone from a classification checkpoint); they are
    reported, not fatal. `bgr`: the checkpoint was trained on BGR images (default: as the
    model's released checkpoints were, `models.trained_on_bgr`: mmdet's FCOS).
    Returns the variables; raises `WeightLoadError` naming every missing, unexpected or
    shape-mismatched key (and any stage of a cascade missing whole). With `strict=False`
    returns `(variables, report)` instead, the variables holding only what loaded.
    """
    head = model.head
    if bgr is None:
        bgr = trained_on_bgr(model)
    expected = abstract_variables(model)
    targets = key_map(expected, head)
    shapes = traverse_util.flatten_dict(expected)
    names = _strip_wrappers(state_dict)
    report, flat = LoadReport(), {}
    for torch_key, flax_path in targets.items():
        if torch_key not in names:
            report.missing.append(torch_key)
            continue
        value = _to_flax(np.asarray(_as_numpy(state_dict[names[torch_key]]), np.float32))
        if value.shape != shapes[flax_path].shape:
            report.mismatched.append((names[torch_key], _to_torch(value).shape,
                                      _to_torch(np.empty(shapes[flax_path].shape)).shape))
            continue
        flat[flax_path] = value
        report.loaded.append(names[torch_key])
    bn_counters = {_num_batches_key(k) for k in targets if k.endswith("running_mean")}
    for name, key in names.items():
        if name in targets:
            continue
        if name in bn_counters or any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(key, p)
                                      for p in (*ignore, *KNOWN_LEFTOVERS)):
            report.ignored.append(key)
        else:
            report.unexpected.append(key)
    if bgr and _STEM_KERNEL in flat:
        flat[_STEM_KERNEL] = flat[_STEM_KERNEL][:, :, ::-1]
    variables = traverse_util.unflatten_dict(flat) if flat else {}
    if not strict:
        return variables, report
    if not report.ok:
        raise WeightLoadError(report)
    return variables


def to_torch(variables: Variables, head: str | None,
             num_batches_tracked: bool = True, bgr: bool = False) -> dict[str, np.ndarray]:
    """Flax variables -> a PyTorch state_dict of numpy arrays (official/timm key names; mmdet's
    for detection). `bgr` writes the first conv for BGR images, as from_torch reads it.

    BatchNorm's `num_batches_tracked` counters, which Flax does not keep, are written as 0 (they
    only matter for PyTorch's cumulative-average BatchNorm, which HRNet does not use).
    """
    flat = traverse_util.flatten_dict(jax.device_get(variables))
    if bgr:
        flat[_STEM_KERNEL] = np.asarray(flat[_STEM_KERNEL])[:, :, ::-1]
    state_dict = {}
    for torch_key, flax_path in key_map(variables, head).items():
        value = np.asarray(_to_torch(np.asarray(flat[flax_path], np.float32)))
        if head in DETECTORS:
            torch_key = next(scope + torch_key for start, scope in _MMDET_SCOPES
                             if torch_key.startswith(start))
        state_dict[torch_key] = value
        if num_batches_tracked and torch_key.endswith("running_var"):
            state_dict[_num_batches_key(torch_key[: -len("running_var")] + "running_mean")] = \
                np.array(0, np.int64)
    return state_dict


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a `.pth`/`.pt` (needs torch) or `.safetensors` (does not) file into numpy arrays.

    Checkpoints that wrap the weights (`{'state_dict': ...}`, `{'model': ...}`) are unwrapped.
    """
    path = os.fspath(path)
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path} is empty (0 bytes): an interrupted download or copy?")
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file
        return dict(load_file(path))
    try:
        import torch
    except ImportError as error:
        raise ImportError(f"reading {path} needs PyTorch (pip install torch); "
                          "or convert it to .safetensors first") from error
    try:  # weights_only: a file's pickled code is never run
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        cause = (str(error).splitlines() or [""])[0][:200]
        raise ValueError(f"{path} is not a PyTorch state_dict file (a dict of tensor names to "
                         f"tensors, as torch.save(model.state_dict(), path) writes): "
                         f"{type(error).__name__}: {cause}. A pickled model object is not read "
                         "(it could run code): save its state_dict instead") from None
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
    arrays = ({k: _as_numpy(v) for k, v in checkpoint.items() if hasattr(v, "shape")}
              if isinstance(checkpoint, dict) else {})
    if not arrays:
        raise ValueError(f"{path} holds a {type(checkpoint).__name__} without tensors, not a "
                         "state_dict (a dict of tensor names to tensors)")
    return arrays


def save_safetensors(path: str | os.PathLike, state_dict: Mapping[str, np.ndarray]) -> None:
    """Write a numpy state_dict as `.safetensors`, readable by PyTorch users and by us."""
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, os.fspath(path))
