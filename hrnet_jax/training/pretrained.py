"""Start a run from pretrained weights (ImageNet classification, as every HRNet paper did).

The checkpoint (official / timm `.pth`, `.pt` or `.safetensors`) must hold a whole backbone of
the configured arch: any missing, unexpected or mis-shaped backbone key is an error that names
it. The classification head's keys are the expected leftovers and are reported as such; the
task head starts from its initialisation.
"""

from __future__ import annotations

from typing import Any

from hrnet_jax import surgery, weights

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


def initialise_from(path: str, arch: Any, fresh: dict) -> tuple[dict, str]:
    """`fresh` variables ({'params', 'batch_stats'}) with the backbone taken from `path`, and a
    one-paragraph account of what was loaded, left over and newly initialised."""
    backbone, load_report = load_backbone(path, arch)
    variables, carried = surgery.carry_into(backbone, fresh, carry=("backbone",))
    created = [p for p in carried.created if "/backbone/" in f"/{p}"]
    if created:  # the file had a full backbone, so this is a bug, not a user error
        raise RuntimeError(f"backbone variables not loaded from {path}: {created[:10]}")
    account = (f"pretrained {path}: {len(load_report.loaded)} tensors loaded into the backbone; "
               f"{len(load_report.ignored)} classification-head tensors left over as expected; "
               f"{len(carried.created)} head variables initialised; "
               f"{len(carried.dropped)} backbone variables the model does not use")
    return variables, account
