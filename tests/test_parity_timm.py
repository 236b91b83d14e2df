"""Numerical parity with the PyTorch references (timm, random init, converted by `from_torch`).

timm's eval-mode outputs explode with fresh BatchNorm statistics, so the full-size comparisons
run in train mode (batch statistics); one test sets real running statistics and compares eval mode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from hrnet_jax import weights
from hrnet_jax.models import ARCHS, create_model

from conftest import relative_error

pytestmark = pytest.mark.parity

TOLERANCE = 1e-4  # relative max error, the bound
# Three archs of distinct shape run by default (one block a branch and modules 1/1/1; two
# blocks and modules 1/3/2; the full 4-block stages); the wide ones with `-m slow`. Exact
# parameter counts (test_models.py) cover every arch in the fast tier.
DEFAULT_ARCHS = ("hrnet_w18_small", "hrnet_w18_small_v2", "hrnet_w18")
ARCH_PARAMS = [arch if arch in DEFAULT_ARCHS else pytest.param(arch, marks=pytest.mark.slow)
               for arch in ARCHS]
SIZE = 64


def images(seed: int = 0, size: int = SIZE) -> np.ndarray:
    return np.random.RandomState(seed).randn(2, size, size, 3).astype(np.float32)


def to_nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def to_nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().permute(0, 2, 3, 1).numpy()


def state_dict_numpy(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def run_train_mode(model, variables, x, capture_backbone: bool = False):
    """Forward in train mode (batch statistics); optionally also return the branch features."""
    def forward(v, x):
        kwargs = {"capture_intermediates": lambda mdl, _: mdl.name == "backbone"} if capture_backbone else {}
        out, state = model.apply(v, x, train=True, mutable=["batch_stats", "intermediates"], **kwargs)
        if capture_backbone:
            return out, state["intermediates"]["backbone"]["__call__"][0]
        return out
    return jax.jit(forward)(variables, jnp.asarray(x))


@pytest.mark.parametrize("arch", ARCH_PARAMS)
def test_classification_and_branch_features_match_timm(arch):
    torch.manual_seed(0)
    reference = timm.create_model(arch).train()
    features = timm.create_model(arch, features_only=True, feature_location="").train()
    state_dict = state_dict_numpy(reference)
    reference_tensors = reference.state_dict()
    features.load_state_dict({k: reference_tensors[k] for k in features.state_dict()})
    x = images()
    with torch.no_grad():
        expected_logits = reference(to_nchw(x)).numpy()
        expected_features = [to_nhwc(f) for f in features(to_nchw(x))[1:]]  # [0] is the stem

    variables = weights.convert(arch, "classification", state_dict)
    logits, branch_features = run_train_mode(create_model(arch, "classification"), variables, x,
                                             capture_backbone=True)
    assert relative_error(logits, expected_logits) <= TOLERANCE
    assert len(branch_features) == 4
    for ours, theirs in zip(branch_features, expected_features):
        assert relative_error(ours, theirs) <= TOLERANCE


def test_eval_mode_uses_converted_running_statistics():
    """Running statistics set by one momentum-1 batch in PyTorch; eval mode compared."""
    torch.manual_seed(1)
    reference = timm.create_model("hrnet_w18_small")
    for module in reference.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 1.0
    x = images(1)
    with torch.no_grad():
        reference.train()(to_nchw(x))
        expected = reference.eval()(to_nchw(x)).numpy()
    variables = weights.convert("hrnet_w18_small", "classification", state_dict_numpy(reference))
    model = create_model("hrnet_w18_small", "classification")
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, jnp.asarray(x))
    assert relative_error(logits, expected) <= TOLERANCE


def bilinear_fuse(features: nn.Module, align_corners: bool) -> nn.Module:
    """Turn timm's nearest fuse into the segmentation repo's bilinear one (integer factors)."""
    for name, module in list(features.named_modules()):
        if isinstance(module, nn.Upsample):
            parent = features.get_submodule(name.rsplit(".", 1)[0])
            setattr(parent, name.rsplit(".", 1)[1],
                    nn.Upsample(scale_factor=module.scale_factor, mode="bilinear",
                                align_corners=align_corners))
    return features


@pytest.mark.parametrize("align_corners", [False, True])
def test_segmentation_head_matches_a_torch_oracle(align_corners):
    """HRNetV2 segmentation: bilinear fuse, upsample + concat, last_layer (official key names)."""
    torch.manual_seed(2)
    backbone = bilinear_fuse(timm.create_model("hrnet_w18_small", features_only=True,
                                               feature_location=""), align_corners).train()
    channels = 16 + 32 + 64 + 128
    last_layer = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels),
                               nn.ReLU(), nn.Conv2d(channels, 19, 1)).train()
    x = images(2)
    with torch.no_grad():
        feats = backbone(to_nchw(x))[1:]
        size = feats[0].shape[2:]
        cat = torch.cat([feats[0]] + [F.interpolate(f, size=size, mode="bilinear",
                                                    align_corners=align_corners)
                                      for f in feats[1:]], 1)
        expected = to_nhwc(last_layer(cat))
    state_dict = {**state_dict_numpy(backbone),
                  **{f"last_layer.{k}": v for k, v in state_dict_numpy(last_layer).items()}}
    variables = weights.convert("hrnet_w18_small", "segmentation", state_dict)
    model = create_model("hrnet_w18_small", "segmentation", align_corners=align_corners)
    assert relative_error(run_train_mode(model, variables, x), expected) <= TOLERANCE


def test_pose_head_matches_a_torch_oracle():
    """HRNetV1 pose: only fuse row 0 in the last module; final_layer 1x1 conv on branch 0."""
    torch.manual_seed(3)
    backbone = timm.create_model("hrnet_w18_small_v2", features_only=True,
                                 feature_location="").train()
    final_layer = nn.Conv2d(18, 17, 1)
    x = images(3)
    with torch.no_grad():
        expected = to_nhwc(final_layer(backbone(to_nchw(x))[1]))
    state_dict = {**state_dict_numpy(backbone),
                  **{f"final_layer.{k}": v for k, v in state_dict_numpy(final_layer).items()}}
    # The pose net never builds fuse rows 1-3 of its last module (stage4.1 for w18_small_v2).
    with pytest.raises(weights.WeightLoadError, match=r"stage4\.1\.fuse_layers\.1\.0\.0\.0\.weight"):
        weights.convert("hrnet_w18_small_v2", "pose", state_dict)
    variables = weights.convert("hrnet_w18_small_v2", "pose", state_dict,
                                   ignore=["stage4.1.fuse_layers.[123].*"])
    model = create_model("hrnet_w18_small_v2", "pose")
    assert relative_error(run_train_mode(model, variables, x), expected) <= TOLERANCE


def test_pyramid_neck_matches_a_torch_oracle():
    """HRNetV2p (HRFPN): bilinear upsample + concat, 1x1 conv, average pools, 3x3 convs."""
    torch.manual_seed(4)
    backbone = timm.create_model("hrnet_w18_small", features_only=True, feature_location="").train()
    reduction = nn.Conv2d(240, 256, 1)
    fpn_convs = nn.ModuleList([nn.Conv2d(256, 256, 3, padding=1) for _ in range(5)])
    x = images(4, 128)
    with torch.no_grad():
        feats = backbone(to_nchw(x))[1:]
        size = feats[0].shape[2:]
        cat = torch.cat([feats[0]] + [F.interpolate(f, size=size, mode="bilinear")
                                      for f in feats[1:]], 1)
        reduced = reduction(cat)
        expected = [to_nhwc(conv(F.avg_pool2d(reduced, 2 ** k) if k else reduced))
                    for k, conv in enumerate(fpn_convs)]
    state_dict = {**{f"backbone.{k}": v for k, v in state_dict_numpy(backbone).items()},
                  **{f"neck.reduction_conv.conv.{k}": v for k, v in state_dict_numpy(reduction).items()},
                  **{f"neck.fpn_convs.{k.split('.')[0]}.conv.{k.split('.', 1)[1]}": v
                     for k, v in state_dict_numpy(fpn_convs).items()}}
    variables = weights.convert("hrnet_w18_small", "pyramid", state_dict)
    levels = run_train_mode(create_model("hrnet_w18_small", "pyramid"), variables, x)
    for ours, theirs in zip(levels, expected, strict=True):
        assert relative_error(ours, theirs) <= TOLERANCE
