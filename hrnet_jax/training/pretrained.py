"""Start a run from pretrained weights (ImageNet classification, as every HRNet paper did).

The checkpoint (official / timm `.pth`, `.pt` or `.safetensors`, or the workdir / checkpoints
folder of one of our runs, e.g. a cls_imagenet experiment) must hold a whole backbone of
the configured arch: any missing, unexpected or mis-shaped backbone key is an error that names
it. The classification head's keys are the expected leftovers and are reported as such; the
task head starts from its initialisation.
"""

from __future__ import annotations

import os
from typing import Any

from hrnet_jax import surgery, weights
from hrnet_jax.training.checkpoint import Checkpointer

# The classification head in the official and timm state_dicts.
CLASSIFICATION_HEAD = ("incre_modules.*", "downsamp_modules.*", "final_layer.*", "classifier.*")


def load_backbone(path: str, arch: Any) -> tuple[dict, weights.LoadReport]:
    """The backbone variables of a PyTorch checkpoint file; strict apart from the
    classification head, which is listed in `report.ignored`."""
    state_dict = weights.load_state_dict_file(path)
    variables, report = weights.from_torch(arch, None, state_dict, strict=False,
                                           ignore=CLASSIFICATION_HEAD)
    if not report.ok:
        raise weights.WeightLoadError(report, source=path)
    return variables, report


def load_run(path: str) -> dict:
    """The backbone variables of the latest checkpoint of one of our runs."""
    folder = os.path.join(path, "checkpoints") if os.path.isdir(os.path.join(path, "checkpoints")) else path
    variables = Checkpointer(folder, every_steps=1, keep=1).restore_variables()
    return {c: {"backbone": tree["backbone"]} for c, tree in variables.items()}


def initialise_from(path: str, arch: Any, fresh: dict) -> tuple[dict, str]:
    """`fresh` variables ({'params', 'batch_stats'}) with the backbone taken from `path`, and a
    one-paragraph account of what was loaded, left over and newly initialised."""
    if os.path.isdir(path):
        backbone, source = load_run(path), f"run checkpoint {path}"
        leftovers = "its head left over as expected"
    else:
        backbone, load_report = load_backbone(path, arch)
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
