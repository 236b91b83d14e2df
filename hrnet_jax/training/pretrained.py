"""Start a run from pretrained weights (ImageNet classification, as every HRNet paper did), or
evaluate a whole model trained elsewhere.

The checkpoint (official / timm / mmdet `.pth`, `.pt` or `.safetensors`, or the workdir /
checkpoints folder of one of our runs, e.g. a cls_imagenet experiment; local or in a bucket)
must hold a whole
backbone of the configured arch: any missing, unexpected or mis-shaped backbone key is an error
that names it. A PyTorch file that holds the configured head too (an official segmentation
model, an mmdet detector) is loaded whole, strictly; otherwise the classification head's keys
are the expected leftovers, reported as such, and the task head starts from its initialisation.
"""

from __future__ import annotations

from typing import Any

from hrnet_jax import storage, surgery, weights
from hrnet_jax.training.checkpoint import Checkpointer

# The classification head in the official and timm state_dicts.
CLASSIFICATION_HEAD = ("incre_modules.*", "downsamp_modules.*", "final_layer.*", "classifier.*")


def load_backbone(state_dict: dict, arch: Any, path: str) -> tuple[dict, weights.LoadReport]:
    """The backbone variables of a PyTorch state_dict (read from `path`); strict apart from
    the classification head, which is listed in `report.ignored`."""
    variables, report = weights.convert(arch, None, state_dict, strict=False,
                                        ignore=CLASSIFICATION_HEAD)
    if not report.ok:
        raise weights.WeightLoadError(report, source=path)
    return variables, report


def load_run(path: str) -> dict:
    """The backbone variables of the latest checkpoint of one of our runs."""
    inner = storage.join(path, "checkpoints")
    folder = inner if storage.path(inner).is_dir() else path
    variables = Checkpointer(folder, every_steps=1, keep=1).restore_variables()
    return {c: {"backbone": tree["backbone"]} for c, tree in variables.items()}


def load_whole(state_dict: dict, model: Any, path: str) -> tuple[dict, weights.LoadReport] | None:
    """The whole model's variables from a PyTorch state_dict (read from `path`) holding its
    head too (None when it holds none of the head's keys). Detectors of a style trained on BGR
    images (mmdet's FCOS) are read with their first conv turned to RGB."""
    if model.head is None:
        return None
    abstract = weights.abstract_variables(model)
    head_keys = weights.key_map({c: {"head": tree["head"]} for c, tree in abstract.items()
                                 if "head" in tree}, model.head)
    if not set(head_keys) & set(weights.stripped_names(state_dict)):
        return None
    variables, report = weights.from_torch(model, state_dict, strict=False)
    if not report.ok:
        raise weights.WeightLoadError(report, source=path)
    return variables, report


def initialise_from(path: str, model: Any, fresh: dict) -> tuple[dict, str]:
    """`fresh` variables ({'params', 'batch_stats'}) with the backbone (or the whole model)
    taken from `path`, and a one-paragraph account of what was loaded, left over and newly
    initialised."""
    with storage.errors_named(path, "read"):
        is_run = storage.path(path).is_dir()
    if not is_run:
        with storage.local_file(path) as local:  # torch.load and safetensors open local files
            state_dict = weights.load_state_dict_file(local)
    else:
        state_dict = None
    whole = None if state_dict is None else load_whole(state_dict, model, path)
    if whole is not None:
        variables, report = whole
        return variables, (f"pretrained {path}: the whole model, {len(report.loaded)} tensors "
                           f"loaded, {len(report.ignored)} known leftovers")
    arch = model.arch
    if is_run:
        backbone, source = load_run(path), f"run checkpoint {path}"
        leftovers = "its head left over as expected"
    else:
        backbone, load_report = load_backbone(state_dict, arch, path)
        source = f"{path}: {len(load_report.loaded)} tensors"
        leftovers = f"{len(load_report.ignored)} classification-head tensors left over as expected"
    variables, carried = surgery.carry_into(backbone, fresh, carry=("backbone",))
    missing = [p for p in carried.created if p.split("/")[1] == "backbone"]
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} backbone variables of the model "
                         f"(another arch?): {', '.join(missing[:20])}")
    account = (f"pretrained {source} loaded into the backbone; {leftovers}; "
               f"{len(carried.created)} head variables initialised; "
               f"{len(carried.dropped)} backbone variables the model does not use")
    return variables, account
