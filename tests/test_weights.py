"""Weight conversion: exact round trips for timm and official key names, strict accounting."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import timm
import torch
from torch import nn

from hrnet_jax import weights
from hrnet_jax.models import create_model, tiny_arch
from hrnet_jax.models.detectors import DETECTORS


def numpy_state_dict(module: nn.Module, prefix: str = "") -> dict[str, np.ndarray]:
    return {prefix + k: v.detach().numpy() for k, v in module.state_dict().items()}


def randomised(module: nn.Module, seed: int) -> nn.Module:
    """Random running statistics too, so the round trip proves they travel."""
    generator = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
    return module


def assert_state_dicts_equal(actual: dict, expected: dict) -> None:
    assert list(actual) == list(expected)  # same keys, in PyTorch's order
    for key in expected:
        assert actual[key].dtype == expected[key].dtype, key
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


@pytest.fixture(scope="module")
def timm_small() -> nn.Module:
    torch.manual_seed(0)
    return randomised(timm.create_model("hrnet_w18_small"), 0)


@pytest.fixture(scope="module")
def timm_backbone() -> nn.Module:
    torch.manual_seed(1)
    return randomised(timm.create_model("hrnet_w18_small", features_only=True,
                                        feature_location=""), 1)


def test_timm_classification_round_trip(timm_small):
    state_dict = numpy_state_dict(timm_small)
    variables = weights.convert("hrnet_w18_small", "classification", state_dict)
    assert_state_dicts_equal(weights.to_torch(variables, "classification"), state_dict)


def test_timm_features_round_trip(timm_backbone):
    state_dict = numpy_state_dict(timm_backbone)
    variables = weights.convert("hrnet_w18_small", None, state_dict)
    assert set(variables["params"]) == {"backbone"}
    assert_state_dicts_equal(weights.to_torch(variables, None), state_dict)


def official_head(head: str, channels: int, classes: int) -> dict[str, np.ndarray]:
    """The official repos' head modules, built from torch layers as those repos define them."""
    torch.manual_seed(5)
    if head in ("segmentation", "landmarks"):  # seg_hrnet `last_layer`, face repo `head`
        module = randomised(nn.Sequential(nn.Conv2d(channels, channels, 1),
                                          nn.BatchNorm2d(channels), nn.ReLU(),
                                          nn.Conv2d(channels, classes, 1)), 5)
        return numpy_state_dict(module, "last_layer." if head == "segmentation" else "head.")
    if head == "pose":  # pose_hrnet `final_layer`
        return numpy_state_dict(nn.Conv2d(16, classes, 1), "final_layer.")
    raise AssertionError(head)


@pytest.mark.parametrize("head,classes", [("segmentation", 19), ("landmarks", 98), ("pose", 17)])
def test_official_key_names_round_trip(timm_backbone, head, classes):
    backbone = numpy_state_dict(timm_backbone)
    if head == "pose":  # the pose net builds only fuse row 0 of its last module
        backbone = {k: v for k, v in backbone.items()
                    if not k.startswith(("stage4.0.fuse_layers.1", "stage4.0.fuse_layers.2",
                                         "stage4.0.fuse_layers.3"))}
    state_dict = {**backbone, **official_head(head, 240, classes)}
    variables = weights.convert("hrnet_w18_small", head, state_dict)
    assert create_model("hrnet_w18_small", head, classes).num_classes == classes
    assert_state_dicts_equal(weights.to_torch(variables, head), state_dict)


def test_num_classes_is_read_from_the_checkpoint(timm_backbone):
    state_dict = {**numpy_state_dict(timm_backbone), **official_head("segmentation", 240, 7)}
    variables = weights.convert("hrnet_w18_small", "segmentation", state_dict)
    assert variables["params"]["head"]["classifier"]["kernel"].shape == (1, 1, 240, 7)


def test_official_segmentation_checkpoint_loads_strictly_as_saved(timm_backbone):
    """HRNet-Semantic-Segmentation saves its FullModel: `model.*` and the loss's class weights
    `loss.criterion.weight`; a strict load takes it as is, the loss weight a known leftover."""
    model = {**numpy_state_dict(timm_backbone), **official_head("segmentation", 240, 19)}
    saved = {**{f"model.{k}": v for k, v in model.items()},
             "loss.criterion.weight": np.ones(19, np.float32)}
    variables = weights.convert("hrnet_w18_small", "segmentation", saved)
    assert_state_dicts_equal(weights.to_torch(variables, "segmentation"), model)
    _, report = weights.convert("hrnet_w18_small", "segmentation", saved, strict=False)
    assert report.ok and "loss.criterion.weight" in report.ignored


def test_wrapper_prefixes_are_stripped(timm_small):
    state_dict = numpy_state_dict(timm_small, "module.")
    variables = weights.convert("hrnet_w18_small", "classification", state_dict)
    assert_state_dicts_equal(weights.to_torch(variables, "classification"),
                             numpy_state_dict(timm_small))


def test_strict_loading_names_every_missing_unexpected_and_mismatched_key(timm_small):
    state_dict = numpy_state_dict(timm_small)
    del state_dict["stage3.0.fuse_layers.2.0.0.0.weight"]
    state_dict["extra.weight"] = np.zeros(3, np.float32)
    state_dict["layer1.0.conv2.weight"] = np.zeros((32, 32, 1, 1), np.float32)
    with pytest.raises(weights.WeightLoadError) as error:
        weights.convert("hrnet_w18_small", "classification", state_dict)
    message = str(error.value)
    assert "1 missing: stage3.0.fuse_layers.2.0.0.0.weight" in message
    assert "1 unexpected: extra.weight" in message
    assert "shape mismatch layer1.0.conv2.weight: file (32, 32, 1, 1), model (32, 32, 3, 3)" in message

    variables, report = weights.convert("hrnet_w18_small", "classification", state_dict,
                                           strict=False)
    assert report.missing == ["stage3.0.fuse_layers.2.0.0.0.weight"]
    assert report.unexpected == ["extra.weight"]
    assert [m[0] for m in report.mismatched] == ["layer1.0.conv2.weight"]
    assert not report.ok
    # What did load is there; what did not is absent, for the caller to fill.
    params = variables["params"]["backbone"]
    assert "conv2" not in params["layer1"]["block0"]
    assert "conv1" in params["layer1"]["block0"]


def test_ignore_lists_expected_leftovers(timm_small):
    """A classification checkpoint into a bare backbone: the head keys are the leftovers."""
    state_dict = numpy_state_dict(timm_small)
    with pytest.raises(weights.WeightLoadError, match="incre_modules.0.0.conv1.weight"):
        weights.convert("hrnet_w18_small", None, state_dict)
    head_keys = ["incre_modules.*", "downsamp_modules.*", "final_layer.*", "classifier.*"]
    variables, report = weights.convert("hrnet_w18_small", None, state_dict, strict=False,
                                           ignore=head_keys)
    assert report.ok and report.unexpected == []
    assert any(k.startswith("classifier.") for k in report.ignored)
    assert set(variables["params"]) == {"backbone"}


@pytest.mark.parametrize("suffix,wrap", [(".pth", False), (".pth", True), (".safetensors", False)])
def test_state_dict_files_load(tmp_path, timm_small, suffix, wrap):
    path = tmp_path / f"weights{suffix}"
    expected = numpy_state_dict(timm_small)
    if suffix == ".safetensors":
        weights.save_safetensors(path, expected)
    else:
        tensors = timm_small.state_dict()
        torch.save({"state_dict": tensors, "epoch": 3} if wrap else tensors, path)
    loaded = weights.load_state_dict_file(path)
    assert set(loaded) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(loaded[key], expected[key])


@pytest.mark.parametrize("head", ["faster_rcnn", "mask_rcnn"])
def test_rcnn_weights_in_mmdets_layout_round_trip(head):
    """mmdet's names for every part (backbone., neck., rpn_head., roi_head.bbox_head., Mask
    R-CNN's roi_head.mask_head. with the transposed conv's (in, out, 2, 2) weight), the number
    of classes read from fc_cls (background row excluded), strict both ways."""
    from hrnet_jax import weights
    from hrnet_jax.models import create_model, tiny_arch

    arch = tiny_arch(4)
    model = create_model(arch, head, 3, detector=dict(channels=32))
    rng = np.random.default_rng(14)  # shapes traced only (nothing compiled), values random
    variables = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32),
                             weights.abstract_variables(model))
    state_dict = weights.to_torch(variables, head)
    assert "backbone.stage2.0.branches.0.0.conv1.weight" in state_dict
    shapes = {"backbone.conv1.weight": (8, 3, 3, 3),
              "neck.reduction_conv.conv.weight": (32, 60, 1, 1),
              "rpn_head.rpn_cls.weight": (3, 32, 1, 1),
              "rpn_head.rpn_reg.weight": (12, 32, 1, 1),
              "roi_head.bbox_head.shared_fcs.0.weight": (1024, 32 * 7 * 7),
              "roi_head.bbox_head.fc_cls.weight": (4, 1024),
              "roi_head.bbox_head.fc_reg.weight": (12, 1024)}
    if head == "mask_rcnn":  # FCNMaskHead: convs.K.conv, upsample (ConvTranspose2d), conv_logits
        shapes.update({"roi_head.mask_head.convs.3.conv.weight": (32, 32, 3, 3),
                       "roi_head.mask_head.upsample.weight": (32, 32, 2, 2),
                       "roi_head.mask_head.conv_logits.weight": (3, 32, 1, 1)})
        upsample = variables["params"]["head"]["mask_head"]["upsample"]["kernel"]  # (2, 2, out, in)
        np.testing.assert_array_equal(state_dict["roi_head.mask_head.upsample.weight"],
                                      np.transpose(upsample, (3, 2, 0, 1)))
    assert not [k for k in state_dict if "mask_head" in k] or head == "mask_rcnn"
    for key, shape in shapes.items():
        assert state_dict[key].shape == shape, key
    loaded = weights.convert(arch, head, state_dict, detector=dict(channels=32))
    assert loaded["params"]["head"]["box_head"]["classifier"]["kernel"].shape == (1024, 4)
    assert_state_dicts_equal(weights.to_torch(loaded, head), state_dict)
    del state_dict["rpn_head.rpn_reg.bias"]
    with pytest.raises(weights.WeightLoadError, match=r"rpn_head\.rpn_reg\.bias"):
        weights.convert(arch, head, state_dict, detector=dict(channels=32))


# A small cascade: the weights' names do not depend on the sizes.
CASCADE_SMALL = dict(channels=32, proposals=40, train_pre_nms=40, train_proposals=40, rois=32)


def random_variables(model, seed=0):
    rng = np.random.default_rng(seed)  # shapes traced only (nothing compiled), values random
    return jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32),
                        weights.abstract_variables(model))


@pytest.mark.parametrize("head", ["cascade_rcnn", "cascade_mask_rcnn", "htc"])
def test_cascade_weights_in_mmdets_layout_round_trip_strictly(head):
    """roi_head.bbox_head.{i}, roi_head.mask_head.{i} (HTC's conv_res from the second stage),
    roi_head.semantic_head.*: strict both ways; a checkpoint missing a stage names it."""
    model = create_model(tiny_arch(4), head, 3, detector=dict(CASCADE_SMALL, semantic_classes=7)
                         if head == "htc" else CASCADE_SMALL)
    state_dict = weights.to_torch(random_variables(model), head)
    for stage in range(3):
        assert state_dict[f"roi_head.bbox_head.{stage}.fc_reg.weight"].shape == (4, 1024)
        assert state_dict[f"roi_head.bbox_head.{stage}.fc_cls.weight"].shape == (4, 1024)
        if DETECTORS[head].masks:
            assert state_dict[f"roi_head.mask_head.{stage}.convs.3.conv.weight"].shape == (
                32, 32, 3, 3)
    residual = {k for k in state_dict if "conv_res" in k}
    if head == "htc":
        assert residual == {f"roi_head.mask_head.{i}.conv_res.conv.{p}" for i in (1, 2)
                            for p in ("weight", "bias")}
        assert state_dict["roi_head.semantic_head.conv_logits.weight"].shape == (7, 32, 1, 1)
        assert state_dict["roi_head.semantic_head.lateral_convs.4.conv.weight"].shape == (
            32, 32, 1, 1)
        assert "roi_head.semantic_head.conv_embedding.conv.weight" in state_dict
    else:
        assert not residual
    loaded = weights.from_torch(model, state_dict)
    assert_state_dicts_equal(weights.to_torch(loaded, head), state_dict)
    assert weights.convert(tiny_arch(4), head, state_dict,
                           detector=model.detector.__dict__)["params"]["head"].keys() == \
        loaded["params"]["head"].keys()  # the classes read from stage 0's fc_cls
    without = {k: v for k, v in state_dict.items() if not k.startswith("roi_head.bbox_head.2.")}
    with pytest.raises(weights.WeightLoadError, match=r"missing whole cascade stage\(s\): "
                                                      r"roi_head\.bbox_head\.2"):
        weights.from_torch(model, without)
