"""Model surgery: transplant, head swap, taps, freezing, depth views, export."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import timm
import torch

from hrnet_jax import surgery, weights
from hrnet_jax.config import OptimConfig
from hrnet_jax.models import ArchSpec, StageSpec, create_model, tiny_arch
from hrnet_jax.models.heads import concat_upsampled
from hrnet_jax.training.optim import make_optimizer

from conftest import relative_error

TINY = tiny_arch(4)
IMAGES = jnp.asarray(np.random.RandomState(0).randn(2, 64, 64, 3).astype(np.float32))
BRANCHES = [f"stage4/branch{k}" for k in range(4)]


def key(seed: int) -> jax.Array:
    """RBG keys: XLA:CPU compiles an init ~3x faster than with threefry's hash."""
    return jax.random.key(seed, impl="rbg")


def leaves(tree) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in surgery.flatten(tree).items()}


@pytest.fixture(scope="module")
def timm_classification():
    """timm's hrnet_w18_small weights (random init, random running statistics) in our model."""
    torch.manual_seed(0)
    reference = timm.create_model("hrnet_w18_small")
    for m in reference.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 1.5)
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    model = create_model("hrnet_w18_small", "classification")
    return model, weights.convert("hrnet_w18_small", "classification", state)


def test_timm_weights_transplanted_into_segmentation_keep_backbone_features_bit_identical(
        timm_classification):
    cls_model, cls_vars = timm_classification
    # The classification net upsamples nearest; so must the target for identical features
    # (the segmentation default, bilinear, is a different function of the same weights).
    seg_model = create_model("hrnet_w18_small", "segmentation", 19, upsample="nearest")
    seg_vars, report = surgery.transplant(cls_vars, seg_model, key(1))
    backbone = {f"{c}/{p}" for c, t in cls_vars.items() for p in surgery.flatten(t)
                if p.startswith("backbone/")}
    assert set(report.carried) == backbone
    assert report.dropped and all("/head/" in f"/{p}" for p in report.dropped)
    assert report.created and all(p.split("/")[1] == "head" for p in report.created)
    assert "params/head/incre0/conv1/kernel" in report.dropped
    assert "params/head/classifier/kernel" in report.created
    before = surgery.tap(cls_model, cls_vars, IMAGES, BRANCHES)
    after = surgery.tap(seg_model, seg_vars, IMAGES, BRANCHES)
    for name in BRANCHES:
        np.testing.assert_array_equal(np.asarray(after[name]), np.asarray(before[name]), name)


def test_transplant_into_pose_drops_the_fuse_rows_the_pose_net_lacks():
    seg = create_model(TINY, "segmentation", 3)
    seg_vars = surgery.init_variables(seg, key(0))
    pose = create_model(TINY, "pose", 5)
    pose_vars, report = surgery.transplant(seg_vars, pose, key(1))
    dropped_backbone = {p for p in report.dropped if "/backbone/" in p}
    assert dropped_backbone and all("stage4/module0/fuse/to" in p and "/fuse/to0_" not in p
                                    for p in dropped_backbone)
    assert any("/fuse/to3_from0/" in p for p in dropped_backbone)
    kept = leaves(pose_vars["params"]["backbone"])
    source = leaves(seg_vars["params"]["backbone"])
    for path, value in kept.items():
        np.testing.assert_array_equal(value, source[path], path)


def test_swap_head_changes_only_the_classifier():
    five = create_model(TINY, "segmentation", 5)
    variables = surgery.init_variables(create_model(TINY, "segmentation", 3), key(0))
    swapped, report = surgery.swap_head(variables, five, key(1))
    assert sorted(r[0] for r in report.reshaped) == ["params/head/classifier/bias",
                                                     "params/head/classifier/kernel"]
    assert report.reshaped[0][1:] in [((3,), (5,)), ((1, 1, 60, 3), (1, 1, 60, 5))]
    before, after = leaves(variables), leaves(swapped)
    for path, value in after.items():
        if "classifier" not in path:
            np.testing.assert_array_equal(value, before[path], path)
    assert jax.eval_shape(five.apply, swapped, IMAGES).shape == (2, 16, 16, 5)


def test_transplant_between_widths_is_refused_with_the_mismatched_keys():
    variables = surgery.init_variables(create_model(TINY, "segmentation", 3), key(0))
    with pytest.raises(surgery.SurgeryError, match="shape mismatch params/backbone/stage2/") as error:
        surgery.transplant(variables, create_model(tiny_arch(8), "segmentation", 3),
                           key(1))
    assert ("params/backbone/transition1/branch0/conv/kernel", (3, 3, 32, 4), (3, 3, 32, 8)) in (
        error.value.report.reshaped)


@pytest.fixture(scope="module")
def tiny_segmentation():
    model = create_model(TINY, "segmentation", 3)
    return model, surgery.init_variables(model, key(0))


def test_taps_return_named_intermediates(tiny_segmentation):
    model, variables = tiny_segmentation
    taps = surgery.tap(model, variables, IMAGES, ["stage3/branch2", "backbone/stage4", "stem",
                                                  "head/concat", "head"])
    assert taps["stage3/branch2"].shape == (2, 4, 4, 16)
    assert taps["stem"].shape == (2, 16, 16, 8)
    features = jax.jit(create_model(TINY, None, upsample="bilinear").apply)(
        {c: {"backbone": t["backbone"]} for c, t in variables.items()}, IMAGES)
    for k in range(4):
        np.testing.assert_array_equal(np.asarray(taps["backbone/stage4"][k]), np.asarray(features[k]))
    expected_concat = concat_upsampled(features, model.layers)
    np.testing.assert_array_equal(np.asarray(taps["head/concat"]), np.asarray(expected_concat))
    np.testing.assert_array_equal(np.asarray(taps["head"]),
                                  np.asarray(jax.jit(model.apply)(variables, IMAGES)))


def test_unknown_tap_lists_the_valid_names(tiny_segmentation):
    model, variables = tiny_segmentation
    with pytest.raises(KeyError, match="backbone/stage3/branch2"):
        surgery.tap(model, variables, IMAGES, ["stage3/branch7"])


def test_frozen_paths_get_no_update_and_no_decay(tiny_segmentation):
    _, variables = tiny_segmentation
    params = variables["params"]
    config = OptimConfig(learning_rate=0.1, weight_decay=0.1, freeze=("backbone/stem", "backbone/layer1"))
    tx = make_optimizer(config, 10)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    for path, update in leaves(updates).items():
        frozen = path.startswith(("backbone/stem/", "backbone/layer1/"))
        assert (np.all(update == 0)) == frozen, path
    mask = surgery.trainable_mask(params, ["backbone/stage*/module0/fuse"])
    flat = surgery.flatten(mask)
    assert not flat["backbone/stage2/module0/fuse/to0_from1/conv/kernel"]
    assert flat["backbone/stage2/module0/branch0/block0/conv1/kernel"]


def test_norm_eval_keeps_backbone_statistics_and_uses_them(tiny_segmentation):
    _, variables = tiny_segmentation
    frozen_bn = create_model(TINY, "segmentation", 3, norm_eval=True)
    out, updates = jax.jit(lambda v: frozen_bn.apply(v, IMAGES, train=True, mutable=["batch_stats"]))(
        variables)
    before, after = leaves(variables["batch_stats"]), leaves(updates["batch_stats"])
    for path, value in after.items():
        if path.startswith("backbone/"):
            np.testing.assert_array_equal(value, before[path], path)
    assert any(not np.array_equal(after[p], before[p]) for p in after if p.startswith("head/"))


def test_shallower_view_keeps_first_and_last_modules_and_first_blocks():
    deep = ArchSpec(8, 1, 8, (StageSpec(2, 2, (4, 8)), StageSpec(3, 2, (4, 8, 16)),
                              StageSpec(2, 2, (4, 8, 16, 32))))
    variables = surgery.init_variables(create_model(deep, "segmentation", 3), key(0))
    arch, shallow_vars = surgery.shallower(deep, variables, modules=(1, 2, 1), blocks=1)
    assert [s.num_modules for s in arch.stages] == [1, 2, 1]
    assert all(s.num_blocks == 1 for s in arch.stages)
    model = create_model(arch, "segmentation", 3)
    fresh = jax.eval_shape(lambda: model.init(key(1), IMAGES[:1]))
    assert jax.tree_util.tree_structure(fresh) == jax.tree_util.tree_structure(shallow_vars)
    old = variables["params"]["backbone"]
    new = shallow_vars["params"]["backbone"]
    np.testing.assert_array_equal(new["stage3"]["module1"]["fuse"]["to0_from1"]["conv"]["kernel"],
                                  old["stage3"]["module2"]["fuse"]["to0_from1"]["conv"]["kernel"])
    np.testing.assert_array_equal(new["stage3"]["module0"]["branch0"]["block0"]["conv1"]["kernel"],
                                  old["stage3"]["module0"]["branch0"]["block0"]["conv1"]["kernel"])
    assert jax.eval_shape(model.apply, shallow_vars, IMAGES).shape == (2, 16, 16, 3)
    with pytest.raises(ValueError, match="stage2 has 2 modules"):
        surgery.shallower(deep, variables, modules=(3, 1, 1))


def test_exported_inference_reloads_and_reproduces_any_batch_size(tiny_segmentation):
    model, variables = tiny_segmentation
    exported = surgery.export_inference(model, variables, (64, 64))
    restored = surgery.load_exported(exported.serialize())
    for batch in (1, 3):
        images = jnp.asarray(np.random.RandomState(batch).randn(batch, 64, 64, 3).astype(np.float32))
        assert relative_error(restored.call(images), jax.jit(model.apply)(variables, images)) < 1e-6


def test_trainer_builds_norm_eval_and_frozen_optimizer_from_the_config():
    from hrnet_jax import config as config_lib, experiments
    from hrnet_jax.training.loop import build_model

    config = experiments.load("seg_synthetic:smoke")
    config_lib.apply_override(config, "model.norm_eval=true")
    assert build_model(config).layers.norm_eval
    config_lib.apply_override(config, "optim.freeze=backbone/stem")
    config_lib.apply_override(config, "optim.warmup_steps=0")  # a non-zero first update
    params = {"backbone": {"stem": {"k": jnp.ones(2)}, "stage2": {"k": jnp.ones(2)}}}
    tx = make_optimizer(config.optim, 10)
    updates, _ = tx.update(params, tx.init(params), params)
    assert np.all(np.asarray(updates["backbone"]["stem"]["k"]) == 0)
    assert np.all(np.asarray(updates["backbone"]["stage2"]["k"]) != 0)


@pytest.mark.parametrize("head,overrides", [("segmentation", {}), ("segmentation_ocr", {}),
                                            ("segmentation", {"scan_modules": True})])
def test_folded_batchnorm_gives_the_same_outputs_without_batchnorm(head, overrides):
    arch = dataclasses.replace(tiny_arch(4), stages=tuple(
        dataclasses.replace(s, num_modules=2) for s in tiny_arch(4).stages))  # scannable
    model = create_model(arch, head, 5, **overrides)
    images = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
    # Trained-looking variables, filled on the host: He kernels, BatchNorm affine parameters and
    # statistics away from their initial 1 and 0, so that folding has work to do.
    rng = np.random.RandomState(2)

    def trained(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = np.prod(leaf.shape[-4:-1] if leaf.ndim >= 4 else leaf.shape[:-1])
            return (rng.randn(*leaf.shape) * np.sqrt(2 / fan_in)).astype(np.float32)
        low, high = (0.5, 1.5) if name in ("scale", "var") else (-0.2, 0.2)
        return rng.uniform(low, high, leaf.shape).astype(np.float32)

    shapes = jax.eval_shape(lambda: model.init(jax.random.key(1), images[:1], train=False))
    variables = jax.tree_util.tree_map_with_path(trained, shapes)
    folded_model, folded = surgery.fold_batchnorm(model, variables)
    assert set(folded) == {"params"}
    assert not any("/bn" in path for path in surgery.flatten(folded["params"]))
    expected = jax.jit(lambda v: model.apply(v, images, train=False))(variables)
    actual = jax.jit(lambda v: folded_model.apply(v, images, train=False))(folded)
    # OCR's pixel-region softmax turns float rounding of its inputs into ~1e-4 of its output.
    assert relative_error(actual, expected) < (5e-4 if head == "segmentation_ocr" else 1e-5)
    with pytest.raises(ValueError, match="for inference"):
        folded_model.apply(folded, images, train=True, mutable=["batch_stats"])
